"""Scripted-expert demonstrations: generated with the real simulator at a small image size,
read back through the one reader, identical whatever the number of worker processes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from apt import cli
from apt.splits.resolve import load_split
from apt.demos.episodes import DEMO_SEED_BASE, episode_seed
from apt.demos.formats import load_demos
from apt.demos.generate import generate_demos
from apt.demos.native import META_FILE, image_file
from benchmarks.base import BenchError


TASKS = ["place-red-plate", "stack-blue-green", "push-yellow-left"]
SIZE = 24



@pytest.fixture(scope="module")
def made(tmp_path_factory, suite):
    """The same small dataset made in-process and with 2 spawned workers."""
    root = tmp_path_factory.mktemp("demos")
    out = {}
    for workers in (0, 2):
        out[workers] = generate_demos(suite, root / f"w{workers}", episodes_per_task=2,
                                      workers=workers, seed=3, image_size=SIZE, tasks=TASKS,
                                      progress=False)
    return out


def test_worker_count_does_not_change_the_data(made):
    assert made[0].data_hash == made[2].data_hash
    assert made[0].frames == made[2].frames
    a, b = load_demos(made[0].path), load_demos(made[2].path)
    np.testing.assert_array_equal(a.images["front"], b.images["front"])
    np.testing.assert_array_equal(a.actions, b.actions)


def test_dataset_shapes_and_labels(made, suite):
    s = made[2]
    assert s.failed == 0 and s.errors == 0 and s.per_task == {t: 2 for t in TASKS}
    demos = load_demos(s.path, suite=suite, suite_version=suite.version, verify=True)
    n = len(demos)
    assert n == s.frames and demos.num_episodes == 6
    assert demos.states.shape == (n, suite.observation_spec.state_dim)
    assert demos.actions.shape == (n, suite.action_spec.dim) and demos.actions.dtype == np.float32
    assert set(demos.cameras) == set(suite.observation_spec.cameras)
    for cam, img in demos.images.items():
        assert img.shape == (n, SIZE, SIZE, 3) and img.dtype == np.uint8
        assert isinstance(img, np.memmap)  # memory-mapped, not loaded
        assert img.std() > 5  # real renders, not blank frames
    # Every label is a train.yaml instruction of that very task; no held-out task appears.
    train = load_split("tabletop", "train", suite.tasks())
    allowed = {(e.task_id, e.instruction) for e in train.entries}
    assert set(zip(demos.task_ids, demos.instructions)) <= allowed
    held_out = {t.task_id for t in suite.tasks() if not t.train}
    assert not set(demos.task_ids) & held_out
    assert set(demos.task_ids) == set(TASKS)
    # Episodes: contiguous rows, frames counted from 0, success reached on the last row only.
    for e, rows in enumerate(demos.episodes()):
        assert (demos.episode_index[rows] == e).all()
        np.testing.assert_array_equal(demos.frame_index[rows], np.arange(rows.stop - rows.start))
        assert len(set(demos.task_ids[rows])) == 1 and len(set(demos.seeds[rows])) == 1
        assert demos.success[rows][-1] and demos.rewards[rows].sum() == 1.0
        assert demos.seeds[rows][0] >= DEMO_SEED_BASE  # never an evaluation seed
    meta = demos.meta
    assert meta["suite"] == "tabletop" and meta["image_size"] == SIZE and meta["seed"] == 3
    assert meta["instruction_set"]["sha256"] == train.sha256
    assert meta["data_hash"] == s.data_hash and meta["episodes"] == 6


def test_seeds_depend_only_on_identity():
    assert episode_seed(0, "push-red-left", 4) == episode_seed(0, "push-red-left", 4)
    assert len({episode_seed(0, "push-red-left", e) for e in range(100)}) == 100
    assert episode_seed(1, "push-red-left", 0) != episode_seed(0, "push-red-left", 0)


def test_reader_errors_say_what_to_do(made, tmp_path):
    with pytest.raises(BenchError, match="directory not found; make them with `apt-bench demos"):
        load_demos(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchError, match="no meta.json"):
        load_demos(tmp_path / "empty")
    with pytest.raises(BenchError, match="demonstrations of suite 'tabletop', not 'libero'"):
        load_demos(made[0].path, suite=SimpleNamespace(name="libero"))
    with pytest.raises(BenchError, match="version 1, the installed suite is version 9"):
        load_demos(made[0].path, suite_version="9")
    broken = tmp_path / "broken"
    shutil.copytree(made[0].path, broken)
    (broken / image_file("wrist")).unlink()
    with pytest.raises(BenchError, match="missing images_wrist.npy"):
        load_demos(broken)
    meta = json.loads((broken / META_FILE).read_text())
    meta["cameras"] = ["front"]
    meta["data_hash"] = "0" * 64
    (broken / META_FILE).write_text(json.dumps(meta))
    assert load_demos(broken).cameras == ("front",)
    with pytest.raises(BenchError, match="does not match the data_hash"):
        load_demos(broken, verify=True)


def test_generation_refuses_held_out_tasks_and_existing_output(made, suite, tmp_path):
    with pytest.raises(BenchError, match="held out of training"):
        generate_demos(suite, tmp_path / "x", episodes_per_task=1, workers=0, tasks=["place-red-bowl"])
    with pytest.raises(BenchError, match="already holds demonstrations"):
        generate_demos(suite, made[0].path, episodes_per_task=1, workers=0, tasks=TASKS[:1])
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


def test_workers_need_a_picklable_suite_or_make_suite(suite, tmp_path):
    """Spawned workers get `make_suite()` or else the pickled suite; a suite that cannot be pickled
    and comes without a make_suite is refused before any worker starts."""
    unpicklable = type(suite)()
    unpicklable.handle = lambda: None  # e.g. a live simulator handle
    with pytest.raises(BenchError, match="cannot be sent to worker processes.*make_suite"):
        generate_demos(unpicklable, tmp_path / "x", episodes_per_task=1, workers=1, tasks=TASKS[:1],
                       progress=False)


def test_demos_command_end_to_end(tmp_path, capsys, suite):
    out = tmp_path / "all"
    rc = cli.main(["demos", "--out", str(out), "--episodes-per-task", "1", "--workers", "2",
                   "--image-size", "16"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "24/24 episodes succeeded" in text
    demos = load_demos(out, suite=suite)
    assert demos.num_episodes == 24 and demos.images["front"].shape[1:] == (16, 16, 3)
    assert not Path(str(out) + ".partial").exists()


def _demos_via_cli(tmp_path, capsys, suite, task: str, *option_sets: list[str]) -> list:
    """`apt-bench demos` of one task (2 episodes, 16 px) once per option set, read back."""
    made = []
    for i, options in enumerate(option_sets):
        out = tmp_path / f"set{i}"
        rc = cli.main(["demos", "--out", str(out), "--episodes-per-task", "2", "--workers", "0",
                       "--image-size", "16", "--tasks", task, *options])
        assert rc == 0, capsys.readouterr().out
        made.append(load_demos(out, suite=suite))
    return made


def test_demos_command_expert_noise_sets_the_labels_noise(tmp_path, capsys, suite):
    """--expert-noise 0 records clean labels on the same layouts; the default (0.1) noisy ones."""
    clean, noisy = _demos_via_cli(tmp_path, capsys, suite, "push-yellow-left", ["--expert-noise", "0"], [])
    assert clean.meta["expert_noise"] == 0.0 and noisy.meta["expert_noise"] == 0.1
    assert clean.meta["data_hash"] != noisy.meta["data_hash"]
    # Both start from the same seeded layout (same first observation); only the labels differ.
    np.testing.assert_array_equal(clean.images["front"][0], noisy.images["front"][0])
    assert not np.allclose(clean.actions[:5], noisy.actions[:5])
    with pytest.raises(SystemExit):
        cli.main(["demos", "--out", str(tmp_path / "bad"), "--expert-noise", "-0.1"])
    err = capsys.readouterr().err
    assert "--expert-noise" in err and "must be >= 0" in err and "Traceback" not in err


def test_clean_labels_execute_the_noisy_actions_and_record_the_intended_ones(tmp_path, capsys, suite):
    """--clean-labels (DART-style): the same noisy trajectories (states, frames) as the default run,
    but each label is the expert's action before its noise: xyz differ by the noise, grip does not."""
    dart, noisy = _demos_via_cli(tmp_path, capsys, suite, "place-red-plate", ["--clean-labels"], [])
    assert dart.meta["clean_labels"] is True and noisy.meta["clean_labels"] is False
    assert dart.meta["expert_noise"] == noisy.meta["expert_noise"] == 0.1
    np.testing.assert_array_equal(dart.states, noisy.states)  # the executed actions were the same
    np.testing.assert_array_equal(dart.images["front"], noisy.images["front"])
    np.testing.assert_array_equal(dart.actions[:, 3], noisy.actions[:, 3])  # no noise on the gripper
    residual = noisy.actions[:, :3] - dart.actions[:, :3]
    unclipped = np.abs(noisy.actions[:, :3]) < 1.0
    assert 0.07 < residual[unclipped].std() < 0.13, residual[unclipped].std()  # the expert's noise, 0.1
    assert dart.meta["data_hash"] != noisy.meta["data_hash"]


def test_clean_labels_need_an_expert_that_reports_its_intended_actions():
    from apt.demos.record import _labels

    class Blind:  # an expert without `intended`
        intended = None

    with pytest.raises(BenchError, match="does not report its intended"):
        _labels(Blind(), np.zeros((1, 4), np.float32))
