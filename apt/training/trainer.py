"""The one training loop every recipe uses.

AdamW with linear warmup + cosine decay, gradient clipping, optional EMA weights, bf16 autocast on
GPU, seeded, with a progress bar showing the loss. It times data loading separately from compute so
the loader's share of step time is measured, not guessed.

The step runs `model.loss(batch)` through `distributed.LossForward` (its forward), which is what
`torch.compile` compiles and what DDP (under torchrun, see `distributed.py`) synchronises; progress is
shown on rank 0 only.
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from apt.devices import resolve_device
from apt.training import distributed
from benchmarks.base import BenchError


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; one instance per stage of a recipe."""

    steps: int = 2000
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    ema_decay: float | None = 0.999  # None disables EMA weights
    seed: int = 0
    device: str = "cpu"
    bf16: bool | None = None  # None: on for CUDA, off on CPU (`precision_flag`: --precision)
    compile: bool = False  # torch.compile the model (GPU runs)
    log_every: int = 20

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    samples_per_s: float = 0.0
    data_fraction: float = 0.0  # share of wall time spent waiting for batches


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


_BF16_OF_PRECISION: dict[str, bool | None] = {"auto": None, "bf16": True, "fp32": False}
PRECISIONS = tuple(_BF16_OF_PRECISION)  # `--precision` values (apt/cli.py spells them out: it avoids torch)


def precision_flag(precision: str) -> bool | None:
    """`--precision` -> `TrainConfig.bf16`: auto = bf16 autocast on CUDA only, bf16 = also on CPU, fp32 = never."""
    if precision not in _BF16_OF_PRECISION:
        raise BenchError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return _BF16_OF_PRECISION[precision]


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX): there bf16 autocast runs the
    matmuls ~2.5x faster than fp32; elsewhere it emulates them and is slower than fp32."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Multiplier on the base LR: linear warmup, then cosine to `min_lr_ratio`."""

    def fn(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(1, cfg.warmup_steps)
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine

    return fn


class EMA:
    """Exponential moving average of trainable parameters (evaluated weights are smoother).

    The decay warms up as min(decay, (1 + t) / (10 + t)): with a fixed 0.999 from step 0, a
    2000-step run would keep 0.999^2000 = 13.5% of the random initialisation in its final weights.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        self.updates += 1
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach(), 1.0 - d)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.shadow:
                p.copy_(self.shadow[n])


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def train_loop(model: nn.Module, param_groups: list[dict[str, Any]], batches: Iterator[Mapping[str, Any]],
               cfg: TrainConfig, *, desc: str = "train", progress: bool = True) -> TrainResult:
    """Run `cfg.steps` optimisation steps of `model.loss(batch)`; EMA weights are copied in at the end.

    `param_groups` are AdamW groups (each may carry its own `lr`, e.g. a smaller one for an unfrozen
    VLM); parameters not listed are not trained.
    """
    if cfg.steps < 1:
        raise BenchError(f"training steps must be >= 1, got {cfg.steps}")
    groups = [g for g in param_groups if any(p.requires_grad for p in g["params"])]
    if not groups:
        raise BenchError(f"{desc}: nothing to train (every parameter is frozen)")
    ctx = distributed.current()
    device = resolve_device(ctx.device(cfg.device))
    seed_everything(cfg.seed)  # same seed on every rank: identical init (DDP also broadcasts rank 0's)
    model.to(device).train()
    step_model: Any = distributed.wrap(distributed.LossForward(model), device)
    if cfg.compile:
        step_model = torch.compile(step_model)
    progress = progress and ctx.is_main
    opt = torch.optim.AdamW(
        [{**g, "params": [p for p in g["params"] if p.requires_grad],
          "lr": g.get("lr", cfg.lr)} for g in groups],
        lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    use_bf16 = cfg.bf16 if cfg.bf16 is not None else device.type == "cuda"
    if use_bf16 and device.type == "cpu" and not cpu_has_fast_bf16() and ctx.is_main:
        tqdm.write(f"{desc}: bf16 autocast on a CPU without AVX512-BF16 or AMX is emulated, hence slower "
                   "than fp32; use --precision fp32 here", file=sys.stderr)
    trainable = [p for g in opt.param_groups for p in g["params"]]

    result = TrainResult()
    data_s = 0.0
    samples = 0
    t0 = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc=desc, disable=not progress, dynamic_ncols=True)
    for step in bar:
        td = time.perf_counter()
        batch = _to_device(next(batches), device)
        data_s += time.perf_counter() - td
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = step_model(batch)
        if not torch.isfinite(loss):
            raise RuntimeError(f"{desc}: loss became {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(model)
        result.losses.append(float(loss.detach()))
        samples += _batch_size(batch)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            recent = result.losses[-cfg.log_every:]
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
    distributed.assert_in_sync(model)
    if ema is not None:
        ema.copy_to(model)
    model.eval()
    result.wall_s = time.perf_counter() - t0
    result.samples_per_s = samples / max(result.wall_s, 1e-9)
    result.data_fraction = data_s / max(result.wall_s, 1e-9)
    return result


def _batch_size(batch: Mapping[str, Any]) -> int:
    for v in batch.values():
        if torch.is_tensor(v) and v.dim() > 0:
            return int(v.shape[0])
    return 0

