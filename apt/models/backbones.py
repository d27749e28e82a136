"""`build_vlm`: VLMConfig -> backbone, the one place that knows both backbones (`TinyVLM`, `HFVLM`).

Apart from the model-builder table (`apt.models.builders`) because the models themselves
(`VLAModel`, `DiscreteVLA`) build their VLM from their config, and the table imports those models.
"""

from __future__ import annotations

from pathlib import Path

import torch

from apt.models.hf_vlm import HFVLM
from apt.models.tiny_vlm import TinyVLM
from apt.models.vlm import VLM, VLMConfig


def build_vlm(cfg: VLMConfig, device: str | torch.device | None = None) -> VLM:
    """VLMConfig -> backbone.

    kind "hf": with `hf_config` a randomly initialised model is built from it (tests; the meta device
    works by calling this inside `with torch.device("meta"):`), its tokenizer taken from `name_or_path`
    when that is a local directory; otherwise weights are loaded from `name_or_path`.
    """
    if cfg.kind == "tiny":
        return TinyVLM(cfg)
    from transformers import AutoConfig, AutoTokenizer

    if cfg.hf_config is None:
        assert cfg.name_or_path is not None
        return HFVLM.from_pretrained(cfg.name_or_path, local_files_only=cfg.local_files_only, cfg=cfg, device=device)
    d = dict(cfg.hf_config)
    hf_config = AutoConfig.for_model(d.pop("model_type"), **d)
    tokenizer = None
    if cfg.name_or_path is not None and Path(cfg.name_or_path).is_dir():
        tokenizer = AutoTokenizer.from_pretrained(cfg.name_or_path, local_files_only=True)
    return HFVLM.from_config(hf_config, tokenizer, cfg)
