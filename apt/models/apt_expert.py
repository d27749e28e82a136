"""The pi-style APT expert as the authors' released code builds it (`FusionConfig.kind = "highway"`).

One joint-attention transformer over two token groups (reference/apt-method.md, "APT as the authors'
released code builds it"; the parts live in `highway.py`):
  * VL stream: the VLM's *input* embeddings (hidden_states[0]) of every prompt token, Linear to the
    expert width, plus a zero-initialised Linear of each image token's normalised 2-D coordinates.
  * Action tokens: [state (1); H noisy actions], each encoded by a small MLP, plus learned positions.
    The flow time enters only through the action tokens' AdaRMSNorms (split norms).
  * Blocks: joint self-attention over [VL; actions] with the base or the language-isolated mask, FFN;
    after block i the highway mixes VLM hidden state `layer_map[i]` into the VL stream (gate at 0.5).
  * Stage 1: `depth` blocks, all language-isolated. Stage 2 (and `full`, the baseline: the identical
    model from a random expert): 2 * depth blocks, new base-mask blocks at even positions, Stage-1
    block i at 2i + 1, still language-isolated. `load_stage1` copies by `FusionConfig.carry`.

Caching: the VL stream never sees action tokens and carries no flow time, so `encode_prefix` runs it
through every block once and keeps each block's VL keys/values; `velocity` (every Euler step) runs
only the 1 + H action tokens against them. The same two calls serve training (one step each).

Deviations from the release (the action head and what our batches carry): flow matching, not DDPM; no
action-history tokens (batches carry the state only); the state vector stands in for the end-effector
position embedding; no RoPE / camera-pose (GTA) position code in the blocks: VL tokens carry positions
through the 2-D image coordinates and the VLM hidden states mixed in, action tokens learned positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from apt.models.expert_base import ExpertConfig
from apt.models.fusion import FusionConfig
from apt.models.highway import Highway, HighwayBlock, InterleavedExpert, highway_masks
from apt.models.layers import AttentionMask, ada_rms_norm, sincos_embedding
from apt.models.vlm import VLMOutput


def _mlp(d_in: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, width), nn.SiLU(), nn.Linear(width, width))


@dataclass
class AptPrefix:
    """Cached per `sample_actions`: each block's VL keys/values and the action rows' masks by kind."""

    kv: list[tuple[Tensor, Tensor]]
    act_masks: dict[bool, AttentionMask]  # isolated? -> [B, 1 + H, T + 1 + H], reused at every step


class AptExpert(InterleavedExpert):
    """Released pi-style APT expert. Call: forward(vlm_out, state [B,S], x_t [B,H,A], t [B]) -> [B,H,A]."""

    def __init__(self, cfg: ExpertConfig, *, vlm_hidden: int, vlm_layers: int, state_dim: int, action_dim: int,
                 chunk_len: int, fusion: FusionConfig, stage2: bool) -> None:
        super().__init__(cfg, vlm_layers=vlm_layers, state_dim=state_dim, action_dim=action_dim, chunk_len=chunk_len,
                         fusion=fusion, stage2=stage2)
        w = cfg.width
        head_dim = cfg.head_dim or w // cfg.heads
        self.vl_in = nn.Linear(vlm_hidden, w)
        self.coord_in = nn.Linear(2, w)  # zero-initialised: image positions enter as training finds them useful
        nn.init.zeros_(self.coord_in.weight)
        nn.init.zeros_(self.coord_in.bias)
        self.state_in = _mlp(state_dim, w)
        self.action_in = _mlp(action_dim, w)
        self.time_mlp = _mlp(w, w)
        self.act_pos = nn.Parameter(torch.randn(1 + chunk_len, w) * 0.02)
        self.blocks = nn.ModuleList(
            HighwayBlock(w, cfg.heads, cfg.kv_heads or cfg.heads, head_dim, int(w * cfg.mlp_ratio))
            for _ in self.isolated)
        self.highway = Highway(vlm_hidden, w, len(self.isolated), fusion)
        self.final_norm = ada_rms_norm(w)
        self.action_out = nn.Linear(w, action_dim)

    def embed_vl(self, vlm: VLMOutput) -> Tensor:
        """The VL stream's input [B, T, W]: projected VLM input embeddings (+ image coordinates)."""
        vl = self.vl_in(vlm.hidden_states[0].to(self.vl_in.weight.dtype))
        if vlm.image_coords is not None:
            vl = vl + self.coord_in(vlm.image_coords.to(vl.dtype)) * vlm.image_mask[..., None].to(vl.dtype)
        return vl

    def encode_prefix(self, vlm: VLMOutput, key_mask: Tensor | None = None) -> AptPrefix:
        """Runs the VL stream through every block (key_mask is ignored: the masks are the layout's)."""
        masks = highway_masks(vlm.image_mask, vlm.pad_mask, 1 + self.chunk_len)
        vl = self.embed_vl(vlm)
        kv = []
        for i, (blk, isolated) in enumerate(zip(self.blocks, self.isolated)):
            if i == len(self.blocks) - 1:  # its VL outputs (and mix) reach no action token: never computed
                _, k, v = blk.project(blk.norm(vl, None))
                kv.append((k, v))
                break
            vl, k, v = blk(vl, None, masks[isolated][0])
            kv.append((k, v))
            vl = self.highway.mix(i, vl, vlm.hidden_states[self.layer_map[i]])
        return AptPrefix(kv, {iso: AttentionMask.of(m[1]) for iso, m in masks.items()})

    def velocity(self, prefix: AptPrefix, state: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        b, h = self.check_inputs(state, x_t, t)
        temb = self.time_mlp(sincos_embedding(t, self.cfg.width).to(x_t.dtype))  # [B, W]
        x = torch.cat([self.state_in(state)[:, None], self.action_in(x_t)], dim=1) + self.act_pos  # [B, 1 + H, W]
        for blk, isolated, kv in zip(self.blocks, self.isolated, prefix.kv):
            x, _, _ = blk(x, temb, prefix.act_masks[isolated], past=kv)
        out = self.action_out(self.final_norm(x[:, 1:], temb))
        assert out.shape == x_t.shape, (out.shape, x_t.shape)
        return out
