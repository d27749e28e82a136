"""A learned policy = a VLAModel + mirrored transforms (normalise in, un-normalise out).

Normalisation statistics always come from the checkpoint, never from a config default, and the same
`Normalizer` and observations -> model-batch transforms (apt/policies/transforms.py) serve training
(on demonstrations) and acting (on live observations), so the two cannot drift apart. `load_policy`
turns a checkpoint directory (read by apt/checkpoints.py) into a LearnedPolicy.
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
from apt.policies.transforms import Normalizer, observations_to_batch
from benchmarks.base import BenchError, Observation, PolicySpec, Suite, sample_seed

log = logging.getLogger(__name__)


class LearnedPolicy:
    """Policy protocol over a trained model: a batch of observations -> action chunks [B, H, A].

    Fallback: a model marks a chunk it could not produce with non-finite values (the discrete VLA does
    so when its generated tokens do not decode). Such a chunk is replaced by the zero action (for delta
    action spaces: stay put), counted in `invalid_chunks` (since construction; `reset` keeps it) and
    logged, so a benchmark run can report it; no NaN ever reaches an environment.
    """

    def __init__(self, model: Any, spec: PolicySpec, state_norm: Normalizer, action_norm: Normalizer,
                 device: str = "cpu", seed: int = 0, policy_id: str = "", checkpoint_sha256: str = "",
                 noise_scale: float = 1.0):
        self.model = model.eval()
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
                   noise_scale=float(meta.inference.get("noise_scale", 1.0)))

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
        """Live observations -> the model's batch schema (normalised state, tokenised instruction)."""
        batch = observations_to_batch(observations, self.spec.observation.cameras, self.state_norm,
                                      self.model.tokenize)
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.no_grad()
    def act(self, observations: list[Observation]) -> np.ndarray:
        if not observations:
            return np.zeros((0, self.spec.chunk, self.spec.action.dim), np.float32)
        relaxed_before = _relaxed_chunks(self.model)
        actions = self.model.sample_actions(self.batch_from(observations), noise=self.sampling_noise(observations))
        relaxed = _relaxed_chunks(self.model) - relaxed_before
        if relaxed:
            log.info("%s: %d of %d action chunks decoded with a cut / zero-padded coefficient list; %d so far",
                     self.policy_id or "policy", relaxed, len(observations), self.model.relaxed_chunks)
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


def _relaxed_chunks(model: Any) -> int:
    """Chunks the model decoded only by cutting / zero-padding (0 for a model without the hook)."""
    return model.relaxed_chunks if isinstance(model, RelaxedDecoding) else 0


def load_policy(path: str | Path, suite: Suite, device: str = "cpu") -> LearnedPolicy:
    """Checkpoint directory -> a Policy ready for `apt-bench run` (validated against the suite)."""
    meta = read_meta(path)
    check_suite(meta, suite, path)
    return LearnedPolicy.from_checkpoint(path, meta, device=device)
