"""LeRobot v2.x datasets: the reader (`load_lerobot`), decoded into a `Demos`.

LeRobot v2.x (codebase_version v2.0 / v2.1)::

    meta/info.json       codebase_version, fps, chunks_size, data_path, video_path, features
    meta/tasks.jsonl     {"task_index": k, "task": "..."} per line
    meta/episodes.jsonl  {"episode_index": e, "tasks": [...], "length": n} per line
    data/chunk-000/episode_000000.parquet   observation.state, action, episode_index, frame_index,
                         timestamp, task_index, and image columns ({"bytes": png, "path": ...})
    videos/chunk-000/<key>/episode_000000.mp4   for features of dtype "video"

- Images stored in the parquet are decoded with PIL; videos with the ffmpeg binary of
  imageio-ffmpeg (a core dependency; it decodes LeRobot's AV1 videos), frame = round(timestamp*fps).
- Cameras: every image/video feature, named by its key without "observation.images." ("image" ->
  "agentview", "wrist_image" -> "wrist", the LIBERO datasets' names), or the `cameras` mapping.
- Not rotated by default: the LeRobot LIBERO datasets (physical-intelligence/libero, and
  LeRobot's) are already upright, as LeRobot's and openpi's evaluation clients expect.
- success = "next.success" / "next.done" when present, else the last frame of each episode
  (demonstrations end in success); reward = success.

What both external readers share (seeds -1, meta, data_hash, `Demos.path`) is in
apt/demos/decoded.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from apt.demos.decoded import (check_image_size, decoded_demos, norm_text, resize_frames, suite_name,
                               suite_tasks)
from apt.demos.native import Demos
from benchmarks.base import BenchError, Suite

LEROBOT = "lerobot"
# LeRobot image key (without "observation.images.") -> camera name, for the LIBERO datasets.
LEROBOT_CAMERA_ALIASES: dict[str, str] = {"image": "agentview", "wrist_image": "wrist"}
LEROBOT_VERSIONS = ("v2.0", "v2.1")


def _read_jsonl(file: Path) -> list[dict[str, Any]]:
    rows = []
    for i, line in enumerate(file.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise BenchError(f"{file}:{i}: not valid JSON ({err})") from None
    return rows


def _camera_name(key: str) -> str:
    short = key[len("observation.images."):] if key.startswith("observation.images.") else (
        key[len("observation."):] if key.startswith("observation.") else key)
    return LEROBOT_CAMERA_ALIASES.get(short, short)


def _pick_key(features: Mapping[str, Any], given: str | None, candidates: Sequence[str], what: str,
              info: Path) -> str:
    if given is not None:
        if given not in features:
            raise BenchError(f"{info}: no feature {given!r} for the {what} (features: {sorted(features)})")
        return given
    for c in candidates:
        if c in features:
            return c
    raise BenchError(f"{info}: no {what} feature (looked for {list(candidates)}; features: "
                     f"{sorted(features)}); pass {what}_key=...")


def _vector_column(table: Any, name: str, where: Path) -> np.ndarray:
    col = table.column(name).combine_chunks()
    n = len(col)
    if hasattr(col, "flatten") and hasattr(col.type, "value_type"):
        flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        if n and flat.size % n:
            raise BenchError(f"{where}: column {name!r} has rows of different lengths")
        return flat.reshape(n, -1 if n else 0)
    return col.to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, 1)


def _decode_image_cell(cell: Any, root: Path, where: str) -> np.ndarray:
    from PIL import Image

    if isinstance(cell, dict):
        data, rel = cell.get("bytes"), cell.get("path")
        if data is None and rel:
            p = Path(rel) if Path(rel).is_absolute() else root / rel
            if not p.is_file():
                raise BenchError(f"{where}: the image has no bytes and its path {rel!r} is not a file")
            data = p.read_bytes()
    else:
        data = cell
    if not isinstance(data, (bytes, bytearray)):
        raise BenchError(f"{where}: expected an image struct {{'bytes': ..., 'path': ...}}, got "
                         f"{type(cell).__name__}")
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def _decode_video(file: Path, where: str) -> np.ndarray:
    """uint8 [F, H, W, 3]: every frame of a video (the ffmpeg binary of imageio-ffmpeg)."""
    if not file.is_file():
        raise BenchError(f"{where}: video {file} not found")
    try:
        import imageio_ffmpeg
    except ImportError:
        raise BenchError("decoding LeRobot videos needs imageio-ffmpeg: pip install imageio-ffmpeg") from None
    try:
        gen = imageio_ffmpeg.read_frames(str(file), pix_fmt="rgb24")
        meta = next(gen)
        w, h = meta["size"]
        frames = [np.frombuffer(b, dtype=np.uint8).reshape(h, w, 3) for b in gen]
    except (RuntimeError, OSError, StopIteration) as err:
        raise BenchError(f"{where}: cannot decode {file} ({err})") from None
    if not frames:
        raise BenchError(f"{where}: {file} has no frames")
    return np.stack(frames)


def load_lerobot(path: str | Path, *, cameras: Mapping[str, str] | None = None,
                 state_key: str | None = None, action_key: str | None = None,
                 image_size: int | None = None, rotate_180: bool = False, suite: Suite | None = None,
                 episodes: Sequence[int] | None = None, compute_hash: bool = True) -> Demos:
    """Read a LeRobot v2.x dataset (the root holding meta/info.json) into a Demos.

    cameras: {feature key: camera name}; default every image/video feature, named by
      `_camera_name` ("observation.images.wrist_image" -> "wrist").
    state_key / action_key: default "observation.state" / "action" (or "state" / "actions").
    image_size, rotate_180: resize (bilinear) / rotate every frame; LeRobot data is upright.
    suite: a Suite (or None): tasks whose string equals a task's instruction get
      that task id, others "lerobot/<task_index>" (nothing is dropped).
    episodes: episode indices to load (default all, in index order).
    """
    import pyarrow.parquet as pq

    check_image_size(image_size)
    root = Path(path)
    info_file = root / "meta" / "info.json"
    if not info_file.is_file():
        raise BenchError(f"{root} is not a LeRobot dataset: no meta/info.json")
    try:
        info = json.loads(info_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BenchError(f"{info_file}: not valid JSON ({err})") from None
    version = str(info.get("codebase_version", ""))
    if version not in LEROBOT_VERSIONS:
        raise BenchError(f"{root}: LeRobot dataset version {version or 'unknown'!r}; apt-bench reads "
                         f"{' and '.join(LEROBOT_VERSIONS)} (convert v3.0 datasets back with LeRobot's "
                         f"convert_dataset_v30_to_v21 script, or load a v2.1 revision)")
    features = info.get("features")
    if not isinstance(features, dict):
        raise BenchError(f"{info_file}: no 'features' object")
    for k in ("data_path", "fps"):
        if k not in info:
            raise BenchError(f"{info_file}: no {k!r}")
    fps = float(info["fps"])
    chunks_size = int(info.get("chunks_size", 1000))
    s_key = _pick_key(features, state_key, ("observation.state", "state"), "state", info_file)
    a_key = _pick_key(features, action_key, ("action", "actions"), "action", info_file)
    visual = {k: f.get("dtype") for k, f in features.items() if isinstance(f, dict)
              and f.get("dtype") in ("image", "video")}
    if cameras is None:
        cam_map = {k: _camera_name(k) for k in visual}
    else:
        cam_map = dict(cameras)
        bad = [k for k in cam_map if k not in visual]
        if bad:
            raise BenchError(f"{info_file}: no image or video feature(s) {bad} (they are "
                             f"{sorted(visual)})")
    if len(set(cam_map.values())) != len(cam_map):
        raise BenchError(f"two LeRobot image features map to one camera name: {cam_map}; pass cameras=...")

    tasks_file = root / "meta" / "tasks.jsonl"
    if not tasks_file.is_file():
        raise BenchError(f"{root}: no meta/tasks.jsonl (the task strings); not a LeRobot v2 dataset")
    task_text = {int(r["task_index"]): str(r["task"]) for r in _read_jsonl(tasks_file)
                 if "task_index" in r and "task" in r}
    ep_file = root / "meta" / "episodes.jsonl"
    if episodes is None:
        if ep_file.is_file():
            episodes = sorted(int(r["episode_index"]) for r in _read_jsonl(ep_file))
        elif "total_episodes" in info:
            episodes = list(range(int(info["total_episodes"])))
        else:
            raise BenchError(f"{root}: no meta/episodes.jsonl and no total_episodes in info.json")
    episodes = [int(e) for e in episodes]
    if not episodes:
        raise BenchError(f"{root}: no episodes to load")

    by_text = {norm_text(t.instruction): t.task_id for t in suite_tasks(suite) or []}

    cols: dict[str, list[Any]] = {"state": [], "action": [], "success": [], "reward": []}
    frames: dict[str, list[np.ndarray]] = {c: [] for c in cam_map.values()}
    lengths, task_ids, instructions = [], [], []
    for e in episodes:
        rel = info["data_path"].format(episode_chunk=e // chunks_size, episode_index=e)
        file = root / rel
        if not file.is_file():
            raise BenchError(f"{root}: episode {e}'s data file {rel} not found")
        table = pq.read_table(file)
        names = set(table.column_names)
        for k in [s_key, a_key, "task_index"] + [k for k, d in visual.items() if d == "image" and k in cam_map]:
            if k not in names:
                raise BenchError(f"{file}: no column {k!r} (columns: {sorted(names)})")
        if "frame_index" in names:
            order = np.argsort(table.column("frame_index").to_numpy(), kind="stable")
            table = table.take(order)
        if "episode_index" in names and np.any(table.column("episode_index").to_numpy() != e):
            raise BenchError(f"{file}: rows of another episode than {e}")
        t = table.num_rows
        if t == 0:
            raise BenchError(f"{file}: episode {e} has no frames")
        tidx = table.column("task_index").to_numpy()
        if np.any(tidx != tidx[0]):
            raise BenchError(f"{file}: episode {e} changes task mid-episode; not supported")
        if int(tidx[0]) not in task_text:
            raise BenchError(f"{file}: task_index {int(tidx[0])} is not in meta/tasks.jsonl")
        text = task_text[int(tidx[0])]
        cols["state"].append(_vector_column(table, s_key, file))
        cols["action"].append(_vector_column(table, a_key, file))
        flag_col = next((c for c in ("next.success", "next.done") if c in names), None)
        if flag_col is not None:
            done = table.column(flag_col).to_numpy(zero_copy_only=False).astype(bool)
        else:
            done = np.zeros(t, dtype=bool)
            done[-1] = True  # demonstrations end in success
        cols["success"].append(done)
        cols["reward"].append(table.column("next.reward").to_numpy(zero_copy_only=False).astype(np.float32)
                              if "next.reward" in names else done.astype(np.float32))
        for key, cam in cam_map.items():
            where = f"{root}: episode {e}, {key}"
            if visual[key] == "image":
                arr = np.stack([_decode_image_cell(c, root, where) for c in table.column(key).to_pylist()])
            else:
                vp = info.get("video_path")
                if not vp:
                    raise BenchError(f"{info_file}: {key} is a video feature but there is no video_path")
                video = _decode_video(root / vp.format(episode_chunk=e // chunks_size, video_key=key,
                                                       episode_index=e), where)
                if "timestamp" in names:
                    idx = np.rint(table.column("timestamp").to_numpy().astype(np.float64) * fps).astype(int)
                else:
                    idx = np.arange(t)
                if idx.min() < 0 or idx.max() >= len(video):
                    raise BenchError(f"{where}: frames up to {int(idx.max())} requested, the video has "
                                     f"{len(video)}")
                arr = video[idx]
            if rotate_180:
                arr = arr[:, ::-1, ::-1]
            arr = resize_frames(np.ascontiguousarray(arr), image_size)
            if frames[cam] and frames[cam][0].shape[1:] != arr.shape[1:]:
                raise BenchError(f"{where}: frames are {list(arr.shape[1:])}, earlier ones "
                                 f"{list(frames[cam][0].shape[1:])}; pass image_size=... to resize")
            frames[cam].append(arr)
        lengths.append(t)
        task_ids.append(by_text.get(norm_text(text), f"lerobot/{int(tidx[0])}"))
        instructions.append(text)
    states, actions = cols["state"], cols["action"]
    if len({s.shape[1] for s in states}) > 1 or len({a.shape[1] for a in actions}) > 1:
        raise BenchError(f"{root}: episodes disagree on the state or action width")
    images = {c: np.concatenate(v) for c, v in frames.items()}
    frames.clear()
    meta: dict[str, Any] = {
        "format": LEROBOT, "source": str(root), "codebase_version": version, "fps": fps,
        "suite": suite_name(suite), "cameras_from": cam_map, "state_key": s_key, "action_key": a_key,
        "rotate_180": bool(rotate_180),
    }
    return decoded_demos(root, meta, states=np.concatenate(states), actions=np.concatenate(actions),
                   episode_lengths=lengths, task_ids=task_ids,
                   instruction_ids=["lerobot:tasks.jsonl"] * len(lengths), instructions=instructions,
                   success=np.concatenate(cols["success"]), rewards=np.concatenate(cols["reward"]),
                   images=images, compute_hash=compute_hash)
