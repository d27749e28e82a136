"""Vision-language pretraining of the tiny trunk: scene captions (true / false by one edit) from
privileged state, the captioned dataset, and a small image-text matching run that beats chance on
held-out scenes."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks.tabletop import captions as C
from benchmarks.tabletop import scene
from benchmarks.tabletop.captions import Statement, evaluate
from benchmarks.tabletop.suite import TabletopSuite
from benchmarks.tabletop.tasks import HELD_OUT

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)
H = scene.BLOCK_HALF


def _state(blocks=None, receptacles=None, held=(), tcp=(0.0, -0.05, 0.18), gap=0.08):
    """A privileged state: blocks / receptacles as {name: (x, y[, z])}; unnamed ones parked far apart."""
    b = {"red": (-0.25, 0.12), "green": (-0.08, 0.12), "blue": (0.08, 0.12), "yellow": (0.25, 0.12)}
    r = {"bowl": (-0.2, -0.1), "plate": (0.0, -0.1), "box": (0.2, -0.1)}
    b.update(blocks or {})
    r.update(receptacles or {})
    pos = lambda p, z: np.array([p[0], p[1], p[2] if len(p) > 2 else z], dtype=float)  # noqa: E731
    return {"blocks": {c: pos(p, H) for c, p in b.items()}, "receptacles": {k: pos(p, 0.0) for k, p in r.items()},
            "held": {c: c in held for c in b}, "tcp": np.array(tcp, dtype=float), "gap": gap}


# ------------------------------------------------------------------------------------ captions
def test_side_relations_follow_the_front_camera_left_and_need_a_clear_gap():
    s = _state({"red": (-0.2, 0.0)}, {"bowl": (0.1, 0.0)})
    left = Statement("side", "red", "left", "bowl")
    assert left.text() == "the red block is left of the bowl"
    assert evaluate(left, s) is True
    assert evaluate(Statement("side", "red", "right", "bowl"), s) is False
    assert evaluate(Statement("side", "bowl", "right", "red"), s) is True
    assert evaluate(Statement("side", "bowl", "left", "red"), s) is False
    near = _state({"red": (0.05, 0.0)}, {"bowl": (0.1, 0.0)})  # 5 cm apart: undecided, never captioned
    assert evaluate(left, near) is None and evaluate(Statement("side", "red", "right", "bowl"), near) is None
    # 9 cm apart in x, but the far one is so much deeper that the camera sees them the other way round
    flip = _state({"blue": (0.30, -0.13), "yellow": (0.39, 0.2)})
    assert C.image_x(flip["blocks"]["blue"]) > C.image_x(flip["blocks"]["yellow"])
    assert evaluate(Statement("side", "blue", "left", "yellow"), flip) is None


def test_image_x_matches_where_the_front_camera_renders_a_block():
    import math

    env = TabletopSuite().make_env("place-red-plate", image_size=96, cameras=("front",))
    for seed in range(3):
        obs = env.reset(seed=2_000_000_000 + seed)
        img = obs["images"]["front"].astype(int)
        cols = np.nonzero((img[..., 0] > 150) & (img[..., 1] < 80) & (img[..., 2] < 80))[1]  # red pixels
        expect = 48 + C.image_x(obs["privileged"]["blocks"]["red"]) * 48 / math.tan(math.radians(29))  # fovy 58
        assert len(cols) > 5 and abs(cols.mean() - expect) < 2.0


def test_containment_stacking_and_holding_match_the_env_geometry():
    floor = scene.FOOTPRINT["box"][2] + H
    s = _state({"yellow": (0.21, -0.09, floor), "blue": (0.005, -0.1, scene.FOOTPRINT["plate"][2] + H),
                "red": (-0.08, 0.12, 3 * H)})  # red sits on green (green at (-0.08, 0.12))
    assert evaluate(Statement("in", "yellow", "in", "box"), s) is True
    assert Statement("in", "yellow", "in", "box").text() == "the yellow block is in the box"
    assert evaluate(Statement("in", "yellow", "in", "bowl"), s) is False
    assert evaluate(Statement("in", "blue", "in", "plate"), s) is True
    assert Statement("in", "blue", "in", "plate").text() == "the blue block is on the plate"
    assert evaluate(Statement("in", "red", "in", "box"), s) is False
    assert evaluate(Statement("on", "red", "on", "green"), s) is True
    assert evaluate(Statement("on", "green", "on", "red"), s) is False
    assert evaluate(Statement("on", "red", "on", "blue"), s) is False
    # carried above the box: neither in it (held) nor clearly out of it
    carried = _state({"yellow": (0.2, -0.1, 0.08)}, held=("yellow",), tcp=(0.2, -0.1, 0.08), gap=0.039)
    assert evaluate(Statement("in", "yellow", "in", "box"), carried) is None
    assert evaluate(Statement("holding", "yellow", "holding"), carried) is True
    assert evaluate(Statement("holding", "red", "holding"), carried) is False
    assert Statement("holding", "yellow", "holding").text() == "the gripper is holding the yellow block"
    pushing = _state(held=("red",), tcp=(-0.28, 0.12, 0.022), gap=-0.01)  # closed fingers touching it
    assert evaluate(Statement("holding", "red", "holding"), pushing) is None


def test_in_agrees_with_the_place_success_predicate_after_a_real_rollout():
    suite = TabletopSuite()
    env = suite.make_env("place-yellow-box", cameras=())
    obs = env.reset(seed=2_000_000_123)
    expert = suite.expert("place-yellow-box", noise=0.0)
    expert.reset()
    for _ in range(80):
        obs, success, _ = env.step(expert.act([obs])[0, 0])
        if success:
            break
    assert success
    priv = obs["privileged"]
    assert evaluate(Statement("in", "yellow", "in", "box"), priv) is True
    assert all(evaluate(Statement("in", "yellow", "in", r), priv) is False for r in ("bowl", "plate"))
    assert Statement("in", "yellow", "in", "box") in C.true_statements(priv)


def _scenes():
    floor = scene.FOOTPRINT["box"][2] + H
    yield _state({"red": (-0.2, 0.0)}, {"bowl": (0.1, 0.0)})
    yield _state({"yellow": (0.21, -0.09, floor), "red": (-0.08, 0.12, 3 * H)})
    yield _state({"blue": (0.0, 0.05, 0.1)}, held=("blue",), tcp=(0.0, 0.05, 0.1), gap=0.039)
    env = TabletopSuite().make_env("stack-green-blue", cameras=())
    for seed in range(3):
        yield env.reset(seed=2_000_000_000 + seed)["privileged"]


def test_false_captions_are_one_edit_of_a_true_caption_and_really_false():
    rng = np.random.default_rng(0)
    kinds, names = set(), set()
    for priv in _scenes():
        pairs = [p for _ in range(6) for p in C.caption_pairs(priv, 12, rng)]
        assert pairs
        for p in pairs:
            assert evaluate(p.true, priv) is True and evaluate(p.false, priv) is False
            assert p.true.kind == p.false.kind and (p.edit, p.false) in C.edits(p.true)
            slots = [a != b for a, b in zip((p.true.subject, p.true.relation, p.true.obj),
                                            (p.false.subject, p.false.relation, p.false.obj))]
            if p.edit == "roles":  # the two blocks of "on" swapped
                assert (p.false.subject, p.false.obj) == (p.true.obj, p.true.subject)
            else:
                assert sum(slots) == 1
            # one word, or a receptacle with its preposition ("in the bowl" -> "on the plate")
            assert 1 <= C.word_diff(p.true.text(), p.false.text()) <= 2
            kinds.add(p.kind)
            names.add(p.edit)
    assert kinds == set(C.KINDS) and names == {"relation", "subject", "object", "roles"}


def test_captions_use_training_words_and_never_held_out_combinations():
    from apt.splits.instruction_set import normalize_instruction, training_set
    from apt.splits.resolve import load_split

    tasks = TabletopSuite().tasks()
    train_vocab = {w for e in training_set("tabletop", tasks).entries for w in normalize_instruction(e.instruction).split()}
    unseen_vocab = {w for e in load_split("tabletop", "unseen", tasks).entries
                    for w in normalize_instruction(e.instruction).split()}
    statements = C.all_statements()
    words = set().union(*(set(s.text().split()) for s in statements))
    assert words <= C.VOCABULARY
    extra = words - train_vocab
    assert extra <= {"is", "of", "gripper", "holding"}
    assert not (extra - {"is", "of"}) & unseen_vocab  # the new content words are not OOD-split words
    for skill, obj, target in HELD_OUT:
        if skill in ("place", "stack"):
            kind = "in" if skill == "place" else "on"
            assert not any(s.kind == kind and (s.subject, s.obj) == (obj, target) for s in statements)


# --------------------------------------------------------------------------- dataset + training
@pytest.fixture(scope="module")
def dataset():
    from apt.training.vl_pretrain import make_vl_dataset

    return make_vl_dataset(TabletopSuite(), n_scenes=120, seed=0, image_size=64, heldout_scenes=40)


def test_vision_language_data_comes_from_the_suites_scene_language_hook():
    """Tabletop declares captions and questions (benchmarks.base.SceneLanguage); a suite without the
    hook cannot be pretrained on (clear message) nor asked co-training questions."""
    from apt.training.vl_data import render_scenes
    from apt.training.vl_pretrain import make_vl_dataset
    from benchmarks.base import BenchError, SceneLanguage
    from tests.stub_suite import StubSuite

    assert isinstance(TabletopSuite(), SceneLanguage) and not isinstance(StubSuite(), SceneLanguage)
    with pytest.raises(BenchError, match="captions exist for the tabletop suite only, not 'stub'"):
        make_vl_dataset(StubSuite(), n_scenes=4)
    with pytest.raises(BenchError, match="has no questions about its scenes"):
        render_scenes(StubSuite(), 1, image_size=8, cameras=("front",))


def test_dataset_is_balanced_paired_and_on_fresh_seeds(dataset):
    from apt.training.vl_pretrain import VL_PRETRAIN_SEED_BASE

    d, h = dataset, dataset.heldout
    assert d.images.shape[1:] == (1, 3, 64, 64) and d.images.dtype == np.uint8 and len(d.images) == 120
    assert d.labels[0::2].eq(1).all() and d.labels[1::2].eq(0).all()  # rows 2p / 2p+1: true / false
    assert torch.equal(d.scene_index[0::2], d.scene_index[1::2])
    assert min(d.seeds + h.seeds) >= VL_PRETRAIN_SEED_BASE >= 2_000_000_000
    assert not set(d.seeds) & set(h.seeds)
    assert set(d.kinds) == set(C.KINDS) and {"reset", "rollout"} <= set(d.sources)
    for row in range(0, len(d), 97):  # captions stored as made: a true one holds in its scene
        assert d.caption(row).startswith("the ")


def test_vl_pretrain_loss_with_explicit_labels_matches_itm_logits():
    from apt.models.tiny_vlm import TinyVLM
    from apt.models.vl_objectives import vl_pretrain_loss
    from apt.models.vlm import FrozenFeatures, VLMConfig
    from apt.training.vl_pretrain import itm_logits

    torch.manual_seed(0)
    vlm = TinyVLM(VLMConfig(pretrained_encoders=False, image_size=32, width=32, layers=2, heads=2, max_text_tokens=12))
    images = torch.randint(0, 256, (3, 1, 3, 32, 32), dtype=torch.uint8)
    caps = ["the red block is left of the bowl", "the gripper is holding the blue block", "the box is right of the plate"]
    labels = torch.tensor([1.0, 0.0, 1.0])
    loss, m = vl_pretrain_loss(vlm, images, caps, labels=labels)
    tok = vlm.tokenize(caps)
    fr = vlm.frozen_features(images, tok["input_ids"], tok["attention_mask"])
    z = itm_logits(vlm, vlm(None, tok["input_ids"], tok["attention_mask"], frozen=fr))
    assert torch.allclose(loss, F.binary_cross_entropy_with_logits(z, labels), atol=1e-6)
    loss2, _ = vl_pretrain_loss(vlm, None, None, labels=labels, frozen=FrozenFeatures(fr.image, fr.text), tokens=tok)
    assert torch.allclose(loss, loss2, atol=1e-6) and 0.0 <= m["itm_acc"] <= 1.0


def test_pretrain_vlm_trains_the_trunk_only_and_reports_held_out_accuracy(dataset):
    from apt.models.tiny_vlm import TinyVLM
    from apt.models.vlm import VLMConfig
    from apt.training.trainer import TrainConfig
    from apt.training.vl_pretrain import pretrain_vlm

    torch.manual_seed(0)
    vlm = TinyVLM(VLMConfig(pretrained_encoders=False, image_size=64, width=32, layers=1, heads=2, max_text_tokens=16))
    enc = {k: v.clone() for k, v in vlm.state_dict().items() if k.startswith(("text_encoder.", "vision_encoder."))}
    trunk = {k: v.clone() for k, v in vlm.state_dict().items() if k.startswith(("trunk.", "itm_head."))}
    result, m = pretrain_vlm(vlm, dataset, TrainConfig(steps=4, batch_size=16, warmup_steps=1, ema_decay=None),
                             progress=False)
    assert len(result.losses) == 4 and all(np.isfinite(result.losses))
    assert all(torch.equal(v, vlm.state_dict()[k]) for k, v in enc.items())
    assert any(not torch.equal(v, vlm.state_dict()[k]) for k, v in trunk.items())
    for key in ("heldout_acc", "heldout_acc_before", "heldout_pair_acc", "heldout_acc_shuffled_images", "train_acc"):
        assert 0.0 <= m[key] <= 1.0, key
    assert set(m["heldout_acc_by_kind"]) <= set(C.KINDS) and m["heldout_pairs"] == dataset.heldout.num_pairs


@pytest.mark.slow
def test_small_pretraining_run_beats_chance_on_held_out_scenes():
    """Grounding takes a few hundred steps to leave the 50% plateau (hard negatives: the true and the
    false caption share the image), which is over a minute on two shared CPU cores: slow."""
    from apt.models.tiny_vlm import TinyVLM
    from apt.models.vlm import VLMConfig
    from apt.training.trainer import TrainConfig
    from apt.training.vl_pretrain import make_vl_dataset, pretrain_vlm

    data = make_vl_dataset(TabletopSuite(), n_scenes=400, seed=0, image_size=96, heldout_scenes=100,
                           kinds=("position",))
    torch.manual_seed(0)
    vlm = TinyVLM(VLMConfig(pretrained_encoders=True, image_size=96, width=32, layers=2, heads=2, max_text_tokens=16))
    result, m = pretrain_vlm(vlm, data, TrainConfig(steps=1200, batch_size=64, lr=2e-3, warmup_steps=20,
                                                    ema_decay=None, seed=0), progress=False)
    assert abs(m["heldout_acc_before"] - 0.5) < 0.1
    assert m["heldout_acc"] > 0.6, m
    assert m["heldout_acc_shuffled_images"] < 0.58, m  # it reads the image, not caption statistics
