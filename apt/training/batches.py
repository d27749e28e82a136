"""Demonstrations -> training batches: action chunking, normalisation, cached frozen features.

The frozen encoders of the `tiny` backbone (EfficientNet-Lite0, MiniLM) never change during
training, so their outputs are computed once per frame and once per instruction and kept in
memory; each step then runs only the trainable trunk and the expert. That is what makes training
on 2 CPU cores practical, and keeps the loader's share of step time small (it is just indexing).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from apt.policies.transforms import Normalizer, channels_first
from apt.demos.native import Demos
from benchmarks.base import BenchError


def chunk_indices(episode_starts: np.ndarray, chunk: int) -> np.ndarray:
    """int64 [N, chunk]: row i holds frames i..i+chunk-1, clamped to i's episode end (hold the last).

    >>> chunk_indices(np.array([0, 3, 5]), 2).tolist()
    [[0, 1], [1, 2], [2, 2], [3, 4], [4, 4]]
    """
    n = int(episode_starts[-1])
    ends = np.repeat(episode_starts[1:] - 1, np.diff(episode_starts))
    idx = np.arange(n)[:, None] + np.arange(chunk)[None, :]
    return np.minimum(idx, ends[:, None]).astype(np.int64)


@dataclass
class TrainingData:
    """All tensors a training step samples from (CPU), built once from a Demos set and a model."""

    states: torch.Tensor  # float32 [N, S], normalised
    action_chunks: torch.Tensor  # float32 [N, H, A], normalised
    instruction_index: torch.Tensor  # long [N] -> row of the per-instruction tensors
    input_ids: torch.Tensor  # long [K, L]
    attention_mask: torch.Tensor  # long [K, L]
    images: torch.Tensor | None  # uint8 [N, N_cam, 3, H, W] when features are not cached
    image_features: torch.Tensor | None  # [N, N_cam*P, C] (fp16) when cached
    text_features: torch.Tensor | None  # [K, L, D] when cached
    state_norm: Normalizer
    action_norm: Normalizer
    cameras: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.states.shape[0])

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        k = self.instruction_index[idx]
        out = {"state": self.states[idx], "actions": self.action_chunks[idx],
               "input_ids": self.input_ids[k], "attention_mask": self.attention_mask[k]}
        if self.image_features is not None:
            out["image_features"] = self.image_features[idx].float()
            out["text_features"] = self.text_features[k].float()
        else:
            out["images"] = self.images[idx]
        return out

    def sampler(self, batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
        """Endless uniformly random batches (with replacement across batches), seeded."""
        g = torch.Generator().manual_seed(seed)
        n = len(self)
        while True:
            yield self.batch(torch.randint(0, n, (batch_size,), generator=g))


def trim_text_padding(batch: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Cut the language columns (`input_ids`, `attention_mask`, cached `text_features`) that are
    padding in every row of the batch, in place; returns the batch.

    Instructions are padded to `max_text_tokens` (24 for the tiny backbone) but tabletop's are 9
    tokens long, so a cached-feature trunk step spent a fifth to a quarter of its tokens on padding.
    Padded keys are masked and padded positions never reach a head, so the loss is unchanged
    (tested for the discrete recipe, which uses it)."""
    mask = batch[prefix + "attention_mask"]
    used = mask.bool().any(dim=0).nonzero()
    keep = int(used.max()) + 1 if len(used) else 1
    for key in ("input_ids", "attention_mask", "text_features"):
        if prefix + key in batch:
            batch[prefix + key] = batch[prefix + key][:, :keep]
    return batch


def _feature_cache_path(demos: Demos, model: torch.nn.Module, camera: str) -> Path | None:
    """Where one camera's frozen image features of a demo set are cached, keyed by data and encoder.

    One file per camera, so adding a camera to a policy encodes only that camera's frames. Only
    pretrained (deterministic) encoders are cached; random stand-ins differ per model.
    """
    vcfg = getattr(model.vlm, "cfg", None)
    data_hash = demos.meta.get("data_hash")
    if vcfg is None or not getattr(vcfg, "pretrained_encoders", False) or not data_hash:
        return None
    ident = {"data_hash": data_hash, "cameras": [camera], "kind": vcfg.kind,
             "image_size": vcfg.image_size, "feature_stride": vcfg.feature_stride, "format": 1}
    if vcfg.detail_strides:  # (absent from the key otherwise: caches made before the field stay valid)
        ident["detail_strides"] = list(vcfg.detail_strides)
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return Path(demos.path) / f"features_{key}.npy"


def _camera_features(demos: Demos, model: torch.nn.Module, camera: str, feature_batch: int,
                     progress: bool) -> torch.Tensor:
    """fp16 [N, P, C] frozen features of one camera's frames: from the cache, or encoded and cached."""
    cache = _feature_cache_path(demos, model, camera)
    if cache is not None and cache.is_file():
        return torch.from_numpy(np.load(cache))
    frames = demos.images[camera]
    feats = []
    with torch.no_grad():
        for s in tqdm(range(0, len(demos), feature_batch), desc=f"encode {camera} frames", disable=not progress):
            arr = np.asarray(frames[s: s + feature_batch])[:, None]  # [n, 1, H, W, 3]
            img = torch.from_numpy(channels_first(arr))
            feats.append(model.vlm.frozen_features(images=img).image.half())
    out = torch.cat(feats)
    if cache is not None:
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, out.numpy())
        os.replace(tmp, cache)  # atomic: concurrent runs never read a half-written cache
    return out


def fit_normalizers(demos: Demos) -> tuple[Normalizer, Normalizer]:
    return Normalizer.fit(demos.states), Normalizer.fit(demos.actions)


def build_training_data(demos: Demos, model: torch.nn.Module, chunk: int, cameras: tuple[str, ...],
                        state_norm: Normalizer, action_norm: Normalizer, *, cache_features: bool = True,
                        feature_batch: int = 256, progress: bool = True) -> TrainingData:
    """Chunk, normalise and (when the backbone allows) pre-encode a demo set for `model`."""
    missing = [c for c in cameras if c not in demos.images]
    if missing:
        raise BenchError(f"demonstrations at {demos.path} have no camera(s) {missing} "
                         f"(they have {list(demos.images)}); regenerate them or choose other cameras")
    idx = chunk_indices(demos.episode_starts, chunk)
    states = torch.from_numpy(state_norm.normalize(demos.states))
    actions = torch.from_numpy(action_norm.normalize(demos.actions))[torch.from_numpy(idx)]
    uniq, inverse = np.unique(demos.instructions.astype(str), return_inverse=True)
    tok = model.tokenize(list(uniq))
    n = len(demos)

    def images_at(rows: slice) -> torch.Tensor:  # uint8 [n, N_cam, 3, H, W]
        arr = np.stack([np.asarray(demos.images[c][rows]) for c in cameras], axis=1)
        return torch.from_numpy(channels_first(arr))

    probe = model.vlm.frozen_features(input_ids=tok["input_ids"][:1], attention_mask=tok["attention_mask"][:1]) \
        if cache_features else None
    image_features = text_features = images = None
    if probe is not None:
        model.vlm.eval()
        # Camera-major tokens [cam0 P | cam1 P | ...], the order frozen_features gives for [B, N_cam, ...].
        image_features = torch.cat([_camera_features(demos, model, c, feature_batch, progress) for c in cameras], 1)
        with torch.no_grad():
            text_features = model.vlm.frozen_features(
                input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).text.half()
    else:
        images = images_at(slice(0, n))
    return TrainingData(states=states, action_chunks=actions, instruction_index=torch.from_numpy(inverse),
                        input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], images=images,
                        image_features=image_features, text_features=text_features,
                        state_norm=state_norm, action_norm=action_norm, cameras=tuple(cameras))
