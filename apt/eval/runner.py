"""`apt-bench run`: resolve everything, check it, list the work, skip what is stored, fan out, report.

Order of checks (cheapest first, all before the first episode): device, worker count, store
writable, suite, split, policy, specs (benchmarks.base.check_compatible), replan steps.

Work list: one episode per (instruction entry, episode index i), with seed `seed + i` for every
task and every split, so ID-vs-OOD comparisons are paired on the same scenes (ARCHITECTURE.md §5).
Episodes are ordered episode-major (all entries for i = 0, then i = 1, ...), so an interrupted run
has a balanced sample of every entry.

Split identity in the episode key: a named split (shipped or a control) is keyed by its name; a
split given as a YAML path is keyed by its content hash ("sha256:<hex>"), so moving the file keeps
its episodes and editing it never mixes old and new ones (`InstructionSet.store_key`). The
instruction's own hash is in the key too, so editing one entry of a shipped split re-runs exactly
that entry. Each episode is one `episodes.Episode`, from this plan to its stored row.

The engine: `execute` plays the work list in-process (local.py, `--workers 0`) or over Ray
(ray_pool.py) behind one progress bar. Without `--workers` (and `--ray-address`) it measures the
run's costs and, for a shared policy, picks the engine predicted faster on this machine
(sizing.engine): in-process on 2 cores (on the torch threads that measured faster), Ray on more;
the choice and its prediction go into the run's engine record.
"""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import sys
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch

from apt.devices import check_device, cpu_info, usable_cores
from apt.eval.compare import markdown_table
from apt.eval.episodes import Episode, Plan
from apt.eval.local import in_flight as local_in_flight, run_local
from apt.eval.ray_pool import run_ray
from apt.eval.sizing import Costs, engine, measure
from apt.eval.rollout import EpisodeResult, Settings, apply_settings, now
from apt.eval.stats import success_table
from apt.eval.store import Store
from apt.registry import build_policy, get_suite
from apt.splits.resolve import load_split
from benchmarks.base import (BenchError, IdentifiedPolicy, NoiseSampling, PerEpisodePolicy, Policy, Suite,
                             check_compatible)

QUICK_EPISODES = 4  # default episodes per instruction entry: a run of a split takes minutes on 2 cores


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("apt-bench")
    except Exception:  # noqa: BLE001
        return ""


ROLLOUT_PROTOCOL = 2


def protocol_key(settings: Any) -> str:
    """Canonical JSON of the rollout settings that change outcomes (part of every episode key).
    `rollout` versions the engine's own protocol: 2 = policies draw their sampling noise from the
    observation's `sample_key` (task, seed, step), not from a per-run stream."""
    return json.dumps({"replan_steps": settings.replan_steps, "image_size": settings.image_size,
                       "cameras": list(settings.cameras), "max_steps": settings.max_steps,
                       "noise_scale": settings.noise_scale, "rollout": ROLLOUT_PROTOCOL}, sort_keys=True)


def plan_run(*, policy: str, split: str, suite: str = "tabletop", episodes: int | None = None,
             seed: int = 0, image_size: int | None = None, replan_steps: int | None = None,
             device: str = "cpu", video_dir: str | None = None, max_steps: int | None = None,
             noise_scale: float | None = None, in_flight: int | None = None):
    """Resolve and check a run; returns (suite, policy, instruction set, plan, episodes by key)."""
    check_device(device)
    suite_obj = get_suite(suite)
    tasks = {t.task_id: t for t in suite_obj.tasks()}
    iset = load_split(suite_obj.name, split, list(tasks.values()))
    unknown = sorted({e.task_id for e in iset.entries} - set(tasks))
    if unknown:
        raise BenchError(f"split {iset.source} names task(s) {unknown} that suite {suite_obj.name!r} lacks")
    pol = build_policy(policy, suite_obj, seed=seed, device=device)
    check_compatible(suite_obj.action_spec, suite_obj.observation_spec, pol.spec)
    if replan_steps is not None and replan_steps > pol.spec.chunk:
        raise BenchError(f"--replan-steps {replan_steps} exceeds the policy's chunk length {pol.spec.chunk}")
    cameras = tuple(pol.spec.observation.cameras)
    if video_dir and not cameras:  # render one camera for the video even if the policy needs none
        cameras = tuple(suite_obj.observation_spec.cameras[:1])
    if noise_scale is not None and not isinstance(pol, NoiseSampling):
        raise BenchError(f"--noise-scale applies to policies that sample noise (flow-matching checkpoints); "
                         f"{policy!r} does not")
    if noise_scale is not None and noise_scale < 0:
        raise BenchError(f"--noise-scale must be >= 0 (a standard deviation), got {noise_scale}")
    own_noise = pol.noise_scale if isinstance(pol, NoiseSampling) else None
    settings = Settings(replan_steps=replan_steps or pol.spec.replan or pol.spec.chunk,
                        image_size=image_size or pol.spec.observation.image_size,
                        cameras=cameras, max_steps=max_steps,
                        noise_scale=noise_scale if noise_scale is not None else own_noise)
    apply_settings(pol, settings)
    # Workers rebuild the policy by name; a checkpoint path must not depend on their working directory.
    policy_ref = str(Path(policy).resolve()) if Path(policy).exists() else policy
    if in_flight is not None and in_flight < 1:
        raise BenchError(f"--in-flight must be >= 1 (episodes each worker plays at once), got {in_flight}")
    plan = Plan(suite_ref=suite, policy_name=policy_ref, policy_seed=seed, device=device,
                episode_hook=isinstance(pol, PerEpisodePolicy), settings=settings, video_dir=video_dir,
                in_flight=in_flight or 0)
    policy_id, ckpt = (pol.policy_id, pol.checkpoint_sha256) if isinstance(pol, IdentifiedPolicy) else ("", "")
    policy_id, ckpt = str(policy_id or policy), str(ckpt or "")
    protocol = protocol_key(settings)
    planned: dict[str, Episode] = {}
    for i in range(episodes or QUICK_EPISODES):
        for e in iset.entries:
            ep = Episode(policy_id=policy_id, checkpoint_sha256=ckpt, suite=suite_obj.name,
                         suite_version=str(suite_obj.version), split=iset.split, split_key=iset.store_key,
                         split_sha256=iset.sha256, entry=e, seed=seed + i, episode_index=i,
                         max_steps=max_steps or tasks[e.task_id].max_steps, protocol=protocol)
            planned[ep.key] = ep
    return suite_obj, pol, iset, plan, planned


def execute(episodes: Sequence[Episode], plan: Plan, *, workers: int | None, policy: Policy, suite: Suite,
            on_result: Callable[[EpisodeResult], None], ray_address: str | None = None,
            progress: bool = True) -> dict:
    """Play every episode (in-process if workers == 0, else Ray) with a progress bar; returns stats."""
    from tqdm import tqdm

    bar = tqdm(total=len(episodes), unit="ep", desc="episodes", disable=not progress or None, leave=False)
    counts = {"done": 0, "success": 0, "error": 0}

    def report(result: EpisodeResult) -> None:
        on_result(result)
        counts["done"] += 1
        counts["success"] += int(result.success)
        counts["error"] += int(bool(result.error))
        bar.update(1)
        bar.set_postfix(success=f"{counts['success'] / counts['done']:.1%}", errors=counts["error"])

    choice: dict = {}
    costs: Costs | None = None
    threads = torch.get_num_threads()
    if workers is None and ray_address is None and episodes and not plan.episode_hook:
        costs = measure(plan, episodes[0], policy, suite)
        picked = engine(costs, usable_cores())
        workers = 0 if picked.name == "in-process" else None
        predicted = {"in-process": picked.local_s, "ray": picked.ray_s}  # ray: inf with no core to spare
        choice = {"engine_chosen": picked.name, "predicted_ms_per_query": {
            name: round(s * 1e3, 2) if math.isfinite(s) else None for name, s in predicted.items()}}
        if picked.name == "in-process":
            choice["policy_threads"] = picked.threads
            torch.set_num_threads(picked.threads)
        if progress:
            print(f"engine: {picked.name} (predicted {picked.local_s * 1e3:.1f} ms per policy query in-process, "
                  f"{picked.ray_s * 1e3:.1f} on Ray; --workers N chooses)", file=sys.stderr)
    try:
        if workers == 0:
            run_local(episodes, plan, policy, suite, report)
            stats: dict = {"workers": 0, "in_flight": local_in_flight(plan, policy)}
        else:
            stats = run_ray(episodes, plan, workers, report, ray_address, policy=policy, suite=suite, costs=costs)
    finally:
        bar.close()
        torch.set_num_threads(threads)
    return {**choice, **stats, **counts}


def run(policy: str, split: str, suite: str = "tabletop", episodes: int | None = None,
        workers: int | None = None, store: str = "runs/results.sqlite", video: bool = False,
        ray_address: str | None = None, seed: int = 0, image_size: int | None = None,
        replan_steps: int | None = None, device: str = "cpu", max_steps: int | None = None,
        noise_scale: float | None = None, progress: bool = True, quiet: bool = False,
        in_flight: int | None = None) -> int:
    """Evaluate `policy` on every (task, instruction entry) of `split`; returns the exit code."""
    if workers is not None and workers < 0:
        raise BenchError(f"--workers must be >= 0 (0 = in-process), got {workers}")
    check_device(device)
    db = Store(store)  # not writable -> BenchError before anything expensive
    try:
        video_dir = str(Path(store).resolve().parent / "videos") if video else None
        suite_obj, pol, iset, plan, planned = plan_run(
            policy=policy, split=split, suite=suite, episodes=episodes, seed=seed, image_size=image_size,
            replan_steps=replan_steps, device=device, video_dir=video_dir, max_steps=max_steps,
            noise_scale=noise_scale, in_flight=in_flight)
        done = db.done_keys(planned)
        todo = [ep for key, ep in planned.items() if key not in done]
        run_id = f"{now()[:19].replace(':', '').replace('-', '')}-{uuid.uuid4().hex[:8]}"
        first = next(iter(planned.values()))
        s = plan.settings
        db.start_run(dict(
            run_id=run_id, started=now(), policy_id=first.policy_id,
            checkpoint_sha256=first.checkpoint_sha256, suite=suite_obj.name,
            suite_version=str(suite_obj.version), split=iset.split, split_sha256=iset.sha256,
            episodes=str(episodes or QUICK_EPISODES), first_seed=str(seed),
            max_steps=str(max_steps) if max_steps else "task", replan_steps=str(s.replan_steps),
            image_size=str(s.image_size), cameras=",".join(s.cameras), workers=str(workers),
            apt_bench_version=package_version(), git_sha=git_sha(),
            command=" ".join(shlex.quote(a) for a in sys.argv),
            settings_json=json.dumps({**asdict(s), "suite_ref": suite, "policy": policy, "split": split,
                                      "split_source": iset.source, "device": device,
                                      "ray_address": ray_address, "video": bool(video),
                                      "in_flight": in_flight, "cpu": cpu_info()})))
        if not quiet:
            print(f"{policy} on {suite_obj.name}/{iset.split}: {len(planned)} episodes "
                  f"({len(done)} already stored, {len(todo)} to run)", file=sys.stderr)

        def store_result(result: EpisodeResult) -> None:
            db.insert(planned[result.key].record(result, run_id))

        stats = execute(todo, plan, workers=workers, policy=pol, suite=suite_obj, on_result=store_result,
                        ray_address=ray_address, progress=progress)
        db.finish_run(run_id, now(), engine=engine_summary(stats))
        df = db.episodes(planned)
    finally:
        db.close()
    if not quiet:
        print(format_run_table(df))
        if stats.get("error"):
            print(f"{stats['error']} episode(s) recorded with an error (counted as failures); see the "
                  f"`error` column of {store}", file=sys.stderr)
    return 0


def engine_summary(stats: dict) -> dict:
    """What the run's metadata keeps of the engine's stats: its layout, and the policy actor's batch
    sizes as count / mean / max instead of one number per call."""
    out = {k: v for k, v in stats.items() if k != "batch_sizes"}
    sizes = stats.get("batch_sizes") or []
    if sizes:
        out.update(batches=len(sizes), batch_mean=round(sum(sizes) / len(sizes), 2), batch_max=max(sizes))
    return out


def format_run_table(df: pd.DataFrame) -> str:
    """Success per task and overall (Wilson 95% CIs) for one run's episodes, as Markdown."""
    if df.empty:
        return "(no episodes)"
    per_task = success_table(df, by=["task_id"])
    overall = success_table(df.assign(task_id="ALL"), by=["task_id"])
    table = pd.concat([per_task, overall], ignore_index=True)
    table["success"] = table.apply(lambda r: f"{r.rate:.1%} [{r.lo:.1%}, {r.hi:.1%}]", axis=1)
    return markdown_table(table[["task_id", "n", "successes", "errors", "success"]])
