"""External demonstration formats -> `Demos`: LIBERO's HDF5 demo files and LeRobot v2.x datasets.

`load_demos` (data.py) dispatches here through `detect_format`, so training reads every format
through the same `Demos` object (apt-bench's own directories stay memory-mapped; these are decoded
into memory once).

LIBERO HDF5 (robomimic layout, as LIBERO's scripts/create_dataset.py writes and the released
libero_{goal,spatial,object,10,90} datasets ship): one file `<task name>_demo.hdf5` per task::

    data                      attrs: problem_info (JSON with "language_instruction"), env_args,
                                     bddl_file_name (".../bddl_files/<benchmark>/<task name>.bddl"),
                                     macros_image_convention ("opengl" = upside down, robosuite's default)
    data/demo_<i>/actions     float [T, 7]  OSC_POSE deltas + gripper (-1 open, +1 closed)
    data/demo_<i>/obs/agentview_rgb, eye_in_hand_rgb   uint8 [T, H, W, 3]
    data/demo_<i>/obs/ee_pos [T, 3], ee_ori [T, 3] (axis-angle), gripper_states [T, 2], joint_states
    data/demo_<i>/states, rewards, dones

- State = concat(ee_pos, ee_ori, gripper_states) = eef position, eef axis-angle, the two gripper
  finger positions: exactly `benchmarks.libero.env`'s 8-D observation state (create_dataset stores
  ee_ori as robosuite's quat2axisangle of robot0_eef_quat, the same conversion the env uses; an
  ee_ori stored as an (x, y, z, w) quaternion is converted the same way).
- Cameras: agentview_rgb -> "agentview", eye_in_hand_rgb -> "wrist" (the suite's camera names).
- Images: LIBERO stores robosuite's raw renders, upside down ("opengl" convention). Both LIBERO
  protocol presets rotate the evaluation renders by 180 degrees (`LiberoProtocol.rotate_180`), so by
  default the demo images are rotated by 180 degrees too (when the file's convention is opengl, or
  unrecorded), and training and evaluation images agree (openpi's LIBERO data is rotated likewise).
- Task ids: "<benchmark>/<index>" of the LIBERO suite when the task can be found in it (by the
  BDDL / file name, else by instruction): the suite passed in, else the benchmark the file names
  (its bddl_file_name or its folder) when LIBERO is installed; otherwise "<benchmark>/<task name>".
- Episodes: files in name order, demos in numeric order (demo_2 before demo_10).

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

Common to both: seeds are -1 (no layout seed), instruction_ids name the source of the label,
`meta` records the source, options and a data_hash over the decoded arrays, and `Demos.path` is a
directory (the dataset root, or the folder of a single .hdf5 file) because feature caches are
written there, keyed by the data_hash. No suite version is recorded: external data carries none.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from benchmarks.base import BenchError
from apt.demos.native import FORMAT, META_FILE, Demos

LIBERO_HDF5 = "libero_hdf5"
LEROBOT = "lerobot"
# LIBERO obs key -> camera name of benchmarks.libero (env.CAMERAS).
LIBERO_CAMERAS: dict[str, str] = {"agentview_rgb": "agentview", "eye_in_hand_rgb": "wrist"}
LIBERO_STATE_KEYS: tuple[str, ...] = ("ee_pos", "ee_ori", "gripper_states")
# LeRobot image key (without "observation.images.") -> camera name, for the LIBERO datasets.
LEROBOT_CAMERA_ALIASES: dict[str, str] = {"image": "agentview", "wrist_image": "wrist"}
_HDF5_SUFFIXES = (".hdf5", ".h5")
_LEROBOT_VERSIONS = ("v2.0", "v2.1")


# --------------------------------------------------------------------------------------------
# Format detection


def _hdf5_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _HDF5_SUFFIXES)


def detect_format(path: str | Path) -> str:
    """Which demonstration format `path` holds: data.FORMAT ("apt-bench-demos"), "libero_hdf5" or
    "lerobot".

    A LIBERO .hdf5 file or a directory holding .hdf5 files -> "libero_hdf5"; a directory with
    meta/info.json -> "lerobot"; any other directory, or a path that does not exist, -> the
    apt-bench format, whose reader then says what is missing. An existing file of another kind
    raises BenchError.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in _HDF5_SUFFIXES:
            return LIBERO_HDF5
        raise BenchError(f"{path} is a file, not a demonstration dataset: pass an apt-bench demos "
                         f"directory, a LIBERO .hdf5 file (or a directory of them), or a LeRobot "
                         f"dataset root (the directory holding meta/info.json)")
    if path.is_dir():
        if (path / META_FILE).is_file():
            return FORMAT
        if (path / "meta" / "info.json").is_file():
            return LEROBOT
        if _hdf5_files(path):
            return LIBERO_HDF5
    return FORMAT


def load_external(path: str | Path, fmt: str, *, suite: Any = None, **options: Any) -> Demos:
    """Load a non-apt-bench dataset of format `fmt` (from `detect_format`); `options` go to the loader."""
    loaders: dict[str, Callable[..., Demos]] = {LIBERO_HDF5: load_libero_hdf5, LEROBOT: load_lerobot}
    if fmt not in loaders:
        raise BenchError(f"unknown demonstration format {fmt!r}; formats: {FORMAT}, {', '.join(loaders)}")
    return loaders[fmt](path, suite=suite, **options)


# --------------------------------------------------------------------------------------------
# Shared helpers


def _resize_frames(frames: np.ndarray, size: int | None) -> np.ndarray:
    """uint8 [T, H, W, 3] -> [T, size, size, 3], bilinear (PIL, as the LIBERO env resizes)."""
    if size is None or (frames.shape[1] == size and frames.shape[2] == size):
        return frames
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(f)).resize(
        (size, size), resample=Image.BILINEAR)) for f in frames])


def _check_image_size(image_size: int | None) -> None:
    if image_size is not None and (not isinstance(image_size, (int, np.integer)) or image_size < 1):
        raise BenchError(f"image_size must be a positive number of pixels or None, got {image_size!r}")


def _resolve_suite(suite: Any) -> tuple[Any, str | None]:
    """(Suite object or None, its name): a name is looked up in the registry (a typo raises)."""
    if suite is None:
        return None, None
    if isinstance(suite, str):
        from apt.registry import get_suite

        return get_suite(suite), suite
    return suite, str(getattr(suite, "name", "")) or None


def _suite_tasks(suite: Any) -> list[Any] | None:
    """The suite's tasks, or None when they cannot be listed here (e.g. LIBERO not installed)."""
    if suite is None:
        return None
    try:
        return list(suite.tasks())
    except BenchError:
        return None


def _norm_text(s: str) -> str:
    return " ".join(str(s).lower().replace("_", " ").split())


def _finish(root: Path, meta: dict[str, Any], *, states: np.ndarray, actions: np.ndarray,
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


# --------------------------------------------------------------------------------------------
# LIBERO HDF5


def _attr_text(attrs: Any, name: str) -> str | None:
    v = attrs.get(name)
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v.item()
        return v.decode("utf-8") if isinstance(v, bytes) else str(v)
    return str(v)


def _libero_task_name(file: Path, data_attrs: Any) -> tuple[str | None, str]:
    """(benchmark folder or None, task name): from bddl_file_name, else the file and folder names."""
    bddl = _attr_text(data_attrs, "bddl_file_name")
    if bddl and "bddl_files/" in bddl.replace("\\", "/"):
        rel = bddl.replace("\\", "/").split("bddl_files/")[-1]
        parts = rel.split("/")
        name = Path(parts[-1]).stem
        return (parts[-2] if len(parts) > 1 else None), name
    stem = file.stem
    name = stem[: -len("_demo")] if stem.endswith("_demo") else stem
    from benchmarks.libero.protocol import family_of

    folder = file.parent.name
    return (folder if family_of(folder) else None), name


def _language_from_name(name: str) -> str:
    """LIBERO's task.language rule: the file name without its SCENE prefix, underscores -> spaces."""
    if "SCENE" in name:
        name = re.sub(r"^[A-Z_]*SCENE\d+_", "", name)
    return name.replace("_", " ").strip()


def _libero_task_id(folder: str | None, name: str, instruction: str, tasks: list[Any] | None,
                    suite_name: str | None, file: Path, strict: bool) -> tuple[str, bool]:
    """(task id, whether it is a task id of the suite); `strict`: a task the suite lacks raises."""
    if tasks is not None:
        for t in tasks:
            if t.attributes.get("name") == name:
                return t.task_id, True
        for t in tasks:
            if _norm_text(t.instruction) == _norm_text(instruction):
                return t.task_id, True
        if strict:
            raise BenchError(f"{file}: its task {name!r} ({instruction!r}) is not a task of suite "
                             f"{suite_name!r}; pass demonstrations of that suite (or suite=None)")
    return (f"{folder}/{name}" if folder else name), False


def _libero_state(obs: Any, keys: Sequence[str], where: str) -> np.ndarray:
    from benchmarks.libero.env import quat_to_axis_angle

    parts = []
    for k in keys:
        if k not in obs:
            if k in ("ee_pos", "ee_ori") and "ee_states" in obs:  # [T, 6] = pos + axis-angle
                v = np.asarray(obs["ee_states"][()], dtype=np.float64)
                parts.append(v[:, :3] if k == "ee_pos" else v[:, 3:6])
                continue
            raise BenchError(f"{where}: no 'obs/{k}' for the state (obs keys: {sorted(obs.keys())}); "
                             f"pass state_keys=... naming the obs arrays to concatenate")
        v = np.asarray(obs[k][()], dtype=np.float64)
        v = v.reshape(v.shape[0], -1)
        if k == "ee_ori" and v.shape[1] == 4:  # stored as an (x, y, z, w) quaternion
            v = np.stack([quat_to_axis_angle(q) for q in v]) if len(v) else np.zeros((0, 3))
        parts.append(v)
    return np.concatenate(parts, axis=1).astype(np.float32)


def _demo_keys(data: Any, file: Path) -> list[str]:
    keys = [k for k in data.keys() if re.fullmatch(r"demo_\d+", k)]
    if not keys:
        raise BenchError(f"{file}: no data/demo_<i> groups; not a LIBERO demonstration file")
    return sorted(keys, key=lambda k: int(k.split("_")[1]))


def load_libero_hdf5(path: str | Path, *, cameras: Mapping[str, str] | Sequence[str] | None = None,
                     image_size: int | None = None, rotate_180: bool | None = None,
                     state_keys: Sequence[str] = LIBERO_STATE_KEYS, suite: Any = None,
                     max_demos_per_file: int | None = None, compute_hash: bool = True) -> Demos:
    """Read LIBERO `*_demo.hdf5` file(s) (one file, or every .hdf5 in a directory) into a Demos.

    cameras: {obs key: camera name} (default LIBERO_CAMERAS), or camera names to keep from it.
    image_size: resize frames to image_size x image_size (bilinear), None = as stored.
    rotate_180: None = rotate when the file's images are upside down (macros_image_convention
      "opengl" or unrecorded), matching the LIBERO protocols' rotated evaluation images.
    state_keys: obs arrays concatenated into the state (default: the suite's 8-D state).
    suite: a Suite or a registered suite name; task ids are mapped to its tasks and a file whose
      task it lacks raises. None: the benchmark the files name, when LIBERO is installed.
    max_demos_per_file: keep only the first demos of each file.
    """
    try:
        import h5py
    except ImportError:
        raise BenchError("reading LIBERO HDF5 demonstrations needs h5py: pip install 'apt-bench[libero]' "
                         "(or pip install h5py)") from None
    _check_image_size(image_size)
    path = Path(path)
    if path.is_file():
        files, root = [path], path.parent
    elif path.is_dir():
        files, root = _hdf5_files(path), path
        if not files:
            raise BenchError(f"{path}: no .hdf5 files; pass a LIBERO *_demo.hdf5 file or the directory "
                             f"holding them (e.g. datasets/libero_goal)")
    else:
        raise BenchError(f"no LIBERO demonstrations at {path}: file not found")
    if isinstance(cameras, Mapping):
        cam_map = dict(cameras)
    elif cameras is None:
        cam_map = dict(LIBERO_CAMERAS)
    else:
        by_name = {v: k for k, v in LIBERO_CAMERAS.items()}
        bad = [c for c in cameras if c not in by_name]
        if bad:
            raise BenchError(f"unknown LIBERO camera(s) {bad}; cameras are {list(by_name)} (or pass a "
                             f"mapping {{obs key: camera name}})")
        cam_map = {by_name[c]: c for c in cameras}
    if len(set(cam_map.values())) != len(cam_map):
        raise BenchError(f"cameras maps two obs keys to one camera name: {cam_map}")
    suite_obj, suite_name = _resolve_suite(suite)
    suite_tasks = _suite_tasks(suite_obj)

    # Pass 1: labels, lengths and image shapes (no pixels read).
    plan: list[tuple[Path, str, int]] = []  # (file, demo key, length)
    labels: list[tuple[str, str]] = []  # (task id, instruction) per episode
    shapes: dict[str, tuple[int, ...]] = {}
    rotate: dict[Path, bool] = {}
    mapped, folders = [], set()
    auto_suites: dict[str, list[Any] | None] = {}
    for file in files:
        try:
            f = h5py.File(file, "r")
        except OSError as err:
            raise BenchError(f"{file}: not a readable HDF5 file ({err})") from None
        with f:
            if "data" not in f:
                raise BenchError(f"{file}: no 'data' group; not a LIBERO (robomimic) demonstration file")
            data = f["data"]
            folder, name = _libero_task_name(file, data.attrs)
            folders.add(folder)
            info_text = _attr_text(data.attrs, "problem_info")
            instruction = None
            if info_text:
                try:
                    instruction = json.loads(info_text).get("language_instruction")
                except (json.JSONDecodeError, AttributeError):
                    raise BenchError(f"{file}: data.attrs['problem_info'] is not a JSON object") from None
            if isinstance(instruction, list):  # some files store it as a list of words / one string
                instruction = " ".join(map(str, instruction))
            instruction = str(instruction).strip() if instruction else _language_from_name(name)
            tasks = suite_tasks
            if suite_obj is None and folder is not None:  # the benchmark the file names, if installed
                if folder not in auto_suites:
                    from benchmarks.libero import LiberoSuite

                    auto_suites[folder] = _suite_tasks(LiberoSuite(folder))
                tasks = auto_suites[folder]
            if suite_obj is not None and tasks is None and folder is not None:
                from benchmarks.libero.protocol import family_of

                if family_of(folder) != family_of(suite_name or ""):
                    raise BenchError(f"{file} holds {folder} demonstrations, not {suite_name!r} ones")
            task_id, ok = _libero_task_id(folder, name, instruction, tasks, suite_name, file,
                                          strict=suite_obj is not None)
            mapped.append(ok)
            convention = _attr_text(data.attrs, "macros_image_convention") or "opengl"
            rotate[file] = (convention == "opengl") if rotate_180 is None else bool(rotate_180)
            keys = _demo_keys(data, file)[:max_demos_per_file]
            for key in keys:
                demo = data[key]
                where = f"{file}: {key}"
                if "actions" not in demo:
                    raise BenchError(f"{where} has no 'actions'; not a LIBERO demonstration file")
                if "obs" not in demo:
                    raise BenchError(f"{where} has no 'obs' group; not a LIBERO demonstration file")
                t = int(demo["actions"].shape[0])
                for obs_key in cam_map:
                    if obs_key not in demo["obs"]:
                        raise BenchError(f"{where} has no 'obs/{obs_key}' (obs keys: "
                                         f"{sorted(demo['obs'].keys())}); choose cameras=...")
                    ds = demo["obs"][obs_key]
                    if ds.ndim != 4 or ds.shape[-1] != 3 or ds.shape[0] != t or ds.dtype != np.uint8:
                        raise BenchError(f"{where}: obs/{obs_key} is {ds.dtype} {list(ds.shape)}, expected "
                                         f"uint8 [{t}, H, W, 3]")
                    shape = (image_size, image_size, 3) if image_size else tuple(ds.shape[1:])
                    if shapes.setdefault(obs_key, shape) != shape:
                        raise BenchError(f"{where}: obs/{obs_key} frames are {list(ds.shape[1:])}, other "
                                         f"demos' {list(shapes[obs_key])}; pass image_size=... to resize")
                plan.append((file, key, t))
                labels.append((task_id, _attr_text(demo.attrs, "language_instruction") or instruction))
    if not plan:
        raise BenchError(f"{path}: no demonstrations to load")

    # Pass 2: read the arrays into preallocated rows.
    n = sum(t for _, _, t in plan)
    images = {cam_map[k]: np.empty((n, *shapes[k]), dtype=np.uint8) for k in cam_map}
    states, actions, success, rewards = [], [], [], []
    row = 0
    open_file: tuple[Path, Any] | None = None
    try:
        for file, key, t in plan:
            if open_file is None or open_file[0] != file:
                if open_file is not None:
                    open_file[1].close()
                open_file = (file, h5py.File(file, "r"))
            demo = open_file[1]["data"][key]
            where = f"{file}: {key}"
            a = np.asarray(demo["actions"][()], dtype=np.float32).reshape(t, -1)
            s = _libero_state(demo["obs"], state_keys, where)
            if s.shape[0] != t:
                raise BenchError(f"{where}: the state has {s.shape[0]} steps, actions {t}")
            done = np.asarray(demo["dones"][()]).reshape(-1).astype(bool) if "dones" in demo else None
            if done is None or done.shape[0] != t:
                done = np.zeros(t, dtype=bool)
                done[-1] = True  # LIBERO demonstrations end on the step that succeeded
            rew = np.asarray(demo["rewards"][()], dtype=np.float32).reshape(-1) if "rewards" in demo \
                else done.astype(np.float32)
            if rew.shape[0] != t:
                rew = done.astype(np.float32)
            for obs_key, cam in cam_map.items():
                frames = np.asarray(demo["obs"][obs_key][()])
                if rotate[file]:
                    frames = frames[:, ::-1, ::-1]
                images[cam][row:row + t] = _resize_frames(np.ascontiguousarray(frames), image_size)
            states.append(s)
            actions.append(a)
            success.append(done)
            rewards.append(rew)
            row += t
    finally:
        if open_file is not None:
            open_file[1].close()
    if len({a.shape[1] for a in actions}) > 1 or len({s.shape[1] for s in states}) > 1:
        raise BenchError(f"{path}: demos disagree on the action or state width")
    meta: dict[str, Any] = {
        "format": LIBERO_HDF5, "source": str(path), "files": [f.name for f in files],
        "suite": suite_name or (next(iter(folders)) if len(folders) == 1 else None),
        "task_ids": "suite" if all(mapped) else "benchmark/name",
        "cameras_from": cam_map, "state_keys": list(state_keys),
        "rotate_180": {f.name: rotate[f] for f in files},
    }
    return _finish(root, meta, states=np.concatenate(states), actions=np.concatenate(actions),
                   episode_lengths=[t for _, _, t in plan], task_ids=[tid for tid, _ in labels],
                   instruction_ids=["libero:problem_info"] * len(plan),
                   instructions=[ins for _, ins in labels], success=np.concatenate(success),
                   rewards=np.concatenate(rewards), images=images, compute_hash=compute_hash)


# --------------------------------------------------------------------------------------------
# Writing LIBERO HDF5 (scripted-expert demonstrations of a LIBERO suite)


def write_native(fmt: str, folder: Path, jobs: Sequence[Any], cameras: Sequence[str], suite: Any) -> tuple[str, int]:
    """Write the kept episodes of `generate_demos` (folder/episodes/<index>.npz, in `jobs` order) in
    a native format; returns (content hash, frames)."""
    writers: dict[str, Callable[..., tuple[str, int]]] = {LIBERO_HDF5: write_libero_hdf5}
    if fmt not in writers:
        raise BenchError(f"no writer for demonstration format {fmt!r}; writers: {', '.join(writers)}")
    return writers[fmt](folder, jobs, cameras, suite)


def write_libero_hdf5(folder: Path, jobs: Sequence[Any], cameras: Sequence[str], suite: Any) -> tuple[str, int]:
    """One `<task name>_demo.hdf5` per task in LIBERO's layout (module docstring), readable by
    `load_libero_hdf5` and by LIBERO's/robomimic's own tools.

    Per demo: actions, states (the MuJoCo state of every step, `LiberoEnv`'s privileged
    "sim_state"), rewards and dones (1 on the last, successful step), obs/<camera>_rgb, ee_pos,
    ee_ori (axis-angle), ee_states, gripper_states, joint_states. Frames are stored upright as the
    env renders them (macros_image_convention "opencv", so readers do not rotate them). Extra
    attributes LIBERO does not have: per demo `language_instruction` (the exact label), the layout
    `init_seed` and `instruction_id`. Images are gzip-compressed. The returned hash is a sha256 over
    the written arrays in file and demo order.
    """
    try:
        import h5py
    except ImportError:
        raise BenchError("writing LIBERO HDF5 demonstrations needs h5py: pip install 'apt-bench[libero]'") from None
    obs_key = {cam: key for key, cam in LIBERO_CAMERAS.items()}
    unknown_cams = [c for c in cameras if c not in obs_key]
    if unknown_cams:
        raise BenchError(f"LIBERO HDF5 stores the cameras {list(obs_key)}, not {unknown_cams}")
    tasks = {t.task_id: t for t in suite.tasks()}
    by_task: dict[str, list[Any]] = {}
    for job in jobs:
        by_task.setdefault(job.task_id, []).append(job)
    digest = hashlib.sha256()
    frames = 0
    for task_id, task_jobs in by_task.items():
        name = tasks[task_id].attributes.get("name") or task_id.replace("/", "_")
        bddl = f"libero/libero/bddl_files/{suite.name}/{name}.bddl"  # LIBERO's package-relative path
        with h5py.File(folder / f"{name}_demo.hdf5", "w") as f:
            data = f.create_group("data")
            first = np.load(folder / "episodes" / f"{task_jobs[0].index:07d}.npz")
            size = int(first[f"image_{cameras[0]}"].shape[1]) if cameras else 0
            data.attrs["bddl_file_name"] = bddl
            data.attrs["problem_info"] = json.dumps({"problem_name": name, "domain_name": "robosuite",
                                                     "language_instruction": tasks[task_id].instruction})
            data.attrs["env_args"] = json.dumps({"type": 1, "env_name": "ControlEnv", "env_kwargs": {
                "bddl_file_name": bddl, "camera_names": [obs_key[c][: -len("_rgb")] for c in cameras],
                "camera_heights": size, "camera_widths": size, "controller": "OSC_POSE"}})
            data.attrs["macros_image_convention"] = "opencv"
            data.attrs["source"] = f"apt-bench scripted expert ({suite.name} {suite.version})"
            total = 0
            for i, job in enumerate(task_jobs):
                ep = np.load(folder / "episodes" / f"{job.index:07d}.npz")
                state = np.asarray(ep["state"], dtype=np.float64)
                t = len(state)
                done = np.zeros(t, dtype=np.uint8)
                done[-1] = 1  # kept episodes end on the step that succeeded
                g = data.create_group(f"demo_{i}")
                g.attrs.update(num_samples=t, language_instruction=job.instruction,
                               instruction_id=job.instruction_id, init_seed=job.seed)
                arrays = {"actions": np.asarray(ep["action"], dtype=np.float64), "rewards": done, "dones": done}
                if "extra_sim_state" in ep:
                    arrays["states"] = np.asarray(ep["extra_sim_state"], dtype=np.float64)
                obs = {"ee_pos": state[:, :3], "ee_ori": state[:, 3:6], "ee_states": state[:, :6],
                       "gripper_states": state[:, 6:8]}
                if "extra_robot0_joint_pos" in ep:
                    obs["joint_states"] = np.asarray(ep["extra_robot0_joint_pos"], dtype=np.float64)
                obs.update({obs_key[c]: np.asarray(ep[f"image_{c}"], dtype=np.uint8) for c in cameras})
                for key, arr in arrays.items():
                    g.create_dataset(key, data=arr)
                    digest.update(np.ascontiguousarray(arr).tobytes())
                for key, arr in obs.items():
                    image = arr.ndim == 4
                    g.create_dataset(f"obs/{key}", data=arr, compression="gzip" if image else None,
                                     chunks=(1, *arr.shape[1:]) if image else None)
                    digest.update(np.ascontiguousarray(arr).tobytes())
                total += t
            data.attrs["num_demos"] = len(task_jobs)
            data.attrs["total"] = total
            frames += total
    return digest.hexdigest(), frames


# --------------------------------------------------------------------------------------------
# LeRobot v2.x


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
                 image_size: int | None = None, rotate_180: bool = False, suite: Any = None,
                 episodes: Sequence[int] | None = None, compute_hash: bool = True) -> Demos:
    """Read a LeRobot v2.x dataset (the root holding meta/info.json) into a Demos.

    cameras: {feature key: camera name}; default every image/video feature, named by
      `_camera_name` ("observation.images.wrist_image" -> "wrist").
    state_key / action_key: default "observation.state" / "action" (or "state" / "actions").
    image_size, rotate_180: resize (bilinear) / rotate every frame; LeRobot data is upright.
    suite: a Suite or registered suite name: tasks whose string equals a task's instruction get
      that task id, others "lerobot/<task_index>" (nothing is dropped).
    episodes: episode indices to load (default all, in index order).
    """
    import pyarrow.parquet as pq

    _check_image_size(image_size)
    root = Path(path)
    info_file = root / "meta" / "info.json"
    if not info_file.is_file():
        raise BenchError(f"{root} is not a LeRobot dataset: no meta/info.json")
    try:
        info = json.loads(info_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BenchError(f"{info_file}: not valid JSON ({err})") from None
    version = str(info.get("codebase_version", ""))
    if version not in _LEROBOT_VERSIONS:
        raise BenchError(f"{root}: LeRobot dataset version {version or 'unknown'!r}; apt-bench reads "
                         f"{' and '.join(_LEROBOT_VERSIONS)} (convert v3.0 datasets back with LeRobot's "
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

    suite_obj, suite_name = _resolve_suite(suite)
    suite_tasks = _suite_tasks(suite_obj) or []
    by_text = {_norm_text(t.instruction): t.task_id for t in suite_tasks}

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
            arr = _resize_frames(np.ascontiguousarray(arr), image_size)
            if frames[cam] and frames[cam][0].shape[1:] != arr.shape[1:]:
                raise BenchError(f"{where}: frames are {list(arr.shape[1:])}, earlier ones "
                                 f"{list(frames[cam][0].shape[1:])}; pass image_size=... to resize")
            frames[cam].append(arr)
        lengths.append(t)
        task_ids.append(by_text.get(_norm_text(text), f"lerobot/{int(tidx[0])}"))
        instructions.append(text)
    states, actions = cols["state"], cols["action"]
    if len({s.shape[1] for s in states}) > 1 or len({a.shape[1] for a in actions}) > 1:
        raise BenchError(f"{root}: episodes disagree on the state or action width")
    images = {c: np.concatenate(v) for c, v in frames.items()}
    frames.clear()
    meta: dict[str, Any] = {
        "format": LEROBOT, "source": str(root), "codebase_version": version, "fps": fps,
        "suite": suite_name, "cameras_from": cam_map, "state_key": s_key, "action_key": a_key,
        "rotate_180": bool(rotate_180),
    }
    return _finish(root, meta, states=np.concatenate(states), actions=np.concatenate(actions),
                   episode_lengths=lengths, task_ids=task_ids,
                   instruction_ids=["lerobot:tasks.jsonl"] * len(lengths), instructions=instructions,
                   success=np.concatenate(cols["success"]), rewards=np.concatenate(cols["reward"]),
                   images=images, compute_hash=compute_hash)
