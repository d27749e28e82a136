"""Grounding pretraining of the tiny VLM trunk: point at the places an instruction refers to.

Why: a VLA's VLM is expected to know *where* the things an instruction names are — Qwen-VL and
PaliGemma are trained on referring / detection data, embodied VLMs (RoboPoint, Gemini Robotics-ER)
on "where to pick, where to place" points. Our tiny trunk starts random; image-text matching alone
left it near chance within CPU budgets, so every policy had to learn the binding "red" -> the red
block's pixels from the action loss alone, and none did in 30 minutes (they reached for whatever
block was nearest). This objective gives the trunk that binding before any policy is trained, and
every recipe (apt, baseline, discrete) starts from the same trunk, so the comparison stays fair.

Targets come from the demonstrations in hindsight, with no privileged simulator state: for each
frame of an episode, (a) the TCP xy where the episode first reaches its working height (the first
frame within LOW_TOL of the episode's lowest TCP z: the grasp of place/stack, the push contact) and
(b) the TCP xy where the episode ends. The trunk predicts both from the mean of its last layer's
language tokens (`pooled_language`: they attend to the image tokens), so it must find the
instruction's referents in the image. (a) is trained only on frames up to that moment (afterwards
the object has moved). Only the demonstrations' own (training) instructions are used: the held-out
splits' wordings and compositions stay unseen.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchmarks.base import BenchError
from apt.models.tiny_vlm import TinyVLM
from apt.models.vl_objectives import pooled_language
from apt.models.vlm import FrozenFeatures
from apt.training.batches import TrainingData, build_training_data, fit_normalizers
from apt.demos.native import Demos

LOW_TOL = 0.01  # m above the episode's lowest TCP z that counts as "reached working height"
HELDOUT_EVERY = 20  # every 20th episode is held out to report pointing error on unseen layouts


def pointing_targets(demos: Demos) -> tuple[np.ndarray, np.ndarray]:
    """(targets float32 [N, 4] = (first-low xy, final xy) in metres, weights float32 [N, 2]).

    weights[:, 0] is 1 on frames up to the first low frame, weights[:, 1] is 1 on every frame.
    """
    if demos.states.shape[1] < 3:
        raise BenchError(f"pointing targets need a TCP xyz in the state (first 3 dims); {demos.path} has "
                         f"state_dim {demos.states.shape[1]}")
    st = demos.states
    starts = demos.episode_starts
    targets = np.zeros((len(st), 4), np.float32)
    weights = np.zeros((len(st), 2), np.float32)
    for e in range(len(starts) - 1):
        a, b = int(starts[e]), int(starts[e + 1])
        z = st[a:b, 2]
        t1 = int(np.nonzero(z <= z.min() + LOW_TOL)[0][0])
        targets[a:b, :2] = st[a + t1, :2]
        targets[a:b, 2:] = st[b - 1, :2]
        weights[a:a + t1 + 1, 0] = 1.0
        weights[a:b, 1] = 1.0
    return targets, weights


@dataclass
class PointingData:
    """Demo frames with cached frozen features and normalised hindsight pointing targets."""

    frames: TrainingData  # features, tokens and instruction index of every frame (actions unused)
    targets: Tensor  # float32 [N, 4], (target - mean) / scale
    weights: Tensor  # float32 [N, 2]
    mean: Tensor  # [4]
    scale: float  # metres per normalised unit
    train_rows: Tensor  # long: frames of training episodes
    heldout_rows: Tensor  # long: frames of every HELDOUT_EVERY-th episode
    data_hash: str | None = None  # the demo set's hash (recorded with the VLM checkpoint)

    def batch(self, rows: Tensor) -> dict[str, Tensor]:
        b = self.frames.batch(rows)
        return {"image_features": b["image_features"], "text_features": b["text_features"],
                "input_ids": b["input_ids"], "attention_mask": b["attention_mask"],
                "point_targets": self.targets[rows], "point_weights": self.weights[rows]}

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, Tensor]:
        pick = torch.randint(0, len(self.train_rows), (batch_size,), generator=generator)
        return self.batch(self.train_rows[pick])


def make_pointing_data(demos: Demos, vlm: TinyVLM, cameras: tuple[str, ...] = ("front",),
                       progress: bool = True) -> PointingData:
    """Build pointing data from a demo set for `vlm` (frozen features come from the demo's cache)."""
    if not isinstance(vlm, TinyVLM) or not vlm.cfg.pretrained_encoders:
        raise BenchError("pointing pretraining needs the tiny backbone with its pretrained encoders")
    shim = types.SimpleNamespace(vlm=vlm, tokenize=vlm.tokenize)  # build_training_data's model interface
    sn, an = fit_normalizers(demos)
    frames = build_training_data(demos, shim, 1, cameras, sn, an, progress=progress)
    t, w = pointing_targets(demos)
    tt = torch.from_numpy(t)
    mean = tt.mean(0)
    scale = float((tt - mean).std())
    episode = np.repeat(np.arange(len(demos.episode_starts) - 1), np.diff(demos.episode_starts))
    held = torch.from_numpy(episode % HELDOUT_EVERY == 0)
    rows = torch.arange(len(t))
    return PointingData(frames, (tt - mean) / scale, torch.from_numpy(w), mean, scale, rows[~held], rows[held],
                        demos.meta.get("data_hash"))


def pointing_loss(vlm: TinyVLM, batch: dict[str, Tensor]) -> Tensor:
    """Weighted MSE of the point head (normalised units), each target averaged over its valid frames."""
    pred = predict_points(vlm, batch)
    err = ((pred - batch["point_targets"].to(pred.device)) ** 2).view(-1, 2, 2).sum(-1)  # [B, 2]
    w = batch["point_weights"].to(pred.device)
    return ((err * w).sum(0) / w.sum(0).clamp_min(1.0)).sum()


def predict_points(vlm: TinyVLM, batch: dict[str, Tensor]) -> Tensor:
    """[B, 4] normalised (first-low xy, final xy) predicted from the pooled last-layer language tokens."""
    dev = vlm.img_pos.device
    out = vlm(None, batch["input_ids"].to(dev), batch["attention_mask"].to(dev),
              frozen=FrozenFeatures(batch["image_features"].to(dev), batch["text_features"].to(dev)))
    return vlm.point_head(pooled_language(out)).float()


@torch.no_grad()
def evaluate_pointing(vlm: TinyVLM, data: PointingData, batch_size: int = 512) -> dict[str, Any]:
    """Mean xy error in cm of both points on the held-out episodes, and of always predicting the mean."""
    was = vlm.training
    vlm.eval()
    errs, base = [], []
    for i in range(0, len(data.heldout_rows), batch_size):
        b = data.batch(data.heldout_rows[i:i + batch_size])
        pred = predict_points(vlm, b).cpu()
        for out, p in ((errs, pred), (base, torch.zeros_like(pred))):
            d = ((p - b["point_targets"]) * data.scale).view(-1, 2, 2).norm(dim=-1) * 100  # cm, [B, 2]
            out.append((d * b["point_weights"]).sum(0) / 1.0)
    w = data.weights[data.heldout_rows].sum(0).clamp_min(1.0)
    e, m = torch.stack(errs).sum(0) / w, torch.stack(base).sum(0) / w
    vlm.train(was)
    return {"pick_cm": round(float(e[0]), 2), "final_cm": round(float(e[1]), 2),
            "pick_cm_mean_predictor": round(float(m[0]), 2), "final_cm_mean_predictor": round(float(m[1]), 2),
            "heldout_frames": int(len(data.heldout_rows))}
