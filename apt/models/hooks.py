"""Optional hooks a policy model may offer beyond `VLAModel`'s interface, declared here so that a
caller tests for one with `isinstance` instead of probing attribute names.

Only the token-decoding models (`apt.models.discrete.DiscreteVLA`: discrete and ki recipes) offer
`RelaxedDecoding`; the learned policy (apt/policies/learned.py) switches it on from a checkpoint's
`"inference"` settings and reports what it counted.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class RelaxedDecoding(Protocol):
    """A model that can decode a malformed action-token sequence by cutting / zero-padding its
    coefficient list (when `relaxed_decoding` is on), counting such chunks in `relaxed_chunks`."""

    relaxed_decoding: bool
    relaxed_chunks: int
