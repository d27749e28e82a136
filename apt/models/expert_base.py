"""What every action expert shares: one config dataclass, one call signature, and the `cross_attention`
design's inserted Stage-2 fusion layers (`InsertedFusionExpert`).

An expert maps (VLM features, state, noisy action chunk, time) to a flow-matching velocity. The call is
split in two so the VLM-dependent part (projected prefix keys/values, GR00T's adapter, the released
design's whole VL stream) is computed once per `sample_actions` and reused at every Euler step:
    prefix = expert.encode_prefix(vlm_out, key_mask)      # once
    v      = expert.velocity(prefix, state, x_t, t)       # per step
`forward(vlm_out, state, x_t, t, key_mask)` does both (training).

key_mask [B, T] bool selects the VLM tokens the `cross_attention` design's Stage-1 trunk may attend to
(Stage 1 / Stage 2: `VLMOutput.vision_key_mask()`, image tokens only; `full`: None = every valid
token); its inserted Stage-2 fusion layers always read every valid token (language unmasked). The
`highway` experts ignore it: which of their blocks are language-isolated is part of the architecture.
Stage 1 -> Stage 2 goes through `load_stage1`, which each design implements.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from apt.models.flow import FlowConfig, euler_sample, flow_matching_loss, initial_noise, sample_time
from apt.models.fusion import FusionConfig, FusionKV, fusion_parameter_names
from apt.models.vlm import VLMOutput


@dataclass(frozen=True)
class ExpertConfig:
    """Sizes of the action expert (fields marked pi / groot apply to that architecture only)."""

    width: int = 128
    depth: int = 4  # Stage-1 attention layers (pi: joint-attention layers; groot: DiT blocks); highway Stage 2: 2x
    heads: int = 4
    kv_heads: int | None = None  # grouped/multi-query K/V heads (pi0's Gemma expert: 1); None = heads
    head_dim: int | None = None  # None = width // heads
    mlp_ratio: float = 4.0
    # VLM hidden_states index read by expert layer i (None = strided): cross_attention pi trunk layer i;
    # highway (both archs): the index mixed after Stage-1 block i (= Stage-2 block 2i + 1)
    layer_map: tuple[int, ...] | None = None
    vlm_layer: int | None = None  # groot: the one VLM hidden_states index read (None = middle, like GR00T's 12)
    adapter_layers: int = 2  # groot: self-attention layers of the VLM-feature adapter (GR00T N1.5: 4)
    num_future_tokens: int = 8  # groot: learned future tokens (GR00T: 32)


def default_layer_map(expert_depth: int, vlm_layers: int) -> tuple[int, ...]:
    """Expert layer i reads VLM hidden_states[floor(i * L / depth)]: pi0's "layer l reads the input of
    VLM layer l" when depths are equal, evenly strided over the VLM otherwise.

    >>> default_layer_map(4, 4), default_layer_map(2, 4), default_layer_map(18, 28)[:4]
    ((0, 1, 2, 3), (0, 2), (0, 1, 3, 4))
    """
    return tuple((i * vlm_layers) // expert_depth for i in range(expert_depth))


def attention_geometry(cfg: ExpertConfig, vlm_layers: int, what: str = "expert") -> tuple[int, int, tuple[int, ...]]:
    """(head_dim, kv_heads, layer_map) of a stack that reads the VLM layer by layer, validated."""
    head_dim = cfg.head_dim or cfg.width // cfg.heads
    kv_heads = cfg.kv_heads or cfg.heads
    layer_map = cfg.layer_map or default_layer_map(cfg.depth, vlm_layers)
    if len(layer_map) != cfg.depth or not all(0 <= i <= vlm_layers for i in layer_map):
        raise ValueError(f"{what} layer_map {layer_map} must have {cfg.depth} entries in [0, {vlm_layers}]")
    return head_dim, kv_heads, layer_map


class Expert(nn.Module, abc.ABC):
    """Interface of an action expert (pi-style or GR00T-style, either fusion design), with what all
    keep: their config and chunk geometry, the flow-matching loss and sampler."""

    action_out: nn.Linear  # the output head

    def __init__(self, cfg: ExpertConfig, *, state_dim: int, action_dim: int, chunk_len: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.chunk_len, self.action_dim, self.state_dim = chunk_len, action_dim, state_dim

    @abc.abstractmethod
    def encode_prefix(self, vlm: VLMOutput, key_mask: Tensor | None = None) -> Any:
        """Everything that depends only on the VLM output, cached across denoising steps."""

    @abc.abstractmethod
    def velocity(self, prefix: Any, state: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """state [B, S], x_t [B, H, A], t [B] -> velocity [B, H, A]."""

    @abc.abstractmethod
    def load_stage1(self, state: dict[str, Tensor], fusion: FusionConfig) -> None:
        """This Stage-2 expert takes over a Stage-1 expert's state dict (keys relative to the expert) as
        its design and `fusion.carry` say; a state dict of another design raises ValueError."""

    def check_inputs(self, state: Tensor, x_t: Tensor, t: Tensor) -> tuple[int, int]:
        """Validate `velocity`'s inputs against the chunk geometry; returns (batch, chunk length)."""
        b, h, a = x_t.shape
        assert (h, a) == (self.chunk_len, self.action_dim) and state.shape == (b, self.state_dim) and t.shape == (b,), \
            (x_t.shape, state.shape, t.shape)
        return b, h

    def forward(self, vlm: VLMOutput, state: Tensor, x_t: Tensor, t: Tensor,
                key_mask: Tensor | None = None) -> Tensor:
        return self.velocity(self.encode_prefix(vlm, key_mask), state, x_t, t)

    def flow_loss(self, prefix: Any, state: Tensor, actions: Tensor, flow: FlowConfig,
                  generator: torch.Generator | None = None) -> Tensor:
        """Flow-matching loss on clean normalised `actions` [B, H, A]; noise and times are drawn from
        `generator` on its device (else on the actions' device), then moved to the actions."""
        gdev = generator.device if generator is not None else actions.device
        noise = torch.randn(actions.shape, generator=generator, device=gdev).to(actions)
        t = sample_time(actions.shape[0], flow, gdev, generator).to(actions)
        return flow_matching_loss(lambda x, tt: self.velocity(prefix, state, x, tt), actions, flow, noise=noise, t=t)

    @torch.no_grad()
    def sample(self, prefix: Any, state: Tensor, flow: FlowConfig, generator: torch.Generator | None = None,
               num_steps: int | None = None, noise: Tensor | None = None) -> Tensor:
        """Action chunks [B, H, A] by Euler steps from t=1 to t=0 (`num_steps`, else the flow config's),
        starting from `noise` [B, H, A] when given, else drawn from `generator`."""
        shape = (state.shape[0], self.chunk_len, self.action_dim)
        noise = initial_noise(shape, state, generator, noise)
        return euler_sample(lambda x, t: self.velocity(prefix, state, x, t), shape,
                            num_steps or flow.num_steps, noise=noise)


class InsertedFusionExpert(Expert):
    """The `cross_attention` design: a Stage-1 trunk, and Stage 2 adds one gated fusion layer after
    each trunk layer (`fusion`: None in Stage 1); Stage 2 keeps every Stage-1 tensor."""

    def __init__(self, cfg: ExpertConfig, *, state_dim: int, action_dim: int, chunk_len: int) -> None:
        super().__init__(cfg, state_dim=state_dim, action_dim=action_dim, chunk_len=chunk_len)
        self.fusion: nn.ModuleList | None = None

    @abc.abstractmethod
    def make_fusion_layers(self, fusion: FusionConfig) -> nn.ModuleList:
        """The Stage-2 fusion layers of this expert, one per trunk attention layer (validated)."""

    def insert_fusion_layers(self, fusion: FusionConfig) -> None:
        """Stage 1 -> Stage 2: add one gated fusion layer after each trunk attention layer."""
        if self.fusion is not None:
            raise RuntimeError("fusion layers already inserted")
        self.fusion = self.make_fusion_layers(fusion).to(self.action_out.weight.device)

    @property
    def has_fusion(self) -> bool:
        """True once Stage-2 fusion layers exist."""
        return self.fusion is not None

    def fuse(self, i: int, x: Tensor, prefix_fusion: list[FusionKV] | None) -> Tensor:
        """After trunk layer i: the Stage-2 fusion layer i (identity in Stage 1)."""
        if self.fusion is None:
            return x
        assert prefix_fusion is not None, "prefix was encoded before fusion layers were inserted"
        return self.fusion[i](x, prefix_fusion[i])

    def load_stage1(self, state: dict[str, Tensor], fusion: FusionConfig) -> None:
        """Every Stage-1 tensor must match; only the inserted fusion layers may be missing (fresh)."""
        res = self.load_state_dict(state, strict=False)
        allowed = set(fusion_parameter_names(self))
        bad_missing = [k for k in res.missing_keys if k not in allowed]
        if res.unexpected_keys or bad_missing:
            raise ValueError(f"not a Stage-1 state dict of this expert: unexpected {res.unexpected_keys[:5]}, "
                             f"missing {bad_missing[:5]}")
