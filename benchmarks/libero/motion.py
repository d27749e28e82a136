"""Motion primitives of the scripted LIBERO expert: one episode's gripper moves (go to a moving
target, hold, settle the orientation, lower until contact, drag), as actions for robosuite's OSC
delta controller, and the rotation math they run on.

Why apart from benchmarks/libero/expert.py: these know nothing of tasks or of the scene's objects
beyond the end effector's pose in the privileged state; the expert's skills (pick and place, open
a drawer, push, turn a knob) are sequences of them.

Every action is float32[7]: a translation toward the target (POS_GAIN action units per metre of
error, capped at 1 with its direction kept), a rotation correction toward the reference
orientation `ref_rot` (ROT_GAIN units per radian / 0.5), and the gripper command (OPEN / CLOSED).
Noise > 0 adds seeded Gaussian noise of that std to the translation.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np

OPEN, CLOSED = -1.0, 1.0
POS_GAIN = 10.0  # action units per metre of position error (1 unit = a 5 cm target offset)
GO_FLOOR = 0.3  # smallest translation action while moving to a waypoint (see Motion.go)
ROT_GAIN = 1.0  # action units per radian of orientation error (1 unit = 0.5 rad)


def quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = (float(v) for v in q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def quat_xyzw_to_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = (float(v) for v in q)
    return quat_wxyz_to_matrix(np.array([w, x, y, z]))


def rotation_vector(r: np.ndarray) -> np.ndarray:
    """Axis-angle vector of a rotation matrix (angle in [0, pi])."""
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    angle = float(np.arccos(cos))
    if angle < 1e-6:
        return np.zeros(3)
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    n = np.linalg.norm(axis)
    if n < 1e-9:  # angle ~ pi: any consistent axis will do for a correction
        axis = np.sqrt(np.clip((np.diag(r) + 1.0) / 2.0, 0.0, None))
        n = np.linalg.norm(axis)
    return axis / n * angle


def pitch_towards(direction: np.ndarray) -> np.ndarray:
    """World rotation turning a downward-pointing gripper to point along horizontal `direction`."""
    axis = np.cross([0.0, 0.0, -1.0], direction)
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + k + k @ k  # Rodrigues' formula at 90 degrees


def rotation_about(axis: np.ndarray, angle: float) -> np.ndarray:
    """World rotation by `angle` radians about `axis` (Rodrigues)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def yaw_rotation(angle: float) -> np.ndarray:
    """World rotation by `angle` radians about +z."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class Motion:
    """One episode's script: a generator fed the latest privileged observation, yielding actions.

    A subclass writes `script()` from the primitives below; it is called once, at the end of
    `__init__`, and (a generator) starts running at the first `step`, after the subclass's own
    `__init__`. The gripper's orientation is held at `ref_rot` (at first its start orientation);
    a script turns the gripper by setting `ref_rot`.
    """

    def __init__(self, first: dict[str, Any], rng: np.random.Generator, noise: float):
        self.p = first
        self.rng = rng
        self.noise = noise
        self.ref_rot = quat_xyzw_to_matrix(first["robot0_eef_quat"])
        self.grip = OPEN
        self.done = False
        self._script = self.script()

    def script(self) -> Generator[np.ndarray, None, None]:
        raise NotImplementedError

    def step(self, privileged: dict[str, Any]) -> np.ndarray:
        """The next action, given the latest privileged state; once the script has ended, `done`
        is set and the gripper holds still."""
        self.p = privileged
        try:
            return next(self._script)
        except StopIteration:
            self.done = True
            return self._action(self.eef, self.grip)

    @property
    def eef(self) -> np.ndarray:
        return np.asarray(self.p["robot0_eef_pos"], dtype=float)

    def obj(self, name: str) -> np.ndarray:
        return np.asarray(self.p[f"{name}_pos"], dtype=float)

    def _action(self, target: np.ndarray, grip: float, gain: float = POS_GAIN,
                speed: float = 1.0, floor: float = 0.0) -> np.ndarray:
        d = gain * (np.asarray(target) - self.eef)
        size = max(float(np.max(np.abs(d))), 1e-9)
        d = d * min(1.0, speed / size, max(1.0, floor / size))  # keep the direction
        if self.noise > 0:
            d = np.clip(d + self.rng.normal(0.0, self.noise, 3), -1.0, 1.0)
        rot = self.ref_rot @ quat_xyzw_to_matrix(self.p["robot0_eef_quat"]).T
        r = np.clip(ROT_GAIN * rotation_vector(rot) / 0.5, -1.0, 1.0)
        return np.array([*d, *r, grip], dtype=np.float32)

    def go(self, target_fn: Callable[[], Any], grip: float, tol: float = 0.006, max_steps: int = 80,
           gain: float = POS_GAIN, speed: float = 1.0) -> Generator[np.ndarray, None, bool]:
        """Move toward target_fn() (re-evaluated every step); True once within tol. The action
        never shrinks below GO_FLOOR (or `speed`) on the way: a proportional step alone crawls
        over the last centimetres."""
        self.grip = grip
        for _ in range(max_steps):
            target = np.asarray(target_fn(), dtype=float)
            if np.linalg.norm(target - self.eef) < tol:
                return True
            yield self._action(target, grip, gain, speed, floor=min(GO_FLOOR, speed))
        return False

    def drag(self, target_fn: Callable[[], np.ndarray], grip: float, until: Callable[[], bool],
             max_steps: int, gain: float = POS_GAIN) -> Generator[np.ndarray, None, None]:
        """Pull something held (a drawer's handle, a bowl's wall) toward target_fn(), a point
        running ahead of it, until `until()` holds; no floor on the action (unlike `go`)."""
        self.grip = grip
        for _ in range(max_steps):
            if until():
                return
            yield self._action(target_fn(), grip, gain=gain)

    def hold(self, grip: float, n: int) -> Generator[np.ndarray, None, None]:
        self.grip = grip
        anchor = self.eef.copy()
        for _ in range(n):
            yield self._action(anchor, grip)

    def rotation_error(self) -> float:
        rot = self.ref_rot @ quat_xyzw_to_matrix(self.p["robot0_eef_quat"]).T
        return float(np.linalg.norm(rotation_vector(rot)))

    def settle_rotation(self, grip: float, tol: float = 0.08, max_steps: int = 30
                        ) -> Generator[np.ndarray, None, None]:
        """Hold position until the orientation has reached its reference."""
        anchor = self.eef.copy()
        for _ in range(max_steps):
            if self.rotation_error() < tol:
                return
            yield self._action(anchor, grip)

    def lower_until(self, target: np.ndarray, grip: float, max_steps: int = 60,
                    stall: float = 0.0008, gain: float = 6.0) -> Generator[np.ndarray, None, None]:
        """Descend toward target; stop there, or when the eef stops descending (contact)."""
        self.grip = grip
        still = 0
        for _ in range(max_steps):
            z = self.eef[2]
            if np.linalg.norm(target - self.eef) < 0.004:
                return
            yield self._action(target, grip, gain=gain)
            still = still + 1 if z - self.eef[2] < stall else 0
            if still >= 4:
                return
