"""TabletopEnv: one MuJoCo tabletop scene, one task's success predicate, optional cameras.

Action: float32[4] = (dx, dy, dz, gripper) in [-1, 1] (clipped). xyz moves the gripper's target
TCP by up to XYZ_STEP metres per step (the target is kept inside a workspace box); gripper -1 is
fully open, +1 fully closed (in between: proportional finger targets). Control runs at 10 Hz with
SUBSTEPS physics steps; the mocap target is interpolated across them so motion is smooth.

State: float32[4] = TCP xyz (m, table top at z = 0) and finger gap (m).

Success predicates read object poses only (plus "is the block held": in contact with both fingers):
- place: block centre inside the receptacle's inner footprint, resting on its floor, not held.
- stack: block centre within a block half-width of the other block's centre in xy, one block height
  above it, not held.
- push: block moved >= PUSH_SUCCESS_DIST towards the side along x (left = -x as seen from the front
  camera) since reset, resting on the table, outside every receptacle footprint, not held.
All require the block to be (nearly) at rest. None can hold at reset: layouts keep blocks apart
and out of receptacles.

Non-obvious behaviour: the compiled model is shared by all environments of a process (layouts
live in MjData), and all of them render through the process's one renderer (see render.py).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from benchmarks.base import BenchError, Observation, checked_action
from benchmarks.tabletop import scene
from benchmarks.tabletop.render import get_renderer, import_mujoco
from benchmarks.tabletop.tasks import OBJECTS, RECEPTACLES, canonical_instruction, parse_task_id

CAMERAS: tuple[str, ...] = ("front", "wrist")
STATE_DIM = 4
ACTION_DIM = 4
XYZ_STEP = 0.03  # metres per step at |action| = 1
WORKSPACE_LO = np.array([-0.45, -0.3, 0.022])  # TCP target box; z floor keeps fingertips off the table
WORKSPACE_HI = np.array([0.45, 0.3, 0.3])
PUSH_SUCCESS_DIST = 0.10
REST_SPEED = 0.05  # m/s: a block slower than this is "at rest"
_INTERP_CHUNKS = 5  # mocap target updates per control step


class TabletopEnv:
    """One tabletop task. Satisfies `benchmarks.base.Env`."""

    def __init__(self, task_id: str, image_size: int = 96, cameras: tuple[str, ...] | None = ("front",)):
        self.skill, self.obj, self.target = parse_task_id(task_id)
        self.task_id = task_id
        cameras = tuple(cameras) if cameras is not None else ("front",)
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise BenchError(f"unknown tabletop camera(s) {unknown}; cameras are {list(CAMERAS)}")
        if cameras and (not isinstance(image_size, (int, np.integer)) or image_size <= 0):
            raise BenchError(f"image_size must be a positive integer number of pixels, got {image_size!r}")
        self.cameras = cameras
        self.image_size = int(image_size)
        self._mj = import_mujoco()
        mj = self._mj
        self.model = scene.get_model()
        self.data = mj.MjData(self.model)
        m = self.model
        self._cam_ids = {c: mj.mj_name2id(m, mj.mjtObj.mjOBJ_CAMERA, c) for c in self.cameras}
        self._block_qadr = {c: m.jnt_qposadr[mj.mj_name2id(m, mj.mjtObj.mjOBJ_JOINT, f"block_{c}")] for c in OBJECTS}
        self._block_vadr = {c: m.jnt_dofadr[mj.mj_name2id(m, mj.mjtObj.mjOBJ_JOINT, f"block_{c}")] for c in OBJECTS}
        self._block_geom = {c: mj.mj_name2id(m, mj.mjtObj.mjOBJ_GEOM, f"block_{c}") for c in OBJECTS}
        self._rec_mocap = {r: m.body_mocapid[mj.mj_name2id(m, mj.mjtObj.mjOBJ_BODY, f"rec_{r}")] for r in RECEPTACLES}
        self._grip_mocap = m.body_mocapid[mj.mj_name2id(m, mj.mjtObj.mjOBJ_BODY, "gripper_target")]
        gj = mj.mj_name2id(m, mj.mjtObj.mjOBJ_JOINT, "gripper")
        self._grip_qadr, self._grip_vadr = m.jnt_qposadr[gj], m.jnt_dofadr[gj]
        self._finger_qadr = [m.jnt_qposadr[mj.mj_name2id(m, mj.mjtObj.mjOBJ_JOINT, f)] for f in ("finger_l", "finger_r")]
        self._finger_geoms = {mj.mj_name2id(m, mj.mjtObj.mjOBJ_GEOM, f) for f in ("finger_l", "finger_r")}
        self._fl, self._fr = sorted(self._finger_geoms)
        self._tcp_site = mj.mj_name2id(m, mj.mjtObj.mjOBJ_SITE, "tcp")
        self._tcp_offset = np.array([0.0, 0.0, scene.TCP_OFFSET])
        self._rng = np.random.default_rng()
        self.layout: scene.Layout | None = None
        self.instruction = ""
        self._target = np.zeros(3)
        self._block_start: dict[str, np.ndarray] = {}

    # --- Env protocol -------------------------------------------------------------------------
    def reset(self, seed: int | None = None, instruction: str | None = None, init_state: Any = None) -> Observation:
        """Lay out the scene from `seed` (or a `scene.Layout` as init_state); returns the first obs."""
        if init_state is not None:
            layout = init_state if isinstance(init_state, scene.Layout) else _layout_from_mapping(init_state)
        else:
            if seed is None:
                seed = int(self._rng.integers(2**31))
            layout = scene.sample_layout(seed)
        self.layout = layout
        self.instruction = self._canonical() if instruction is None else instruction
        mj, m, d = self._mj, self.model, self.data
        mj.mj_resetData(m, d)
        for c, (x, y, yaw) in layout.blocks.items():
            a = self._block_qadr[c]
            d.qpos[a:a + 7] = [x, y, scene.BLOCK_HALF, np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        for r, (x, y) in layout.receptacles.items():
            d.mocap_pos[self._rec_mocap[r]] = [x, y, 0.0]
        self._target = np.array(layout.gripper, dtype=float)
        palm = self._target + self._tcp_offset
        d.mocap_pos[self._grip_mocap] = palm
        d.qpos[self._grip_qadr:self._grip_qadr + 7] = [*palm, 1, 0, 0, 0]
        for a in self._finger_qadr:
            d.qpos[a] = scene.FINGER_OPEN_Q
        d.ctrl[:] = scene.FINGER_OPEN_Q
        mj.mj_forward(m, d)
        self._block_start = {c: d.qpos[a:a + 3].copy() for c, a in self._block_qadr.items()}
        return self._obs()

    def step(self, action: np.ndarray) -> tuple[Observation, bool, dict[str, Any]]:
        return self._step(action, render=True)

    def step_unrendered(self, action: np.ndarray) -> tuple[Observation, bool, dict[str, Any]]:
        """`step` without rendering (benchmarks.base.RendersOnDemand): the observation's images are {}."""
        return self._step(action, render=False)

    def _step(self, action: np.ndarray, render: bool) -> tuple[Observation, bool, dict[str, Any]]:
        if self.layout is None:
            raise BenchError("TabletopEnv.step called before reset")
        a = np.clip(checked_action(action, ACTION_DIM, f"tabletop actions are float[{ACTION_DIM}] (dx, dy, dz, "
                                   "gripper)", dtype=float), -1.0, 1.0)
        mj, m, d = self._mj, self.model, self.data
        start = self._target
        self._target = np.clip(start + a[:3] * XYZ_STEP, WORKSPACE_LO, WORKSPACE_HI)
        d.ctrl[:] = scene.FINGER_OPEN_Q * (1.0 - a[3]) / 2.0
        n = scene.SUBSTEPS // _INTERP_CHUNKS
        for k in range(1, _INTERP_CHUNKS + 1):
            d.mocap_pos[self._grip_mocap] = start + (self._target - start) * (k / _INTERP_CHUNKS) + self._tcp_offset
            mj.mj_step(m, d, nstep=n)
        success = self.task_success()
        return self._obs(render), success, {"success": success}

    def close(self) -> None:
        self.layout = None  # the model and the renderer are shared per process; nothing to free

    # --- success predicates --------------------------------------------------------------------
    def task_success(self, task_id: str | None = None) -> bool:
        """Success predicate of `task_id` (default: this env's task) on the current state.

        Any task's predicate can be asked in any scene (every scene holds everything); the
        language-blind check uses this.
        """
        skill, obj, target = (self.skill, self.obj, self.target) if task_id is None else parse_task_id(task_id)
        pos = self.block_pos(obj)
        if self.held(obj) or self._speed(obj) > REST_SPEED:
            return False
        if skill == "place":
            return self._in_footprint(pos, target, on_floor=True)
        if skill == "stack":
            below = self.block_pos(target)
            dz = pos[2] - below[2]
            return bool(np.hypot(*(pos[:2] - below[:2])) < scene.BLOCK_HALF
                        and 1.5 * scene.BLOCK_HALF < dz < 2.5 * scene.BLOCK_HALF)
        # push
        direction = -1.0 if target == "left" else 1.0
        moved = (pos[0] - self._block_start[obj][0]) * direction
        on_table = abs(pos[2] - scene.BLOCK_HALF) < 0.005
        in_any = any(self._in_footprint(pos, r, on_floor=False) for r in RECEPTACLES)
        return bool(moved >= PUSH_SUCCESS_DIST and on_table and not in_any)

    def block_pos(self, colour: str) -> np.ndarray:
        a = self._block_qadr[colour]
        return self.data.qpos[a:a + 3].copy()

    def held(self, colour: str) -> bool:
        """True when the block touches both fingers (a grasp)."""
        d = self.data
        if d.ncon == 0:
            return False
        pairs = d.contact.geom[:d.ncon]
        g = self._block_geom[colour]
        other = np.where(pairs[:, 0] == g, pairs[:, 1], np.where(pairs[:, 1] == g, pairs[:, 0], -1))
        return bool(np.any(other == self._fl) and np.any(other == self._fr))

    def _speed(self, colour: str) -> float:
        v = self._block_vadr[colour]
        return float(np.linalg.norm(self.data.qvel[v:v + 3]))

    def _in_footprint(self, pos: np.ndarray, rec: str, on_floor: bool) -> bool:
        kind, size, floor = scene.FOOTPRINT[rec]
        centre = self.data.mocap_pos[self._rec_mocap[rec]]
        dx, dy = pos[0] - centre[0], pos[1] - centre[1]
        inside = (np.hypot(dx, dy) < size) if kind == "disk" else (abs(dx) < size and abs(dy) < size)
        if not on_floor:
            return bool(inside)
        rest = floor + scene.BLOCK_HALF
        return bool(inside and rest - 0.006 < pos[2] < rest + 0.01)

    # --- observations ------------------------------------------------------------------------
    def _canonical(self) -> str:
        return canonical_instruction(self.skill, self.obj, self.target)

    def _obs(self, render: bool = True) -> Observation:
        d = self.data
        tcp = d.site_xpos[self._tcp_site].copy()
        gap = 2.0 * float(np.mean([d.qpos[a] for a in self._finger_qadr]))
        images: dict[str, np.ndarray] = {}
        if self.cameras and render:
            renderer = get_renderer(self.model, self.image_size)
            for c in self.cameras:
                images[c] = renderer.render(d, self._cam_ids[c], self.image_size, self.image_size)
        privileged = {
            "tcp": tcp,
            "tcp_target": self._target.copy(),
            "gap": gap,
            "blocks": {c: self.block_pos(c) for c in OBJECTS},
            "block_quat": {c: d.qpos[a + 3:a + 7].copy() for c, a in self._block_qadr.items()},
            "block_start": {c: p.copy() for c, p in self._block_start.items()},
            "held": {c: self.held(c) for c in OBJECTS},
            "receptacles": {r: d.mocap_pos[i].copy() for r, i in self._rec_mocap.items()},
        }
        return Observation(images=images, state=np.array([*tcp, gap], dtype=np.float32),
                           instruction=self.instruction, privileged=privileged)


def _layout_from_mapping(state: Mapping[str, Any]) -> scene.Layout:
    try:
        return scene.Layout(seed=int(state.get("seed", -1)),
                            blocks={c: tuple(map(float, state["blocks"][c])) for c in OBJECTS},
                            receptacles={r: tuple(map(float, state["receptacles"][r])) for r in RECEPTACLES},
                            gripper=tuple(map(float, state["gripper"])))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BenchError(f"tabletop init_state must be a scene.Layout or a mapping with 'blocks', "
                         f"'receptacles' and 'gripper' (see benchmarks/tabletop/scene.py): {e}") from e
