"""The tabletop scene: MJCF generated in code (primitive geoms only) and seeded layouts.

Frame: the table top is the plane z = 0; the front camera looks along +y, so "left" as seen from
it is -x and "right" is +x (the push axis is x).

The scene is the same for every task: 4 free coloured cubes, 3 neutral receptacles (bowl = round
low rim, plate = flat disk, box = square low rim; mocap bodies, i.e. static but placed per episode),
and a floating parallel-jaw gripper. The gripper is a free body welded to a mocap body (the action
moves the mocap target); two fingers slide along x under position actuators. Grasping is purely
physical (high finger friction, elliptic cones); there is no grasp assist.

`sample_layout(seed)` depends on the seed only, never on the task: paired evaluation and the
language-blind check rely on the image not telling tasks apart. Layouts are drawn by rejection
sampling with margins so that no block starts in or on a receptacle, grasps have finger room, and
every block has a free corridor along x on both sides for pushing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from benchmarks.tabletop.render import import_mujoco
from benchmarks.tabletop.tasks import OBJECTS, RECEPTACLES

# --- geometry (metres) -------------------------------------------------------------------------
BLOCK_HALF = 0.02  # cubes are 4 cm
BLOCK_RGBA = {"red": "0.85 0.15 0.15 1", "green": "0.2 0.7 0.25 1",
              "blue": "0.15 0.3 0.85 1", "yellow": "0.95 0.85 0.15 1"}
RIM_THICK = 0.006  # half thickness of bowl / box walls
FLOOR_TOP = 0.004  # top of the bowl / box floor
BOWL_R = 0.06  # rim centre-line radius
BOWL_RIM_H = 0.026  # rim top height
BOX_HALF = 0.06  # wall centre-line half width
BOX_RIM_H = 0.03
PLATE_R = 0.06
PLATE_TOP = 0.008
# Inner footprint per receptacle: ("disk", radius) or ("square", half width), and floor height.
FOOTPRINT = {
    "bowl": ("disk", BOWL_R - RIM_THICK, FLOOR_TOP),
    "plate": ("disk", PLATE_R, PLATE_TOP),
    "box": ("square", BOX_HALF - RIM_THICK, FLOOR_TOP),
}
RIM_TOP = {"bowl": BOWL_RIM_H, "plate": PLATE_TOP, "box": BOX_RIM_H}
RECEPTACLE_RGBA = {"bowl": "0.78 0.78 0.8 1", "plate": "0.96 0.96 0.94 1", "box": "0.55 0.42 0.3 1"}

# Gripper: palm centre is the mocap/free-body origin; fingers hang below; the TCP is the centre of
# the finger pads. Finger joint q is the outward travel of each finger from closed (gap = 2 q).
PALM_HALF = (0.06, 0.025, 0.01)
FINGER_HALF = (0.006, 0.02, 0.02)
TCP_OFFSET = PALM_HALF[2] + FINGER_HALF[2]  # palm origin is this far above the TCP
FINGER_OPEN_Q = 0.04  # gap 8 cm when open
FINGER_KP = 300.0

# --- simulation ---------------------------------------------------------------------------------
TIMESTEP = 0.004
SUBSTEPS = 25  # 0.1 s per control step (10 Hz)

# --- layout ------------------------------------------------------------------------------------
AREA_X = (-0.27, 0.27)  # where object centres are drawn
AREA_Y = (-0.13, 0.15)
BLOCK_RADIUS = BLOCK_HALF * math.sqrt(2)
RECEPTACLE_RADIUS = {"bowl": BOWL_R + RIM_THICK, "plate": PLATE_R, "box": (BOX_HALF + RIM_THICK) * math.sqrt(2)}
PAIR_MARGIN = 0.04  # free space between any two items (finger room)
PUSH_REACH = 0.16  # |dx| from a block that must be free (pusher behind + 0.135 m of travel + block)
PUSH_LANE = BLOCK_HALF + 0.015  # half width of that corridor, beyond other items' radius
MAX_YAW = 0.3  # blocks are rotated by at most this (rad)
GRIPPER_HOME = np.array([0.0, -0.05, 0.18])  # TCP start, jittered per seed


@dataclass(frozen=True)
class Layout:
    """Initial poses of one scene; a pure function of the seed."""

    seed: int
    blocks: dict[str, tuple[float, float, float]]  # colour -> (x, y, yaw)
    receptacles: dict[str, tuple[float, float]]  # name -> (x, y)
    gripper: tuple[float, float, float]  # TCP start (x, y, z)


def _fits(x: float, y: float, r: float, placed: list[tuple[float, float, float, bool]], is_block: bool) -> bool:
    for px, py, pr, p_block in placed:
        if math.hypot(x - px, y - py) < r + pr + PAIR_MARGIN:
            return False
        # push corridors: along x around every block, on both sides
        if p_block and abs(x - px) < PUSH_REACH + r and abs(y - py) < PUSH_LANE + r:
            return False
        if is_block and abs(px - x) < PUSH_REACH + pr and abs(py - y) < PUSH_LANE + pr:
            return False
    return True


def sample_layout(seed: int) -> Layout:
    """Non-overlapping initial poses drawn from `seed` alone (rejection sampling, deterministic)."""
    rng = np.random.default_rng([int(seed), 7])
    for _ in range(10_000):
        placed: list[tuple[float, float, float, bool]] = []
        recs: dict[str, tuple[float, float]] = {}
        blocks: dict[str, tuple[float, float, float]] = {}
        ok = True
        items = [(name, RECEPTACLE_RADIUS[name], False) for name in RECEPTACLES]
        items += [(c, BLOCK_RADIUS, True) for c in OBJECTS]
        for name, r, is_block in items:
            for _ in range(50):
                x = rng.uniform(AREA_X[0] + (0 if is_block else 0.02), AREA_X[1] - (0 if is_block else 0.02))
                y = rng.uniform(*AREA_Y)
                if _fits(x, y, r, placed, is_block):
                    break
            else:
                ok = False
                break
            placed.append((x, y, r, is_block))
            if is_block:
                blocks[name] = (float(x), float(y), float(rng.uniform(-MAX_YAW, MAX_YAW)))
            else:
                recs[name] = (float(x), float(y))
        if ok:
            g = GRIPPER_HOME + rng.uniform(-1, 1, 3) * np.array([0.05, 0.03, 0.02])
            return Layout(int(seed), blocks, recs, (float(g[0]), float(g[1]), float(g[2])))
    raise RuntimeError(f"no layout found for seed {seed}")  # pragma: no cover - never observed


# --- MJCF ----------------------------------------------------------------------------------------

def _receptacle_geoms(name: str) -> str:
    rgba = RECEPTACLE_RGBA[name]
    g = []
    if name == "plate":
        g.append(f'<geom type="cylinder" size="{PLATE_R} {PLATE_TOP / 2}" pos="0 0 {PLATE_TOP / 2}" rgba="{rgba}"/>')
    elif name == "bowl":
        g.append(f'<geom type="cylinder" size="{BOWL_R + RIM_THICK} {FLOOR_TOP / 2}" pos="0 0 {FLOOR_TOP / 2}" rgba="{rgba}"/>')
        n = 16
        seg = BOWL_R * math.tan(math.pi / n) + 0.002
        for i in range(n):
            a = 2 * math.pi * i / n
            g.append(f'<geom type="box" size="{RIM_THICK} {seg:.4f} {BOWL_RIM_H / 2}" '
                     f'pos="{BOWL_R * math.cos(a):.4f} {BOWL_R * math.sin(a):.4f} {BOWL_RIM_H / 2}" '
                     f'euler="0 0 {a:.4f}" rgba="{rgba}"/>')
    elif name == "box":
        h = BOX_HALF + RIM_THICK
        g.append(f'<geom type="box" size="{h} {h} {FLOOR_TOP / 2}" pos="0 0 {FLOOR_TOP / 2}" rgba="{rgba}"/>')
        for sx, sy, hx, hy in ((1, 0, RIM_THICK, h), (-1, 0, RIM_THICK, h), (0, 1, h, RIM_THICK), (0, -1, h, RIM_THICK)):
            g.append(f'<geom type="box" size="{hx} {hy} {BOX_RIM_H / 2}" '
                     f'pos="{sx * BOX_HALF} {sy * BOX_HALF} {BOX_RIM_H / 2}" rgba="{rgba}"/>')
    return "\n      ".join(g)


def scene_xml() -> str:
    """The MJCF of the one tabletop scene (identical for every task)."""
    fx, fy, fz = FINGER_HALF
    px, py, pz = PALM_HALF
    blocks = "\n    ".join(
        f'<body name="block_{c}" pos="{-0.3 + 0.2 * i} 0.3 {BLOCK_HALF}">'
        f'<freejoint name="block_{c}"/>'
        f'<geom name="block_{c}" type="box" size="{BLOCK_HALF} {BLOCK_HALF} {BLOCK_HALF}" mass="0.05" '
        f'rgba="{BLOCK_RGBA[c]}" friction="1.0 0.01 0.001"/></body>'
        for i, c in enumerate(OBJECTS))
    recs = "\n    ".join(
        f'<body name="rec_{r}" mocap="true" pos="{-0.3 + 0.3 * i} -0.3 0">\n      {_receptacle_geoms(r)}\n    </body>'
        for i, r in enumerate(RECEPTACLES))
    home = GRIPPER_HOME + np.array([0, 0, TCP_OFFSET])
    return f"""<mujoco model="apt_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{TIMESTEP}" integrator="implicitfast" cone="elliptic" impratio="5"/>
  <visual>
    <global offwidth="96" offheight="96"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.55 0.55 0.55" specular="0.05 0.05 0.05"/>
  </visual>
  <default>
    <geom friction="0.8 0.01 0.001" solref="0.01 1"/>
  </default>
  <worldbody>
    <light name="top" pos="0 -0.3 1.5" dir="0 0.2 -1" castshadow="false" diffuse="0.4 0.4 0.4"/>
    <geom name="table" type="box" size="1.2 0.8 0.02" pos="0 0.4 -0.02" rgba="0.42 0.36 0.3 1"/>
    <camera name="front" pos="0 -0.56 0.56" xyaxes="1 0 0 0 0.694 0.719" fovy="58"/>
    {blocks}
    {recs}
    <body name="gripper_target" mocap="true" pos="{home[0]} {home[1]} {home[2]}"/>
    <body name="gripper" pos="{home[0]} {home[1]} {home[2]}" gravcomp="1">
      <freejoint name="gripper"/>
      <geom name="palm" type="box" size="{px} {py} {pz}" mass="0.4" rgba="0.25 0.25 0.28 1"/>
      <camera name="wrist" pos="0 -0.045 0.0" xyaxes="1 0 0 0 0.94 0.34" fovy="75"/>
      <site name="tcp" pos="0 0 {-TCP_OFFSET}" size="0.004" rgba="1 1 1 0"/>
      <body name="finger_l" pos="0 0 {-pz}" gravcomp="1">
        <joint name="finger_l" type="slide" axis="-1 0 0" range="0 {FINGER_OPEN_Q + 0.005}" damping="8" armature="0.01"/>
        <geom name="finger_l" type="box" size="{fx} {fy} {fz}" pos="{-fx} 0 {-fz}" mass="0.03"
              friction="2.0 0.02 0.002" rgba="0.35 0.35 0.38 1"/>
      </body>
      <body name="finger_r" pos="0 0 {-pz}" gravcomp="1">
        <joint name="finger_r" type="slide" axis="1 0 0" range="0 {FINGER_OPEN_Q + 0.005}" damping="8" armature="0.01"/>
        <geom name="finger_r" type="box" size="{fx} {fy} {fz}" pos="{fx} 0 {-fz}" mass="0.03"
              friction="2.0 0.02 0.002" rgba="0.35 0.35 0.38 1"/>
      </body>
    </body>
  </worldbody>
  <contact>
    <exclude body1="finger_l" body2="finger_r"/>
  </contact>
  <equality>
    <weld name="gripper_weld" body1="gripper_target" body2="gripper" solref="0.02 1"/>
  </equality>
  <actuator>
    <position name="finger_l" joint="finger_l" kp="{FINGER_KP}" ctrlrange="0 {FINGER_OPEN_Q}" forcerange="-12 12"/>
    <position name="finger_r" joint="finger_r" kp="{FINGER_KP}" ctrlrange="0 {FINGER_OPEN_Q}" forcerange="-12 12"/>
  </actuator>
</mujoco>
"""


_model = None
_model_pid: int | None = None


def get_model():
    """The process's one compiled model (shared by its environments and its one renderer).

    Environments never modify it (layouts live in MjData: free joints and mocap poses).
    """
    global _model, _model_pid
    import os

    if _model is None or _model_pid != os.getpid():
        mujoco = import_mujoco()
        _model = mujoco.MjModel.from_xml_string(scene_xml())
        _model_pid = os.getpid()
    return _model
