"""Non-learned reference policies: `oracle` (the suite's scripted expert, an upper bound) and `random`.

Both are built by the registry as `cls(suite=suite, seed=seed)`.

The oracle is stateful per episode and reads privileged simulator state, so it cannot sit behind a
batching policy actor: it implements the engine's optional hook `episode_policy(task_id) -> Policy`,
and the engine builds that per-episode policy inside the env worker (no isinstance special-casing).
"""

from __future__ import annotations

import numpy as np

from benchmarks.base import BenchError, Observation, ObservationSpec, PolicySpec, Suite, sample_seed


class OraclePolicy:
    """The suite's scripted expert, one instance per episode through `episode_policy`."""

    policy_id = "oracle"
    checkpoint_sha256 = ""

    def __init__(self, suite: Suite, seed: int = 0):
        if not callable(getattr(suite, "expert", None)):
            raise BenchError(f"suite {getattr(suite, 'name', suite)!r} has no scripted expert, so it "
                             "has no oracle policy")
        self.suite = suite
        self.seed = seed
        # The expert reads only privileged state: it asks for no camera, so nothing is rendered.
        self.spec = PolicySpec(action=suite.action_spec,
                               observation=ObservationSpec(cameras=(), state_dim=suite.observation_spec.state_dim,
                                                           image_size=suite.observation_spec.image_size),
                               chunk=1)

    def episode_policy(self, task_id: str):
        """A fresh scripted expert for one episode of `task_id` (engine hook)."""
        return self.suite.expert(task_id)

    def reset(self) -> None:
        pass

    def act(self, observations: list[Observation]) -> np.ndarray:
        raise BenchError("the oracle acts only through episode_policy(task_id): it needs to know the task "
                         "and keeps per-episode state; run it through apt.eval (apt-bench run), which "
                         "calls the hook")


class RandomPolicy:
    """Uniform actions in [low, high] of the suite's action spec; seeded; chunk 1 (or `chunk`).

    Stateless, so the engine serves it like a learned policy (batched). An observation with a
    `sample_key` (the engine sets one) gets draws seeded by it, so in-process and Ray runs play the
    same episodes; without one, draws come from one seeded stream.
    """

    policy_id = "random"
    checkpoint_sha256 = ""

    def __init__(self, suite: Suite, seed: int = 0, chunk: int = 1):
        a = suite.action_spec
        self.low, self.high, self.dim = float(a.low), float(a.high), int(a.dim)
        self.seed = seed
        self.spec = PolicySpec(action=a,
                               observation=ObservationSpec(cameras=(), state_dim=0,
                                                           image_size=suite.observation_spec.image_size),
                               chunk=chunk)
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def act(self, observations: list[Observation]) -> np.ndarray:
        shape = (self.spec.chunk, self.dim)
        if not observations:
            return np.zeros((0, *shape), np.float32)
        rows = [np.random.default_rng(sample_seed(self.seed, o["sample_key"])) if "sample_key" in o else self.rng
                for o in observations]
        return np.stack([r.uniform(self.low, self.high, shape) for r in rows]).astype(np.float32)
