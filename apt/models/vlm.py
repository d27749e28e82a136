"""The vision-language backbone interface: per-layer hidden states over [image; language].

Every backbone returns the same `VLMOutput`, so the experts never know which VLM they read. The
backbones live in their own modules: `tiny_vlm.TinyVLM` (the embedded default) and `hf_vlm.HFVLM` (a
Hugging Face VLM); `backbones.build_vlm` picks one from a `VLMConfig`.

Token layout, both backbones: [camera 0 image block, ..., camera N-1 image block, language tokens],
language right-padded to a fixed `max_text_tokens` so T does not depend on the instruction.

Image tokens never see language tokens: TinyVLM's trunk mask lets image queries attend to image keys
only, and the causal Qwen-VL decoders put images first. This is what makes the Stage-1 prior truly
vision-only (masking language *keys* in the expert is not enough if image features had mixed language
in). Caveat: pi0 trains PaliGemma with a bidirectional prefix; `HFVLM` runs PaliGemma with the
transformers default mask (no token_type_ids), which keeps image tokens language-free (tested).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# --------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class VLMConfig:
    """Which backbone and its sizes. JSON-serialisable (stored in checkpoints' config.json)."""

    kind: str = "tiny"  # "tiny" (embedded default) | "hf" (a Hugging Face VLM)
    image_size: int = 128  # images are resized to image_size x image_size before the vision encoder
    max_text_tokens: int = 24  # language is padded/truncated to this many tokens (fixed T)
    freeze_encoders: bool = True  # tiny: MiniLM + EfficientNet stay frozen; hf: the vision tower stays frozen
    # --- tiny ---
    pretrained_encoders: bool = True  # False: random patch/embedding encoders (fast unit tests only)
    feature_stride: int = 16  # EfficientNet feature map used as image tokens (8: 40 ch, 16: 112 ch)
    # Finer EfficientNet maps folded into each token (space-to-depth): stride 8 adds its 2x2 cells
    # (4 x 40 ch), stride 4 its 4x4 cells (16 x 24 ch), stride 1 the token's raw pixels (16 x 16 x 3,
    # as a ViT patch embedding reads them). A stride-16 cell spans ~10 cm of the tabletop scene; the
    # folded cells tell the trunk *where* in it a 4 cm block sits, at no extra tokens.
    detail_strides: tuple[int, ...] = ()
    width: int = 128  # trunk width (= hidden_size of the VLMOutput)
    layers: int = 4  # trunk layers (= num_layers)
    heads: int = 4
    mlp_ratio: float = 4.0
    max_cameras: int = 4
    # --- hf ---
    name_or_path: str | None = None  # hub name or local directory
    local_files_only: bool = True  # never reach the hub unless asked
    hf_config: dict[str, Any] | None = None  # build from this config dict (random init) instead of weights
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.kind not in ("tiny", "hf"):
            raise ValueError(f"VLMConfig.kind must be 'tiny' or 'hf', got {self.kind!r}")
        if self.kind == "hf" and self.name_or_path is None and self.hf_config is None:
            raise ValueError("VLMConfig(kind='hf') needs name_or_path or hf_config")
        bad = [s for s in self.detail_strides if s not in (1, 2, 4, 8) or s >= self.feature_stride]
        if bad or len(set(self.detail_strides)) != len(self.detail_strides):
            raise ValueError(f"VLMConfig.detail_strides must be distinct values of 1, 2, 4, 8 below "
                             f"feature_stride={self.feature_stride}; got {self.detail_strides}")


@dataclass
class VLMOutput:
    """What every backbone returns. T = image tokens + other tokens + language tokens.

    hidden_states: num_layers + 1 tensors [B, T, D], Hugging Face convention: index 0 is the input of
        the first layer (embeddings), index l the output of layer l. pi0 reads index l for expert
        layer l (the input of VLM layer l, from which the VLM computes its own K/V).
    image_mask: [B, T] bool, image tokens.  lang_mask: [B, T] bool, valid language tokens.
    pad_mask: [B, T] bool, every valid token (image, language and any special tokens).
    image_coords: [B, T, 2] float, each image token's (row, column) centre in its image, normalised to
        [0, 1]; 0 on other tokens. None where a backbone does not say (the released expert embeds them).
    """

    hidden_states: tuple[Tensor, ...]
    image_mask: Tensor
    lang_mask: Tensor
    pad_mask: Tensor
    image_coords: Tensor | None = None

    def __post_init__(self) -> None:
        b, t, _ = self.hidden_states[0].shape
        for m in (self.image_mask, self.lang_mask, self.pad_mask):
            assert m.shape == (b, t) and m.dtype == torch.bool, (m.shape, m.dtype, (b, t))
        assert self.image_coords is None or self.image_coords.shape == (b, t, 2), self.image_coords.shape

    def vision_key_mask(self) -> Tensor:
        """Stage-1 keys: valid image tokens only (language masked out)."""
        return self.image_mask & self.pad_mask


@dataclass(frozen=True)
class FrozenFeatures:
    """Frozen-encoder outputs: image tokens [B, N*P, C] (N cameras) and text tokens [B, L, D_text]."""

    image: Tensor | None
    text: Tensor | None


class VLM(nn.Module, abc.ABC):
    """Interface of a backbone. Images: uint8 in [0, 255] or float in [0, 1], [B, N_cam, 3, H, W]."""

    num_layers: int
    hidden_size: int

    @abc.abstractmethod
    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """Instructions -> {"input_ids": [B, L] long, "attention_mask": [B, L] long}, L = max_text_tokens."""

    @abc.abstractmethod
    def forward(self, images: Tensor | None, input_ids: Tensor, attention_mask: Tensor,
                frozen: FrozenFeatures | None = None) -> VLMOutput:
        """Run the backbone with all hidden states (from `frozen` features instead of images if given)."""

    def frozen_features(self, images: Tensor | None = None, input_ids: Tensor | None = None,
                        attention_mask: Tensor | None = None) -> FrozenFeatures | None:
        """Outputs of the frozen encoders, which training may cache once per frame / instruction.

        None when the backbone has no frozen front end to split off (then images go through `forward`).
        """
        return None

    @abc.abstractmethod
    def set_trainable(self, trainable: bool) -> None:
        """Make the trainable part (trunk / LLM) trainable or frozen; frozen encoders stay frozen."""

    def for_inference(self) -> None:
        """Lay the frozen encoders out for acting only (a policy calls it once; training never does)."""


def grid_coords(image_mask: Tensor, grid: int) -> Tensor:
    """[B, T] bool image tokens -> [B, T, 2] normalised (row, column) token centres, 0 elsewhere.

    Assumes what every backbone here does: each image is a run of grid * grid tokens in row-major
    order, images one after another. E.g. grid 2: image tokens get (.25,.25) (.25,.75) (.75,.25) (.75,.75).
    """
    k = (torch.cumsum(image_mask.long(), dim=1) - 1) % (grid * grid)  # index of the token in its image
    rc = torch.stack([k // grid, k % grid], dim=-1).float()
    return (rc + 0.5) / grid * image_mask[..., None]


def images_to_float(images: Tensor) -> Tensor:
    """uint8 [0, 255] or float [0, 1] -> float32 [0, 1], shape kept ([B, N, 3, H, W])."""
    assert images.ndim == 5 and images.shape[2] == 3, f"images must be [B, N_cam, 3, H, W], got {tuple(images.shape)}"
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    assert images.is_floating_point(), images.dtype
    return images.float()


def resize_images(x: Tensor, size: int) -> Tensor:
    """[M, 3, H, W] -> [M, 3, size, size] (bilinear, antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = x.shape[-1] > size or x.shape[-2] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)

