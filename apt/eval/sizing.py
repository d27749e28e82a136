"""How a Ray run with a shared (batched) policy is laid out, from costs measured before it starts.

Measured on HEAD at the time of issue 32 (2 cores, tiny apt_pi0): the policy actor sat at ~95% of a
core while each of the 2 env workers used ~8%, and the policy got batches of at most 2. The engine
therefore sizes the pool from two numbers it measures in the driver (`measure`, about a second):
an env's seconds per policy query (`replan_steps` steps, rendering included) and the policy's
seconds per observation in a full batch on one thread. From them (`layout`):

- episodes in flight per env worker = the policy's batch (`FixedBatch.batch_rows`; 1 otherwise), so
  one call to a policy actor carries one full batch;
- policy actors = the cores the policy's share of the work needs (the cores the env workers
  leave), rounded up, one thread each (single-threaded small kernels use a core best; past
  `MAX_POLICY_ACTORS` copies of the model, actors get more threads instead): on 2 cores with
  apt_pi0 (policy ~2/3 of the work) two actors, each paired with one env worker, keep both cores
  busy, where one actor left a third of a core idle;
- env workers = at least 2 and at least one per policy actor (a worker steps its episodes while
  a policy answers another's batch), more when the envs need more cores.

A `--workers W` or `--in-flight N` given by the user is kept (the rest is still sized), and so is
the number of policy actors on a GPU (`Plan.policy_actors`).

Which engine (`engine`), for a shared policy when the user gives no `--workers` and joins no
cluster (a per-episode policy such as the oracle costs next to nothing, so Ray wins): the same costs
predict one query's seconds in each. In-process, one thread steps the envs and the policy computes
on all cores, or on one when that measured faster (a busy machine: 37 ms per observation on 2
threads against 15 on one, beside a test suite): env_s + min(policy_all_s, policy_s). On Ray, env
work and single-threaded policy work spread over the cores left after Ray's own processes (the
driver, the raylet and the GCS, counted as `RAY_CORES`): (env_s + policy_s) / (cpus - RAY_CORES).
The prediction leaves out what Ray adds on top (its start-up, the serialisation of every call), so
Ray is chosen only when predicted `RAY_MARGIN` times faster. On 2 cores that never happens (Ray's
prediction is at best the in-process one); from 3 cores on it does for a policy-heavy run.
Measured on 2 cores (tiny apt_pi0, 96 episodes, benchmarks/speed/eval_speed.py): in-process
188-217, Ray 133-194 episodes/min over four runs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from apt.eval.episodes import Episode, Plan
from benchmarks.base import FixedBatch, Policy, RendersOnDemand, Suite


@dataclass(frozen=True)
class Costs:
    """Seconds of one policy query's env work, and of one observation in a full policy batch on one
    thread (`policy_s`) and on the process's threads (`policy_all_s`, as the in-process engine runs)."""

    env_s: float
    policy_s: float
    batch: int
    policy_all_s: float | None = None  # None: not measured, taken as policy_s


@dataclass(frozen=True)
class Layout:
    workers: int
    in_flight: int
    policy_actors: int
    policy_threads: int


MAX_POLICY_ACTORS = 4  # each holds a copy of the model; past this, actors get more threads instead
RAY_CORES = 1.0  # cores Ray's own processes take from the work (module docstring)
RAY_MARGIN = 1.1  # Ray must be predicted this much faster: the prediction leaves out its start-up and IPC


def measure(plan: Plan, episode: Episode, policy: Policy, suite: Suite, probes: int = 3) -> Costs:
    """Time `probes` policy queries' worth of env steps and full batches of the (shared) policy, on one
    thread and on the process's threads."""
    s = plan.settings
    batch = policy.batch_rows if isinstance(policy, FixedBatch) else 1
    env = suite.make_env(episode.task_id, image_size=s.image_size, cameras=s.cameras)
    try:
        obs = env.reset(seed=episode.seed, instruction=episode.instruction)
        zero = np.zeros(suite.action_spec.dim, np.float32)
        replan = s.replan_steps or policy.spec.chunk
        blind = isinstance(env, RendersOnDemand)  # as rollout.play_steps: render only what a policy reads
        t = time.perf_counter()
        for _ in range(probes):
            for i in range(replan):
                obs, _, _ = env.step_unrendered(zero) if blind and i < replan - 1 else env.step(zero)
        env_s = (time.perf_counter() - t) / probes
    finally:
        env.close()
    queries = [{**obs, "sample_key": f"probe:{i}"} for i in range(batch)]
    threads = torch.get_num_threads()

    def per_observation(repeats: int = 3) -> float:
        """The fastest of `repeats` calls: a busy neighbour process slows single calls, most of all
        multi-threaded ones, and the engine choice compares the two."""
        policy.act(queries)  # warm-up (caches, allocator)
        best = math.inf
        for _ in range(repeats):
            t = time.perf_counter()
            policy.act(queries)
            best = min(best, time.perf_counter() - t)
        return best / batch

    policy_all_s = per_observation()
    torch.set_num_threads(1)
    try:
        policy_s = per_observation()
    finally:
        torch.set_num_threads(threads)
    return Costs(env_s=env_s, policy_s=policy_s, batch=batch, policy_all_s=policy_all_s)


@dataclass(frozen=True)
class Engine:
    """The engine a run uses, why, and (in-process) the torch threads its policy computes on."""

    name: str  # "in-process" | "ray"
    local_s: float  # predicted seconds per policy query in-process ...
    ray_s: float  # ... and on Ray (inf: no core to spare)
    threads: int  # in-process: 1 when one thread measured faster than all (a busy machine), else `cpus`


def engine(costs: Costs, cpus: int) -> Engine:
    """The engine for `cpus` cores (module docstring: the rule and the measurement behind it). In-process
    the policy computes on whichever thread count measured faster."""
    all_s = costs.policy_s if costs.policy_all_s is None else costs.policy_all_s
    threads = 1 if costs.policy_s < all_s else cpus
    local_s = costs.env_s + min(costs.policy_s, all_s)
    spare = cpus - RAY_CORES
    ray_s = (costs.env_s + costs.policy_s) / spare if spare > 0 else math.inf
    return Engine("ray" if RAY_MARGIN * ray_s < local_s else "in-process", local_s, ray_s, threads)


def layout(costs: Costs, cpus: int, workers: int | None = None, in_flight: int | None = None,
           episodes: int | None = None, policy_actors: int | None = None) -> Layout:
    """Env workers, episodes in flight per worker, policy actors and their threads for `cpus` cores
    (what the user or the device fixed is kept); a run of few `episodes` spreads them over the
    workers rather than idling one."""
    share = costs.policy_s / max(costs.policy_s + costs.env_s, 1e-9)  # the policy's share of the work
    policy_cores = cpus * share
    actors = policy_actors or min(MAX_POLICY_ACTORS, cpus, max(1, math.ceil(policy_cores - 1e-6)))
    threads = max(1, int(policy_cores // actors))
    n = workers or max(2, actors, math.ceil(cpus * (1.0 - share)))
    width = in_flight or max(1, costs.batch)
    if episodes and not in_flight:
        width = max(1, min(width, math.ceil(episodes / n)))
    return Layout(workers=n, in_flight=width, policy_actors=actors, policy_threads=threads)
