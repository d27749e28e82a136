"""The in-process engine (`apt-bench run --workers 0`): every episode in this process, in work-list
order, with the policy the driver built (debugging, logic tests, the engine-overhead baseline).

Faults as on Ray (ray_pool.py): a failed episode is retried once, then recorded with `error` set.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

from apt.eval.episodes import MAX_ATTEMPTS, Episode, EpisodeRunner, Plan
from apt.eval.rollout import EpisodeResult
from benchmarks.base import Policy, Suite


def run_local(episodes: Sequence[Episode], plan: Plan, policy: Policy, suite: Suite,
              on_result: Callable[[EpisodeResult], None]) -> None:
    """Play `episodes` one after the other; each result (after its retry, if any) goes to `on_result`."""
    runner = EpisodeRunner(suite, plan, policy)
    try:
        for episode in episodes:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                result = replace(runner.run(episode), attempts=attempt)
                if not result.error:
                    break
            on_result(result)
    finally:
        runner.close()
