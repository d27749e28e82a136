"""SimplerEnv (ManiSkill3 Bridge) env speed, serial loop, one process: make / reset / step per task.

Measured in one run, so the per-task ratios are meaningful on any machine. On CPU, SAPIEN renders
the 640x480 third-person camera through lavapipe every step (the Bridge tasks support only
obs_mode "rgb+segmentation"), so `cameras=()` saves only the resize. The last lines compare 1
process with `--workers` processes (each builds and steps its own env, as the engine's env
workers do): aggregate steps/s including process start and env creation, both in the same run.
Run: `python -m benchmarks.speed.simpler_speed [--steps N] [--size 224] [--workers 2]
[--parallel-steps 200]` with MS_ASSET_DIR (and, on CPU, VK_ICD_FILENAMES) set.
On CPU, lavapipe rasterises with one thread per core (LP_NUM_THREADS), so a single worker already
uses every core: measured on 2 cores, 2 workers / 1 worker = 0.94x by default and 1.40x with
LP_NUM_THREADS=1 (15.2 vs 13.8 steps/s for the default single worker).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.simpler import BRIDGE_TASKS, SimplerSuite
from benchmarks.speed.processes import aggregate_rate


def measure(task_id: str, size: int, steps: int) -> dict[str, float]:
    t = time.perf_counter()
    env = SimplerSuite().make_env(task_id, image_size=size)
    make_s = time.perf_counter() - t
    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.02, 0.02, (steps, 7)).astype(np.float32)
    t = time.perf_counter()
    env.reset(seed=0)
    reset_s = time.perf_counter() - t
    env.step(actions[0])  # warm-up
    t = time.perf_counter()
    for a in actions:
        env.step(a)
    step_s = (time.perf_counter() - t) / steps
    env.close()
    return {"make_s": make_s, "reset_s": reset_s, "step_ms": step_s * 1e3, "steps_per_s": 1 / step_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=2, help="processes for the parallel measurement")
    ap.add_argument("--parallel-steps", type=int, default=200, help="steps per process in that measurement")
    args = ap.parse_args(argv)
    print(f"{'task':32s} {'make s':>7s} {'reset s':>8s} {'step ms':>8s} {'steps/s':>8s}")
    for task in BRIDGE_TASKS:
        r = measure(task.task_id, args.size, args.steps)
        print(f"{task.task_id:32s} {r['make_s']:7.2f} {r['reset_s']:8.3f} {r['step_ms']:8.1f} "
              f"{r['steps_per_s']:8.1f}")
    task = BRIDGE_TASKS[0].task_id
    call = (task, args.size, args.parallel_steps)
    one = aggregate_rate(measure, call, 1, args.parallel_steps)
    many = aggregate_rate(measure, call, args.workers, args.parallel_steps)
    print(f"{task}, {args.parallel_steps} steps per process (wall incl. process start and gym.make):")
    print(f"  1 worker     : {one:6.1f} steps/s")
    print(f"  {args.workers} workers    : {many:6.1f} steps/s aggregate, {many / args.workers:6.1f} per worker")
    print(f"  {args.workers} workers / 1 worker: {many / one:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
