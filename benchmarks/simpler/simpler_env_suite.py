"""SimplerEnvSuite: the original SimplerEnv (`simpler_env`, user-installed) behind
`benchmarks.base.Suite`, for one robot.

- robot="google_robot": the `simpler_google` suite, SimplerEnv's seven Google Robot tasks with a
  fixed instruction (google_robot.py);
- robot="widowx": the four Bridge tasks, `simpler(backend="simpler_env")` (suite `simpler_env`)
  (same task ids and instructions as the maniskill3 backend, so instruction_sets/simpler/ applies,
  except `compositional`: those recombined tasks exist only on ManiSkill3).

`tasks()` is static data, so splits validate without the simulator; `make_env` imports
`simpler_env` in the calling process and raises a BenchError with the install steps when it is
missing. The action spec differs from the maniskill3 backend's: rotation is an axis-angle vector
(what SimplerEnv's ManiSkill2 controllers take), not XYZ Euler angles. There is no scripted expert.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from benchmarks.base import ActionSpec, BenchError, ObservationSpec, TaskSpec
from benchmarks.simpler import google_robot, stack
from benchmarks.simpler.simpler_env_backend import ACTION_DIM, CAMERA, STATE_DIM, SimplerEnvEnv
from benchmarks.simpler.tasks import EVAL_SETTINGS, task_specs

ADAPTER_VERSION = "1"  # bump when observations, actions, assets or success change
GRIPPER = "last dim: -1 open, +1 closed"
DEFAULT_IMAGE_SIZE = 224
ROBOTS = ("google_robot", "widowx")
# The Bridge tasks in ManiSkill2_real2sim (simpler_env.ENVIRONMENT_MAP) and their number of fixed
# configurations there (xy configs x orientations; the eggplant has 24 here, 64 on ManiSkill3).
BRIDGE_ENV_IDS: dict[str, str] = {
    "widowx_spoon_on_towel": "PutSpoonOnTableClothInScene-v0",
    "widowx_carrot_on_plate": "PutCarrotOnPlateInScene-v0",
    "widowx_stack_cube": "StackGreenCubeOnYellowCubeBakedTexInScene-v0",
    "widowx_put_eggplant_in_basket": "PutEggplantInBasketScene-v0",
}
BRIDGE_N_CONFIGS: dict[str, int] = {t: 24 for t in BRIDGE_ENV_IDS}


def _bridge_specs() -> list[TaskSpec]:
    return [dataclasses.replace(t, attributes={**t.attributes, "env_id": BRIDGE_ENV_IDS[t.task_id]})
            for t in task_specs() if t.task_id in BRIDGE_ENV_IDS]


class SimplerEnvSuite:
    """The original SimplerEnv's tasks for `robot` ("google_robot" or "widowx")."""

    def __init__(self, robot: str = "google_robot", name: str | None = None):
        if robot not in ROBOTS:
            raise BenchError(f"unknown SimplerEnv robot {robot!r}; robots are {list(ROBOTS)}")
        self.robot = robot
        self.name = name or ("simpler_google" if robot == "google_robot" else "simpler")
        self.backend = "simpler_env"
        self.version = f"{ADAPTER_VERSION}-simpler_env"
        self.action_spec = ActionSpec(dim=ACTION_DIM, mode="delta", rotation="axis_angle", gripper=GRIPPER,
                                      low=-1.0, high=1.0)
        self.observation_spec = ObservationSpec(cameras=(CAMERA[robot],), state_dim=STATE_DIM,
                                                image_size=DEFAULT_IMAGE_SIZE)
        self._specs = google_robot.task_specs() if robot == "google_robot" else _bridge_specs()
        self._by_id = {t.task_id: t for t in self._specs}

    # --- Suite protocol ------------------------------------------------------------------------
    def tasks(self) -> list[TaskSpec]:
        return list(self._specs)

    def make_env(self, task_id: str, image_size: int | None = None,
                 cameras: tuple[str, ...] | None = None) -> SimplerEnvEnv:
        self._task(task_id)
        offered = self.observation_spec.cameras
        cams = offered if cameras is None else tuple(cameras)
        unknown = [c for c in cams if c not in offered]
        if unknown:
            raise BenchError(f"unknown SimplerEnv camera(s) {unknown} for {self.robot}; cameras are "
                             f"{list(offered)}")
        size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
        if not isinstance(size, int) or size <= 0:
            raise BenchError(f"image_size must be a positive integer number of pixels, got {size!r}")
        n_configs = (google_robot.BY_ID[task_id].n_configs if self.robot == "google_robot"
                     else BRIDGE_N_CONFIGS[task_id])
        return SimplerEnvEnv(task_id=task_id, robot=self.robot, image_size=size, cameras=cams,
                             n_configs=n_configs)

    def expert(self, task_id: str, **kw: Any):
        self._task(task_id)
        raise BenchError(f"suite {self.name!r} (original SimplerEnv) has no scripted expert; for the "
                         "Bridge tasks use the `simpler` suite on ManiSkill3 (backend maniskill3)")

    # --- SimplerEnv specifics ------------------------------------------------------------------
    def protocol(self) -> dict[str, Any]:
        """Everything that defines how episodes are run."""
        if self.robot == "google_robot":
            settings: dict[str, Any] = dict(google_robot.EVAL_SETTINGS)
        else:
            settings = {**EVAL_SETTINGS, "max_steps": {t.task_id: t.max_steps for t in self._specs},
                        "n_configs": dict(BRIDGE_N_CONFIGS), "env_ids": dict(BRIDGE_ENV_IDS),
                        "success": "ManiSkill2_real2sim evaluate()['success']; the engine stops an "
                                   "episode at its first success"}
        return {"suite": self.name, "version": self.version, "backend": self.backend,
                "robot": self.robot, "simpler_env": stack.simpler_env_version(),
                "action": "float32[7] (dx,dy,dz m, base frame; axis-angle rx,ry,rz rad; gripper -1 open "
                          "+1 closed, absolute; sent relative to the Google Robot)",
                "state": "float32[8] tcp pos (3) + tcp XYZ euler (3) + finger qpos (2), base frame",
                **settings}

    def _task(self, task_id: str) -> TaskSpec:
        if task_id not in self._by_id:
            from difflib import get_close_matches

            close = get_close_matches(task_id, list(self._by_id), n=1)
            hint = ""
            if task_id in google_robot.NOT_INCLUDED:
                hint = f" ({task_id} is left out: {google_robot.NOT_INCLUDED[task_id]})"
            elif close:
                hint = f" (did you mean {close[0]!r}?)"
            raise BenchError(f"unknown task id {task_id!r} for suite {self.name!r}{hint}; ids are "
                             f"{', '.join(self._by_id)}")
        return self._by_id[task_id]
