"""What the external-format readers share: assembling decoded arrays into a `Demos`
(`decoded_demos`), resizing frames, and matching a dataset's tasks to a suite's.

The LIBERO HDF5 and LeRobot readers (apt/demos/libero_hdf5.py, apt/demos/lerobot.py) decode their
data into memory once; apt-bench's own directories stay memory-mapped (apt/demos/native.py).

Common to both readers: seeds are -1 (no layout seed), instruction_ids name the source of the
label, `meta` records the source, options and a data_hash over the decoded arrays, and
`Demos.path` is a directory (the dataset root, or the folder of a single .hdf5 file) because
feature caches are written there, keyed by the data_hash. No suite version is recorded: external
data carries none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from apt.demos.native import Demos
from benchmarks.base import BenchError, Suite, TaskSpec


def resize_frames(frames: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 [T, H, W, 3] -> [T, size, size, 3], bilinear (PIL, as the LIBERO env resizes)."""
    if size is None or (frames.shape[1] == size and frames.shape[2] == size):
        return frames
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(f)).resize(
        (size, size), resample=Image.BILINEAR)) for f in frames])


def check_image_size(image_size: int | None) -> None:
    """A reader's `image_size` option: a positive int or None (as stored)."""
    if image_size is not None and (not isinstance(image_size, (int, np.integer)) or image_size < 1):
        raise BenchError(f"image_size must be a positive number of pixels or None, got {image_size!r}")


def suite_name(suite: Suite | None) -> str | None:
    """The suite's name, None without a suite (what the readers record in meta["suite"])."""
    if suite is None:
        return None
    return str(getattr(suite, "name", "")) or None


def suite_tasks(suite: Suite | None) -> list[TaskSpec] | None:
    """The suite's tasks, or None when they cannot be listed here (e.g. LIBERO not installed)."""
    if suite is None:
        return None
    try:
        return list(suite.tasks())
    except BenchError:
        return None


def norm_text(s: str) -> str:
    """Text compared loosely: lower case, underscores as spaces, single spaces."""
    return " ".join(str(s).lower().replace("_", " ").split())


def decoded_demos(root: Path, meta: dict[str, Any], *, states: np.ndarray, actions: np.ndarray,
                  episode_lengths: list[int], task_ids: list[str], instruction_ids: list[str],
                  instructions: list[str], success: np.ndarray, rewards: np.ndarray,
                  images: dict[str, np.ndarray], compute_hash: bool) -> Demos:
    """Assemble a Demos from per-episode labels and row arrays; fill meta's counts and data_hash."""
    lengths = np.asarray(episode_lengths, dtype=np.int64)
    n = int(lengths.sum())
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    episode_index = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)
    frame_index = (np.arange(n) - np.repeat(starts[:-1], lengths)).astype(np.int32)

    def per_row(values: list[str]) -> np.ndarray:
        return np.asarray([v for v, k in zip(values, lengths) for _ in range(int(k))], dtype=object)

    for arr in images.values():
        arr.setflags(write=False)  # like the native memmaps: training never writes frames
    counts: dict[str, int] = {}
    for tid in task_ids:
        counts[tid] = counts.get(tid, 0) + 1
    first = next(iter(images.values()), None)
    meta.update(cameras=list(images), state_dim=int(states.shape[1]), action_dim=int(actions.shape[1]),
                episodes=int(len(lengths)), frames=n, tasks={t: {"kept": k} for t, k in counts.items()})
    if first is not None:
        meta["image_size"] = int(first.shape[1])
    demos = Demos(path=root, meta=meta, states=states.astype(np.float32, copy=False),
                  actions=actions.astype(np.float32, copy=False), episode_index=episode_index,
                  frame_index=frame_index, task_ids=per_row(task_ids),
                  instruction_ids=per_row(instruction_ids), instructions=per_row(instructions),
                  seeds=np.full(n, -1, dtype=np.int64), rewards=rewards.astype(np.float32, copy=False),
                  success=success.astype(bool, copy=False), images=images, episode_starts=starts)
    meta["data_hash"] = demos.compute_data_hash() if compute_hash else ""
    return demos
