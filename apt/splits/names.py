"""The split names: what `apt-bench run --split` and `compare` know without reading a file.

They live with the splits (not in the registry) so the splits wing never reaches back for them;
`compare` orders its tables by them and `load_split` resolves them.
"""

from __future__ import annotations

TRAIN_SPLIT = "train"
# The hand-written evaluation splits, in table order.
SPLITS: tuple[str, ...] = ("seen", "paraphrased", "unseen", "compositional")
# Language-reliance controls generated from a hand-written split (controls.py).
CONTROL_SPLITS: tuple[str, ...] = ("blank", "shuffled", "swapped")
# Splits whose entries must be training tasks and must cover every training task.
TRAINING_TASK_SPLITS: tuple[str, ...] = ("seen", "paraphrased", "unseen")
# Splits whose instructions must not equal a training instruction (after normalising).
OOD_SPLITS: tuple[str, ...] = ("paraphrased", "unseen", "compositional")
