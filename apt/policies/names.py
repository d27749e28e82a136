"""Names of the learned policies, `<recipe>_<arch>`: what `apt-bench train` can make and what the
registry resolves to a shipped or user checkpoint directory (checkpoints/<suite>/<name>).

Plain constants with no project imports, so the registry and the CLI read them without loading torch.
"""

from __future__ import annotations

from pathlib import Path

RECIPES: tuple[str, ...] = ("baseline", "discrete", "apt")
ARCHS: tuple[str, ...] = ("pi0", "groot")
# `ki_pi0`: knowledge insulation (discrete co-training + a continuous pi-style expert behind a
# stop-gradient); pi-style only, as in pi0.5 + KI.
LEARNED_POLICIES: tuple[str, ...] = tuple(f"{r}_{a}" for r in RECIPES for a in ARCHS) + ("ki_pi0",)
# Where the shipped checkpoints live: `checkpoints/<suite>/<name>` (recipes also start from the
# suite's shipped `vlm_tiny` there unless told otherwise).
SHIPPED_CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
