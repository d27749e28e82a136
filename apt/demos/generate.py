"""Scripted-expert demonstrations: `generate_demos` and the `apt-bench demos` command.

Generation plans the episodes (apt/demos/episodes.py), records them with the suite's expert in
worker processes (apt/demos/record.py) and writes the kept ones in apt-bench's own format
(apt/demos/native.py) or in the suite's native one (LIBERO: apt/demos/libero_hdf5.py).

Non-obvious behaviour:
- Only successful expert episodes are kept; failures are counted per task in meta.json. A task is
  not topped up with extra episodes, so counts can be below `episodes_per_task`.
- Spawned workers need the suite inside them: `make_suite()` builds it there (the CLI passes a
  picklable `functools.partial(get_suite, NAME)`); without it the suite object itself is pickled
  into the workers.
- Generation writes into `<out>.partial/` and renames it to `<out>` only when complete, so a
  directory with a meta.json is always a whole dataset.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from apt.demos.episodes import EPISODES_DIR, DemoEpisode, plan_episodes
from apt.demos.libero_hdf5 import LIBERO_HDF5, write_libero_hdf5
from apt.demos.native import FORMAT, FORMAT_VERSION, META_FILE, PARTIAL_MARKER, write_native
from apt.demos.record import (EpisodeResult, close_worker, demo_recording, expert_parameters, init_worker,
                              record_episode)
from apt.splits.resolve import load_split
from benchmarks.base import BenchError, Suite, unknown

GENERATION_FILE = "generation.json"  # generate_demos' record beside a suite-format dataset
# Seeded zero-mean action noise (normalised units) of the expert while recording: the states
# cover small deviations and their corrections (DART-style), and the noise averages out of an L2 /
# flow-matching target. The tabletop expert still succeeded 144/144 at 0.1 (and at 0.2).
DEFAULT_EXPERT_NOISE = 0.1
# Writers of the suites' own formats (`DemoRecording.native_format`); FORMAT is `write_native`'s.
SUITE_FORMAT_WRITERS: dict[str, Callable[..., tuple[str, int]]] = {LIBERO_HDF5: write_libero_hdf5}


@dataclass(frozen=True)
class DemoSummary:
    """What `generate_demos` wrote."""

    path: Path
    episodes: int  # kept (successful) episodes
    frames: int
    failed: int  # expert episodes that did not succeed within max_steps (dropped)
    errors: int  # episodes that raised (dropped); `first_error` says why
    per_task: dict[str, int] = field(default_factory=dict)  # task_id -> kept episodes
    data_hash: str = ""
    seconds: float = 0.0
    first_error: str = ""


def _prepare_out(out_dir: Path) -> Path:
    if (out_dir / META_FILE).exists() or (out_dir / GENERATION_FILE).exists():
        raise BenchError(f"{out_dir} already holds demonstrations; pass another --out or delete it")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise BenchError(f"{out_dir} exists and is not an empty directory; pass another --out")
    partial = out_dir.with_name(out_dir.name + ".partial")
    if partial.exists():
        if not (partial / PARTIAL_MARKER).exists():
            raise BenchError(f"{partial} exists and was not made by apt-bench; move it away")
        shutil.rmtree(partial)  # left by an interrupted run
    (partial / EPISODES_DIR).mkdir(parents=True)
    (partial / PARTIAL_MARKER).touch()
    return partial


def _record_all(episodes: list[DemoEpisode], suite: Suite, make_suite: Callable[[], Suite] | None,
                workers: int, settings: tuple[Any, ...], progress: bool) -> list[EpisodeResult]:
    """Record every planned episode, in-process (workers=0) or in `workers` spawned processes;
    `settings` are `init_worker`'s arguments after the suite."""
    from tqdm.auto import tqdm

    results: list[EpisodeResult] = []
    bar = tqdm(total=len(episodes), desc=f"demos {suite.name}", unit="ep", disable=not progress)
    try:
        if workers == 0:
            init_worker(suite, None, *settings)
            try:
                for job in episodes:
                    results.append(record_episode(job))
                    bar.update(1)
            finally:
                close_worker()
        else:
            if make_suite is None:  # the suite object itself goes to the workers
                try:
                    pickle.dumps(suite)
                except Exception as err:  # noqa: BLE001 - any pickling failure says the same
                    raise BenchError(f"suite {suite.name!r} cannot be sent to worker processes "
                                     f"({type(err).__name__}: {err}); pass make_suite=<a picklable "
                                     "callable that builds it> or workers=0") from None
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=init_worker,
                          initargs=(suite if make_suite is None else None, make_suite, *settings)) as pool:
                for res in pool.imap_unordered(record_episode, episodes, chunksize=1):
                    results.append(res)
                    bar.update(1)
    finally:
        bar.close()
    return results


def _write(fmt: str, folder: Path, episodes: list[DemoEpisode], cams: tuple[str, ...],
           suite: Suite) -> tuple[str, int]:
    """Write the kept episodes in format `fmt`; returns (content hash, frames)."""
    if fmt == FORMAT:
        return write_native(folder, episodes, cams)
    if fmt not in SUITE_FORMAT_WRITERS:
        raise BenchError(f"no writer for demonstration format {fmt!r}; writers: "
                         f"{', '.join(SUITE_FORMAT_WRITERS)}")
    return SUITE_FORMAT_WRITERS[fmt](folder, episodes, cams, suite)


def generate_demos(suite: Suite, out_dir: str | Path, episodes_per_task: int = 50,
                   workers: int | None = None, seed: int = 0, image_size: int = 96, *,
                   tasks: Sequence[str] | None = None, cameras: Sequence[str] | None = None,
                   expert_noise: float = DEFAULT_EXPERT_NOISE, clean_labels: bool = False,
                   progress: bool = True, fmt: str | None = None,
                   make_suite: Callable[[], Suite] | None = None) -> DemoSummary:
    """Roll the suite's expert on every training task with its train.yaml instructions.

    `tasks` restricts generation to some training task ids; `cameras` defaults to every camera
    the suite offers; `workers` None = os.cpu_count(), 0 = in-process; `expert_noise` is passed to
    experts that take a `noise` argument (recorded in meta.json); `clean_labels`: the expert still
    executes its noisy actions, but each frame's label is its intended action before the noise
    (DART-style: the states cover deviations and their corrections, the labels carry no noise of
    their own, though they do correct the previous step's). `fmt`: FORMAT (apt-bench's own),
    or a native format the suite's `demo_recording` names (LIBERO: "libero_hdf5", one
    `<task name>_demo.hdf5` per task, with the generation record in GENERATION_FILE instead of
    meta.json); None = the suite's native format if it has one. `make_suite`: a picklable
    zero-argument callable that builds the same suite inside each spawned worker; None = pickle
    `suite` into the workers (a BenchError when it cannot be pickled).
    """
    if episodes_per_task < 1:
        raise BenchError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
    if image_size < 1:
        raise BenchError(f"image_size must be >= 1, got {image_size}")
    start = time.perf_counter()
    all_tasks = list(suite.tasks())
    train_set = load_split(suite.name, "train", all_tasks)
    by_task = train_set.by_task()
    chosen = [t for t in all_tasks if t.train]
    if tasks is not None:
        known = {t.task_id: t for t in all_tasks}
        for tid in tasks:
            if tid not in known:
                raise unknown("task", tid, [t.task_id for t in chosen])
            if not known[tid].train:
                raise BenchError(f"task {tid!r} is held out of training (compositional split); "
                                 "demonstrations are made only for training tasks")
        chosen = [t for t in chosen if t.task_id in set(tasks)]
    missing = [t.task_id for t in chosen if t.task_id not in by_task]
    if missing:
        raise BenchError(f"{train_set.source} has no instruction for training task(s) {missing}")
    cams = tuple(cameras) if cameras is not None else tuple(suite.observation_spec.cameras)
    native = demo_recording(suite).native_format
    fmt = fmt or native or FORMAT
    if fmt not in (FORMAT, native):
        raise BenchError(f"suite {suite.name!r} writes demonstrations as {FORMAT!r}"
                         + (f" or {native!r}" if native else "") + f", not {fmt!r}")
    jobs = plan_episodes(chosen, by_task, episodes_per_task, seed)

    out_dir = Path(out_dir)
    partial = _prepare_out(out_dir)
    workers = (os.cpu_count() or 1) if workers is None else workers
    workers = min(workers, len(jobs))
    results = _record_all(jobs, suite, make_suite, workers,
                          (image_size, cams, str(partial), expert_noise, clean_labels), progress)

    kept = sorted((r for r in results if r.success), key=lambda r: r.index)
    if not kept:
        first = next((r.error for r in results if r.error), "")
        shutil.rmtree(partial)
        raise BenchError(f"no successful expert episode out of {len(jobs)}"
                         + (f"; first error: {first}" if first else "") + "; nothing written")
    data_hash, frames = _write(fmt, partial, [jobs[r.index] for r in kept], cams, suite)
    per_task = {t.task_id: 0 for t in chosen}
    failed = {t.task_id: 0 for t in chosen}
    errors = {t.task_id: 0 for t in chosen}
    for r in results:
        if r.success:
            per_task[r.task_id] += 1
        elif r.error:
            errors[r.task_id] += 1
        else:
            failed[r.task_id] += 1
    first_error = next((r.error for r in sorted(results, key=lambda r: r.index) if r.error), "")
    meta = {
        "format": fmt,
        "format_version": FORMAT_VERSION if fmt == FORMAT else None,
        "suite": suite.name,
        "suite_version": str(suite.version),
        "image_size": image_size,
        "cameras": list(cams),
        "state_dim": int(suite.observation_spec.state_dim),
        "action_dim": int(suite.action_spec.dim),
        "action_spec": asdict(suite.action_spec),
        "episodes": len(kept),
        "frames": frames,
        "episodes_per_task": episodes_per_task,
        "tasks": {tid: {"kept": per_task[tid], "failed": failed[tid], "errors": errors[tid]}
                  for tid in per_task},
        "first_error": first_error,
        "instruction_set": {"split": train_set.split, "version": train_set.version,
                            "sha256": train_set.sha256},
        "seed": seed,
        "expert_noise": expert_noise if "noise" in expert_parameters(suite) else None,
        "clean_labels": clean_labels,
        "reset_options": dict(demo_recording(suite).reset_options),
        "seed_rule": "layout seed = 1e9 + sha256('apt-bench-demos', seed, task_id, episode) mod 1e9",
        # apt-bench format: the dataset's data_hash (load_demos checks it); native formats: a hash
        # of the written arrays (their loaders compute their own data_hash when read).
        ("data_hash" if fmt == FORMAT else "content_hash"): data_hash,
    }
    (partial / (META_FILE if fmt == FORMAT else GENERATION_FILE)).write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(partial / EPISODES_DIR)
    (partial / PARTIAL_MARKER).unlink()
    if out_dir.exists():
        out_dir.rmdir()  # checked empty in _prepare_out
    partial.rename(out_dir)
    return DemoSummary(path=out_dir, episodes=len(kept), frames=frames,
                       failed=sum(failed.values()), errors=sum(errors.values()), per_task=per_task,
                       data_hash=data_hash, seconds=time.perf_counter() - start,
                       first_error=first_error)


def demos_command(suite: Suite, out: str, episodes_per_task: int, workers: int | None, seed: int,
                  image_size: int, format: str | None = None, tasks: Sequence[str] | None = None,
                  cameras: Sequence[str] | None = None, expert_noise: float | None = None,
                  clean_labels: bool = False, make_suite: Callable[[], Suite] | None = None) -> int:
    """`apt-bench demos`: generate and summarise; exit 1 if a task ended with no episode or an
    episode raised. `suite` is the resolved --suite, `make_suite` rebuilds it in spawned workers
    (the CLI passes `functools.partial(apt.registry.get_suite, NAME)`); `expert_noise` None =
    DEFAULT_EXPERT_NOISE."""
    summary = generate_demos(suite, out, episodes_per_task=episodes_per_task, workers=workers,
                             seed=seed, image_size=image_size, fmt=format, tasks=tasks, cameras=cameras,
                             expert_noise=DEFAULT_EXPERT_NOISE if expert_noise is None else expert_noise,
                             clean_labels=clean_labels, make_suite=make_suite)
    attempted = summary.episodes + summary.failed + summary.errors
    print(f"wrote {summary.episodes} episodes ({summary.frames} frames) of {len(summary.per_task)} "
          f"tasks to {summary.path} in {summary.seconds:.1f} s; hash {summary.data_hash[:16]}")
    print(f"expert: {summary.episodes}/{attempted} episodes succeeded, {summary.failed} failed "
          f"(dropped), {summary.errors} raised")
    empty = [t for t, n in summary.per_task.items() if n == 0]
    short = {t: n for t, n in summary.per_task.items() if 0 < n < episodes_per_task}
    if short:
        print("tasks below the requested count: "
              + ", ".join(f"{t} {n}/{episodes_per_task}" for t, n in short.items()))
    if empty:
        print(f"error: no successful episode for task(s) {empty}")
    if summary.errors:
        print(f"error: {summary.errors} episode(s) raised; first: {summary.first_error}")
    return 1 if empty or summary.errors else 0
