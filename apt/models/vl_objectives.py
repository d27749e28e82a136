"""Vision-language pretraining objective of the `TinyVLM` trunk: image-text matching read from the
pooled language tokens (`apt.training.vl_pretrain` trains with it, `apt.training.vl_pointing` reads
the same pooled tokens)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from apt.models.tiny_vlm import TinyVLM
from apt.models.vlm import FrozenFeatures, VLMOutput


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
