"""Training recipes behind `apt-bench train`, one per module (`apt/training/train.py` picks one by
policy name):

- `flow.py`: `apt_<arch>` (Stage 1 prior on a frozen VLM, then Stage 2 with the fusion layers) and
  `baseline_<arch>` (the standard recipe, every layer sees language);
- `discrete.py`: `discrete_<arch>` (pi0-FAST style action tokens with VL co-training) and `ki_pi0`
  (knowledge insulation);
- `vlm.py`: `vlm_tiny`, vision-language pretraining of the tiny backbone's trunk;
- `common.py`: what they share (optimiser settings, presets, the VLM trunk, demos, config.json).

Under torchrun every recipe runs data parallel (see `apt/training/distributed.py`); `--batch-size`
is global.
"""
