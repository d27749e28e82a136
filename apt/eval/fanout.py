"""Scheduling episodes: in-process (`--workers 0`) or over Ray (env worker actors + policy actors).

- **Env workers** are Ray actors (1 CPU each) that build their suite *inside* the worker, by name
  (`apt.registry.get_suite`), and keep one env per task; no simulator ever crosses a process boundary.
- **Policies.** A policy that implements the optional hook `episode_policy(task_id) -> Policy`
  (scripted experts, the oracle: stateful per episode, reading privileged state) is built inside each
  env worker, one instance per episode. Any other policy lives in a **policy actor** that batches the
  observations arriving from all env workers (dynamic batching: up to `max_batch` observations, waiting
  at most `max_wait_ms` for more), on a GPU fraction when the cluster has GPUs and `--device cuda`,
  on CPU otherwise. Such a batched policy must be stateless across calls (it is not reset per
  episode, since one batch mixes episodes); the privileged field is stripped before sending.
- **Work list.** `items` is flat and deterministic; each item carries its own seed (runner.py).
- **Faults.** An episode whose env or policy raises, or whose worker process dies, is retried once
  (a dead worker is replaced first, so the retry runs on a fresh process); a second failure is
  recorded with `error` set and success False. A ProvenanceError is never retried: it stops the run.
- **Results** stream back to the driver through `on_result`; only the driver writes the store.
"""

from __future__ import annotations

import collections
import os
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from apt.eval.rollout import EpisodeResult, ProvenanceError, Settings, apply_settings, now, run_episode
from apt.eval.video import make_recorder
from apt.registry import get_suite
from benchmarks.base import Observation, Policy, Suite

MAX_ATTEMPTS = 2  # one retry
PIPELINE = 2  # episodes queued per env worker (hides the driver round trip)


def build_policy(name: str, suite: Suite, seed: int, device: str) -> Policy:
    from apt.registry import build_policy as _build

    return _build(name, suite, seed=seed, device=device)


def has_episode_hook(policy: Any) -> bool:
    """Whether a policy wants one local instance per episode (see module docstring)."""
    return callable(getattr(policy, "episode_policy", None))


@dataclass(frozen=True)
class WorkItem:
    """What a worker needs to play one episode (the driver keeps the rest of the identity)."""

    key: str
    task_id: str
    instruction: str
    seed: int
    max_steps: int


@dataclass(frozen=True)
class Plan:
    """How every episode of a run is played; sent to each worker (small, picklable)."""

    suite_ref: str
    policy_name: str
    policy_seed: int = 0
    device: str = "cpu"
    episode_hook: bool = False  # the policy implements episode_policy(task_id)
    settings: Settings = field(default_factory=Settings)
    video_dir: str | None = None
    max_batch: int = 32
    max_wait_ms: float = 5.0
    policy_actors: int = 1


def _error_result(item: WorkItem, err: str, started: str, attempts: int = 1) -> EpisodeResult:
    return EpisodeResult(key=item.key, success=False, steps=0, wall_s=0.0, instruction=item.instruction,
                         error=err, started=started, finished=now(), attempts=attempts)


def _describe(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{type(err).__name__}: {err}{where}"[:2000]


class EpisodeRunner:
    """Plays episodes in one process: one env per task (reused), policy per episode or shared."""

    def __init__(self, suite: Suite, plan: Plan, policy: Policy | None):
        self.suite, self.plan, self.policy = suite, plan, policy
        self.envs: dict[str, Any] = {}

    def _env(self, task_id: str):
        if task_id not in self.envs:
            s = self.plan.settings
            self.envs[task_id] = self.suite.make_env(task_id, image_size=s.image_size, cameras=s.cameras)
        return self.envs[task_id]

    def run(self, item: WorkItem) -> EpisodeResult:
        """One episode; any failure becomes an error result, except ProvenanceError (raised)."""
        started = now()
        try:
            env = self._env(item.task_id)
            if self.plan.episode_hook:
                policy = self.policy.episode_policy(item.task_id)
            else:
                policy = self.policy
            policy.reset()
            camera = self.plan.settings.cameras[0] if self.plan.settings.cameras else None
            recorder = make_recorder(self.plan.video_dir, item.key, camera)
            return run_episode(env, item.key, item.instruction, item.seed, item.max_steps, policy,
                               self.plan.settings.replan_steps, recorder, task_id=item.task_id)
        except ProvenanceError:
            raise
        except Exception as err:  # noqa: BLE001 - one broken episode costs one episode
            env = self.envs.pop(item.task_id, None)  # it may be in a bad state: rebuild on retry
            if env is not None:
                try:
                    env.close()
                except Exception:  # noqa: BLE001
                    pass
            return _error_result(item, _describe(err), started)

    def close(self) -> None:
        for env in self.envs.values():
            try:
                env.close()
            except Exception:  # noqa: BLE001
                pass
        self.envs.clear()


# --------------------------------------------------------------------------------------------------
# In-process


def run_local(items: Sequence[WorkItem], plan: Plan, policy: Policy, suite: Suite,
              on_result: Callable[[EpisodeResult], None]) -> None:
    """`--workers 0`: every episode in this process, in work-list order (debugging, logic tests)."""
    runner = EpisodeRunner(suite, plan, policy)
    try:
        for item in items:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                result = replace(runner.run(item), attempts=attempt)
                if not result.error:
                    break
            on_result(result)
    finally:
        runner.close()


# --------------------------------------------------------------------------------------------------
# Ray


class EnvWorker:
    """Ray actor body: builds the suite (and a per-episode policy factory) inside the worker."""

    def __init__(self, plan: Plan, policy_actor: Any = None):
        suite = get_suite(plan.suite_ref)
        if plan.episode_hook:
            policy = apply_settings(build_policy(plan.policy_name, suite, plan.policy_seed, "cpu"), plan.settings)
        else:
            policy = _ActorPolicy(policy_actor)
        self.runner = EpisodeRunner(suite, plan, policy)

    def pid(self) -> int:
        return os.getpid()

    def run(self, item: WorkItem) -> EpisodeResult | dict:
        try:
            return self.runner.run(item)
        except ProvenanceError as err:
            return {"fatal": str(err)}


class _ActorPolicy:
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
        self.policy = apply_settings(build_policy(plan.policy_name, suite, plan.policy_seed, plan.device),
                                     plan.settings)
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


def run_ray(items: Sequence[WorkItem], plan: Plan, workers: int | None,
            on_result: Callable[[EpisodeResult], None], ray_address: str | None = None) -> dict:
    """Fan `items` out over env worker actors; returns scheduling stats (batch sizes, restarts)."""
    import ray
    from ray.exceptions import RayActorError

    started_here = ray_init(ray_address)
    actors: list[Any] = []
    servers: list[Any] = []
    stats: dict[str, Any] = {"worker_restarts": 0, "batch_sizes": []}
    try:
        n = workers or max(1, int(ray.cluster_resources().get("CPU", os.cpu_count() or 1)))
        n = max(1, min(n, len(items)))
        if not plan.episode_hook:
            gpus = ray.cluster_resources().get("GPU", 0) if plan.device.startswith("cuda") else 0
            opts: dict[str, Any] = {"num_cpus": 0}  # mostly waits; leave the cores to env workers
            if gpus:
                opts["num_gpus"] = min(1.0, gpus / plan.policy_actors)
            server_cls = ray.remote(PolicyServer).options(**opts)
            servers = [server_cls.remote(plan, max_batch=min(plan.max_batch, n))
                       for _ in range(max(1, plan.policy_actors))]
        worker_cls = ray.remote(num_cpus=1)(EnvWorker)

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
        pending = collections.deque(items)
        suspects: collections.deque = collections.deque()
        attempts: collections.Counter = collections.Counter()
        inflight: dict[Any, tuple[int, WorkItem, str]] = {}
        queued: list[collections.deque] = [collections.deque() for _ in range(n)]  # refs, oldest first
        alone = [False] * n  # worker i runs a suspect with nothing queued behind it

        def submit(i: int, item: WorkItem) -> None:
            ref = actors[i].run.remote(item)
            inflight[ref] = (i, item, now())
            queued[i].append(ref)

        def fill(i: int) -> None:
            if alone[i] and queued[i]:
                return
            alone[i] = False
            if not queued[i] and suspects:
                submit(i, suspects.popleft())
                alone[i] = True
                return
            while pending and len(queued[i]) < PIPELINE:
                submit(i, pending.popleft())

        def handle(item: WorkItem, result: EpisodeResult | dict, died: bool = False) -> None:
            if isinstance(result, dict):
                raise ProvenanceError(result["fatal"])
            attempts[item.key] += 1
            if result.error and attempts[item.key] < MAX_ATTEMPTS:
                (suspects if died else pending).appendleft(item)  # a killer reruns alone
            else:
                on_result(replace(result, attempts=attempts[item.key]))

        for _ in range(PIPELINE):  # a worker never idles waiting for the driver's round trip
            for i in range(n):
                if pending:
                    submit(i, pending.popleft())
        while inflight:
            done, _ = ray.wait(list(inflight), num_returns=1)
            ref = done[0]
            i, item, started = inflight.pop(ref)
            try:
                result = ray.get(ref)
            except RayActorError as err:
                # The worker died. Its in-flight episodes that finished are kept; the others failed.
                failed: list[tuple[WorkItem, str, BaseException]] = []
                for other in list(queued[i]):
                    if other == ref:
                        failed.append((item, started, err))
                        continue
                    _, other_item, other_started = inflight.pop(other)
                    try:
                        handle(other_item, ray.get(other))
                    except RayActorError as other_err:
                        failed.append((other_item, other_started, other_err))
                queued[i].clear()
                ray.kill(actors[i], no_restart=True)
                actors[i] = new_actor(i)  # retries (and later items) run on a fresh process
                stats["worker_restarts"] += 1
                if len(failed) == 1:
                    item, started, err = failed[0]
                    handle(item, _error_result(item, f"env worker process died: {str(err).splitlines()[0]}"[:2000],
                                               started), died=True)
                else:
                    suspects.extend(f[0] for f in failed)
            else:
                queued[i].remove(ref)
                handle(item, result)
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


def execute(items: Sequence[WorkItem], plan: Plan, *, workers: int | None, policy: Policy, suite: Suite,
            on_result: Callable[[EpisodeResult], None], ray_address: str | None = None,
            progress: bool = True) -> dict:
    """Run every item (in-process if workers == 0, else Ray) with a progress bar; returns stats."""
    from tqdm import tqdm

    bar = tqdm(total=len(items), unit="ep", desc="episodes", disable=not progress or None, leave=False)
    counts = {"done": 0, "success": 0, "error": 0}

    def report(result: EpisodeResult) -> None:
        on_result(result)
        counts["done"] += 1
        counts["success"] += int(result.success)
        counts["error"] += int(bool(result.error))
        bar.update(1)
        bar.set_postfix(success=f"{counts['success'] / counts['done']:.1%}", errors=counts["error"])

    try:
        if workers == 0:
            run_local(items, plan, policy, suite, report)
            stats: dict = {}
        else:
            stats = run_ray(items, plan, workers, report, ray_address)
    finally:
        bar.close()
    return {**stats, **counts}
