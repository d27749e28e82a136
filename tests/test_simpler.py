"""The SimplerEnv suite against the real ManiSkill3 (mani-skill 3.0.1) Bridge tasks: task table,
instruction sets, envs (shapes, actions), instruction provenance, the scripted expert, the engine
end to end, and the errors when the stack is missing.

Real-simulator tests need mani-skill, a Vulkan driver (lavapipe >= 24.3 on CPU) and the Bridge
assets; the shared offline copy is used when MS_ASSET_DIR is unset (../shared/simpler_assets).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.base import BenchError, Env, Suite
from conftest import assert_imports_lazily

REPO = Path(__file__).resolve().parent.parent
SETS = REPO / "instruction_sets" / "simpler"
SHARED_ASSETS = REPO.parent / "shared" / "simpler_assets"
LVP = "/usr/share/vulkan/icd.d/lvp_icd.json"
TASKS = ("widowx_spoon_on_towel", "widowx_carrot_on_plate", "widowx_stack_cube",
         "widowx_put_eggplant_in_basket")
COMP_TASKS = ("widowx_carrot_on_towel", "widowx_spoon_on_plate", "widowx_stack_yellow_on_green",
              "widowx_green_cube_on_plate")

# Before anything imports mani_skill (it reads MS_ASSET_DIR at import).
if "MS_ASSET_DIR" not in os.environ and SHARED_ASSETS.is_dir():
    os.environ["MS_ASSET_DIR"] = str(SHARED_ASSETS)
os.environ.setdefault("MS_SKIP_ASSET_DOWNLOAD_PROMPT", "1")
if "VK_ICD_FILENAMES" not in os.environ and Path(LVP).is_file():
    os.environ["VK_ICD_FILENAMES"] = LVP


def _why_no_sim() -> str:
    from benchmarks.simpler import stack

    if not stack.have_maniskill():
        return "mani-skill is not importable here (install with `bash install.sh --simpler`)"
    if stack.missing_assets():
        return f"SimplerEnv Bridge assets missing: {stack.missing_assets()} (set MS_ASSET_DIR)"
    if not stack.vulkan_icds():
        return "no Vulkan driver (install Mesa lavapipe >= 24.3: `bash install.sh --simpler`)"
    return ""


_WHY = _why_no_sim()
needs_sim = pytest.mark.skipif(bool(_WHY), reason=_WHY or "ok")


@pytest.fixture(scope="module")
def suite():
    from benchmarks.simpler import SimplerSuite

    return SimplerSuite()


# --- without the simulator -----------------------------------------------------------------------


def test_import_is_lazy():
    assert_imports_lazily("import benchmarks.simpler as S; s = S.SimplerSuite(); s.tasks()",
                          ("mani_skill", "sapien", "gymnasium", "torch"))


def test_tasks_and_specs(suite):
    assert isinstance(suite, Suite)
    tasks = {t.task_id: t for t in suite.tasks()}
    assert tuple(tasks) == TASKS + COMP_TASKS
    assert [t.train for t in tasks.values()] == [True] * 4 + [False] * 4
    assert tasks["widowx_carrot_on_plate"].instruction == "put carrot on plate"
    assert tasks["widowx_put_eggplant_in_basket"].max_steps == 120
    assert all(tasks[t].max_steps == 60 for t in TASKS[:3])
    assert tasks["widowx_stack_cube"].attributes["env_id"] == "StackGreenCubeOnYellowCubeBakedTexInScene-v1"
    a = suite.action_spec
    assert (a.dim, a.mode, a.rotation, a.gripper) == (7, "delta", "euler", "last dim: -1 open, +1 closed")
    assert suite.observation_spec.cameras == ("3rd_view_camera",) and suite.observation_spec.state_dim == 8
    proto = suite.protocol()
    assert proto["control_freq_hz"] == 5 and proto["max_steps"]["widowx_put_eggplant_in_basket"] == 120
    with pytest.raises(BenchError, match="did you mean 'widowx_stack_cube'"):
        suite.make_env("widowx_stack_cubes")
    with pytest.raises(BenchError, match="unknown SimplerEnv camera"):
        suite.make_env("widowx_stack_cube", cameras=("wrist",))


def test_instruction_sets_validate(capsys):
    from apt.cli import main
    from apt.splits.instruction_set import load_instruction_set
    from apt.splits.resolve import load_split

    assert main(["splits", "--suite", "simpler", "--check"]) == 0
    assert "ok: 5 file(s)" in capsys.readouterr().out
    from apt.registry import get_suite

    tasks = get_suite("simpler").tasks()
    para = load_split("simpler", "paraphrased", tasks)
    for tid in TASKS:
        assert len(para.by_task()[tid]) >= 5
        assert len(load_split("simpler", "unseen", tasks).by_task()[tid]) >= 5
    seen = load_instruction_set(SETS / "seen.yaml")
    assert {e.task_id: e.instruction for e in seen.entries} == {t.task_id: t.instruction for t in tasks if t.train}
    assert len(load_split("simpler", "swapped@paraphrased", tasks).entries) == len(para.entries)
    comp = load_split("simpler", "compositional", tasks).by_task()
    assert set(comp) == set(COMP_TASKS)
    # Each compositional task's canonical entry is its env's instruction; none is a training task.
    by_id = {t.task_id: t for t in tasks}
    for tid, entries in comp.items():
        assert entries[0].instruction == by_id[tid].instruction and not by_id[tid].train


def test_missing_maniskill_names_the_install_command(monkeypatch, suite):
    from benchmarks.simpler import stack

    monkeypatch.setattr(stack, "have_maniskill", lambda: False)
    with pytest.raises(BenchError, match=r"bash install.sh --simpler") as err:
        suite.make_env("widowx_carrot_on_plate")
    assert "pip install 'apt-bench[simpler]'" in str(err.value)


def test_missing_assets_and_vulkan_name_the_fix(monkeypatch, suite):
    from benchmarks.simpler import stack

    monkeypatch.setattr(stack, "have_maniskill", lambda: True)
    monkeypatch.setattr(stack, "missing_assets", lambda: ["/nowhere/data/robots/widowx"])
    with pytest.raises(BenchError, match=r"assets are missing.*MS_ASSET_DIR"):
        suite.make_env("widowx_carrot_on_plate")
    monkeypatch.setattr(stack, "missing_assets", lambda: [])
    monkeypatch.setattr(stack, "vulkan_icds", lambda: [])
    with pytest.raises(BenchError, match=r"lavapipe.*bash install.sh --simpler"):
        suite.make_env("widowx_carrot_on_plate")


def test_simpler_env_backend_says_how_to_install(monkeypatch):
    from benchmarks.simpler import SimplerSuite, simpler, stack

    monkeypatch.setattr(stack, "have_simpler_env", lambda: False)
    with pytest.raises(BenchError, match=r"original SimplerEnv is not installed.*ManiSkill2_real2sim"):
        simpler(backend="simpler_env").make_env("widowx_carrot_on_plate")
    with pytest.raises(BenchError, match="did you mean 'maniskill3'"):
        simpler(backend="maniskill")
    with pytest.raises(BenchError, match="--suite simpler_env"):
        SimplerSuite(backend="simpler_env")


# --- the real simulator ------------------------------------------------------------------------


@needs_sim
@pytest.mark.slow
@pytest.mark.parametrize("task_id", TASKS + COMP_TASKS)
def test_env_reset_and_step(suite, task_id):
    env = suite.make_env(task_id, image_size=64)
    try:
        assert isinstance(env, Env)
        obs = env.reset(seed=0)
        assert obs["instruction"] == {t.task_id: t for t in suite.tasks()}[task_id].instruction
        for _ in range(3):
            obs, done, info = env.step(np.zeros(7, np.float32))
            assert isinstance(info["success"], bool) and done == info["success"] and not done
        img = obs["images"]["3rd_view_camera"]
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and img.std() > 1
        assert obs["state"].shape == (8,) and obs["state"].dtype == np.float32
        assert np.all(np.isfinite(obs["state"]))
        priv = obs["privileged"]
        assert priv["task_id"] == task_id and priv["episode_id"] == 0
        assert set(priv["objects"]) == {priv["source"], priv["target"]}
        from benchmarks.simpler.tasks import BY_ID

        assert priv["source"] == BY_ID[task_id].source_model
        with pytest.raises(BenchError, match="7"):
            env.step(np.zeros(4))
        assert env.reset(seed=env.n_configs + 1)["privileged"]["episode_id"] == 1
    finally:
        env.close()


@needs_sim
@pytest.mark.slow
def test_provenance_paraphrase_reaches_the_policy(suite):
    """The split's paraphrase, not the env's own instruction, is what every observation carries;
    the physics does not depend on it (paired design)."""
    from apt.splits.instruction_set import load_instruction_set

    para = load_instruction_set(SETS / "paraphrased.yaml").by_task()["widowx_carrot_on_plate"][0]
    unseen = load_instruction_set(SETS / "unseen.yaml").by_task()["widowx_carrot_on_plate"][0]
    env = suite.make_env("widowx_carrot_on_plate", cameras=())
    try:
        states = []
        for entry in (para, unseen):
            obs = env.reset(seed=5, instruction=entry.instruction)
            assert obs["instruction"] == entry.instruction and obs["images"] == {}
            for _ in range(2):
                obs, _, _ = env.step(np.array([0.01, 0, 0, 0, 0, 0, -1], np.float32))
                assert obs["instruction"] == entry.instruction
            states.append(obs["state"])
        np.testing.assert_allclose(states[0], states[1], atol=1e-5)
        assert env.reset(seed=5)["instruction"] == "put carrot on plate"
        assert env.reset(seed=5, instruction="")["instruction"] == ""  # blank control
    finally:
        env.close()


@needs_sim
@pytest.mark.slow
@pytest.mark.parametrize("task_id", TASKS + COMP_TASKS)
def test_expert_solves_each_task(suite, task_id):
    env = suite.make_env(task_id, cameras=())
    max_steps = {t.task_id: t.max_steps for t in suite.tasks()}[task_id]
    try:
        wins = 0
        for seed in (0, 7):
            expert = suite.expert(task_id)
            obs = env.reset(seed=seed)
            for _ in range(max_steps):
                obs, done, info = env.step(expert.act([obs])[0, 0])
                if done:
                    break
            wins += info["success"]
        assert wins == 2
    finally:
        env.close()


@needs_sim
@pytest.mark.slow
def test_random_policy_paraphrased_end_to_end(run_episodes):
    """`apt-bench run --suite simpler --policy random --split paraphrased --episodes 1`: every entry
    runs one full episode, and the stored instruction is the split's text."""
    from apt.splits.instruction_set import load_instruction_set

    df, out = run_episodes("--suite", "simpler", "--policy", "random", "--split", "paraphrased", "--episodes", "1")
    assert "ALL" in out
    para = {e.id: e.instruction for e in load_instruction_set(SETS / "paraphrased.yaml").entries}
    assert len(df) == len(para)
    limit = df["task_id"].map({"widowx_put_eggplant_in_basket": 120}).fillna(60)
    assert ((df["suite"] == "simpler") & (df["error"] == "") & (df["steps"] > 0) & (df["steps"] <= limit)).all()
    assert (df["instruction_id"].map(para) == df["instruction"]).all()


@needs_sim
@pytest.mark.slow
@pytest.mark.parametrize("split,tasks", [("seen", TASKS), ("compositional", COMP_TASKS)])
def test_oracle_through_the_engine(run_episodes, split, tasks):
    """`apt-bench run --suite simpler --policy oracle --split seen|compositional`: the expert
    through the engine, on SimplerEnv's tasks and on the recombined ones."""
    df, _ = run_episodes("--suite", "simpler", "--policy", "oracle", "--split", split, "--episodes", "1")
    assert sorted(set(df["task_id"])) == sorted(tasks)
    assert (df["success"] & (df["error"] == "")).all()
