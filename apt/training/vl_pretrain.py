"""Vision-language pretraining of the tiny backbone's trunk on a suite's own scenes (tabletop's).

Image-text matching with hard negatives (`apt-bench train --policy vlm_tiny`): every example is an
explicit (scene, caption, label) triple; each true caption of a scene comes with a false one made
from it by one edit (the suite's `benchmarks.base.SceneLanguage.caption_pairs`; tabletop's, in
benchmarks/tabletop/captions.py: swap left/right, a colour, a receptacle, or the two blocks of
"on"), so the trunk has to ground colour, object and relation words in the image to beat 50%.
Batches hold whole (true, false) pairs, so they are exactly balanced.

Scenes: fresh layouts (resets) and frames of noisy scripted-expert rollouts of the training tasks,
so that "in the box", "on the green block" and "holding" states occur, not just initial layouts.
Layout seeds start at VL_PRETRAIN_SEED_BASE (>= 2e9: never an evaluation seed 0.., a
demonstration seed [1e9, 2e9) or a `vl_data` question scene); held-out scenes (the accuracy that is
reported) use seeds HELDOUT_OFFSET further on, so they are layouts training never saw.

The frozen encoders' outputs are cached once (every image in chunks, every unique caption once),
so a training step runs only the trunk and the matching head.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks.base import BenchError, SceneLanguage, Suite
from apt.policies.transforms import stack_images
from apt.models.tiny_vlm import TinyVLM
from apt.models.vl_objectives import pooled_language, vl_pretrain_loss
from apt.models.vlm import FrozenFeatures, VLMOutput
from apt.training.trainer import TrainConfig, TrainResult, train_loop
from apt.training.vl_pointing import PointingData, evaluate_pointing, pointing_loss

VL_PRETRAIN_SEED_BASE = 2_500_000_000
HELDOUT_OFFSET = 500_000_000  # held-out scene seeds: base + this + ...
_SEED_STRIDE = 1_000_003  # per `seed` argument
FRAMES_PER_EPISODE = 4  # reset frame, a holding frame, the last frame, a random frame


# ------------------------------------------------------------------------------------------ data
@dataclass
class VLDataset:
    """(scene, caption, label) triples; rows 2p / 2p+1 are pair p's true / false caption.

    images: uint8 [S, N_cam, 3, H, W]; scene_index / caption_index / labels: [M] per row; captions:
    unique caption strings (caption_index points into it); kinds / edits: per pair (kind of the
    true statement, edit that made the false one); sources: per scene ("reset" | "rollout").
    The feature caches are filled by `cache_features` (fp16, frozen-encoder outputs).
    """

    images: np.ndarray
    scene_index: Tensor
    caption_index: Tensor
    labels: Tensor
    captions: list[str]
    kinds: list[str]
    edits: list[str]
    sources: list[str]
    seeds: list[int]
    heldout: VLDataset | None = None
    input_ids: Tensor | None = None  # [U, L]
    attention_mask: Tensor | None = None  # [U, L]
    image_features: Tensor | None = None  # fp16 [S, N*P, C]
    text_features: Tensor | None = None  # fp16 [U, L, D]
    feature_key: tuple | None = None  # which backbone the caches belong to

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_pairs(self) -> int:
        return len(self) // 2

    def caption(self, row: int) -> str:
        return self.captions[int(self.caption_index[row])]

    def cache_features(self, vlm: TinyVLM, chunk: int = 128) -> None:
        """Frozen-encoder features of every image (in chunks) and of every unique caption (once)."""
        key = _feature_key(vlm)
        if self.feature_key != key:
            tok = vlm.tokenize(self.captions)
            was = vlm.training
            vlm.eval()
            dev = vlm.img_pos.device
            with torch.no_grad():
                imgs = torch.from_numpy(self.images)
                self.image_features = torch.cat([
                    vlm.frozen_features(images=imgs[i:i + chunk].to(dev)).image.half().cpu()
                    for i in range(0, len(imgs), chunk)])
                self.text_features = torch.cat([
                    vlm.frozen_features(input_ids=tok["input_ids"][i:i + chunk].to(dev),
                                        attention_mask=tok["attention_mask"][i:i + chunk].to(dev)).text.half().cpu()
                    for i in range(0, len(self.captions), chunk)])
            vlm.train(was)
            self.input_ids, self.attention_mask = tok["input_ids"], tok["attention_mask"]
            self.feature_key = key
        if self.heldout is not None:
            self.heldout.cache_features(vlm, chunk)

    def batch(self, rows: Tensor) -> dict[str, Tensor]:
        assert self.image_features is not None, "call cache_features(vlm) first"
        s, k = self.scene_index[rows], self.caption_index[rows]
        return {"image_features": self.image_features[s].float(), "text_features": self.text_features[k].float(),
                "input_ids": self.input_ids[k], "attention_mask": self.attention_mask[k],
                "labels": self.labels[rows]}


def _feature_key(vlm: TinyVLM) -> tuple:
    # Pretrained encoders are deterministic per config; random stand-ins differ per instance.
    return (dataclasses.astuple(vlm.cfg), None if vlm.cfg.pretrained_encoders else id(vlm))


def training_tasks(suite: Suite) -> list[str]:
    return [t.task_id for t in suite.tasks() if t.train]


def _collect(suite: Suite, n_scenes: int, seed_base: int, image_size: int, tasks: Sequence[str],
             cameras: tuple[str, ...], pairs_per_scene: int, reset_fraction: float, noise: float,
             rng: np.random.Generator, kinds: Sequence[str] | None) -> VLDataset:
    """Scenes and their caption pairs; `suite` is a SceneLanguage (make_vl_dataset checks)."""
    envs: dict[str, Any] = {}
    images: list[np.ndarray] = []
    rows: list[tuple[int, str, float]] = []
    pair_kinds: list[str] = []
    edits: list[str] = []
    sources: list[str] = []
    seeds: list[int] = []

    def add(obs: dict, source: str, layout_seed: int) -> None:
        if len(images) >= n_scenes:
            return
        pairs = suite.caption_pairs(obs["privileged"], pairs_per_scene, rng, kinds)
        if not pairs:
            return
        s = len(images)
        images.append(stack_images([obs], cameras)[0])
        for true, false, kind, edit in pairs:
            rows.extend([(s, true, 1.0), (s, false, 0.0)])
            pair_kinds.append(kind)
            edits.append(edit)
        sources.append(source)
        seeds.append(layout_seed)

    spec = {t.task_id: t for t in suite.tasks()}
    episode = 0
    try:
        while len(images) < n_scenes:
            task = tasks[episode % len(tasks)]  # round robin: every task's end states occur
            layout_seed = seed_base + episode
            episode += 1
            if task not in envs:
                envs[task] = suite.make_env(task, image_size=image_size, cameras=cameras)
            env = envs[task]
            obs = env.reset(seed=layout_seed)
            if "privileged" not in obs:
                raise BenchError(f"suite {suite.name} exposes no privileged scene state to caption")
            if rng.random() < reset_fraction:
                add(obs, "reset", layout_seed)
            if len(images) >= n_scenes:
                break
            expert = suite.expert(task, noise=noise, seed=layout_seed)
            expert.reset()
            frames: list[dict] = []
            held: list[int] = []
            extra = int(rng.integers(0, 8))  # steps kept after success (the block settles, the gripper leaves)
            done_at = None
            for t in range(spec[task].max_steps):
                obs, success, _ = env.step(expert.act([obs])[0, 0])
                frames.append(obs)
                if any(obs["privileged"]["held"].values()) and obs["privileged"]["gap"] > 0.02:
                    held.append(t)
                if success and done_at is None:
                    done_at = t
                if done_at is not None and t >= done_at + extra:
                    break
            picks = [len(frames) - 1]
            if held:
                picks.append(held[int(rng.integers(len(held)))])
            while len(picks) < FRAMES_PER_EPISODE - 1:
                picks.append(int(rng.integers(len(frames))))
            for t in sorted(set(picks)):
                add(frames[t], "rollout", layout_seed)
    finally:
        for env in envs.values():
            env.close()
    s_idx = torch.tensor([r[0] for r in rows], dtype=torch.long)
    uniq = sorted({r[1] for r in rows})
    pos = {c: i for i, c in enumerate(uniq)}
    c_idx = torch.tensor([pos[r[1]] for r in rows], dtype=torch.long)
    labels = torch.tensor([r[2] for r in rows], dtype=torch.float32)
    return VLDataset(np.ascontiguousarray(np.stack(images)), s_idx, c_idx, labels, uniq, pair_kinds, edits,
                     sources, seeds)


def make_vl_dataset(suite: Suite, n_scenes: int, seed: int = 0, image_size: int = 96,
                    tasks: Sequence[str] | None = None, *, vlm: TinyVLM | None = None,
                    cameras: Sequence[str] = ("front",), pairs_per_scene: int = 4,
                    heldout_scenes: int | None = None, reset_fraction: float = 0.3,
                    noise: float = 0.1, kinds: Sequence[str] | None = None) -> VLDataset:
    """Render `n_scenes` captioned scenes (+ a held-out set on fresh seeds, `dataset.heldout`).

    tasks: whose noisy expert rollouts give the frames (default: the suite's training tasks).
    Each scene gets up to `pairs_per_scene` (true, false) caption pairs; `reset_fraction` of the
    episodes also contribute their initial layout. heldout_scenes defaults to max(64, n_scenes // 5)
    (0: none). kinds: statement kinds to caption (default all, benchmarks.tabletop.captions.KINDS).
    With `vlm` the frozen features are cached right away.
    """
    if not isinstance(suite, SceneLanguage):
        raise BenchError(f"vision-language pretraining captions exist for the tabletop suite only, not "
                         f"{suite.name!r} (benchmarks/tabletop/captions.py)")
    if n_scenes < 1:
        raise BenchError(f"n_scenes must be >= 1, got {n_scenes}")
    tasks = list(tasks) if tasks is not None else training_tasks(suite)
    if not tasks:
        raise BenchError(f"suite {suite.name} has no training tasks to roll out")
    cams = tuple(cameras)
    base = VL_PRETRAIN_SEED_BASE + seed * _SEED_STRIDE
    rng = np.random.default_rng([seed, 11])
    data = _collect(suite, n_scenes, base, image_size, tasks, cams, pairs_per_scene, reset_fraction, noise, rng, kinds)
    n_held = max(64, n_scenes // 5) if heldout_scenes is None else heldout_scenes
    if n_held > 0:
        data.heldout = _collect(suite, n_held, base + HELDOUT_OFFSET, image_size, tasks, cams, pairs_per_scene,
                                reset_fraction, noise, np.random.default_rng([seed, 12]), kinds)
    if vlm is not None:
        data.cache_features(vlm)
    return data


# -------------------------------------------------------------------------------------- training
def itm_logits(vlm: TinyVLM, out: VLMOutput) -> Tensor:
    """The matching logit `vl_pretrain_loss` trains: itm_head on the mean last-layer language token."""
    return vlm.itm_head(pooled_language(out)).squeeze(-1).float()


class ITMObjective(nn.Module):
    """The VLM under `train_loop`: loss(batch) = image-text matching BCE on explicit labelled pairs,
    plus (when the batch carries a "pointing" part) the grounding loss of `vl_pointing`."""

    def __init__(self, vlm: TinyVLM, pointing_weight: float = 1.0) -> None:
        super().__init__()
        self.vlm = vlm
        self.pointing_weight = pointing_weight

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        frozen = FrozenFeatures(batch["image_features"], batch["text_features"])
        tokens = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        loss, _ = vl_pretrain_loss(self.vlm, None, None, labels=batch["labels"], frozen=frozen, tokens=tokens)
        if "pointing" in batch:
            loss = loss + self.pointing_weight * pointing_loss(self.vlm, batch["pointing"])
        return loss


def pair_batches(data: VLDataset, batch_size: int, seed: int,
                 pointing: PointingData | None = None) -> Iterator[dict[str, Tensor]]:
    """Endless seeded batches of whole (true, false) pairs: batch_size // 2 pairs, exactly balanced;
    with `pointing`, each batch also carries batch_size demo frames under "pointing"."""
    g = torch.Generator().manual_seed(seed)
    half = max(1, batch_size // 2)
    while True:
        p = torch.randint(0, data.num_pairs, (half,), generator=g)
        b = data.batch(torch.stack([2 * p, 2 * p + 1], 1).flatten())
        if pointing is not None:
            b["pointing"] = pointing.sample(batch_size, g)
        yield b


@torch.no_grad()
def evaluate_itm(vlm: TinyVLM, data: VLDataset, batch_size: int = 512, seed: int = 0) -> dict[str, Any]:
    """Matching accuracy on `data` (chance 0.5): per row, per pair (true scored above its false
    edit), per statement kind and per edit; plus the accuracy with every row's image replaced by
    another scene's (`acc_shuffled_images`): near 0.5 when the captions alone do not give it away."""
    assert data.image_features is not None, "call cache_features(vlm) first"
    was = vlm.training
    vlm.eval()
    dev = vlm.img_pos.device
    perm = torch.randperm(len(data.images), generator=torch.Generator().manual_seed(seed))
    perm = torch.where(perm == torch.arange(len(perm)), (perm + 1) % len(perm), perm)

    def logits_for(scene_map: Tensor | None) -> Tensor:
        out = []
        for i in range(0, len(data), batch_size):
            rows = torch.arange(i, min(i + batch_size, len(data)))
            b = data.batch(rows)
            if scene_map is not None:
                b["image_features"] = data.image_features[scene_map[data.scene_index[rows]]].float()
            o = vlm(None, b["input_ids"].to(dev), b["attention_mask"].to(dev),
                    frozen=FrozenFeatures(b["image_features"].to(dev), b["text_features"].to(dev)))
            out.append(itm_logits(vlm, o).cpu())
        return torch.cat(out)

    z = logits_for(None)
    y = data.labels
    correct = ((z > 0).float() == y).float()
    pair_ok = (z[0::2] > z[1::2]).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
    z_shuf = logits_for(perm)
    res: dict[str, Any] = {
        "acc": float(correct.mean()), "pair_acc": float(pair_ok.mean()), "loss": float(loss),
        "acc_shuffled_images": float(((z_shuf > 0).float() == y).float().mean()),
        "rows": len(data), "scenes": int(len(data.images)),
    }
    pair_correct = (correct[0::2] + correct[1::2]) / 2
    for name, keys in (("acc_by_kind", data.kinds), ("acc_by_edit", data.edits)):
        res[name] = {k: round(float(pair_correct[[i for i, x in enumerate(keys) if x == k]].mean()), 4)
                     for k in sorted(set(keys))}
    vlm.train(was)
    return res


def pretrain_vlm(vlm: TinyVLM, dataset: VLDataset, cfg: TrainConfig, *, progress: bool = True,
                 eval_every: int | None = None,
                 pointing: PointingData | None = None) -> tuple[TrainResult, dict[str, Any]]:
    """Train the trunk (projections, trunk, heads; encoders stay frozen) by image-text matching and,
    with `pointing` (demo frames, `vl_pointing`), by pointing at what the instruction refers to.

    Returns the loop's TrainResult and metrics: heldout_acc (the number to quote; chance 0.5),
    heldout_acc_before (the untrained trunk), heldout_pair_acc, per-kind / per-edit held-out
    accuracies, heldout_acc_shuffled_images, train_acc, and with `eval_every` a curve of
    (step, held-out acc). EMA weights (cfg.ema_decay) are what is evaluated and kept.
    """
    if not isinstance(vlm, TinyVLM):
        raise BenchError(f"vision-language pretraining is for the tiny backbone, not {type(vlm).__name__}")
    device = torch.device(cfg.device)
    vlm.to(device)
    dataset.cache_features(vlm)
    vlm.set_trainable(True)
    held = dataset.heldout
    metrics: dict[str, Any] = {"train_scenes": len(dataset.images), "train_pairs": dataset.num_pairs}
    if held is not None:
        metrics["heldout_acc_before"] = evaluate_itm(vlm, held)["acc"]
    if pointing is not None:
        metrics["pointing_before"] = evaluate_pointing(vlm, pointing)
    objective = ITMObjective(vlm)
    params = [p for n, p in vlm.named_parameters() if not n.startswith(("text_encoder.", "vision_encoder."))]
    curve: list[tuple[int, float]] = []
    if eval_every and held is not None:
        # Several calls of the one loop would restart its LR schedule; run it in one piece and read the
        # curve from a hook on the batch iterator instead (it evaluates the live, non-EMA weights).
        def batches() -> Iterator[dict[str, Tensor]]:
            for step, b in enumerate(pair_batches(dataset, cfg.batch_size, cfg.seed, pointing)):
                if step and step % eval_every == 0:
                    curve.append((step, evaluate_itm(vlm, held)["acc"]))
                    vlm.train()
                yield b
        it: Iterator[dict[str, Tensor]] = batches()
    else:
        it = pair_batches(dataset, cfg.batch_size, cfg.seed, pointing)
    t0 = time.perf_counter()
    result = train_loop(objective, [{"params": params}], it, cfg, desc="vlm_tiny", progress=progress)
    metrics["train_wall_s"] = round(time.perf_counter() - t0, 1)
    train_eval = evaluate_itm(vlm, _subset(dataset, 4096))
    metrics["train_acc"] = train_eval["acc"]
    if held is not None:
        ev = evaluate_itm(vlm, held)
        metrics.update({"heldout_acc": ev["acc"], "heldout_pair_acc": ev["pair_acc"], "heldout_loss": ev["loss"],
                        "heldout_acc_shuffled_images": ev["acc_shuffled_images"],
                        "heldout_acc_by_kind": ev["acc_by_kind"], "heldout_acc_by_edit": ev["acc_by_edit"],
                        "heldout_scenes": ev["scenes"], "heldout_pairs": ev["rows"] // 2})
    if pointing is not None:
        metrics["pointing"] = evaluate_pointing(vlm, pointing)
    if curve:
        metrics["heldout_curve"] = curve + [(cfg.steps, metrics["heldout_acc"])]
    return result, metrics


def _subset(data: VLDataset, max_rows: int) -> VLDataset:
    """The first pairs of `data` up to max_rows rows (features shared, not copied)."""
    if len(data) <= max_rows:
        return data
    n = max_rows // 2 * 2
    return dataclasses.replace(data, scene_index=data.scene_index[:n], caption_index=data.caption_index[:n],
                               labels=data.labels[:n], kinds=data.kinds[:n // 2], edits=data.edits[:n // 2],
                               heldout=None)
