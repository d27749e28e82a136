"""Scripted expert for LIBERO-Goal scenes: waypoints for robosuite's OSC delta controller from
privileged object, fixture and site poses.

Why: LIBERO's human demonstrations are downloads we cannot make here, and they exist only for
LIBERO's own tasks. This expert makes demonstrations for the ten LIBERO-Goal tasks and for new
goals in the same scene (benchmarks/libero/compositional.py), from the task's BDDL goal alone.

Skills, chosen per goal atom (`plan_for`):
- pick_place On/In(obj, target): above the grasp point -> descend -> close -> lift -> over the
  target -> lower until the object's bottom is just above the target surface (or the descent
  stalls on contact) -> open -> retreat. The bowl is grasped by its rim, the bottle at its neck.
- open_drawer Open(drawer region), and before In(obj, drawer region): grasp the drawer's handle
  from above, pull it along the drawer's slide axis until LIBERO's open range is reached, release.
- clear, before opening a drawer a bowl goes into: a bowl standing where the open drawer will
  hang over it (LIBERO-Goal task 3: the hand cannot reach its rim under the drawer) is first
  dragged out sideways by the closed fingers lowered inside it.
- push On(plate, table region): the plate is flat and wide, so it is pushed: the closed gripper,
  leaning toward the goal, goes down behind the rim and pushes it, following the plate (and going
  back behind it if the fingers ride up onto it) until its centre is on the region's centre.
- turn_on Turnon(stove): the closed gripper pushes the knob's lever sideways (about the knob's
  vertical axis) until the joint is well inside LIBERO's turn-on range.
The gripper's orientation is held at its start orientation (top-down) by a rotation correction.
It never reads the instruction: run in a scene where another goal is asked, it does its own task.
The skills are sequences of the motion primitives in benchmarks/libero/motion.py (go, hold,
lower until contact, drag...); the scene's names and geometry are in benchmarks/libero/goal_scene.py.

Success over the 50 init states of every task and goal, within LIBERO-Goal's 300 steps:
results/libero/expert_table.md (`python -m benchmarks.libero expert-table`). LIBERO places the
fixtures (the cabinet) anew in every process, so a failing init state need not fail again.

Noise (diverse demonstrations) is seeded per episode: Gaussian action noise of std `noise` on the
translation and a waypoint jitter of up to `noise * JITTER_M` metres.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from benchmarks.base import ActionSpec, BenchError, ScriptedPolicy
from benchmarks.libero.goal_scene import (DRAWER_WALL_DZ, HAND_HALF_DEPTH, HAND_HALF_SPAN, HANDLE_LOCAL,
                                         KNOB_GRASP_LOCAL, TABLE_Z, body_point, category, drawer_level,
                                         drawer_rect, highest_site, open_drawer_rects, pull_direction, room)
from benchmarks.libero.motion import CLOSED, OPEN, POS_GAIN, Motion, pitch_towards, rotation_about, yaw_rotation

ACTION_DIM = 7
STATE_DIM = 8
# slower while carrying these: a fast swing shakes the bottle out of the fingers
CARRY_GAIN = {"wine_bottle": 6.0, "cream_cheese": 6.0}
CARRY_SPEED = {"wine_bottle": 0.4}  # action cap while carrying (default 1)
SAFE_DZ = 0.06  # a carried object's bottom clears the highest region (cabinet top, rack) by this
JITTER_M = 0.01

# Grasp points relative to the object's body origin (world frame; the scene's objects keep their
# yaw across init states): the bowl by its rim (the fingers close across the rim wall along y),
# the bottle by its neck, the cheese in the middle.
GRASP_OFFSET: dict[str, tuple[float, float, float]] = {
    "akita_black_bowl": (0.0, 0.045, 0.03),
    "wine_bottle": (0.0, 0.0, 0.07),
    "cream_cheese": (0.0, 0.0, 0.0),
}
APPROACH_DZ = {"wine_bottle": 0.14}  # above the grasp point before descending (default 0.08)
APPROACH_TOL = 0.012  # a waypoint on the way down, not the grasp itself
# Push: the closed fingertips come down just outside the plate's rim on the side away from the goal
# (the plate's radius is ~7 cm) and push the rim, leaning forward so the hand and wrist stay clear
# of the cabinet the plate starts next to (tilt 0.9 rad, 10 starts: 9/10; upright: 0/6 - the
# wrist hits the cabinet and the fingers stay above the rim; pressing on the plate's floor from
# inside, the old way: 3/10, the fingers slide over the floor and the rim).
PUSH_BACKSET = 0.085  # fingertips this far behind the plate's centre (away from the goal)
PUSH_PRESS = 0.0  # pressed this far below the contact height while pushing
PUSH_DZ = 0.006  # grip site above the plate's origin on contact (the rim's top is ~16 mm up)
PUSH_LEAD = 0.06  # the tracked point is this far ahead of the contact point (into the rim)
PUSH_LOST = 0.03  # fingers this far past the contact point (towards the centre): lost the rim
PUSH_RETRIES = 2
PUSH_TILT = 0.9  # radians the hand leans toward the goal (fingertips behind it)
HANDLE_GAIN = 16.0  # straight in to the handle (nothing to hit; a slow tail cost ~8 steps)
HANDLE_REACH = 0.0  # grip site this far in front of the handle bar's centre when closing
DRAWER_PULL_LEAD = 0.08  # the pull's target runs this far ahead of the handle
DRAWER_GRIP_STEPS, DRAWER_RELEASE_STEPS = 10, 6
# a carried object's bottom passes this far over the walls (0.02: the flaring bowl hit the front
# wall and pushed the drawer shut)
DRAWER_CARRY_DZ = 0.05
DRAWER_LOWER_GAIN = 10.0  # lowered into a drawer faster than onto a small target
DRAWER_PLACE_TOL = 0.012  # a drawer is wide: the object needs no fine alignment over it
DRAWER_APPROACH_DZ = 0.03  # the handle is approached from this far above its height
# rise this far after the pull, turning back down; the next skill's approach finishes the turn
# (rising 10 cm and waiting for the turn here cost task 3 ~15 of its 300 steps)
DRAWER_LEAVE_DZ = 0.03
DRAWER_OPEN_Q = -0.152  # target slide position (LIBERO's open range is [-0.16, -0.14])
# Yaw for a bowl grasped on its x side (fingers across that rim wall); -90 and +90 degrees both
# work (task 3, 10 starts, 600 steps: 7/10 each), -90 was faster.
BOWL_X_SIDE_YAW = -np.pi / 2
KNOB_ON_Q = 1.0  # target knob angle (turn-on range [0.5, 2.1])
CLEAR_MARGIN = 0.015  # the hand beside a cleared bowl stays this far off the open drawer
CLEAR_ROOM = 0.095  # a cleared bowl's centre ends at least this far from other objects, if it can
DRAG_DZ = 0.035  # grip site above the bowl's origin while dragging it (fingertips over its floor)
DRAG_LEAD = 0.06  # the drag's target runs this far ahead of the bowl's centre
DRAG_GAIN = 20.0


def plan_for(goal: tuple[tuple[str, ...], ...]) -> list[tuple[str, ...]]:
    """Skills, in order, that make a BDDL goal (a conjunction of atoms) hold.

    Raises BenchError for a predicate or object this expert has no skill for.
    """
    steps: list[tuple[str, ...]] = []
    for atom in goal:
        pred = atom[0].lower()
        if pred == "open" and drawer_level(atom[1]):
            steps.append(("open_drawer", atom[1]))
        elif pred == "turnon" and atom[1].startswith("flat_stove"):
            steps.append(("turn_on", atom[1]))
        elif pred == "in" and drawer_level(atom[2]):
            if ("open_drawer", atom[2]) not in steps:
                steps.append(("open_drawer", atom[2]))
            # the object is moved out from under the drawer before the drawer is opened over it
            steps.insert(steps.index(("open_drawer", atom[2])), ("clear", atom[1], atom[2]))
            steps.append(("pick_place", atom[1], atom[2]))
        elif pred == "on" and category(atom[1]) == "plate" and atom[2].startswith("main_table_"):
            steps.append(("push", atom[1], atom[2]))
        elif pred in ("on", "in") and category(atom[1]) in GRASP_OFFSET:
            steps.append(("pick_place", atom[1], atom[2]))
        else:
            raise BenchError(f"the LIBERO scripted expert has no skill for the goal atom {atom}")
    return steps


class _Episode(Motion):
    """One episode of the expert: its plan's skills, in order, from the motion primitives."""

    def __init__(self, expert: "LiberoExpert", first: dict[str, Any], rng: np.random.Generator):
        self.plan = expert.plan
        self.jitter = np.clip(rng.normal(0.0, expert.noise * JITTER_M, 3), -2 * JITTER_M, 2 * JITTER_M) \
            if expert.noise > 0 else np.zeros(3)
        self.rest_z = {k[:-4]: float(v[2]) - TABLE_Z for k, v in first.items()
                       if k.endswith("_pos") and not k.startswith("robot0") and "_to_" not in k}
        super().__init__(first, rng, expert.noise)

    def script(self) -> Generator[np.ndarray, None, None]:
        for skill, *args in self.plan:
            yield from getattr(self, skill)(*args)
        yield from self.hold(self.grip, 5)

    def _under_open_drawer(self, obj: str, body: str) -> bool:
        """Whether a hand at `obj`'s rim would come within CLEAR_MARGIN of drawer `body` open."""
        lo, hi = drawer_rect(self.p, body, DRAWER_OPEN_Q)
        need = HAND_HALF_DEPTH + CLEAR_MARGIN
        c = self.obj(obj)[:2]
        return not (np.any(c <= lo - need) or np.any(c >= hi + need))

    def _grasp(self, obj: str) -> tuple[np.ndarray, float]:
        """(grasp offset, gripper yaw). With a drawer open, a bowl is taken at the rim point
        whose hand footprint stays off the open drawers (which hang over the table and stop the
        descent), the farthest from other objects among those; the gripper is yawed 90 degrees
        when that point is on the x side so the fingers straddle the rim wall."""
        base = np.array(GRASP_OFFSET[category(obj)])
        rects = open_drawer_rects(self.p)
        if category(obj) != "akita_black_bowl" or not rects:
            return base, 0.0
        r, z = float(np.hypot(base[0], base[1])), float(base[2])
        sides = [(np.array([0.0, r, z]), 0.0), (np.array([0.0, -r, z]), 0.0),
                 (np.array([r, 0.0, z]), BOWL_X_SIDE_YAW), (np.array([-r, 0.0, z]), BOWL_X_SIDE_YAW)]

        def hand_gap(side: tuple[np.ndarray, float]) -> float:
            point = self.obj(obj)[:2] + side[0][:2]
            half = np.array([HAND_HALF_DEPTH, HAND_HALF_SPAN]) if side[1] == 0.0 \
                else np.array([HAND_HALF_SPAN, HAND_HALF_DEPTH])
            return min(float(np.max(np.maximum(lo - (point + half), (point - half) - hi))) for lo, hi in rects)

        clear = [side for side in sides if hand_gap(side) > 0.0]
        if not clear:
            return max(sides, key=hand_gap)
        return max(clear, key=lambda side: room(self.p, self.obj(obj)[:2] + side[0][:2], obj))

    def _way_out(self, obj: str, body: str) -> np.ndarray | None:
        """Unit xy direction to drag `obj` so that a hand at its rim stays CLEAR_MARGIN off drawer
        `body` once open: of the eight compass directions not into the cabinet, the shortest way
        out that leaves CLEAR_ROOM to other objects (the roomiest if none does). None: clear."""
        if not self._under_open_drawer(obj, body):
            return None
        lo, hi = drawer_rect(self.p, body, DRAWER_OPEN_Q)
        need = HAND_HALF_DEPTH + CLEAR_MARGIN
        c = self.obj(obj)[:2]
        pull = pull_direction(self.p, body)[:2]
        exits = []
        for angle in np.arange(8) * np.pi / 4:
            d = np.array([np.cos(angle), np.sin(angle)])
            if float(d @ pull) < -0.1:
                continue  # that way is into the cabinet
            travel = min(((lo[a] - need if d[a] < 0 else hi[a] + need) - c[a]) / d[a]
                         for a in (0, 1) if abs(d[a]) > 1e-6)
            exits.append(((min(room(self.p, c + d * travel, obj), CLEAR_ROOM), -travel), d))
        return max(exits, key=lambda e: e[0])[1]

    def clear(self, obj: str, region: str) -> Generator[np.ndarray, None, None]:
        """Drag a bowl out from under where the drawer of `region` will hang once open: the
        closed fingers go down inside the bowl and pull it by its wall along `_way_out` until a
        hand at its rim stays clear of the open drawer. Other objects, and a bowl already clear,
        are left alone (LIBERO-Goal puts nothing else under a drawer)."""
        level = drawer_level(region)
        if category(obj) != "akita_black_bowl" or level is None:
            return
        body = f"{region[: -len(f'_{level}_region')]}_cabinet_{level}"
        d = self._way_out(obj, body)
        if d is None:
            return
        drag_z = float(self.obj(obj)[2]) + DRAG_DZ
        yield from self.go(lambda: self.obj(obj) + [0, 0, DRAG_DZ + 0.03], CLOSED, tol=0.01, max_steps=60)
        yield from self.lower_until(np.array([*self.obj(obj)[:2], drag_z]), CLOSED, max_steps=15)
        yield from self.drag(lambda: np.array([*(self.obj(obj)[:2] + d * DRAG_LEAD), drag_z]), CLOSED,
                             until=lambda: not self._under_open_drawer(obj, body), max_steps=60, gain=DRAG_GAIN)
        # back off the wall, then up out of the bowl (a sideways exit would drag it back)
        yield from self.go(lambda: np.array([*self.obj(obj)[:2], drag_z + 0.06]), CLOSED, tol=0.02, max_steps=20)

    def pick_place(self, obj: str, target: str) -> Generator[np.ndarray, None, None]:
        grasp, yaw = self._grasp(obj)
        offset = grasp + self.jitter * [1, 1, 0]
        down = self.ref_rot
        self.ref_rot = yaw_rotation(yaw) @ down
        approach = APPROACH_DZ.get(category(obj), 0.08)
        for _attempt in range(2):
            if open_drawer_rects(self.p):  # over first, then down: a diagonal catches the drawer
                high = max(float(self.eef[2]), float((self.obj(obj) + offset)[2]) + approach)
                yield from self.go(lambda: np.array([*(self.obj(obj) + offset)[:2], high]), OPEN, tol=0.02,
                                   max_steps=40)
            yield from self.go(lambda: self.obj(obj) + offset + [0, 0, approach], OPEN, tol=APPROACH_TOL,
                               max_steps=60)
            if yaw:  # finish turning before the fingers come down beside the rim
                yield from self.settle_rotation(OPEN, tol=0.05, max_steps=20)
            yield from self.go(lambda: self.obj(obj) + offset, OPEN, tol=0.004, max_steps=40)
            yield from self.hold(CLOSED, 12)
            grasp_dz = float(self.eef[2] - self.obj(obj)[2])  # the object hangs this far below
            carry = max(self._carry_floor(target) + grasp_dz, self.eef[2] + 0.1)
            yield from self.go(lambda: np.array([*self.eef[:2], carry]), CLOSED, tol=0.02, max_steps=40)
            if self.obj(obj)[2] > TABLE_Z + self.rest_z.get(obj, 0.0) + 0.05:
                break  # lifted
            yield from self.hold(OPEN, 8)  # missed: open and try again
        surface = self._surface(target)
        rel = self.eef - self.obj(obj)  # the object may sit off-centre between the fingers

        def over() -> np.ndarray:
            t = self._target_xy(target)
            return np.array([t[0] + rel[0], t[1] + rel[1], carry])

        yield from self.go(over, CLOSED, tol=0.01, max_steps=80, gain=CARRY_GAIN.get(category(obj), POS_GAIN),
                           speed=CARRY_SPEED.get(category(obj), 1.0))
        yield from self.go(over, CLOSED, tol=DRAWER_PLACE_TOL if drawer_level(target) else 0.004, max_steps=20,
                           gain=6.0)
        release = over()
        release[2] = surface + self.rest_z.get(obj, 0.0) + grasp_dz + 0.015
        yield from self.lower_until(release, CLOSED, gain=DRAWER_LOWER_GAIN if drawer_level(target) else 6.0)
        yield from self.hold(OPEN, 12)
        yield from self.go(lambda: self.eef + [0, 0, 0.05], OPEN, max_steps=15)
        self.ref_rot = down

    def _carry_floor(self, target: str) -> float:
        """Height a carried object's bottom travels at: SAFE_DZ over the highest region (the cabinet
        top, the rack), or, into a drawer, just over the drawer's walls (the drawer is in front of
        everything else on the way)."""
        if drawer_level(target) is not None:
            return self._surface(target) + DRAWER_WALL_DZ + DRAWER_CARRY_DZ
        return highest_site(self.p) + SAFE_DZ

    def _surface(self, target: str) -> float:
        """Height the placed object's bottom should come to rest at."""
        if target in self.p["sites"]:
            return float(self.p["sites"][target][2])
        return float(self.obj(target)[2]) + (0.008 if category(target) == "plate" else 0.01)

    def _target_xy(self, target: str) -> np.ndarray:
        if target in self.p["sites"]:
            return np.asarray(self.p["sites"][target][:2]) + self.jitter[:2]
        return self.obj(target)[:2] + self.jitter[:2]

    def open_drawer(self, region: str) -> Generator[np.ndarray, None, None]:
        """Grasp the handle from the front and pull. The handles sit under the cabinet top and
        each other, so the gripper is pitched 90 degrees to point into the cabinet (its fingers
        then close vertically around the horizontal bar) and turned back afterwards."""
        level = drawer_level(region)
        assert level is not None
        cabinet = region[: -len(f"_{level}_region")]
        body, joint = f"{cabinet}_cabinet_{level}", f"{cabinet}_{level}_level"
        if self.p["fixture_joints"][joint] <= DRAWER_OPEN_Q + 0.005:
            return
        pull = pull_direction(self.p, body)
        down = self.ref_rot
        self.ref_rot = pitch_towards(-pull) @ down

        def handle() -> np.ndarray:
            return body_point(self.p, body, HANDLE_LOCAL[level])

        yield from self.go(lambda: handle() + pull * 0.12 + [0, 0, DRAWER_APPROACH_DZ], OPEN, tol=0.015,
                           max_steps=70)
        yield from self.go(lambda: handle() + pull * HANDLE_REACH, OPEN, tol=0.006, max_steps=30,
                           gain=HANDLE_GAIN)
        yield from self.hold(CLOSED, DRAWER_GRIP_STEPS)
        yield from self.drag(lambda: handle() + pull * DRAWER_PULL_LEAD, CLOSED,
                             until=lambda: self.p["fixture_joints"][joint] <= DRAWER_OPEN_Q, max_steps=80)
        yield from self.hold(OPEN, DRAWER_RELEASE_STEPS)
        # Clear the handle, then rise a little while turning back to pointing down.
        yield from self.go(lambda: handle() + pull * 0.08 + [0, 0, 0.02], OPEN, tol=0.02, max_steps=15)
        self.ref_rot = down
        yield from self.go(lambda: handle() + pull * 0.10 + [0, 0, DRAWER_LEAVE_DZ], OPEN, tol=0.03, max_steps=20)

    def push(self, obj: str, region: str) -> Generator[np.ndarray, None, None]:
        """Push the plate by its rim from behind (module constants PUSH_*); it cannot be lifted."""
        def goal() -> np.ndarray:
            return np.asarray(self.p["sites"][region][:2]) + self.jitter[:2]

        def contact(press: float) -> np.ndarray:
            c = self.obj(obj)[:2]
            d = (goal() - c) / max(np.linalg.norm(goal() - c), 1e-6)
            return np.array([*(c - d * PUSH_BACKSET), self.obj(obj)[2] + PUSH_DZ - press])

        down = self.ref_rot
        d0 = goal() - self.obj(obj)[:2]
        d0 = np.array([*(d0 / max(np.linalg.norm(d0), 1e-6)), 0.0])
        # the hand's wide (finger) axis along x, clear of the cabinet; leaning forward by PUSH_TILT
        self.ref_rot = rotation_about(np.cross([0.0, 0.0, 1.0], d0), PUSH_TILT) @ yaw_rotation(np.pi / 2) @ down
        yield from self.go(lambda: contact(0.0) + [0, 0, 0.08], CLOSED, max_steps=60)
        yield from self.go(lambda: contact(0.0), CLOSED, tol=0.004, max_steps=30)
        reacquired = 0
        for _ in range(150):
            err = goal() - self.obj(obj)[:2]
            if np.linalg.norm(err) < 0.01:
                break
            d = err / max(np.linalg.norm(err), 1e-6)
            back = float(np.dot(self.eef[:2] - self.obj(obj)[:2], d))  # < 0: behind the centre
            lost = back > -PUSH_BACKSET + PUSH_LOST or self.eef[2] > contact(PUSH_PRESS)[2] + 0.025
            if lost and reacquired < PUSH_RETRIES:  # rode up onto the plate: lift, go back behind, down
                reacquired += 1
                yield from self.go(lambda: np.array([*self.eef[:2], contact(0.0)[2] + 0.06]), CLOSED, tol=0.01,
                                   max_steps=20)
                yield from self.go(lambda: contact(0.0) + [0, 0, 0.06], CLOSED, tol=0.01, max_steps=40)
                yield from self.go(lambda: contact(0.0), CLOSED, tol=0.006, max_steps=30)
                continue
            # Track a point just inside the plate's back rim: the fingers press on the rim while it
            # moves, and follow it (never run ahead of it) when it sticks or slips sideways.
            target = contact(PUSH_PRESS)
            yield self._action(np.array([*(target[:2] + d * PUSH_LEAD), target[2]]), CLOSED)
        yield from self.go(lambda: self.eef + [0, 0, 0.08], CLOSED, max_steps=20)
        self.ref_rot = down

    def turn_on(self, stove: str) -> Generator[np.ndarray, None, None]:
        """Grasp the knob's bar over its hinge and twist the gripper about +z (positive rotation
        turns the stove on) until the joint is well inside LIBERO's turn-on range."""
        body = joint = f"{stove}_button"
        hub = body_point(self.p, body, KNOB_GRASP_LOCAL)
        yield from self.go(lambda: hub + [0, 0, 0.08], OPEN, max_steps=60)
        yield from self.go(lambda: hub, OPEN, tol=0.004, max_steps=40)
        yield from self.hold(CLOSED, 10)
        down = self.ref_rot
        angle = 0.0
        for _ in range(60):
            if self.p["fixture_joints"][joint] >= KNOB_ON_Q:
                break
            angle = min(angle + 0.08, KNOB_ON_Q + 0.4)
            self.ref_rot = yaw_rotation(angle) @ down
            yield self._action(hub, CLOSED)
        yield from self.hold(OPEN, 8)
        yield from self.go(lambda: hub + [0, 0, 0.08], OPEN, max_steps=20)
        self.ref_rot = down


class LiberoExpert(ScriptedPolicy):
    """Scripted expert for one LIBERO task; satisfies `benchmarks.base.Policy` (chunk = 1).

    Reads only `obs["privileged"]` (LiberoEnv fills it with object, fixture and site poses).
    """

    def __init__(self, task_id: str, goal: tuple[tuple[str, ...], ...], action_spec: ActionSpec,
                 noise: float = 0.0, seed: int = 0):
        super().__init__(action_spec, STATE_DIM, noise, seed)
        self.task_id = task_id
        self.goal = tuple(tuple(a) for a in goal)
        self.plan = plan_for(self.goal)

    def act(self, observations: list) -> np.ndarray:
        """float32[B, 1, 7]; observation i continues episode i since the last reset()."""
        out = np.zeros((len(observations), 1, ACTION_DIM), dtype=np.float32)
        for i, obs in enumerate(observations):
            p = obs["privileged"]
            if "fixture_bodies" not in p:
                raise BenchError("the LIBERO expert needs LiberoEnv's privileged fixture state")
            if i >= len(self._episodes):
                self._episodes.append(_Episode(self, p, np.random.default_rng(self._rng.integers(2**63))))
            out[i, 0] = self._episodes[i].step(p)
        return out