"""Flow matching, shared by both action experts.

Convention (openpi's, and note it is the reverse of GR00T's): **t = 1 is pure noise, t = 0 is data.**
    x_t = t * eps + (1 - t) * a,     target velocity u = dx_t/dt = eps - a,
and sampling integrates dx/dt = v(x_t, t) with Euler steps from t = 1 down to t = 0.
Training times follow openpi: t = Beta(1.5, 1) * 0.999 + 0.001, which puts more weight near the noise
end (t -> 1), where the denoising decision between modes is made.

The sampler takes a plain callable `velocity(x_t, t)`, so the caller can close over a VLM prefix
computed once and reuse it at every step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

VelocityFn = Callable[[Tensor, Tensor], Tensor]  # (x_t [B, ...], t [B]) -> v [B, ...]


@dataclass(frozen=True)
class FlowConfig:
    """Flow-matching settings. The chunk length lives in `ModelConfig.chunk_len` (one source of truth)."""

    num_steps: int = 10  # Euler steps at inference (openpi: 10; starVLA / GR00T: 4)
    beta_a: float = 1.5  # time ~ Beta(beta_a, beta_b) * (1 - t_min) + t_min
    beta_b: float = 1.0
    t_min: float = 0.001  # keeps t > 0 so the target is never exactly the data point


def sample_time(batch: int, cfg: FlowConfig, device: torch.device | str = "cpu",
                generator: torch.Generator | None = None) -> Tensor:
    """Training times t [B] in [t_min, 1].

    Beta(a, 1) is sampled exactly by inverse CDF (u ** (1/a)), which honours `generator`; other
    (a, b) fall back to torch.distributions.Beta (global RNG).
    """
    if cfg.beta_b == 1.0:
        u = torch.rand(batch, device=device, generator=generator)
        beta = u.pow(1.0 / cfg.beta_a)
    else:
        dist = torch.distributions.Beta(torch.tensor(cfg.beta_a), torch.tensor(cfg.beta_b))
        beta = dist.sample((batch,)).to(device)
    return beta * (1.0 - cfg.t_min) + cfg.t_min


def interpolate(actions: Tensor, noise: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(x_t, u): x_t = t*eps + (1-t)*a and target u = eps - a. actions, noise: [B, ...]; t: [B]."""
    assert actions.shape == noise.shape and t.shape == actions.shape[:1], (actions.shape, noise.shape, t.shape)
    tt = t.view(-1, *([1] * (actions.ndim - 1))).to(actions.dtype)
    return tt * noise + (1.0 - tt) * actions, noise - actions


def flow_matching_loss(velocity: VelocityFn, actions: Tensor, cfg: FlowConfig,
                       generator: torch.Generator | None = None, noise: Tensor | None = None,
                       t: Tensor | None = None) -> Tensor:
    """Mean squared error between velocity(x_t, t) and eps - a. actions: [B, ...] (normalised)."""
    if noise is None:
        noise = torch.randn(actions.shape, device=actions.device, dtype=actions.dtype, generator=generator)
    if t is None:
        t = sample_time(actions.shape[0], cfg, actions.device, generator).to(actions.dtype)
    x_t, u = interpolate(actions, noise, t)
    v = velocity(x_t, t)
    assert v.shape == u.shape, (v.shape, u.shape)
    return torch.mean((v.float() - u.float()) ** 2)


@torch.no_grad()
def initial_noise(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None = None,
                  noise: Tensor | None = None) -> Tensor:
    """The sampler's starting point: `noise` when the caller drew it (per-episode streams, see
    apt.policies.learned), checked against `shape`; else N(0, I) from `generator`. Cast to `like`."""
    if noise is not None:
        if tuple(noise.shape) != tuple(shape):
            raise ValueError(f"noise has shape {tuple(noise.shape)}, the sampler needs {tuple(shape)}")
        return noise.to(like)
    gdev = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=gdev).to(like)


def euler_sample(velocity: VelocityFn, shape: tuple[int, ...], num_steps: int, *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 generator: torch.Generator | None = None, noise: Tensor | None = None) -> Tensor:
    """Integrate from x_1 ~ N(0, I) at t = 1 to t = 0 with `num_steps` Euler steps: x <- x - dt * v."""
    assert num_steps >= 1, num_steps
    x = noise if noise is not None else torch.randn(shape, device=device, dtype=dtype, generator=generator)
    assert tuple(x.shape) == tuple(shape), (x.shape, shape)
    dt = 1.0 / num_steps
    for i in range(num_steps):
        t = torch.full((shape[0],), 1.0 - i * dt, device=x.device, dtype=x.dtype)
        x = x - dt * velocity(x, t)
    return x
