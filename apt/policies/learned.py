"""A learned policy = a VLAModel + mirrored transforms (normalise in, un-normalise out).

Normalisation statistics always come from the checkpoint, never from a config default, and the same
`Normalizer` and observations -> model-batch transforms (apt/policies/transforms.py) serve training
(on demonstrations) and acting (on live observations), so the two cannot drift apart. `load_policy`
turns a checkpoint directory (read by apt/checkpoints.py) into a LearnedPolicy.

Same episodes, same answers: `act` runs the model on batches of exactly `batch_rows` observations
(the last one padded with copies of its last row), so the kernels (and their summation order) that
compute an observation's chunk do not depend on how many observations it was batched with; the
frozen text encoder's features are computed once per instruction, alone and on one thread, and
cached (an episode's instruction never changes). Measured on 2 cores (tiny apt_pi0): per-row
results are then identical whatever the batch's other rows, their order, or the thread count.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from apt.checkpoints import (CheckpointMeta, action_spec_from, check_suite, checkpoint_sha256, load_weights,
                             observation_spec_from, read_meta)
from apt.devices import resolve_device
from apt.models.builders import build_model
from apt.models.hooks import RelaxedDecoding
from apt.models.policy_model import VLMBacked
from apt.policies.transforms import Normalizer, observations_to_batch
from benchmarks.base import BenchError, Observation, PolicySpec, Suite, sample_seed

log = logging.getLogger(__name__)

# Rows of every model call. Measured (tiny apt_pi0, 2-core EPYC, one thread): an observation costs
# ~55 ms alone and ~17 ms in a batch of 8 with cached text features; a lone observation padded to 8
# costs the whole batch, which the engine avoids by keeping `batch_rows` episodes in flight.
BATCH_ROWS = 8
TEXT_CACHE_SIZE = 4096  # instructions whose frozen text features are kept


class LearnedPolicy:
    """Policy protocol over a trained model: a batch of observations -> action chunks [B, H, A].

    Fallback: a model marks a chunk it could not produce with non-finite values (the discrete VLA does
    so when its generated tokens do not decode). Such a chunk is replaced by the zero action (for delta
    action spaces: stay put), counted in `invalid_chunks` (since construction; `reset` keeps it) and
    logged, so a benchmark run can report it; no NaN ever reaches an environment.
    """

    def __init__(self, model: Any, spec: PolicySpec, state_norm: Normalizer, action_norm: Normalizer,
                 device: str = "cpu", seed: int = 0, policy_id: str = "", checkpoint_sha256: str = "",
                 noise_scale: float = 1.0, batch_rows: int = BATCH_ROWS):
        if batch_rows < 1:
            raise BenchError(f"batch_rows must be >= 1, got {batch_rows}")
        self.model = model.eval()
        if isinstance(model, VLMBacked):
            model.vlm.for_inference()
        self.batch_rows = int(batch_rows)  # FixedBatch: every model call has exactly this many rows
        self.text_cache: dict[str, torch.Tensor] | None = {}  # None: the backbone has no frozen text encoder
        self.spec = spec
        self.state_norm = state_norm
        self.action_norm = action_norm
        self.device = torch.device(device)
        self.seed = seed
        self.policy_id = policy_id
        self.checkpoint_sha256 = checkpoint_sha256
        # Std of the flow sampler's starting noise: 1 = N(0, I) as pi0 samples; the checkpoint may ask
        # for another (config.json "inference"), a run may override it (`apt-bench run --noise-scale`).
        self.noise_scale = float(noise_scale)
        self.invalid_chunks = 0  # chunks replaced by the fallback (see class docstring)
        self.chunks = 0  # chunks produced
        self.reset()

    @classmethod
    def from_checkpoint(cls, path: str | Path, meta: CheckpointMeta, device: str = "cpu",
                        seed: int = 0) -> "LearnedPolicy":
        dev = resolve_device(device)
        try:
            model = build_model(meta)
        except (ValueError, TypeError, KeyError) as err:
            raise BenchError(f"checkpoint {path}: model config does not parse ({err})") from None
        load_weights(path, model, meta)
        # Execute the first half of each chunk, then re-plan from the new observation: chunks are
        # predicted open loop, and their second half is the least certain (pi0 on LIBERO: 5 of 10).
        spec = PolicySpec(action=action_spec_from(meta), observation=observation_spec_from(meta),
                          chunk=model.cfg.chunk_len, replan=max(1, model.cfg.chunk_len // 2))
        if isinstance(model, RelaxedDecoding):  # discrete: how malformed token sequences are decoded
            model.relaxed_decoding = bool(meta.inference.get("relaxed_decoding", False))
        return cls(model.to(dev), spec, Normalizer.from_dict(meta.norm["state"]),
                   Normalizer.from_dict(meta.norm["action"]), device=str(dev), seed=seed,
                   policy_id=meta.policy, checkpoint_sha256=checkpoint_sha256(path),
                   noise_scale=float(meta.inference.get("noise_scale", 1.0)),
                   batch_rows=int(meta.inference.get("batch_rows", BATCH_ROWS)))

    def reset(self) -> None:
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)

    def sampling_noise(self, observations: Sequence[Observation]) -> torch.Tensor:
        """The flow sampler's starting noise [B, H, A]: keyed per observation when every one has a
        `sample_key` (keyed_noise), else from the policy's generator; times `noise_scale`."""
        noise = self.keyed_noise(observations)
        if noise is None:
            shape = (len(observations), self.spec.chunk, self.spec.action.dim)
            noise = torch.randn(shape, generator=self.generator, device=self.device)
        return noise * self.noise_scale

    def keyed_noise(self, observations: Sequence[Observation]) -> torch.Tensor | None:
        """The sampler's starting noise, one stream per observation keyed by its `sample_key` (set by
        the engine from task, episode seed and step) and this policy's seed: an episode gets the
        same noise whether it runs alone, batched with others on a policy actor, or on another
        worker, and paired episodes (same task and seed, another instruction) share it. None when
        any observation has no key: then the policy's own generator is used (reset per episode)."""
        keys = [o.get("sample_key") for o in observations]
        if any(k is None for k in keys):
            return None
        shape = (self.spec.chunk, self.spec.action.dim)
        rows = []
        for k in keys:
            rows.append(torch.randn(shape, generator=torch.Generator().manual_seed(sample_seed(self.seed, k))))
        return torch.stack(rows).to(self.device)

    def batch_from(self, observations: Sequence[Observation]) -> dict[str, torch.Tensor]:
        """Live observations -> the model's batch schema (normalised state, tokenised instruction);
        with the frozen encoders' outputs instead of images where the backbone has them (text
        features from the per-instruction cache)."""
        batch = observations_to_batch(observations, self.spec.observation.cameras, self.state_norm,
                                      self.model.tokenize)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        text = self.text_features([o["instruction"] for o in observations], batch)
        if text is not None:
            batch["text_features"] = text
            batch["image_features"] = self.model.vlm.frozen_features(images=batch.pop("images")).image
        return batch

    def text_features(self, instructions: list[str], batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Frozen text features [B, L, D] from the cache, each computed alone on one thread the first
        time its instruction is seen (so its value never depends on the batch or the process's
        threads); None when the backbone has no frozen text encoder."""
        if self.text_cache is None or not isinstance(self.model, VLMBacked):
            return None
        for i, text in enumerate(instructions):
            if text in self.text_cache:
                continue
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                frozen = self.model.vlm.frozen_features(None, batch["input_ids"][i:i + 1],
                                                        batch["attention_mask"][i:i + 1])
            finally:
                torch.set_num_threads(threads)
            if frozen is None or frozen.text is None:
                self.text_cache = None
                return None
            if len(self.text_cache) >= TEXT_CACHE_SIZE:
                self.text_cache.clear()
            self.text_cache[text] = frozen.text
        return torch.cat([self.text_cache[text] for text in instructions])

    def act(self, observations: list[Observation]) -> np.ndarray:
        if not observations:
            return np.zeros((0, self.spec.chunk, self.spec.action.dim), np.float32)
        relaxed_before = _relaxed_chunks(self.model)
        rows = self.batch_rows
        with torch.inference_mode():
            parts = [self._model_call(observations[i:i + rows]) for i in range(0, len(observations), rows)]
        actions = torch.cat(parts)
        relaxed = _relaxed_chunks(self.model) - relaxed_before
        if relaxed:
            log.info("%s: %d of %d action chunks (padding rows included) decoded with a cut / zero-padded "
                     "coefficient list; %d so far", self.policy_id or "policy", relaxed, len(observations),
                     self.model.relaxed_chunks)
        out = self.action_norm.unnormalize(actions.float().cpu().numpy())
        bad = ~np.isfinite(out).all(axis=(1, 2))
        self.chunks += len(out)
        if bad.any():
            out[bad] = 0.0
            self.invalid_chunks += int(bad.sum())
            log.warning("%s: %d of %d action chunks were invalid (undecodable tokens) and replaced by the "
                        "zero action; %d of %d so far", self.policy_id or "policy", int(bad.sum()), len(out),
                        self.invalid_chunks, self.chunks)
        return np.clip(out, self.spec.action.low, self.spec.action.high).astype(np.float32)

    def _model_call(self, observations: Sequence[Observation]) -> torch.Tensor:
        """Normalised chunks of up to `batch_rows` observations, run as exactly `batch_rows` rows."""
        n = len(observations)
        padded = list(observations) + [observations[-1]] * (self.batch_rows - n)
        return self.model.sample_actions(self.batch_from(padded), noise=self.sampling_noise(padded))[:n]


def _relaxed_chunks(model: Any) -> int:
    """Chunks the model decoded only by cutting / zero-padding (0 for a model without the hook)."""
    return model.relaxed_chunks if isinstance(model, RelaxedDecoding) else 0


def load_policy(path: str | Path, suite: Suite, device: str = "cpu") -> LearnedPolicy:
    """Checkpoint directory -> a Policy ready for `apt-bench run` (validated against the suite)."""
    meta = read_meta(path)
    check_suite(meta, suite, path)
    return LearnedPolicy.from_checkpoint(path, meta, device=device)
