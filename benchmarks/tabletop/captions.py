"""True and false scene statements from a tabletop observation's privileged state.

They pretrain the tiny VLM by image-text matching with hard negatives: every false statement is a
minimal edit of a true one in the same scene (one slot changed), so telling them apart needs the
colour, object and relation words grounded in the image, not sentence statistics.

Statement kinds (training vocabulary only: the, red/green/blue/yellow, block, bowl/plate/box,
left/right, in/on, plus "is", "of", "gripper", "holding"; never the words the `unseen` split keeps
back, such as crimson, cube, basin or crate):
  position "the red block is on the left", "the box is on the right" (which half of the table)
  side     "the red block is left of the bowl", "the bowl is right of the green block"
  in       "the yellow block is in the box", "the blue block is on the plate" (the receptacle's
           preposition, as in the training instructions)
  on       "the red block is on the green block"
  holding  "the gripper is holding the blue block"

Truth is three-valued: a statement is true, false, or unclear (left out). "in" / "on" are true under
the same geometry as the env's success predicates (env.py: `_in_footprint(on_floor=True)`, the
stack test; a held block is in / on nothing) and false only when the block's footprint is clearly
away. "Left" is -x as seen from the front camera (as for the push tasks), and a side statement is
decided only when both the table-frame |dx| exceeds SIDE_MARGIN and the front camera's image
agrees with a clear margin (the perspective can flip the image order of two objects at different
depths). "holding" uses the env's grasp test (contact with both fingers) with the fingers apart around
the block (closed fingers pushing a block touch it with both tips too); it is false only when the
block is not held and away from the fingers.

Edits (the `edit` names): relation (left <-> right), subject / object (another entity of the same
type: colour or receptacle), roles (for "on": the upper and lower block swapped). Statements about
the compositional split's held-out place / stack combinations (tasks.HELD_OUT) are left out by
default, true or false, so pretraining never names them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Collection, Mapping

import numpy as np

from benchmarks.tabletop import scene
from benchmarks.tabletop.tasks import _PREPOSITION, HELD_OUT, OBJECTS, RECEPTACLES

KINDS: tuple[str, ...] = ("position", "side", "in", "on", "holding")
POSITION_MARGIN = 0.06  # |x| (m) from the table's centre line for "on the left / right"
SIDE_MARGIN = 0.08  # metres of |dx| (table frame) for left / right to be decided (~9 px at 96 px)
IMAGE_MARGIN = 0.06  # and of normalised image x (x / depth; ~5 px at 96 px) in the front camera
HOLD_AWAY = 0.04  # a block farther than this from the TCP and not held is clearly not held
GRASP_GAP = scene.BLOCK_HALF  # finger gap (m) above which touching both fingers is a grasp (a 4 cm block)
VOCABULARY: frozenset[str] = frozenset(
    "the is of block gripper holding left right in on".split() + list(OBJECTS) + list(RECEPTACLES))


@dataclass(frozen=True)
class Statement:
    """One scene statement. Entities are colours (blocks) or receptacle names.

    kind "position": subject is on the `relation` ("left" / "right") side of the table (obj None);
    "side": subject `relation` ("left" / "right") of obj; "in": block subject in receptacle obj;
    "on": block subject on block obj; "holding": the gripper holds block subject (obj None).
    """

    kind: str
    subject: str
    relation: str
    obj: str | None = None

    def text(self) -> str:
        if self.kind == "position":
            return f"{_name(self.subject)} is on the {self.relation}"
        if self.kind == "side":
            return f"{_name(self.subject)} is {self.relation} of {_name(self.obj)}"
        if self.kind == "in":
            return f"the {self.subject} block is {_PREPOSITION[self.obj]} the {self.obj}"
        if self.kind == "on":
            return f"the {self.subject} block is on the {self.obj} block"
        if self.kind == "holding":
            return f"the gripper is holding the {self.subject} block"
        raise ValueError(f"unknown statement kind {self.kind!r}")


@dataclass(frozen=True)
class CaptionPair:
    """A true statement of a scene and a false one made from it by one edit."""

    true: Statement
    false: Statement
    edit: str  # "relation" | "subject" | "object" | "roles"

    @property
    def kind(self) -> str:
        return self.true.kind


def _name(entity: str | None) -> str:
    assert entity is not None
    return f"the {entity} block" if entity in OBJECTS else f"the {entity}"


# --------------------------------------------------------------------------------------- geometry
@lru_cache(maxsize=1)
def _front_camera() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Front camera position, image x axis and viewing direction, read from the scene's MJCF."""
    m = re.search(r'<camera name="front" pos="([^"]+)" xyaxes="([^"]+)"', scene.scene_xml())
    assert m is not None, "front camera not found in the tabletop MJCF"
    pos = np.array([float(v) for v in m.group(1).split()])
    ax = np.array([float(v) for v in m.group(2).split()])
    x, y = ax[:3] / np.linalg.norm(ax[:3]), ax[3:] / np.linalg.norm(ax[3:])
    return pos, x, -np.cross(x, y)  # MuJoCo cameras look along -z, z = x cross y


def image_x(p: np.ndarray) -> float:
    """Normalised horizontal image coordinate of a world point in the front camera (left < 0)."""
    pos, xaxis, forward = _front_camera()
    d = np.asarray(p, dtype=float) - pos
    return float(d @ xaxis / max(float(d @ forward), 1e-6))


def _in_footprint(pos: np.ndarray, centre: np.ndarray, rec: str, grow: float = 0.0) -> bool:
    """As env.TabletopEnv._in_footprint (xy part): block centre inside the inner footprint (+ grow)."""
    kind, size, _ = scene.FOOTPRINT[rec]
    dx, dy = pos[0] - centre[0], pos[1] - centre[1]
    size = size + grow
    return bool(np.hypot(dx, dy) < size) if kind == "disk" else bool(abs(dx) < size and abs(dy) < size)


def _on_floor(pos: np.ndarray, rec: str) -> bool:
    """As env.TabletopEnv._in_footprint(on_floor=True)'s height test: resting on the receptacle floor."""
    rest = scene.FOOTPRINT[rec][2] + scene.BLOCK_HALF
    return bool(rest - 0.006 < pos[2] < rest + 0.01)


def _positions(priv: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {c: np.asarray(p, dtype=float) for c, p in priv["blocks"].items()}
    out.update({r: np.asarray(p, dtype=float) for r, p in priv["receptacles"].items()})
    return out


def _left_of(dx: float, du: float, margin: float) -> bool | None:
    """Left (True) / right (False) when the world x offset and the front image's x offset agree by a
    clear margin; None when either is too small to say."""
    if dx < -margin and du < -IMAGE_MARGIN:
        return True
    if dx > margin and du > IMAGE_MARGIN:
        return False
    return None


def evaluate(st: Statement, priv: Mapping[str, Any]) -> bool | None:
    """True / False / None (unclear) for a statement in the scene `priv` (an `obs["privileged"]`)."""
    pos = _positions(priv)
    held = {c: bool(h) for c, h in priv["held"].items()}
    if st.kind in ("position", "side"):
        a = pos[st.subject]
        if st.kind == "position":  # relative to the table centre
            dx, du, margin = a[0], image_x(a), POSITION_MARGIN
        else:  # relative to the other object
            b = pos[st.obj]
            dx, du, margin = a[0] - b[0], image_x(a) - image_x(b), SIDE_MARGIN
        left = _left_of(dx, du, margin)
        if left is None:
            return None
        return left if st.relation == "left" else not left
    if st.kind == "in":
        p, centre = pos[st.subject], pos[st.obj]
        if not held[st.subject] and _in_footprint(p, centre, st.obj) and _on_floor(p, st.obj):
            return True
        if not _in_footprint(p, centre, st.obj, grow=scene.BLOCK_RADIUS):  # no overlap at all
            return False
        return None
    if st.kind == "on":
        up, down = pos[st.subject], pos[st.obj]
        dxy, dz = float(np.hypot(*(up[:2] - down[:2]))), float(up[2] - down[2])
        h = scene.BLOCK_HALF
        if not held[st.subject] and dxy < h and 1.5 * h < dz < 2.5 * h:  # env's stack predicate
            return True
        if dxy > 2 * scene.BLOCK_RADIUS or dz < 0.5 * h:  # footprints apart, or not above it
            return False
        return None
    if st.kind == "holding":
        if held[st.subject]:  # both fingers touch it; a grasp only if the fingers are apart around it
            return True if float(priv["gap"]) > GRASP_GAP else None  # (closed fingers pushing: unclear)
        tcp = np.asarray(priv["tcp"], dtype=float)
        return False if float(np.linalg.norm(pos[st.subject] - tcp)) > HOLD_AWAY else None
    raise ValueError(f"unknown statement kind {st.kind!r}")


# ------------------------------------------------------------------------------- enumeration
def _excluded(st: Statement, exclude: Collection[tuple[str, str, str]]) -> bool:
    if st.kind == "in":
        return ("place", st.subject, st.obj) in exclude
    if st.kind == "on":
        return ("stack", st.subject, st.obj) in exclude
    return False


def all_statements(exclude: Collection[tuple[str, str, str]] = HELD_OUT) -> list[Statement]:
    """Every statement the templates can make (minus held-out place / stack combinations)."""
    entities = list(OBJECTS) + list(RECEPTACLES)
    out = [Statement("position", a, r) for a in entities for r in ("left", "right")]
    out += [Statement("side", a, r, b) for a in entities for b in entities if a != b for r in ("left", "right")]
    out += [Statement("in", c, "in", r) for c in OBJECTS for r in RECEPTACLES]
    out += [Statement("on", a, "on", b) for a in OBJECTS for b in OBJECTS if a != b]
    out += [Statement("holding", c, "holding") for c in OBJECTS]
    return [s for s in out if not _excluded(s, exclude)]


def edits(st: Statement) -> list[tuple[str, Statement]]:
    """One-slot edits of a statement: (edit name, edited statement); validity not checked."""
    out: list[tuple[str, Statement]] = []
    same_type = lambda e: OBJECTS if e in OBJECTS else RECEPTACLES  # noqa: E731
    if st.kind in ("position", "side"):
        out.append(("relation", replace(st, relation="right" if st.relation == "left" else "left")))
    for s in same_type(st.subject):
        if s not in (st.subject, st.obj):
            out.append(("subject", replace(st, subject=s)))
    if st.obj is not None:
        for o in same_type(st.obj):
            if o not in (st.subject, st.obj):
                out.append(("object", replace(st, obj=o)))
    if st.kind == "on":
        out.append(("roles", replace(st, subject=st.obj, obj=st.subject)))
    return out


def true_statements(priv: Mapping[str, Any], exclude: Collection[tuple[str, str, str]] = HELD_OUT) -> list[Statement]:
    """Statements that clearly hold in the scene."""
    return [s for s in all_statements(exclude) if evaluate(s, priv) is True]


def false_edits(st: Statement, priv: Mapping[str, Any],
                exclude: Collection[tuple[str, str, str]] = HELD_OUT) -> list[tuple[str, Statement]]:
    """One-edit variants of `st` that are clearly false in the scene."""
    return [(name, e) for name, e in edits(st) if not _excluded(e, exclude) and evaluate(e, priv) is False]


def caption_pairs(priv: Mapping[str, Any], n: int, rng: np.random.Generator,
                  exclude: Collection[tuple[str, str, str]] = HELD_OUT,
                  kinds: Collection[str] = KINDS) -> list[CaptionPair]:
    """Up to `n` (true, false) pairs for one scene, each false statement an edit of its true one.

    Every true in / on / holding statement is taken first (they are rare: only rollout frames have
    them), then position and side statements alternately, at random; the false partner is a random clearly-false edit, with
    the edit type drawn first so that relation swaps are not drowned by colour swaps. `kinds`
    restricts the statement kinds (e.g. a curriculum, or a quick test on "position" only).
    """
    trues = [s for s in true_statements(priv, exclude) if s.kind in kinds]
    rare = [s for s in trues if s.kind not in ("position", "side")]
    rng.shuffle(rare)
    lists = [[s for s in trues if s.kind == k] for k in ("position", "side")]
    lists = [[x[i] for i in rng.permutation(len(x))] for x in lists]
    if rng.random() < 0.5:
        lists.reverse()
    common = [s for pair in zip(*lists) for s in pair] + [s for x in lists for s in x[min(map(len, lists)):]]
    order = rare + common
    out: list[CaptionPair] = []
    for st in order:
        if len(out) >= n:
            break
        cands = false_edits(st, priv, exclude)
        if not cands:
            continue
        names = sorted({name for name, _ in cands})
        pick = names[int(rng.integers(len(names)))]
        options = [e for name, e in cands if name == pick]
        out.append(CaptionPair(st, options[int(rng.integers(len(options)))], pick))
    return out


def word_diff(a: str, b: str) -> int:
    """Positions at which two captions' words differ (inf when lengths differ)."""
    wa, wb = a.split(), b.split()
    return sum(x != y for x, y in zip(wa, wb)) if len(wa) == len(wb) else math.inf  # type: ignore[return-value]
