"""Parts of the released ("highway") APT expert: the gated VLM highway, the two attention masks, the
joint-attention block with split norms, and the Stage-1 -> Stage-2 block layout.

Facts from the authors' released code (reference/apt-method.md, "APT as the authors' released code
builds it"); `apt_expert.py` assembles them into the pi-style expert.

Highway (the paper's Eq. 3): after expert block i the VL part of the stream is mixed with the VLM's
hidden state of the mapped layer,  vl <- sigmoid(g_i) * vl + (1 - sigmoid(g_i)) * P_i(h_i),  with P_i a
per-block Linear (VLM width -> expert width) and g a (blocks x width) logit, initialised at 0 (0.5).

Layout: Stage 1 has `depth` blocks, all language-isolated; Stage 2 has 2 * depth, the new blocks (base
mask) at even positions and Stage-1 block i copied to Stage-2 block 2i + 1 (keeping its mask and its
VLM layer).
"""

from __future__ import annotations

import re
from typing import TypeVar

import torch
from torch import Tensor, nn

from apt.models.expert_base import Expert, ExpertConfig
from apt.models.fusion import FusionConfig
from apt.models.layers import AttentionMask, RMSNorm, ada_rms_norm, masked_attention, merge_heads, split_heads


# ------------------------------------------------------------------------------------------ layout
def highway_layer_maps(depth: int, vlm_layers: int, prior: tuple[int, ...] | None = None,
                       new: tuple[int, ...] | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(prior, new) VLM hidden_states indices: mixed after Stage-1 block i (= Stage-2 block 2i + 1), and
    after the new Stage-2 block 2i. Default: Stage-2 block j of 2 * depth mixes hidden_states[1 + j * L //
    (2 * depth)], the output of VLM layer j * L // (2 * depth) (0-based): with 2 * depth == L block j
    mixes VLM layer j and Stage-1 block i VLM layer 2i + 1, as released.

    >>> highway_layer_maps(2, 4), highway_layer_maps(4, 4)
    (((2, 4), (1, 3)), ((1, 2, 3, 4), (1, 2, 3, 4)))
    """
    strided = [1 + (j * vlm_layers) // (2 * depth) for j in range(2 * depth)]
    maps = (prior or tuple(strided[1::2]), new or tuple(strided[0::2]))
    for name, m in zip(("ExpertConfig.layer_map", "FusionConfig.layer_map"), maps):
        if len(m) != depth or not all(0 <= i <= vlm_layers for i in m):
            raise ValueError(f"{name} {m} must have {depth} entries in [0, {vlm_layers}]")
    return maps


def stage_layout(depth: int, stage2: bool) -> tuple[bool, ...]:
    """Per block: True = language-isolated. Stage 1: all `depth`; Stage 2: new (base) blocks at even
    positions, the copied Stage-1 blocks at odd ones.

    >>> stage_layout(2, False), stage_layout(2, True)
    ((True, True), (False, True, False, True))
    """
    return tuple(i % 2 == 1 for i in range(2 * depth)) if stage2 else (True,) * depth


T = TypeVar("T")
_INDEXED = re.compile(r"^(blocks|highway\.proj)\.(\d+)\.")


def stage2_name(stage1_name: str) -> str:
    """Where a Stage-1 expert tensor goes in Stage 2: per-block modules i -> 2i + 1, the rest as named.

    >>> stage2_name("blocks.1.qkv.weight"), stage2_name("highway.proj.0.bias"), stage2_name("vl_in.weight")
    ('blocks.3.qkv.weight', 'highway.proj.1.bias', 'vl_in.weight')
    """
    return _INDEXED.sub(lambda m: f"{m.group(1)}.{2 * int(m.group(2)) + 1}.", stage1_name)


def interleave(new: tuple[T, ...], prior: tuple[T, ...]) -> tuple[T, ...]:
    """Stage-2 order of per-block items: new block i at 2i, Stage-1 block i at 2i + 1.

    >>> interleave(("n0", "n1"), ("p0", "p1"))
    ('n0', 'p0', 'n1', 'p1')
    """
    return tuple(x for pair in zip(new, prior) for x in pair)


class InterleavedExpert(Expert):
    """What both highway experts share: the block layout of their stage (`isolated`: per block, True =
    language-isolated), the VLM hidden_states index each block mixes (`layer_map`), and Stage 2 taking
    over a Stage-1 expert (`load_stage1`). Subclasses name their per-block modules `blocks.<i>` and
    `highway.proj.<i>` and their gates `highway.gate_logit`."""

    def __init__(self, cfg: ExpertConfig, *, vlm_layers: int, state_dim: int, action_dim: int, chunk_len: int,
                 fusion: FusionConfig, stage2: bool) -> None:
        super().__init__(cfg, state_dim=state_dim, action_dim=action_dim, chunk_len=chunk_len)
        self.stage2 = stage2
        self.isolated = stage_layout(cfg.depth, stage2)
        prior, new = highway_layer_maps(cfg.depth, vlm_layers, cfg.layer_map, fusion.layer_map)
        self.layer_map = interleave(new, prior) if stage2 else prior

    def load_stage1(self, state: dict[str, Tensor], fusion: FusionConfig) -> None:
        """Stage-1 block i -> block 2i + 1 always; with carry "all" also every other tensor (the
        projection P_i and gate row i follow their block, encoders, norms and head keep their names);
        "blocks" leaves the rest fresh."""
        if not self.stage2:
            raise ValueError("load_stage1 loads into a Stage-2 expert")
        own = self.state_dict()
        take: dict[str, Tensor] = {}
        for name, value in state.items():
            target = stage2_name(name)
            if target == "highway.gate_logit" and (2 * value.shape[0], *value.shape[1:]) == own[target].shape:
                rows = own[target].unflatten(0, (-1, 2)).clone()  # [depth, 2, ...]: (new block, copied block)
                rows[:, 1] = value
                value = rows.flatten(0, 1)
            if target not in own or own[target].shape != value.shape:
                raise ValueError(f"not a Stage-1 state dict of this expert: {name} {tuple(value.shape)}")
            if fusion.carry == "all" or target.startswith("blocks."):
                take[target] = value
        missing = [k for k in own if k.startswith("blocks.") and int(k.split(".")[1]) % 2 == 1 and k not in take]
        if missing:
            raise ValueError(f"not a Stage-1 state dict of this expert: it lacks {missing[:5]}")
        self.load_state_dict(take, strict=False)


# ------------------------------------------------------------------------------------------- masks
def highway_masks(image_mask: Tensor, pad_mask: Tensor, n_actions: int) -> dict[bool, tuple[Tensor, Tensor]]:
    """The two masks of the joint sequence [VL (T); actions (n_actions)], split into the VL rows and the
    action rows (the VL rows never see actions, so the VL stream runs alone and is cached):
    {isolated: (vl [B, T, T], act [B, n_actions, T + n_actions])}, True = may attend.

    Groups: image = valid image tokens; text = every other valid VL token (language and any special
    tokens); actions (state + chunk, always valid).
      base (False):     VL queries see all valid VL keys; action queries see all valid VL keys + actions.
      isolated (True):  image queries see image keys; text queries see text keys only; action queries
                        see image keys + actions. Nothing that depends on language reaches an image or
                        action row.
    Example, VL = [i i l] (l language), one action a; rows = queries, columns = keys [i i l | a]:
      base:     i: 1 1 1 | 0    l: 1 1 1 | 0    a: 1 1 1 | 1
      isolated: i: 1 1 0 | 0    l: 0 0 1 | 0    a: 1 1 0 | 1
    """
    image = image_mask & pad_mask
    text = pad_mask & ~image_mask
    b, t = pad_mask.shape
    ones = torch.ones(b, n_actions, n_actions, dtype=torch.bool, device=pad_mask.device)
    out: dict[bool, tuple[Tensor, Tensor]] = {}
    for isolated in (False, True):
        if isolated:
            vl = (image[:, :, None] & image[:, None, :]) | (text[:, :, None] & text[:, None, :])
            act_vl = image[:, None, :].expand(b, n_actions, t)
        else:
            vl = pad_mask[:, :, None] & pad_mask[:, None, :]
            act_vl = pad_mask[:, None, :].expand(b, n_actions, t)
        out[isolated] = (vl, torch.cat([act_vl, ones], dim=2))
    return out


# ------------------------------------------------------------------------------------------ layers
class HighwayBlock(nn.Module):
    """Pre-norm joint self-attention (QKV with bias, QK-norm) + FFN, shared by both token groups, with
    split norms: plain RMSNorm on VL tokens, AdaRMSNorm on the flow time for action tokens.

    Called once per token group: the VL stream alone (`temb` None), then the action tokens with the VL
    stream's keys/values of this block as `past` (they precede the actions in the joint sequence).
    """

    def __init__(self, width: int, heads: int, kv_heads: int, head_dim: int, mlp_hidden: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.vl_norm, self.act_norm = RMSNorm(width), ada_rms_norm(width)
        self.qkv = nn.Linear(width, (heads + 2 * kv_heads) * head_dim, bias=True)
        self.q_norm, self.k_norm = RMSNorm(head_dim), RMSNorm(head_dim)
        self.o = nn.Linear(heads * head_dim, width, bias=False)
        self.vl_mlp_norm, self.act_mlp_norm = RMSNorm(width), ada_rms_norm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_hidden, width))

    def norm(self, x: Tensor, temb: Tensor | None, mlp: bool = False) -> Tensor:
        """The group's norm: VL tokens (temb None) plain, action tokens modulated by temb."""
        if temb is None:
            return (self.vl_mlp_norm if mlp else self.vl_norm)(x)
        return (self.act_mlp_norm if mlp else self.act_norm)(x, temb)

    def project(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Normed tokens [B, T, W] -> q [B, H, T, dh], k, v [B, Hkv, T, dh] (q and k RMS-normed per head)."""
        dh = self.head_dim
        q, k, v = self.qkv(h).split([self.heads * dh, self.kv_heads * dh, self.kv_heads * dh], dim=-1)
        return (self.q_norm(split_heads(q, self.heads)), self.k_norm(split_heads(k, self.kv_heads)),
                split_heads(v, self.kv_heads))

    def forward(self, x: Tensor, temb: Tensor | None, mask: Tensor | AttentionMask,
                past: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, T, W] one token group; mask [B, T, T_past + T]; past: (k, v) of the keys before x.
        Returns (x', k, v) with k, v x's own keys/values (what later groups read as `past`)."""
        q, k, v = self.project(self.norm(x, temb))
        keys, values = (k, v) if past is None else (torch.cat([past[0], k], 2), torch.cat([past[1], v], 2))
        x = x + self.o(merge_heads(masked_attention(q, keys, values, mask)))
        return x + self.mlp(self.norm(x, temb, mlp=True)), k, v


class Highway(nn.Module):
    """The gated VLM highway: per block i a projection P_i of the VLM hidden state and a gate logit row.

    mix(i, vl, h) = sigmoid(g_i) * vl + (1 - sigmoid(g_i)) * P_i(h): sigmoid 1 keeps the expert's own VL
    stream, sigmoid 0 replaces it with the projected VLM state. The logits are named `gate_logit` so the
    optimiser finds them (`VLAModel.param_groups`).
    """

    def __init__(self, vlm_hidden: int, width: int, blocks: int, fusion: FusionConfig) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(vlm_hidden, width) for _ in range(blocks))
        shape = (blocks, 1) if fusion.gate == "scalar" else (blocks, width)
        self.gate_logit = nn.Parameter(torch.full(shape, float(fusion.gate_init_logit)))

    def mix(self, i: int, vl: Tensor, h: Tensor) -> Tensor:
        """vl [B, T, W] expert VL stream after block i, h [B, T, D] VLM hidden state -> [B, T, W]."""
        s = torch.sigmoid(self.gate_logit[i]).to(vl.dtype)
        return s * vl + (1 - s) * self.proj[i](h.to(vl.dtype))
