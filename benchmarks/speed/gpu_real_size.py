"""Paper-scale presets on a GPU: training steps and one batched inference, with random weights.

Users train at Qwen3-VL-2B scale on GPUs; this checks that path end to end without the weights
(none can be downloaded here). Each real-size preset is built from its architecture numbers with
random weights, trained for a few steps through the one `train_loop` (AdamW, bf16 autocast on
CUDA, optional torch.compile) on random batches of the real shapes, then asked for one batch of
action chunks. Printed per recipe: seconds per step, samples/s, peak GPU memory, inference latency.
The reference measured in the same run is the same model trained in fp32 (no autocast, fp32
weights): the printed ratio is fp32 step time / bf16 step time.

    python -m benchmarks.speed.gpu_real_size [--batch-size 8] [--steps 4] [--compile] [--out result.json]
    python -m benchmarks.speed.gpu_real_size --size tiny --device cpu   # same code, tiny Qwen3-VL config
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from apt.models.action_tokens import ActionTokenizer
from apt.models.builders import QWEN3_VL_2B_ARCH, get_preset
from apt.models.discrete import DiscreteConfig, DiscreteVLA
from apt.models.policy_model import ModelConfig, VLAModel
from apt.training.trainer import TrainConfig, train_loop

RECIPES = ("apt_pi0", "baseline_pi0", "apt_groot", "baseline_groot", "discrete_pi0")

# A Qwen3-VL config small enough for a CPU smoke run of this script (same model class and code path).
TINY_QWEN3_VL: dict[str, Any] = {
    "model_type": "qwen3_vl", "image_token_id": 190, "video_token_id": 191,
    "vision_start_token_id": 192, "vision_end_token_id": 193,
    "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                    "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 256,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                                        "mrope_interleaved": True}},
    "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
                      "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
                      "num_position_embeddings": 64, "deepstack_visual_indexes": [1]},
}


def _hf_config(size: str) -> dict[str, Any]:
    return QWEN3_VL_2B_ARCH if size == "real" else TINY_QWEN3_VL


def _shrink_expert(cfg: Any) -> Any:
    return dataclasses.replace(cfg, width=64, depth=4, heads=2, kv_heads=1, head_dim=32,
                               adapter_layers=min(cfg.adapter_layers, 2), num_future_tokens=4,
                               vlm_layer=min(cfg.vlm_layer, 4) if cfg.vlm_layer is not None else None)


def build_model(policy: str, size: str, dtype: str) -> tuple[torch.nn.Module, Any]:
    """The preset's model with random weights: (model, its config). `dtype` is the VLM's weights."""
    recipe, _, arch = policy.partition("_")
    if recipe == "discrete":
        cfg = get_preset("qwen3vl2b_discrete", DiscreteConfig)
        cfg = cfg.replace(vlm=dataclasses.replace(cfg.vlm, hf_config=_hf_config(size), dtype=dtype))
        if size != "real":
            cfg = cfg.replace(decoder=_shrink_expert(cfg.decoder), expert=_shrink_expert(cfg.expert), action_vocab=512)
        chunks = smooth_chunks(512, cfg.chunk_len, cfg.action_dim, np.random.default_rng(0))
        tok = ActionTokenizer.fit(chunks, vocab_size=cfg.action_vocab)
        longest = max(len(t) for t in tok.encode_batch(chunks))
        cfg = cfg.replace(tokenizer=tok.to_dict(), max_action_tokens=max(cfg.max_action_tokens, longest + 8))
        return DiscreteVLA(cfg), cfg
    cfg = get_preset(f"qwen3vl2b_{arch}", ModelConfig)
    # APT's costlier stage: Stage 2 with the VLM unfrozen at a tenth of the LR; baseline: end to end.
    stage = {"apt": "stage2", "baseline": "full"}[recipe]
    cfg = cfg.replace(stage=stage, vlm_mode="full", vlm_lr_multiplier=0.1 if recipe == "apt" else 1.0,
                      vlm=dataclasses.replace(cfg.vlm, hf_config=_hf_config(size), dtype=dtype))
    if size != "real":
        cfg = cfg.replace(expert=_shrink_expert(cfg.expert), vlm=dataclasses.replace(cfg.vlm, image_size=64))
    return VLAModel(cfg), cfg


def smooth_chunks(n: int, horizon: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Random smooth normalised action chunks in [-1, 1] (cumulative sums of small steps)."""
    x = np.cumsum(rng.normal(0, 0.05, (n, horizon, dim)), axis=1) + rng.uniform(-0.5, 0.5, (n, 1, dim))
    return np.clip(x, -1, 1).astype(np.float32)


def random_batches(model: torch.nn.Module, cfg: Any, batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """Endless random batches with the real shapes: uint8 camera image, instruction ids, state, chunk."""
    rng = np.random.default_rng(seed)
    hf = cfg.vlm.hf_config
    first_special = min(hf[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                         "vision_end_token_id"))
    size = cfg.vlm.image_size
    L = cfg.vlm.max_text_tokens
    while True:
        actions = torch.from_numpy(smooth_chunks(batch_size, cfg.chunk_len, cfg.action_dim, rng))
        lengths = rng.integers(L // 2, L + 1, batch_size)
        attn = torch.from_numpy(np.arange(L)[None] < lengths[:, None]).long()
        ids = torch.from_numpy(rng.integers(1, first_special - 16, (batch_size, L))) * attn
        batch = {"images": torch.from_numpy(rng.integers(0, 256, (batch_size, 1, 3, size, size), dtype=np.uint8)),
                 "input_ids": ids, "attention_mask": attn,
                 "state": torch.from_numpy(rng.normal(0, 1, (batch_size, cfg.state_dim)).astype(np.float32)),
                 "actions": actions}
        if hasattr(model, "action_targets"):
            batch["action_tokens"] = model.action_targets(actions)
        yield batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(policy: str, size: str, precision: str, device: torch.device, batch_size: int, steps: int,
            compile_model: bool, profile_rows: int = 0) -> dict[str, Any]:
    """Train `steps` steps (the first is warm-up and not timed) and run one batched inference.
    `profile_rows` > 0 prints the most expensive operators of the timed steps (torch.profiler)."""
    bf16 = precision == "bf16"
    torch._dynamo.reset()  # each model compiles afresh (else shapes seen for the last one turn dynamic)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with torch.device(device):
        model, cfg = build_model(policy, size, "bfloat16" if bf16 else "float32")
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    batches = random_batches(model, cfg, batch_size, seed=0)
    tc = TrainConfig(steps=1, batch_size=batch_size, lr=1e-5, warmup_steps=0, ema_decay=None, device=str(device),
                     bf16=bf16, compile=compile_model, log_every=1)
    groups = model.param_groups(tc.lr)
    warm = train_loop(model, groups, batches, tc, desc=f"{policy} warm-up", progress=False)
    _sync(device)
    prof = None
    if profile_rows:
        acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA]
                                                        if device.type == "cuda" else [])
        prof = torch.profiler.profile(activities=acts)
        prof.__enter__()
    res = train_loop(model, groups, batches, dataclasses.replace(tc, steps=steps), desc=policy, progress=False)
    _sync(device)
    if prof is not None:
        prof.__exit__(None, None, None)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"--- {policy} {precision}: top operators over {steps} steps", flush=True)
        print(prof.key_averages().table(sort_by=key, row_limit=profile_rows), flush=True)
    peak_train = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    batch = {k: v.to(device) for k, v in next(batches).items() if k not in ("actions", "action_tokens")}
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        model.sample_actions(batch)  # warm-up
        _sync(device)
        t1 = time.perf_counter()
        chunk = model.sample_actions(batch)
        _sync(device)
    infer_s = time.perf_counter() - t1
    out = {"policy": policy, "size": size, "precision": precision, "compile": compile_model,
           "batch_size": batch_size, "params_m": n_params / 1e6, "trainable_m": n_train / 1e6,
           "build_s": build_s, "warmup_step_s": warm.wall_s, "step_s": res.wall_s / steps,
           "samples_per_s": res.samples_per_s, "final_loss": res.losses[-1], "peak_train_gib": peak_train,
           "infer_batch_s": infer_s, "chunk_shape": list(chunk.shape),
           "chunk_finite": bool(torch.isfinite(chunk).all())}
    del model, groups, batches, batch
    gc.collect()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", nargs="+", default=list(RECIPES), choices=RECIPES)
    ap.add_argument("--size", default="real", choices=("real", "tiny"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4, help="timed steps after one warm-up step")
    ap.add_argument("--compile", action="store_true", help="torch.compile the training step (bf16 runs)")
    ap.add_argument("--no-reference", action="store_true", help="skip the fp32 reference run")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="print the N costliest operators (bf16)")
    ap.add_argument("--out", default=None, help="write all measurements here as JSON")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no GPU; use --device cpu --size tiny")
    rows = []
    for policy in args.policies:
        bf = measure(policy, args.size, "bf16", device, args.batch_size, args.steps, args.compile, args.profile)
        rows.append(bf)
        ref = None if args.no_reference else measure(policy, args.size, "fp32", device, args.batch_size,
                                                      args.steps, False)
        if ref is not None:
            rows.append(ref)
        ratio = f"{ref['step_s'] / bf['step_s']:.2f}x" if ref else "-"
        print(f"{policy:15s} {bf['params_m']:7.0f}M params ({bf['trainable_m']:.0f}M trained) | bf16 "
              f"{bf['step_s']:.3f} s/step, {bf['samples_per_s']:.1f} samples/s, peak {bf['peak_train_gib']:.1f} GiB, "
              f"inference {bf['infer_batch_s'] * 1e3:.0f} ms/batch of {args.batch_size} | fp32/bf16 step time "
              f"{ratio}" + (f" (fp32 peak {ref['peak_train_gib']:.1f} GiB)" if ref else ""), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                       "torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
