"""The native apt-bench demonstration format: its files, the `Demos` object every reader returns, and
the native reader (`load_native`) and writer (`write_native`).

Training opens demonstrations through `apt.demos.formats.load_demos`, which reads this format here
and LIBERO HDF5 / LeRobot datasets with their own readers (apt/demos/libero_hdf5.py,
apt/demos/lerobot.py); all of them return a `Demos`.

On-disk format (a directory, format "apt-bench-demos" version 1)::

    meta.json            suite, suite_version, image_size, cameras, state_dim, action_dim,
                         action_spec, episodes, frames, per-task counts (kept / failed / errors),
                         instruction_set (split, version, sha256 of the train.yaml used), seed,
                         seed_rule, data_hash
    steps.parquet        one row per step, in episode order then frame order:
                           episode_index  int32    0..episodes-1, contiguous
                           frame_index    int32    0..len-1 within the episode
                           task_id        string
                           instruction_id string   the train.yaml entry the episode was labelled with
                           instruction    string   the exact string the env (and the label) had
                           seed           int64    the episode's layout seed (Env.reset(seed=...))
                           state          fixed_size_list<float32>[state_dim]   obs state at step i
                           action         fixed_size_list<float32>[action_dim]  action taken at step i
                           reward         float32  1.0 on the step that reached success, else 0.0
                           success        bool     info["success"] after the action of step i
    images_<camera>.npy  uint8 [frames, H, W, 3], row i = the observation image of step i

Images are plain .npy files so training memory-maps them (`np.load(mmap_mode="r")`): no decoding,
no copy, shared page cache across data-loader workers. Row i of every array is step i of
steps.parquet; the observation after an episode's last action is not stored.

`data_hash` is a sha256 over the table's columns and the image arrays in row order, so the same
suite version, seed and settings give the same hash whatever the number of worker processes.

Non-obvious behaviour:
- Only successful expert episodes are kept (apt/demos/generate.py); failures are counted per task
  in meta.json.
- Generation writes into `<out>.partial/` (holding PARTIAL_MARKER) and renames it to `<out>` only
  when complete, so a directory with a meta.json is always a whole dataset.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from apt.demos.episodes import DemoEpisode, episode_file
from benchmarks.base import BenchError, Suite

FORMAT = "apt-bench-demos"
FORMAT_VERSION = 1
META_FILE = "meta.json"
STEPS_FILE = "steps.parquet"
PARTIAL_MARKER = ".apt-bench-partial"  # in `<out>.partial/` while a generation writes it


def image_file(camera: str) -> str:
    return f"images_{camera}.npy"


# --------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True, eq=False)
class Demos:
    """A demonstration dataset on disk, with memory-mapped images.

    Row i of `states`, `actions`, `instructions`, `task_ids` and of every `images[camera]` is step
    i; episode e is rows `episode_starts[e]:episode_starts[e + 1]`.
    """

    path: Path
    meta: dict[str, Any]
    states: np.ndarray  # float32 [N, state_dim]
    actions: np.ndarray  # float32 [N, action_dim]
    episode_index: np.ndarray  # int32 [N]
    frame_index: np.ndarray  # int32 [N]
    task_ids: np.ndarray  # object (str) [N]
    instruction_ids: np.ndarray  # object (str) [N]
    instructions: np.ndarray  # object (str) [N], the exact label of each step
    seeds: np.ndarray  # int64 [N], the episode's layout seed
    rewards: np.ndarray  # float32 [N]
    success: np.ndarray  # bool [N]
    images: dict[str, np.ndarray]  # camera -> uint8 [N, H, W, 3], read-only memmap
    episode_starts: np.ndarray  # int64 [E + 1]

    def __len__(self) -> int:
        return int(self.states.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.episode_starts.shape[0] - 1)

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.images)

    def episode(self, e: int) -> slice:
        """Row range of episode e."""
        if not 0 <= e < self.num_episodes:
            raise IndexError(f"episode {e} out of range 0..{self.num_episodes - 1}")
        return slice(int(self.episode_starts[e]), int(self.episode_starts[e + 1]))

    def episodes(self) -> Iterator[slice]:
        for e in range(self.num_episodes):
            yield self.episode(e)

    def compute_data_hash(self) -> str:
        """sha256 over every column and image array in row order (what meta.json records)."""
        h = hashlib.sha256()
        for name, arr in (("episode_index", self.episode_index), ("frame_index", self.frame_index),
                          ("seed", self.seeds), ("state", self.states), ("action", self.actions),
                          ("reward", self.rewards), ("success", self.success)):
            a = np.ascontiguousarray(arr)
            h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
            h.update(a.tobytes())
        for name, arr in (("task_id", self.task_ids), ("instruction_id", self.instruction_ids),
                          ("instruction", self.instructions)):
            h.update(f"{name}:".encode())
            h.update("\x1e".join(map(str, arr)).encode("utf-8"))
        for cam in sorted(self.images):
            img = self.images[cam]
            h.update(f"images_{cam}:{img.shape}".encode())
            for i in range(0, img.shape[0], 1024):  # stream: the arrays may not fit in memory
                h.update(np.ascontiguousarray(img[i:i + 1024]).tobytes())
        return h.hexdigest()


def _list_column(table: Any, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    width = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)


def _read(path: Path, meta: dict[str, Any] | None) -> Demos:
    import pyarrow.parquet as pq

    table = pq.read_table(path / STEPS_FILE)
    n = table.num_rows
    cams = meta["cameras"] if meta is not None else sorted(
        p.name[len("images_"):-len(".npy")] for p in path.glob("images_*.npy"))
    images = {}
    for c in cams:
        f = path / image_file(c)
        if not f.is_file():
            raise BenchError(f"{path}: missing {f.name} (camera {c!r} is listed in {META_FILE}); "
                             "the dataset is incomplete: regenerate it with `apt-bench demos`")
        images[c] = np.load(f, mmap_mode="r")
        if images[c].dtype != np.uint8 or images[c].ndim != 4 or images[c].shape[0] != n:
            raise BenchError(f"{f}: expected uint8 [{n}, H, W, 3], got {images[c].dtype} "
                             f"{list(images[c].shape)}; regenerate the dataset with `apt-bench demos`")
    episode_index = table.column("episode_index").to_numpy()
    steps = np.diff(episode_index)
    changes = np.flatnonzero(steps) + 1
    starts = np.concatenate([[0], changes, [n]]).astype(np.int64) if n else np.zeros(1, np.int64)
    if n and (episode_index[0] != 0 or np.any((steps != 0) & (steps != 1))):
        raise BenchError(f"{path / STEPS_FILE}: episode_index must run 0, 1, 2, ... in row order; "
                         "the file was not written by `apt-bench demos`")

    def strings(name: str) -> np.ndarray:
        return np.asarray(table.column(name).to_pylist(), dtype=object)

    return Demos(
        path=path, meta=meta or {}, states=_list_column(table, "state"),
        actions=_list_column(table, "action"), episode_index=episode_index.astype(np.int32),
        frame_index=table.column("frame_index").to_numpy().astype(np.int32),
        task_ids=strings("task_id"), instruction_ids=strings("instruction_id"),
        instructions=strings("instruction"), seeds=table.column("seed").to_numpy().astype(np.int64),
        rewards=table.column("reward").to_numpy().astype(np.float32),
        success=table.column("success").to_numpy(zero_copy_only=False).astype(bool),
        images=images, episode_starts=starts)


def load_native(path: str | Path, suite: Suite | None = None, suite_version: str | None = None, *,
                verify: bool = False) -> Demos:
    """Open an apt-bench demonstration directory (images memory-mapped, nothing decoded).

    `suite` / `suite_version`, when given, must match what the data was made with. `verify`
    recomputes `data_hash` (reads every image once).
    """
    path = Path(path)
    suite_name = suite.name if suite is not None else None
    make = f"`apt-bench demos --suite {suite_name or '<suite>'} --out {path}`"
    if not path.is_dir():
        raise BenchError(f"no demonstrations at {path}: directory not found; make them with {make}")
    if not (path / META_FILE).is_file():
        hint = " (an interrupted generation left it; run it again)" if (
            path / PARTIAL_MARKER).exists() else ""
        raise BenchError(f"{path} is not a demonstration directory: no {META_FILE}{hint}; make one "
                         f"with {make}")
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BenchError(f"{path / META_FILE}: not valid JSON ({err}); regenerate with {make}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BenchError(f"{path / META_FILE}: not an apt-bench demonstration dataset "
                         f"(format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise BenchError(f"{path}: demonstration format version {meta.get('format_version')}, this "
                         f"apt-bench reads version {FORMAT_VERSION}; regenerate with {make}")
    if suite_name is not None and meta.get("suite") != suite_name:
        raise BenchError(f"{path} holds demonstrations of suite {meta.get('suite')!r}, not {suite_name!r}; "
                         f"pass demonstrations made with {make}")
    if suite_version is not None and str(meta.get("suite_version")) != str(suite_version):
        raise BenchError(f"{path} was made with {meta.get('suite')} version "
                         f"{meta.get('suite_version')}, the installed suite is version "
                         f"{suite_version}; regenerate with {make}")
    if not (path / STEPS_FILE).is_file():
        raise BenchError(f"{path}: missing {STEPS_FILE}; the dataset is incomplete: regenerate it "
                         f"with {make}")
    demos = _read(path, meta)
    if len(demos) != meta.get("frames") or demos.num_episodes != meta.get("episodes"):
        raise BenchError(f"{path}: {STEPS_FILE} holds {len(demos)} frames in {demos.num_episodes} "
                         f"episodes, {META_FILE} says {meta.get('frames')} in {meta.get('episodes')}; "
                         f"regenerate with {make}")
    if verify and demos.compute_data_hash() != meta.get("data_hash"):
        raise BenchError(f"{path}: data does not match the data_hash in {META_FILE} (files changed "
                         f"after generation); regenerate with {make}")
    return demos


# --------------------------------------------------------------------------------------------
# Writing


def write_native(folder: Path, episodes: Sequence[DemoEpisode], cams: Sequence[str]) -> tuple[str, int]:
    """Concatenate the kept episodes (their `episode_file`s, in `episodes` order) into
    steps.parquet and images_<cam>.npy in `folder`; returns (data_hash, frames)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    lengths = []
    for job in episodes:
        with np.load(episode_file(folder, job.index)) as z:
            lengths.append(int(z["action"].shape[0]))
            shapes = {c: z[f"image_{c}"].shape[1:] for c in cams}
    frames = int(sum(lengths))
    images = {c: np.lib.format.open_memmap(folder / image_file(c), mode="w+", dtype=np.uint8,
                                           shape=(frames, *shapes[c])) for c in cams}
    cols: dict[str, list[Any]] = {k: [] for k in ("episode_index", "frame_index", "task_id",
                                                  "instruction_id", "instruction", "seed", "state",
                                                  "action", "reward", "success")}
    row = 0
    for ep, (job, n) in enumerate(zip(episodes, lengths)):
        with np.load(episode_file(folder, job.index)) as z:
            for c in cams:
                images[c][row:row + n] = z[f"image_{c}"]
            success = z["success"]
            cols["state"].append(z["state"].astype(np.float32))
            cols["action"].append(z["action"].astype(np.float32))
        cols["success"].append(success)
        reward = np.zeros(n, dtype=np.float32)
        reward[np.argmax(success)] = 1.0
        cols["reward"].append(reward)
        cols["episode_index"].append(np.full(n, ep, dtype=np.int32))
        cols["frame_index"].append(np.arange(n, dtype=np.int32))
        cols["seed"].append(np.full(n, job.seed, dtype=np.int64))
        for k in ("task_id", "instruction_id", "instruction"):
            cols[k] += [getattr(job, k)] * n
        row += n
    for arr in images.values():
        arr.flush()
    del images
    state = np.concatenate(cols["state"])
    action = np.concatenate(cols["action"])
    table = pa.table({
        "episode_index": np.concatenate(cols["episode_index"]),
        "frame_index": np.concatenate(cols["frame_index"]),
        "task_id": pa.array(cols["task_id"], pa.string()),
        "instruction_id": pa.array(cols["instruction_id"], pa.string()),
        "instruction": pa.array(cols["instruction"], pa.string()),
        "seed": np.concatenate(cols["seed"]),
        "state": pa.FixedSizeListArray.from_arrays(pa.array(state.reshape(-1)), state.shape[1]),
        "action": pa.FixedSizeListArray.from_arrays(pa.array(action.reshape(-1)), action.shape[1]),
        "reward": np.concatenate(cols["reward"]),
        "success": np.concatenate(cols["success"]),
    })
    pq.write_table(table, folder / STEPS_FILE)
    demos = _read(folder, meta=None)
    return demos.compute_data_hash(), frames
