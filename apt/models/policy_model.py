"""VLAModel: a VLM backbone + an action expert trained by flow matching, in one of three recipes.

Recipe stages (`ModelConfig.stage`), for the fusion design `ModelConfig.fusion.kind`:
  stage1  Vision-Action prior on a frozen VLM. highway (released): `depth` expert blocks, all
          language-isolated, each mixing a VLM layer into the expert's VL stream. cross_attention
          (legacy): only the L trunk attention layers, every one sees image tokens only.
  stage2  Prior + language likelihood. highway: 2 * depth blocks, a new language-seeing block before
          each copied Stage-1 block (still language-isolated). cross_attention: a gated fusion layer
          follows each trunk layer and reads the full VLM features. Built from a Stage-1 model with
          `stage2_from_stage1` (or a Stage-1 checkpoint with `load_stage1_state_dict`).
  full    The baseline: the stage2 model from a random expert (highway: the identical model, masks
          included; cross_attention: every layer sees language).
The VLM's trainable part (trunk / LLM) trains in stage2 and full iff `vlm_mode` is "full", at
`vlm_lr_multiplier` times the base LR; Stage 1 always reads a frozen VLM.

Batch schema (one schema, validated here): {"images": [B, N_cam, 3, H, W] uint8 (or float in [0, 1]) --
or instead the cached frozen-encoder outputs "image_features" [B, N*P, C] and "text_features" [B, L, D] --
"input_ids": [B, L], "attention_mask": [B, L] (from `model.tokenize`), "state": [B, S] normalised,
"actions": [B, H, A] normalised (loss only)}. Actions in and out are normalised: un-normalisation with
checkpoint statistics is the policy wrapper's job.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from apt.models.backbones import build_vlm
from apt.models.apt_expert import AptExpert
from apt.models.apt_groot_expert import AptGrootExpert
from apt.models.expert_base import Expert, ExpertConfig
from apt.models.flow import FlowConfig
from apt.models.fusion import FusionConfig, legacy_fusion_dict
from apt.models.groot_expert import GrootExpert
from apt.models.pi_expert import PiExpert
from apt.models.vlm import VLM, FrozenFeatures, VLMConfig, VLMOutput

ARCHS = ("pi0", "groot")
STAGES = ("stage1", "stage2", "full")
VLM_MODES = ("frozen", "full")


class JsonConfig:
    """JSON round trip and `replace` for the frozen model-config dataclasses stored in config.json."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        return _from_dict(cls, d)

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class ModelConfig(JsonConfig):
    """Everything needed to rebuild the model; stored as JSON in a checkpoint's config.json."""

    arch: str = "pi0"  # "pi0" (joint attention to per-layer VLM features) | "groot" (DiT, one VLM layer)
    stage: str = "full"  # "stage1" | "stage2" | "full" (see module docstring)
    vlm: VLMConfig = field(default_factory=VLMConfig)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    chunk_len: int = 8  # H: actions per chunk
    action_dim: int = 7  # A (set from the suite's action spec)
    state_dim: int = 8  # S (set from the suite's observation spec)
    flow: FlowConfig = field(default_factory=FlowConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    # The VLM's trainable part after Stage 1 (stage2 and full; Stage 1 always reads a frozen VLM):
    # "frozen" (the released default, both recipes) | "full" (trains at base LR * vlm_lr_multiplier).
    vlm_mode: str = "frozen"
    vlm_lr_multiplier: float = 1.0

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.vlm_mode not in VLM_MODES:
            raise ValueError(f"vlm_mode must be one of {VLM_MODES}, got {self.vlm_mode!r}")
        if self.vlm_lr_multiplier <= 0:
            raise ValueError("vlm_lr_multiplier must be > 0")

    @property
    def vlm_trainable(self) -> bool:
        return self.stage != "stage1" and self.vlm_mode == "full"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """From a config.json's model entry, reading the older entries as what they were trained as:
        without `fusion.kind` (or any fusion entry): the legacy `cross_attention` design; without
        `vlm_mode`: the VLM trained in `full` (at the base LR), and in Stage 2 iff `fusion.unfreeze_vlm`
        (at `fusion.vlm_lr_multiplier`), the fields that recorded it then."""
        fusion = legacy_fusion_dict(d.get("fusion"))
        if "vlm_mode" not in d:
            fusion = dict(fusion)
            unfreeze, mult = fusion.pop("unfreeze_vlm", False), fusion.pop("vlm_lr_multiplier", 0.1)
            full = d.get("stage", "full") == "full"
            d = {**d, "vlm_mode": "full" if full or unfreeze else "frozen", "vlm_lr_multiplier": 1.0 if full else mult}
        return _from_dict(cls, {**d, "fusion": fusion})



def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Rebuild a (nested) frozen config dataclass from its to_dict(); JSON lists become tuples."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in d.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            value = _from_dict(tp, value)  # type: ignore[arg-type]
        elif isinstance(value, list) and "tuple" in str(tp):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


# ------------------------------------------------------------------------------------------- model
def build_expert(cfg: ModelConfig, vlm: VLM) -> Expert:
    """The expert of `cfg`'s architecture, fusion design and stage, sized to read `vlm`."""
    sizes = {"vlm_hidden": vlm.hidden_size, "vlm_layers": vlm.num_layers, "state_dim": cfg.state_dim,
             "action_dim": cfg.action_dim, "chunk_len": cfg.chunk_len}
    if cfg.fusion.kind == "highway":
        released = AptExpert if cfg.arch == "pi0" else AptGrootExpert
        return released(cfg.expert, **sizes, fusion=cfg.fusion, stage2=cfg.stage != "stage1")
    legacy = PiExpert if cfg.arch == "pi0" else GrootExpert
    return legacy(cfg.expert, **sizes, fusion=None if cfg.stage == "stage1" else cfg.fusion)


class VLMBacked(nn.Module):
    """What every policy model on a VLM shares: tokenising through the VLM, running it on a batch, and
    keeping a frozen VLM in inference mode (no dropout) whatever `train()` is called with. Subclasses
    set `vlm_trains`."""

    vlm: VLM
    vlm_trains: bool

    def tokenize(self, instructions: list[str]) -> dict[str, Tensor]:
        """Instructions -> {"input_ids", "attention_mask"} for the batch (callers never touch a tokenizer)."""
        return self.vlm.tokenize(instructions)

    def encode(self, batch: dict[str, Tensor], prefix: str = "") -> VLMOutput:
        """Run the VLM once on the batch's `prefix`-ed inputs; without autograd when it is frozen
        (memory, and no gradient by construction)."""
        frozen = None
        if prefix + "image_features" in batch:  # cached frozen-encoder outputs (training on a fixed demo set)
            frozen = FrozenFeatures(batch[prefix + "image_features"], batch[prefix + "text_features"])
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.vlm_trains):
            return self.vlm(batch.get(prefix + "images"), batch[prefix + "input_ids"],
                            batch[prefix + "attention_mask"], frozen=frozen)

    def train(self, mode: bool = True) -> VLMBacked:
        super().train(mode)
        if not self.vlm_trains:
            self.vlm.eval()
        return self


class VLAModel(VLMBacked):
    """VLM + expert (+ Stage-2 fusion). `loss(batch)` for training, `sample_actions(batch)` for acting."""

    def __init__(self, cfg: ModelConfig, vlm: VLM | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.vlm: VLM = vlm if vlm is not None else build_vlm(cfg.vlm)
        self.expert: Expert = build_expert(cfg, self.vlm)
        self.vlm_trains = cfg.vlm_trainable
        self.vlm.set_trainable(cfg.vlm_trainable)

    # -- helpers
    def trunk_key_mask(self, vlm_out: VLMOutput) -> Tensor | None:
        """Keys of a cross_attention expert's trunk layers: image tokens only in stage1/stage2 (the prior),
        all in full (highway experts ignore it: their masks are part of their layout)."""
        return None if self.cfg.stage == "full" else vlm_out.vision_key_mask()

    def _check(self, batch: dict[str, Tensor], need_actions: bool) -> int:
        vision = {"image_features", "text_features"} if "image_features" in batch else {"images"}
        keys = vision | {"input_ids", "attention_mask", "state"} | ({"actions"} if need_actions else set())
        missing = keys - set(batch)
        if missing:
            raise KeyError(f"batch lacks {sorted(missing)}; expected {sorted(keys)}")
        b = batch["state"].shape[0]
        assert batch["state"].shape == (b, self.cfg.state_dim), batch["state"].shape
        if need_actions:
            assert batch["actions"].shape == (b, self.cfg.chunk_len, self.cfg.action_dim), batch["actions"].shape
        return b

    # -- training / inference
    def loss(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        """Flow-matching MSE over the action chunk (scalar)."""
        self._check(batch, need_actions=True)
        vlm_out = self.encode(batch)
        prefix = self.expert.encode_prefix(vlm_out, self.trunk_key_mask(vlm_out))
        return self.expert.flow_loss(prefix, batch["state"], batch["actions"], self.cfg.flow, generator)

    @torch.no_grad()
    def sample_actions(self, batch: dict[str, Tensor], generator: torch.Generator | None = None,
                       num_steps: int | None = None, noise: Tensor | None = None) -> Tensor:
        """Normalised action chunks [B, H, A]: VLM + prefix once, then Euler steps from t=1 to t=0.
        `noise` [B, H, A] is the starting sample (else drawn from `generator`)."""
        self._check(batch, need_actions=False)
        vlm_out = self.encode(batch)
        prefix = self.expert.encode_prefix(vlm_out, self.trunk_key_mask(vlm_out))
        return self.expert.sample(prefix, batch["state"], self.cfg.flow, generator, num_steps, noise)

    def param_groups(self, lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """Optimizer groups: expert at `lr`; gate logits at lr * gate_lr_multiplier (no weight decay:
        decay would pull them to sigmoid(0) = half open); trainable VLM params at lr * vlm_lr_multiplier."""
        gates = [p for n, p in self.expert.named_parameters() if p.requires_grad and n.endswith("gate_logit")]
        gate_ids = {id(p) for p in gates}
        expert = [p for p in self.expert.parameters() if p.requires_grad and id(p) not in gate_ids]
        groups: list[dict[str, Any]] = [{"params": expert, "lr": lr, "weight_decay": weight_decay, "name": "expert"}]
        if gates:
            groups.append({"params": gates, "lr": lr * self.cfg.fusion.gate_lr_multiplier, "weight_decay": 0.0,
                           "name": "gates"})
        vlm = [p for p in self.vlm.parameters() if p.requires_grad]
        if vlm:
            groups.append({"params": vlm, "lr": lr * self.cfg.vlm_lr_multiplier, "weight_decay": weight_decay,
                           "name": "vlm"})
        return groups


def load_stage1_state_dict(model: VLAModel, state_dict: dict[str, Tensor]) -> None:
    """Load a Stage-1 state dict into a Stage-2 model: every non-expert tensor (the VLM) must match;
    the expert takes over what its fusion design and `fusion.carry` say (`Expert.load_stage1`)."""
    if model.cfg.stage != "stage2":
        raise ValueError(f"target model must be stage2, is {model.cfg.stage}")
    expert = {k.removeprefix("expert."): v for k, v in state_dict.items() if k.startswith("expert.")}
    res = model.load_state_dict({k: v for k, v in state_dict.items() if not k.startswith("expert.")}, strict=False)
    bad_missing = [k for k in res.missing_keys if not k.startswith("expert.")]
    if res.unexpected_keys or bad_missing:
        raise ValueError(f"not a Stage-1 state dict of this model: unexpected {res.unexpected_keys[:5]}, "
                         f"missing {bad_missing[:5]}")
    model.expert.load_stage1(expert, model.cfg.fusion)


def stage2_from_stage1(stage1: VLAModel, fusion: FusionConfig | None = None) -> VLAModel:
    """Stage-1 model -> Stage-2 model by construction (shares the VLM module; the expert takes over
    the Stage-1 expert as `Expert.load_stage1` says). `fusion`: Stage 2's settings (default Stage 1's;
    its `kind` must stay Stage 1's).

    cross_attention: every expert weight is copied, and the outputs equal the Stage-1 prior's up to the
    gates' initial opening sigmoid(gate_init_logit) per inserted layer. highway: Stage-1 block i becomes
    block 2i + 1 (with `carry="all"` every other expert tensor follows).
    """
    if fusion is not None and fusion.kind != stage1.cfg.fusion.kind:
        raise ValueError(f"Stage 2 must keep Stage 1's fusion design {stage1.cfg.fusion.kind!r}, got {fusion.kind!r}")
    if stage1.cfg.stage != "stage1":
        raise ValueError(f"expected a stage1 model, got {stage1.cfg.stage}")
    cfg = stage1.cfg.replace(stage="stage2", fusion=fusion or stage1.cfg.fusion)
    model = VLAModel(cfg, vlm=stage1.vlm)
    model.to(next(stage1.expert.parameters()).device)
    load_stage1_state_dict(model, stage1.state_dict())
    return model
