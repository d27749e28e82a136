"""SimplerBridgeEnv: one SimplerEnv Bridge (WidowX) task on ManiSkill3, behind `benchmarks.base.Env`.

Action: float32[7] = (dx, dy, dz, droll, dpitch, dyaw, gripper):
- dx, dy, dz: end-effector translation in metres, robot base frame, added to the controller's
  previous *target* pose (SimplerEnv's `target_delta_pose_align2`); clipped to [-1, 1];
- droll, dpitch, dyaw: XYZ Euler angles in radians of a rotation composed in the base frame with
  the previous target orientation; clipped to [-pi/2, pi/2];
- gripper: -1 open, +1 closed (the apt-bench convention); ManiSkill's own gripper action is the
  opposite (+1 open), so it is negated here. Values in between are finger position targets.
These are the raw units Bridge-trained policies (Octo, OpenVLA, pi0 on SimplerEnv) emit: no scaling.
State: float32[8] = end-effector position (3, base frame, m), its orientation as XYZ Euler angles
(3, base frame), the two finger joint positions (2, m; 0.037 open, ~0.015 closed).
Images: `3rd_view_camera` rendered at 640x480 (with the real Bridge background green-screened in)
and resized (bilinear, no crop/pad, as the Octo/OpenVLA SimplerEnv evaluations do) to
image_size x image_size, uint8.

Non-obvious behaviour:
- The instruction in every observation is exactly the one passed to `reset`; the env's
  get_language_instruction() is used only when none is given.
- The simulator is created in `__init__`, i.e. in the process calling `SimplerSuite.make_env`.
- ManiSkill's own time limit is disabled: the engine counts steps against TaskSpec.max_steps.
- The Bridge tasks only support obs_mode "rgb+segmentation", so the camera is rendered every step
  even when no camera is asked for (then no image is returned).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmarks.base import BenchError, Observation, SimulatorEnv, episode_index
from benchmarks.simpler import stack
from benchmarks.simpler.tasks import BridgeTask

CAMERAS: tuple[str, ...] = ("3rd_view_camera",)
STATE_DIM = 8
ACTION_DIM = 7
_NO_LIMIT = 1_000_000


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] == size and img.shape[1] == size:
        return img
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), resample=Image.BILINEAR))


def quat_to_euler_xyz(q: np.ndarray) -> np.ndarray:
    """Quaternion (w, x, y, z) -> intrinsic XYZ Euler angles (R = Rx Ry Rz), as ManiSkill's
    `euler_angles_to_matrix(..., "XYZ")` reads them."""
    w, x, y, z = (float(v) for v in q)
    r = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    pitch = math.asin(max(-1.0, min(1.0, r[0, 2])))
    roll = math.atan2(-r[1, 2], r[2, 2])
    yaw = math.atan2(-r[0, 1], r[0, 0])
    return np.array([roll, pitch, yaw])


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class SimplerBridgeEnv(SimulatorEnv):
    """One Bridge task. Satisfies `benchmarks.base.Env`; built by `SimplerSuite.make_env`."""

    def __init__(self, *, task: BridgeTask, image_size: int, cameras: tuple[str, ...],
                 sim_backend: str = "cpu", env_factory: Any = None):
        super().__init__(task.task_id, image_size, cameras)
        self.task = task
        self.episode_id: int | None = None
        if env_factory is None:
            stack.import_maniskill()
            import gymnasium as gym

            if not task.train:  # our recombined tasks: registering them imports ManiSkill3
                import benchmarks.simpler.compositional  # noqa: F401 - in here: it imports mani_skill

            def env_factory(env_id: str):
                return gym.make(env_id, obs_mode="rgb+segmentation", num_envs=1,
                                sim_backend=sim_backend, max_episode_steps=_NO_LIMIT)
        try:
            self._env = env_factory(task.env_id)
        except BenchError:
            raise
        except Exception as e:  # SAPIEN / Vulkan / assets raise many types
            raise stack.render_error(task.task_id, e) from e
        u = self._env.unwrapped
        self.n_configs = int(len(u.xyz_configs) * len(u.quat_configs))

    # --- Env protocol -------------------------------------------------------------------------
    def reset(self, seed: int | None = None, instruction: str | None = None,
              init_state: Any = None) -> Observation:
        """Start an episode from one of SimplerEnv's fixed object configurations.

        `init_state=i` (int) -> episode_id i (mod the task's n_configs); otherwise `seed` picks it
        (seed mod n_configs), and with neither, configuration 0. `seed` also seeds the simulator.
        `instruction` is put verbatim in every observation; None = the env's own instruction.
        """
        self.episode_id = episode_index(self.task_id, seed, init_state, self.n_configs)
        raw, _ = self._env.reset(seed=None if seed is None else int(seed),
                                 options={"episode_id": self.episode_id})
        if instruction is None:
            instruction = self._env.unwrapped.get_language_instruction()[0]
        self.instruction = str(instruction)
        self._ready = True
        return self._obs(raw)

    def step(self, action: np.ndarray) -> tuple[Observation, bool, dict[str, Any]]:
        a = self._step_action(action, ACTION_DIM, f"SimplerEnv Bridge actions are float[{ACTION_DIM}] (dx, dy, "
                              "dz, droll, dpitch, dyaw, gripper)")
        ms = np.empty(ACTION_DIM, dtype=np.float32)
        ms[:3] = np.clip(a[:3], -1.0, 1.0)
        ms[3:6] = np.clip(a[3:6], -math.pi / 2, math.pi / 2)
        ms[6] = -np.clip(a[6], -1.0, 1.0)  # ours: +1 closed; ManiSkill's: +1 open
        raw, _, _, _, info = self._env.step(ms)
        success = bool(_np(info["success"]).reshape(-1)[0])
        out = {"success": success}
        for k in ("is_src_obj_grasped", "consecutive_grasp", "src_on_target"):
            if k in info:
                out[k] = bool(_np(info[k]).reshape(-1)[0])
        return self._obs(raw), success, out

    # --- helpers -------------------------------------------------------------------------------
    def privileged(self) -> dict[str, Any]:
        """Simulator state for scripted experts (poses in the robot base frame)."""
        u = self._env.unwrapped
        base = u.agent.robot.pose
        inv = base.inv()
        arm = u.agent.controller.controllers["arm"]
        ee = arm.ee_pose_at_base
        target = arm._target_pose if arm._target_pose is not None else ee
        out: dict[str, Any] = {
            "ee_pos": _np(ee.p)[0].astype(np.float64), "ee_quat": _np(ee.q)[0].astype(np.float64),
            "target_pos": _np(target.p)[0].astype(np.float64),
            "target_quat": _np(target.q)[0].astype(np.float64),
            "gripper_qpos": _np(u.agent.robot.get_qpos())[0, -2:].astype(np.float64),
            "source": u.source_obj_name, "target": u.target_obj_name,
            "episode_id": self.episode_id, "task_id": self.task_id,
        }
        objs = {}
        for name, actor in u.objs.items():
            p = inv * actor.pose
            objs[name] = {"pos": _np(p.p)[0].astype(np.float64), "quat": _np(p.q)[0].astype(np.float64),
                          "world_pos": _np(actor.pose.p)[0].astype(np.float64)}
        out["objects"] = objs
        # Model sizes (unrotated bbox extents, scaled) and the finger opening axis, for grasp yaw.
        out["sizes"] = {name: _np(size).astype(np.float64) for name, size in u.episode_model_bbox_sizes.items()}
        fl = inv * u.agent.finger1_link.pose
        fr = inv * u.agent.finger2_link.pose
        out["finger_axis"] = (_np(fl.p)[0] - _np(fr.p)[0]).astype(np.float64)
        out["source_bbox"] = _np(u.episode_source_obj_bbox_world).astype(np.float64)
        out["target_bbox"] = _np(u.episode_target_obj_bbox_world).astype(np.float64)
        out["grasping_source"] = bool(_np(u.agent.is_grasping(u.objs[u.source_obj_name]))[0])
        return out

    def _obs(self, raw: dict[str, Any]) -> Observation:
        images: dict[str, np.ndarray] = {}
        for c in self.cameras:
            img = _np(raw["sensor_data"][c]["rgb"])[0, ..., :3].astype(np.uint8)
            images[c] = np.ascontiguousarray(_resize(np.ascontiguousarray(img), self.image_size))
        priv = self.privileged()
        state = np.concatenate([priv["ee_pos"], quat_to_euler_xyz(priv["ee_quat"]),
                                priv["gripper_qpos"]]).astype(np.float32)
        return Observation(images=images, state=state, instruction=self.instruction, privileged=priv)
