"""`apt-bench run`: resolve everything, check it, list the work, skip what is stored, fan out, report.

Order of checks (cheapest first, all before the first episode): device, worker count, store
writable, suite, split, policy, specs (benchmarks.base.check_compatible), replan steps.

Work list: one item per (instruction entry, episode index i), with seed `seed + i` for every task and
every split, so ID-vs-OOD comparisons are paired on the same scenes (DESIGN.md §5). Items are
ordered episode-major (all entries for i = 0, then i = 1, ...), so an interrupted run has a balanced
sample of every entry.

Split identity in the episode key: a named split (shipped or a control) is keyed by its name; a
split given as a YAML path is keyed by its content hash ("sha256:<hex>"), so moving the file keeps
its episodes and editing it never mixes old and new ones (`InstructionSet.store_key`). The
instruction's own hash is in the key too, so editing one entry of a shipped split re-runs exactly
that entry.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from apt.eval import fanout
from apt.registry import get_suite
from apt.eval.rollout import EpisodeResult, Settings, apply_settings, now
from apt.eval.compare import markdown_table
from apt.eval.stats import success_table
from apt.eval.store import EpisodeRecord, Store, episode_key, sha256_text
from apt.splits.resolve import load_split
from benchmarks.base import BenchError, check_compatible

QUICK_EPISODES = 4  # default episodes per instruction entry: a run of a split takes minutes on 2 cores


def check_device(device: str) -> None:
    """BenchError unless `device` is cpu, or cuda[:N] with a CUDA GPU present."""
    if device == "cpu":
        return
    if not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise BenchError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
    try:
        import torch
    except ImportError:
        raise BenchError(f"--device {device} needs PyTorch with CUDA, and torch is not installed; "
                         "rerun with --device cpu") from None
    if not torch.cuda.is_available():
        raise BenchError(f"--device {device} asked for, but no CUDA GPU is available "
                         "(torch.cuda.is_available() is False); rerun with --device cpu")
    index = int(device[5:]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise BenchError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")


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
             noise_scale: float | None = None):
    """Resolve and check a run; returns (suite, policy, instruction set, plan, records-by-key)."""
    check_device(device)
    suite_obj = get_suite(suite)
    tasks = {t.task_id: t for t in suite_obj.tasks()}
    iset = load_split(suite_obj.name, split, list(tasks.values()))
    unknown = sorted({e.task_id for e in iset.entries} - set(tasks))
    if unknown:
        raise BenchError(f"split {iset.source} names task(s) {unknown} that suite {suite_obj.name!r} lacks")
    pol = fanout.build_policy(policy, suite_obj, seed, device)
    check_compatible(suite_obj.action_spec, suite_obj.observation_spec, pol.spec)
    if replan_steps is not None and replan_steps > pol.spec.chunk:
        raise BenchError(f"--replan-steps {replan_steps} exceeds the policy's chunk length {pol.spec.chunk}")
    cameras = tuple(pol.spec.observation.cameras)
    if video_dir and not cameras:  # render one camera for the video even if the policy needs none
        cameras = tuple(suite_obj.observation_spec.cameras[:1])
    if noise_scale is not None and not hasattr(pol, "noise_scale"):
        raise BenchError(f"--noise-scale applies to policies that sample noise (flow-matching checkpoints); "
                         f"{policy!r} does not")
    if noise_scale is not None and noise_scale < 0:
        raise BenchError(f"--noise-scale must be >= 0 (a standard deviation), got {noise_scale}")
    settings = Settings(replan_steps=replan_steps or pol.spec.replan or pol.spec.chunk,
                        image_size=image_size or pol.spec.observation.image_size,
                        cameras=cameras, max_steps=max_steps,
                        noise_scale=noise_scale if noise_scale is not None else getattr(pol, "noise_scale", None))
    apply_settings(pol, settings)
    # Workers rebuild the policy by name; a checkpoint path must not depend on their working directory.
    policy_ref = str(Path(policy).resolve()) if Path(policy).exists() else policy
    plan = fanout.Plan(suite_ref=suite, policy_name=policy_ref, policy_seed=seed, device=device,
                       episode_hook=fanout.has_episode_hook(pol), settings=settings, video_dir=video_dir)
    policy_id = str(getattr(pol, "policy_id", "") or policy)
    ckpt = str(getattr(pol, "checkpoint_sha256", "") or "")
    split_key = iset.store_key
    n = episodes or QUICK_EPISODES
    protocol = protocol_key(settings)
    records: dict[str, tuple[fanout.WorkItem, dict[str, Any]]] = {}
    for i in range(n):
        for e in iset.entries:
            ep_seed = seed + i
            isha = sha256_text(e.instruction)
            key = episode_key(policy_id, ckpt, suite_obj.name, suite_obj.version, e.task_id, split_key,
                              e.id, isha, ep_seed, protocol)
            item = fanout.WorkItem(key=key, task_id=e.task_id, instruction=e.instruction, seed=ep_seed,
                                   max_steps=max_steps or tasks[e.task_id].max_steps)
            meta = dict(policy_id=policy_id, checkpoint_sha256=ckpt, suite=suite_obj.name,
                        suite_version=str(suite_obj.version), task_id=e.task_id, split=iset.split,
                        split_key=split_key, split_sha256=iset.sha256, instruction_id=e.id,
                        instruction_sha256=isha, axis=e.axis, seed=ep_seed, episode_index=i)
            records[key] = (item, meta)
    return suite_obj, pol, iset, plan, records


def run(policy: str, split: str, suite: str = "tabletop", episodes: int | None = None,
        workers: int | None = None, store: str = "runs/results.sqlite", video: bool = False,
        ray_address: str | None = None, seed: int = 0, image_size: int | None = None,
        replan_steps: int | None = None, device: str = "cpu", max_steps: int | None = None,
        noise_scale: float | None = None, progress: bool = True, quiet: bool = False) -> int:
    """Evaluate `policy` on every (task, instruction entry) of `split`; returns the exit code."""
    if workers is not None and workers < 0:
        raise BenchError(f"--workers must be >= 0 (0 = in-process), got {workers}")
    check_device(device)
    db = Store(store)  # not writable -> BenchError before anything expensive
    try:
        video_dir = str(Path(store).resolve().parent / "videos") if video else None
        suite_obj, pol, iset, plan, records = plan_run(
            policy=policy, split=split, suite=suite, episodes=episodes, seed=seed, image_size=image_size,
            replan_steps=replan_steps, device=device, video_dir=video_dir, max_steps=max_steps,
            noise_scale=noise_scale)
        done = db.done_keys(records)
        todo = [item for key, (item, _) in records.items() if key not in done]
        run_id = f"{now()[:19].replace(':', '').replace('-', '')}-{uuid.uuid4().hex[:8]}"
        first_meta = next(iter(records.values()))[1]
        s = plan.settings
        db.start_run(dict(
            run_id=run_id, started=now(), policy_id=first_meta["policy_id"],
            checkpoint_sha256=first_meta["checkpoint_sha256"], suite=suite_obj.name,
            suite_version=str(suite_obj.version), split=iset.split, split_sha256=iset.sha256,
            episodes=str(episodes or QUICK_EPISODES), first_seed=str(seed),
            max_steps=str(max_steps) if max_steps else "task", replan_steps=str(s.replan_steps),
            image_size=str(s.image_size), cameras=",".join(s.cameras), workers=str(workers),
            apt_bench_version=package_version(), git_sha=git_sha(),
            command=" ".join(shlex.quote(a) for a in sys.argv),
            settings_json=json.dumps({**asdict(s), "suite_ref": suite, "policy": policy, "split": split,
                                      "split_source": iset.source, "device": device,
                                      "ray_address": ray_address, "video": bool(video)})))
        if not quiet:
            print(f"{policy} on {suite_obj.name}/{iset.split}: {len(records)} episodes "
                  f"({len(done)} already stored, {len(todo)} to run)", file=sys.stderr)

        def store_result(result: EpisodeResult) -> None:
            meta = records[result.key][1]
            db.insert(EpisodeRecord(
                key=result.key, run_id=run_id, instruction=result.instruction, success=bool(result.success),
                steps=int(result.steps), wall_s=float(result.wall_s), error=result.error,
                started=result.started, finished=result.finished, video=result.video,
                timing_json=json.dumps(result.extra.get("timing", {}), sort_keys=True), **meta))

        stats = fanout.execute(todo, plan, workers=workers, policy=pol, suite=suite_obj,
                               on_result=store_result, ray_address=ray_address, progress=progress)
        db.finish_run(run_id, now())
        df = db.episodes(records)
    finally:
        db.close()
    if not quiet:
        print(format_run_table(df))
        if stats.get("error"):
            print(f"{stats['error']} episode(s) recorded with an error (counted as failures); see the "
                  f"`error` column of {store}", file=sys.stderr)
    return 0


def format_run_table(df: pd.DataFrame) -> str:
    """Success per task and overall (Wilson 95% CIs) for one run's episodes, as Markdown."""
    if df.empty:
        return "(no episodes)"
    per_task = success_table(df, by=["task_id"])
    overall = success_table(df.assign(task_id="ALL"), by=["task_id"])
    table = pd.concat([per_task, overall], ignore_index=True)
    table["success"] = table.apply(lambda r: f"{r.rate:.1%} [{r.lo:.1%}, {r.hi:.1%}]", axis=1)
    return markdown_table(table[["task_id", "n", "successes", "errors", "success"]])
