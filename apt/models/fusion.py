"""APT fusion settings, and the legacy `cross_attention` design's Stage-2 layers.

`FusionConfig.kind` picks the design:
  * `highway` (default; the authors' released code): the expert carries its own VL token stream and
    after every block mixes the VLM's hidden state of the matching layer into it through a
    per-channel sigmoid gate, in both stages (`highway.py`, `apt_expert.py`).
  * `cross_attention` (this project's earlier reading of the paper, kept for the shipped checkpoints
    and as an ablation): the rest of this docstring. A config.json without `kind` is one of these.

What "half of the expert's attention layers active" means in `cross_attention`
---------------------------------------------------------------------------
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

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from apt.models.layers import AttentionMask, CrossAttention, RMSNorm, compact_tokens


FUSION_KINDS = ("highway", "cross_attention")
CARRY_MODES = ("blocks", "all")


@dataclass(frozen=True)
class FusionConfig:
    """How language reaches the expert and how Stage 2 grows from Stage 1 (defaults: the released design)."""

    kind: str = "highway"  # "highway" (released: gated VL-stream mixing) | "cross_attention" (legacy)
    gate: str = "channel"  # "scalar": one logit per layer | "channel": one logit per layer and channel
    gate_init_logit: float = 0.0  # highway: sigmoid(0) = 0.5 (released); cross_attention: -4 (~0.018)
    # pi experts: VLM hidden_states index read by each *added* Stage-2 layer (cross_attention: the layer
    # after trunk layer i; highway: the new block 2i). None = the default map of that design.
    layer_map: tuple[int, ...] | None = None
    # Gate logits learn at base LR * this. cross_attention: Adam moves a parameter by about its LR per
    # step whatever the gradient's size, so at the base LR a logit starting at -4 needs ~10^4 steps to
    # reach -1: 50x let it open in a few hundred steps. highway gates start half open: 1x, as released.
    gate_lr_multiplier: float = 1.0
    # highway: what Stage 2 takes over from Stage 1: "blocks" (released: the attention blocks only; the
    # encoders, projections, gates and head start fresh) | "all" (every Stage-1 expert tensor).
    # cross_attention always keeps every Stage-1 tensor (Stage 2 only adds layers): "all".
    carry: str = "blocks"

    def __post_init__(self) -> None:
        if self.kind not in FUSION_KINDS:
            raise ValueError(f"FusionConfig.kind must be one of {FUSION_KINDS}, got {self.kind!r}")
        if self.gate not in ("scalar", "channel"):
            raise ValueError(f"FusionConfig.gate must be 'scalar' or 'channel', got {self.gate!r}")
        if self.carry not in CARRY_MODES:
            raise ValueError(f"FusionConfig.carry must be one of {CARRY_MODES}, got {self.carry!r}")
        if self.gate_lr_multiplier <= 0:
            raise ValueError("FusionConfig.gate_lr_multiplier must be > 0")


# The legacy design with the settings every shipped `cross_attention` checkpoint was trained with.
CROSS_ATTENTION = FusionConfig(kind="cross_attention", gate="scalar", gate_init_logit=-4.0,
                               gate_lr_multiplier=50.0, carry="all")


def legacy_fusion_dict(d: dict[str, Any] | None) -> dict[str, Any]:
    """A config.json's fusion entry as FusionConfig fields: an entry without `kind` (or no entry at
    all) was written before `highway` existed, so it is `cross_attention` with that design's defaults
    for whatever it does not record."""
    if d is not None and "kind" in d:
        return d
    return {**dataclasses.asdict(CROSS_ATTENTION), **(d or {})}


@dataclass
class FusionKV:
    """Projected (cached) keys/values of one inserted layer: k, v [B, Hkv, Tk, dh]; mask [B, Tk] bool."""

    k: Tensor
    v: Tensor
    mask: Tensor
    prepared: dict[int, AttentionMask] = field(default_factory=dict)  # by query count, reused across steps

    def attention_mask(self, queries: int) -> AttentionMask:
        """The key mask for `queries` query rows, prepared once per prefix (layers.AttentionMask)."""
        if queries not in self.prepared:
            self.prepared[queries] = AttentionMask.of(self.mask[:, None, :].expand(-1, queries, -1))
        return self.prepared[queries]


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
        return h + self.gate().to(h.dtype) * self.attn.attend(self.norm(h), kv.k, kv.v, kv.attention_mask(h.shape[1]))


def fusion_parameter_names(module: nn.Module) -> list[str]:
    """Names of the parameters that Stage 2 adds (everything under a `fusion` submodule list)."""
    return [n for n, _ in module.named_parameters() if n.startswith("fusion.") or ".fusion." in n]
