"""What runs inside the Ray actors of the pool (ray_pool.py schedules them).

- `EnvWorker` builds its suite *inside* the worker, by name (`apt.registry.get_suite`), and keeps
  its envs per task (episodes.EpisodeRunner); no simulator ever crosses a process boundary. It is a
  threaded actor: each `run(episode)` call hands its episode to one engine thread that plays up to
  `plan.in_flight` episodes in lockstep (all envs and the renderer live in that thread), so one
  call to the policy actor carries the observations of all of them. A `PerEpisodePolicy`
  (scripted experts, the oracle) is built inside each env worker, one instance per episode.
- `PolicyServer` (async actor) holds any other policy and batches the observations arriving from
  all env workers (dynamic batching: up to `max_batch` observations, waiting at most `max_wait_ms`
  for more), with `plan.policy_threads` torch threads (sizing.py). Such a
  batched policy must be stateless across calls (it is not reset per episode, since one batch mixes
  episodes); `ActorPolicy` strips the privileged field before sending and reports the server's
  compute time per call (`ServedTiming`), so an episode's record splits compute from queueing/IPC.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from apt.eval.episodes import Episode, EpisodeRunner, Plan
from apt.eval.rollout import EpisodeResult, ProvenanceError, apply_settings
from apt.registry import build_policy, get_suite
from benchmarks.base import Observation, Policy, Suite


def _plan_policy(plan: Plan, suite: Suite, device: str) -> Policy:
    """The run's policy, rebuilt by name in this process with the run's inference settings."""
    return apply_settings(build_policy(plan.policy_name, suite, seed=plan.policy_seed, device=device),
                          plan.settings)


class EnvWorker:
    """Ray actor body (threaded): builds the suite (and a per-episode policy factory) inside the
    worker; `run` calls queue their episode for the engine thread and wait for its result."""

    def __init__(self, plan: Plan, policy_actor: Any = None):
        suite = get_suite(plan.suite_ref)
        if plan.episode_hook:
            policy: Policy = _plan_policy(plan, suite, "cpu")
        else:
            policy = ActorPolicy(policy_actor)
        self.runner = EpisodeRunner(suite, plan, policy, width=plan.in_flight)
        self.inbox: queue.Queue = queue.Queue()
        threading.Thread(target=self._engine, daemon=True).start()

    def pid(self) -> int:
        return os.getpid()

    def run(self, episode: Episode) -> EpisodeResult | dict:
        future: Future = Future()
        self.inbox.put((episode, future))
        return future.result()

    def _engine(self) -> None:
        """Fill free slots from the inbox (block only when nothing is in flight), play one round."""
        futures: dict[str, Future] = {}
        try:
            while True:
                while self.runner.free > 0:
                    try:
                        episode, future = self.inbox.get(block=not (self.runner.active or self.runner.done))
                    except queue.Empty:
                        break
                    futures[episode.key] = future
                    self.runner.start(episode)
                for episode, result in self.runner.round():
                    futures.pop(episode.key).set_result(result)
        except ProvenanceError as err:  # invalidates the run: every waiting call says so
            for future in futures.values():
                future.set_result({"fatal": str(err)})
        except BaseException as err:  # noqa: BLE001 - never leave a caller waiting forever
            for future in futures.values():
                future.set_exception(err)


@dataclass(frozen=True)
class ServedTiming:
    """RequestTiming of one policy-actor call: the batch's compute time and the call as a whole."""

    server_infer_ms: float | None
    round_trip_ms: float | None


class ActorPolicy:
    """Policy protocol over a batching policy actor (inside an env worker)."""

    def __init__(self, handle: Any):
        self.handle = handle
        self.last_timing: ServedTiming | None = None

    def reset(self) -> None:
        pass  # batched policies are stateless across calls (module docstring)

    def act(self, observations: list[Observation]) -> np.ndarray:
        import ray

        slim = [{k: v for k, v in o.items() if k != "privileged"} for o in observations]
        t = time.perf_counter()
        actions, compute_ms = ray.get(self.handle.act.remote(slim))
        self.last_timing = ServedTiming(compute_ms, (time.perf_counter() - t) * 1e3)
        return actions


class PolicyServer:
    """Ray async actor body: one policy, dynamic batching of concurrent `act` calls."""

    def __init__(self, plan: Plan, max_batch: int):
        suite = get_suite(plan.suite_ref)
        if plan.policy_threads > 0:
            torch.set_num_threads(plan.policy_threads)
        self.policy = _plan_policy(plan, suite, plan.device)
        self.max_batch = max(1, max_batch)
        self.max_wait_s = plan.max_wait_ms / 1000.0
        self.queue = None
        self.batch_sizes: list[int] = []

    async def act(self, observations: list[Observation]) -> tuple[np.ndarray, float]:
        """Actions for `observations` and the milliseconds the batch they rode in took to compute."""
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
            t = time.perf_counter()
            try:
                actions = np.asarray(self.policy.act(flat))
            except Exception as err:  # noqa: BLE001 - handed to each caller's episode
                for _, fut in batch:
                    fut.set_exception(err)
                continue
            compute_ms = (time.perf_counter() - t) * 1e3
            self.batch_sizes.append(len(flat))
            i = 0
            for obs, fut in batch:
                fut.set_result((actions[i:i + len(obs)], compute_ms))
                i += len(obs)

    def stats(self) -> list[int]:
        return list(self.batch_sizes)

