"""TabletopSuite: the embedded MuJoCo suite behind `benchmarks.base.Suite`.

Importing this module does not import mujoco. Environments are built inside the process that calls `make_env` (the model is compiled there and
the renderer is made on the first rendered observation), so nothing GL- or MuJoCo-side crosses a
fork. `cameras=()` gives an environment that never renders (experts, checks, fast evaluation).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from benchmarks.base import BenchError, ObservationSpec, TaskSpec
from benchmarks.tabletop import captions, questions
from benchmarks.tabletop.env import CAMERAS, STATE_DIM, TabletopEnv
from benchmarks.tabletop.expert import ACTION_SPEC, ScriptedExpert
from benchmarks.tabletop.tasks import all_tasks, parse_task_id


class TabletopSuite:
    """4 blocks x 3 receptacles x 2 sides; skills place / stack / push (32 tasks).

    Also a `benchmarks.base.SceneLanguage`: captions and questions about its scenes."""

    name = "tabletop"
    version = "1"
    action_spec = ACTION_SPEC
    observation_spec = ObservationSpec(cameras=CAMERAS, state_dim=STATE_DIM, image_size=96)

    def tasks(self) -> list[TaskSpec]:
        return all_tasks()

    def make_env(self, task_id: str, image_size: int = 96, cameras: tuple[str, ...] | None = None):
        """A TabletopEnv; cameras None -> ("front",); () -> no rendering at all."""
        parse_task_id(task_id)  # unknown id -> BenchError before anything is built
        if cameras is None:
            cameras = ("front",)
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise BenchError(f"unknown tabletop camera(s) {unknown}; cameras are {list(CAMERAS)}")
        return TabletopEnv(task_id, image_size=image_size, cameras=tuple(cameras))

    def expert(self, task_id: str, noise: float = 0.0, seed: int = 0) -> ScriptedExpert:
        """The scripted oracle for `task_id` (noise > 0: seeded, diverse demonstrations)."""
        return ScriptedExpert(task_id, noise=noise, seed=seed)

    def caption_pairs(self, privileged: Mapping[str, Any], n: int, rng: np.random.Generator,
                      kinds: Sequence[str] | None = None) -> list[tuple[str, str, str, str]]:
        """SceneLanguage: captions.py's hard-negative pairs, as (true, false, kind, edit) strings."""
        pairs = captions.caption_pairs(privileged, n, rng, **({"kinds": kinds} if kinds else {}))
        return [(p.true.text(), p.false.text(), p.kind, p.edit) for p in pairs]

    def scene_questions(self, privileged: Mapping[str, Any], grid_m: float = 0.0) -> list[tuple[str, str]]:
        """SceneLanguage: questions.py's (question, answer) pairs."""
        return questions.scene_questions(privileged, grid_m)
