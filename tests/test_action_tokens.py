"""FAST-style action tokenizer: exact integer round trip, error below the quantisation step, BPE
compression, serialisation, and clear errors on undecodable sequences."""

from __future__ import annotations

import json

import numpy as np
import pytest

from apt.models.action_tokens import ActionTokenizer, InvalidActionTokens


def smooth_chunks(n: int, h: int = 8, a: int = 4, seed: int = 0) -> np.ndarray:
    """Random smooth chunks: per dimension a low-frequency sinusoid plus an offset (like delta actions)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, h)[None, :, None]
    freq, phase = rng.uniform(0.1, 1.0, (n, 1, a)), rng.uniform(0, 2 * np.pi, (n, 1, a))
    return rng.uniform(0.2, 0.8, (n, 1, a)) * np.sin(2 * np.pi * freq * t + phase) + 0.3 * rng.normal(size=(n, 1, a))


@pytest.fixture(scope="module")
def tok() -> ActionTokenizer:
    return ActionTokenizer.fit(smooth_chunks(2000), vocab_size=512)


def test_round_trip_error_below_quantisation_step(tok):
    x = smooth_chunks(300, seed=1)
    x = np.clip(x, tok.low, tok.high)  # inside the fitted range (outside it is clipped by design)
    errs = []
    for chunk in x:
        ids = tok.encode(chunk)
        assert np.array_equal(tok.decode_ints(ids), tok._to_ints(chunk))  # integers recovered exactly
        errs.append(np.abs(tok.decode(ids) - chunk))
    err = np.stack(errs)  # [N, H, A]
    step = tok.quantization_step  # one rounding step, per dimension, in input units
    assert np.all(err.max(axis=(0, 1)) < step), (err.max(axis=(0, 1)), step)
    # Orthonormal DCT: the L2 error of a chunk is at most half a step per coefficient.
    unit_err = err / ((tok.high - tok.low) / 2.0)
    assert np.all(np.sqrt((unit_err ** 2).sum(axis=(1, 2))) <= 0.5 * np.sqrt(32) / tok.scale + 1e-6)


def test_bpe_compresses_and_reports_ratio(tok):
    ratio = tok.compression_ratio(smooth_chunks(500, seed=2))
    print(f"\nFAST BPE compression on smooth 8x4 chunks (vocab {tok.vocab_size}): x{ratio:.2f} "
          f"(32 DCT integers -> {32 / ratio:.1f} tokens)")
    assert ratio > 1.5
    assert tok.vocab_size <= 512


def test_save_load_gives_identical_tokens(tok, tmp_path):
    x = smooth_chunks(20, seed=3)
    tok.save(tmp_path / "t.json")
    again = ActionTokenizer.load(tmp_path / "t.json")
    also = ActionTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again.encode_batch(x) == tok.encode_batch(x) == also.encode_batch(x)
    with pytest.raises(ValueError, match="not an action tokenizer"):
        ActionTokenizer.from_dict({"format": "other"})


def test_invalid_sequences_raise_clear_errors(tok):
    ids = tok.encode(smooth_chunks(1, seed=4)[0])
    with pytest.raises(InvalidActionTokens, match="expected 8 x 4"):
        tok.decode(ids[:-1])  # truncated generation
    with pytest.raises(InvalidActionTokens, match="outside the action vocabulary"):
        tok.decode([tok.vocab_size + 5])
    with pytest.raises(InvalidActionTokens, match="empty"):
        tok.decode([])
    hi_byte = tok._bpe.token_to_id("Ã")  # a lone UTF-8 lead byte: not a character of the alphabet
    if hi_byte is not None:
        with pytest.raises(InvalidActionTokens):
            tok.decode([hi_byte])


def test_relaxed_decoding_cuts_or_zero_pads_the_high_frequencies(tok):
    chunk = np.clip(smooth_chunks(1, seed=5)[0], tok.low, tok.high)
    ids, full = tok.encode(chunk), tok._to_ints(chunk)
    short = tok._bpe.decode(ids[:-1])  # what a generation that stopped one token early holds
    padded = tok.decode_ints(ids[:-1], relaxed=True)
    assert padded.shape == (32,) and np.array_equal(padded[: len(short)], full[: len(short)])
    assert np.all(padded[len(short):] == 0)  # the missing highest frequencies are zero
    longer = tok.decode_ints(ids + ids[:2], relaxed=True)  # extra tokens after a complete chunk
    np.testing.assert_array_equal(longer, full)
    # Zeroing a few high frequencies moves the chunk by at most their (orthonormal) energy.
    lost = np.sqrt(((full[len(short):] / tok.scale) ** 2).sum()) * (tok.high - tok.low).max() / 2
    assert np.abs(tok.decode(ids[:-1], relaxed=True) - tok.decode(ids)).max() <= lost + 1e-6
    with pytest.raises(InvalidActionTokens, match="empty"):
        tok.decode([], relaxed=True)  # nothing to pad
    with pytest.raises(InvalidActionTokens, match="expected 8 x 4"):
        tok.decode(ids[:-1])  # strict stays strict


def test_extreme_values_are_clipped_not_broken(tok):
    x = np.full((8, 4), 1e3)  # far outside the fitted range -> clipped to +1, still decodable
    out = tok.decode(tok.encode(x))
    assert np.allclose(out, np.broadcast_to(tok.high, (8, 4)), atol=float(tok.quantization_step.max()))
