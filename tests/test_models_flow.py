"""Flow matching (openpi convention, t=1 noise): interpolation, time sampling, and a sampler that fits
a bimodal 2-D distribution."""

import torch
from torch import nn

from apt.models.flow import FlowConfig, euler_sample, flow_matching_loss, interpolate, sample_time


def test_interpolation_endpoints_and_target():
    a, eps = torch.randn(3, 2), torch.randn(3, 2)
    x1, u = interpolate(a, eps, torch.ones(3))
    x0, _ = interpolate(a, eps, torch.zeros(3))
    assert torch.allclose(x1, eps) and torch.allclose(x0, a) and torch.allclose(u, eps - a)


def test_euler_with_exact_velocity_of_a_point_mass_lands_on_it():
    # Data = a single point a0: x_t = t*eps + (1-t)*a0, so the exact velocity is (x - a0) / t, and Euler
    # steps from t=1 down to t=0 contract the error by (t - dt)/t each, reaching a0 exactly.
    a0 = torch.tensor([[0.5, -1.5]])
    x = euler_sample(lambda x, t: (x - a0) / t[:, None], (4, 2), 7, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x, a0.expand(4, 2), atol=1e-5)


def test_time_distribution():
    cfg = FlowConfig()
    t = sample_time(20000, cfg, generator=torch.Generator().manual_seed(0))
    assert t.min() >= cfg.t_min and t.max() <= 1.0
    # Beta(1.5, 1) has mean 0.6, scaled by 0.999 and shifted by 0.001.
    assert abs(t.mean().item() - (0.6 * 0.999 + 0.001)) < 0.01


def test_sampler_fits_bimodal_distribution():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    modes = torch.tensor([[-2.0, 1.0], [2.0, -1.0]])

    def data(n, g):
        idx = torch.randint(0, 2, (n,), generator=g)
        return modes[idx] + 0.15 * torch.randn(n, 2, generator=g)

    net = nn.Sequential(nn.Linear(3, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 2))
    velocity = lambda x, t: net(torch.cat([x, t[:, None]], dim=-1))  # noqa: E731
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    cfg = FlowConfig(num_steps=20)
    for _ in range(600):
        loss = flow_matching_loss(velocity, data(256, g), cfg, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()

    x = euler_sample(velocity, (2000, 2), cfg.num_steps, generator=torch.Generator().manual_seed(1))
    d = torch.cdist(x, modes)  # [N, 2]
    near = d.min(-1).values < 0.75
    frac_a = ((d.argmin(-1) == 0) & near).float().mean().item()
    frac_b = ((d.argmin(-1) == 1) & near).float().mean().item()
    assert near.float().mean() > 0.85, near.float().mean()
    assert 0.3 <= frac_a <= 0.7 and 0.3 <= frac_b <= 0.7, (frac_a, frac_b)
    spread = d.min(-1).values[near].pow(2).mean().div(2).sqrt().item()  # per-axis std around the mode
    assert 0.08 < spread < 0.3, spread  # true std 0.15
