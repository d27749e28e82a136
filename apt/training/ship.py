"""Ship trained checkpoints in the repository: fp16 weights and a manifest saying how each was made.

    python -m apt.training.ship checkpoints/tabletop

Every sub-directory holding a `config.json` and a weights file (`model.safetensors` of a policy,
`vlm.safetensors` of vlm_tiny) gets its floating-point tensors stored as fp16 (the frozen encoders
are already left out by training), and `MANIFEST.json` in the folder lists, per checkpoint: the
sha256 that identifies it in results stores, its size, the training command that regenerates it,
the data hash and the wall time. Loading casts fp16 back to the model's dtype (`load_weights`).
Why: users run the main job right after install, without training for an hour first, and the
repository must stay small (target <= 8 MB per checkpoint).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from benchmarks.base import BenchError
from apt.checkpoints import CONFIG_FILE, WEIGHTS_FILE, checkpoint_sha256
from apt.models.policy_model import ModelConfig
from apt.training.options import TrainOptions
from apt.training.recipes.common import VLM_FILE

MANIFEST_FILE = "MANIFEST.json"


def to_dtype(weights: Path, dtype: torch.dtype = torch.float16) -> bool:
    """Rewrite a safetensors file with its floating tensors in `dtype`; False if it already was."""
    state = load_file(str(weights))
    if all(not t.is_floating_point() or t.dtype == dtype for t in state.values()):
        return False
    save_file({k: (t.to(dtype) if t.is_floating_point() else t).contiguous() for k, t in state.items()},
              str(weights))
    return True


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# A regenerated command spells out these options always, in this order (the manifests' order) ...
_ALWAYS = ("demos", "steps", "batch_size", "lr", "seed", "cameras", "vlm")
# ... then these where they differ from their defaults (--vlm-mode full brings its multiplier along).
_WHERE_SET = ("vlm_mode", "vl_ratio", "vl_grid_cm", "fast_scale", "ema_decay", "precision", "vlm_lr_multiplier",
              "fusion", "carry")
# Options the recipes record in config.json under the same name (older checkpoints did not record
# some of them: they used the defaults). discrete / ki record `vlm_lr_multiplier` (the trunk's LR /
# the decoder's) only where it is not 1; apt's is in the model config (`vlm_mode`, `vlm_lr_multiplier`).
_RECORDED = ("vl_ratio", "vl_grid_cm", "fast_scale", "ema_decay", "precision")


def recorded_options(config: dict[str, Any], out: str) -> TrainOptions:
    """The options of the `apt-bench train` call that made a checkpoint, from its config.json."""
    recipe = config.get("recipe", {})
    if config.get("policy") == "vlm_tiny":
        return TrainOptions(policy="vlm_tiny", demos=config.get("demos") or "demos/tabletop",
                            steps=config.get("train", {}).get("steps"), out=out)
    flow: dict[str, Any] = {}  # apt / baseline: the model's design and VLM mode, as the model config reads them
    if recipe.get("name") in ("apt", "baseline"):  # (older records: cross_attention, the VLM mode they trained)
        model = ModelConfig.from_dict(config.get("model", {}))
        flow = {"fusion": model.fusion.kind, "vlm_mode": model.vlm_mode}
        if model.fusion.kind == "highway":
            flow["carry"] = model.fusion.carry
        if model.vlm_mode == "full":
            flow["vlm_lr_multiplier"] = model.vlm_lr_multiplier
    vlm = recipe.get("vlm_init")
    return TrainOptions(
        policy=config["policy"], demos=recipe.get("demos") or "demos/" + config["suite"], out=out,
        steps=recipe.get("steps"), batch_size=recipe.get("batch_size"), lr=recipe.get("lr"),
        seed=recipe.get("seed"), cameras=config.get("observation_spec", {}).get("cameras") or ["front"],
        vlm=vlm if vlm and vlm != "random" else "none",
        threads=recipe.get("threads") or 1,  # before the recipe recorded its threads, all ran on one
        **{"vlm_lr_multiplier": recipe.get("vlm_lr_multiplier"), **flow},
        **{key: recipe[key] for key in _RECORDED if key in recipe})


def training_command(config: dict[str, Any], out: str) -> str:
    """The `apt-bench train` call that regenerates a checkpoint, from what its config records."""
    opts = recorded_options(config, out)
    if opts.policy == "vlm_tiny":
        return " ".join(["apt-bench train", *opts.command_parts(("policy", "demos", "steps", "out"))])
    changed = [name for name in _WHERE_SET if getattr(opts, name) != TrainOptions.default(name)]
    if opts.vlm_mode == "full":  # the mode (first in the list) brings its multiplier right after it, whatever its value
        changed = ["vlm_mode", "vlm_lr_multiplier"] + [n for n in changed[1:] if n != "vlm_lr_multiplier"]
    return " ".join(["apt-bench train", *opts.command_parts(["policy"]), f"--suite {config['suite']}",
                     *opts.command_parts([*_ALWAYS, *changed, "threads", "out"])])


def ship(folder: str | Path, dtype: torch.dtype = torch.float16,
         noise_scale: float | None = None, relaxed_decoding: bool | None = None) -> dict[str, Any]:
    """Convert every checkpoint under `folder` to `dtype` and write its MANIFEST.json; returns it.
    `noise_scale`: written into each policy's config.json "inference" (how it asks to be sampled);
    `relaxed_decoding`: likewise, into the discrete (FAST-token) checkpoints' only."""
    root = Path(folder)
    if not root.is_dir():
        raise BenchError(f"{root} is not a directory of checkpoints")
    entries: dict[str, Any] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        weights = next((d / f for f in (WEIGHTS_FILE, VLM_FILE) if (d / f).is_file()), None)
        if weights is None or not (d / CONFIG_FILE).is_file():
            continue
        to_dtype(weights, dtype)
        config = json.loads((d / CONFIG_FILE).read_text())
        inference = dict(config.get("inference", {}))
        if noise_scale is not None and weights.name == WEIGHTS_FILE:
            inference["noise_scale"] = float(noise_scale)
        if relaxed_decoding is not None and config.get("recipe", {}).get("name") == "discrete":
            inference["relaxed_decoding"] = bool(relaxed_decoding)
        if inference != config.get("inference", {}):
            config["inference"] = inference
            (d / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        train = config.get("train", {})
        entries[d.name] = {
            "policy": config.get("policy"),
            "sha256": checkpoint_sha256(d) if weights.name == WEIGHTS_FILE else _file_sha256(weights),
            "weights": weights.name, "dtype": str(dtype).replace("torch.", ""),
            "size_bytes": weights.stat().st_size,
            "command": training_command(config, str(d)),
            "data_hash": config.get("data_hash"),
            "wall_s": train.get("wall_s"),
            "inference": config.get("inference", {}),
        }
    if not entries:
        raise BenchError(f"no checkpoints (config.json + weights) under {root}")
    manifest = {"folder": str(root), "checkpoints": entries}
    (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="directory whose sub-directories are checkpoints")
    ap.add_argument("--noise-scale", type=float, default=None,
                    help="record this flow-sampling noise std as each policy's inference default")
    ap.add_argument("--relaxed-decoding", choices=("on", "off"), default=None,
                    help="record how discrete checkpoints decode malformed FAST token sequences")
    args = ap.parse_args(argv)
    relaxed = None if args.relaxed_decoding is None else args.relaxed_decoding == "on"
    m = ship(args.folder, noise_scale=args.noise_scale, relaxed_decoding=relaxed)
    for name, e in m["checkpoints"].items():
        print(f"{name}: {e['size_bytes'] / 1e6:.1f} MB {e['dtype']} sha256 {e['sha256'][:12]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
