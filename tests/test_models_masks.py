"""Attention-mask helpers of the experts: the pi0 blockwise mask, key compaction, layer mapping."""

import torch

from apt.models.expert_base import default_layer_map
from apt.models.layers import compact_tokens, masked_attention
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


def test_default_layer_map():
    assert default_layer_map(4, 4) == (0, 1, 2, 3)  # pi0: expert layer l reads VLM layer l's input
    assert default_layer_map(2, 4) == (0, 2)
    assert default_layer_map(18, 28)[-1] == 26
