"""APT gated fusion: the Stage-2 layers that let language back into a vision-only (Stage-1) expert.

What "half of the expert's attention layers active" means here
---------------------------------------------------------------
The Stage-2 expert has 2L attention layers: the L layers of its Stage-1 trunk (pi-style: joint
attention over [VLM image keys; own tokens]; GR00T-style: the DiT's alternating cross/self
attention blocks) and L inserted gated fusion layers, one after each trunk layer. Stage 1 *builds*
the expert with only the L trunk layers (the inserted ones do not exist yet, so they cost nothing
and cannot leak anything); `Expert.insert_fusion_layers` adds them for Stage 2 and
`apt.models.policy_model.stage2_from_stage1` copies every Stage-1 weight into the Stage-2 model.

Each inserted layer computes  out = h + sigmoid(g) * Attn(norm(h), norm(vlm_feats))  where vlm_feats
are the full VLM features (image *and* language tokens) of the mapped VLM layer. With g initialised at
-4 (sigmoid ~= 0.018) the Stage-2 expert starts as the Stage-1 prior up to a 2% perturbation per layer,
and the gate (a scalar or one logit per channel) learns how much language to let in.

The trunk layers keep their Stage-1 key mask (image tokens only) in Stage 2: the prior stays
vision-only and the likelihood path is the only door for language, matching
pi(a | v, l) ∝ pi_prior(a | v) · L(l | v, a).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from apt.models.layers import CrossAttention, RMSNorm, compact_tokens


@dataclass(frozen=True)
class FusionConfig:
    """Stage-2 fusion settings (the paper leaves all of these open)."""

    gate: str = "scalar"  # "scalar": one logit per inserted layer | "channel": one logit per channel
    gate_init_logit: float = -4.0  # sigmoid(-4) ~= 0.018: the new path starts almost closed
    layer_map: tuple[int, ...] | None = None  # pi expert: VLM hidden_states index read by inserted layer i
    #                                           (None = the same index as the trunk layer it follows)
    unfreeze_vlm: bool = False  # Stage 2 also trains the VLM's trainable part (trunk / LLM)
    vlm_lr_multiplier: float = 0.1  # VLM learning rate = base LR * this, when unfrozen
    # Gate logits learn at base LR * this. Adam moves a parameter by about its LR per step whatever
    # the gradient's size, so at the base LR a logit starting at -4 needs ~10^4 steps to reach -1:
    # the gate could never open within a CPU-sized budget and Stage 2 would stay the language-blind
    # prior. 50x lets it open in a few hundred steps when the loss asks for it (and stay shut if not).
    gate_lr_multiplier: float = 50.0

    def __post_init__(self) -> None:
        if self.gate not in ("scalar", "channel"):
            raise ValueError(f"FusionConfig.gate must be 'scalar' or 'channel', got {self.gate!r}")
        if self.gate_lr_multiplier <= 0 or self.vlm_lr_multiplier <= 0:
            raise ValueError("FusionConfig learning-rate multipliers must be > 0")


@dataclass
class FusionKV:
    """Projected (cached) keys/values of one inserted layer: k, v [B, Hkv, Tk, dh]; mask [B, Tk] bool."""

    k: Tensor
    v: Tensor
    mask: Tensor


class GatedFusionLayer(nn.Module):
    """h + sigmoid(g) * CrossAttn(RMSNorm(h), RMSNorm(vlm)) — one inserted Stage-2 attention layer.

    The attention's output projection is randomly initialised (not zero): the gate alone keeps the
    path nearly closed, so its gradient is informative from step 0.
    """

    def __init__(self, dim: int, kv_dim: int, heads: int, cfg: FusionConfig, kv_heads: int | None = None) -> None:
        super().__init__()
        self.norm = RMSNorm(dim)
        self.kv_norm = RMSNorm(kv_dim)
        self.attn = CrossAttention(dim, kv_dim, heads, kv_heads)
        shape = (1,) if cfg.gate == "scalar" else (dim,)
        self.gate_logit = nn.Parameter(torch.full(shape, float(cfg.gate_init_logit)))

    def gate(self) -> Tensor:
        return torch.sigmoid(self.gate_logit)

    def project(self, feats: Tensor, mask: Tensor) -> FusionKV:
        """feats [B, T, kv_dim], mask [B, T] bool (valid keys) -> cached K/V over the kept tokens."""
        x, m = compact_tokens(feats, mask)
        k, v = self.attn.project_kv(self.kv_norm(x))
        return FusionKV(k, v, m)

    def forward(self, h: Tensor, kv: FusionKV) -> Tensor:
        """h [B, Tq, dim] -> [B, Tq, dim]."""
        return h + self.gate().to(h.dtype) * self.attn.attend(self.norm(h), kv.k, kv.v, kv.mask)


def fusion_parameter_names(module: nn.Module) -> list[str]:
    """Names of the parameters that Stage 2 adds (everything under a `fusion` submodule list)."""
    return [n for n, _ in module.named_parameters() if n.startswith("fusion.") or ".fusion." in n]
