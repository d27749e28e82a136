"""The transforms between a suite's data and a model's inputs, shared by training and acting.

`Normalizer` z-scores states and actions (fitted on demonstrations, stored in the checkpoint, undone
on predicted actions); `channels_first` is the one image layout change for model input, and
`stack_images` / `observations_to_batch` turn observations into a model batch. Training (on
demonstrations and rendered scenes) and a learned policy (on live observations) both call these, so
the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from benchmarks.base import BenchError, Observation


@dataclass(frozen=True)
class Normalizer:
    """z-score with a floor on the std (a constant dimension must not blow up)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, min_std: float = 1e-2) -> "Normalizer":
        x = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])
        return cls(x.mean(0).astype(np.float32), np.maximum(x.std(0), min_std).astype(np.float32))

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def unnormalize(self, x: np.ndarray) -> np.ndarray:
        return (x * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalizer":
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32))


def channels_first(images: np.ndarray) -> np.ndarray:
    """Rendered uint8 images [..., H, W, 3] -> contiguous [..., 3, H, W], the layout models take."""
    return np.ascontiguousarray(np.moveaxis(images, -1, -3))


def stack_images(observations: Sequence[Observation], cameras: Sequence[str]) -> np.ndarray:
    """Observations -> uint8 [B, N_cam, 3, H, W] in the policy's camera order."""
    try:
        per_obs = [np.stack([o["images"][c] for c in cameras]) for o in observations]
    except KeyError as err:
        raise BenchError(f"observation lacks camera {err.args[0]!r}; the policy needs {list(cameras)}") from None
    return channels_first(np.stack(per_obs))


def observations_to_batch(observations: Sequence[Observation], cameras: Sequence[str], state_norm: Normalizer,
                          tokenize: Callable[[list[str]], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Live observations -> the model's batch schema (CPU tensors): images [B, N_cam, 3, H, W],
    normalised state, and the tokenised instruction (`tokenize`: the model's tokenizer)."""
    images = torch.from_numpy(stack_images(observations, cameras))
    state = np.stack([np.asarray(o["state"], np.float32) for o in observations])
    tok = tokenize([o["instruction"] for o in observations])
    return {"images": images, "state": torch.from_numpy(state_norm.normalize(state)), **tok}
