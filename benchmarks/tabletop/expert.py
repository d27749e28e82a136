"""Scripted expert for the tabletop suite: a waypoint controller per skill on privileged state.

It reads only `obs["privileged"]` (poses from the simulator) and never the instruction, so it can
serve as the language-blind reference: the expert of task A run in a scene where task B is asked
must leave B unsolved.

- place / stack: above the block -> descend -> close -> lift -> over the goal (correcting for where
  the block sits between the fingers) -> lower until the block is just above the goal -> open ->
  retreat. A dropped block sends it back to the start; a block that lands off the goal is retried.
- push: above a point behind the block (fingers closed) -> lower to the table -> push along x while
  tracking the block's y -> stop at PUSH_TRAVEL from the block's start -> back off and rise.

Noise (for diverse demonstrations) is seeded: Gaussian action noise of std `noise` (normalised
units) on xyz, and waypoint jitter of std `noise * JITTER_M` metres drawn once per episode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from benchmarks.base import ActionSpec, ScriptedPolicy
from benchmarks.tabletop import scene
from benchmarks.tabletop.env import ACTION_DIM, STATE_DIM, WORKSPACE_LO, XYZ_STEP
from benchmarks.tabletop.tasks import parse_task_id

ACTION_SPEC = ActionSpec(dim=ACTION_DIM, mode="delta", rotation="none", gripper="last dim: -1 open, +1 closed")

SAFE_Z = 0.1  # TCP height for moves over the scene (a held block clears blocks and rims)
GRASP_DZ = 0.004  # TCP above the block centre when grasping
RELEASE_GAP = 0.006  # block bottom above the goal surface when it is let go
PUSH_Z = float(WORKSPACE_LO[2])  # TCP height when pushing (fingertips just off the table)
PUSH_BEHIND = 0.058  # TCP distance behind the block centre before pushing
PUSH_CONTACT = 0.033  # TCP distance behind the block centre while in contact
PUSH_TRAVEL = 0.13  # the block is pushed this far (success needs 0.10)
XY_TOL = 0.007
Z_TOL = 0.005
JITTER_M = 0.05
OPEN, CLOSED = -1.0, 1.0


@dataclass
class _Episode:
    """Per-episode controller state (one per batch index)."""

    jitter: np.ndarray  # (3,) metres, added to the goal waypoint
    phase: str = "reach"
    count: int = 0
    history: list[str] = field(default_factory=list)

    def goto(self, phase: str) -> None:
        self.phase, self.count = phase, 0
        self.history.append(phase)


class ScriptedExpert(ScriptedPolicy):
    """Oracle for one tabletop task; satisfies `benchmarks.base.Policy` (chunk = 1)."""

    def __init__(self, task_id: str, noise: float = 0.0, seed: int = 0):
        super().__init__(ACTION_SPEC, STATE_DIM, noise, seed)
        self.skill, self.obj, self.target = parse_task_id(task_id)
        self.task_id = task_id

    def act(self, observations: list) -> np.ndarray:
        """float32[B, 1, 4]; observation i continues episode i since the last reset()."""
        while len(self._episodes) < len(observations):
            jitter = self._rng.normal(0.0, self.noise * JITTER_M, 3) if self.noise > 0 else np.zeros(3)
            self._episodes.append(_Episode(jitter=np.clip(jitter, -0.008, 0.008)))
        out = np.zeros((len(observations), 1, ACTION_DIM), dtype=np.float32)
        intended = np.zeros_like(out)
        for i, obs in enumerate(observations):
            p = obs["privileged"]
            ep = self._episodes[i]
            waypoint, grip = (self._push if self.skill == "push" else self._pick_place)(ep, p)
            ep.count += 1
            intended[i, 0], out[i, 0] = self._toward(p, waypoint, grip)
        self.intended = intended
        return out

    # --- low level -------------------------------------------------------------------------------
    def _toward(self, p: dict, waypoint: np.ndarray, grip: float) -> tuple[np.ndarray, np.ndarray]:
        """(intended action, executed action = intended + exploration noise on xyz, clipped)."""
        d = (waypoint - p["tcp_target"]) / XYZ_STEP
        m = np.max(np.abs(d))
        if m > 1.0:
            d = d / m  # keep the direction, cap the speed
        intended = np.array([*np.clip(d, -1, 1), grip], dtype=np.float32)
        if self.noise > 0:
            d = d + self._rng.normal(0.0, self.noise, 3)
        return intended, np.array([*np.clip(d, -1, 1), grip], dtype=np.float32)

    @staticmethod
    def _rise_first(p: dict, goal_xy: np.ndarray) -> np.ndarray:
        """Waypoint toward goal_xy at SAFE_Z, rising in place first when low and far."""
        t = p["tcp_target"]
        if np.hypot(*(goal_xy - t[:2])) > 0.03 and t[2] < SAFE_Z - 0.01:
            return np.array([t[0], t[1], SAFE_Z])
        return np.array([goal_xy[0], goal_xy[1], SAFE_Z])

    # --- place and stack ---------------------------------------------------------------------------
    def _goal(self, p: dict) -> tuple[np.ndarray, float]:
        """(goal xy, height of the surface the block is to rest on)."""
        if self.skill == "stack":
            below = p["blocks"][self.target]
            return below[:2].copy(), below[2] + scene.BLOCK_HALF
        rec = p["receptacles"][self.target]
        return rec[:2].copy(), scene.RIM_TOP[self.target]

    def _pick_place(self, ep: _Episode, p: dict) -> tuple[np.ndarray, float]:
        block = p["blocks"][self.obj]
        tcp = p["tcp"]
        held = p["held"][self.obj]
        goal_xy, surface = self._goal(p)
        goal_xy = goal_xy + ep.jitter[:2] * (0.5 if self.skill == "stack" else 1.0)
        grasp = np.array([block[0], block[1], block[2] + GRASP_DZ])
        dropped = not held and block[2] < scene.BLOCK_HALF + 0.01 and ep.phase in ("lift", "carry", "lower")

        if dropped:
            ep.goto("reach")
        if ep.phase == "reach":
            wp = self._rise_first(p, block[:2])
            if np.hypot(*(tcp[:2] - block[:2])) < XY_TOL and tcp[2] > grasp[2] + 0.02:
                ep.goto("descend")
            return wp, OPEN
        if ep.phase == "descend":
            if np.hypot(*(tcp[:2] - block[:2])) > 0.02:
                ep.goto("reach")
                return self._rise_first(p, block[:2]), OPEN
            if abs(tcp[2] - grasp[2]) < Z_TOL and np.hypot(*(tcp[:2] - block[:2])) < XY_TOL:
                ep.goto("close")
            return grasp, OPEN
        if ep.phase == "close":
            if ep.count >= 2 and (held or ep.count >= 5):
                ep.goto("lift")
            return p["tcp_target"].copy(), CLOSED
        if ep.phase == "lift":
            t = p["tcp_target"]
            if tcp[2] > SAFE_Z - 0.015:
                ep.goto("carry")
            return np.array([t[0], t[1], SAFE_Z]), CLOSED
        # Steer the block (not the TCP) over the goal: the grasp may hold it off-centre.
        offset = tcp - block
        over = np.array([goal_xy[0] + offset[0], goal_xy[1] + offset[1], SAFE_Z])
        err = np.hypot(*(block[:2] - goal_xy))
        if ep.phase == "carry":
            if err < XY_TOL * 0.6 and abs(tcp[2] - SAFE_Z) < 0.02:
                ep.goto("lower")
            return over, CLOSED
        release_z = surface + RELEASE_GAP + scene.BLOCK_HALF + offset[2]
        if ep.phase == "lower":
            if err > 0.015:
                ep.goto("carry")
            elif abs(tcp[2] - release_z) < Z_TOL * 0.6 and err < XY_TOL:
                ep.goto("release")
            return np.array([over[0], over[1], release_z]), CLOSED
        if ep.phase == "release":
            if ep.count >= 3:
                ep.goto("retreat")
            return p["tcp_target"].copy(), OPEN
        # retreat; retry if the block did not end up on the goal
        t = p["tcp_target"]
        if ep.count > 4 and np.hypot(*(block[:2] - goal_xy)) > 0.03:
            ep.goto("reach")
        return np.array([t[0], t[1], SAFE_Z]), OPEN

    # --- push ----------------------------------------------------------------------------------
    def _push(self, ep: _Episode, p: dict) -> tuple[np.ndarray, float]:
        sign = -1.0 if self.target == "left" else 1.0
        block, start, tcp = p["blocks"][self.obj], p["block_start"][self.obj], p["tcp"]
        behind = np.array([block[0] - sign * PUSH_BEHIND, block[1] + ep.jitter[1] * 0.3, PUSH_Z])
        moved = (block[0] - start[0]) * sign
        if ep.phase == "reach":
            wp = self._rise_first(p, behind[:2])
            if np.hypot(*(tcp[:2] - behind[:2])) < XY_TOL:
                ep.goto("descend")
            return wp, CLOSED
        if ep.phase == "descend":
            if abs(tcp[2] - PUSH_Z) < Z_TOL:
                ep.goto("push")
            return behind, CLOSED
        if ep.phase == "push":
            end_x = start[0] + sign * (PUSH_TRAVEL + ep.jitter[0] * 0.3) - sign * PUSH_CONTACT
            wp = np.array([end_x, block[1], PUSH_Z])
            if moved >= PUSH_TRAVEL - 0.004 or abs(tcp[0] - end_x) < 0.003:
                ep.goto("back")
            elif abs(tcp[1] - block[1]) > 0.015 or (block[0] - tcp[0]) * sign < 0.0:
                ep.goto("reach")  # lost the block: go around again
            return wp, CLOSED
        t = p["tcp_target"]
        if ep.phase == "back":
            if ep.count >= 1:
                ep.goto("retreat")
            return np.array([t[0] - sign * 0.02, t[1], PUSH_Z]), CLOSED
        return np.array([t[0], t[1], SAFE_Z]), CLOSED
