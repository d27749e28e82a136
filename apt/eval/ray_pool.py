"""The Ray engine (`apt-bench run --workers N`, N != 0): fans episodes out over env worker actors,
with policy actors serving batched policies (the actors themselves: ray_actors.py).

- **Placement.** A policy that is not a `PerEpisodePolicy` lives in `plan.policy_actors` policy
  actors, on a GPU fraction when the cluster has GPUs and `--device cuda`, on CPU otherwise; the
  env workers, the episodes each plays at once (lockstep, one batched policy call per round) and
  the policy actor's threads are sized from costs measured before the run (sizing.py). A
  `PerEpisodePolicy` (the oracle) gets N env workers (default: the cluster's CPUs), one episode at
  a time each. Every worker has `PIPELINE - 1` more episodes queued than it plays, so it never idles
  waiting for the driver's round trip; more workers than CPUs share them (fractional CPUs).
- **Work list.** `episodes` is flat and deterministic; each episode carries its own seed (runner.py).
- **Faults.** An episode whose env or policy raises, or whose worker process dies, is retried once
  (a dead worker is replaced first, so the retry runs on a fresh process); a second failure is
  recorded with `error` set and success False. A ProvenanceError is never retried: it stops the run.
- **Results** stream back to the driver through `on_result`; only the driver writes the store.
"""

from __future__ import annotations

import collections
import math
import os
import time
from dataclasses import replace
from typing import Any, Callable, Sequence

from apt.eval.episodes import MAX_ATTEMPTS, Episode, Plan, error_result
from apt.eval.ray_actors import EnvWorker, PolicyServer
from apt.eval.rollout import EpisodeResult, ProvenanceError, now
from apt.eval.sizing import Costs, layout, measure
from benchmarks.base import Policy, Suite

PIPELINE = 2  # episodes queued per episode slot of an env worker (hides the driver round trip)


def ray_init(ray_address: str | None) -> bool:
    """Join `ray_address`, or start a local Ray sized to this machine; True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    if ray_address:
        ray.init(address=ray_address, include_dashboard=False, logging_level="WARNING")
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    return True


def run_ray(episodes: Sequence[Episode], plan: Plan, workers: int | None,
            on_result: Callable[[EpisodeResult], None], ray_address: str | None = None,
            policy: Policy | None = None, suite: Suite | None = None, costs: Costs | None = None) -> dict:
    """Fan `episodes` out over env worker actors; returns scheduling stats (batch sizes, restarts,
    the layout and the costs it was sized from). `policy` and `suite` (the driver's) are used to
    measure those costs (unless the caller already did: `costs`); without them a shared policy gets
    one episode in flight per worker."""
    import ray
    from ray.exceptions import RayActorError

    started_here = ray_init(ray_address)
    actors: list[Any] = []
    servers: list[Any] = []
    stats: dict[str, Any] = {"worker_restarts": 0, "batch_sizes": []}
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", os.cpu_count() or 1)))
        n = workers or cpus
        if not plan.episode_hook and policy is not None and suite is not None and episodes:
            costs = costs or measure(plan, episodes[0], policy, suite)
            gpu = plan.device.startswith("cuda")
            lay = layout(costs, cpus, workers, plan.in_flight or None, episodes=len(episodes),
                         policy_actors=plan.policy_actors if gpu else None)
            plan = replace(plan, in_flight=lay.in_flight, policy_actors=lay.policy_actors,
                           policy_threads=lay.policy_threads)
            n = lay.workers
            stats.update(env_ms_per_query=costs.env_s * 1e3, policy_ms_per_obs=costs.policy_s * 1e3)
        plan = replace(plan, in_flight=max(1, plan.in_flight))
        n = max(1, min(n, math.ceil(len(episodes) / plan.in_flight) if episodes else 1))
        plan = replace(plan, policy_actors=max(1, min(plan.policy_actors, n)))  # each serves >= 1 worker
        depth = plan.in_flight + PIPELINE - 1  # episodes submitted to a worker at a time
        stats.update(workers=n, in_flight=plan.in_flight, policy_actors=plan.policy_actors,
                     policy_threads=plan.policy_threads)
        if not plan.episode_hook:
            gpus = ray.cluster_resources().get("GPU", 0) if plan.device.startswith("cuda") else 0
            opts: dict[str, Any] = {"num_cpus": 0}  # sized by sizing.layout, not by Ray's CPU accounting
            if gpus:
                opts["num_gpus"] = min(1.0, gpus / plan.policy_actors)
            server_cls = ray.remote(PolicyServer).options(**opts)
            servers = [server_cls.remote(plan, max_batch=min(plan.max_batch, max(n, plan.in_flight)))
                       for _ in range(max(1, plan.policy_actors))]
        worker_cls = ray.remote(num_cpus=min(1.0, cpus / n), max_concurrency=depth + 1)(EnvWorker)

        def new_actor(i: int) -> Any:
            return worker_cls.remote(plan, servers[i % len(servers)] if servers else None)

        t0 = time.perf_counter()
        actors = [new_actor(i) for i in range(n)]
        ray.get([a.pid.remote() for a in actors])  # all suites built: start-up ends here
        stats["startup_s"] = time.perf_counter() - t0
        # Attempts are counted only when their outcome is known: a result came back, or a worker died
        # with exactly one unfinished episode. When a worker dies with several unfinished episodes
        # (PIPELINE > 1), which one killed it is unknown: each becomes a suspect and is rerun alone on a
        # worker (nothing queued behind it) without using up an attempt, so an innocent neighbour is
        # never charged and the culprit is identified on its next run.
        pending = collections.deque(episodes)
        suspects: collections.deque = collections.deque()
        attempts: collections.Counter = collections.Counter()
        inflight: dict[Any, tuple[int, Episode, str]] = {}
        queued: list[collections.deque] = [collections.deque() for _ in range(n)]  # refs, oldest first
        alone = [False] * n  # worker i runs a suspect with nothing queued behind it

        def submit(i: int, episode: Episode) -> None:
            ref = actors[i].run.remote(episode)
            inflight[ref] = (i, episode, now())
            queued[i].append(ref)

        def fill(i: int) -> None:
            if alone[i] and queued[i]:
                return
            alone[i] = False
            if not queued[i] and suspects:
                submit(i, suspects.popleft())
                alone[i] = True
                return
            while pending and len(queued[i]) < depth:
                submit(i, pending.popleft())

        def handle(episode: Episode, result: EpisodeResult | dict, died: bool = False) -> None:
            if isinstance(result, dict):
                raise ProvenanceError(result["fatal"])
            attempts[episode.key] += 1
            if result.error and attempts[episode.key] < MAX_ATTEMPTS:
                (suspects if died else pending).appendleft(episode)  # a killer reruns alone
            else:
                on_result(replace(result, attempts=attempts[episode.key]))

        for _ in range(depth):  # a worker never idles waiting for the driver's round trip
            for i in range(n):
                if pending:
                    submit(i, pending.popleft())
        while inflight:
            done, _ = ray.wait(list(inflight), num_returns=1)
            ref = done[0]
            i, episode, started = inflight.pop(ref)
            try:
                result = ray.get(ref)
            except RayActorError as err:
                # The worker died. Its in-flight episodes that finished are kept; the others failed.
                failed: list[tuple[Episode, str, BaseException]] = []
                for other in list(queued[i]):
                    if other == ref:
                        failed.append((episode, started, err))
                        continue
                    _, other_episode, other_started = inflight.pop(other)
                    try:
                        handle(other_episode, ray.get(other))
                    except RayActorError as other_err:
                        failed.append((other_episode, other_started, other_err))
                queued[i].clear()
                ray.kill(actors[i], no_restart=True)
                actors[i] = new_actor(i)  # retries (and later episodes) run on a fresh process
                stats["worker_restarts"] += 1
                if len(failed) == 1:
                    episode, started, err = failed[0]
                    reason = f"env worker process died: {str(err).splitlines()[0]}"[:2000]
                    handle(episode, error_result(episode, reason, started), died=True)
                else:
                    suspects.extend(f[0] for f in failed)
            else:
                queued[i].remove(ref)
                handle(episode, result)
            fill(i)
            for j in range(n):  # suspects wait for an idle worker
                if suspects and not queued[j]:
                    fill(j)
        if servers:
            stats["batch_sizes"] = [s for srv in servers for s in ray.get(srv.stats.remote())]
        return stats
    finally:
        for a in actors + servers:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        if started_here:
            ray.shutdown()
