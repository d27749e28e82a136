"""Attention-mask helpers of the experts: the pi0 blockwise mask, key compaction, layer mapping."""

import torch

from apt.models.expert_base import default_layer_map
from apt.models.layers import AttentionMask, compact_tokens, masked_attention
from apt.models.pi_expert import make_attn_mask


def _mask(starts, pad=None):
    starts = torch.tensor([starts], dtype=torch.bool)
    pad = torch.ones_like(starts) if pad is None else torch.tensor([pad], dtype=torch.bool)
    return make_attn_mask(pad, starts)[0].int().tolist()


def test_one_block_is_bidirectional():
    assert _mask([0, 0, 0]) == [[1, 1, 1]] * 3


def test_all_starts_is_causal():
    assert _mask([1, 1, 1]) == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]


def test_pi0_prefix_state_actions():
    # prefix [p p], state [s], actions [a a]
    assert _mask([0, 0, 1, 1, 0]) == [
        [1, 1, 0, 0, 0],  # p: never sees the suffix (its KV can be cached)
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],  # s: prefix + itself
        [1, 1, 1, 1, 1],  # a: prefix + state + all actions (bidirectional block)
        [1, 1, 1, 1, 1],
    ]


def test_padding_is_invisible_and_blind():
    m = _mask([0, 0, 1, 1], pad=[1, 0, 1, 1])
    assert [row[1] for row in m] == [0, 0, 0, 0]  # nobody attends to the padded prefix token
    assert m[1] == [0, 0, 0, 0]  # and it attends to nothing


def test_compact_tokens_keeps_order_and_pads():
    x = torch.arange(6.0).view(2, 3, 1)
    keep = torch.tensor([[False, True, True], [True, False, False]])
    y, m = compact_tokens(x, keep)
    assert y[..., 0].tolist()[0] == [1.0, 2.0] and y[1, 0, 0] == 3.0
    assert m.tolist() == [[True, True], [True, False]]


def test_masked_attention_row_without_keys_is_zero_not_nan():
    q = torch.randn(1, 2, 2, 4)
    k = v = torch.randn(1, 1, 3, 4)  # grouped: 1 K/V head for 2 query heads
    mask = torch.tensor([[[True, False, True], [False, False, False]]])
    out = masked_attention(q, k, v, mask)
    assert torch.isfinite(out).all() and out[0, :, 1].abs().sum() == 0


def test_masked_attention_under_cpu_bf16_autocast_attends_in_fp32():
    """`--precision bf16` on CPU: bf16 in and out (the surrounding matmuls stay bf16), fp32 inside,
    so the result matches fp32 attention of the same bf16 inputs to fp32 rounding, not bf16's."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 5, 8, generator=g).bfloat16().requires_grad_() for _ in range(3))
    mask = torch.rand(2, 5, 5, generator=g) > 0.3
    mask[..., 0] = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = masked_attention(q, k, v, mask)
    ref = masked_attention(q.float(), k.float(), v.float(), mask)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, ref.bfloat16())
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 and torch.isfinite(t.grad).all() for t in (q, k, v))


def test_default_layer_map():
    assert default_layer_map(4, 4) == (0, 1, 2, 3)  # pi0: expert layer l reads VLM layer l's input
    assert default_layer_map(2, 4) == (0, 2)
    assert default_layer_map(18, 28)[-1] == 26


def test_a_prepared_attention_mask_gives_the_boolean_masks_answer_bit_for_bit():
    """layers.AttentionMask (a mask reused at every denoising step, prepared once) changes nothing:
    the same output as the boolean mask, zeros for a row with no visible key, grouped K/V heads."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, 5, 8, generator=g)
    k, v = torch.randn(3, 2, 7, 8, generator=g), torch.randn(3, 2, 7, 8, generator=g)
    mask = torch.rand(3, 5, 7, generator=g) > 0.4
    mask[:, :, 0] = True
    with torch.no_grad():
        full = AttentionMask.of(mask)
        assert full.has_key is None  # every row sees a key: the output multiply is skipped
        assert torch.equal(masked_attention(q, k, v, full), masked_attention(q, k, v, mask))
        mask[1, 2] = False  # a row with no visible key
        empty_row = AttentionMask.of(mask)
        assert empty_row.has_key is not None
        out = masked_attention(q, k, v, empty_row)
        assert torch.equal(out, masked_attention(q, k, v, mask))
        assert torch.equal(out[1, :, 2], torch.zeros(4, 8)) and torch.isfinite(out).all()
    assert AttentionMask.of(mask).has_key is not None  # with autograd on, no host sync: rows kept
