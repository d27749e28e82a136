"""The LIBERO-Goal scene as the scripted expert reads it: names (object categories, drawer levels,
drawer joints) and geometry (fixture points, drawer footprints and slide directions, the highest
region, room around a point), computed from LiberoEnv's privileged state `p`.

Why apart from benchmarks/libero/expert.py: these are facts about the scene, shared by several
skills and by none of the motion primitives (benchmarks/libero/motion.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.libero.motion import quat_wxyz_to_matrix

TABLE_Z = 0.895  # LIBERO's main_table regions: the table top the objects start on
# Drawer handle, in the drawer body's frame (LIBERO's wooden_cabinet model, geoms g18/g29/...).
HANDLE_LOCAL = {"top": (-0.0028, -0.1016, 0.1839), "middle": (-0.0028, -0.1016, 0.1104),
                "bottom": (-0.0028, -0.1016, 0.0369)}
# Each drawer's box (xy footprint) in its body's frame (the three levels share it; z differs).
DRAWER_BOX_LOCAL = ((-0.106, -0.1093), (0.1127, 0.0943))
DRAWER_WALL_DZ = 0.031  # a drawer's walls rise this far above its region's site
KNOB_GRASP_LOCAL = (0.0014, 0.0, 0.035)  # over the knob's hinge, in the button body's frame
# The Panda hand seen from above: half its length along the finger axis and half its depth across.
HAND_HALF_SPAN, HAND_HALF_DEPTH = 0.11, 0.035


def category(name: str) -> str:
    """'akita_black_bowl_1' -> 'akita_black_bowl' (LIBERO's instance names end in _<n>)."""
    head, _, tail = name.rpartition("_")
    return head if tail.isdigit() else name


def drawer_level(region: str) -> str | None:
    """'wooden_cabinet_1_top_region' -> 'top'; None if `region` is not a drawer's region."""
    for level in HANDLE_LOCAL:
        if region.startswith("wooden_cabinet") and region.endswith(f"_{level}_region"):
            return level
    return None


def drawer_joint(body: str) -> str:
    """'wooden_cabinet_1_cabinet_top' -> 'wooden_cabinet_1_top_level'."""
    head, _, level = body.rpartition("_cabinet_")
    return f"{head}_{level}_level"


def highest_site(p: dict[str, Any]) -> float:
    return max(float(v[2]) for v in p["sites"].values())


def body_point(p: dict[str, Any], body: str, local: tuple[float, float, float]) -> np.ndarray:
    """World position of a point fixed in fixture `body`'s frame."""
    pos, quat = p["fixture_bodies"][body]
    return np.asarray(pos) + quat_wxyz_to_matrix(quat) @ np.asarray(local)


def pull_direction(p: dict[str, Any], body: str) -> np.ndarray:
    """World direction drawer `body` opens along (its slide's negative axis, local +y)."""
    _, quat = p["fixture_bodies"][body]
    return -quat_wxyz_to_matrix(quat) @ np.array([0.0, 1.0, 0.0])


def drawer_rect(p: dict[str, Any], body: str, at_q: float) -> tuple[np.ndarray, np.ndarray]:
    """World xy box (lo, hi) of drawer `body` when its slide joint is at `at_q`."""
    pos, quat = p["fixture_bodies"][body]
    rot = quat_wxyz_to_matrix(quat)
    q = float(p["fixture_joints"][drawer_joint(body)])
    origin = np.asarray(pos) + pull_direction(p, body) * (q - at_q)
    (x0, y0), (x1, y1) = DRAWER_BOX_LOCAL
    corners = np.array([origin + rot @ np.array([x, y, 0.0]) for x in (x0, x1) for y in (y0, y1)])
    return corners[:, :2].min(0), corners[:, :2].max(0)


def open_drawer_rects(p: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """World xy boxes of the drawers that are open (slide below -0.05), where they are now."""
    return [drawer_rect(p, f"{j[: -len(f'_{lvl}_level')]}_cabinet_{lvl}", float(q))
            for j, q in p["fixture_joints"].items()
            for lvl in HANDLE_LOCAL if j.endswith(f"_{lvl}_level") and q < -0.05]


def room(p: dict[str, Any], point: np.ndarray, exclude: str) -> float:
    """Distance from xy `point` to the nearest object other than `exclude` (origins)."""
    others = [np.asarray(v[:2], float) for k, v in p.items() if k.endswith("_pos")
              and not k.startswith("robot0") and "_to_" not in k and k != f"{exclude}_pos"]
    return min((float(np.linalg.norm(point - o)) for o in others), default=1.0)
