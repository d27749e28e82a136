"""What runs inside the Ray actors of the pool (ray_pool.py schedules them).

- `EnvWorker` (1 CPU each) builds its suite *inside* the worker, by name (`apt.registry.get_suite`),
  and keeps one env per task (episodes.EpisodeRunner); no simulator ever crosses a process
  boundary. A `PerEpisodePolicy` (scripted experts, the oracle) is built inside each env worker,
  one instance per episode.
- `PolicyServer` (async actor) holds any other policy and batches the observations arriving from
  all env workers (dynamic batching: up to `max_batch` observations, waiting at most `max_wait_ms`
  for more). Such a batched policy must be stateless across calls (it is not reset per episode,
  since one batch mixes episodes); `ActorPolicy` strips the privileged field before sending.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from apt.eval.episodes import Episode, EpisodeRunner, Plan
from apt.eval.rollout import EpisodeResult, ProvenanceError, apply_settings
from apt.registry import build_policy, get_suite
from benchmarks.base import Observation, Policy, Suite


def _plan_policy(plan: Plan, suite: Suite, device: str) -> Policy:
    """The run's policy, rebuilt by name in this process with the run's inference settings."""
    return apply_settings(build_policy(plan.policy_name, suite, seed=plan.policy_seed, device=device),
                          plan.settings)


class EnvWorker:
    """Ray actor body: builds the suite (and a per-episode policy factory) inside the worker."""

    def __init__(self, plan: Plan, policy_actor: Any = None):
        suite = get_suite(plan.suite_ref)
        if plan.episode_hook:
            policy = _plan_policy(plan, suite, "cpu")
        else:
            policy = ActorPolicy(policy_actor)
        self.runner = EpisodeRunner(suite, plan, policy)

    def pid(self) -> int:
        return os.getpid()

    def run(self, episode: Episode) -> EpisodeResult | dict:
        try:
            return self.runner.run(episode)
        except ProvenanceError as err:
            return {"fatal": str(err)}


class ActorPolicy:
    """Policy protocol over a batching policy actor (inside an env worker)."""

    def __init__(self, handle: Any):
        self.handle = handle

    def reset(self) -> None:
        pass  # batched policies are stateless across calls (module docstring)

    def act(self, observations: list[Observation]) -> np.ndarray:
        import ray

        slim = [{k: v for k, v in o.items() if k != "privileged"} for o in observations]
        return ray.get(self.handle.act.remote(slim))


class PolicyServer:
    """Ray async actor body: one policy, dynamic batching of concurrent `act` calls."""

    def __init__(self, plan: Plan, max_batch: int):
        suite = get_suite(plan.suite_ref)
        self.policy = _plan_policy(plan, suite, plan.device)
        self.max_batch = max(1, max_batch)
        self.max_wait_s = plan.max_wait_ms / 1000.0
        self.queue = None
        self.batch_sizes: list[int] = []

    async def act(self, observations: list[Observation]) -> np.ndarray:
        import asyncio

        loop = asyncio.get_running_loop()
        if self.queue is None:
            self.queue = asyncio.Queue()
            self._task = loop.create_task(self._serve())
        fut = loop.create_future()
        await self.queue.put((observations, fut))
        return await fut

    async def _serve(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            n = len(batch[0][0])
            deadline = loop.time() + self.max_wait_s
            while n < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                batch.append(item)
                n += len(item[0])
            flat = [o for obs, _ in batch for o in obs]
            try:
                actions = np.asarray(self.policy.act(flat))
            except Exception as err:  # noqa: BLE001 - handed to each caller's episode
                for _, fut in batch:
                    fut.set_exception(err)
                continue
            self.batch_sizes.append(len(flat))
            i = 0
            for obs, fut in batch:
                fut.set_result(actions[i:i + len(obs)])
                i += len(obs)

    def stats(self) -> list[int]:
        return list(self.batch_sizes)

