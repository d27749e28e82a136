"""The Ray fan-out: worker death and simulator faults, batched policy actors, provenance, and equality
with the in-process engine. One small local Ray cluster for the module (2 CPUs, no dashboard)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from apt.eval import runner  # noqa: E402
from apt.eval.ray_pool import run_ray  # noqa: E402
from apt.eval.rollout import ProvenanceError  # noqa: E402
from apt.eval.store import read_episodes  # noqa: E402
from tests import stub_suite as stub  # noqa: E402

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    started = not ray.is_initialized()
    if started:  # workers import tests.stub_suite by reference: put the repository on their path
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return stub.write_splits(tmp_path_factory.mktemp("splits"))


def _run(store, split, suite, policy="oracle", episodes=4, workers=2):
    return runner.run(policy=policy, split=str(split), suite=suite, episodes=episodes, workers=workers,
                      store=str(store), progress=False, quiet=True)


def test_dead_worker_and_simulator_faults_cost_one_episode_each(cluster, splits, tmp_path):
    store = tmp_path / "dying.sqlite"
    assert _run(store, splits["seen"], "tests.stub_suite:DyingStubSuite") == 0
    df = read_episodes(store)
    assert len(df) == 12 and df["key"].is_unique  # the run finished, nothing lost
    bad = df[df["error"] != ""]
    assert list(zip(bad["task_id"], bad["seed"])) == [("reach-a", s) for s in stub.DIE_SEEDS]
    assert bad["error"].str.contains("env worker process died").all() and not bad["success"].any()
    assert df[df["error"] == ""]["success"].all()

    store = tmp_path / "faulty.sqlite"
    assert _run(store, splits["seen"], "tests.stub_suite:FaultyStubSuite") == 0
    df = read_episodes(store)
    assert len(df) == 12 and df["key"].is_unique
    bad = df[df["error"] != ""]
    assert set(bad["seed"]) == set(stub.FAIL_SEEDS) and len(bad) == 3
    assert bad["error"].str.contains("simulated physics blow-up").all()
    assert df[df["seed"].isin(stub.FLAKY_SEEDS)]["success"].all()  # transient fault: the retry passed


def test_dead_worker_is_replaced_and_retried_on_a_fresh_process(cluster, splits):
    _, pol, _, plan, planned = runner.plan_run(policy="oracle", split=str(splits["seen"]),
                                               suite="tests.stub_suite:DyingStubSuite", episodes=4)
    results = []
    stats = run_ray(list(planned.values()), plan, 2, results.append)
    assert sorted(r.key for r in results) == sorted(planned)
    dead = [r for r in results if r.error]
    assert len(dead) == 1 and dead[0].attempts == 2
    # The first attempt and the retry each kill a worker; one more death when the first one happened
    # with a second episode in flight (then both are rerun alone, uncharged, to find the culprit).
    assert stats["worker_restarts"] in (2, 3), stats
    assert (planned[dead[0].key].task_id, planned[dead[0].key].seed) == ("reach-a", stub.DIE_SEEDS[0])
    assert all(r.attempts == 1 for r in results if not r.error)  # innocent neighbours were not charged


def test_batched_policy_actor_serves_all_workers(cluster, splits):
    suite, pol, _, plan, planned = runner.plan_run(policy="random", split=str(splits["paraphrased"]),
                                                   suite="tests.stub_suite:StubSuite", episodes=3)
    assert not plan.episode_hook  # random is served by a policy actor
    results = []
    stats = run_ray(list(planned.values()), plan, 2, results.append)
    assert sorted(r.key for r in results) == sorted(planned) and not any(r.error for r in results)
    sizes = stats["batch_sizes"]
    assert sum(sizes) == sum(r.steps for r in results)  # chunk 1: one observation per step
    assert max(sizes) <= 2 and min(sizes) >= 1


def test_provenance_violation_stops_a_ray_run(cluster, splits, tmp_path):
    with pytest.raises(ProvenanceError):
        _run(tmp_path / "r.sqlite", splits["seen"], "tests.stub_suite:LyingStubSuite")


def test_ray_and_in_process_give_the_same_episodes(cluster, splits, tmp_path):
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    assert _run(a, splits["paraphrased"], "tests.stub_suite:StubSuite", workers=0) == 0
    assert _run(b, splits["paraphrased"], "tests.stub_suite:StubSuite", workers=2) == 0
    cols = ["key", "success", "steps", "instruction", "seed", "task_id"]
    da = read_episodes(a)[cols].sort_values("key").reset_index(drop=True)
    db = read_episodes(b)[cols].sort_values("key").reset_index(drop=True)
    assert da.equals(db)



def test_a_stochastic_policy_plays_the_same_episodes_on_ray_and_in_process(cluster, splits, tmp_path):
    """Random draws are keyed by each observation's sample_key (task, seed, step), so the random
    policy, served by a batching policy actor to two workers, plays exactly the episodes it plays
    alone in-process (LearnedPolicy keys its flow noise the same way: tests/test_training.py)."""
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    assert _run(a, splits["paraphrased"], "tests.stub_suite:EasyStubSuite", policy="random", workers=0) == 0
    assert _run(b, splits["paraphrased"], "tests.stub_suite:EasyStubSuite", policy="random", workers=2) == 0
    cols = ["key", "success", "steps", "seed", "task_id"]
    da = read_episodes(a)[cols].sort_values("key").reset_index(drop=True)
    db = read_episodes(b)[cols].sort_values("key").reset_index(drop=True)
    assert len(da) >= 8 and da.equals(db)
    assert da["steps"].nunique() > 1  # the draws matter: episodes differ from one another
