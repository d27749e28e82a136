"""Question / answer pairs about a tabletop scene, from an observation's privileged state.

The discrete recipes co-train their VLM on them (apt/training/vl_data.py, through the suite's
`benchmarks.base.SceneLanguage` hook): the same next-token decoder that emits action tokens answers
short questions about rendered scenes, which keeps the VLM's grounding alive.

Question templates (tabletop; every answer is a few words from a closed vocabulary):
  * "which blocks are in order from left to right?"      -> "green red yellow blue"
  * "which receptacles are in order from left to right?" -> "bowl box plate"
  * "where is the <colour> block?"                       -> "left front" (x: left/center/right; y: front/back)
  * "which block is nearest to the <receptacle>?"        -> "<colour>"
  * "is the <colour> block left or right of the <receptacle>?" -> "left" / "right"
Left/right are as seen from the front camera (-x is left), front is the camera side (-y).
These name the same attributes the instructions do (colours, receptacles, sides), which is the
grounding co-training is meant to keep alive in the VLM.

With a position grid (`grid_m` > 0, `apt-bench train --vl-grid CM`) every object also gets
  * "where exactly is the <colour> block?" / "... the <receptacle>?" -> "7 3"
(its x and y cell on a grid of `grid_m` metres over the table, counted from the left / front
edge), a pointing question in words, as PaliGemma-style VLMs answer with location tokens. The
coarse questions above only name a side; what a token policy gets wrong is where, to a few cm.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from benchmarks.tabletop.scene import AREA_X, AREA_Y

_X_BANDS = (-0.09, 0.09)  # |x| beyond this is left / right, else center (metres, table frame)
_Y_SPLIT = 0.01  # y below this is front (towards the front camera)
_TABLE_MIN = (AREA_X[0], AREA_Y[0])  # grid origin (metres): left / front edge of where object centres lie


def grid_cell(xy: np.ndarray, grid_m: float) -> str:
    """'ix iy': the cell of a table point on a `grid_m` grid from `_TABLE_MIN` (answer words)."""
    ix, iy = (int(max(0.0, np.floor((v - lo) / grid_m))) for v, lo in zip(xy[:2], _TABLE_MIN))
    return f"{ix} {iy}"


def scene_questions(privileged: Mapping[str, Any], grid_m: float = 0.0) -> list[tuple[str, str]]:
    """(question, answer) pairs that hold in a tabletop scene, from `obs["privileged"]`
    (`grid_m` > 0 adds the grid-cell position question of every block and receptacle)."""
    blocks = {c: np.asarray(p)[:2] for c, p in privileged["blocks"].items()}
    recs = {r: np.asarray(p)[:2] for r, p in privileged["receptacles"].items()}
    qa = [("which blocks are in order from left to right?", " ".join(sorted(blocks, key=lambda c: blocks[c][0]))),
          ("which receptacles are in order from left to right?", " ".join(sorted(recs, key=lambda r: recs[r][0])))]
    for c, (x, y) in blocks.items():
        side = "left" if x < _X_BANDS[0] else "right" if x > _X_BANDS[1] else "center"
        qa.append((f"where is the {c} block?", f"{side} {'front' if y < _Y_SPLIT else 'back'}"))
    for r, pr in recs.items():
        nearest = min(blocks, key=lambda c: float(np.linalg.norm(blocks[c] - pr)))
        qa.append((f"which block is nearest to the {r}?", nearest))
        for c, pc in blocks.items():
            qa.append((f"is the {c} block left or right of the {r}?", "left" if pc[0] < pr[0] else "right"))
    if grid_m > 0:
        qa += [(f"where exactly is the {c} block?", grid_cell(p, grid_m)) for c, p in blocks.items()]
        qa += [(f"where exactly is the {r}?", grid_cell(p, grid_m)) for r, p in recs.items()]
    return qa
