"""Names -> models: the one preset table (model sizes by name, for training) and the one model-builder
table (a checkpoint's recipe -> the model class its config.json describes), for both model families
(flow-matching `VLAModel`, token-decoding `DiscreteVLA`).

Builders are the functions themselves, not `"module:attr"` strings: checkpoints store only their
recipe name and model config, so nothing here is imported lazily.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, TypeVar

from torch import nn

from apt.models.discrete import DiscreteConfig, DiscreteVLA
from apt.models.expert_base import ExpertConfig
from apt.models.flow import FlowConfig
from apt.models.policy_model import ModelConfig, VLAModel
from apt.models.vlm import VLMConfig

# ----------------------------------------------------------------------------------------- presets
# Qwen3-VL-2B architecture numbers, used to size the real preset without its files (meta device); a
# local checkpoint's own config.json always wins when weights are loaded.
QWEN3_VL_2B_ARCH: dict[str, Any] = {
    "model_type": "qwen3_vl",
    "image_token_id": 151655, "video_token_id": 151656,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653, "tie_word_embeddings": True,
    "text_config": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
                    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
                    "max_position_embeddings": 262144,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0,
                                        "mrope_section": [24, 20, 20], "mrope_interleaved": True}},
    "vision_config": {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
                      "out_hidden_size": 2048, "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
                      "num_position_embeddings": 2304, "deepstack_visual_indexes": [5, 11, 17]},
}

_DUMMY_VLM = VLMConfig(kind="tiny", pretrained_encoders=False, image_size=32, feature_stride=16, width=32,
                       layers=2, heads=2, max_text_tokens=16)
_DUMMY_EXPERT = ExpertConfig(width=32, depth=2, heads=2, mlp_ratio=2.0, adapter_layers=1, num_future_tokens=2)
_TINY_VLM = VLMConfig(kind="tiny", pretrained_encoders=True, image_size=96, feature_stride=16, width=128,
                      layers=4, heads=4, max_text_tokens=24)
# The tiny expert reads the *outputs* of the 4 trunk layers (pi: layer i reads hidden_states[i + 1];
# GR00T: the last one): vlm_tiny's grounding head is trained on the trunk's last layer, so that is
# where the trunk puts "where is the thing the instruction names". (pi0 reads layer inputs 0..L-1 of
# an 18-layer Gemma; with a 4-layer trunk that would hide the one grounded layer from the expert.)
_TINY_EXPERT = ExpertConfig(width=128, depth=4, heads=4, mlp_ratio=4.0, adapter_layers=2, num_future_tokens=8,
                            layer_map=(1, 2, 3, 4), vlm_layer=4)
_QWEN_VLM = VLMConfig(kind="hf", name_or_path="Qwen/Qwen3-VL-2B-Instruct", image_size=224, max_text_tokens=48,
                      dtype="bfloat16")

PRESETS: dict[str, ModelConfig | DiscreteConfig] = {
    # Unit tests / CI: random stand-in encoders, a few thousand parameters per module, no weights read.
    "dummy_pi0": ModelConfig(arch="pi0", vlm=_DUMMY_VLM, expert=_DUMMY_EXPERT, chunk_len=4, action_dim=4, state_dim=4),
    "dummy_groot": ModelConfig(arch="groot", vlm=_DUMMY_VLM, expert=_DUMMY_EXPERT, chunk_len=4, action_dim=4,
                               state_dim=4, flow=FlowConfig(num_steps=4)),
    # The embedded default (tabletop on CPU): MiniLM + EfficientNet-Lite0 + 4x128 trunk, 4x128 expert.
    "tiny_pi0": ModelConfig(arch="pi0", vlm=_TINY_VLM, expert=_TINY_EXPERT, chunk_len=8),
    "tiny_groot": ModelConfig(arch="groot", vlm=_TINY_VLM, expert=_TINY_EXPERT, chunk_len=8,
                              flow=FlowConfig(num_steps=4)),
    # Paper scale: Qwen3-VL-2B (hub name or set vlm.name_or_path to a local copy) + the released "base"
    # expert (width 768, 12 heads, FFN 2x; 14 Stage-1 blocks -> 28 in Stage 2, one per VLM layer).
    "qwen3vl2b_pi0": ModelConfig(arch="pi0", vlm=_QWEN_VLM, chunk_len=50, action_dim=7, state_dim=8,
                                 expert=ExpertConfig(width=768, depth=14, heads=12, mlp_ratio=2.0)),
    "qwen3vl2b_groot": ModelConfig(arch="groot", vlm=_QWEN_VLM, chunk_len=16, action_dim=7, state_dim=8,
                                   flow=FlowConfig(num_steps=4),  # 8 Stage-1 blocks -> GR00T N1.5's 16 DiT blocks
                                   expert=ExpertConfig(width=1024, depth=8, heads=8, adapter_layers=4,
                                                       num_future_tokens=32, vlm_layer=12)),
    # Discrete (pi0-FAST style) and KI. Unit tests / CI: random stand-in encoders, small vocabulary.
    "dummy_discrete": DiscreteConfig(vlm=_DUMMY_VLM, decoder=ExpertConfig(width=32, depth=2, heads=2, mlp_ratio=2.0),
                                     expert=ExpertConfig(width=32, depth=2, heads=2, mlp_ratio=2.0),
                                     chunk_len=4, action_dim=4, state_dim=4, action_vocab=320,
                                     max_action_tokens=24),
    # The embedded default (tabletop on CPU): same backbone and expert sizes as tiny_pi0.
    # Decoder and KI expert read the trunk's layer outputs like the tiny pi expert (`_TINY_EXPERT`).
    "tiny_discrete": DiscreteConfig(vlm=_TINY_VLM, decoder=_TINY_EXPERT, expert=_TINY_EXPERT, chunk_len=8,
                                    action_vocab=1024, max_action_tokens=48),
    # Paper scale: Qwen3-VL-2B + a Gemma-300M-like decoder (and KI expert) over its 28 layers.
    "qwen3vl2b_discrete": DiscreteConfig(
        vlm=_QWEN_VLM, chunk_len=50, action_dim=7, state_dim=8, action_vocab=2048, max_action_tokens=256,
        decoder=ExpertConfig(width=1024, depth=18, heads=8, kv_heads=1, head_dim=128),
        expert=ExpertConfig(width=1024, depth=18, heads=8, kv_heads=1, head_dim=128)),
}
# What `get_preset` calls the presets of each config class in its error message.
PRESET_KINDS: dict[type, str] = {ModelConfig: "model preset", DiscreteConfig: "discrete model preset"}

C = TypeVar("C", ModelConfig, DiscreteConfig)


def get_preset(name: str, kind: type[C]) -> C:
    """The preset `name` among those of config class `kind`; a typo gets a "did you mean" hint."""
    presets = {n: cfg for n, cfg in PRESETS.items() if isinstance(cfg, kind)}
    try:
        return presets[name]
    except KeyError:
        close = difflib.get_close_matches(name, presets, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"unknown {PRESET_KINDS[kind]} {name!r}.{hint} Known: {', '.join(presets)}") from None


# ---------------------------------------------------------------------------------------- builders
def build_vla_model(model_cfg: dict[str, Any]) -> VLAModel:
    """A checkpoint's model config dict -> VLAModel (random weights; `LearnedPolicy` loads them)."""
    return VLAModel(ModelConfig.from_dict(model_cfg))


def build_discrete_model(model_cfg: dict[str, Any]) -> DiscreteVLA:
    """A checkpoint's model config dict -> DiscreteVLA (random weights; `LearnedPolicy` loads them)."""
    return DiscreteVLA(DiscreteConfig.from_dict(model_cfg))


# Checkpoint recipe name -> the function building the model from its config dict (one table, no
# isinstance checks): the flow-matching VLAModel for apt/baseline, the token-decoding DiscreteVLA for
# discrete/ki. Recipes not listed use the default.
MODEL_BUILDERS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "discrete": build_discrete_model,
    "ki": build_discrete_model,
}
DEFAULT_MODEL_BUILDER: Callable[[dict[str, Any]], nn.Module] = build_vla_model


def build_model(meta: Any) -> nn.Module:
    """The model a checkpoint's config describes (random weights), chosen by its recipe."""
    return MODEL_BUILDERS.get(str(meta.recipe.get("name", "")), DEFAULT_MODEL_BUILDER)(meta.model)
