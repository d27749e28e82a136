"""The released ("highway") APT expert, pi-style and GR00T-style: reference/apt-method.md, "APT as the
authors' released code builds it". Tiny random-encoder TinyVLM and a tiny random Qwen3-VL, CPU.

* Stage 1 acts bit-identically under any instruction (blank, swapped, another task's).
* Stage 2 = new base-mask blocks interleaved before the copied Stage-1 blocks (block i -> 2i + 1),
  which stay blind to language; what else Stage 2 takes over is `FusionConfig.carry`.
* The gate mixes the expert's VL stream and the projected VLM state as sigmoid(g) says.
* The cached sampler (VL stream once per call) equals the plain joint-sequence forward.
* Old config.json files (no `fusion.kind`) read as the legacy design and still load.
"""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from apt.checkpoints import load_weights, read_meta
from apt.cli import main
from apt.models.apt_expert import AptExpert
from apt.models.apt_groot_expert import AptGrootExpert
from apt.models.builders import QWEN3_VL_2B_ARCH, build_model, get_preset
from apt.models.expert_base import ExpertConfig
from apt.models.flow import euler_sample
from apt.models.fusion import CARRY_MODES, CROSS_ATTENTION, FUSION_KINDS, FusionConfig
from apt.models.highway import Highway, highway_masks
from apt.models.hf_vlm import HFVLM
from apt.models.layers import masked_attention, merge_heads, sincos_embedding
from apt.models.policy_model import VLM_MODES, ModelConfig, VLAModel, load_stage1_state_dict, stage2_from_stage1
from apt.models.vlm import VLMConfig
from apt.training.options import TrainOptions
from apt.training.ship import training_command
from tests.test_models_vlm import _tiny_paligemma, _tiny_qwen3_vl

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["dummy_pi0", "dummy_groot"]
EXPERTS = {"dummy_pi0": AptExpert, "dummy_groot": AptGrootExpert}
INSTRUCTIONS = {
    "a": ["pick up the red block", "put the green cube in the bowl"],
    "swapped": ["put the green cube in the bowl", "pick up the red block"],
    "blank": ["", ""],
    "other": ["push the blue block to the left edge of the table please", "stack"],
}


def _model(stage, fusion=FusionConfig(), preset="dummy_pi0", seed=0):
    torch.manual_seed(seed)
    return VLAModel(get_preset(preset, ModelConfig).replace(stage=stage, fusion=fusion)).eval()


def _batch(model, instructions, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, cfg = len(instructions), model.cfg
    return {"images": torch.randint(0, 256, (b, 2, 3, 40, 40), dtype=torch.uint8, generator=g),
            **model.tokenize(instructions), "state": torch.randn(b, cfg.state_dim, generator=g),
            "actions": torch.randn(b, cfg.chunk_len, cfg.action_dim, generator=g)}


def _actions(model, batch):
    return model.sample_actions(batch, generator=torch.Generator().manual_seed(3))


def _joint_velocity(expert, out, state, x_t, t):
    """The released block as written: one joint sequence [VL; actions] per block, no caching."""
    n_act, (b, n_vl) = 1 + expert.chunk_len, out.pad_mask.shape
    masks = highway_masks(out.image_mask, out.pad_mask, n_act)
    temb = expert.time_mlp(sincos_embedding(t, expert.cfg.width))
    vl = expert.embed_vl(out)
    act = torch.cat([expert.state_in(state)[:, None], expert.action_in(x_t)], 1) + expert.act_pos
    for i, (blk, isolated) in enumerate(zip(expert.blocks, expert.isolated)):
        vl_rows, act_rows = masks[isolated]
        no_actions = torch.zeros(b, n_vl, n_act, dtype=torch.bool)  # the VL stream never sees actions
        mask = torch.cat([torch.cat([vl_rows, no_actions], 2), act_rows], 1)
        q, k, v = blk.project(torch.cat([blk.norm(vl, None), blk.norm(act, temb)], 1))
        x = torch.cat([vl, act], 1) + blk.o(merge_heads(masked_attention(q, k, v, mask)))
        vl, act = x[:, :n_vl], x[:, n_vl:]
        vl, act = vl + blk.mlp(blk.norm(vl, None, mlp=True)), act + blk.mlp(blk.norm(act, temb, mlp=True))
        vl = expert.highway.mix(i, vl, out.hidden_states[expert.layer_map[i]])
    return expert.action_out(expert.final_norm(act[:, 1:], temb))


# ----------------------------------------------------------------------------------------- stage 1
@pytest.mark.parametrize("preset", PRESETS)
def test_stage1_acts_bit_identically_under_any_instruction(preset):
    model = _model("stage1", preset=preset)
    assert type(model.expert) is EXPERTS[preset] and model.expert.isolated == (True, True)
    ref = _actions(model, _batch(model, INSTRUCTIONS["a"]))
    for name, instr in INSTRUCTIONS.items():
        assert torch.equal(_actions(model, _batch(model, instr)), ref), name
    # ...and Stage 2 built from it reads the instruction (through its new base-mask blocks).
    s2 = stage2_from_stage1(model).eval()
    assert not torch.equal(_actions(s2, _batch(s2, INSTRUCTIONS["a"])), _actions(s2, _batch(s2, INSTRUCTIONS["other"])))


def _tiny_hf_vlm(family):
    """A tiny random Qwen3-VL or PaliGemma (the configs of tests/test_models_vlm.py) and its VLMConfig."""
    config, tokenizer = _tiny_qwen3_vl() if family == "qwen" else _tiny_paligemma()
    vcfg = VLMConfig(kind="hf", hf_config=config.to_dict(), image_size=32, max_text_tokens=8)
    return HFVLM.from_config(config, tokenizer, vcfg), vcfg


@pytest.mark.parametrize("family, grid", [("qwen", 2), ("paligemma", 4)])
def test_stage1_acts_bit_identically_through_a_tiny_hf_vlm(family, grid):
    torch.manual_seed(0)
    vlm, vcfg = _tiny_hf_vlm(family)
    cfg = ModelConfig(arch="pi0", stage="stage1", vlm=vcfg, chunk_len=5, action_dim=3, state_dim=2,
                      expert=ExpertConfig(width=32, depth=1, heads=2, kv_heads=1, mlp_ratio=2.0))
    model = VLAModel(cfg, vlm=vlm).eval()
    assert model.expert.layer_map == (2,)  # Stage-1 block 0 mixes VLM layer 1 (0-based): hidden_states[2]
    g = torch.Generator().manual_seed(0)
    images, state = torch.randint(0, 256, (2, 2, 3, 40, 40), dtype=torch.uint8, generator=g), torch.randn(2, 2)
    tok = model.tokenize(["pick up the red block", "stack blue on green"])
    out = vlm(images, **tok)  # image tokens carry their place in the image: (row, column) centres
    coords = out.image_coords[out.image_mask].view(2, 2, grid * grid, 2)
    assert torch.equal(coords[0, 1, 1], torch.tensor([0.5, 1.5]) / grid) and not out.image_coords[~out.image_mask].any()
    outs = [_actions(model, {"images": images, **model.tokenize(instr), "state": state})
            for instr in (["pick up the red block", "stack blue on green"], ["", ""], ["push the cube left", "put"])]
    assert all(torch.equal(o, outs[0]) for o in outs) and outs[0].shape == (2, 5, 3)
    full = VLAModel(cfg.replace(stage="full"), vlm=vlm).eval()
    assert full.expert.layer_map == (1, 2)  # Stage 2: block j mixes VLM layer j
    fa, fb = (_actions(full, {"images": images, **full.tokenize(instr), "state": state})
              for instr in (["pick up the red block", "stack blue on green"], ["", ""]))
    assert not torch.equal(fa, fb)


# ------------------------------------------------------------------------------------------ stage 2
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("carry", ["blocks", "all"])
def test_stage1_block_i_becomes_stage2_block_2i_plus_1(carry, preset):
    stage1 = _model("stage1", FusionConfig(carry=carry), preset=preset)
    with torch.no_grad():
        stage1.expert.highway.gate_logit.normal_()  # as if trained
    s2 = stage2_from_stage1(stage1)
    e1, e2 = stage1.expert.state_dict(), s2.expert.state_dict()
    assert s2.expert.isolated == (False, True, False, True) and len(e2) > len(e1)
    for name, value in e1.items():
        if name.startswith("blocks."):
            i, rest = name.split(".", 2)[1:]
            assert torch.equal(e2[f"blocks.{2 * int(i) + 1}.{rest}"], value), name
    same = {n: torch.equal(e2[n], v) for n, v in e1.items() if not n.startswith(("blocks.", "highway."))}
    # carry "blocks" (released): the rest starts fresh; "all": it is taken over as well.
    fresh = [n for n in ("state_in.0.weight", "state_enc.0.weight", "action_out.weight") if n in same]
    assert all(same.values()) if carry == "all" else not any(same[n] for n in fresh)
    gates1, gates2 = e1["highway.gate_logit"], e2["highway.gate_logit"]
    proj_ok = torch.equal(e2["highway.proj.3.weight"], e1["highway.proj.1.weight"])
    assert proj_ok == (carry == "all") and torch.equal(gates2[1::2], gates1) == (carry == "all")
    assert torch.equal(gates2[0::2], torch.zeros_like(gates1))  # the new blocks' gates start at 0.5
    for name in e2:  # the new blocks are fresh either way
        if name.startswith("blocks.2."):
            assert not torch.equal(e2[name], e2[name.replace("blocks.2.", "blocks.3.")]) or "norm" in name, name


def test_stage2_refuses_a_stage1_state_dict_of_another_design():
    legacy1, highway1 = _model("stage1", CROSS_ATTENTION), _model("stage1")
    with pytest.raises(ValueError):
        load_stage1_state_dict(_model("stage2"), legacy1.state_dict())
    with pytest.raises(ValueError):
        load_stage1_state_dict(_model("stage2", CROSS_ATTENTION), highway1.state_dict())
    with pytest.raises(ValueError, match="fusion design"):
        stage2_from_stage1(highway1, CROSS_ATTENTION)


@pytest.mark.parametrize("preset", PRESETS)
def test_copied_blocks_stay_blind_to_language_in_stage2(preset):
    s2 = stage2_from_stage1(_model("stage1", preset=preset)).eval()
    with torch.no_grad():
        for blk in s2.expert.blocks[0::2]:  # the new (language-seeing) blocks add nothing to the stream
            (blk.o if preset == "dummy_pi0" else blk.attn.o).weight.zero_()
            blk.mlp[2].weight.zero_()
            blk.mlp[2].bias.zero_()
    ref = _actions(s2, _batch(s2, INSTRUCTIONS["a"]))
    for name, instr in INSTRUCTIONS.items():
        assert torch.equal(_actions(s2, _batch(s2, instr)), ref), name


# -------------------------------------------------------------------------------------- the highway
def test_gate_at_one_keeps_the_stream_and_at_zero_takes_the_vlm_state():
    hw = Highway(vlm_hidden=6, width=4, blocks=2, fusion=FusionConfig())
    assert torch.equal(hw.gate_logit, torch.zeros(2, 4))  # sigmoid 0.5 at init (released)
    vl, h = torch.randn(2, 5, 4), torch.randn(2, 5, 6)
    with torch.no_grad():
        hw.gate_logit[0] = float("inf")
        hw.gate_logit[1] = float("-inf")
    assert torch.equal(hw.mix(0, vl, h), vl)
    assert torch.equal(hw.mix(1, vl, h), hw.proj[1](h))
    assert Highway(6, 4, 3, FusionConfig(gate="scalar")).gate_logit.shape == (3, 1)


def test_cached_sampling_equals_the_joint_sequence_forward():
    for model in (_model("stage1"), stage2_from_stage1(_model("stage1")).eval(), _model("full")):
        batch = _batch(model, INSTRUCTIONS["a"])
        b, e = 2, model.expert
        x_t, t = torch.randn(b, e.chunk_len, e.action_dim), torch.rand(b)
        with torch.no_grad():
            out = model.encode(batch)
            assert torch.allclose(e(out, batch["state"], x_t, t), _joint_velocity(e, out, batch["state"], x_t, t),
                                  atol=1e-5)
            noise = torch.randn(b, e.chunk_len, e.action_dim)
            plain = euler_sample(lambda x, tt: _joint_velocity(e, out, batch["state"], x, tt), tuple(noise.shape),
                                 model.cfg.flow.num_steps, noise=noise)
        assert torch.allclose(model.sample_actions(batch, noise=noise), plain, atol=1e-5)


@pytest.mark.parametrize("preset", PRESETS)
def test_vlm_runs_once_per_sample_call_and_the_loss_trains_gates_and_blocks(preset):
    model = _model("stage2", preset=preset)
    calls = []
    model.vlm.register_forward_hook(lambda *a: calls.append(1))
    assert model.sample_actions(_batch(model, INSTRUCTIONS["a"]), num_steps=5).shape == (2, 4, 4)
    assert len(calls) == 1
    model.train()
    model.loss(_batch(model, INSTRUCTIONS["a"]), generator=torch.Generator().manual_seed(0)).backward()
    grads = {n: p.grad for n, p in model.expert.named_parameters()}
    names = {"dummy_pi0": ("blocks.0.qkv.weight", "blocks.3.qkv.bias", "vl_in.weight"),
             "dummy_groot": ("blocks.0.attn.k.weight", "blocks.1.attn.v.weight", "adapter.0.qkv.weight")}[preset]
    for name in ("highway.gate_logit", "highway.proj.0.weight", "action_out.weight", *names):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    groups = {g["name"]: g for g in model.param_groups(1e-3, weight_decay=0.1)}
    assert [id(p) for p in groups["gates"]["params"]] == [id(model.expert.highway.gate_logit)]
    assert groups["gates"]["lr"] == 1e-3 and all(p.grad is None for p in model.vlm.parameters())


@pytest.mark.parametrize("preset, blocks, n_params", [("qwen3vl2b_pi0", 28, (1.5e8, 2.5e8)),
                                                      ("qwen3vl2b_groot", 16, (2.5e8, 4.5e8))])
def test_real_size_presets_build_on_meta_device(preset, blocks, n_params):
    cfg = get_preset(preset, ModelConfig).replace(stage="stage2")
    cfg = cfg.replace(vlm=dataclasses.replace(cfg.vlm, hf_config=QWEN3_VL_2B_ARCH))  # size without the files
    with torch.device("meta"):
        model = VLAModel(cfg)
    e = model.expert
    assert cfg.fusion.kind == "highway" and len(e.blocks) == blocks and model.vlm.num_layers == 28
    if preset == "qwen3vl2b_pi0":
        assert e.layer_map == tuple(range(1, 29))  # Stage-2 block j mixes VLM layer j (0-based)
    assert n_params[0] < sum(p.numel() for p in e.parameters()) < n_params[1]


# ------------------------------------------------------------------------------------------- legacy
def test_config_without_fusion_kind_reads_as_cross_attention():
    cfg = get_preset("dummy_pi0", ModelConfig).replace(fusion=FusionConfig(carry="all", layer_map=(1, 2)))
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    old = cfg.replace(fusion=CROSS_ATTENTION).to_dict()
    del old["fusion"]["kind"], old["fusion"]["carry"]
    assert ModelConfig.from_dict(old).fusion == CROSS_ATTENTION
    del old["fusion"]
    assert ModelConfig.from_dict(old).fusion == CROSS_ATTENTION
    assert ModelConfig().fusion.kind == "highway"


@pytest.mark.parametrize("name", ["tabletop/apt_pi0", "tabletop/baseline_pi0", "tabletop/apt_groot",
                                  "libero_goal/apt_pi0"])
def test_shipped_checkpoints_read_as_cross_attention_and_load(name):
    path = ROOT / "checkpoints" / name
    meta = read_meta(path)
    assert "kind" not in meta.model["fusion"]
    assert ModelConfig.from_dict(meta.model).fusion.kind == "cross_attention"
    if name.startswith("tabletop/"):  # the LIBERO pair sits on a Qwen3-VL that is not here
        load_weights(path, build_model(meta), meta)


def test_vlm_mode_and_design_read_old_records_as_trained_and_regenerate_the_command():
    shipped = {n: ModelConfig.from_dict(read_meta(ROOT / "checkpoints" / "tabletop" / n).model)
               for n in ("apt_pi0", "baseline_pi0")}  # Stage 2 unfrozen at 1x; the baseline end to end
    assert all((c.vlm_mode, c.vlm_lr_multiplier, c.vlm_trainable) == ("full", 1.0, True) for c in shipped.values())
    assert ModelConfig().vlm_mode == "frozen" and not _model("full").vlm.trunk[0].qkv.weight.requires_grad
    new = get_preset("dummy_pi0", ModelConfig).replace(stage="stage2", vlm_mode="full", vlm_lr_multiplier=0.1)
    config = {"policy": "apt_pi0", "suite": "tabletop", "model": new.to_dict(),
              "recipe": {"name": "apt", "steps": 4, "batch_size": 4, "lr": 0.001, "seed": 0}}
    assert "--vlm-mode full --vlm-lr-multiplier 0.1" in training_command(config, "x")
    config["model"] = new.replace(vlm_mode="frozen").to_dict()
    assert "--vlm-mode" not in training_command(config, "x") and "--fusion" not in training_command(config, "x")
    # The design is part of the command where it is not the default.
    config["model"] = new.replace(fusion=FusionConfig(carry="all")).to_dict()
    assert training_command(config, "x").endswith("--carry all --threads 1 --out x")
    config["model"] = new.replace(fusion=CROSS_ATTENTION).to_dict()
    assert training_command(config, "x").endswith("--fusion cross_attention --threads 1 --out x")


def test_train_records_the_design_it_was_asked_for(tmp_path, demos_dir, capsys):
    common = ["train", "--demos", str(demos_dir), "--steps", "2", "--batch-size", "2", "--vlm", "none"]
    out = tmp_path / "apt"
    assert main([*common, "--policy", "apt_pi0", "--preset", "dummy_pi0", "--carry", "all", "--out", str(out)]) == 0
    model = ModelConfig.from_dict(read_meta(out).model)
    assert (model.stage, model.fusion.kind, model.fusion.carry) == ("stage2", "highway", "all")
    out = tmp_path / "baseline"
    assert main([*common, "--policy", "baseline_groot", "--preset", "dummy_groot", "--fusion", "cross_attention",
                 "--out", str(out)]) == 0
    assert ModelConfig.from_dict(read_meta(out).model).fusion == CROSS_ATTENTION
    assert main([*common, "--policy", "baseline_pi0", "--preset", "dummy_pi0", "--carry", "all"]) == 2
    assert "--carry configures APT's Stage 2" in capsys.readouterr().err


def test_both_flow_recipes_take_the_same_vlm_mode(tmp_path, demos_dir, capsys):
    """--vlm-mode is one option for apt and baseline (a fair pair shares it): frozen by default, as
    released; full trains the trunk at --vlm-lr-multiplier x --lr (default 1) in apt's Stage 2 and
    throughout the baseline; a multiplier for a frozen VLM is refused."""
    common = ["train", "--demos", str(demos_dir), "--steps", "2", "--batch-size", "2", "--vlm", "none"]
    for policy, preset in (("apt_pi0", "dummy_pi0"), ("baseline_pi0", "dummy_pi0")):
        out = tmp_path / f"{policy}-frozen"
        assert main([*common, "--policy", policy, "--preset", preset, "--out", str(out)]) == 0
        model = ModelConfig.from_dict(read_meta(out).model)
        assert (model.vlm_mode, model.vlm_trainable) == ("frozen", False)
        out = tmp_path / f"{policy}-full"
        assert main([*common, "--policy", policy, "--preset", preset, "--vlm-mode", "full", "--out", str(out)]) == 0
        model = ModelConfig.from_dict(read_meta(out).model)
        assert (model.vlm_mode, model.vlm_lr_multiplier, model.vlm_trainable) == ("full", 1.0, True)
    assert main([*common, "--policy", "baseline_pi0", "--preset", "dummy_pi0", "--vlm-lr-multiplier", "0.5"]) == 2
    assert "--vlm-lr-multiplier needs --vlm-mode full" in capsys.readouterr().err


def test_train_option_choices_match_the_config_types():
    """options.py repeats the config types' choices (it stays torch-free): they must not drift apart."""
    fields = {f.name: f.metadata["argparse"]["choices"] for f in dataclasses.fields(TrainOptions)
              if "choices" in f.metadata["argparse"]}
    assert (fields["vlm_mode"], fields["fusion"], fields["carry"]) == (VLM_MODES, FUSION_KINDS, CARRY_MODES)
