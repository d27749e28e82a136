"""Evaluation engine speed: worker scaling and engine overhead, all measured in one run.

Prints, on the same work list (a split's entries x N episodes, seeds seed..seed+N-1):
(a) episodes/min of the serial in-process engine (`--workers 0`), of Ray with 1 env worker and with 2
    env workers, and the ratios (target: 2 workers / 1 worker >= 1.7 on 2 cores);
(b) with the oracle, engine throughput as a fraction of the env-only ceiling: the same episodes
    stepped with the scripted expert in a bare loop (no engine, no store, no Ray) in one process
    (target >= 0.8). Both the in-process engine and 1 Ray worker are compared with it.

Timings include everything a user waits for once Ray is up: actor start-up (suite build inside each
worker), scheduling, result streaming and store writes (a temporary SQLite file). Ray's own start-up
is excluded (it is paid once per session, and `--ray-address` avoids it).

Run: `python -m benchmarks.speed.eval_speed [--suite tabletop] [--split seen] [--episodes 8]
[--render]`. `--render` makes the env render the front camera, as a learned policy would need.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

from apt.eval.ray_pool import ray_init
from apt.eval.runner import execute, plan_run
from apt.eval.store import EpisodeRecord, Store


def _engine(items, plan, pol, suite, workers: int) -> tuple[float, float]:
    """Seconds to run `items` through the engine (fresh store) with `workers`, and of those the
    seconds spent starting the env workers."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Store(os.path.join(tmp, "speed.sqlite"))
        meta = dict(run_id="speed", policy_id="p", checkpoint_sha256="", suite="s", suite_version="1",
                    task_id="", split="", split_key="", split_sha256="", instruction_id="",
                    instruction_sha256="", axis="", seed=0, episode_index=0)

        def store(r) -> None:
            db.insert(EpisodeRecord(key=r.key, instruction=r.instruction, success=r.success, steps=r.steps,
                                    wall_s=r.wall_s, error=r.error, started=r.started, finished=r.finished,
                                    video=r.video, **meta))

        t = time.perf_counter()
        stats = execute(items, plan, workers=workers, policy=pol, suite=suite, on_result=store,
                        progress=False)
        dt = time.perf_counter() - t
        db.close()
    if stats["error"]:
        print(f"  warning: {stats['error']} episode(s) failed with workers={workers}", file=sys.stderr)
    return dt, float(stats.get("startup_s", 0.0))


def _ceiling(items, plan, suite) -> tuple[float, int]:
    """Seconds for the same episodes with the expert in a bare loop; also the success count."""
    s = plan.settings
    envs: dict = {}
    successes = 0
    t = time.perf_counter()
    for it in items:
        env = envs.get(it.task_id) or envs.setdefault(
            it.task_id, suite.make_env(it.task_id, image_size=s.image_size, cameras=s.cameras))
        expert = suite.expert(it.task_id)
        obs = env.reset(seed=it.seed, instruction=it.instruction)
        for _ in range(it.max_steps):
            obs, done, info = env.step(expert.act([obs])[0, 0])
            if done:
                successes += int(info.get("success", done))
                break
    dt = time.perf_counter() - t
    for env in envs.values():
        env.close()
    return dt, successes


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="tabletop")
    ap.add_argument("--split", default="seen")
    ap.add_argument("--policy", default="oracle")
    ap.add_argument("--episodes", type=int, default=8, help="episodes per instruction entry")
    ap.add_argument("--render", action="store_true", help="render the front camera every step")
    ap.add_argument("--ray-address", default=None)
    args = ap.parse_args(argv)

    suite, pol, iset, plan, records = plan_run(policy=args.policy, split=args.split, suite=args.suite,
                                               episodes=args.episodes)
    if args.render:
        cams = tuple(suite.observation_spec.cameras[:1])
        plan = dataclasses.replace(plan, settings=dataclasses.replace(plan.settings, cameras=cams))
    items = list(records.values())
    n = len(items)
    print(f"eval speed: {args.policy} on {suite.name}/{iset.split}, {n} episodes, cameras "
          f"{list(plan.settings.cameras) or 'none'}, {os.cpu_count()} CPU(s)")

    ray_init(args.ray_address)
    _ceiling(items[: min(n, 8)], plan, suite)  # warm-up: compiles the model, builds the renderer
    ceiling_s, ceiling_succ = _ceiling(items, plan, suite) if plan.episode_hook else (float("nan"), 0)
    serial_s, _ = _engine(items, plan, pol, suite, workers=0)
    one_s, one_up = _engine(items, plan, pol, suite, workers=1)
    two_s, two_up = _engine(items, plan, pol, suite, workers=2)

    per_min = lambda s: 60.0 * n / s  # noqa: E731
    print(f"  (a) serial in-process engine : {per_min(serial_s):8.1f} episodes/min ({serial_s:.1f} s)")
    print(f"      Ray, 1 env worker         : {per_min(one_s):8.1f} episodes/min ({one_s:.1f} s, "
          f"of which {one_up:.1f} s worker start-up)")
    print(f"      Ray, 2 env workers        : {per_min(two_s):8.1f} episodes/min ({two_s:.1f} s, "
          f"of which {two_up:.1f} s worker start-up)")
    print(f"      2 workers / 1 worker      : {one_s / two_s:.2f}x  (target >= 1.7 on 2 cores); "
          f"excluding start-up {(one_s - one_up) / (two_s - two_up):.2f}x")
    print(f"      2 workers / serial        : {serial_s / two_s:.2f}x; excluding start-up "
          f"{serial_s / (two_s - two_up):.2f}x")
    if plan.episode_hook:
        print(f"  (b) env-only ceiling          : {per_min(ceiling_s):8.1f} episodes/min ({ceiling_s:.1f} s, "
              f"{ceiling_succ}/{n} solved)")
        print(f"      serial engine / ceiling   : {ceiling_s / serial_s:.2f}  (target >= 0.8)")
        print(f"      1 Ray worker / ceiling    : {ceiling_s / one_s:.2f}")
    else:
        print("  (b) skipped: the env-only ceiling steps the scripted expert (use --policy oracle)")


if __name__ == "__main__":
    main()
