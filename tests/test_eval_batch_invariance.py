"""Same episodes, same answers: the shipped `apt_pi0` (deterministic: its checkpoint sets
noise_scale 0) plays exactly the same episodes (keys, success, steps) in-process one at a time,
in-process several in lockstep, and on Ray with 2 and 6 env workers, although its observations
are batched differently in each (LearnedPolicy runs fixed-shape batches; apt/policies/learned.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from apt.eval import runner  # noqa: E402
from apt.policies.learned import load_policy  # noqa: E402
from apt.eval.store import Store, read_episodes  # noqa: E402

ray = pytest.importorskip("ray")
CHECKPOINT = ROOT / "checkpoints" / "tabletop" / "apt_pi0"
ENTRIES = ("comp-place-red-bowl-0", "comp-place-red-bowl-2", "comp-place-green-plate-1",
           "comp-stack-red-blue-0", "comp-stack-green-yellow-2", "comp-place-blue-box-1")


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    """Six compositional entries (3 tasks held out of training, mixed outcomes) as a split file."""
    full = yaml.safe_load((ROOT / "instruction_sets" / "tabletop" / "compositional.yaml").read_text())
    entries = [e for e in full["entries"] if e["id"] in ENTRIES]
    path = tmp_path_factory.mktemp("split") / "six.yaml"
    path.write_text(yaml.safe_dump({**full, "split": "six", "entries": entries}))
    return path


def test_a_learned_policys_answer_does_not_depend_on_its_batch(suite):
    """Each row's chunk is bit-identical alone, in a full batch, reversed, beside observations with
    other (longer, empty) instructions, and past one batch (two model calls)."""
    policy = load_policy(CHECKPOINT, suite)
    tasks = suite.tasks()
    obs = []
    for i in range(5):
        task = tasks[(5 * i) % len(tasks)]
        env = suite.make_env(task.task_id, image_size=96, cameras=("front", "wrist"))
        obs.append({**env.reset(seed=i, instruction=task.instruction), "sample_key": f"{task.task_id}:{i}:0"})
        env.close()
    other = [{**obs[0], "instruction": "please pick up the red block and very carefully put it onto the plate"},
             {**obs[1], "instruction": ""}]
    alone = np.concatenate([policy.act([o]) for o in obs])
    assert np.array_equal(policy.act(obs), alone)
    assert np.array_equal(policy.act(obs[::-1])[::-1], alone)
    assert np.array_equal(policy.act(other + obs)[2:], alone)
    assert np.array_equal(policy.act(obs + other * 4)[:5], alone)


@pytest.mark.slow
def test_learned_episodes_do_not_depend_on_batching_or_workers(split, tmp_path):
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    runs = {"in-process": dict(workers=0), "in-process, 2 in flight": dict(workers=0, in_flight=2),
            "2 workers x 3": dict(workers=2, in_flight=3), "6 workers x 1": dict(workers=6, in_flight=1),
            "default engine": dict(workers=None)}
    cols = ["key", "success", "steps"]
    frames = {}
    try:
        for name, kw in runs.items():
            store = tmp_path / f"{len(frames)}.sqlite"
            assert runner.run(policy=str(CHECKPOINT), split=str(split), episodes=1, store=str(store),
                              progress=False, quiet=True, **kw) == 0
            frames[name] = read_episodes(store)[cols].sort_values("key").reset_index(drop=True)
            with Store(store) as db:  # the run records the CPU it computed on (and the engine it chose)
                settings = json.loads(db.runs()["settings_json"].iloc[0])
            assert "simd" in settings["cpu"]
            if kw["workers"] is None:
                assert settings["engine"]["engine_chosen"] in ("in-process", "ray")
    finally:
        if started:
            ray.shutdown()
    first = frames["in-process"]
    assert len(first) == len(ENTRIES) and first["steps"].nunique() > 1
    for name, df in frames.items():
        assert df.equals(first), f"{name} differs from in-process:\n{df}\n{first}"
