"""Grounding pretraining of the tiny trunk: hindsight pointing targets from demonstrations, and a
short run that points better than the mean predictor on held-out episodes."""

import os

import numpy as np
import pytest
import torch

from apt.demos.formats import load_demos
from apt.training.vl_pointing import LOW_TOL, make_pointing_data, pointing_targets

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_targets_are_the_first_low_and_the_final_tcp_of_each_episode(demos_dir):
    demos = load_demos(demos_dir)
    targets, weights = pointing_targets(demos)
    starts = demos.episode_starts
    assert targets.shape == (len(demos), 4) and weights.shape == (len(demos), 2)
    for e in range(len(starts) - 1):
        a, b = starts[e], starts[e + 1]
        z = demos.states[a:b, 2]
        t1 = int(weights[a:b, 0].sum()) - 1  # pick weight is 1 up to and including the first low frame
        assert np.all(weights[a:a + t1 + 1, 0] == 1) and np.all(weights[a + t1 + 1:b, 0] == 0)
        assert z[t1] <= z.min() + LOW_TOL and np.all(z[:t1] > z.min() + LOW_TOL)
        assert np.allclose(targets[a:b, :2], demos.states[a + t1, :2])  # same target on every frame
        assert np.allclose(targets[a:b, 2:], demos.states[b - 1, :2]) and np.all(weights[a:b, 1] == 1)
        assert z[t1] < z[0] - 0.05  # the expert really went down to the block first


@pytest.mark.slow
def test_short_pointing_run_beats_the_mean_predictor(tmp_path):
    """Real tiny backbone, 4 expert episodes per task of two place tasks whose blocks differ: after
    a short run the trunk points at the grasp place better than always answering the mean."""
    from apt.models.builders import get_preset
    from apt.models.policy_model import ModelConfig
    from apt.models.tiny_vlm import TinyVLM
    from apt.registry import get_suite
    from apt.demos.generate import generate_demos
    from apt.training.trainer import TrainConfig
    from apt.training.vl_pointing import HELDOUT_EVERY, evaluate_pointing
    from apt.training.vl_pretrain import make_vl_dataset, pretrain_vlm

    torch.manual_seed(0)
    suite = get_suite("tabletop")
    out = tmp_path / "demos"
    generate_demos(suite, out, episodes_per_task=HELDOUT_EVERY + 4, workers=0, seed=0, image_size=96,
                   tasks=("place-red-plate", "place-blue-bowl"), cameras=("front",), progress=False)
    vlm = TinyVLM(get_preset("tiny_pi0", ModelConfig).vlm)
    data = make_pointing_data(load_demos(out), vlm, progress=False)
    assert len(data.heldout_rows) > 0 and not set(data.heldout_rows.tolist()) & set(data.train_rows.tolist())
    before = evaluate_pointing(vlm, data)
    scenes = make_vl_dataset(suite, n_scenes=16, heldout_scenes=0, vlm=vlm)
    _, metrics = pretrain_vlm(vlm, scenes, TrainConfig(steps=150, batch_size=32, lr=1e-3), progress=False,
                              pointing=data)
    after = metrics["pointing"]
    assert metrics["pointing_before"] == before
    assert after["pick_cm"] < 0.7 * after["pick_cm_mean_predictor"], after
    assert after["pick_cm"] < before["pick_cm"], (before, after)
