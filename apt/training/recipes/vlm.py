"""The `vlm_tiny` recipe: vision-language pretraining of the tiny backbone's trunk.

Image-text matching on the suite's own scenes (`apt/training/vl_pretrain.py`), plus grounding on
the demonstrations (`apt/training/vl_pointing.py`) when --demos is given; policies start from the
trunk it writes (`--vlm`, default: the suite's shipped vlm_tiny).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from safetensors.torch import save_file

from apt.models.tiny_vlm import TinyVLM
from apt.training.options import TrainOptions
from apt.training.recipes.common import VLM_FILE, load_training_demos, model_config
from apt.training.trainer import TrainConfig, precision_flag
from apt.training.vl_pointing import make_pointing_data
from apt.training.vl_pretrain import make_vl_dataset, pretrain_vlm
from benchmarks.base import Suite


def train_vlm(opts: TrainOptions, suite: Suite) -> int:
    """Pretrain the trunk of the (default tiny_pi0) preset's VLM; writes vlm.safetensors + config.json."""
    cfg = model_config(opts, "pi0", suite, preset=opts.preset or "tiny_pi0").vlm
    vlm = TinyVLM(cfg)
    n_scenes = max(200, opts.steps)  # about one pass over fresh scenes per step budget unit
    t0 = time.perf_counter()
    dataset = make_vl_dataset(suite, n_scenes=n_scenes, seed=opts.seed, image_size=96, vlm=vlm)
    # Grounding on the demonstrations (vl_pointing) when given; image-text matching alone otherwise.
    pointing = make_pointing_data(load_training_demos(opts, suite), vlm, opts.cameras) if opts.demos else None
    result, metrics = pretrain_vlm(vlm, dataset, TrainConfig(
        steps=opts.steps, batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed, device=opts.device,
        bf16=precision_flag(opts.precision)),
        pointing=pointing)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in vlm.state_dict().items()
             if not k.startswith(("text_encoder.", "vision_encoder."))}
    save_file(state, str(out / VLM_FILE))
    record = {"policy": "vlm_tiny", "suite": suite.name, "suite_version": suite.version,
              "vlm": dataclasses.asdict(cfg), "scenes": n_scenes, "metrics": metrics,
              "demos": opts.demos, "data_hash": pointing.data_hash if pointing else None,
              "train": {"steps": opts.steps, "wall_s": round(time.perf_counter() - t0, 1),
                        "final_loss": result.losses[-1]}}
    (out / "config.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    point = metrics.get("pointing")
    grounding = (f"; held-out pointing error {point['pick_cm']:.1f} cm (pick) / {point['final_cm']:.1f} cm (end), "
                 f"mean predictor {point['pick_cm_mean_predictor']:.1f} / {point['final_cm_mean_predictor']:.1f}"
                 if point else "")
    print(f"vlm_tiny: held-out image-text matching accuracy {metrics.get('heldout_acc', float('nan')):.3f}"
          f"{grounding}; wrote {out}")
    return 0
