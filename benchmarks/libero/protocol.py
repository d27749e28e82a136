"""Named LIBERO evaluation protocols: the settings that move LIBERO scores by several points.

Every run records the protocol it used (`LiberoSuite.protocol()`), and the preset name is part of
the suite version, so episodes evaluated under different protocols are never mixed in the store.

Sources (reference/eval-conventions.md):
- `openpi`: Physical Intelligence's LIBERO client (examples/libero/main.py): 256x256 renders rotated
  180 degrees then resized (bilinear, aspect-preserving pad; square, so no pad) to 224; 10 no-op
  settle steps with the gripper open; replan every 5 actions; spatial 220 steps.
- `lerobot`: LeRobot's LiberoEnv + LiberoProcessorStep: 256x256 renders rotated 180 degrees, no
  resize; 10 settle steps; 10 actions per policy call (n_action_steps); spatial 280 steps.
Both: episode i of a task starts from the task's fixed init state i (50 per task), agentview and
wrist cameras, state = eef position + eef axis-angle + 2 gripper finger positions (8-D), 7-D delta
actions.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass

from benchmarks.base import BenchError

# The five LIBERO suite families; LIBERO-PRO variants (libero_goal_lan, ...) belong to their base.
FAMILIES: tuple[str, ...] = ("libero_spatial", "libero_object", "libero_goal", "libero_10", "libero_90")


def family_of(benchmark: str) -> str | None:
    """'libero_goal_lan' -> 'libero_goal'; None for suites outside the five families."""
    for fam in sorted(FAMILIES, key=len, reverse=True):
        if benchmark == fam or benchmark.startswith(fam + "_"):
            return fam
    return None


@dataclass(frozen=True)
class LiberoProtocol:
    """One named set of LIBERO evaluation settings (one line per field says what it is)."""

    name: str
    # Episode step budget per suite family, counted after the settle steps.
    max_steps: tuple[tuple[str, int], ...]
    # No-op steps ([0]*6 + [-1], gripper open) after setting the init state: objects settle.
    settle_steps: int = 10
    # Side of the square images LIBERO renders (before rotation and resizing).
    render_size: int = 256
    # Side of the images the policy receives (resized from render_size when different).
    image_size: int = 224
    # Actions executed from each policy call before asking again (recorded; the engine replans).
    replan_steps: int = 5
    # Cameras rendered by default ("agentview" = third person, "wrist" = robot0_eye_in_hand).
    cameras: tuple[str, ...] = ("agentview", "wrist")
    # Rotate images by 180 degrees (LIBERO renders upside down relative to the demo datasets).
    rotate_180: bool = True
    # Budget for suites outside the five families (LIBERO-PRO oddities, libero_mine...).
    default_max_steps: int = 520

    def max_steps_for(self, benchmark: str) -> int:
        fam = family_of(benchmark)
        return dict(self.max_steps).get(fam, self.default_max_steps) if fam else self.default_max_steps

    def as_dict(self) -> dict:
        d = asdict(self)
        d["max_steps"] = dict(self.max_steps)
        d["cameras"] = list(self.cameras)
        return d


PRESETS: dict[str, LiberoProtocol] = {
    p.name: p for p in (
        LiberoProtocol(
            name="openpi",
            max_steps=(("libero_spatial", 220), ("libero_object", 280), ("libero_goal", 300),
                       ("libero_10", 520), ("libero_90", 400)),
            settle_steps=10, render_size=256, image_size=224, replan_steps=5),
        LiberoProtocol(
            name="lerobot",
            max_steps=(("libero_spatial", 280), ("libero_object", 280), ("libero_goal", 300),
                       ("libero_10", 520), ("libero_90", 400)),
            settle_steps=10, render_size=256, image_size=256, replan_steps=10),
    )
}


def get_protocol(name: str | LiberoProtocol) -> LiberoProtocol:
    """A preset by name (a typo gets a 'did you mean'), or a LiberoProtocol passed through."""
    if isinstance(name, LiberoProtocol):
        return name
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BenchError(f"unknown LIBERO protocol preset {name!r}{hint}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]
