"""Evaluation engine speed against the env-only ceiling, all measured in one run on one work list.

On a split's entries x N episodes (seeds seed..seed+N-1), prints:
- the env-only ceiling: the same episodes stepped by the scripted expert in a bare loop (no engine,
  no store, no Ray), without rendering and rendering the policy's cameras (their difference is the
  render cost per step);
- episodes/min of `apt-bench run` itself, each run a subprocess into a fresh store, timed from the
  run's own start and finish in the store's `runs` table (policy load and interpreter start-up are
  excluded; Ray's start-up and the workers' are included): the oracle in-process; the policy with
  the default engine (no `--workers`: the engine `apt-bench run` picks from measured costs, named in
  the label), in-process (`--workers 0`: the policy's batch in flight for a learned policy; with
  `--serial` also one episode at a time, `--in-flight 1`) and on Ray (`--workers <cores>`, the
  rest sized from measured costs); with `--reference-repo DIR`, the default and in-process commands
  with the engine checked out there (another git worktree with its own `.venv`; its default was Ray
  with one worker per core), so old and new run under the same load;
- each run's ratio to the ceilings and, for the reference, new/old (new Ray against old default);
- where an episode's time goes, from the per-episode timings each store keeps (timing_json): env
  step (rendering included), of which render (ceiling difference x steps), policy compute (what a
  policy actor reports; in-process the whole call), queueing/IPC (the call minus compute), lockstep
  wait (the episode's share of its rounds spent on the other episodes' env steps), store (one
  insert, timed here);
- how often the runs agree on each episode (key, success, steps).

`--policy oracle` times the in-process engine and Ray with 1 and 2 env workers instead (scaling).

Run: `python -m benchmarks.speed.eval_speed --policy apt_pi0 --split compositional --episodes 4
[--reference-repo /work/base]` (the README's main job; ~10 min on 2 cores with the reference).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from apt.devices import cpu_info, usable_cores
from apt.eval.episodes import Episode, Plan
from apt.eval.runner import plan_run
from apt.eval.store import EpisodeRecord, Store, read_episodes
from benchmarks.base import FixedBatch, Suite

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    """One `apt-bench run` subprocess and what its store says about it."""

    label: str
    repo: Path
    args: list[str]
    run_s: float = float("nan")  # the run's started -> finished, from its store
    wall_s: float = float("nan")  # the whole command
    episodes: pd.DataFrame = field(default_factory=pd.DataFrame)
    engine: dict[str, Any] = field(default_factory=dict)

    @property
    def per_min(self) -> float:
        return 60.0 * len(self.episodes) / self.run_s if len(self.episodes) else float("nan")


def ceiling(items: Sequence[Episode], plan: Plan, suite: Suite, cameras: tuple[str, ...]) -> tuple[float, int, int]:
    """Seconds for `items` with the scripted expert in a bare loop; successes and env steps."""
    envs: dict[str, Any] = {}
    successes = steps = 0
    t = time.perf_counter()
    for it in items:
        env = envs.get(it.task_id) or envs.setdefault(
            it.task_id, suite.make_env(it.task_id, image_size=plan.settings.image_size, cameras=cameras))
        expert = suite.expert(it.task_id)
        obs = env.reset(seed=it.seed, instruction=it.instruction)
        for _ in range(it.max_steps):
            obs, done, info = env.step(expert.act([obs])[0, 0])
            steps += 1
            if done:
                successes += int(info.get("success", done))
                break
    dt = time.perf_counter() - t
    for env in envs.values():
        env.close()
    return dt, successes, steps


def launch(run: Run, common: list[str]) -> Run:
    """Run `apt-bench run` of `run.repo` into a fresh store; read its timings back."""
    python = run.repo / ".venv" / "bin" / "python"
    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "speed.sqlite")
        cmd = [str(python if python.exists() else sys.executable), "-m", "apt.cli", "run", *common, *run.args,
               "--store", store]
        env = {**os.environ, "PYTHONPATH": str(run.repo)}
        t = time.perf_counter()
        out = subprocess.run(cmd, cwd=run.repo, env=env, capture_output=True, text=True)
        run.wall_s = time.perf_counter() - t
        if out.returncode != 0:
            raise SystemExit(f"{run.label}: {' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
        with sqlite3.connect(store) as conn:
            runs = pd.read_sql_query("SELECT started, finished, settings_json FROM runs", conn)
            run.episodes = pd.read_sql_query("SELECT key, success, steps, wall_s, timing_json FROM episodes", conn)
    started, finished = pd.to_datetime(runs["started"].iloc[0]), pd.to_datetime(runs["finished"].iloc[0])
    run.run_s = (finished - started).total_seconds()
    run.engine = json.loads(runs["settings_json"].iloc[0]).get("engine", {})
    return run


def store_ms() -> float:
    """Milliseconds of one episode's store insert (SQLite, WAL, one commit per episode)."""
    with tempfile.TemporaryDirectory() as tmp, Store(os.path.join(tmp, "s.sqlite")) as db:
        meta = dict(run_id="r", policy_id="p", checkpoint_sha256="", suite="s", suite_version="1", task_id="t",
                    split="", split_key="", split_sha256="", instruction_id="", instruction_sha256="", axis="",
                    seed=0, episode_index=0, instruction="x", success=False, steps=75, wall_s=1.0, error="",
                    started="", finished="", video="", timing_json=json.dumps({"calls": 19, "act_ms_mean": 1.0}))
        t = time.perf_counter()
        for i in range(200):
            db.insert(EpisodeRecord(key=str(i), **meta))
        return (time.perf_counter() - t) / 200 * 1e3


def breakdown(run: Run, render_ms_per_step: float, insert_ms: float) -> dict[str, float]:
    """Mean milliseconds per episode: wall, env, render, compute, queueing/IPC, lockstep wait, store."""
    t = [json.loads(x or "{}") for x in run.episodes["timing_json"]]
    calls = np.array([x.get("calls", 0) for x in t], float)
    act = np.array([x.get("act_ms_total", x.get("act_ms_mean", 0.0) * x.get("calls", 0)) for x in t], float)
    wall = run.episodes["wall_s"].to_numpy(float) * 1e3
    env = np.array([x.get("env_ms", np.nan) for x in t], float)
    env = np.where(np.isnan(env), wall - act, env)  # engines without env timing: the rest of the episode
    if any("server_infer_ms_mean" in x for x in t):  # a policy actor reported its compute
        compute = np.array([x.get("server_infer_ms_total", x.get("server_infer_ms_mean", 0.0) * x.get("calls", 0))
                            for x in t], float)
    elif "in-process" in run.label:  # the whole call is compute (the default names its engine)
        compute = act
    else:  # an engine whose policy actor did not report it
        compute = np.full_like(act, np.nan)
    known = not np.isnan(compute).all()
    return {"wall": wall.mean(), "env step": env.mean(),
            "render": render_ms_per_step * run.episodes["steps"].mean(),
            "policy compute": np.nanmean(compute) if known else np.nan,
            "queue/IPC": np.nanmean(act - compute) if known else np.nan, "lockstep wait": np.mean(wall - env - act),
            "store": insert_ms, "calls": calls.mean()}


def policy_costs(pol: Any, obs: dict) -> str:
    """One thread: ms of an act() alone unpadded, alone padded to the policy's batch, and per
    observation in a full batch (the cost of batch invariance is the middle one)."""
    if not isinstance(pol, FixedBatch):
        return ""
    threads, rows = torch.get_num_threads(), pol.batch_rows
    torch.set_num_threads(1)

    def ms(n: int) -> float:
        queries = [{**obs, "sample_key": f"c:{i}"} for i in range(n)]
        pol.act(queries)
        t = time.perf_counter()
        for _ in range(5):
            pol.act(queries)
        return (time.perf_counter() - t) / 5 * 1e3

    try:
        padded, full = ms(1), ms(rows) / rows
        pol.batch_rows = 1
        alone = ms(1)
    finally:
        pol.batch_rows = rows
        torch.set_num_threads(threads)
    return (f"policy act(), 1 thread: {alone:.1f} ms alone unpadded, {padded:.1f} ms alone padded to "
            f"{rows} rows, {full:.1f} ms/observation in a full batch of {rows}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="tabletop")
    ap.add_argument("--split", default="compositional")
    ap.add_argument("--policy", default="oracle")
    ap.add_argument("--episodes", type=int, default=4, help="episodes per instruction entry")
    ap.add_argument("--reference-repo", type=Path, default=None,
                    help="a checkout of another engine (with .venv) to time with the same commands")
    ap.add_argument("--serial", action="store_true",
                    help="also time the in-process engine one episode at a time (every call padded)")
    ap.add_argument("--committed", type=Path, default=None,
                    help="a results store (e.g. results/tabletop/store.sqlite) to compare outcomes with")
    args = ap.parse_args(argv)

    suite, pol, iset, plan, planned = plan_run(policy=args.policy, split=args.split, suite=args.suite,
                                               episodes=args.episodes)
    items = list(planned.values())
    n = len(items)
    cams = tuple(plan.settings.cameras) or tuple(suite.observation_spec.cameras[:1])
    print(f"eval speed: {args.policy} on {suite.name}/{iset.split}, {n} episodes, cameras {list(cams)}, "
          f"{os.cpu_count()} CPU(s), {cpu_info()}")
    ceiling(items[: min(n, 8)], plan, suite, cams)  # warm-up: builds the renderer
    bare_s, solved, steps = ceiling(items, plan, suite, ())
    render_s, _, _ = ceiling(items, plan, suite, cams)
    render_ms = max(0.0, (render_s - bare_s) / steps * 1e3)
    env = suite.make_env(items[0].task_id, image_size=plan.settings.image_size, cameras=cams)
    costs = policy_costs(pol, env.reset(seed=0, instruction=items[0].instruction))
    env.close()

    common = ["--suite", args.suite, "--split", args.split, "--episodes", str(args.episodes)]
    learned = isinstance(pol, FixedBatch)
    runs = [Run("oracle, in-process", ROOT, ["--policy", "oracle", "--workers", "0"])]
    serial = [("in-process, 1 in flight", ["--workers", "0", "--in-flight", "1"])] if args.serial else []
    cores = usable_cores()
    # A learned policy: the default (the engine `apt-bench run` picks from measured costs), and each
    # engine forced. The reference engine's default was Ray with one worker per core.
    engines = ([("default", []), ("in-process", ["--workers", "0"]), *serial,
                (f"Ray, {cores} workers", ["--workers", str(cores)])] if learned else
               [("in-process", ["--workers", "0"]), ("Ray, 1 worker", ["--workers", "1"]),
                ("Ray, 2 workers", ["--workers", "2"])])
    ref_engines = [e for e in engines if "--in-flight" not in e[1] and not e[0].startswith("Ray,")] if learned \
        else engines
    for label, extra in engines:
        if args.reference_repo is not None and (label, extra) in ref_engines:
            runs.append(Run(f"old {label}", args.reference_repo.resolve(), ["--policy", args.policy, *extra]))
        runs.append(Run(f"new {label}", ROOT, ["--policy", args.policy, *extra]))
    for run in runs:
        print(f"  running {run.label} ...", file=sys.stderr, flush=True)
        launch(run, common)
        picked = run.engine.get("engine_chosen")
        if picked:
            run.label += f" ({picked})"

    per_min = lambda s: 60.0 * n / s  # noqa: E731
    print(f"\nenv-only ceiling (scripted expert, bare loop): {per_min(bare_s):.1f} episodes/min without rendering, "
          f"{per_min(render_s):.1f} rendering {list(cams)} ({render_ms:.2f} ms/step render); {solved}/{n} solved")
    if costs:
        print(costs)
    print("\n| engine | episodes/min | run s | command s | successes | / bare ceiling | / rendering ceiling "
          "| / oracle in-process | layout |")
    print("|---|---|---|---|---|---|---|---|---|")
    oracle = runs[0].per_min
    for run in runs:
        e = run.engine
        lay = ", ".join(f"{k}={e[k]}" for k in ("workers", "in_flight", "policy_threads", "batch_mean") if k in e)
        print(f"| {run.label} | {run.per_min:.1f} | {run.run_s:.1f} | {run.wall_s:.1f} | "
              f"{int(run.episodes['success'].sum())}/{len(run.episodes)} | {run.per_min / per_min(bare_s):.3f} | "
              f"{run.per_min / per_min(render_s):.3f} | {run.per_min / oracle:.3f} | {lay} |")
    def labelled(prefix: str) -> Run | None:
        return next((r for r in runs if r.label == prefix or r.label.startswith(prefix + " (")), None)

    pairs = [(f"new {label}", f"old {label}") for label, _ in ref_engines]
    if learned:
        pairs.append((f"new Ray, {cores} workers", "old default"))
    for new_label, old_label in pairs:
        new, old = labelled(new_label), labelled(old_label)
        if new is not None and old is not None:
            print(f"{new.label} / {old.label}: {new.per_min / old.per_min:.2f}x")

    insert = store_ms()
    print("\nwhere an episode's time goes (mean ms per episode, from the store's per-episode timings):\n")
    parts = ["wall", "env step", "render", "policy compute", "queue/IPC", "lockstep wait", "store", "calls"]
    print("| engine | " + " | ".join(parts) + " |")
    print("|---" * (len(parts) + 1) + "|")
    for run in runs[1:]:
        b = breakdown(run, render_ms, insert)
        print(f"| {run.label} | " + " | ".join("n/a" if np.isnan(b[p]) else f"{b[p]:.0f}" for p in parts) + " |")

    print("\nagreement on (success, steps) per episode key:")
    played = [(r.label, r.episodes) for r in runs[1:]]
    if args.committed is not None:
        played.append((f"committed {args.committed}", read_episodes(args.committed)))
    for i, (label, df) in enumerate(played):
        for other_label, other in played[i + 1:]:
            print(f"  {other_label} vs {label}: {agreement(other, df)}")


def agreement(other: pd.DataFrame, base: pd.DataFrame) -> str:
    """How many of `base`'s episodes `other` played the same (success and steps; success only)."""
    ref = base.set_index("key")[["success", "steps"]].astype(float)
    got = other.set_index("key")[["success", "steps"]].astype(float).reindex(ref.index)  # NaN: not played
    return (f"{int((got == ref).all(axis=1).sum())}/{len(ref)} identical, success "
            f"{int((got['success'] == ref['success']).sum())}/{len(ref)} "
            f"({int(got['success'].sum())} vs {int(ref['success'].sum())} successes)")


if __name__ == "__main__":
    main()
