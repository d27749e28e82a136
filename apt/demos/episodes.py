"""One demonstration episode from plan to stored row: its identity (`DemoEpisode`), its layout seed,
the deterministic work list, and the per-episode file a worker records it into.

Generation (apt/demos/generate.py) plans the episodes and its workers record each kept one into
`episode_file(folder, index)`; the writers of every on-disk format (apt/demos/native.py,
apt/demos/libero_hdf5.py) read those files back in plan order. This module holds what they share,
so none of them imports another.

Demo layouts use seeds >= DEMO_SEED_BASE (1e9), derived from (seed, task, episode), so they never
coincide with evaluation seeds (0, 1, 2, ...): `seen` is evaluated on layouts training never saw.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from benchmarks.base import TaskSpec

DEMO_SEED_BASE = 1_000_000_000  # demo layout seeds live in [1e9, 2e9): disjoint from eval seeds
EPISODES_DIR = "episodes"  # per-episode .npz files inside a generation's partial directory


@dataclass(frozen=True)
class DemoEpisode:
    """One expert episode; `index` fixes its place in the dataset."""

    index: int
    task_id: str
    instruction_id: str
    instruction: str
    episode: int
    seed: int
    max_steps: int


def episode_seed(seed: int, task_id: str, episode: int) -> int:
    """Layout seed of demo episode `episode` of `task_id`: depends on nothing else."""
    digest = hashlib.sha256(f"apt-bench-demos\x1f{seed}\x1f{task_id}\x1f{episode}".encode()).digest()
    return DEMO_SEED_BASE + int.from_bytes(digest[:8], "big") % DEMO_SEED_BASE


def episode_file(folder: Path, index: int) -> Path:
    """Where the recorded arrays of episode `index` live while a dataset is being generated."""
    return folder / EPISODES_DIR / f"{index:07d}.npz"


def plan_episodes(tasks: Sequence[TaskSpec], train_entries: dict[str, list[Any]], episodes_per_task: int,
                  seed: int) -> list[DemoEpisode]:
    """The flat, deterministic work list: tasks in suite order, episodes in order; episode e of a
    task with k training instructions is labelled with instruction e mod k."""
    episodes: list[DemoEpisode] = []
    for t in tasks:
        entries = train_entries[t.task_id]
        for e in range(episodes_per_task):
            entry = entries[e % len(entries)]
            episodes.append(DemoEpisode(index=len(episodes), task_id=t.task_id, instruction_id=entry.id,
                                        instruction=entry.instruction, episode=e,
                                        seed=episode_seed(seed, t.task_id, e), max_steps=t.max_steps))
    return episodes
