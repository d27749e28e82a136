"""Running one measurement in several spawned processes at once, as the engine's env workers run.

Each process builds its own simulator (spawned, not forked: a forked GL/Vulkan context is not
usable), so the aggregate rate includes the contention the engine's workers see.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable


def aggregate_rate(fn: Callable[..., Any], args: tuple, workers: int, units_per_call: float) -> float:
    """Units/s of `workers` processes each calling fn(*args) once: workers * units / wall time
    (wall time includes process start and env creation, as a real run pays them)."""
    t = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(fn, *[[a] * workers for a in args]))
    return workers * units_per_call / (time.perf_counter() - t)
