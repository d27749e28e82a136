"""Small building blocks shared by the VLM trunk and both action experts.

Kept dependency-free (torch only) so every expert reads the same attention/masking code: one place to
get the masking right, one place to audit bit-exactness of the Stage-1 language invariance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """RMSNorm (Gemma/Qwen style, weight initialised to 1)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        var = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(var + self.eps)).to(x.dtype) * self.weight


class AdaptiveNorm(nn.Module):
    """`norm`(x) * (1 + scale) + shift, with (shift, scale) a zero-initialised Linear of a condition (the
    flow-time embedding): starts as `norm`. GR00T's AdaLN is this on a LayerNorm without affine
    (`ada_layer_norm`), the released APT expert's AdaRMSNorm this on an RMSNorm (`ada_rms_norm`)."""

    def __init__(self, norm: nn.Module, dim: int) -> None:
        super().__init__()
        self.norm = norm
        self.mod = nn.Linear(dim, 2 * dim)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """x [B, T, D], cond [B, D]."""
        shift, scale = self.mod(cond)[:, None].chunk(2, dim=-1)
        return self.norm(x) * (1 + scale) + shift


def ada_layer_norm(dim: int) -> AdaptiveNorm:
    return AdaptiveNorm(nn.LayerNorm(dim, elementwise_affine=False), dim)


def ada_rms_norm(dim: int) -> AdaptiveNorm:
    return AdaptiveNorm(RMSNorm(dim), dim)


class GatedMLP(nn.Module):
    """SwiGLU MLP (the feed-forward of Gemma/Qwen-like experts)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


def sincos_embedding(t: Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> Tensor:
    """Sine-cosine embedding of a scalar in [0, 1] per batch item (openpi's `posemb_sincos`).

    The periods are chosen for t in [0, 1] (flow-matching time), not for integer positions.
    t: [B] -> [B, dim] float32 (callers cast to their compute dtype).
    """
    assert t.ndim == 1 and dim % 2 == 0, (t.shape, dim)
    frac = torch.linspace(0.0, 1.0, dim // 2, device=t.device, dtype=torch.float32)
    period = min_period * (max_period / min_period) ** frac
    ang = t.float()[:, None] * (2 * math.pi / period)[None, :]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


@dataclass(frozen=True)
class AttentionMask:
    """A boolean "may attend" mask [B, Tq, Tk] prepared once for reuse, as `masked_attention` applies it:
    the additive form SDPA adds to its scores (0 / -inf, float32; rows with no visible key all 0) and the
    rows that have a key (None: every row has one). A mask that repeats at every denoising step is
    prepared once per `sample_actions` call: SDPA then skips its bool -> float conversion, and the
    per-call any / or / multiply go away (measured on CPU for 8 x 4 heads x 9 queries over 81 keys:
    141 instead of 170 us per call). The result is bit-identical to passing the boolean mask."""

    bias: Tensor  # [B, 1, Tq, Tk]
    has_key: Tensor | None  # [B, 1, Tq, 1] in {0, 1}, or None
    shape: tuple[int, int, int]  # (B, Tq, Tk)

    @classmethod
    def of(cls, mask: Tensor, check_rows: bool | None = None) -> AttentionMask:
        """`check_rows`: find out (one host sync) whether every row has a key, so the output multiply
        can be skipped; by default only without autograd (sampling reuses the mask at every step, a
        training step uses it once and need not sync)."""
        check_rows = not torch.is_grad_enabled() if check_rows is None else check_rows
        has_key = mask.any(-1, keepdim=True)  # [B, Tq, 1]
        safe = mask | ~has_key
        bias = torch.zeros(safe.shape, dtype=torch.float32, device=mask.device).masked_fill_(~safe, -math.inf)
        rows = None if check_rows and bool(has_key.all()) else has_key[:, None].float()
        return cls(bias[:, None], rows, (mask.shape[0], mask.shape[1], mask.shape[2]))


def masked_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | AttentionMask) -> Tensor:
    """Scaled dot-product attention with a boolean "may attend" mask and grouped K/V heads.

    q: [B, Hq, Tq, dh]; k, v: [B, Hkv, Tk, dh] with Hq % Hkv == 0; mask: [B, Tq, Tk] bool (True = attend),
    or the same prepared once (`AttentionMask`).
    A query row with no visible key returns zeros instead of NaN (it happens only for padding rows).
    Masked keys contribute exactly 0 (exp(-inf)), which is what makes Stage-1 outputs bit-identical
    under a change of the (masked) language tokens.
    """
    b, hq, tq, dh = q.shape
    prepared = mask if isinstance(mask, AttentionMask) else AttentionMask.of(mask, check_rows=False)
    assert k.shape[0] == b and k.shape[1] <= hq and hq % k.shape[1] == 0, (q.shape, k.shape)
    assert prepared.shape == (b, tq, k.shape[2]), (prepared.shape, q.shape, k.shape)
    if k.shape[1] != hq:
        rep = hq // k.shape[1]
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        # CPU bf16 autocast (`--precision bf16`): the bf16 flash-attention backward on CPU is ~7x
        # slower than the fp32 one at these sizes, which cancels the bf16 matmuls' gain; attend in fp32.
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=prepared.bias).to(q.dtype)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=prepared.bias.to(q.dtype))
    return out if prepared.has_key is None else out * prepared.has_key.to(out.dtype)


def split_heads(x: Tensor, heads: int) -> Tensor:
    """[B, T, H*dh] -> [B, H, T, dh]."""
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """[B, H, T, dh] -> [B, T, H*dh]."""
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)


def compact_tokens(x: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """Move the kept tokens of each row to the front (stable order) and cut to the longest row.

    x: [B, T, D], keep: [B, T] bool -> (x' [B, T', D], keep' [B, T'] bool), T' = max kept per row.
    Why: Stage-1 keys are "image tokens only"; gathering them (instead of only masking the rest) makes
    the key tensors literally identical whatever the instruction, so invariance holds bit for bit and
    no compute is spent on masked language keys.
    """
    assert x.shape[:2] == keep.shape, (x.shape, keep.shape)
    counts = keep.sum(-1)
    t_new = int(counts.max().item()) if keep.numel() else 0
    # Stable sort: kept tokens first (key 0), original order preserved within each group.
    order = torch.sort((~keep).to(torch.int8), dim=-1, stable=True).indices[:, :t_new]
    x_new = torch.gather(x, 1, order[..., None].expand(-1, -1, x.shape[-1]))
    keep_new = torch.arange(t_new, device=x.device)[None, :] < counts[:, None]
    return x_new, keep_new


class SelfAttentionBlock(nn.Module):
    """Pre-LN transformer block (LayerNorm, MHA, GELU MLP) with an explicit boolean mask.

    Used by the TinyVLM trunk and the GR00T-style adapter; mask: [B, T, T] bool (True = attend).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        assert dim % heads == 0, (dim, heads)
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        h = self.heads
        a = masked_attention(split_heads(q, h), split_heads(k, h), split_heads(v, h), mask)
        x = x + self.proj(merge_heads(a))
        return x + self.mlp(self.norm2(x))


class CrossAttention(nn.Module):
    """Multi-head attention of query tokens over a separate key/value sequence (own K/V projections).

    Split in two calls so a key/value sequence that does not change across denoising steps (the VLM
    prefix) is projected once: `project_kv` (cacheable) then `attend`.
    """

    def __init__(self, dim: int, kv_dim: int, heads: int, kv_heads: int | None = None, head_dim: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.kv_heads = kv_heads or heads
        self.head_dim = head_dim or dim // heads
        self.q = nn.Linear(dim, self.heads * self.head_dim, bias=False)
        self.k = nn.Linear(kv_dim, self.kv_heads * self.head_dim, bias=False)
        self.v = nn.Linear(kv_dim, self.kv_heads * self.head_dim, bias=False)
        self.o = nn.Linear(self.heads * self.head_dim, dim, bias=False)

    def project_kv(self, ctx: Tensor) -> tuple[Tensor, Tensor]:
        """ctx [B, Tk, kv_dim] -> (k, v) each [B, Hkv, Tk, dh]."""
        return split_heads(self.k(ctx), self.kv_heads), split_heads(self.v(ctx), self.kv_heads)

    def attend(self, x: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | AttentionMask) -> Tensor:
        """x [B, Tq, dim], key_mask [B, Tk] bool (or already prepared for the Tq queries) -> [B, Tq, dim]."""
        q = split_heads(self.q(x), self.heads)
        mask = key_mask if isinstance(key_mask, AttentionMask) else key_mask[:, None, :].expand(-1, x.shape[1], -1)
        return self.o(merge_heads(masked_attention(q, k, v, mask)))
