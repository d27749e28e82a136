"""GR00T-style action expert: a DiT that cross-attends to ONE VLM layer's features (GR00T N1.5 wiring).

  * VLM features of layer `vlm_layer` -> adapter (LayerNorm, Linear to the expert width, a few
    self-attention layers; GR00T N1.5: LayerNorm + 4-layer transformer on Eagle's layer 12).
  * Tokens [state (1); learned future tokens (F); H action tokens] + learned positions.
  * DiT blocks with AdaLN on the timestep embedding; even blocks cross-attend to the adapted VLM
    tokens (queries from the expert tokens), odd blocks self-attend (bidirectional).
  * Stage 2 inserts a `GatedFusionLayer` after each DiT block; it reads the adapter applied to the
    *full* token set of the same VLM layer (language unmasked) — the adapter weights are shared, it is
    simply run a second time with a different key set. GR00T reads one layer by design, so
    `FusionConfig.layer_map` is not used here (setting it is an error).
Time convention is openpi's (t=1 noise), not GR00T's (t=1 data): flow.py is shared by both experts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from apt.models.expert_base import ExpertConfig, InsertedFusionExpert
from apt.models.fusion import FusionConfig, FusionKV, GatedFusionLayer
from apt.models.layers import CrossAttention, SelfAttentionBlock, ada_layer_norm, compact_tokens, sincos_embedding
from apt.models.vlm import VLMOutput


def groot_vlm_layer(cfg: ExpertConfig, vlm_layers: int) -> int:
    """The one VLM hidden_states index a GR00T-style adapter reads (default: the middle, like GR00T's 12)."""
    layer = cfg.vlm_layer if cfg.vlm_layer is not None else (vlm_layers + 1) // 2
    if not 0 <= layer <= vlm_layers:
        raise ValueError(f"vlm_layer {layer} not in [0, {vlm_layers}]")
    return layer


class DiTBlock(nn.Module):
    """AdaLN -> attention (cross to the VLM context, or self) -> residual; AdaLN -> MLP -> residual."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, cross: bool) -> None:
        super().__init__()
        self.cross = cross
        self.norm1 = ada_layer_norm(dim)
        self.attn = CrossAttention(dim, dim, heads)
        self.norm2 = ada_layer_norm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, temb: Tensor, ctx_kv: tuple[Tensor, Tensor, Tensor] | None) -> Tensor:
        h = self.norm1(x, temb)
        if self.cross:
            assert ctx_kv is not None
            x = x + self.attn.attend(h, *ctx_kv)
        else:
            k, v = self.attn.project_kv(h)
            x = x + self.attn.attend(h, k, v, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))
        return x + self.mlp(self.norm2(x, temb))


class DiTTokens:
    """GR00T's token layout, shared by both GR00T-style experts (attribute names = checkpoint keys):
    [state (1); learned future tokens (F); H action tokens] + learned positions, AdaLN time embedding,
    and the read-out of the last H tokens."""

    cfg: ExpertConfig
    state_enc: nn.Sequential
    action_enc: nn.Sequential
    future_tokens: nn.Parameter
    pos: nn.Parameter
    time_mlp: nn.Sequential
    norm_out: nn.Module
    action_out: nn.Linear

    def init_tokens(self, state_dim: int, action_dim: int, chunk_len: int) -> None:
        """The token encoders (before the blocks, in this order: it fixes the random init)."""
        w = self.cfg.width
        self.state_enc = nn.Sequential(nn.Linear(state_dim, w), nn.SiLU(), nn.Linear(w, w))
        self.action_enc = nn.Sequential(nn.Linear(action_dim, w), nn.SiLU(), nn.Linear(w, w))
        self.future_tokens = nn.Parameter(torch.randn(self.cfg.num_future_tokens, w) * 0.02)
        self.pos = nn.Parameter(torch.randn(1 + self.cfg.num_future_tokens + chunk_len, w) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))

    def init_readout(self, action_dim: int) -> None:
        """The output norm and head (after the blocks)."""
        self.norm_out = ada_layer_norm(self.cfg.width)
        self.action_out = nn.Linear(self.cfg.width, action_dim)

    def embed_tokens(self, state: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """-> tokens [B, 1 + F + H, W] and the time embedding [B, W]."""
        b = state.shape[0]
        temb = self.time_mlp(sincos_embedding(t, self.cfg.width).to(x_t.dtype))
        x = torch.cat([self.state_enc(state)[:, None], self.future_tokens[None].expand(b, -1, -1),
                       self.action_enc(x_t)], dim=1) + self.pos
        return x, temb

    def read_out(self, x: Tensor, temb: Tensor, x_t: Tensor) -> Tensor:
        """The velocity [B, H, A] from the last H tokens."""
        out = self.action_out(self.norm_out(x[:, -x_t.shape[1]:], temb))
        assert out.shape == x_t.shape, (out.shape, x_t.shape)
        return out


@dataclass
class GrootPrefix:
    """Cached: per cross block (k, v, key mask) over the adapted VLM tokens; fusion K/V (Stage 2)."""

    cross_kv: list[tuple[Tensor, Tensor, Tensor] | None]
    fusion: list[FusionKV] | None


class GrootExpert(DiTTokens, InsertedFusionExpert):
    """GR00T-style DiT expert. Call: forward(vlm_out, state [B,S], x_t [B,H,A], t [B], key_mask) -> [B,H,A]."""

    def __init__(self, cfg: ExpertConfig, *, vlm_hidden: int, vlm_layers: int, state_dim: int,
                 action_dim: int, chunk_len: int, fusion: FusionConfig | None = None) -> None:
        super().__init__(cfg, state_dim=state_dim, action_dim=action_dim, chunk_len=chunk_len)
        w = cfg.width
        self.vlm_layer = groot_vlm_layer(cfg, vlm_layers)
        self.adapter_in = nn.Sequential(nn.LayerNorm(vlm_hidden), nn.Linear(vlm_hidden, w))
        self.adapter = nn.ModuleList(SelfAttentionBlock(w, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.adapter_layers))
        self.init_tokens(state_dim, action_dim, chunk_len)
        self.blocks = nn.ModuleList(DiTBlock(w, cfg.heads, cfg.mlp_ratio, cross=(i % 2 == 0)) for i in range(cfg.depth))
        self.init_readout(action_dim)
        if fusion is not None:
            self.insert_fusion_layers(fusion)

    def make_fusion_layers(self, fusion: FusionConfig) -> nn.ModuleList:
        if fusion.layer_map is not None:
            raise ValueError("the GR00T-style expert reads one VLM layer (ExpertConfig.vlm_layer); "
                             "FusionConfig.layer_map applies to the pi expert only")
        return nn.ModuleList(
            GatedFusionLayer(self.cfg.width, self.cfg.width, self.cfg.heads, fusion) for _ in range(self.cfg.depth))

    def _adapt(self, feats: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
        """VLM features [B, T, D] restricted to `keep` -> adapted context [B, P, W] and its mask [B, P]."""
        x, m = compact_tokens(feats, keep)
        x = self.adapter_in(x)
        attn_mask = m[:, None, :] & m[:, :, None]
        for blk in self.adapter:
            x = blk(x, attn_mask)
        return x, m

    def encode_prefix(self, vlm: VLMOutput, key_mask: Tensor | None = None) -> GrootPrefix:
        feats = vlm.hidden_states[self.vlm_layer]
        keep = vlm.pad_mask if key_mask is None else key_mask & vlm.pad_mask
        ctx, m = self._adapt(feats, keep)
        cross_kv: list[tuple[Tensor, Tensor, Tensor] | None] = [
            (*blk.attn.project_kv(ctx), m) if blk.cross else None for blk in self.blocks]
        fusion = None
        if self.fusion is not None:  # inserted layers: same adapter, full token set (language unmasked)
            full, fm = self._adapt(feats, vlm.pad_mask)
            fusion = [f.project(full, fm) for f in self.fusion]
        return GrootPrefix(cross_kv, fusion)

    def velocity(self, prefix: GrootPrefix, state: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        self.check_inputs(state, x_t, t)
        x, temb = self.embed_tokens(state, x_t, t)
        for i, blk in enumerate(self.blocks):
            x = self.fuse(i, blk(x, temb, prefix.cross_kv[i]), prefix.fusion)
        return self.read_out(x, temb, x_t)
