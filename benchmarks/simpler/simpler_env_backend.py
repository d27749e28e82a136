"""SimplerEnvEnv: one task of the original SimplerEnv (`simpler_env.make`, ManiSkill2_real2sim /
SAPIEN 2), Google Robot or WidowX (Bridge), behind `benchmarks.base.Env`.

The original SimplerEnv is not on PyPI: users install it from github.com/simpler-env/SimplerEnv
(`git clone --recurse-submodules`, `pip install -e ManiSkill2_real2sim`, `pip install -e .`). It
needs SAPIEN 2, which cannot share an environment with ManiSkill3's SAPIEN 3 (the `maniskill3`
backend): use a separate environment. Nothing here imports it until an env is built.

Action: float32[7] = (dx, dy, dz, rx, ry, rz, gripper):
- dx, dy, dz: end-effector translation in metres, robot base frame; clipped to [-1, 1];
- rx, ry, rz: end-effector rotation as an axis-angle vector (radians), composed in the base frame
  (SimplerEnv's RT-1/Octo/OpenVLA adapters send euler2axangle(roll, pitch, yaw)); passed through,
  its norm clipped to pi/2 (the controllers' rot_bound);
- gripper: -1 open, +1 closed, absolute (the apt-bench convention), converted per robot:
  WidowX's `gripper_pd_joint_pos` takes an absolute target with +1 open, so it is negated;
  Google Robot's `gripper_pd_joint_target_delta_pos_interpolate_by_planner` takes a *relative*
  target in closedness units (+1 = close by the full range, -1 = open by it, ~0 = keep the last
  target), so the wrapper sends closedness(now) - closedness(last command), closedness =
  (gripper + 1) / 2 in [0, 1] and 0 (open) after reset. This is what SimplerEnv's Octo adapter
  sends (`previous_open - current_open` of its open-gripper output), minus its "sticky" repeats.
State: float32[8] = tool-centre-point position (3, robot base frame, m), its orientation as XYZ
Euler angles (3, base frame, as the maniskill3 backend), the two finger joint positions (2, raw
units: WidowX 0.037 open ~0.015 closed in m; Google Robot 0 open ~1.3 closed in rad).
Images: `overhead_camera` (Google Robot, 640x512) or `3rd_view_camera` (WidowX, 640x480), with
SimplerEnv's real background green-screened in, resized bilinearly to image_size x image_size.

Non-obvious behaviour:
- The instruction in every observation is exactly the one passed to `reset`; the env's
  get_language_instruction() is used only when none is given.
- Episode starts: `init_state=i` (int) or else the seed picks SimplerEnv's episode_id (Bridge:
  `obj_init_options["episode_id"]`, i mod the task's configurations; Google Robot: see
  google_robot.obj_init_options). The seed also seeds the env's own draws.
- `simpler_env.make` keeps the registration's time limit (equal to TaskSpec.max_steps).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from benchmarks.base import BenchError, Observation, SimulatorEnv, episode_index
from benchmarks.simpler import google_robot, stack
from benchmarks.simpler.env import _resize, quat_to_euler_xyz

ACTION_DIM = 7
STATE_DIM = 8
ROT_BOUND = math.pi / 2
CAMERA: dict[str, str] = {"google_robot": "overhead_camera", "widowx": "3rd_view_camera"}
ACTION_LAYOUT = (f"SimplerEnv actions are float[{ACTION_DIM}] (dx, dy, dz, axis-angle rx, ry, rz, "
                 "gripper -1 open +1 closed)")
_INFO_FLAGS = ("is_grasped", "consecutive_grasp", "lifted_object", "is_src_obj_grasped", "src_on_target")


def to_simpler_env_action(action: np.ndarray, robot: str, closedness: float) -> tuple[np.ndarray, float]:
    """Our action -> (the float64[7] SimplerEnv's controllers take, the closedness now commanded).

    `closedness` is the last commanded closedness in [0, 1] (Google Robot's relative gripper needs
    it; WidowX's absolute one ignores it)."""
    out = np.empty(ACTION_DIM, dtype=np.float64)
    out[:3] = np.clip(action[:3], -1.0, 1.0)
    rot = np.asarray(action[3:6], dtype=np.float64)
    norm = float(np.linalg.norm(rot))
    out[3:6] = rot * (ROT_BOUND / norm) if norm > ROT_BOUND else rot
    g = float(np.clip(action[6], -1.0, 1.0))
    if robot == "widowx":
        out[6] = -g  # ours: +1 closed; WidowX's: +1 open
        return out, (g + 1.0) / 2.0
    if robot != "google_robot":
        raise BenchError(f"unknown SimplerEnv robot {robot!r}; robots are {list(CAMERA)}")
    now = (g + 1.0) / 2.0
    out[6] = now - closedness  # relative: +1 closes by the full range, -1 opens by it
    return out, now


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def pose_in_frame(frame_p: Any, frame_q: Any, p: Any, q: Any) -> tuple[np.ndarray, np.ndarray]:
    """A world pose (p, q wxyz) expressed in the frame of a world pose (frame_p, frame_q)."""
    fq = np.asarray(frame_q, dtype=np.float64)
    fq = fq / np.linalg.norm(fq)
    inv = np.array([fq[0], -fq[1], -fq[2], -fq[3]])
    d = np.asarray(p, dtype=np.float64) - np.asarray(frame_p, dtype=np.float64)
    pos = _quat_mul(_quat_mul(inv, np.concatenate([[0.0], d])), fq)[1:]
    return pos, _quat_mul(inv, np.asarray(q, dtype=np.float64))


def _default_factory(task_id: str) -> Any:
    simpler_env = stack.import_simpler_env()  # BenchError with the install steps when absent
    return simpler_env.make(task_id)


class SimplerEnvEnv(SimulatorEnv):
    """One original-SimplerEnv task. Satisfies `benchmarks.base.Env`; built by the suites'
    `make_env` (or by tests with a fake `env_factory(task_id) -> env`)."""

    def __init__(self, *, task_id: str, robot: str, image_size: int, cameras: tuple[str, ...],
                 n_configs: int | None = None, env_factory: Callable[[str], Any] | None = None):
        if robot not in CAMERA:
            raise BenchError(f"unknown SimplerEnv robot {robot!r}; robots are {list(CAMERA)}")
        super().__init__(task_id, image_size, cameras)
        self.robot = robot
        self.n_configs = n_configs
        self.episode_id: int | None = None
        self._closedness = 0.0
        factory = _default_factory if env_factory is None else env_factory
        try:
            self._env = factory(task_id)
        except BenchError:
            raise
        except Exception as e:  # SAPIEN / Vulkan / assets raise many types
            raise BenchError(f"cannot create the SimplerEnv env for {task_id} ({type(e).__name__}: {e}); "
                             "check that MS2_ASSET_DIR points at ManiSkill2_real2sim/data and that "
                             "SAPIEN 2 can render (a Vulkan driver)") from e

    # --- Env protocol -------------------------------------------------------------------------
    def reset(self, seed: int | None = None, instruction: str | None = None,
              init_state: Any = None) -> Observation:
        """Start an episode: `init_state=i` (int) or else `seed` (or 0) picks SimplerEnv's
        episode_id; `seed` also seeds the env. `instruction` goes verbatim into every observation;
        None = the env's own instruction."""
        self.episode_id = episode_index(self.task_id, seed, init_state, self.n_configs)
        options = {"obj_init_options": {"episode_id": self.episode_id,
                                        **google_robot.obj_init_options(self.task_id, self.episode_id)}}
        raw, _ = self._env.reset(seed=None if seed is None else int(seed), options=options)
        if instruction is None:
            instruction = self._env.unwrapped.get_language_instruction()
            if isinstance(instruction, (list, tuple)):
                instruction = instruction[0]
        self.instruction = str(instruction)
        self._closedness = 0.0  # both robots start with the gripper open
        self._ready = True
        return self._obs(raw)

    def step(self, action: np.ndarray) -> tuple[Observation, bool, dict[str, Any]]:
        a = self._step_action(action, ACTION_DIM, ACTION_LAYOUT)
        sent, self._closedness = to_simpler_env_action(a, self.robot, self._closedness)
        raw, _, _, _, info = self._env.step(sent)
        success = bool(np.asarray(info["success"]).reshape(-1)[0])
        out: dict[str, Any] = {"success": success}
        for k in _INFO_FLAGS:
            if k in info:
                out[k] = bool(np.asarray(info[k]).reshape(-1)[0])
        return self._obs(raw), success, out

    # --- helpers -------------------------------------------------------------------------------
    def _state(self) -> np.ndarray:
        u = self._env.unwrapped
        robot = u.agent.robot
        base, tcp = robot.pose, u.tcp.pose
        pos, quat = pose_in_frame(base.p, base.q, tcp.p, tcp.q)
        names = [j.name for j in robot.get_active_joints()]
        qpos = np.asarray(robot.get_qpos(), dtype=np.float64)
        fingers = qpos[[names.index(n) for n in u.agent.config.gripper_joint_names]]
        return np.concatenate([pos, quat_to_euler_xyz(quat), fingers]).astype(np.float32)

    def _obs(self, raw: dict[str, Any]) -> Observation:
        images: dict[str, np.ndarray] = {}
        for c in self.cameras:
            img = np.asarray(raw["image"][c]["rgb"])[..., :3].astype(np.uint8)
            images[c] = np.ascontiguousarray(_resize(np.ascontiguousarray(img), self.image_size))
        return Observation(images=images, state=self._state(), instruction=self.instruction)
