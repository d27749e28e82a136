"""Shipping checkpoints: fp16 weights, a manifest whose sha256 is the store identity, same actions."""

import json

import numpy as np
import torch
from safetensors.torch import load_file

from apt.cli import main
from apt.checkpoints import checkpoint_sha256
from apt.policies.learned import load_policy
from apt.training.ship import MANIFEST_FILE, ship


def test_ship_converts_to_fp16_and_manifest_identifies_the_checkpoint(tmp_path, demos_dir, suite):
    out = tmp_path / "ck" / "apt_pi0"
    assert main(["train", "--policy", "apt_pi0", "--demos", str(demos_dir), "--out", str(out), "--steps", "4",
                 "--batch-size", "4", "--preset", "dummy_pi0", "--vlm", "none"]) == 0
    obs = {"images": {"front": np.full((32, 32, 3), 90, np.uint8)}, "state": np.zeros(4, np.float32),
           "instruction": "put the red block in the bowl"}
    torch.manual_seed(0)
    before = load_policy(out, suite).act([obs])
    size32 = (out / "model.safetensors").stat().st_size
    manifest = ship(tmp_path / "ck")
    state = load_file(str(out / "model.safetensors"))
    assert all(t.dtype == torch.float16 for t in state.values() if t.is_floating_point())
    assert (out / "model.safetensors").stat().st_size < 0.6 * size32
    entry = manifest["checkpoints"]["apt_pi0"]
    assert entry["sha256"] == checkpoint_sha256(out) and entry["dtype"] == "float16"
    assert entry["command"].startswith("apt-bench train --policy apt_pi0 --suite tabletop") and "--steps 4" in entry["command"]
    assert json.loads((tmp_path / "ck" / MANIFEST_FILE).read_text()) == manifest
    torch.manual_seed(0)
    after = load_policy(out, suite).act([obs])
    assert np.allclose(before, after, atol=2e-2), np.abs(before - after).max()
    assert ship(tmp_path / "ck")["checkpoints"]["apt_pi0"]["sha256"] == entry["sha256"]  # idempotent
    # A recorded sampling preference reaches the loaded policy and changes the checkpoint's identity.
    assert load_policy(out, suite).noise_scale == 1.0
    again = ship(tmp_path / "ck", noise_scale=0.0)["checkpoints"]["apt_pi0"]
    assert again["inference"] == {"noise_scale": 0.0} and again["sha256"] != entry["sha256"]
    assert load_policy(out, suite).noise_scale == 0.0
    # Relaxed FAST decoding is recorded for discrete checkpoints only (a flow policy decodes no tokens).
    flow = ship(tmp_path / "ck", relaxed_decoding=False)["checkpoints"]["apt_pi0"]
    assert flow["inference"] == {"noise_scale": 0.0} and flow["sha256"] == again["sha256"]


def test_training_command_reproduces_the_recorded_threads_and_cameras():
    from apt.training.ship import training_command

    config = {"policy": "baseline_pi0", "suite": "tabletop", "observation_spec": {"cameras": ["front", "wrist"]},
              "recipe": {"name": "baseline", "demos": "demos/tabletop100", "steps": 3000, "batch_size": 64,
                         "lr": 0.001, "seed": 0, "vlm_init": "checkpoints/tabletop/vlm_tiny", "threads": 2}}
    cmd = training_command(config, "checkpoints/tabletop/baseline_pi0")
    assert "--cameras front wrist" in cmd and cmd.endswith("--threads 2 --out checkpoints/tabletop/baseline_pi0")
    assert "--ema-decay" not in cmd and "--vl-ratio" not in cmd  # defaults are not spelled out
    del config["recipe"]["threads"]  # recorded before threads were: every such run used one
    assert "--threads 1 --out" in training_command(config, "x")
    # Recorded options that differ from the CLI defaults are part of the command.
    config["recipe"].update(name="discrete", ema_decay=0.995, vl_ratio=0.25, fast_scale=6.0)
    cmd = training_command({**config, "policy": "discrete_pi0"}, "x")
    assert "--ema-decay 0.995" in cmd and "--fast-scale 6.0" in cmd and "--vl-ratio" not in cmd
    assert "--vlm-lr-multiplier" not in cmd  # the discrete default: one LR for trunk and decoder
    config["recipe"]["vlm_lr_multiplier"] = 0.5
    assert "--vlm-lr-multiplier 0.5" in training_command({**config, "policy": "discrete_pi0"}, "x")
    assert "--precision" not in cmd  # auto (and checkpoints from before it was recorded)
    config["recipe"]["precision"] = "bf16"
    assert "--precision bf16" in training_command(config, "x")


def test_training_command_regenerates_every_shipped_manifest():
    """The command each shipped MANIFEST.json records is exactly what its config.json regenerates."""
    from pathlib import Path

    from apt.training.ship import training_command

    root = Path(__file__).resolve().parent.parent
    manifests = sorted((root / "checkpoints").rglob(MANIFEST_FILE))
    assert manifests
    for path in manifests:
        manifest = json.loads(path.read_text())
        for name, entry in manifest["checkpoints"].items():
            config = json.loads((path.parent / name / "config.json").read_text())
            assert training_command(config, f"{manifest['folder']}/{name}") == entry["command"], (path, name)
