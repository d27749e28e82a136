"""Evaluation engine logic, in-process (`--workers 0`), against the stub suite (tests/stub_suite.py).

Covers: the rollout protocol (chunks, replanning, max steps), instruction provenance, fault
handling (retry once, then record the error), the paired deterministic work list, resume by key,
videos, the reference policies, and bad input through `apt.cli.main`.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from apt.cli import main  # noqa: E402
from apt.eval import runner  # noqa: E402
from apt.policies.reference import OraclePolicy, RandomPolicy  # noqa: E402
from apt.eval.rollout import ProvenanceError, run_episode  # noqa: E402
from apt.eval.store import Store, read_episodes  # noqa: E402
from benchmarks.base import ActionSpec, BenchError, ObservationSpec, PolicySpec  # noqa: E402
from tests import stub_suite as stub  # noqa: E402

STUB = "tests.stub_suite:StubSuite"


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return stub.write_splits(tmp_path_factory.mktemp("splits"))


def _run(store, split, suite=STUB, policy="oracle", episodes=3, **kw):
    return runner.run(policy=policy, split=str(split), suite=suite, episodes=episodes, workers=0,
                      store=str(store), progress=False, quiet=True, **kw)


class CountingPolicy:
    """Chunks of H constant actions toward +x; counts calls."""

    def __init__(self, chunk):
        self.spec = PolicySpec(action=stub.ACTION_SPEC, observation=ObservationSpec(cameras=(), state_dim=2),
                               chunk=chunk)
        self.calls = 0
        self.instructions = []

    def reset(self):
        pass

    def act(self, observations):
        self.calls += 1
        self.instructions.append(observations[0]["instruction"])
        return np.tile(np.array([0.0, 0.01], np.float32), (len(observations), self.spec.chunk, 1))


@pytest.mark.parametrize("chunk,replan,max_steps,calls", [(1, None, 10, 10), (4, None, 10, 3), (4, 2, 10, 5),
                                                         (5, 5, 10, 2)])
def test_rollout_replans_every_replan_steps(chunk, replan, max_steps, calls):
    env = stub.StubSuite().make_env("reach-a", cameras=())
    pol = CountingPolicy(chunk)
    res = run_episode(env, "k", "go", seed=0, max_steps=max_steps, policy=pol, replan_steps=replan)
    assert (res.steps, pol.calls, res.success) == (max_steps, calls, False)
    assert res.instruction == "go" and set(pol.instructions) == {"go"}


def test_rollout_stops_on_success():
    suite = stub.StubSuite()
    res = run_episode(suite.make_env("reach-b", cameras=()), "k", "x", seed=1, max_steps=50,
                      policy=suite.expert("reach-b"))
    assert res.success and 1 <= res.steps < 12


def test_provenance_violation_raises_and_fails_the_run(tmp_path, splits, capsys):
    suite = stub.LyingStubSuite()
    with pytest.raises(ProvenanceError, match="provenance"):
        run_episode(suite.make_env("reach-a", cameras=()), "k", "go", 0, 5, suite.expert("reach-a"))
    with pytest.raises(ProvenanceError):
        _run(tmp_path / "r.sqlite", splits["seen"], suite="tests.stub_suite:LyingStubSuite")
    code = main(["run", "--policy", "oracle", "--split", str(splits["seen"]), "--suite",
                 "tests.stub_suite:LyingStubSuite", "--workers", "0", "--store", str(tmp_path / "c.sqlite")])
    err = capsys.readouterr().err
    assert code != 0 and "instruction provenance violated" in err and "Traceback" not in err
    assert read_episodes(tmp_path / "c.sqlite").empty  # nothing recorded as if it were valid


def test_faults_retry_once_then_record_error(tmp_path, splits):
    stub._flaky_done.clear()
    store = tmp_path / "r.sqlite"
    assert _run(store, splits["seen"], suite="tests.stub_suite:FaultyStubSuite", episodes=5) == 0
    df = read_episodes(store)
    assert len(df) == 3 * 5 and df["key"].is_unique  # nothing lost
    failed = df[df["error"] != ""]
    assert set(failed["seed"]) == set(stub.FAIL_SEEDS) and len(failed) == 3
    assert failed["error"].str.contains("simulated physics blow-up").all()
    assert not failed["success"].any()
    # Flaky seeds failed once, succeeded on the retry.
    assert len(stub._flaky_done) == 3
    assert df[df["seed"].isin(stub.FLAKY_SEEDS)]["success"].all()
    assert df[~df["seed"].isin(stub.FAIL_SEEDS)]["success"].all()


def test_work_list_is_paired_and_deterministic(splits):
    _, _, _, plan, seen = runner.plan_run(policy="oracle", split=str(splits["seen"]), suite=STUB, episodes=4,
                                          seed=10)
    _, _, _, _, para = runner.plan_run(policy="oracle", split=str(splits["paraphrased"]), suite=STUB,
                                       episodes=4, seed=10)
    seeds = lambda planned: {(ep.task_id, ep.seed) for ep in planned.values()}  # noqa: E731
    assert {s for _, s in seeds(seen)} == {10, 11, 12, 13}
    assert seeds(para) == seeds(seen)  # same tasks, same scenes
    assert len(para) == 4 * len(stub.SPLIT_ENTRIES["paraphrased"])
    again = runner.plan_run(policy="oracle", split=str(splits["seen"]), suite=STUB, episodes=4, seed=10)[4]
    assert list(again) == list(seen)
    assert plan.episode_hook and plan.settings.cameras == ()
    # A split file is keyed by its content hash: a copy elsewhere has the same keys.
    copy = Path(splits["seen"]).parent / "copy" / "seen.yaml"
    copy.parent.mkdir(exist_ok=True)
    copy.write_bytes(Path(splits["seen"]).read_bytes())
    assert list(runner.plan_run(policy="oracle", split=str(copy), suite=STUB, episodes=4, seed=10)[4]) == list(seen)


def test_other_rollout_settings_are_other_episodes(splits):
    """Replan steps / step limit are part of an episode's identity: never reused across protocols."""
    plan = lambda **kw: runner.plan_run(policy="oracle", split=str(splits["seen"]), suite=STUB,  # noqa: E731
                                        episodes=2, seed=0, **kw)[4]
    base = plan()
    assert list(plan()) == list(base)
    assert not set(plan(max_steps=5)) & set(base)


def test_rerun_skips_done_episodes(tmp_path, splits, capsys):
    store = tmp_path / "r.sqlite"
    assert runner.run(policy="oracle", split=str(splits["seen"]), suite=STUB, episodes=2, workers=0,
                      store=str(store), progress=False) == 0
    first = read_episodes(store)
    out = capsys.readouterr()
    assert "| ALL" in out.out and "6 to run" in out.err
    assert runner.run(policy="oracle", split=str(splits["seen"]), suite=STUB, episodes=3, workers=0,
                      store=str(store), progress=False) == 0
    assert "6 already stored, 3 to run" in capsys.readouterr().err
    df = read_episodes(store)
    assert len(df) == 9 and df["key"].is_unique
    assert set(first["key"]) <= set(df["key"])
    with Store(store) as db:
        runs = db.runs()
    assert len(runs) == 2 and runs["replan_steps"].iloc[0] == "1" and runs["finished"].notna().all()


def test_control_and_compositional_splits_and_compare(tmp_path, splits, capsys):
    store = tmp_path / "r.sqlite"
    for split in (splits["seen"], f"swapped@{splits['seen']}", splits["compositional"]):
        assert _run(store, split, episodes=4) == 0
    df = read_episodes(store)
    assert set(df["split"]) == {"seen", "swapped", "compositional"}
    sw = df[df["split"] == "swapped"]
    assert (sw["instruction"] != "").all() and sw["success"].all()  # the oracle is language-blind
    assert main(["compare", "--store", str(store), "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert "swapped" in out and "0.00 [0.00, 0.00]" in out  # reliance 0 for the oracle


def test_video_recorded_per_episode(tmp_path, splits):
    store = tmp_path / "r.sqlite"
    assert _run(store, splits["seen"], episodes=1, video=True) == 0
    df = read_episodes(store)
    assert (df["video"] != "").all()
    for path in df["video"]:
        assert Path(path).is_file() and Path(path).stat().st_size > 0
    import imageio.v2 as imageio

    frames = imageio.mimread(df["video"].iloc[0])
    assert len(frames) == df["steps"].iloc[0] + 1


def test_reference_policies():
    suite = stub.StubSuite()
    oracle = OraclePolicy(suite=suite, seed=0)
    assert oracle.spec.chunk == 1 and oracle.spec.observation.cameras == ()
    with pytest.raises(BenchError, match="episode_policy"):
        oracle.act([{}])
    assert oracle.episode_policy("reach-a").act(
        [suite.make_env("reach-a", cameras=()).reset(seed=0)]).shape == (1, 1, 2)
    rnd = RandomPolicy(suite=suite, seed=3, chunk=4)
    a = rnd.act([{}, {}])
    assert a.shape == (2, 4, 2) and a.dtype == np.float32 and a.min() >= -1 and a.max() <= 1
    assert np.array_equal(a, RandomPolicy(suite=suite, seed=3, chunk=4).act([{}, {}]))


def test_spec_mismatch_stops_before_any_episode(tmp_path, splits, monkeypatch):
    class WideSuite(stub.StubSuite):
        action_spec = ActionSpec(dim=2, mode="absolute", rotation="none", gripper="none")

    monkeypatch.setattr(stub, "WideSuite", WideSuite, raising=False)
    policy = RandomPolicy(suite=stub.StubSuite())  # delta actions
    monkeypatch.setattr(runner, "build_policy", lambda *a, **k: policy)
    with pytest.raises(BenchError, match="action mode"):
        _run(tmp_path / "r.sqlite", splits["seen"], suite="tests.stub_suite:WideSuite")
    assert read_episodes(tmp_path / "r.sqlite").empty


# ------------------------------------------------------------------------------------------------
# Bad input through the CLI: non-zero exit, one clear line, no traceback.

@pytest.mark.parametrize("args,needle", [
    (["--policy", "oracel", "--split", "seen"], "unknown policy 'oracel' (did you mean 'oracle'?)"),
    (["--policy", "oracle", "--split", "seenn"], "unknown split 'seenn'"),
    (["--policy", "oracle", "--split", "seen", "--suite", "tabletopp"], "unknown suite 'tabletopp'"),
    (["--policy", "oracle", "--split", "seen", "--device", "cuda"], "rerun with --device cpu"),
    (["--policy", "oracle", "--split", "seen", "--device", "tpu"], "unknown device 'tpu'"),
    (["--policy", "oracle", "--split", "seen", "--replan-steps", "3"], "exceeds the policy's chunk length 1"),
    (["--policy", "oracle", "--split", "seen", "--noise-scale", "0"], "applies to policies that sample noise"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, args, needle):
    if "cuda" in args:
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
    code = main(["run", *args, "--workers", "0", "--store", str(tmp_path / "r.sqlite")])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_unwritable_store_and_negative_workers(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code = main(["run", "--policy", "oracle", "--split", "seen", "--workers", "0",
                 "--store", str(tmp_path / "file" / "r.sqlite")])
    err = capsys.readouterr().err
    assert code == 2 and "not writable" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["run", "--policy", "oracle", "--split", "seen", "--workers", "-1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--workers" in err and "must be >= 0" in err and "Traceback" not in err
    with pytest.raises(BenchError, match="--workers must be >= 0"):
        runner.run(policy="oracle", split="seen", workers=-1, store=str(tmp_path / "r.sqlite"))


def test_compare_on_missing_store(tmp_path, capsys):
    assert main(["compare", "--store", str(tmp_path / "none.sqlite")]) == 2
    assert "not found" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# The real tabletop suite, end to end in-process (few episodes; the oracle needs no rendering).

def test_tabletop_oracle_end_to_end(tmp_path, capsys):
    # Through the suite's importer: a bare `import mujoco` would fix the GL backend to none for
    # every later test of this process that renders.
    from benchmarks.tabletop.render import import_mujoco

    try:
        import_mujoco()
    except ImportError:
        pytest.skip("mujoco is not installed")
    store = tmp_path / "r.sqlite"
    assert main(["run", "--policy", "oracle", "--split", "seen", "--episodes", "1", "--workers", "0",
                 "--store", str(store)]) == 0
    df = read_episodes(store)
    assert len(df) == 24 and df["error"].eq("").all()
    assert df["success"].mean() >= 0.9
    assert (df["instruction"] == df["instruction"]).all() and df["split_key"].eq("seen").all()
    assert "| ALL" in capsys.readouterr().out


def test_ray_layout_is_sized_from_measured_costs():
    """apt/eval/sizing.py: the policy's batch in flight per worker; policy actors for the cores its
    share of the work needs (one thread each up to MAX_POLICY_ACTORS); what the user set is kept."""
    from apt.eval.sizing import MAX_POLICY_ACTORS, Costs, Layout, layout

    policy_heavy = Costs(env_s=0.01, policy_s=0.02, batch=8)  # apt_pi0 on 2 cores, roughly
    assert layout(policy_heavy, cpus=2, episodes=96) == Layout(workers=2, in_flight=8, policy_actors=2,
                                                               policy_threads=1)
    env_heavy = Costs(env_s=0.05, policy_s=0.005, batch=8)
    assert layout(env_heavy, cpus=8).policy_actors == 1 and layout(env_heavy, cpus=8).workers == 8
    big = layout(policy_heavy, cpus=32)
    assert big.policy_actors == MAX_POLICY_ACTORS and big.policy_threads == 5
    assert layout(policy_heavy, cpus=2, workers=6, in_flight=1) == Layout(6, 1, 2, 1)
    assert layout(policy_heavy, cpus=2, episodes=6).in_flight == 3  # few episodes: spread, not idle
    assert layout(policy_heavy, cpus=2, policy_actors=1).policy_actors == 1  # a GPU's actors are kept


def test_engine_is_chosen_from_measured_costs():
    """apt/eval/sizing.py: Ray only when predicted clearly faster on the cores its own processes
    leave: never on 2 cores, from 3 cores on for a policy-heavy run, on many cores for env work;
    in-process, the policy computes on one thread when that measured faster (a busy machine)."""
    from apt.eval.sizing import RAY_MARGIN, Costs, engine

    policy_heavy = Costs(env_s=0.005, policy_s=0.018, batch=8, policy_all_s=0.012)  # apt_pi0, 2 cores
    picked = engine(policy_heavy, cpus=2)
    assert (picked.name, picked.threads) == ("in-process", 2)
    assert picked.local_s == pytest.approx(0.017) and picked.ray_s == pytest.approx(0.023)
    busy = Costs(env_s=0.005, policy_s=0.018, batch=8, policy_all_s=0.037)  # 2 threads slower than one
    picked = engine(busy, cpus=2)
    assert (picked.name, picked.threads, picked.local_s) == ("in-process", 1, pytest.approx(0.023))
    assert engine(policy_heavy, cpus=3).name == "ray"  # (0.005 + 0.018) / 2 = 0.0115 vs 0.017
    one_core = engine(policy_heavy, cpus=1)
    assert one_core.name == "in-process" and one_core.ray_s == math.inf
    env_heavy = Costs(env_s=0.05, policy_s=0.005, batch=8, policy_all_s=0.004)
    picked = engine(env_heavy, cpus=2)
    assert picked.name == "in-process" and picked.ray_s == pytest.approx(0.055)  # one spare core: no gain
    picked = engine(env_heavy, cpus=3)
    assert picked.name == "ray" and RAY_MARGIN * picked.ray_s < picked.local_s
    assert engine(env_heavy, cpus=8).name == "ray"
    unmeasured = Costs(env_s=0.005, policy_s=0.018, batch=8)  # all-threads cost unknown: the 1-thread one
    assert engine(unmeasured, cpus=2).local_s == pytest.approx(0.023)
