"""`HFVLM`: any supported Hugging Face VLM behind the `VLM` interface (`apt.models.vlm`), through
transformers (imported where used: it is heavy) — Qwen2/2.5/3-VL (the APT paper's backbone) and
PaliGemma (pi0's), by hub name or local path, or from a config object. `_hf_format` is the table of
how each model family lays out images in its input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from apt.models.vlm import VLM, FrozenFeatures, VLMConfig, VLMOutput, grid_coords, images_to_float, resize_images


_QWEN_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
_PALIGEMMA_TYPES = ("paligemma",)


@dataclass(frozen=True)
class _HFFormat:
    """How one model family lays out images in its input (resolved from config.model_type)."""

    family: str  # "qwen" | "paligemma"
    image_token_id: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    patch: int = 14
    merge: int = 1
    temporal: int = 1
    start_id: int | None = None  # qwen: <|vision_start|>
    end_id: int | None = None  # qwen: <|vision_end|>
    bos_id: int | None = None  # paligemma: language starts with BOS
    extra: dict[str, Any] = field(default_factory=dict)


def _hf_format(config: Any, tokenizer: Any) -> _HFFormat:
    mt = config.model_type
    if mt in _QWEN_TYPES:
        v = config.vision_config
        clip = mt in ("qwen2_vl", "qwen2_5_vl")  # Qwen2/2.5-VL use CLIP statistics, Qwen3-VL uses 0.5/0.5
        mean = (0.48145466, 0.4578275, 0.40821073) if clip else (0.5, 0.5, 0.5)
        std = (0.26862954, 0.26130258, 0.27577711) if clip else (0.5, 0.5, 0.5)
        return _HFFormat("qwen", config.image_token_id, mean, std, v.patch_size, v.spatial_merge_size,
                         v.temporal_patch_size, config.vision_start_token_id, config.vision_end_token_id)
    if mt in _PALIGEMMA_TYPES:
        tid = getattr(config, "image_token_id", None)
        tid = tid if tid is not None else config.image_token_index
        bos = getattr(tokenizer, "bos_token_id", None)
        return _HFFormat("paligemma", tid, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), config.vision_config.patch_size,
                         bos_id=bos, extra={"image_size": config.vision_config.image_size})
    raise NotImplementedError(
        f"HFVLM supports model types {_QWEN_TYPES + _PALIGEMMA_TYPES}, not {mt!r}: add its image layout to _hf_format")


class HFVLM(VLM):
    """A Hugging Face VLM run with output_hidden_states=True; masks derived from its image token id.

    Image preprocessing is done here in torch (resize, normalise, Qwen patchify), not by the HF image
    processor, so it runs on the device and does not need processor files for config-built models.
    Only the base model (no LM head) is kept: the expert reads hidden states, never logits.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, cfg: VLMConfig) -> None:
        super().__init__()
        base = getattr(model, "model", model)  # *ForConditionalGeneration.model = the VLM without lm_head
        self.model = base
        self.tokenizer = tokenizer
        self.cfg = cfg
        config = getattr(model, "config", base.config)
        self.fmt = _hf_format(config, tokenizer)
        text_cfg = config.get_text_config() if hasattr(config, "get_text_config") else config.text_config
        self.num_layers = int(text_cfg.num_hidden_layers)
        self.hidden_size = int(text_cfg.hidden_size)
        self.pad_id = getattr(tokenizer, "pad_token_id", None) or 0
        if self.fmt.family == "qwen":
            unit = self.fmt.patch * self.fmt.merge
            if cfg.image_size % unit:
                raise ValueError(f"image_size {cfg.image_size} must be a multiple of patch*merge = {unit}")
            self.grid = cfg.image_size // (self.fmt.patch * self.fmt.merge)  # merged tokens per side
        else:
            self.grid = self.fmt.extra["image_size"] // self.fmt.patch
        self.tokens_per_image = self.grid * self.grid

    # -- construction
    @classmethod
    def from_pretrained(cls, name_or_path: str, *, local_files_only: bool = True, cfg: VLMConfig | None = None,
                        device: str | torch.device | None = None) -> HFVLM:
        """Load weights + tokenizer by hub name or local path (AutoModelForImageTextToText / AutoProcessor)."""
        from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

        cfg = cfg or VLMConfig(kind="hf", name_or_path=name_or_path, local_files_only=local_files_only)
        model = AutoModelForImageTextToText.from_pretrained(
            name_or_path, local_files_only=local_files_only, dtype=getattr(torch, cfg.dtype),
            device_map=str(device) if device is not None else None)
        try:
            tok = AutoProcessor.from_pretrained(name_or_path, local_files_only=local_files_only).tokenizer
        except (OSError, ValueError, AttributeError):
            tok = AutoTokenizer.from_pretrained(name_or_path, local_files_only=local_files_only)
        return cls(model, tok, cfg)

    @classmethod
    def from_config(cls, hf_config: Any, tokenizer: Any, cfg: VLMConfig | None = None) -> HFVLM:
        """Randomly initialised model from a transformers config object (tests, meta-device sizing)."""
        from transformers import AutoModelForImageTextToText

        cfg = cfg or VLMConfig(kind="hf", hf_config=hf_config.to_dict())
        model = AutoModelForImageTextToText.from_config(hf_config, dtype=getattr(torch, cfg.dtype))
        return cls(model, tokenizer, cfg)

    # -- interface
    def set_trainable(self, trainable: bool) -> None:
        for name, p in self.model.named_parameters():
            vision = name.startswith(("visual.", "vision_tower.", "multi_modal_projector."))
            p.requires_grad_(trainable and not (vision and self.cfg.freeze_encoders))

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """Language ids without the tokenizer's own special tokens (the image block is added in forward)."""
        if self.tokenizer is None:
            raise RuntimeError("this HFVLM was built from a config without a tokenizer; pass one to from_config")
        n = self.cfg.max_text_tokens - (1 if self.fmt.bos_id is not None else 0)
        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"][:n] for t in texts]
        if self.fmt.bos_id is not None:
            ids = [[self.fmt.bos_id, *x] for x in ids]
        L = self.cfg.max_text_tokens
        input_ids = torch.full((len(ids), L), self.pad_id, dtype=torch.long)
        attn = torch.zeros((len(ids), L), dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            attn[i, : len(x)] = 1
        return {"input_ids": input_ids, "attention_mask": attn}

    def _pixels(self, images: Tensor) -> dict[str, Tensor]:
        """[B, N, 3, H, W] -> model-specific pixel inputs (order: batch-major, then camera)."""
        b, n = images.shape[:2]
        size = self.cfg.image_size if self.fmt.family == "qwen" else self.fmt.extra["image_size"]
        x = resize_images(images_to_float(images).flatten(0, 1), size)
        mean = torch.tensor(self.fmt.mean, device=x.device)[None, :, None, None]
        std = torch.tensor(self.fmt.std, device=x.device)[None, :, None, None]
        x = ((x - mean) / std).to(next(self.model.parameters()).dtype)
        if self.fmt.family == "paligemma":
            return {"pixel_values": x}
        # Qwen patchify (what Qwen2VLImageProcessor does): a still image is repeated `temporal` times.
        p, m, tp = self.fmt.patch, self.fmt.merge, self.fmt.temporal
        g = size // p
        x = x[:, None].expand(-1, tp, -1, -1, -1)  # [M, tp, 3, S, S]
        x = x.reshape(b * n, tp, 3, g // m, m, p, g // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        pixel_values = x.reshape(b * n * g * g, 3 * tp * p * p)
        thw = torch.tensor([[1, g, g]] * (b * n), device=x.device)
        return {"pixel_values": pixel_values, "image_grid_thw": thw}

    def forward(self, images: Tensor | None, input_ids: Tensor, attention_mask: Tensor,
                frozen: FrozenFeatures | None = None) -> VLMOutput:
        if frozen is not None or images is None:
            raise ValueError("HFVLM has no frozen front end to cache; pass images")
        b, n = images.shape[:2]
        dev = input_ids.device
        blk = [self.fmt.image_token_id] * self.tokens_per_image
        if self.fmt.family == "qwen":
            blk = [self.fmt.start_id, *blk, self.fmt.end_id]
        img_ids = torch.tensor(blk * n, dtype=torch.long, device=dev)[None].expand(b, -1)
        ids = torch.cat([img_ids, input_ids], dim=1)  # [B, T]: image blocks first, then language
        attn = torch.cat([torch.ones_like(img_ids), attention_mask.to(img_ids.dtype)], dim=1)
        image_mask = ids == self.fmt.image_token_id
        lang_mask = torch.cat([torch.zeros_like(img_ids, dtype=torch.bool), attention_mask.bool()], dim=1)
        kwargs = self._pixels(images)
        if self.fmt.family == "qwen":
            kwargs["mm_token_type_ids"] = image_mask.int()
        out = self.model(input_ids=ids, attention_mask=attn, output_hidden_states=True, use_cache=False,
                         return_dict=True, **kwargs)
        hs = tuple(out.hidden_states)
        assert len(hs) == self.num_layers + 1, (len(hs), self.num_layers)
        return VLMOutput(hs, image_mask, lang_mask, attn.bool(), grid_coords(image_mask, self.grid))
