"""The flow-matching recipes `apt_<arch>` and `baseline_<arch>` (one model, two training orders).

- `apt_<arch>`: Stage 1 trains the expert as a Vision-Action prior on a frozen VLM (half the blocks,
  all blind to language); Stage 2 adds the language-seeing blocks (`--fusion highway`, the released
  design: interleaved, `--carry` says what else Stage 2 takes over; `cross_attention`: inserted
  gated layers) and trains prior and likelihood jointly (VLM frozen unless `--vlm-mode full`: the
  model's `vlm_mode`).
- `baseline_<arch>`: the Stage-2 model from a random expert (highway: the identical model;
  cross_attention: every layer sees language), every step on the whole model.

For a fair comparison the step budget (`--steps`) is the same total for every recipe (`apt` splits
it between its stages, STAGE1_FRACTION), and `--vlm-mode` is the same option for both: the VLM
trunk stays frozen (default, as released) or trains at `--vlm-lr-multiplier` x `--lr` in apt's
Stage 2 and throughout the baseline. (Checkpoints from before `--vlm-mode` trained the baseline's
trunk always; ship regenerates their commands with `--vlm-mode full`.)
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from apt.checkpoints import load_weights, read_meta, save_checkpoint
from apt.models.fusion import CROSS_ATTENTION, FusionConfig
from apt.models.policy_model import VLAModel, stage2_from_stage1
from apt.policies.transforms import Normalizer
from apt.training import distributed
from apt.training.batches import build_training_data, fit_normalizers
from apt.training.options import TrainOptions
from apt.training.recipes.common import (checkpoint_meta, load_training_demos, load_vlm_trunk, model_config,
                                         summary, train_config)
from apt.training.trainer import train_loop
from benchmarks.base import BenchError, Suite

STAGE1_FRACTION = 0.5  # apt: the share of --steps that Stage 1 gets (Stage 2 the rest)


def _check_options(opts: TrainOptions, recipe: str) -> None:
    if opts.stage is not None and recipe != "apt":
        raise BenchError(f"--stage applies to apt recipes only, not {opts.policy}")
    if opts.stage == 2 and not opts.init:
        raise BenchError("--stage 2 needs --init STAGE1_CHECKPOINT (the output of --stage 1)")
    if opts.vlm_lr_multiplier is not None and opts.vlm_mode != "full":
        raise BenchError("--vlm-lr-multiplier needs --vlm-mode full (a frozen VLM has no learning rate)")
    if opts.vlm_lr_multiplier is not None and opts.vlm_lr_multiplier <= 0:
        raise BenchError(f"--vlm-lr-multiplier must be > 0 (the trunk's LR / --lr), got {opts.vlm_lr_multiplier}")
    if opts.carry != TrainOptions.default("carry") and (recipe != "apt" or opts.fusion != "highway"):
        raise BenchError("--carry configures APT's Stage 2 with --fusion highway "
                         "(cross_attention's Stage 2 keeps every Stage-1 tensor)")


def train_flow(opts: TrainOptions, recipe: str, arch: str, suite: Suite) -> int:
    """apt_<arch> (both stages, or --stage 1 / --stage 2 --init) or baseline_<arch>; writes a checkpoint."""
    _check_options(opts, recipe)
    demos = load_training_demos(opts, suite)
    base = model_config(opts, arch, suite)
    fusion = CROSS_ATTENTION if opts.fusion == "cross_attention" else FusionConfig(carry=opts.carry)
    base = base.replace(fusion=dataclasses.replace(fusion, layer_map=base.fusion.layer_map))
    if opts.vlm_mode == "full":  # apt's Stage 2 and the baseline alike (a fair pair shares the mode)
        mult = 1.0 if opts.vlm_lr_multiplier is None else opts.vlm_lr_multiplier
        base = base.replace(vlm_mode="full", vlm_lr_multiplier=mult)
    first_stage = {"apt": "stage1", "baseline": "full"}[recipe]
    if opts.stage == 2:
        meta1 = read_meta(opts.init)
        if meta1.recipe.get("stage") != "stage1" or meta1.policy != opts.policy:
            raise BenchError(f"{opts.init} is not a Stage-1 checkpoint of {opts.policy}")
    model = VLAModel(base.replace(stage=first_stage if opts.stage != 2 else "stage1"))
    vlm_source = load_vlm_trunk(model, opts, suite)
    state_norm, action_norm = fit_normalizers(demos)
    if opts.stage == 2:
        load_weights(opts.init, model, meta1)
        state_norm = Normalizer.from_dict(meta1.norm["state"])
        action_norm = Normalizer.from_dict(meta1.norm["action"])
    data = build_training_data(demos, model, base.chunk_len, opts.cameras, state_norm, action_norm)

    ctx = distributed.current()
    per_rank = distributed.per_rank_batch(opts.batch_size, ctx)
    rank_seed = opts.seed + 1000 * ctx.rank  # ranks draw different batches

    t0 = time.perf_counter()
    history: dict[str, Any] = {}
    if recipe == "apt":
        n1 = int(round(opts.steps * STAGE1_FRACTION))
        stages = {None: ("stage1", "stage2"), 1: ("stage1",), 2: ("stage2",)}[opts.stage]
        if "stage1" in stages:
            res = train_loop(model, model.param_groups(opts.lr), data.sampler(per_rank, rank_seed),
                             train_config(opts, n1 if len(stages) == 2 else opts.steps, 0),
                             desc=f"{opts.policy} stage 1")
            history["stage1"] = summary(res)
        if "stage2" in stages:
            model = stage2_from_stage1(model)
            res = train_loop(model, model.param_groups(opts.lr), data.sampler(per_rank, rank_seed + 1),
                             train_config(opts, opts.steps - n1 if len(stages) == 2 else opts.steps, 1),
                             desc=f"{opts.policy} stage 2")
            history["stage2"] = summary(res)
    else:
        res = train_loop(model, model.param_groups(opts.lr), data.sampler(per_rank, rank_seed),
                         train_config(opts, opts.steps, 0), desc=opts.policy)
        history["full"] = summary(res)
    wall = time.perf_counter() - t0

    recipe_record = {"name": recipe, "stage": model.cfg.stage, "steps": opts.steps, "batch_size": opts.batch_size,
                     "lr": opts.lr, "seed": opts.seed, "vlm_init": vlm_source, "init": opts.init}
    train_record = {"wall_s": round(wall, 1), "stages": history, "device": opts.device,
                    "world_size": ctx.world_size}
    meta = checkpoint_meta(opts, suite, demos, model, state_norm, action_norm, recipe_record, train_record)
    if ctx.is_main:
        sha = save_checkpoint(opts.out, model, meta)
        print(f"{opts.policy}: trained {opts.steps} steps in {wall / 60:.1f} min; wrote {opts.out} (sha256 {sha[:12]})")
    distributed.barrier()
    return 0
