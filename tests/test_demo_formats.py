"""External demonstration formats: LIBERO HDF5 and LeRobot v2.x, written here in exactly those
layouts, read through `load_demos` into the training pipeline."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.base import BenchError, TaskSpec
from apt.demos.formats import detect_format, load_demos
from apt.demos.lerobot import LEROBOT, load_lerobot
from apt.demos.libero_hdf5 import LIBERO_HDF5, load_libero_hdf5
from apt.demos.native import FORMAT

h5py = pytest.importorskip("h5py")

DRAWER = "open_the_middle_drawer_of_the_cabinet"
BOWL = "put_the_bowl_on_the_plate"
TEXT = {DRAWER: "open the middle drawer of the cabinet", BOWL: "put the bowl on the plate"}


# --------------------------------------------------------------------------------------------
# Writers: the formats exactly as LIBERO's create_dataset.py and LeRobot v2.1 lay them out


def _episode(rng: np.random.Generator, t: int, size: int = 16) -> dict[str, np.ndarray]:
    ee = rng.normal(size=(t, 6))
    return {"actions": rng.uniform(-1, 1, size=(t, 7)),
            "agentview_rgb": rng.integers(0, 256, size=(t, size, size, 3), dtype=np.uint8),
            "eye_in_hand_rgb": rng.integers(0, 256, size=(t, size, size, 3), dtype=np.uint8),
            "ee_pos": ee[:, :3], "ee_ori": ee[:, 3:], "ee_states": ee,
            "gripper_states": rng.uniform(-0.04, 0.04, size=(t, 2)),
            "joint_states": rng.normal(size=(t, 7)), "states": rng.normal(size=(t, 47))}


def write_libero(file: Path, task: str, demos: dict[str, dict[str, np.ndarray]], *,
                 benchmark: str | None = "libero_goal", convention: str | None = "opengl",
                 problem_info: bool = True, cameras: tuple[str, ...] = ("agentview_rgb", "eye_in_hand_rgb")) -> Path:
    file.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(file, "w") as f:
        grp = f.create_group("data")
        grp.attrs["env_name"] = "Libero_Kitchen_Tabletop_Manipulation"
        if problem_info:
            grp.attrs["problem_info"] = json.dumps({"problem_name": "libero_kitchen_tabletop_manipulation",
                                                    "domain_name": "robosuite",
                                                    "language_instruction": TEXT[task]})
        if convention is not None:
            grp.attrs["macros_image_convention"] = convention
        if benchmark is not None:
            grp.attrs["bddl_file_name"] = f"/somewhere/libero/libero/bddl_files/{benchmark}/{task}.bddl"
        grp.attrs["env_args"] = json.dumps({"type": 1, "env_name": "Libero_Kitchen_Tabletop_Manipulation",
                                            "env_kwargs": {"camera_heights": 16, "camera_widths": 16}})
        for key, ep in demos.items():
            g = grp.create_group(key)
            obs = g.create_group("obs")
            for k in (*cameras, "ee_pos", "ee_ori", "ee_states", "gripper_states", "joint_states"):
                obs.create_dataset(k, data=ep[k])
            t = len(ep["actions"])
            done = np.zeros(t, dtype=np.uint8)
            done[-1] = 1
            g.create_dataset("actions", data=ep["actions"])
            g.create_dataset("states", data=ep["states"])
            g.create_dataset("rewards", data=done)
            g.create_dataset("dones", data=done)
            g.attrs["num_samples"] = t
        grp.attrs["num_demos"] = len(demos)
        grp.attrs["total"] = sum(len(ep["actions"]) for ep in demos.values())
    return file


@pytest.fixture(scope="module")
def libero_dir(tmp_path_factory):
    """libero_goal/<task>_demo.hdf5 for two tasks; demos named out of lexical order."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("libero") / "libero_goal"
    eps = {DRAWER: {"demo_0": _episode(rng, 5), "demo_2": _episode(rng, 3), "demo_10": _episode(rng, 4)},
           BOWL: {"demo_0": _episode(rng, 6)}}
    for task, demos in eps.items():
        write_libero(root / f"{task}_demo.hdf5", task, demos)
    return root, eps


@dataclass
class StubSuite:
    """The two libero_goal tasks, with the names / instructions LiberoSuite gives them."""

    name: str = "libero_goal"
    version: str | None = None
    table: list[TaskSpec] = field(default_factory=lambda: [
        TaskSpec("libero_goal/0", TEXT[DRAWER], 300, {"name": DRAWER}),
        TaskSpec("libero_goal/8", TEXT[BOWL], 300, {"name": BOWL})])

    def tasks(self) -> list[TaskSpec]:
        return list(self.table)


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


LEROBOT_TASKS = ["pick up the black bowl", "open the middle drawer of the cabinet"]


def write_lerobot(root: Path, episodes: list[dict[str, np.ndarray]], *, video_keys: tuple[str, ...] = (),
                  version: str = "v2.1", fps: int = 10) -> Path:
    """A LeRobot v2.1 dataset: image features embedded in parquet as {"bytes", "path"} structs,
    video features as one mp4 per episode and key."""
    import imageio_ffmpeg
    import pyarrow as pa
    import pyarrow.parquet as pq

    h = episodes[0]["image"].shape[1]
    image_keys = ("observation.images.image", "observation.images.wrist_image")
    features = {
        "observation.state": {"dtype": "float32", "shape": [8], "names": {"motors": list("xyzrpgab")}},
        "action": {"dtype": "float32", "shape": [7], "names": {"motors": list("xyzrpyg")}},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    for k in image_keys:
        features[k] = {"dtype": "video" if k in video_keys else "image", "shape": [h, h, 3],
                       "names": ["height", "width", "channel"]}
    info = {"codebase_version": version, "robot_type": "panda", "total_episodes": len(episodes),
            "total_frames": sum(len(e["action"]) for e in episodes), "total_tasks": len(LEROBOT_TASKS),
            "total_videos": len(video_keys) * len(episodes), "total_chunks": 1, "chunks_size": 1000,
            "fps": fps, "splits": {"train": f"0:{len(episodes)}"},
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
            "features": features}
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    (root / "meta" / "tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(LEROBOT_TASKS)))
    (root / "meta" / "episodes.jsonl").write_text("".join(
        json.dumps({"episode_index": i, "tasks": [LEROBOT_TASKS[e["task"]]], "length": len(e["action"])}) + "\n"
        for i, e in enumerate(episodes)))
    img_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    index = 0
    for i, e in enumerate(episodes):
        t = len(e["action"])
        cols = {
            "observation.state": pa.array(list(e["state"].astype(np.float32)), pa.list_(pa.float32())),
            "action": pa.array(list(e["action"].astype(np.float32)), pa.list_(pa.float32())),
            "timestamp": pa.array(np.arange(t, dtype=np.float32) / fps),
            "frame_index": pa.array(np.arange(t, dtype=np.int64)),
            "episode_index": pa.array(np.full(t, i, dtype=np.int64)),
            "index": pa.array(np.arange(index, index + t, dtype=np.int64)),
            "task_index": pa.array(np.full(t, e["task"], dtype=np.int64)),
        }
        for key, src in zip(image_keys, ("image", "wrist_image")):
            if key in video_keys:
                out = root / "videos" / "chunk-000" / key / f"episode_{i:06d}.mp4"
                out.parent.mkdir(parents=True, exist_ok=True)
                w = imageio_ffmpeg.write_frames(str(out), (h, h), fps=fps, codec="libx264",
                                                pix_fmt_out="yuv444p", quality=10, macro_block_size=1,
                                                output_params=["-crf", "0"])
                w.send(None)
                for frame in e[src]:
                    w.send(np.ascontiguousarray(frame))
                w.close()
            else:
                cols[key] = pa.array([{"bytes": _png(f), "path": None} for f in e[src]], img_type)
        index += t
        out = root / "data" / "chunk-000" / f"episode_{i:06d}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(cols), out)
    return root


def _lerobot_episode(rng: np.random.Generator, t: int, task: int, size: int = 16) -> dict[str, np.ndarray]:
    return {"state": rng.normal(size=(t, 8)), "action": rng.uniform(-1, 1, size=(t, 7)), "task": task,
            "image": rng.integers(0, 256, size=(t, size, size, 3), dtype=np.uint8),
            "wrist_image": rng.integers(0, 256, size=(t, size, size, 3), dtype=np.uint8)}


@pytest.fixture(scope="module")
def lerobot_dir(tmp_path_factory):
    rng = np.random.default_rng(1)
    eps = [_lerobot_episode(rng, 4, 0), _lerobot_episode(rng, 6, 1), _lerobot_episode(rng, 3, 0)]
    return write_lerobot(tmp_path_factory.mktemp("lerobot") / "libero", eps), eps


def _dummy_model(state_dim: int, action_dim: int):
    from apt.models.builders import get_preset
    from apt.models.policy_model import ModelConfig, VLAModel

    torch.manual_seed(0)
    return VLAModel(get_preset("dummy_pi0", ModelConfig).replace(state_dim=state_dim, action_dim=action_dim))


def _train_batch_loss(demos, cameras: tuple[str, ...]) -> None:
    from apt.training.batches import build_training_data, fit_normalizers

    model = _dummy_model(demos.states.shape[1], demos.actions.shape[1]).eval()
    sn, an = fit_normalizers(demos)
    data = build_training_data(demos, model, model.cfg.chunk_len, cameras, sn, an, progress=False)
    assert len(data) == len(demos)
    assert tuple(data.action_chunks.shape) == (len(demos), model.cfg.chunk_len, demos.actions.shape[1])
    batch = next(data.sampler(4, seed=0))
    with torch.no_grad():
        loss = model.loss(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)


# --------------------------------------------------------------------------------------------
# LIBERO HDF5


def test_detect_format(tmp_path, libero_dir, lerobot_dir):
    root, _ = libero_dir
    assert detect_format(root) == LIBERO_HDF5
    assert detect_format(root / f"{DRAWER}_demo.hdf5") == LIBERO_HDF5
    assert detect_format(lerobot_dir[0]) == LEROBOT
    (tmp_path / "native").mkdir()
    (tmp_path / "native" / "meta.json").write_text("{}")
    assert detect_format(tmp_path / "native") == FORMAT
    assert detect_format(tmp_path / "nowhere") == FORMAT  # the native reader explains what is missing
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BenchError, match="is a file, not a demonstration dataset"):
        detect_format(tmp_path / "notes.txt")


def test_libero_round_trip(libero_dir):
    root, eps = libero_dir
    demos = load_libero_hdf5(root, suite=StubSuite())
    order = [(DRAWER, "demo_0"), (DRAWER, "demo_2"), (DRAWER, "demo_10"), (BOWL, "demo_0")]  # numeric
    lengths = [len(eps[t][k]["actions"]) for t, k in order]
    assert demos.num_episodes == 4 and len(demos) == sum(lengths)
    assert demos.episode_starts.tolist() == np.concatenate([[0], np.cumsum(lengths)]).tolist()
    assert demos.cameras == ("agentview", "wrist")
    assert demos.states.shape == (len(demos), 8) and demos.actions.shape == (len(demos), 7)
    assert demos.states.dtype == np.float32 and demos.images["agentview"].dtype == np.uint8
    for e, (task, key) in enumerate(order):
        rows, ep = demos.episode(e), eps[task][key]
        np.testing.assert_allclose(demos.actions[rows], ep["actions"].astype(np.float32))
        state = np.concatenate([ep["ee_pos"], ep["ee_ori"], ep["gripper_states"]], axis=1)
        np.testing.assert_allclose(demos.states[rows], state.astype(np.float32))
        # opengl (upside-down) images are rotated by 180 degrees, as the LIBERO protocols do
        np.testing.assert_array_equal(demos.images["agentview"][rows], ep["agentview_rgb"][:, ::-1, ::-1])
        np.testing.assert_array_equal(demos.images["wrist"][rows], ep["eye_in_hand_rgb"][:, ::-1, ::-1])
        assert set(demos.instructions[rows]) == {TEXT[task]}
        assert set(demos.task_ids[rows]) == {"libero_goal/0" if task == DRAWER else "libero_goal/8"}
        assert demos.frame_index[rows].tolist() == list(range(len(ep["actions"])))
        assert demos.success[rows].tolist() == [False] * (len(ep["actions"]) - 1) + [True]
    assert demos.meta["format"] == LIBERO_HDF5 and demos.meta["episodes"] == 4
    assert demos.meta["data_hash"] == demos.compute_data_hash()
    assert demos.meta["tasks"] == {"libero_goal/0": {"kept": 3}, "libero_goal/8": {"kept": 1}}
    with pytest.raises(ValueError):  # frames are read-only, like the native memmaps
        demos.images["agentview"][0, 0, 0, 0] = 1


def test_libero_options(tmp_path, libero_dir):
    root, eps = libero_dir
    one = root / f"{BOWL}_demo.hdf5"
    ep = eps[BOWL]["demo_0"]
    raw = load_libero_hdf5(one, rotate_180=False, cameras=("wrist",), image_size=8, suite=StubSuite(),
                           compute_hash=False)
    assert raw.cameras == ("wrist",) and raw.images["wrist"].shape == (6, 8, 8, 3)
    assert raw.path == root  # a directory: feature caches live next to the data
    from PIL import Image

    expect = np.asarray(Image.fromarray(ep["eye_in_hand_rgb"][0]).resize((8, 8), Image.BILINEAR))
    np.testing.assert_array_equal(raw.images["wrist"][0], expect)
    # a file already in the opencv (upright) convention is not rotated by default
    upright = write_libero(tmp_path / "libero_goal" / f"{BOWL}_demo.hdf5", BOWL, {"demo_0": ep},
                           convention="opencv")
    np.testing.assert_array_equal(load_libero_hdf5(upright, suite=StubSuite()).images["agentview"],
                                  ep["agentview_rgb"])
    assert load_libero_hdf5(one, suite=StubSuite(), max_demos_per_file=1).num_episodes == 1
    # a quaternion ee_ori (x, y, z, w) becomes the env's axis-angle
    q = write_libero(tmp_path / "q" / f"{BOWL}_demo.hdf5", BOWL, {"demo_0": ep}, benchmark=None)
    with h5py.File(q, "r+") as f:
        del f["data/demo_0/obs/ee_ori"]
        angle = 0.5
        quat = np.tile([0.0, 0.0, np.sin(angle / 2), np.cos(angle / 2)], (6, 1))
        f["data/demo_0/obs"].create_dataset("ee_ori", data=quat)
    d = load_libero_hdf5(q)
    np.testing.assert_allclose(d.states[:, 3:6], np.tile([0, 0, angle], (6, 1)), atol=1e-6)
    # no bddl_file_name and a folder that is no LIBERO benchmark: the task name is the id
    assert set(d.task_ids) == {BOWL}


def test_libero_ids_from_the_installed_suite(tmp_path, libero_dir):
    try:
        from benchmarks.libero.suite import LiberoSuite

        goal = LiberoSuite("libero_goal")
        tasks = goal.tasks()
    except BenchError as e:
        pytest.skip(f"LIBERO not installed: {e}")
    by_name = {t.attributes["name"]: t.task_id for t in tasks}
    root, _ = libero_dir
    demos = load_demos(root / f"{DRAWER}_demo.hdf5", suite=goal)  # dispatch, suite checked
    assert set(demos.task_ids) == {by_name[DRAWER]}
    assert demos.meta["task_ids"] == "suite"
    assert set(load_libero_hdf5(root, compute_hash=False).task_ids) == {by_name[DRAWER], by_name[BOWL]}
    # the benchmark the file names lacks the task: "<benchmark>/<task name>", no error
    odd = write_libero(tmp_path / "libero_goal" / "wave_hello_demo.hdf5", BOWL,
                       {"demo_0": _episode(np.random.default_rng(3), 2)}, benchmark=None, problem_info=False)
    d = load_libero_hdf5(odd, compute_hash=False)
    assert set(d.task_ids) == {"libero_goal/wave_hello"} and d.meta["task_ids"] == "benchmark/name"
    assert set(d.instructions) == {"wave hello"}  # no problem_info: LIBERO's file-name rule


def test_libero_feeds_training(libero_dir):
    root, _ = libero_dir
    demos = load_demos(root, suite=StubSuite(), image_size=32, compute_hash=False)
    _train_batch_loss(demos, ("agentview", "wrist"))


def test_training_reads_libero_files_for_its_cameras_only(tmp_path):
    """`apt-bench demos --cameras agentview` writes files without the wrist camera; training on
    agentview reads them (the loader's default wants both cameras and says so)."""
    from apt.training.options import TrainOptions
    from apt.training.recipes.common import load_training_demos

    root = tmp_path / "libero_goal"
    write_libero(root / f"{DRAWER}_demo.hdf5", DRAWER, {"demo_0": _episode(np.random.default_rng(1), 4)},
                 cameras=("agentview_rgb",))
    opts = TrainOptions(policy="apt_pi0", demos=str(root), cameras=("agentview",))
    # load_training_demos hands the suite to the loader (a stand-in: no LIBERO install needed)
    demos = load_training_demos(opts, StubSuite())
    assert list(demos.images) == ["agentview"] and len(demos.actions) == 4
    with pytest.raises(BenchError, match="no 'obs/eye_in_hand_rgb'"):
        load_demos(root, suite=StubSuite(), compute_hash=False)


def test_libero_errors(tmp_path, libero_dir):
    root, eps = libero_dir
    with pytest.raises(BenchError, match="file not found"):
        load_libero_hdf5(tmp_path / "missing_demo.hdf5")
    other = StubSuite(name="libero_spatial", table=[TaskSpec("libero_spatial/0", "pick up the bowl", 220,
                                                             {"name": "pick_up_the_bowl"})])
    with pytest.raises(BenchError, match="is not a task of suite 'libero_spatial'"):
        load_libero_hdf5(root, suite=other)
    bad = write_libero(tmp_path / "bad" / f"{BOWL}_demo.hdf5", BOWL, {"demo_0": eps[BOWL]["demo_0"]})
    with h5py.File(bad, "r+") as f:
        del f["data/demo_0/obs/eye_in_hand_rgb"]
    with pytest.raises(BenchError, match=r"demo_0 has no 'obs/eye_in_hand_rgb' \(obs keys: .*choose cameras"):
        load_libero_hdf5(bad, suite=StubSuite())
    empty = tmp_path / "empty" / "x_demo.hdf5"
    empty.parent.mkdir()
    with h5py.File(empty, "w") as f:
        f.create_group("something")
    with pytest.raises(BenchError, match="no 'data' group; not a LIBERO"):
        load_demos(empty)
    with pytest.raises(BenchError, match="unknown LIBERO camera"):
        load_libero_hdf5(root, cameras=("front",))
    with pytest.raises(BenchError, match="apply to LIBERO / LeRobot datasets only"):
        load_demos(tmp_path / "nowhere", image_size=8)


# --------------------------------------------------------------------------------------------
# LeRobot


def test_lerobot_round_trip(lerobot_dir):
    root, eps = lerobot_dir
    demos = load_demos(root)  # dispatch
    assert demos.meta["format"] == LEROBOT and demos.num_episodes == 3
    assert demos.cameras == ("agentview", "wrist")  # image -> agentview, wrist_image -> wrist
    assert demos.episode_starts.tolist() == [0, 4, 10, 13]
    for e, ep in enumerate(eps):
        rows = demos.episode(e)
        np.testing.assert_array_equal(demos.actions[rows], ep["action"].astype(np.float32))
        np.testing.assert_array_equal(demos.states[rows], ep["state"].astype(np.float32))
        np.testing.assert_array_equal(demos.images["agentview"][rows], ep["image"])  # upright: no rotation
        np.testing.assert_array_equal(demos.images["wrist"][rows], ep["wrist_image"])
        assert set(demos.instructions[rows]) == {LEROBOT_TASKS[ep["task"]]}
        assert set(demos.task_ids[rows]) == {f"lerobot/{ep['task']}"}
        assert demos.success[rows][-1] and not demos.success[rows][:-1].any()
    assert demos.meta["data_hash"] == demos.compute_data_hash()


def test_lerobot_options(lerobot_dir):
    root, eps = lerobot_dir
    demos = load_lerobot(root, cameras={"observation.images.image": "front"}, rotate_180=True,
                         episodes=[2, 0], image_size=8, suite=StubSuite(), compute_hash=False)
    assert demos.cameras == ("front",) and demos.images["front"].shape == (7, 8, 8, 3)
    assert demos.episode_starts.tolist() == [0, 3, 7]
    np.testing.assert_array_equal(demos.actions[:3], eps[2]["action"].astype(np.float32))
    full = load_lerobot(root, cameras={"observation.images.image": "front"}, rotate_180=True, episodes=[2])
    np.testing.assert_array_equal(full.images["front"], eps[2]["image"][:, ::-1, ::-1])
    # a task string equal to a suite task's instruction gets that task id
    drawer = load_lerobot(root, episodes=[1], suite=StubSuite(), compute_hash=False)
    assert set(drawer.task_ids) == {"libero_goal/0"}


def test_lerobot_video(tmp_path):
    rng = np.random.default_rng(2)
    eps = [_lerobot_episode(rng, 5, 0), _lerobot_episode(rng, 4, 1)]
    for ep in eps:  # flat colours survive lossy coding; one colour per frame checks the frame order
        colours = rng.integers(30, 226, size=(len(ep["action"]), 1, 1, 3))
        ep["image"] = np.broadcast_to(colours, ep["image"].shape).astype(np.uint8)
    root = write_lerobot(tmp_path / "video", eps, video_keys=("observation.images.image",))
    demos = load_lerobot(root)
    assert demos.images["agentview"].shape == (9, 16, 16, 3)
    for e, ep in enumerate(eps):
        got = demos.images["agentview"][demos.episode(e)].astype(int)
        assert np.abs(got - ep["image"].astype(int)).max() <= 6
        np.testing.assert_array_equal(demos.images["wrist"][demos.episode(e)], ep["wrist_image"])


def test_lerobot_feeds_training(lerobot_dir):
    demos = load_lerobot(lerobot_dir[0], image_size=32)
    _train_batch_loss(demos, ("wrist", "agentview"))


def test_lerobot_errors(tmp_path, lerobot_dir):
    root, eps = lerobot_dir
    v3 = write_lerobot(tmp_path / "v3", eps[:1], version="v3.0")
    with pytest.raises(BenchError, match="LeRobot dataset version 'v3.0'; apt-bench reads v2.0 and v2.1"):
        load_demos(v3)
    with pytest.raises(BenchError, match="no image or video feature"):
        load_lerobot(root, cameras={"observation.images.top": "front"})
    with pytest.raises(BenchError, match="no feature 'observation.joints' for the state"):
        load_lerobot(root, state_key="observation.joints")
    with pytest.raises(BenchError, match="not a LeRobot dataset: no meta/info.json"):
        load_lerobot(tmp_path)
    broken = write_lerobot(tmp_path / "broken", eps[:2])
    (broken / "data" / "chunk-000" / "episode_000001.parquet").unlink()
    with pytest.raises(BenchError, match="episode 1's data file data/chunk-000/episode_000001.parquet not found"):
        load_demos(broken)
