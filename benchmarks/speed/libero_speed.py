"""LIBERO env speed: steps/s with no camera, 1 camera and 2 cameras, serial loop, one process.

All three are measured in the same run, so their ratios are meaningful on any machine. Rendering
dominates (software GL renders each camera at 256x256): rendering only the cameras a policy
consumes is the first speed-up; the parallel-workers comparison goes through the engine
(`apt-bench run --suite libero --workers 2`).
The last line is the issue's target: rendering one camera in each of 2 worker processes vs the
serial two-camera loop, all measured in the same run.
Run: `python -m benchmarks.speed.libero_speed [--steps N] [--suite libero_goal] [--size 224] [--workers 2]`.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks.libero import LiberoSuite
from benchmarks.speed.processes import aggregate_rate


def measure(suite_name: str, cameras: tuple[str, ...], size: int, steps: int) -> float:
    """Env steps per second under small random actions (reset excluded: it is per episode)."""
    env = LiberoSuite(suite_name).make_env(f"{suite_name}/0", image_size=size, cameras=cameras)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.3, 0.3, (steps, 7)).astype(np.float32)
    env.reset(init_state=0)
    env.step(actions[0])  # warm-up
    t = time.perf_counter()
    for a in actions:
        env.step(a)
    dt = time.perf_counter() - t
    env.close()
    return steps / dt


def parallel(suite_name: str, cameras: tuple[str, ...], size: int, steps: int, workers: int) -> float:
    """Aggregate env steps/s of `workers` processes, each stepping its own env (env built inside)."""
    return aggregate_rate(measure, (suite_name, cameras, size, steps), workers, steps)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--suite", default="libero_goal")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=2, help="processes for the parallel measurement")
    args = ap.parse_args(argv)
    plain = measure(args.suite, (), args.size, args.steps)
    one = measure(args.suite, ("agentview",), args.size, args.steps)
    two = measure(args.suite, ("agentview", "wrist"), args.size, args.steps)
    print(f"LIBERO {args.suite}/0, single process, {args.steps} steps each, MUJOCO_GL="
          f"{os.environ.get('MUJOCO_GL')}, render 256x256 -> {args.size}x{args.size}")
    print(f"  no camera             : {plain:8.1f} steps/s")
    print(f"  agentview             : {one:8.1f} steps/s")
    print(f"  agentview + wrist     : {two:8.1f} steps/s")
    print(f"  1 camera / 2 cameras  : {one / two:.2f}x")
    par = parallel(args.suite, ("agentview",), args.size, args.steps, args.workers)
    print(f"  agentview, {args.workers} workers   : {par:8.1f} steps/s (wall time incl. env creation)")
    print(f"  {args.workers} workers x 1 camera vs serial 2 cameras: {par / two:.2f}x (target >= 1.7x)")


if __name__ == "__main__":
    main()
