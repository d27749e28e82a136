"""`apt-bench train`: check the options, pick the recipe by policy name, run it on the given suite.

The policy name is `<recipe>_<arch>` (`apt/policies/names.py`) or `vlm_tiny`; the recipes live
one per module in `apt/training/recipes/`.
"""

from __future__ import annotations


import torch

from apt.policies.names import LEARNED_POLICIES
from apt.training import distributed
from apt.training.options import TrainOptions
from apt.training.recipes.discrete import train_discrete
from apt.training.recipes.flow import train_flow
from apt.training.recipes.vlm import train_vlm
from apt.devices import resolve_device
from benchmarks.base import BenchError, Suite, unknown

TRAINABLE = LEARNED_POLICIES + ("vlm_tiny",)


def _split_name(policy: str) -> tuple[str, str]:
    """(recipe, arch) of a trainable policy name; an unknown one names the closest valid one."""
    if policy not in TRAINABLE:
        raise unknown("trainable policy", policy, TRAINABLE)
    recipe, _, arch = policy.partition("_")
    return recipe, arch


def train(options: TrainOptions, suite: Suite) -> int:
    """Run the recipe of `options.policy` on `suite` and write a checkpoint directory."""
    if not 0.0 <= options.ema_decay < 1.0:
        raise BenchError(f"--ema-decay must be in [0, 1) (0 = no EMA, keep the last weights), "
                         f"got {options.ema_decay}")
    if options.threads:
        torch.set_num_threads(options.threads)
    recipe, arch = _split_name(options.policy)
    resolve_device(options.device)  # fail before any data work when the GPU is missing
    distributed.init(options.device)  # joins the torchrun group when launched by torchrun; else no-op
    try:
        if recipe == "vlm":
            return train_vlm(options, suite)
        if recipe in ("discrete", "ki"):
            return train_discrete(options, recipe, suite)
        return train_flow(options, recipe, arch, suite)
    finally:
        if distributed.launched_by_torchrun():
            distributed.shutdown()
