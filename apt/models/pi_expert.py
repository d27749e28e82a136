"""pi-style action expert: expert layer l attends to VLM layer l's features (pi0 / openpi wiring).

Choice: **joint attention, as in pi0** (not starVLA's cross-attention). In each layer the expert's
queries attend over the concatenation [VLM keys/values; the expert's own keys/values], with the
VLM's K/V computed *by the expert's own per-layer projections* from the VLM hidden state of the
mapped layer. Why:
  * it is the pi0 architecture the benchmark names (`*_pi0`): one softmax over prefix and suffix, so
    each expert layer weighs visual evidence against its own state/action tokens, as in openpi;
  * projecting from hidden states (not reusing the VLM's attention K/V) works for any backbone behind
    the `VLM` interface (TinyVLM, Qwen3-VL, PaliGemma) without reaching into its attention modules;
  * the VLM never attends to the expert (prefix never sees suffix), so the projected prefix K/V are
    computed once per sample and cached across Euler steps, as openpi caches the prefix KV.
The GR00T-style head (`groot_expert.py`) covers the cross-attention design.

Suffix tokens: [state (1); H action tokens], action tokens = MLP([W_a x_t ; sincos(t)]) as in pi0.
Stage 2 inserts a `GatedFusionLayer` after each joint-attention layer (see fusion.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from apt.models.expert_base import ExpertConfig, InsertedFusionExpert, attention_geometry
from apt.models.fusion import FusionConfig, FusionKV, GatedFusionLayer
from apt.models.layers import (AttentionMask, GatedMLP, RMSNorm, compact_tokens, masked_attention, merge_heads,
                               sincos_embedding, split_heads)
from apt.models.vlm import VLMOutput


def make_attn_mask(pad_mask: Tensor, block_start: Tensor) -> Tensor:
    """Blockwise attention mask (openpi's `make_attn_mask`): token i may attend to token j iff both are
    valid and j's block does not start after i's block.

    pad_mask: [B, T] bool (valid tokens). block_start: [B, T] bool — True where a new block starts;
    tokens in a block attend bidirectionally within it and to all earlier blocks, never to later ones.
    Returns [B, T, T] bool (True = may attend).

    Examples (one row, all valid; rows = queries):
      block_start [0 0 0]            -> one bidirectional block (all True).
      block_start [1 1 1]            -> causal (lower triangle).
      block_start [0 0 1 1 0]        -> pi0: prefix [p p], state [s], actions [a a]:
          p p : see p p              (prefix never sees the suffix -> its KV can be cached)
          s   : sees p p s           (state is its own block)
          a a : see p p s a a        (actions: one bidirectional block)
    """
    assert pad_mask.shape == block_start.shape and pad_mask.dtype == torch.bool, (pad_mask.shape, block_start.shape)
    block = torch.cumsum(block_start.long(), dim=1)  # block id of each token
    allowed = block[:, None, :] <= block[:, :, None]  # key block <= query block
    return allowed & pad_mask[:, None, :] & pad_mask[:, :, None]


class PiLayer(nn.Module):
    """One joint-attention layer: queries from the expert tokens, keys over [prefix; own tokens]."""

    def __init__(self, width: int, vlm_dim: int, heads: int, kv_heads: int, head_dim: int, mlp_hidden: int) -> None:
        super().__init__()
        self.heads, self.kv_heads = heads, kv_heads
        self.norm = RMSNorm(width)
        self.q = nn.Linear(width, heads * head_dim, bias=False)
        self.k = nn.Linear(width, kv_heads * head_dim, bias=False)
        self.v = nn.Linear(width, kv_heads * head_dim, bias=False)
        self.o = nn.Linear(heads * head_dim, width, bias=False)
        # The expert's own projections of the VLM hidden state of its mapped layer (the "prefix" K/V).
        self.prefix_norm = RMSNorm(vlm_dim)
        self.prefix_k = nn.Linear(vlm_dim, kv_heads * head_dim, bias=False)
        self.prefix_v = nn.Linear(vlm_dim, kv_heads * head_dim, bias=False)
        self.mlp_norm = RMSNorm(width)
        self.mlp = GatedMLP(width, mlp_hidden)

    def project_prefix(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """feats [B, P, D_vlm] -> (k, v) [B, Hkv, P, dh]."""
        h = self.prefix_norm(feats)
        return split_heads(self.prefix_k(h), self.kv_heads), split_heads(self.prefix_v(h), self.kv_heads)

    def forward(self, x: Tensor, pk: Tensor, pv: Tensor, mask: Tensor | AttentionMask) -> Tensor:
        """x [B, S, W] suffix tokens; pk/pv [B, Hkv, P, dh]; mask [B, S, P + S] -> [B, S, W]."""
        h = self.norm(x)
        q = split_heads(self.q(h), self.heads)
        k = torch.cat([pk, split_heads(self.k(h), self.kv_heads)], dim=2)
        v = torch.cat([pv, split_heads(self.v(h), self.kv_heads)], dim=2)
        x = x + self.o(merge_heads(masked_attention(q, k, v, mask)))
        return x + self.mlp(self.mlp_norm(x))


@dataclass
class PiPrefix:
    """Cached VLM-dependent tensors: per-layer prefix K/V, their validity mask, fusion K/V (Stage 2)."""

    kv: list[tuple[Tensor, Tensor]]
    mask: Tensor  # [B, P] bool
    fusion: list[FusionKV] | None
    suffix_mask: AttentionMask | None = None  # [B, 1 + H, P + 1 + H], built by the first velocity call


class PiExpert(InsertedFusionExpert):
    """pi0-style expert. Call: forward(vlm_out, state [B,S], x_t [B,H,A], t [B], key_mask) -> [B,H,A]."""

    def __init__(self, cfg: ExpertConfig, *, vlm_hidden: int, vlm_layers: int, state_dim: int,
                 action_dim: int, chunk_len: int, fusion: FusionConfig | None = None) -> None:
        super().__init__(cfg, state_dim=state_dim, action_dim=action_dim, chunk_len=chunk_len)
        self.vlm_hidden, self.vlm_layers = vlm_hidden, vlm_layers
        w = cfg.width
        self.head_dim, self.kv_heads, self.layer_map = attention_geometry(cfg, vlm_layers, "expert")
        self.state_in = nn.Linear(state_dim, w)
        self.action_in = nn.Linear(action_dim, w)
        self.action_time_mlp = nn.Sequential(nn.Linear(2 * w, w), nn.SiLU(), nn.Linear(w, w))
        self.suffix_pos = nn.Parameter(torch.randn(1 + chunk_len, w) * 0.02)
        self.layers = nn.ModuleList(
            PiLayer(w, vlm_hidden, cfg.heads, self.kv_heads, self.head_dim, int(w * cfg.mlp_ratio))
            for _ in range(cfg.depth))
        self.final_norm = RMSNorm(w)
        self.action_out = nn.Linear(w, action_dim)
        self.fusion_map: tuple[int, ...] = ()
        if fusion is not None:
            self.insert_fusion_layers(fusion)

    def make_fusion_layers(self, fusion: FusionConfig) -> nn.ModuleList:
        fmap = fusion.layer_map or self.layer_map
        if len(fmap) != self.cfg.depth or not all(0 <= i <= self.vlm_layers for i in fmap):
            raise ValueError(f"fusion layer_map {fmap} must have {self.cfg.depth} entries in [0, {self.vlm_layers}]")
        self.fusion_map = tuple(fmap)
        return nn.ModuleList(GatedFusionLayer(self.cfg.width, self.vlm_hidden, self.cfg.heads, fusion, self.kv_heads)
                             for _ in range(self.cfg.depth))

    def encode_prefix(self, vlm: VLMOutput, key_mask: Tensor | None = None) -> PiPrefix:
        keep = vlm.pad_mask if key_mask is None else key_mask & vlm.pad_mask
        kv, mask = [], None
        for layer, idx in zip(self.layers, self.layer_map):
            feats, mask = compact_tokens(vlm.hidden_states[idx], keep)  # only the visible keys are projected
            kv.append(layer.project_prefix(feats))
        fusion = None
        if self.fusion is not None:  # inserted layers read the full features: language unmasked
            fusion = [f.project(vlm.hidden_states[idx], vlm.pad_mask) for f, idx in zip(self.fusion, self.fusion_map)]
        assert mask is not None
        return PiPrefix(kv, mask, fusion)

    def velocity(self, prefix: PiPrefix, state: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        b, h = self.check_inputs(state, x_t, t)
        w = self.cfg.width
        act = self.action_in(x_t)
        temb = sincos_embedding(t, w).to(act.dtype)[:, None].expand(-1, h, -1)
        act = self.action_time_mlp(torch.cat([act, temb], dim=-1))
        x = torch.cat([self.state_in(state)[:, None], act], dim=1) + self.suffix_pos  # [B, 1 + H, W]

        mask = prefix.suffix_mask
        if mask is None:  # the same at every denoising step: built once per prefix
            p = prefix.mask.shape[1]
            dev = x.device
            pad = torch.cat([prefix.mask, torch.ones(b, 1 + h, dtype=torch.bool, device=dev)], dim=1)
            starts = torch.zeros(b, p + 1 + h, dtype=torch.bool, device=dev)
            starts[:, p] = True  # state token: its own block, sees the prefix
            starts[:, p + 1] = True  # action tokens: one bidirectional block, see prefix + state
            mask = prefix.suffix_mask = AttentionMask.of(make_attn_mask(pad, starts)[:, p:])  # suffix rows

        for i, layer in enumerate(self.layers):
            x = self.fuse(i, layer(x, *prefix.kv[i], mask), prefix.fusion)
        out = self.action_out(self.final_norm(x[:, 1:]))
        assert out.shape == x_t.shape, (out.shape, x_t.shape)
        return out

