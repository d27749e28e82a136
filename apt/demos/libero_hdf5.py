"""LIBERO's HDF5 demonstration files: the reader (`load_libero_hdf5`, decoded into a `Demos`) and
the writer `apt-bench demos` uses for LIBERO suites (`write_libero_hdf5`).

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
- Written files (write_libero_hdf5) store upright frames ("opencv" convention) and the exact
  label, layout seed and instruction id of each demo (attributes LIBERO does not have).

What both external readers share (seeds -1, meta, data_hash, `Demos.path`) is in
apt/demos/decoded.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from apt.demos.decoded import (check_image_size, decoded_demos, norm_text, resize_frames, suite_name,
                               suite_tasks)
from apt.demos.episodes import DemoEpisode, episode_file
from apt.demos.native import Demos
from benchmarks.base import BenchError, Suite, TaskSpec
from benchmarks.libero.env import quat_to_axis_angle
from benchmarks.libero.protocol import family_of
from benchmarks.libero.suite import LiberoSuite

LIBERO_HDF5 = "libero_hdf5"
# LIBERO obs key -> camera name of benchmarks.libero (env.CAMERAS).
LIBERO_CAMERAS: dict[str, str] = {"agentview_rgb": "agentview", "eye_in_hand_rgb": "wrist"}
LIBERO_STATE_KEYS: tuple[str, ...] = ("ee_pos", "ee_ori", "gripper_states")
HDF5_SUFFIXES = (".hdf5", ".h5")


def hdf5_files(folder: Path) -> list[Path]:
    """The .hdf5 files directly in `folder`, in name order."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in HDF5_SUFFIXES)


# --------------------------------------------------------------------------------------------
# Reading


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
    folder = file.parent.name
    return (folder if family_of(folder) else None), name


def _language_from_name(name: str) -> str:
    """LIBERO's task.language rule: the file name without its SCENE prefix, underscores -> spaces."""
    if "SCENE" in name:
        name = re.sub(r"^[A-Z_]*SCENE\d+_", "", name)
    return name.replace("_", " ").strip()


def _libero_task_id(folder: str | None, name: str, instruction: str, tasks: list[TaskSpec] | None,
                    suite_name: str | None, file: Path, strict: bool) -> tuple[str, bool]:
    """(task id, whether it is a task id of the suite); `strict`: a task the suite lacks raises."""
    if tasks is not None:
        for t in tasks:
            if t.attributes.get("name") == name:
                return t.task_id, True
        for t in tasks:
            if norm_text(t.instruction) == norm_text(instruction):
                return t.task_id, True
        if strict:
            raise BenchError(f"{file}: its task {name!r} ({instruction!r}) is not a task of suite "
                             f"{suite_name!r}; pass demonstrations of that suite (or suite=None)")
    return (f"{folder}/{name}" if folder else name), False


def _libero_state(obs: Any, keys: Sequence[str], where: str) -> np.ndarray:
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
                     state_keys: Sequence[str] = LIBERO_STATE_KEYS, suite: Suite | None = None,
                     max_demos_per_file: int | None = None, compute_hash: bool = True) -> Demos:
    """Read LIBERO `*_demo.hdf5` file(s) (one file, or every .hdf5 in a directory) into a Demos.

    cameras: {obs key: camera name} (default LIBERO_CAMERAS), or camera names to keep from it.
    image_size: resize frames to image_size x image_size (bilinear), None = as stored.
    rotate_180: None = rotate when the file's images are upside down (macros_image_convention
      "opengl" or unrecorded), matching the LIBERO protocols' rotated evaluation images.
    state_keys: obs arrays concatenated into the state (default: the suite's 8-D state).
    suite: a Suite (or None); task ids are mapped to its tasks and a file whose
      task it lacks raises. None: the benchmark the files name, when LIBERO is installed.
    max_demos_per_file: keep only the first demos of each file.
    """
    try:
        import h5py
    except ImportError:
        raise BenchError("reading LIBERO HDF5 demonstrations needs h5py: pip install 'apt-bench[libero]' "
                         "(or pip install h5py)") from None
    check_image_size(image_size)
    path = Path(path)
    if path.is_file():
        files, root = [path], path.parent
    elif path.is_dir():
        files, root = hdf5_files(path), path
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
    named = suite_name(suite)
    given_tasks = suite_tasks(suite)

    # Pass 1: labels, lengths and image shapes (no pixels read).
    plan: list[tuple[Path, str, int]] = []  # (file, demo key, length)
    labels: list[tuple[str, str]] = []  # (task id, instruction) per episode
    shapes: dict[str, tuple[int, ...]] = {}
    rotate: dict[Path, bool] = {}
    mapped, folders = [], set()
    auto_suites: dict[str, list[TaskSpec] | None] = {}
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
            tasks = given_tasks
            if suite is None and folder is not None:  # the benchmark the file names, if installed
                if folder not in auto_suites:
                    auto_suites[folder] = suite_tasks(LiberoSuite(folder))
                tasks = auto_suites[folder]
            if suite is not None and tasks is None and folder is not None:
                if family_of(folder) != family_of(named or ""):
                    raise BenchError(f"{file} holds {folder} demonstrations, not {named!r} ones")
            task_id, ok = _libero_task_id(folder, name, instruction, tasks, named, file,
                                          strict=suite is not None)
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
                images[cam][row:row + t] = resize_frames(np.ascontiguousarray(frames), image_size)
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
        "suite": named or (next(iter(folders)) if len(folders) == 1 else None),
        "task_ids": "suite" if all(mapped) else "benchmark/name",
        "cameras_from": cam_map, "state_keys": list(state_keys),
        "rotate_180": {f.name: rotate[f] for f in files},
    }
    return decoded_demos(root, meta, states=np.concatenate(states), actions=np.concatenate(actions),
                   episode_lengths=[t for _, _, t in plan], task_ids=[tid for tid, _ in labels],
                   instruction_ids=["libero:problem_info"] * len(plan),
                   instructions=[ins for _, ins in labels], success=np.concatenate(success),
                   rewards=np.concatenate(rewards), images=images, compute_hash=compute_hash)


# --------------------------------------------------------------------------------------------
# Writing (scripted-expert demonstrations of a LIBERO suite)


def write_libero_hdf5(folder: Path, jobs: Sequence[DemoEpisode], cameras: Sequence[str],
                      suite: Suite) -> tuple[str, int]:
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
    by_task: dict[str, list[DemoEpisode]] = {}
    for job in jobs:
        by_task.setdefault(job.task_id, []).append(job)
    digest = hashlib.sha256()
    frames = 0
    for task_id, task_jobs in by_task.items():
        name = tasks[task_id].attributes.get("name") or task_id.replace("/", "_")
        bddl = f"libero/libero/bddl_files/{suite.name}/{name}.bddl"  # LIBERO's package-relative path
        with h5py.File(folder / f"{name}_demo.hdf5", "w") as f:
            data = f.create_group("data")
            first = np.load(episode_file(folder, task_jobs[0].index))
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
                ep = np.load(episode_file(folder, job.index))
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
