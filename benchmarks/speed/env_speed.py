"""Tabletop env speed: steps/s with the front camera rendered at 96x96 and with no rendering.

Both are measured in the same run, single process, so their ratio is meaningful on any machine.
Run: `python -m benchmarks.speed.env_speed [--steps N] [--size 96]`. Target: >= 100 rendered
steps/s on one core.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.tabletop.suite import TabletopSuite


def measure(cameras: tuple[str, ...], size: int, steps: int, task_id: str = "place-red-bowl") -> float:
    """Env steps per second under random actions (resets every 80 steps, included in the time)."""
    env = TabletopSuite().make_env(task_id, image_size=size, cameras=cameras)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, 4)).astype(np.float32)
    env.reset(seed=0)
    env.step(actions[0])  # warm-up: builds the renderer when one is needed
    t = time.perf_counter()
    for i in range(steps):
        if i % 80 == 79:
            env.reset(seed=i)
        env.step(actions[i])
    dt = time.perf_counter() - t
    env.close()
    return steps / dt


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--size", type=int, default=96)
    args = ap.parse_args(argv)
    plain = measure((), args.size, args.steps)
    rendered = measure(("front",), args.size, args.steps)
    both = measure(("front", "wrist"), args.size, args.steps)
    print(f"tabletop env, single process, {args.steps} steps each (random actions)")
    print(f"  no rendering          : {plain:8.1f} steps/s")
    print(f"  front {args.size}x{args.size}          : {rendered:8.1f} steps/s")
    print(f"  front+wrist {args.size}x{args.size}    : {both:8.1f} steps/s")
    print(f"  rendered / not rendered: {rendered / plain:.3f}")


if __name__ == "__main__":
    main()
