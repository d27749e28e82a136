"""Discrete (FAST-token) VLA and knowledge insulation: KV-cache decoding, training on tabletop,
invalid-decode fallback, checkpoint round trip, real-size preset on the meta device."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from apt.cli import main
from apt.models.action_tokens import TOKENIZER_FILE, ActionTokenizer
from apt.models.builders import get_preset
from apt.models.discrete import DiscreteConfig, DiscreteVLA
from apt.policies.learned import LearnedPolicy
from apt.registry import build_policy
from apt.checkpoints import read_meta

from conftest import TINY_DEMO_TASKS as TASKS  # noqa: E402  (the tasks of the shared demos_dir)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)




def _model(ki: bool = False) -> DiscreteVLA:
    rng = np.random.default_rng(0)
    chunks = np.cumsum(rng.normal(size=(400, 4, 4)) * 0.3, axis=1)
    tok = ActionTokenizer.fit(chunks, vocab_size=300)
    cfg = get_preset("dummy_discrete", DiscreteConfig).replace(tokenizer=tok.to_dict(), ki=ki)
    torch.manual_seed(0)
    return DiscreteVLA(cfg).eval()


def _batch(model: DiscreteVLA, b: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tok = model.tokenize(["put the red block on the plate"] * b)
    return {"images": torch.randint(0, 255, (b, 1, 3, 32, 32), dtype=torch.uint8, generator=g),
            "state": torch.randn(b, 4, generator=g), **tok}


def test_kv_cache_decoding_matches_full_forward():
    model = _model()
    batch = _batch(model)
    seqs = model.generate(batch, max_tokens=10)
    # Re-run the generated prefix teacher-forced (no cache) and check greedy picks agree at each step.
    b = len(seqs)
    with torch.no_grad():
        st = model.decoder.start(model.encode(batch))
        n = max(len(s) for s in seqs)
        toks = torch.full((b, n + 1), model.vocab.BOS_ACTION)
        for i, s in enumerate(seqs):
            toks[i, 1:1 + len(s)] = torch.tensor(s) + model.vocab.action_offset
        x = torch.cat([model.decoder.state_in(batch["state"])[:, None], model.decoder.embed(toks)], dim=1)
        logits = model.decoder.logits(model.decoder.extend(st, x, torch.ones(b, n + 2, dtype=torch.bool)))[:, 1:]
    allowed = torch.full((model.vocab.size,), float("-inf"))
    allowed[model.vocab.action_offset:model.vocab.action_offset + model.action_tokenizer.vocab_size] = 0
    allowed[model.vocab.EOS] = 0
    picks = (logits + allowed).argmax(-1)
    for i, s in enumerate(seqs):
        assert (picks[i, :len(s)] - model.vocab.action_offset).tolist() == s


def test_trimmed_targets_give_the_same_loss_and_gradients():
    """Training batches cut the all-PAD tail of the targets (`trim_padding`) and of the language
    (`trim_text_padding`): the decoder is causal, PAD carries no loss and padded language keys are
    masked, so loss and gradients must equal those of the full-length batch."""
    from apt.models.discrete import trim_padding
    from apt.training.batches import trim_text_padding

    model = _model().train()
    actions = torch.from_numpy(np.cumsum(np.random.default_rng(1).normal(size=(3, 4, 4)) * 0.3, axis=1)).float()
    full = model.action_targets(actions)
    cut = trim_padding(full)
    lengths = (full != model.vocab.PAD).sum(1)
    assert cut.shape == (3, int(lengths.max())) and cut.shape[1] < full.shape[1]
    assert torch.equal(cut, full[:, :cut.shape[1]]) and (full[:, cut.shape[1]:] == model.vocab.PAD).all()
    assert trim_padding(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 1)

    text = _batch(model)
    short = trim_text_padding(dict(text))
    n_text = int(text["attention_mask"].sum(1).max())
    assert short["input_ids"].shape == (3, n_text) < text["input_ids"].shape
    assert torch.equal(short["input_ids"], text["input_ids"][:, :n_text])

    grads = []
    for targets, lang in ((full, text), (cut, short)):
        model.zero_grad()
        loss = model.loss({**lang, "actions": actions, "action_tokens": targets})
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    assert len(grads[0][1]) == len(grads[1][1]) > 0
    for g_full, g_cut in zip(grads[0][1], grads[1][1]):
        assert torch.allclose(g_full, g_cut, atol=1e-6)


def test_undecodable_generation_becomes_nan_then_policy_fallback(suite):
    model = _model()
    out = model.decode_tokens([[1, 2, 3], model.action_tokenizer.encode(np.zeros((4, 4)))])
    assert torch.isnan(out[0]).all() and torch.isfinite(out[1]).all()

    from benchmarks.base import ActionSpec, ObservationSpec, PolicySpec
    from apt.policies.transforms import Normalizer

    spec = PolicySpec(ActionSpec(dim=4), ObservationSpec(cameras=("front",), state_dim=4, image_size=32), chunk=4)
    ident = Normalizer(np.zeros(4, np.float32), np.ones(4, np.float32))
    policy = LearnedPolicy(model, spec, ident, ident)
    model.generate = lambda batch, max_tokens=None: [[1, 2, 3], [5]]  # type: ignore[method-assign]
    env = suite.make_env(TASKS[0], image_size=32, cameras=("front",))
    obs = env.reset(seed=0)
    a = policy.act([obs, obs])
    env.close()
    assert a.shape == (2, 4, 4) and a.dtype == np.float32
    assert np.all(a == 0.0)  # the documented fallback: the zero action
    assert policy.invalid_chunks == 2 and policy.chunks == 2

    # Relaxed decoding: the short sequence [5] becomes a chunk (cut / zero-padded, counted); a
    # sequence of characters outside the coefficient alphabet still falls back.
    model.relaxed_decoding = True
    out = model.decode_tokens([[5], model.action_tokenizer.encode(np.zeros((4, 4)))])
    assert torch.isfinite(out).all() and model.relaxed_chunks == 1


def test_discrete_pi0_loss_falls_and_checkpoint_round_trips(tmp_path, demos_dir, suite):
    out = tmp_path / "discrete_pi0"
    rc = main(["train", "--policy", "discrete_pi0", "--demos", str(demos_dir), "--out", str(out), "--steps", "80",
               "--batch-size", "16", "--lr", "1e-3", "--preset", "dummy_discrete", "--vlm", "none",
               "--fast-scale", "6", "--vl-grid", "3", "--ema-decay", "0.99", "--vlm-lr-multiplier", "0.5"])
    assert rc == 0
    meta = read_meta(out)
    assert meta.policy == "discrete_pi0" and meta.recipe["name"] == "discrete" and meta.recipe["vl_scenes"] > 0
    assert meta.model["tokenizer"]["scale"] == 6.0 and meta.recipe["fast_scale"] == 6.0
    assert meta.recipe["vl_grid_cm"] == 3.0 and meta.recipe["ema_decay"] == 0.99
    assert meta.recipe["vlm_lr_multiplier"] == 0.5
    assert meta.model["tokenizer"]["format"] == "apt-bench-fast" and (out / TOKENIZER_FILE).is_file()
    curve = meta.train["stages"]["full"]
    assert curve["loss_last"] < 0.8 * curve["loss_first"], curve
    print(f"\ndiscrete_pi0 loss {curve['loss_first']:.3f} -> {curve['loss_last']:.3f}, "
          f"BPE compression x{meta.recipe['bpe_compression']}")

    p1, p2 = build_policy(str(out), suite), build_policy(str(out), suite)
    env = suite.make_env(TASKS[0], image_size=32, cameras=("front",))
    obs = env.reset(seed=3)
    a1, a2 = p1.act([obs, obs]), p2.act([obs, obs])
    env.close()
    assert a1.shape == (2, 4, 4) and a1.dtype == np.float32 and np.array_equal(a1, a2)
    assert isinstance(p1, LearnedPolicy) and isinstance(p1.model, DiscreteVLA)
    tok = p1.model.vlm.tokenizer  # the grid answers ("7 3") made every digit an answer token
    digit_ids = {i for d in range(10) for i in tok(str(d), add_special_tokens=False)["input_ids"]}
    assert digit_ids <= set(meta.model["text_vocab"])
    assert meta.inference["relaxed_decoding"] is True and p1.model.relaxed_decoding  # new checkpoints decode relaxed


def test_param_groups_put_the_trunk_at_its_multiplier_of_the_decoder_lr():
    model = _model()
    groups = {g["name"]: g for g in model.param_groups(2e-3, vlm_lr_multiplier=0.25)}
    assert groups["heads"]["lr"] == 2e-3 and groups["vlm"]["lr"] == 5e-4
    trunk = {id(p) for p in groups["vlm"]["params"]}
    assert trunk == {id(p) for p in model.vlm.parameters() if p.requires_grad} and trunk
    assert not trunk & {id(p) for p in groups["heads"]["params"]}
    assert {g["name"]: g["lr"] for g in model.param_groups(1e-3)} == {"heads": 1e-3, "vlm": 1e-3}


def test_ki_pi0_trains_expert_behind_stop_gradient(tmp_path, demos_dir, suite):
    model = _model(ki=True).train()
    batch = {**_batch(model), "actions": torch.randn(3, 4, 4)}
    batch["action_tokens"] = model.action_targets(batch["actions"])
    model.zero_grad()
    # The flow loss alone must not reach the VLM: backprop the KI expert's part only.
    from apt.models.discrete import detach_output

    vlm_out = model.encode(batch)
    prefix = model.expert.encode_prefix(detach_output(vlm_out))
    v = model.expert.velocity(prefix, batch["state"], batch["actions"], torch.full((3,), 0.5))
    v.pow(2).mean().backward()
    assert all(p.grad is None for p in model.vlm.parameters())
    assert any(p.grad is not None for p in model.expert.parameters())

    out = tmp_path / "ki"
    assert main(["train", "--policy", "ki_pi0", "--demos", str(demos_dir), "--out", str(out), "--steps", "3",
                 "--batch-size", "4", "--preset", "dummy_discrete", "--vlm", "none"]) == 0
    p1, p2 = build_policy(str(out), suite), build_policy(str(out), suite)
    env = suite.make_env(TASKS[0], image_size=32, cameras=("front",))
    obs = env.reset(seed=1)
    a1, a2 = p1.act([obs]), p2.act([obs])
    env.close()
    assert a1.shape == (1, 4, 4) and np.array_equal(a1, a2) and p1.invalid_chunks == 0


def test_config_json_round_trip_and_presets():
    cfg = _model().cfg.replace(text_vocab=(5, 9))
    assert DiscreteConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(KeyError, match="dummy_discrete"):
        get_preset("dumy_discrete", DiscreteConfig)


def test_real_size_preset_builds_on_meta_device():
    from apt.models.builders import QWEN3_VL_2B_ARCH

    cfg = get_preset("qwen3vl2b_discrete", DiscreteConfig).replace(ki=True)
    cfg = cfg.replace(vlm=dataclasses.replace(cfg.vlm, hf_config=QWEN3_VL_2B_ARCH))  # size without the files
    with torch.device("meta"):
        model = DiscreteVLA(cfg)
    n_vlm = sum(p.numel() for p in model.vlm.parameters())
    n_dec = sum(p.numel() for p in model.decoder.parameters())
    n_exp = sum(p.numel() for p in model.expert.parameters())
    assert model.vlm.num_layers == 28 and 1.5e9 < n_vlm < 2.5e9, n_vlm
    assert 2.5e8 < n_dec < 4.5e8 and 2.5e8 < n_exp < 4.0e8, (n_dec, n_exp)


def test_vl_grid_questions_name_each_objects_cell(suite):
    """--vl-grid: every block and receptacle gets its table-grid cell; the cells follow the
    privileged positions (one cell to the right per grid step) and stay off without a grid."""
    from apt.training.vl_data import render_scenes
    from benchmarks.tabletop.questions import _TABLE_MIN, scene_questions

    lo = np.array([*_TABLE_MIN, 0.0])
    priv = {"blocks": {"red": lo + [0.001, 0.001, 0.02], "blue": lo + [0.051, 0.031, 0.02]},
            "receptacles": {"plate": lo + [0.2, 0.1, 0.0]}}
    qa = dict(scene_questions(priv, grid_m=0.02))
    assert qa["where exactly is the red block?"] == "0 0"
    assert qa["where exactly is the blue block?"] == "2 1"
    assert qa["where exactly is the plate?"] == "10 5"
    assert not any(q.startswith("where exactly") for q, _ in scene_questions(priv))

    scenes = render_scenes(suite, 2, image_size=32, cameras=("front",), grid_m=0.02)
    grid = [(q, a) for q, a in zip(scenes.questions, scenes.answers) if q.startswith("where exactly")]
    assert len(grid) == 2 * 7  # 4 blocks + 3 receptacles per scene
    cells = np.array([[int(v) for v in a.split()] for _, a in grid])
    assert (cells >= 0).all() and cells[:, 0].max() <= 30 and cells[:, 1].max() <= 16


@pytest.mark.parametrize("flags, message", [(["--vl-ratio", "0", "--vl-grid", "2"], "--vl-grid"),
                                            (["--vl-grid", "-1"], "--vl-grid"),
                                            (["--fast-scale", "0"], "--fast-scale"),
                                            (["--ema-decay", "1"], "--ema-decay"),
                                            (["--vlm-lr-multiplier", "0"], "--vlm-lr-multiplier"),
                                            (["--vlm-mode", "full"], "always trains the VLM trunk")])
def test_discrete_recipe_options_are_checked(tmp_path, demos_dir, capsys, flags, message):
    rc = main(["train", "--policy", "discrete_pi0", "--demos", str(demos_dir), "--out", str(tmp_path / "x"),
               "--steps", "2", "--preset", "dummy_discrete", "--vlm", "none", *flags])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
