"""FAST-style action tokenizer: action chunk -> DCT coefficients -> integers -> characters -> BPE tokens.

Encoding one chunk a [H, A] (already z-scored by the policy's `Normalizer`):
  1. per dimension, map [lo_d, hi_d] (fitted 1% / 99% quantiles) linearly to [-1, 1] and clip;
  2. orthonormal DCT-II along time (scipy.fft.dct(norm="ortho"), axis 0) -> coefficients [H, A];
  3. multiply by `scale` (FAST: 10) and round to integers;
  4. flatten frequency-major (row k holds frequency k of every dimension), low frequencies first;
  5. map integer v to the character chr(v + vmax) -- vmax = ceil(scale * sqrt(H)) bounds |v| a priori
     (an orthonormal DCT keeps the L2 norm, and |a| <= 1 after step 1), so every chunk is encodable
     and the map never depends on the data;
  6. byte-level BPE (HF `tokenizers`) fitted on the training chunks' strings.
Decoding inverts 6 -> 1 exactly up to the rounding of step 3: the integers are recovered bit for bit,
so the reconstruction error per chunk is at most 0.5 / scale per coefficient in the [-1, 1] domain
(orthonormal DCT: ||error||_2 <= 0.5 * sqrt(H * A) / scale).

There is no pretrained FAST tokenizer to download; following upstream's advice for new action spaces
the BPE is fitted on our own action chunks. The fitted state is plain JSON (`to_dict` / `from_dict`):
it is stored in a discrete checkpoint's config.json (so the checkpoint hash covers it) and written
beside it as `action_tokenizer.json` for inspection.

A generated token sequence may not decode to exactly H * A integers (a truncated generation, a stray
multi-byte fragment): `decode` raises `InvalidActionTokens`; the policy turns that into its documented
fallback (see `apt.models.discrete`). `decode(ids, relaxed=True)` instead cuts or zero-pads the
coefficient list to H * A, as the FAST reference decoders do by default (LeRobot's and openpi's
`relaxed_decoding`): the list is frequency-major, so this drops or zeroes only the highest
frequencies. Empty sequences and characters outside the coefficient alphabet still raise.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import scipy.fft

TOKENIZER_FILE = "action_tokenizer.json"
_FORMAT = "apt-bench-fast"


class InvalidActionTokens(ValueError):
    """A token sequence that does not decode to a [H, A] chunk."""


def _dct(x: np.ndarray) -> np.ndarray:
    return scipy.fft.dct(x, type=2, norm="ortho", axis=0)


def _idct(c: np.ndarray) -> np.ndarray:
    return scipy.fft.idct(c, type=2, norm="ortho", axis=0)


def _bpe(tokenizer_json: str | None = None):
    """A byte-level BPE `tokenizers.Tokenizer`: loaded from JSON, or a fresh untrained one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    if tokenizer_json is not None:
        return Tokenizer.from_str(tokenizer_json)
    tok = Tokenizer(models.BPE())
    # No regex pre-split: the whole chunk string is one "word", so merges may span any characters.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return tok


@dataclass
class ActionTokenizer:
    """Fitted FAST-style tokenizer for chunks of shape [chunk_len, action_dim]."""

    chunk_len: int
    action_dim: int
    scale: float
    low: np.ndarray  # [A] value mapped to -1 (per dimension)
    high: np.ndarray  # [A] value mapped to +1
    tokenizer_json: str  # the fitted HF `tokenizers` BPE, serialised

    def __post_init__(self) -> None:
        self.low = np.asarray(self.low, np.float64).reshape(self.action_dim)
        self.high = np.asarray(self.high, np.float64).reshape(self.action_dim)
        self._bpe = _bpe(self.tokenizer_json)
        self.vmax = int(math.ceil(self.scale * math.sqrt(self.chunk_len)))

    # ------------------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, chunks: np.ndarray, *, vocab_size: int = 1024, scale: float = 10.0,
            quantile: float = 0.01, max_chunks: int | None = 200_000, seed: int = 0) -> ActionTokenizer:
        """Fit the range and the BPE on training chunks [N, H, A] (at most `max_chunks`, sampled).

        vocab_size counts the 256 byte-level base symbols (merges = vocab_size - 256).
        """
        from tokenizers import pre_tokenizers, trainers

        chunks = np.asarray(chunks, np.float64)
        assert chunks.ndim == 3, f"chunks must be [N, H, A], got {chunks.shape}"
        if vocab_size <= 256:
            raise ValueError(f"vocab_size must exceed the 256 byte-level base symbols, got {vocab_size}")
        n, h, a = chunks.shape
        flat = chunks.reshape(-1, a)
        low, high = np.quantile(flat, quantile, axis=0), np.quantile(flat, 1.0 - quantile, axis=0)
        high = np.where(high - low < 1e-6, low + 1e-6, high)  # a constant dimension maps to -1
        empty = _bpe()
        tok = cls(h, a, float(scale), low, high, empty.to_str())
        if max_chunks is not None and n > max_chunks:
            chunks = chunks[np.random.default_rng(seed).choice(n, max_chunks, replace=False)]
        strings = [tok._to_string(c) for c in chunks]
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                      special_tokens=[], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        empty.train_from_iterator(strings, trainer=trainer)
        return cls(h, a, float(scale), low, high, empty.to_str())

    # ------------------------------------------------------------------------- ints <-> chars
    def _to_ints(self, chunk: np.ndarray) -> np.ndarray:
        """[H, A] -> int64 [H * A], frequency-major (low frequencies first)."""
        x = np.asarray(chunk, np.float64)
        assert x.shape == (self.chunk_len, self.action_dim), (x.shape, self.chunk_len, self.action_dim)
        unit = np.clip(2.0 * (x - self.low) / (self.high - self.low) - 1.0, -1.0, 1.0)
        q = np.rint(_dct(unit) * self.scale).astype(np.int64)
        assert np.abs(q).max(initial=0) <= self.vmax, "DCT bound violated"  # by construction
        return q.reshape(-1)

    def _from_ints(self, q: np.ndarray) -> np.ndarray:
        coef = np.asarray(q, np.float64).reshape(self.chunk_len, self.action_dim) / self.scale
        unit = _idct(coef)
        return ((unit + 1.0) / 2.0 * (self.high - self.low) + self.low).astype(np.float32)

    def _to_string(self, chunk: np.ndarray) -> str:
        return "".join(chr(int(v) + self.vmax) for v in self._to_ints(chunk))

    # ------------------------------------------------------------------------------ public API
    @property
    def vocab_size(self) -> int:
        return int(self._bpe.get_vocab_size())

    @property
    def quantization_step(self) -> np.ndarray:
        """[A] one rounding step (1 / scale in the [-1, 1] domain) in the input units of each dimension."""
        return (self.high - self.low) / 2.0 / self.scale

    def encode(self, chunk: np.ndarray) -> list[int]:
        """One chunk [H, A] -> BPE token ids (in [0, vocab_size))."""
        return list(self._bpe.encode(self._to_string(chunk)).ids)

    def encode_batch(self, chunks: np.ndarray) -> list[list[int]]:
        strings = [self._to_string(c) for c in np.asarray(chunks)]
        return [list(e.ids) for e in self._bpe.encode_batch(strings)]

    def decode_ints(self, ids: Sequence[int], relaxed: bool = False) -> np.ndarray:
        """Token ids -> the H * A quantised DCT integers; raises InvalidActionTokens. `relaxed`: a
        wrong count is cut or zero-padded at the high-frequency end instead (module docstring)."""
        ids = [int(i) for i in ids]
        if not ids:
            raise InvalidActionTokens("empty action token sequence")
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise InvalidActionTokens(f"token ids {bad[:4]} outside the action vocabulary [0, {self.vocab_size})")
        text = self._bpe.decode(ids)
        vals = np.fromiter((ord(ch) - self.vmax for ch in text), dtype=np.int64, count=len(text))
        if vals.size and np.abs(vals).max() > self.vmax:  # e.g. U+FFFD from a broken UTF-8 byte sequence
            raise InvalidActionTokens(f"tokens decode to characters outside the coefficient alphabet "
                                      f"(|v| <= {self.vmax}); got {text[:8]!r}...")
        n = self.chunk_len * self.action_dim
        if relaxed and vals.size != n:
            return np.concatenate([vals[:n], np.zeros(max(0, n - vals.size), np.int64)])
        if vals.size != n:
            raise InvalidActionTokens(f"tokens decode to {vals.size} DCT coefficients, expected "
                                      f"{self.chunk_len} x {self.action_dim} = {self.chunk_len * self.action_dim}")
        return vals

    def decode(self, ids: Sequence[int], relaxed: bool = False) -> np.ndarray:
        """Token ids -> chunk float32 [H, A]; raises InvalidActionTokens for an undecodable sequence."""
        return self._from_ints(self.decode_ints(ids, relaxed))

    def compression_ratio(self, chunks: Iterable[np.ndarray]) -> float:
        """Mean (H * A integers) / (BPE tokens) over `chunks`: how much the BPE shortens a chunk."""
        lens = [len(t) for t in self.encode_batch(np.asarray(list(chunks)))]
        return float(self.chunk_len * self.action_dim / np.mean(lens)) if lens else float("nan")

    # ------------------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {"format": _FORMAT, "chunk_len": self.chunk_len, "action_dim": self.action_dim,
                "scale": self.scale, "low": self.low.tolist(), "high": self.high.tolist(),
                "tokenizer": json.loads(self.tokenizer_json)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ActionTokenizer:
        if d.get("format") != _FORMAT:
            raise ValueError(f"not an action tokenizer (format {d.get('format')!r}, expected {_FORMAT!r})")
        return cls(int(d["chunk_len"]), int(d["action_dim"]), float(d["scale"]), np.asarray(d["low"]),
                   np.asarray(d["high"]), json.dumps(d["tokenizer"]))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ActionTokenizer:
        return cls.from_dict(json.loads(Path(path).read_text()))
