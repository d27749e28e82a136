"""Data-parallel training under `torchrun` (DDP): NCCL on GPUs, gloo on CPU.

Launch any recipe with torchrun and it runs data parallel; nothing else changes:

    torchrun --nproc_per_node 8 -m apt.cli train --policy apt_pi0 --device cuda ...

Conventions:
  * `--batch-size` is the *global* batch: each of the W ranks draws batch_size // W examples, from
    its own seed (seed + rank), so ranks see different data.
  * Rank r uses cuda:LOCAL_RANK. DDP broadcasts rank 0's initial weights and averages gradients, so
    every rank holds the same weights; `train_loop` checks that at the end.
  * Only rank 0 shows progress, prints and writes checkpoints (`is_main()`).
Without torchrun (no WORLD_SIZE in the environment) everything here is a no-op on one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str) -> str:
        """'cuda' -> this rank's GPU; anything else unchanged."""
        return f"cuda:{self.local_rank}" if self.enabled and requested == "cuda" else requested


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "cpu") -> DistContext:
    """Join the torchrun process group when launched by torchrun (idempotent); else a 1-process context."""
    if not launched_by_torchrun():
        return DistContext()
    if not dist.is_initialized():
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return current()


def current() -> DistContext:
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def is_main() -> bool:
    return current().is_main


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def per_rank_batch(batch_size: int, ctx: DistContext | None = None) -> int:
    """The global batch split over ranks (at least 1 per rank)."""
    ctx = ctx or current()
    return max(1, batch_size // ctx.world_size)


class LossForward(nn.Module):
    """`forward(batch) = model.loss(batch)`: DDP syncs gradients only for work done inside forward(),
    and torch.compile compiles forward(), so the training step goes through this wrapper."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.model.loss(batch)


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """DDP-wrap when running distributed. find_unused_parameters: some trainable parameters are not
    used by every loss (e.g. the tiny VLM's matching head during policy training)."""
    ctx = current()
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(module, device_ids=ids, find_unused_parameters=True)


@torch.no_grad()
def assert_in_sync(model: nn.Module) -> None:
    """Every rank must hold the same weights after DDP training (a silent desync is the worst bug)."""
    ctx = current()
    if not ctx.enabled:
        return
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.zeros(1, dtype=torch.float64, device=dev)
    for p in model.parameters():
        if p.requires_grad:
            total += p.detach().double().sum().to(dev)
    gathered = [torch.zeros_like(total) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, total)
    vals = [float(g) for g in gathered]
    if max(vals) - min(vals) > 1e-6 * max(1.0, abs(vals[0])):
        raise RuntimeError(f"DDP ranks diverged: parameter checksums {vals}")
