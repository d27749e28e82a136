"""Scripted-expert demonstrations: generation, the on-disk format, and the reader.

This module is the one owner of the demonstration format; training reads demos only through
`load_demos`, which also reads LIBERO HDF5 and LeRobot datasets (apt/demos/external.py).

On-disk format (a directory, format "apt-bench-demos" version 1)::

    meta.json            suite, suite_version, image_size, cameras, state_dim, action_dim,
                         action_spec, episodes, frames, per-task counts (kept / failed / errors),
                         instruction_set (split, version, sha256 of the train.yaml used), seed,
                         seed_rule, data_hash
    steps.parquet        one row per step, in episode order then frame order:
                           episode_index  int32    0..episodes-1, contiguous
                           frame_index    int32    0..len-1 within the episode
                           task_id        string
                           instruction_id string   the train.yaml entry the episode was labelled with
                           instruction    string   the exact string the env (and the label) had
                           seed           int64    the episode's layout seed (Env.reset(seed=...))
                           state          fixed_size_list<float32>[state_dim]   obs state at step i
                           action         fixed_size_list<float32>[action_dim]  action taken at step i
                           reward         float32  1.0 on the step that reached success, else 0.0
                           success        bool     info["success"] after the action of step i
    images_<camera>.npy  uint8 [frames, H, W, 3], row i = the observation image of step i

Images are plain .npy files so training memory-maps them (`np.load(mmap_mode="r")`): no decoding,
no copy, shared page cache across data-loader workers. Row i of every array is step i of
steps.parquet; the observation after an episode's last action is not stored.

`data_hash` is a sha256 over the table's columns and the image arrays in row order, so the same
suite version, seed and settings give the same hash whatever the number of worker processes.

Non-obvious behaviour:
- Demo layouts use seeds >= DEMO_SEED_BASE (1e9), derived from (seed, task, episode), so they never
  coincide with evaluation seeds (0, 1, 2, ...): `seen` is evaluated on layouts training never saw.
- Only successful expert episodes are kept; failures are counted per task in meta.json. A task is
  not topped up with extra episodes, so counts can be below `episodes_per_task`.
- Workers are started with the 'spawn' method and build the simulator inside the worker (GL
  contexts and MuJoCo state do not survive a fork). Each worker holds one environment at a time.
- Generation writes into `<out>.partial/` and renames it to `<out>` only when complete, so a
  directory with a meta.json is always a whole dataset.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from benchmarks.base import BenchError, DemoRecording, Suite, TaskSpec, unknown

FORMAT = "apt-bench-demos"
FORMAT_VERSION = 1
DEMO_SEED_BASE = 1_000_000_000  # demo layout seeds live in [1e9, 2e9): disjoint from eval seeds
META_FILE = "meta.json"
GENERATION_FILE = "generation.json"  # generate_demos' record beside a native-format dataset
STEPS_FILE = "steps.parquet"
_PARTIAL_MARKER = ".apt-bench-partial"
# Seeded zero-mean action noise (normalised units) of the expert while recording: the states
# cover small deviations and their corrections (DART-style), and the noise averages out of an L2 /
# flow-matching target. The tabletop expert still succeeded 144/144 at 0.1 (and at 0.2).
DEFAULT_EXPERT_NOISE = 0.1


def image_file(camera: str) -> str:
    return f"images_{camera}.npy"


def episode_seed(seed: int, task_id: str, episode: int) -> int:
    """Layout seed of demo episode `episode` of `task_id`: depends on nothing else."""
    digest = hashlib.sha256(f"apt-bench-demos\x1f{seed}\x1f{task_id}\x1f{episode}".encode()).digest()
    return DEMO_SEED_BASE + int.from_bytes(digest[:8], "big") % DEMO_SEED_BASE


# --------------------------------------------------------------------------------------------
# Generation


@dataclass(frozen=True)
class _Job:
    """One expert episode; `index` fixes its place in the dataset."""

    index: int
    task_id: str
    instruction_id: str
    instruction: str
    episode: int
    seed: int
    max_steps: int


@dataclass(frozen=True)
class _Result:
    index: int
    task_id: str
    success: bool
    steps: int
    error: str = ""


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


# Per-process worker state (set by _init_worker; in-process for workers=0).
_W: dict[str, Any] = {}


def _init_worker(suite_name: str, image_size: int, cameras: tuple[str, ...],
                 episode_dir: str, noise: float, clean_labels: bool = False, suite: Suite | None = None) -> None:
    if suite is None:  # spawned worker: build the suite by registered name, inside the worker
        from apt.registry import get_suite

        suite = get_suite(suite_name)
    rec = demo_recording(suite)
    _W.clear()
    _W.update(suite=suite, image_size=image_size, cameras=cameras, episode_dir=Path(episode_dir),
              noise=noise, clean_labels=clean_labels, env=None, env_task=None, reset_options=dict(rec.reset_options),
              record_keys=rec.record_keys)


def demo_recording(suite: Suite) -> DemoRecording:
    """The suite's `demo_recording` (benchmarks.base.DemoRecording), or the default one."""
    rec = getattr(suite, "demo_recording", None)
    return rec if isinstance(rec, DemoRecording) else DemoRecording()


def _worker_env(task_id: str) -> Any:
    """The worker's one environment, rebuilt when the task changes (one renderer per process)."""
    if _W["env_task"] != task_id:
        if _W["env"] is not None:
            _W["env"].close()
        _W["env"] = _W["suite"].make_env(task_id, image_size=_W["image_size"], cameras=_W["cameras"])
        _W["env_task"] = task_id
    return _W["env"]


def _expert_options(suite: Suite, seed: int, noise: float) -> dict[str, Any]:
    """Keyword arguments the suite's `expert()` accepts beyond the protocol's task id: `seed` (so
    an episode's noise does not depend on which episodes its worker ran before) and `noise`."""
    params = inspect.signature(suite.expert).parameters
    options: dict[str, Any] = {}
    if "seed" in params:
        options["seed"] = seed
    if "noise" in params:
        options["noise"] = noise
    return options


def _labels(expert: Any, executed: np.ndarray) -> np.ndarray:
    """The expert's intended actions [H, A] for the chunk it just returned (`clean_labels`)."""
    intended = getattr(expert, "intended", None)
    if intended is None:
        raise BenchError(f"{type(expert).__name__} does not report its intended (noise-free) actions, "
                         "so --clean-labels cannot be used with it; use --expert-noise 0 for clean labels")
    intended = np.asarray(intended, dtype=np.float32)[0]
    assert intended.shape == executed.shape, (intended.shape, executed.shape)
    return intended


def _run_job(job: _Job) -> _Result:
    """Roll the expert once; save the episode's arrays to the episode dir if it succeeded."""
    try:
        env = _worker_env(job.task_id)
        expert = _W["suite"].expert(job.task_id, **_expert_options(_W["suite"], job.seed,
                                                                    _W["noise"]))
        expert.reset()
        obs = env.reset(seed=job.seed, instruction=job.instruction, **_W["reset_options"])
        cams = _W["cameras"]
        images: dict[str, list[np.ndarray]] = {c: [] for c in cams}
        extras: dict[str, list[np.ndarray]] = {k: [] for k in _W["record_keys"]}
        states, actions, successes = [], [], []
        success = False
        while len(actions) < job.max_steps and not success:
            chunk = np.asarray(expert.act([obs]), dtype=np.float32)[0]  # [H, A], executed
            labels = _labels(expert, chunk) if _W["clean_labels"] else chunk
            for action, label in zip(chunk, labels):
                for c in cams:
                    images[c].append(np.asarray(obs["images"][c], dtype=np.uint8))
                for k in extras:
                    extras[k].append(np.asarray(obs["privileged"][k]))
                states.append(np.asarray(obs["state"], dtype=np.float32))
                actions.append(label)
                obs, _done, info = env.step(action)
                success = bool(info["success"])
                successes.append(success)
                if success or len(actions) >= job.max_steps:
                    break
        if success:
            flags = np.asarray(successes, dtype=bool)
            arrays = {"state": np.stack(states), "action": np.stack(actions), "success": flags}
            arrays.update({f"image_{c}": np.stack(images[c]) for c in cams})
            arrays.update({f"extra_{k}": np.stack(v) for k, v in extras.items()})
            np.savez(_W["episode_dir"] / f"{job.index:07d}.npz", **arrays)
        return _Result(job.index, job.task_id, success, len(actions))
    except BenchError:
        raise  # a user-fixable setup problem (bad camera, missing GL): stop everything
    except Exception as err:  # noqa: BLE001 - one broken episode costs one episode
        return _Result(job.index, job.task_id, False, 0, f"{type(err).__name__}: {err}")


def _plan(tasks: Sequence[TaskSpec], train_entries: dict[str, list[Any]], episodes_per_task: int,
          seed: int) -> list[_Job]:
    """The flat, deterministic work list: tasks in suite order, episodes in order; episode e of a
    task with k training instructions is labelled with instruction e mod k."""
    jobs: list[_Job] = []
    for t in tasks:
        entries = train_entries[t.task_id]
        for e in range(episodes_per_task):
            entry = entries[e % len(entries)]
            jobs.append(_Job(index=len(jobs), task_id=t.task_id, instruction_id=entry.id,
                             instruction=entry.instruction, episode=e,
                             seed=episode_seed(seed, t.task_id, e), max_steps=t.max_steps))
    return jobs


def _prepare_out(out_dir: Path) -> Path:
    if (out_dir / META_FILE).exists() or (out_dir / GENERATION_FILE).exists():
        raise BenchError(f"{out_dir} already holds demonstrations; pass another --out or delete it")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise BenchError(f"{out_dir} exists and is not an empty directory; pass another --out")
    partial = out_dir.with_name(out_dir.name + ".partial")
    if partial.exists():
        if not (partial / _PARTIAL_MARKER).exists():
            raise BenchError(f"{partial} exists and was not made by apt-bench; move it away")
        shutil.rmtree(partial)  # left by an interrupted run
    (partial / "episodes").mkdir(parents=True)
    (partial / _PARTIAL_MARKER).touch()
    return partial


def generate_demos(suite: Suite, out_dir: str | Path, episodes_per_task: int = 50,
                   workers: int | None = None, seed: int = 0, image_size: int = 96, *,
                   tasks: Sequence[str] | None = None, cameras: Sequence[str] | None = None,
                   expert_noise: float = DEFAULT_EXPERT_NOISE, clean_labels: bool = False,
                   progress: bool = True, fmt: str | None = None) -> DemoSummary:
    """Roll the suite's expert on every training task with its train.yaml instructions.

    `tasks` restricts generation to some training task ids; `cameras` defaults to every camera
    the suite offers; `workers` None = os.cpu_count(), 0 = in-process; `expert_noise` is passed to
    experts that take a `noise` argument (recorded in meta.json); `clean_labels`: the expert still
    executes its noisy actions, but each frame's label is its intended action before the noise
    (DART-style: the states cover deviations and their corrections, the labels carry no noise of
    their own, though they do correct the previous step's). `fmt`: FORMAT (apt-bench's own),
    or a native format the suite's `demo_recording` names (LIBERO: "libero_hdf5", one
    `<task name>_demo.hdf5` per task, with the generation record in GENERATION_FILE instead of
    meta.json); None = the suite's native format if it has one.
    """
    from tqdm.auto import tqdm

    from apt.splits.instruction_set import load_split

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
    jobs = _plan(chosen, by_task, episodes_per_task, seed)

    out_dir = Path(out_dir)
    partial = _prepare_out(out_dir)
    episode_dir = partial / "episodes"
    workers = (os.cpu_count() or 1) if workers is None else workers
    workers = min(workers, len(jobs))
    results: list[_Result] = []
    bar = tqdm(total=len(jobs), desc=f"demos {suite.name}", unit="ep", disable=not progress)
    try:
        if workers == 0:
            _init_worker(suite.name, image_size, cams, str(episode_dir), expert_noise, clean_labels, suite=suite)
            try:
                for job in jobs:
                    results.append(_run_job(job))
                    bar.update(1)
            finally:
                if _W.get("env") is not None:
                    _W["env"].close()
                _W.clear()
        else:
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker,
                          initargs=(suite.name, image_size, cams, str(episode_dir), expert_noise,
                                    clean_labels)) as pool:
                for res in pool.imap_unordered(_run_job, jobs, chunksize=1):
                    results.append(res)
                    bar.update(1)
    finally:
        bar.close()

    kept = sorted((r for r in results if r.success), key=lambda r: r.index)
    if not kept:
        first = next((r.error for r in results if r.error), "")
        shutil.rmtree(partial)
        raise BenchError(f"no successful expert episode out of {len(jobs)}"
                         + (f"; first error: {first}" if first else "") + "; nothing written")
    if fmt == FORMAT:
        data_hash, frames = _assemble(partial, [jobs[r.index] for r in kept], cams)
    else:
        from apt.demos.external import write_native

        data_hash, frames = write_native(fmt, partial, [jobs[r.index] for r in kept], cams, suite)
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
        "expert_noise": expert_noise if "noise" in inspect.signature(suite.expert).parameters
        else None,
        "clean_labels": clean_labels,
        "reset_options": dict(demo_recording(suite).reset_options),
        "seed_rule": "layout seed = 1e9 + sha256('apt-bench-demos', seed, task_id, episode) mod 1e9",
        # apt-bench format: the dataset's data_hash (load_demos checks it); native formats: a hash
        # of the written arrays (their loaders compute their own data_hash when read).
        ("data_hash" if fmt == FORMAT else "content_hash"): data_hash,
    }
    (partial / (META_FILE if fmt == FORMAT else GENERATION_FILE)).write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(episode_dir)
    (partial / _PARTIAL_MARKER).unlink()
    if out_dir.exists():
        out_dir.rmdir()  # checked empty in _prepare_out
    partial.rename(out_dir)
    return DemoSummary(path=out_dir, episodes=len(kept), frames=frames,
                       failed=sum(failed.values()), errors=sum(errors.values()), per_task=per_task,
                       data_hash=data_hash, seconds=time.perf_counter() - start,
                       first_error=first_error)


def _assemble(folder: Path, jobs: list[_Job], cams: tuple[str, ...]) -> tuple[str, int]:
    """Concatenate the kept episodes (in job order) into steps.parquet and images_<cam>.npy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    episode_dir = folder / "episodes"
    lengths = []
    for job in jobs:
        with np.load(episode_dir / f"{job.index:07d}.npz") as z:
            lengths.append(int(z["action"].shape[0]))
            shapes = {c: z[f"image_{c}"].shape[1:] for c in cams}
    frames = int(sum(lengths))
    images = {c: np.lib.format.open_memmap(folder / image_file(c), mode="w+", dtype=np.uint8,
                                           shape=(frames, *shapes[c])) for c in cams}
    cols: dict[str, list[Any]] = {k: [] for k in ("episode_index", "frame_index", "task_id",
                                                  "instruction_id", "instruction", "seed", "state",
                                                  "action", "reward", "success")}
    row = 0
    for ep, (job, n) in enumerate(zip(jobs, lengths)):
        with np.load(episode_dir / f"{job.index:07d}.npz") as z:
            for c in cams:
                images[c][row:row + n] = z[f"image_{c}"]
            success = z["success"]
            cols["state"].append(z["state"].astype(np.float32))
            cols["action"].append(z["action"].astype(np.float32))
        cols["success"].append(success)
        reward = np.zeros(n, dtype=np.float32)
        reward[np.argmax(success)] = 1.0
        cols["reward"].append(reward)
        cols["episode_index"].append(np.full(n, ep, dtype=np.int32))
        cols["frame_index"].append(np.arange(n, dtype=np.int32))
        cols["seed"].append(np.full(n, job.seed, dtype=np.int64))
        for k in ("task_id", "instruction_id", "instruction"):
            cols[k] += [getattr(job, k)] * n
        row += n
    for arr in images.values():
        arr.flush()
    del images
    state = np.concatenate(cols["state"])
    action = np.concatenate(cols["action"])
    table = pa.table({
        "episode_index": np.concatenate(cols["episode_index"]),
        "frame_index": np.concatenate(cols["frame_index"]),
        "task_id": pa.array(cols["task_id"], pa.string()),
        "instruction_id": pa.array(cols["instruction_id"], pa.string()),
        "instruction": pa.array(cols["instruction"], pa.string()),
        "seed": np.concatenate(cols["seed"]),
        "state": pa.FixedSizeListArray.from_arrays(pa.array(state.reshape(-1)), state.shape[1]),
        "action": pa.FixedSizeListArray.from_arrays(pa.array(action.reshape(-1)), action.shape[1]),
        "reward": np.concatenate(cols["reward"]),
        "success": np.concatenate(cols["success"]),
    })
    pq.write_table(table, folder / STEPS_FILE)
    demos = _read(folder, meta=None)
    return demos.compute_data_hash(), frames


# --------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True, eq=False)
class Demos:
    """A demonstration dataset on disk, with memory-mapped images.

    Row i of `states`, `actions`, `instructions`, `task_ids` and of every `images[camera]` is step
    i; episode e is rows `episode_starts[e]:episode_starts[e + 1]`.
    """

    path: Path
    meta: dict[str, Any]
    states: np.ndarray  # float32 [N, state_dim]
    actions: np.ndarray  # float32 [N, action_dim]
    episode_index: np.ndarray  # int32 [N]
    frame_index: np.ndarray  # int32 [N]
    task_ids: np.ndarray  # object (str) [N]
    instruction_ids: np.ndarray  # object (str) [N]
    instructions: np.ndarray  # object (str) [N], the exact label of each step
    seeds: np.ndarray  # int64 [N], the episode's layout seed
    rewards: np.ndarray  # float32 [N]
    success: np.ndarray  # bool [N]
    images: dict[str, np.ndarray]  # camera -> uint8 [N, H, W, 3], read-only memmap
    episode_starts: np.ndarray  # int64 [E + 1]

    def __len__(self) -> int:
        return int(self.states.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.episode_starts.shape[0] - 1)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.images)

    def episode(self, e: int) -> slice:
        """Row range of episode e."""
        if not 0 <= e < self.num_episodes:
            raise IndexError(f"episode {e} out of range 0..{self.num_episodes - 1}")
        return slice(int(self.episode_starts[e]), int(self.episode_starts[e + 1]))

    def episodes(self) -> Iterator[slice]:
        for e in range(self.num_episodes):
            yield self.episode(e)

    def compute_data_hash(self) -> str:
        """sha256 over every column and image array in row order (what meta.json records)."""
        h = hashlib.sha256()
        for name, arr in (("episode_index", self.episode_index), ("frame_index", self.frame_index),
                          ("seed", self.seeds), ("state", self.states), ("action", self.actions),
                          ("reward", self.rewards), ("success", self.success)):
            a = np.ascontiguousarray(arr)
            h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
        for name, arr in (("task_id", self.task_ids), ("instruction_id", self.instruction_ids),
                          ("instruction", self.instructions)):
            h.update(f"{name}:".encode())
            h.update("\x1e".join(map(str, arr)).encode("utf-8"))
        for cam in sorted(self.images):
            img = self.images[cam]
            h.update(f"images_{cam}:{img.shape}".encode())
            for i in range(0, img.shape[0], 1024):  # stream: the arrays may not fit in memory
                h.update(np.ascontiguousarray(img[i:i + 1024]).tobytes())
        return h.hexdigest()


def _list_column(table: Any, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    width = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)


def _read(path: Path, meta: dict[str, Any] | None) -> Demos:
    import pyarrow.parquet as pq

    table = pq.read_table(path / STEPS_FILE)
    n = table.num_rows
    cams = meta["cameras"] if meta is not None else sorted(
        p.name[len("images_"):-len(".npy")] for p in path.glob("images_*.npy"))
    images = {}
    for c in cams:
        f = path / image_file(c)
        if not f.is_file():
            raise BenchError(f"{path}: missing {f.name} (camera {c!r} is listed in {META_FILE}); "
                             "the dataset is incomplete: regenerate it with `apt-bench demos`")
        images[c] = np.load(f, mmap_mode="r")
        if images[c].dtype != np.uint8 or images[c].ndim != 4 or images[c].shape[0] != n:
            raise BenchError(f"{f}: expected uint8 [{n}, H, W, 3], got {images[c].dtype} "
                             f"{list(images[c].shape)}; regenerate the dataset with `apt-bench demos`")
    episode_index = table.column("episode_index").to_numpy()
    steps = np.diff(episode_index)
    changes = np.flatnonzero(steps) + 1
    starts = np.concatenate([[0], changes, [n]]).astype(np.int64) if n else np.zeros(1, np.int64)
    if n and (episode_index[0] != 0 or np.any((steps != 0) & (steps != 1))):
        raise BenchError(f"{path / STEPS_FILE}: episode_index must run 0, 1, 2, ... in row order; "
                         "the file was not written by `apt-bench demos`")

    def strings(name: str) -> np.ndarray:
        return np.asarray(table.column(name).to_pylist(), dtype=object)

    return Demos(
        path=path, meta=meta or {}, states=_list_column(table, "state"),
        actions=_list_column(table, "action"), episode_index=episode_index.astype(np.int32),
        frame_index=table.column("frame_index").to_numpy().astype(np.int32),
        task_ids=strings("task_id"), instruction_ids=strings("instruction_id"),
        instructions=strings("instruction"), seeds=table.column("seed").to_numpy().astype(np.int64),
        rewards=table.column("reward").to_numpy().astype(np.float32),
        success=table.column("success").to_numpy(zero_copy_only=False).astype(bool),
        images=images, episode_starts=starts)


def load_demos(path: str | Path, suite: str | None = None, suite_version: str | None = None,
               *, verify: bool = False, **options: Any) -> Demos:
    """Open a demonstration dataset: an apt-bench directory (images memory-mapped, nothing
    decoded), or a LIBERO .hdf5 file / directory or a LeRobot v2.x root (decoded into memory by
    `apt.demos.external`, which `options` configure; see `detect_format`).

    `suite` / `suite_version`, when given, must match what the data was made with (external data
    records no suite version; its tasks are checked against the suite's where it can be). `verify`
    recomputes `data_hash` (reads every image once).
    """
    from apt.demos.external import detect_format, load_external

    fmt = detect_format(path)
    if fmt != FORMAT:
        return load_external(path, fmt, suite=suite, **options)
    if options:
        raise BenchError(f"{path} is an apt-bench demonstration directory: options "
                         f"{sorted(options)} apply to LIBERO / LeRobot datasets only")
    path = Path(path)
    make = f"`apt-bench demos --suite {suite or '<suite>'} --out {path}`"
    if not path.is_dir():
        raise BenchError(f"no demonstrations at {path}: directory not found; make them with {make}")
    if not (path / META_FILE).is_file():
        hint = " (an interrupted generation left it; run it again)" if (
            path / _PARTIAL_MARKER).exists() else ""
        raise BenchError(f"{path} is not a demonstration directory: no {META_FILE}{hint}; make one "
                         f"with {make}")
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BenchError(f"{path / META_FILE}: not valid JSON ({err}); regenerate with {make}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BenchError(f"{path / META_FILE}: not an apt-bench demonstration dataset "
                         f"(format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise BenchError(f"{path}: demonstration format version {meta.get('format_version')}, this "
                         f"apt-bench reads version {FORMAT_VERSION}; regenerate with {make}")
    if suite is not None and meta.get("suite") != suite:
        raise BenchError(f"{path} holds demonstrations of suite {meta.get('suite')!r}, not {suite!r}; "
                         f"pass demonstrations made with {make}")
    if suite_version is not None and str(meta.get("suite_version")) != str(suite_version):
        raise BenchError(f"{path} was made with {meta.get('suite')} version "
                         f"{meta.get('suite_version')}, the installed suite is version "
                         f"{suite_version}; regenerate with {make}")
    if not (path / STEPS_FILE).is_file():
        raise BenchError(f"{path}: missing {STEPS_FILE}; the dataset is incomplete: regenerate it "
                         f"with {make}")
    demos = _read(path, meta)
    if len(demos) != meta.get("frames") or demos.num_episodes != meta.get("episodes"):
        raise BenchError(f"{path}: {STEPS_FILE} holds {len(demos)} frames in {demos.num_episodes} "
                         f"episodes, {META_FILE} says {meta.get('frames')} in {meta.get('episodes')}; "
                         f"regenerate with {make}")
    if verify and demos.compute_data_hash() != meta.get("data_hash"):
        raise BenchError(f"{path}: data does not match the data_hash in {META_FILE} (files changed "
                         f"after generation); regenerate with {make}")
    return demos


# --------------------------------------------------------------------------------------------
# CLI


def demos_command(suite: str, out: str, episodes_per_task: int, workers: int | None, seed: int,
                  image_size: int, format: str | None = None, tasks: Sequence[str] | None = None,
                  cameras: Sequence[str] | None = None, expert_noise: float | None = None,
                  clean_labels: bool = False) -> int:
    """`apt-bench demos`: generate and summarise; exit 1 if a task ended with no episode or an
    episode raised. `expert_noise` None = DEFAULT_EXPERT_NOISE."""
    from apt.registry import get_suite

    s = get_suite(suite)
    summary = generate_demos(s, out, episodes_per_task=episodes_per_task, workers=workers,
                             seed=seed, image_size=image_size, fmt=format, tasks=tasks, cameras=cameras,
                             expert_noise=DEFAULT_EXPERT_NOISE if expert_noise is None else expert_noise,
                             clean_labels=clean_labels)
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
