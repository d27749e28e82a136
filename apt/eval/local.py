"""The in-process engine (`apt-bench run --workers 0`): every episode in this process, with the policy
the driver built (debugging, logic tests, the engine-overhead baseline). Episodes start in work-list
order, `Plan.in_flight` at a time in lockstep (`--in-flight N`), batching the policy's calls across
episodes: by default 1, or the policy's batch for a `FixedBatch` policy (a learned one: it runs every
model call on a full batch anyway, and is stateless across calls). Any other shared policy plays
several episodes at once only when asked, since it must then be stateless across calls (as on a
Ray policy actor).

Faults as on Ray (ray_pool.py): a failed episode is retried once, then recorded with `error` set.
"""

from __future__ import annotations

import collections
from dataclasses import replace
from typing import Callable, Sequence

from apt.eval.episodes import MAX_ATTEMPTS, Episode, EpisodeRunner, Plan
from apt.eval.rollout import EpisodeResult
from benchmarks.base import FixedBatch, Policy, Suite


def in_flight(plan: Plan, policy: Policy) -> int:
    """Episodes the in-process engine plays at once (module docstring)."""
    if plan.in_flight:
        return plan.in_flight
    return policy.batch_rows if isinstance(policy, FixedBatch) and not plan.episode_hook else 1


def run_local(episodes: Sequence[Episode], plan: Plan, policy: Policy, suite: Suite,
              on_result: Callable[[EpisodeResult], None]) -> None:
    """Play `episodes`; each result (after its retry, if any) goes to `on_result`."""
    runner = EpisodeRunner(suite, plan, policy, width=in_flight(plan, policy))
    pending = collections.deque(episodes)
    attempts: collections.Counter = collections.Counter()
    try:
        while pending or runner.active or runner.done:
            while pending and runner.free > 0:
                runner.start(pending.popleft())
            for episode, result in runner.round():
                attempts[episode.key] += 1
                if result.error and attempts[episode.key] < MAX_ATTEMPTS:
                    pending.appendleft(episode)  # retried next, on a fresh env
                else:
                    on_result(replace(result, attempts=attempts[episode.key]))
    finally:
        runner.close()
