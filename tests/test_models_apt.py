"""APT recipe properties of VLAModel in the legacy `cross_attention` fusion design, for both experts
(tiny random-encoder TinyVLM, CPU). The released `highway` design: tests/test_apt_highway.py.

* Stage 1 never sees language (bit-exact), the `full` baseline and Stage 2 do.
* Right after Stage 1 -> Stage 2 the model is the prior up to the gate's initial opening.
* Gradients reach the VLM trunk exactly in the recipes that train it.
"""

import dataclasses
import json
import math

import pytest
import torch

from apt.models.fusion import CROSS_ATTENTION
from apt.models.builders import QWEN3_VL_2B_ARCH, get_preset
from apt.models.policy_model import ModelConfig, VLAModel, load_stage1_state_dict, stage2_from_stage1

torch.set_num_threads(1)
ARCHS = ["dummy_pi0", "dummy_groot"]


def _batch(model, instructions, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(instructions)
    cfg = model.cfg
    return {"images": torch.randint(0, 256, (b, 2, 3, 40, 40), dtype=torch.uint8, generator=g),
            **model.tokenize(instructions),
            "state": torch.randn(b, cfg.state_dim, generator=g),
            "actions": torch.randn(b, cfg.chunk_len, cfg.action_dim, generator=g)}


def FusionConfig(**changes):  # noqa: N802 - the legacy design's settings, with changes
    return dataclasses.replace(CROSS_ATTENTION, **changes)


def _model(preset, stage, **changes):
    torch.manual_seed(0)
    changes = {"fusion": CROSS_ATTENTION, **changes}
    return VLAModel(get_preset(preset, ModelConfig).replace(stage=stage, **changes)).eval()


def _velocity(model, batch, seed=1):
    """Expert velocity at a fixed (x_t, t): the whole model output, without sampling noise."""
    g = torch.Generator().manual_seed(seed)
    b = batch["state"].shape[0]
    x = torch.randn(b, model.cfg.chunk_len, model.cfg.action_dim, generator=g)
    t = torch.rand(b, generator=g)
    with torch.no_grad():
        out = model.encode(batch)
        return model.expert(out, batch["state"], x, t, model.trunk_key_mask(out))


INSTR_A = ["pick up the red block", "put the green cube in the bowl"]
INSTR_B = ["push the blue block to the left edge of the table please", "stack"]


@pytest.mark.parametrize("preset", ARCHS)
def test_stage1_is_language_invariant_bit_exact(preset):
    model = _model(preset, "stage1")
    ba, bb = _batch(model, INSTR_A), _batch(model, INSTR_B)
    assert not torch.equal(ba["input_ids"], bb["input_ids"])
    assert torch.equal(_velocity(model, ba), _velocity(model, bb))
    sa = model.sample_actions(ba, generator=torch.Generator().manual_seed(3))
    sb = model.sample_actions(bb, generator=torch.Generator().manual_seed(3))
    assert torch.equal(sa, sb)
    # ...and Stage 2 built from it (language unmasked through the gates) does depend on language.
    s2 = stage2_from_stage1(model).eval()
    assert not torch.equal(_velocity(s2, ba), _velocity(s2, bb))


@pytest.mark.parametrize("preset", ARCHS)
def test_full_baseline_sees_language(preset):
    model = _model(preset, "full")
    assert not torch.equal(_velocity(model, _batch(model, INSTR_A)), _velocity(model, _batch(model, INSTR_B)))


@pytest.mark.parametrize("preset", ARCHS)
def test_stage2_starts_as_the_stage1_prior(preset):
    stage1 = _model(preset, "stage1")
    batch = _batch(stage1, INSTR_A)
    v1 = _velocity(stage1, batch)
    diffs = {}
    for logit in (-4.0, 0.0, 20.0):  # closed (default init), half-open, fully open
        torch.manual_seed(1)  # same fusion-layer init for every gate setting
        s2 = stage2_from_stage1(stage1, FusionConfig(gate_init_logit=logit)).eval()
        diffs[logit] = (_velocity(s2, batch) - v1).abs().max().item()
    # To first order the change is linear in the gate: |v2 - v1| ~= sigmoid(g0) * (change with the new
    # path fully open). The factor 4 covers the non-linearity of that fully-open reference.
    scale = 4 * diffs[20.0]
    assert 0 < diffs[-4.0] <= torch.sigmoid(torch.tensor(-4.0)).item() * scale, diffs
    assert diffs[-4.0] < 0.05 * v1.abs().max().item(), diffs  # the prior is kept to a few percent
    # A half-open gate (init logit 0) moves the output much more: the gate, not luck, keeps the prior.
    assert diffs[0.0] > 5 * diffs[-4.0], diffs


@pytest.mark.parametrize("preset", ARCHS)
def test_stage1_weights_are_copied_exactly(preset):
    stage1 = _model(preset, "stage1")
    s2 = stage2_from_stage1(stage1)
    sd2 = s2.state_dict()
    for k, v in stage1.state_dict().items():
        assert torch.equal(sd2[k], v), k
    assert s2.expert.has_fusion and not stage1.expert.has_fusion
    # A Stage-2 model refuses a state dict that is not a Stage-1 one of the same architecture.
    other = _model("dummy_groot" if preset == "dummy_pi0" else "dummy_pi0", "stage2")
    with pytest.raises(ValueError):
        load_stage1_state_dict(other, stage1.state_dict())


def _trunk_grad(model):
    model.train()
    model.zero_grad(set_to_none=True)
    model.loss(_batch(model, INSTR_A), generator=torch.Generator().manual_seed(0)).backward()
    grads = [p.grad for n, p in model.vlm.named_parameters() if n.startswith("trunk.")]
    enc = [p.grad for n, p in model.vlm.named_parameters() if n.startswith(("text_encoder.", "vision_encoder."))]
    assert all(g is None for g in enc), "frozen encoders must never receive gradients"
    expert = [p.grad for p in model.expert.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in expert)
    return sum(0.0 if g is None else g.abs().sum().item() for g in grads)


@pytest.mark.parametrize("preset", ARCHS)
def test_gradient_reaches_vlm_trunk_only_when_trained(preset):
    assert _trunk_grad(_model(preset, "full", vlm_mode="full")) > 0
    assert _trunk_grad(_model(preset, "full")) == 0  # vlm_mode "frozen" (the default) holds for the baseline too
    assert _trunk_grad(_model(preset, "stage2", vlm_mode="full")) > 0
    assert _trunk_grad(_model(preset, "stage2")) == 0  # default Stage 2 keeps the VLM frozen
    stage1 = _model(preset, "stage1")
    assert _trunk_grad(stage1) == 0
    assert not any(p.requires_grad for p in stage1.vlm.parameters())


def test_param_groups_apply_vlm_lr_multiplier():
    model = _model("dummy_pi0", "stage2", vlm_mode="full", vlm_lr_multiplier=0.1)
    groups = {g["name"]: g for g in model.param_groups(1e-3)}
    assert math.isclose(groups["vlm"]["lr"], 1e-4) and groups["expert"]["lr"] == 1e-3
    assert "vlm" not in {g["name"] for g in _model("dummy_pi0", "stage1").param_groups(1e-3)}


@pytest.mark.parametrize("preset", ["dummy_pi0", "dummy_groot"])
def test_gate_logits_get_their_own_learning_rate_and_no_decay(preset):
    model = _model(preset, "stage2", fusion=FusionConfig(gate_lr_multiplier=20.0))
    groups = {g["name"]: g for g in model.param_groups(1e-3, weight_decay=0.1)}
    gate_params = {id(p) for n, p in model.expert.named_parameters() if n.endswith("gate_logit")}
    assert {id(p) for p in groups["gates"]["params"]} == gate_params and len(gate_params) == model.cfg.expert.depth
    assert math.isclose(groups["gates"]["lr"], 2e-2) and groups["gates"]["weight_decay"] == 0.0
    assert not gate_params & {id(p) for p in groups["expert"]["params"]}  # each parameter in exactly one group
    assert "gates" not in {g["name"] for g in _model(preset, "stage1").param_groups(1e-3)}


def test_prefix_is_computed_once_per_sample_call():
    model = _model("dummy_pi0", "stage2")
    calls = []
    model.vlm.register_forward_hook(lambda *a: calls.append(1))
    model.sample_actions(_batch(model, INSTR_A), num_steps=5)
    assert len(calls) == 1


def test_config_json_round_trip_and_presets():
    for name in ("dummy_pi0", "tiny_groot", "qwen3vl2b_pi0"):
        cfg = get_preset(name, ModelConfig).replace(fusion=FusionConfig(layer_map=(0, 1), gate="channel"))
        again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert again == cfg
    with pytest.raises(KeyError, match="dummy_pi0"):
        get_preset("dumy_pi0", ModelConfig)
    with pytest.raises(ValueError):
        ModelConfig.from_dict({"arch": "pi0", "no_such_field": 1})


def test_real_size_preset_builds_on_meta_device():
    cfg = get_preset("qwen3vl2b_pi0", ModelConfig).replace(stage="stage2", fusion=CROSS_ATTENTION)
    cfg = cfg.replace(expert=dataclasses.replace(cfg.expert, width=1024, depth=18, heads=8, kv_heads=1, head_dim=128,
                                                 mlp_ratio=4.0))  # the size this design was built at
    cfg = cfg.replace(vlm=dataclasses.replace(cfg.vlm, hf_config=QWEN3_VL_2B_ARCH))  # size without the files
    with torch.device("meta"):
        model = VLAModel(cfg)
    n_vlm = sum(p.numel() for p in model.vlm.parameters())
    n_expert = sum(p.numel() for p in model.expert.parameters())
    assert model.vlm.num_layers == 28 and model.vlm.hidden_size == 2048
    assert 1.5e9 < n_vlm < 2.5e9, n_vlm
    assert 2.5e8 < n_expert < 4.0e8, n_expert
