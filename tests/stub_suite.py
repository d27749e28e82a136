"""A tiny pure-numpy Suite / Env / expert for tests of the evaluation engine (apt/eval).

A point on a plane must reach one of four corners; the task id names the corner. `reach-d` is held
out of training (a compositional-style task). The expert steers to the goal from privileged state.

Importable as `tests.stub_suite` (repository root on sys.path / PYTHONPATH), so worker processes
rebuild it by reference (`--suite tests.stub_suite:StubSuite`). Variants for fault tests:
- `SlowStubSuite`: each step sleeps a few ms (resume test: room to kill mid-run);
- `FaultyStubSuite`: `step` raises for seeds in FAIL_SEEDS (every attempt) and, in-process only, on the
  first attempt of seeds in FLAKY_SEEDS;
- `DyingStubSuite`: the worker process exits (os._exit) during episodes with a seed in DIE_SEEDS, but
  only inside a Ray worker (never in the test process);
- `EasyStubSuite`: a goal tolerance so wide that random actions often succeed (stochastic runs);
- `LyingStubSuite`: the env appends a period to the instruction it reports (provenance violation).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.base import ActionSpec, ObservationSpec, PolicySpec, TaskSpec

ACTION_SPEC = ActionSpec(dim=2, mode="delta", rotation="none", gripper="none")
GOALS = {"a": (0.8, 0.8), "b": (-0.8, 0.8), "c": (-0.8, -0.8), "d": (0.8, -0.8)}
HELD_OUT = ("d",)
MAX_STEPS = 12
STEP = 0.25
TOL = 0.2


def canonical(corner: str) -> str:
    return f"move the point to corner {corner}"


class StubEnv:
    def __init__(self, suite: "StubSuite", task_id: str, image_size: int, cameras: tuple[str, ...]):
        self.suite, self.task_id = suite, task_id
        self.goal = np.array(GOALS[task_id.split("-")[1]], dtype=np.float32)
        self.image_size, self.cameras = image_size, cameras
        self.pos = np.zeros(2, np.float32)
        self.seed = -1
        self.instruction = ""
        self.t = 0

    def reset(self, seed=None, instruction=None, init_state=None):
        self.seed = int(seed if seed is not None else 0)
        rng = np.random.default_rng(self.seed)
        self.pos = rng.uniform(-0.5, 0.5, 2).astype(np.float32)
        self.instruction = canonical(self.task_id.split("-")[1]) if instruction is None else instruction
        self.t = 0
        return self._obs()

    def step(self, action):
        self.t += 1
        self.suite.on_step(self)
        a = np.clip(np.asarray(action, np.float32).reshape(-1), -1, 1)
        assert a.shape == (2,), a.shape
        self.pos = np.clip(self.pos + a * STEP, -1, 1).astype(np.float32)
        success = bool(np.linalg.norm(self.pos - self.goal) < self.suite.tolerance)
        return self._obs(), success, {"success": success}

    def close(self):
        pass

    def _obs(self):
        images = {}
        for cam in self.cameras:
            img = np.zeros((self.image_size, self.image_size, 3), np.uint8)
            ij = ((self.pos + 1) / 2 * (self.image_size - 1)).astype(int)
            img[ij[1], ij[0]] = 255
            images[cam] = img
        return {"images": images, "state": self.pos.copy(), "instruction": self.suite.reported(self.instruction),
                "privileged": {"pos": self.pos.copy(), "goal": self.goal.copy()}}


class StubExpert:
    """Steers straight to the goal (chunk 1); needs privileged state; language-blind."""

    def __init__(self, task_id: str):
        self.goal = np.array(GOALS[task_id.split("-")[1]], np.float32)
        self.spec = PolicySpec(action=ACTION_SPEC, observation=ObservationSpec(cameras=(), state_dim=2), chunk=1)

    def reset(self):
        pass

    def act(self, observations):
        out = np.zeros((len(observations), 1, 2), np.float32)
        for i, o in enumerate(observations):
            d = (self.goal - o["privileged"]["pos"]) / STEP
            out[i, 0] = np.clip(d, -1, 1)
        return out


class StubSuite:
    tolerance = TOL
    name = "stub"
    version = "1"
    action_spec = ACTION_SPEC
    observation_spec = ObservationSpec(cameras=("front", "wrist"), state_dim=2, image_size=16)

    def tasks(self):
        return [TaskSpec(task_id=f"reach-{c}", instruction=canonical(c), max_steps=MAX_STEPS,
                         attributes={"skill": "reach", "target": c}, train=c not in HELD_OUT)
                for c in GOALS]

    def make_env(self, task_id, image_size=16, cameras=None):
        return StubEnv(self, task_id, image_size, tuple(cameras) if cameras is not None else ("front",))

    def expert(self, task_id):
        return StubExpert(task_id)

    # hooks for the variants
    def on_step(self, env: StubEnv) -> None:
        pass

    def reported(self, instruction: str) -> str:
        return instruction


class EasyStubSuite(StubSuite):
    tolerance = 1.0


class SlowStubSuite(StubSuite):
    def on_step(self, env):
        time.sleep(0.004)


FAIL_SEEDS = (3,)
FLAKY_SEEDS = (1,)
_flaky_done: set = set()


class FaultyStubSuite(StubSuite):
    def on_step(self, env):
        if env.seed in FAIL_SEEDS and env.t == 2:
            raise RuntimeError(f"simulated physics blow-up (seed {env.seed})")
        ident = (env.task_id, env.seed, env.instruction)
        if env.seed in FLAKY_SEEDS and env.t == 2 and ident not in _flaky_done:
            _flaky_done.add(ident)
            raise RuntimeError("transient simulator fault")


DIE_SEEDS = (2,)


def _in_ray_worker() -> bool:
    try:
        import ray
        from ray._private.worker import WORKER_MODE, global_worker
    except ImportError:
        return False
    return ray.is_initialized() and global_worker.mode == WORKER_MODE


class DyingStubSuite(StubSuite):
    def on_step(self, env):
        if env.seed in DIE_SEEDS and env.task_id == "reach-a" and env.t == 2 and _in_ray_worker():
            os._exit(17)


class LyingStubSuite(StubSuite):
    def reported(self, instruction):
        return instruction + "."


# --------------------------------------------------------------------------------------------------
# Instruction sets for the stub suite (written where a test wants them)

SPLIT_ENTRIES = {
    "seen": [(f"seen-{c}", f"reach-{c}", canonical(c), "canonical") for c in "abc"],
    "paraphrased": [("para-a-0", "reach-a", "bring the dot to corner a", "paraphrase"),
                    ("para-a-1", "reach-a", "go to the a corner", "paraphrase"),
                    ("para-b-0", "reach-b", "bring the dot to corner b", "paraphrase"),
                    ("para-c-0", "reach-c", "bring the dot to corner c", "paraphrase")],
    "compositional": [("comp-d-0", "reach-d", canonical("d"), "held_out_combination")],
}


def write_splits(folder: str | Path, suite_name: str = "stub") -> dict[str, Path]:
    """Write seen/paraphrased/compositional YAML files for the stub suite; returns name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, entries in SPLIT_ENTRIES.items():
        data = {"suite": suite_name, "split": split, "version": 1,
                "entries": [{"id": i, "task_id": t, "instruction": text, "axis": axis}
                            for i, t, text, axis in entries]}
        path = folder / f"{split}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        out[split] = path
    return out
