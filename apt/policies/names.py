"""Learned policy names `<recipe>_<arch>`: the one list training, the registry and the tables read.

Here rather than in `apt/registry.py` so that training can name the policies it trains without
importing the registry (which resolves names to suites, reference policies and checkpoints).
"""

from __future__ import annotations

# Learned policy names `<recipe>_<arch>`; each resolves to a shipped or user checkpoint directory.
RECIPES: tuple[str, ...] = ("baseline", "discrete", "apt")
ARCHS: tuple[str, ...] = ("pi0", "groot")
# `ki_pi0`: knowledge insulation (discrete co-training + a continuous pi-style expert behind a
# stop-gradient); pi-style only, as in pi0.5 + KI.
LEARNED_POLICIES: tuple[str, ...] = tuple(f"{r}_{a}" for r in RECIPES for a in ARCHS) + ("ki_pi0",)
