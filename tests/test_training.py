"""Training pipeline: chunking, normalisation, feature caching, recipes, checkpoints, bad input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from apt.cli import main
from apt.policies.learned import LearnedPolicy
from apt.policies.transforms import Normalizer
from apt.registry import build_policy
from apt.training.batches import build_training_data, chunk_indices, fit_normalizers
from apt.checkpoints import read_meta
from apt.demos.formats import load_demos
from benchmarks.base import BenchError

from conftest import TINY_DEMO_TASKS as TASKS  # noqa: E402  (the tasks of the shared demos_dir)




def test_chunk_indices_hold_last_frame_within_episode():
    idx = chunk_indices(np.array([0, 3, 7]), 3)
    assert idx.shape == (7, 3)
    assert idx[0].tolist() == [0, 1, 2]
    assert idx[2].tolist() == [2, 2, 2]  # never crosses into episode 2
    assert idx[3].tolist() == [3, 4, 5]
    assert idx[6].tolist() == [6, 6, 6]


def test_normalizer_round_trip_and_floor():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(500, 3)).astype(np.float32)
    x[:, 2] = 1.0  # a constant dimension must not divide by zero
    n = Normalizer.fit(x)
    z = n.normalize(x)
    assert np.allclose(z[:, :2].mean(0), 0, atol=1e-4) and np.allclose(z[:, :2].std(0), 1, atol=1e-3)
    assert np.all(np.isfinite(z)) and n.std[2] == pytest.approx(1e-2)
    assert np.allclose(n.unnormalize(z), x, atol=1e-5)
    assert Normalizer.from_dict(json.loads(json.dumps(n.to_dict()))).to_dict() == n.to_dict()


def _dummy_model(arch: str = "pi0", stage: str = "full"):
    from apt.models.builders import get_preset
    from apt.models.policy_model import ModelConfig, VLAModel

    torch.manual_seed(0)
    cfg = get_preset(f"dummy_{arch}", ModelConfig).replace(stage=stage)
    return VLAModel(cfg)


@pytest.mark.parametrize("cameras", [("front",), ("front", "wrist"), ("wrist", "front")])
def test_cached_features_give_the_same_loss_as_images(demos_dir, cameras):
    model = _dummy_model().eval()
    demos = load_demos(demos_dir)
    sn, an = fit_normalizers(demos)
    cached = build_training_data(demos, model, model.cfg.chunk_len, cameras, sn, an, progress=False)
    raw = build_training_data(demos, model, model.cfg.chunk_len, cameras, sn, an, cache_features=False,
                              progress=False)
    assert cached.image_features is not None and raw.images is not None
    idx = torch.arange(6)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    with torch.no_grad():
        l1 = model.loss(cached.batch(idx), generator=g1)
        l2 = model.loss(raw.batch(idx), generator=g2)
    assert torch.allclose(l1, l2, rtol=2e-3), (l1, l2)  # fp16 cache vs fp32 encoders


@pytest.mark.parametrize("policy", ["apt_pi0", "baseline_groot"])
def test_train_then_load_gives_identical_actions(tmp_path, demos_dir, suite, policy):
    out = tmp_path / policy
    rc = main(["train", "--policy", policy, "--demos", str(demos_dir), "--out", str(out), "--steps", "4",
               "--batch-size", "4", "--preset", f"dummy_{policy.split('_')[1]}", "--vlm", "none"])
    assert rc == 0
    meta = read_meta(out)
    assert meta.policy == policy and meta.suite == "tabletop"
    assert meta.recipe["stage"] == ("stage2" if policy.startswith("apt") else "full")
    assert meta.data_hash == load_demos(demos_dir).meta["data_hash"]
    assert set(meta.norm) == {"state", "action"}

    p1 = build_policy(str(out), suite)
    p2 = build_policy(str(out), suite)
    assert isinstance(p1, LearnedPolicy) and p1.checkpoint_sha256 == p2.checkpoint_sha256
    env = suite.make_env(TASKS[0], image_size=32, cameras=("front",))
    obs = env.reset(seed=3)
    a1, a2 = p1.act([obs, obs]), p2.act([obs, obs])
    assert a1.shape == (2, meta.model["chunk_len"], 4) and a1.dtype == np.float32
    assert np.array_equal(a1, a2)
    assert np.all(a1 <= 1.0) and np.all(a1 >= -1.0)
    # Keyed sampling noise: an observation's chunk depends on its sample_key, not on its batch.
    keyed = [{**obs, "sample_key": f"{TASKS[0]}:3:{k}"} for k in (0, 4)]
    alone = p1.act(keyed[:1])
    p1.act([obs])  # advances the unkeyed generator: keyed chunks must not care
    batched = p1.act([keyed[1], keyed[0], keyed[0]])
    assert np.allclose(batched[1], alone[0], atol=1e-5) and np.allclose(batched[2], alone[0], atol=1e-5)
    assert not np.allclose(batched[0], alone[0])  # another step draws other noise
    p1.noise_scale = 0.0  # deterministic sampling: the key no longer matters
    zero = p1.act(keyed)
    assert np.allclose(zero[0], zero[1], atol=1e-6) and not np.allclose(zero[0], alone[0])
    env.close()


def test_apt_stage1_then_stage2_from_init(tmp_path, demos_dir):
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    common = ["--policy", "apt_pi0", "--demos", str(demos_dir), "--steps", "3", "--batch-size", "4",
              "--preset", "dummy_pi0", "--vlm", "none"]
    assert main(["train", *common, "--stage", "1", "--out", str(s1)]) == 0
    assert read_meta(s1).recipe["stage"] == "stage1"
    assert main(["train", *common, "--stage", "2", "--init", str(s1), "--out", str(s2)]) == 0
    meta2 = read_meta(s2)
    assert meta2.recipe["stage"] == "stage2" and meta2.norm == read_meta(s1).norm


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_bad_training_input(tmp_path, demos_dir, capsys):
    assert main(["train", "--policy", "apt_pi00", "--demos", str(demos_dir)]) == 2
    assert "did you mean 'apt_pi0'" in _err(capsys)
    assert main(["train", "--policy", "apt_pi0", "--demos", str(tmp_path / "nope")]) == 2
    assert "no demonstrations" in _err(capsys)
    assert main(["train", "--policy", "apt_pi0", "--demos", str(demos_dir), "--device", "cuda"]) == 2
    assert "no CUDA GPU" in _err(capsys)
    assert main(["train", "--policy", "baseline_pi0", "--demos", str(demos_dir), "--stage", "1"]) == 2
    assert "apt recipes only" in _err(capsys)


def test_bad_checkpoints(tmp_path, demos_dir, suite, capsys):
    ck = tmp_path / "ck"
    assert main(["train", "--policy", "baseline_pi0", "--demos", str(demos_dir), "--out", str(ck), "--steps",
                 "2", "--batch-size", "2", "--preset", "dummy_pi0", "--vlm", "none"]) == 0

    def run_with(path: Path) -> str:
        assert main(["run", "--policy", str(path), "--split", "seen", "--episodes", "1", "--workers", "0",
                     "--store", str(tmp_path / "s.sqlite")]) == 2
        return _err(capsys)

    assert "does not exist" in run_with(tmp_path / "missing")
    broken = tmp_path / "broken"
    shutil.copytree(ck, broken)
    (broken / "config.json").write_text("{not json")
    assert "not valid JSON" in run_with(broken)
    other = tmp_path / "other_suite"
    shutil.copytree(ck, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["suite"] = "libero_goal"
    (other / "config.json").write_text(json.dumps(cfg))
    assert "trained on suite 'libero_goal'" in run_with(other)
    wrong_dim = tmp_path / "wrong_dim"
    shutil.copytree(ck, wrong_dim)
    cfg = json.loads((wrong_dim / "config.json").read_text())
    cfg["action_spec"]["dim"] = 7
    (wrong_dim / "config.json").write_text(json.dumps(cfg))
    assert "7-D actions" in run_with(wrong_dim)
    truncated = tmp_path / "truncated"
    shutil.copytree(ck, truncated)
    (truncated / "model.safetensors").write_bytes(b"\x00" * 10)
    assert "corrupt" in run_with(truncated)


def test_precision_bf16_autocasts_the_cpu_step_and_is_recorded(tmp_path, demos_dir, monkeypatch, capsys):
    """--precision bf16 runs the training step under CPU bf16 autocast (the matmuls in bf16, the
    loss and the weights in fp32) and the checkpoint records it; fp32 never autocasts."""
    from apt.models.policy_model import VLAModel
    from apt.training import trainer

    seen: list[torch.dtype] = []
    loss = VLAModel.loss

    def spy(self, batch, *args, **kwargs):  # the dtype a linear layer computes in, inside the step
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
        return loss(self, batch, *args, **kwargs)

    monkeypatch.setattr(VLAModel, "loss", spy)
    common = ["train", "--policy", "baseline_pi0", "--demos", str(demos_dir), "--steps", "3", "--batch-size", "4",
              "--preset", "dummy_pi0", "--vlm", "none"]
    assert main([*common, "--precision", "bf16", "--out", str(tmp_path / "bf16")]) == 0
    assert seen == [torch.bfloat16] * 3
    meta = read_meta(tmp_path / "bf16")
    assert meta.recipe["precision"] == "bf16" and all(math.isfinite(v) for v in meta.train["stages"]["full"]["loss_curve"])
    seen.clear()
    assert main([*common, "--precision", "fp32", "--out", str(tmp_path / "fp32")]) == 0
    assert seen == [torch.float32] * 3
    # A CPU that only emulates bf16 is told that fp32 would be faster.
    monkeypatch.setattr(trainer, "cpu_has_fast_bf16", lambda: False)
    assert main([*common, "--precision", "bf16", "--out", str(tmp_path / "slow")]) == 0
    assert "use --precision fp32 here" in capsys.readouterr().err
    with pytest.raises(BenchError, match="--precision must be one of auto, bf16, fp32"):
        trainer.precision_flag("fp16")


def test_ema_forgets_the_initialisation():
    """EMA weights after training must not keep a visible share of the random initialisation."""
    from apt.training.trainer import EMA

    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)  # "initialisation"
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)  # the trained value, held for 500 steps
    for _ in range(500):
        ema.update(model)
    ema.copy_to(model)
    # A fixed decay of 0.999 would leave 0.999**500 = 61% of the initial value (weight 0.39).
    assert model.weight.item() > 0.95
    ema.updates = 100_000  # long runs reach the configured decay
    assert ema.current_decay() == pytest.approx(0.999)
