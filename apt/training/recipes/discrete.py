"""The token recipes `discrete_<arch>` (pi0-FAST style) and `ki_pi0` (knowledge insulation).

- `discrete_<arch>`: the VLM + a token decoder predict FAST action tokens, co-trained with
  vision-language questions about rendered scenes (`vl_ratio` VL examples per action example).
  The discrete VLA has no expert, so `discrete_groot` trains the very same model as `discrete_pi0`
  (the name is kept so the policy x split tables stay complete; its checkpoint records arch "none").
- `ki_pi0`: `discrete` plus a continuous pi-style expert reading the VLM through a stop-gradient;
  the expert acts at inference.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from apt.checkpoints import save_checkpoint
from apt.models.action_tokens import TOKENIZER_FILE, ActionTokenizer
from apt.models.backbones import build_vlm
from apt.models.builders import get_preset
from apt.models.discrete import DiscreteConfig, DiscreteVLA
from apt.training import distributed
from apt.training.batches import build_training_data, chunk_indices, fit_normalizers
from apt.training.options import TrainOptions
from apt.training.recipes.common import checkpoint_meta, load_training_demos, load_vlm_trunk, summary, train_config
from apt.training.trainer import train_loop
from apt.training.vl_data import build_vl_data, discrete_batches, render_scenes
from benchmarks.base import BenchError, Suite


def _discrete_config(opts: TrainOptions, suite: Suite) -> DiscreteConfig:
    name = opts.preset or "tiny_discrete"
    try:
        cfg = get_preset(name, DiscreteConfig)
    except KeyError as err:
        raise BenchError(str(err.args[0])) from None
    cfg = cfg.replace(action_dim=suite.action_spec.dim, state_dim=suite.observation_spec.state_dim)
    return cfg.replace(action_vocab=opts.action_vocab) if opts.action_vocab else cfg


def _trunk_lr_multiplier(opts: TrainOptions) -> float:
    """Checks the options the token recipes read; returns the trunk's LR / the decoder's."""
    if opts.stage is not None:
        raise BenchError(f"--stage applies to apt recipes only, not {opts.policy}")
    if not 0.0 <= opts.vl_ratio <= 4.0:
        raise BenchError(f"--vl-ratio must be in [0, 4] (VL examples per action example), got {opts.vl_ratio}")
    if opts.vl_grid_cm < 0 or (opts.vl_grid_cm > 0 and opts.vl_ratio == 0):
        raise BenchError(f"--vl-grid must be >= 0 cm and needs VL co-training (--vl-ratio > 0), got "
                         f"--vl-grid {opts.vl_grid_cm} with --vl-ratio {opts.vl_ratio}")
    if opts.fast_scale <= 0:
        raise BenchError(f"--fast-scale must be > 0 (FAST uses 10), got {opts.fast_scale}")
    if opts.vlm_mode != TrainOptions.default("vlm_mode"):
        raise BenchError(f"--vlm-mode is the flow recipes' option; {opts.policy} always trains the VLM trunk")
    trunk_mult = 1.0 if opts.vlm_lr_multiplier is None else opts.vlm_lr_multiplier
    if trunk_mult <= 0:
        raise BenchError(f"--vlm-lr-multiplier must be > 0 (the trunk's LR / --lr), got {trunk_mult}")
    return trunk_mult


def train_discrete(opts: TrainOptions, recipe: str, suite: Suite) -> int:
    """discrete_* / ki_pi0: fit the FAST tokenizer, render VL scenes, co-train, save (tokenizer inside)."""
    trunk_mult = _trunk_lr_multiplier(opts)
    ctx = distributed.current()
    demos = load_training_demos(opts, suite)
    cfg = _discrete_config(opts, suite).replace(ki=recipe == "ki")
    state_norm, action_norm = fit_normalizers(demos)

    # FAST tokenizer on the normalised training chunks (the same chunks the decoder learns).
    idx = chunk_indices(demos.episode_starts, cfg.chunk_len)
    chunks = action_norm.normalize(demos.actions)[idx]
    tokenizer = ActionTokenizer.fit(chunks, vocab_size=cfg.action_vocab, scale=opts.fast_scale, seed=opts.seed)
    lengths = [len(t) for t in tokenizer.encode_batch(chunks)]
    cfg = cfg.replace(tokenizer=tokenizer.to_dict(), max_action_tokens=max(cfg.max_action_tokens, max(lengths) + 4))

    # VL co-training scenes, rendered like the demonstrations' frames.
    vlm = build_vlm(cfg.vlm)
    n_scenes = 0
    scenes = None
    if opts.vl_ratio > 0:
        n_scenes = int(min(2000, max(64, opts.steps // 2)))
        image_size = int(demos.meta.get("image_size", suite.observation_spec.image_size))
        scenes = render_scenes(suite, n_scenes, image_size=image_size, cameras=opts.cameras, seed=opts.seed,
                               grid_m=opts.vl_grid_cm / 100)
        cfg = cfg.replace(text_vocab=scenes.answer_vocabulary(vlm.tokenizer))
    torch.manual_seed(opts.seed)
    model = DiscreteVLA(cfg, vlm=vlm)
    vlm_source = load_vlm_trunk(model, opts, suite)
    data = build_training_data(demos, model, cfg.chunk_len, opts.cameras, state_norm, action_norm,
                               progress=ctx.is_main)
    action_tokens = model.action_targets(data.action_chunks)
    vl = build_vl_data(scenes, model) if scenes is not None else None

    per_rank = distributed.per_rank_batch(opts.batch_size, ctx)
    vl_batch = int(round(per_rank * opts.vl_ratio)) if vl is not None else 0
    batches = discrete_batches(data, action_tokens, vl, per_rank, vl_batch, opts.seed + 1000 * ctx.rank)
    t0 = time.perf_counter()
    res = train_loop(model, model.param_groups(opts.lr, vlm_lr_multiplier=trunk_mult), batches,
                     train_config(opts, opts.steps),
                     desc=opts.policy)
    wall = time.perf_counter() - t0
    ratio = float(cfg.chunk_len * cfg.action_dim / np.mean(lengths))
    recipe_record = {"name": recipe, "arch": "pi0" if recipe == "ki" else "none", "stage": "full",
                     "steps": opts.steps, "batch_size": opts.batch_size, "lr": opts.lr, "seed": opts.seed,
                     "vlm_init": vlm_source, "vl_ratio": opts.vl_ratio, "vl_scenes": n_scenes,
                     **({"vlm_lr_multiplier": trunk_mult} if trunk_mult != 1.0 else {}),
                     **({"vl_grid_cm": opts.vl_grid_cm} if opts.vl_grid_cm else {}),
                     "action_vocab": tokenizer.vocab_size, "fast_scale": opts.fast_scale,
                     "bpe_compression": round(ratio, 3)}
    train_record = {"wall_s": round(wall, 1), "stages": {"full": summary(res)}, "device": opts.device,
                    "world_size": ctx.world_size}
    meta = checkpoint_meta(opts, suite, demos, model, state_norm, action_norm, recipe_record, train_record)
    if recipe == "discrete":  # decode as FAST's reference decoders do (apt.models.discrete docstring)
        meta = dataclasses.replace(meta, inference={**meta.inference, "relaxed_decoding": True})
    if ctx.is_main:
        sha = save_checkpoint(opts.out, model, meta)
        tokenizer.save(Path(opts.out) / TOKENIZER_FILE)  # for inspection; config.json holds the same state
        print(f"{opts.policy}: FAST tokens per chunk {np.mean(lengths):.1f} (compression x{ratio:.2f}); "
              f"trained {opts.steps} steps in {wall / 60:.1f} min; wrote {opts.out} (sha256 {sha[:12]})")
    distributed.barrier()
    return 0
