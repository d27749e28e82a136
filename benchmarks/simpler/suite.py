"""SimplerSuite: SimplerEnv behind `benchmarks.base.Suite`.

backend="maniskill3" (default): the four SimplerEnv Bridge (WidowX) tasks as ManiSkill3 registers
them (`mani-skill`, the `[simpler]` extra), CPU (or GPU, sim_backend="gpu") simulation.
The original SimplerEnv (user-installed) is simpler_env_suite.py (suites `simpler_env`,
`simpler_google`); this class names it when asked for backend="simpler_env".

Importing this module imports no simulator; `tasks()` is static data; `make_env` builds the
simulator in the calling process (call it inside the worker).
"""

from __future__ import annotations

from typing import Any

from benchmarks.base import ActionSpec, BenchError, ObservationSpec, TaskSpec
from benchmarks.simpler import stack
from benchmarks.simpler.env import ACTION_DIM, CAMERAS, STATE_DIM, SimplerBridgeEnv
from benchmarks.simpler.expert import BridgeExpert
from benchmarks.simpler.tasks import BY_ID, EVAL_SETTINGS, task_specs

ADAPTER_VERSION = "1"  # bump when observations, actions, assets or success change
GRIPPER = "last dim: -1 open, +1 closed"
BACKENDS = ("maniskill3", "simpler_env")
DEFAULT_IMAGE_SIZE = 224


class SimplerSuite:
    """SimplerEnv's Bridge tasks. `sim_backend`: ManiSkill's "cpu" (default), "gpu" or "auto"."""

    def __init__(self, backend: str = "maniskill3", sim_backend: str = "cpu"):
        if backend not in BACKENDS:
            from difflib import get_close_matches

            close = get_close_matches(backend, BACKENDS, n=1)
            raise BenchError(f"unknown SimplerEnv backend {backend!r}"
                             f"{f' (did you mean {close[0]!r}?)' if close else ''}; use one of {BACKENDS}")
        if backend == "simpler_env":
            raise BenchError("SimplerSuite is the ManiSkill3 backend; the original SimplerEnv's Bridge "
                             "tasks are `benchmarks.simpler.simpler(backend='simpler_env')` "
                             "(`--suite simpler_env`), its Google Robot tasks `--suite simpler_google`")
        self.name = "simpler"
        self.backend = backend
        self.sim_backend = sim_backend
        self.version = f"{ADAPTER_VERSION}-{backend}"
        self.action_spec = ActionSpec(dim=ACTION_DIM, mode="delta", rotation="euler", gripper=GRIPPER,
                                      low=-1.0, high=1.0)
        self.observation_spec = ObservationSpec(cameras=CAMERAS, state_dim=STATE_DIM,
                                                image_size=DEFAULT_IMAGE_SIZE)

    # --- Suite protocol ------------------------------------------------------------------------
    def tasks(self) -> list[TaskSpec]:
        return task_specs()

    def make_env(self, task_id: str, image_size: int | None = None,
                 cameras: tuple[str, ...] | None = None) -> SimplerBridgeEnv:
        task = self._task(task_id)
        cams = CAMERAS if cameras is None else tuple(cameras)
        unknown = [c for c in cams if c not in CAMERAS]
        if unknown:
            raise BenchError(f"unknown SimplerEnv camera(s) {unknown}; cameras are {list(CAMERAS)}")
        size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
        if not isinstance(size, int) or size <= 0:
            raise BenchError(f"image_size must be a positive integer number of pixels, got {size!r}")
        return SimplerBridgeEnv(task=task, image_size=size, cameras=cams, sim_backend=self.sim_backend)

    def expert(self, task_id: str, **kw: Any):
        task = self._task(task_id)
        return BridgeExpert(task, **kw)

    # --- SimplerEnv specifics ------------------------------------------------------------------
    def protocol(self) -> dict[str, Any]:
        """Everything that defines how episodes are run (SimplerEnv's Bridge settings)."""
        return {"suite": self.name, "version": self.version, "backend": self.backend,
                "sim_backend": self.sim_backend, "mani_skill": stack.maniskill_version(),
                "action": "float32[7] (dx,dy,dz m, base frame; droll,dpitch,dyaw XYZ euler rad; "
                          "gripper -1 open +1 closed), deltas on the previous target pose",
                "state": "float32[8] ee pos (3) + ee XYZ euler (3) + finger qpos (2), base frame",
                **EVAL_SETTINGS}

    def _task(self, task_id: str):
        if task_id not in BY_ID:
            from difflib import get_close_matches

            close = get_close_matches(task_id, list(BY_ID), n=1)
            raise BenchError(f"unknown task id {task_id!r} for suite 'simpler'"
                             f"{f' (did you mean {close[0]!r}?)' if close else ''}; ids are "
                             f"{', '.join(BY_ID)}")
        return BY_ID[task_id]
