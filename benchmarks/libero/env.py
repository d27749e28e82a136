"""LiberoEnv: one LIBERO task in one process, behind `benchmarks.base.Env`.

Action: float32[7] = (dx, dy, dz, drx, dry, drz, gripper) for robosuite's OSC_POSE controller in
delta mode: xyz and axis-angle rotation deltas in [-1, 1] (scaled by the controller to 5 cm and
0.5 rad per step, clipped), gripper -1 = open, +1 = closed. With control="absolute" the first six
are an absolute eef target (metres, axis-angle radians, robot base frame) as in LeRobot.
State: float32[8] = eef position (3), eef orientation as axis-angle (3), the two gripper finger
joint positions (2) -- the layout openpi and LeRobot feed their LIBERO policies.

Non-obvious behaviour:
- The instruction in every observation is exactly the one passed to `reset` (the split's); LIBERO's
  own `task.language` (derived from the BDDL file name) is used only when `reset` gets none.
- The simulator (robosuite, mujoco, a GL context) is created in `__init__`, i.e. in the process
  that calls `LiberoSuite.make_env`: build envs inside workers, never before a fork.
- Only the requested cameras are rendered; with cameras=() no GL context is created at all.
- robosuite's own episode horizon is disabled (the engine counts steps against TaskSpec.max_steps).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmarks.base import BenchError, Observation, SimulatorEnv
from benchmarks.libero.protocol import LiberoProtocol
from benchmarks.libero.stack import import_envs

# Our camera names -> robosuite's.
CAMERAS: dict[str, str] = {"agentview": "agentview", "wrist": "robot0_eye_in_hand"}
STATE_DIM = 8
ACTION_DIM = 7
SETTLE_ACTION = np.array([0.0] * 6 + [-1.0])  # hold still, gripper open
_HORIZON = 100_000  # robosuite's own time limit, out of the way


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """robosuite quaternion (x, y, z, w) -> axis-angle float[3] (angle in [0, 2*pi))."""
    x, y, z, w = (float(v) for v in quat)
    w = min(1.0, max(-1.0, w))
    den = math.sqrt(max(0.0, 1.0 - w * w))
    if den < 1e-9:
        return np.zeros(3)
    return np.array([x, y, z]) * (2.0 * math.acos(w) / den)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a square uint8 image (PIL, as openpi's resize_with_pad does for squares)."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), resample=Image.BILINEAR))


class LiberoEnv(SimulatorEnv):
    """One LIBERO task. Satisfies `benchmarks.base.Env`; built by `LiberoSuite.make_env`."""

    def __init__(self, *, task_id: str, bddl_path: str, canonical_instruction: str,
                 init_states: np.ndarray, protocol: LiberoProtocol, image_size: int,
                 cameras: tuple[str, ...], control: str = "delta"):
        envs = import_envs()
        super().__init__(task_id, image_size, cameras)
        self.canonical_instruction = canonical_instruction
        self.init_states = init_states
        self.protocol = protocol
        self.control = control
        self.init_index: int | None = None
        self._fixture_bodies: list[tuple[str, int]] = []
        self._fixture_joints: list[tuple[str, int]] = []
        self._sites: list[tuple[str, int]] = []
        kwargs: dict[str, Any] = dict(
            bddl_file_name=bddl_path, has_renderer=False, ignore_done=True, horizon=_HORIZON,
            has_offscreen_renderer=bool(self.cameras), use_camera_obs=bool(self.cameras))
        if self.cameras:
            kwargs.update(camera_names=[CAMERAS[c] for c in self.cameras],
                          camera_heights=protocol.render_size, camera_widths=protocol.render_size)
        else:
            kwargs.update(camera_names=[])
        try:
            self._env = envs.env_wrapper.ControlEnv(**kwargs)
        except Exception as e:  # robosuite/GL raise many types; name the task and the backend
            import os

            raise BenchError(f"cannot create the LIBERO env for {task_id} ({type(e).__name__}: {e}); "
                             f"MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}. For headless rendering "
                             f"install libegl1 libgl1-mesa-dri (EGL) or libosmesa6 (OSMesa), or make "
                             f"the env with cameras=()") from e

    # --- Env protocol -------------------------------------------------------------------------
    def reset(self, seed: int | None = None, instruction: str | None = None,
              init_state: Any = None) -> Observation:
        """Start an episode from a fixed LIBERO init state; returns the first observation.

        `init_state=i` (an int, 0 <= i < 50 for the standard suites) starts from the task's i-th
        fixed init state: the engine passes `init_state=i` for episode i, as openpi and LeRobot
        do, so every split of a task sees the same 50 starts (paired comparisons). A float array
        is taken as a raw flattened MuJoCo state. `init_state="sampled"` draws a fresh layout from
        the BDDL's placement regions with `seed` (robosuite's sampler; the same seed gives the same
        layout): demonstrations start there, never at an evaluation start. With no init_state,
        `seed` picks the index (seed % number of init states), and with neither, index 0.
        Then `protocol.settle_steps` no-op steps (gripper open) let objects settle; they are not
        counted in the episode's steps.
        `instruction` is put verbatim in every observation of the episode; None means the task's
        canonical instruction (LIBERO's task.language).
        """
        sampled = isinstance(init_state, str) and init_state == "sampled"
        state, self.init_index = (None, None) if sampled else self._pick_state(seed, init_state)
        self.instruction = self.canonical_instruction if instruction is None else str(instruction)
        env = self._env
        if seed is not None or sampled:
            env.seed(int(seed or 0))
        env.reset()
        if state is not None:
            env.set_init_state(state)
        self._set_control("delta")  # settle with zero deltas, whatever the control mode
        raw = None
        for _ in range(self.protocol.settle_steps):
            raw, _, _, _ = env.step(SETTLE_ACTION)
        if raw is None:
            raw = env.env._get_observations(force_update=True)
        self._set_control(self.control)
        self._index_fixtures()
        self._ready = True
        return self._obs(raw)

    def step(self, action: np.ndarray) -> tuple[Observation, bool, dict[str, Any]]:
        a = self._step_action(action, ACTION_DIM, f"LIBERO actions are float[{ACTION_DIM}] (dx, dy, dz, drx, dry, "
                              "drz, gripper)", dtype=np.float64)
        raw, reward, _, _ = self._env.step(a)
        success = bool(self._env.check_success())
        return self._obs(raw), success, {"success": success, "reward": float(reward)}

    # --- helpers -------------------------------------------------------------------------------
    def _pick_state(self, seed: int | None, init_state: Any) -> tuple[np.ndarray, int | None]:
        n = len(self.init_states)
        if init_state is None:
            idx = 0 if seed is None else int(seed) % n
            return self.init_states[idx], idx
        if isinstance(init_state, str):
            raise BenchError(f"{self.task_id}: init_state {init_state!r}: pass an index (0..{n - 1}), a "
                             f"flattened MuJoCo state, or 'sampled' (a fresh layout drawn from the seed)")
        if isinstance(init_state, (int, np.integer)) and not isinstance(init_state, bool):
            idx = int(init_state)
            if not 0 <= idx < n:
                raise BenchError(f"{self.task_id}: init_state {idx} out of range; this task has {n} "
                                 f"fixed init states (0..{n - 1})")
            return self.init_states[idx], idx
        arr = np.asarray(init_state, dtype=np.float64)
        if arr.shape != self.init_states.shape[1:]:
            raise BenchError(f"{self.task_id}: init_state must be an index (0..{n - 1}) or a flattened "
                             f"MuJoCo state of shape {self.init_states.shape[1:]}, got shape {arr.shape}")
        return arr, None

    def _set_control(self, mode: str) -> None:
        for robot in self._env.robots:
            robot.controller.use_delta = mode == "delta"

    def _index_fixtures(self) -> None:
        """Ids of the fixtures' bodies and joints and of the scene's named sites (regions).

        robosuite rebuilds the MuJoCo model on reset, so the ids are looked up once per episode.
        """
        e = self._env.env
        model = e.sim.model
        prefixes = tuple(f"{name}_" for name in getattr(e, "fixtures_dict", {}))
        self._fixture_bodies = [(n, i) for i in range(model.nbody)
                                if (n := model.body_id2name(i)) and n.startswith(prefixes)]
        self._fixture_joints = [(n, int(model.jnt_qposadr[i])) for i in range(model.njnt)
                                if (n := model.joint_id2name(i)) and n.startswith(prefixes)]
        self._sites = [(n, model.site_name2id(n)) for n in getattr(e, "object_sites_dict", {})]

    def _fixture_state(self) -> dict[str, Any]:
        """Privileged fixture state for scripted experts: body poses (xyz, quaternion wxyz as
        MuJoCo stores it), joint positions and site (region) positions, all in the world frame."""
        data = self._env.env.sim.data
        return {"fixture_bodies": {n: (np.array(data.body_xpos[i]), np.array(data.body_xquat[i]))
                                   for n, i in self._fixture_bodies},
                "fixture_joints": {n: float(data.qpos[a]) for n, a in self._fixture_joints},
                "sites": {n: np.array(data.site_xpos[i]) for n, i in self._sites}}

    def _obs(self, raw: dict[str, Any]) -> Observation:
        images: dict[str, np.ndarray] = {}
        for c in self.cameras:
            img = raw[f"{CAMERAS[c]}_image"]
            if self.protocol.rotate_180:
                img = img[::-1, ::-1]
            images[c] = np.ascontiguousarray(_resize(np.ascontiguousarray(img), self.image_size))
        state = np.concatenate([raw["robot0_eef_pos"], quat_to_axis_angle(raw["robot0_eef_quat"]),
                                raw["robot0_gripper_qpos"]]).astype(np.float32)
        privileged = {k: np.array(v) for k, v in raw.items() if not k.endswith("_image")}
        privileged["init_index"] = self.init_index
        privileged["sim_state"] = np.array(self._env.get_sim_state())  # what LIBERO's HDF5 "states" hold
        privileged.update(self._fixture_state())
        return Observation(images=images, state=state, instruction=self.instruction,
                           privileged=privileged)
