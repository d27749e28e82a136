"""Vision-language co-training examples for the discrete recipe: questions about rendered scenes.

Why here and not `vl_pretrain.py`: the discrete VLA co-trains a *generative* objective (the same
next-token decoder answers questions), so it needs (scene image, question, short answer) triples,
where vision-language pretraining of the tiny trunk uses image-caption matching. Scenes are fresh
layouts of the suite rendered at the demonstrations' image size and cameras, so VL images look like
the policy's frames; answers are generated from the simulator's privileged state (ground truth).

The questions and their answers come from the suite (`benchmarks.base.SceneLanguage`, the
tabletop suite's are in benchmarks/tabletop/questions.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from apt.models.discrete import trim_padding
from apt.policies.transforms import stack_images
from apt.training.batches import trim_text_padding
from benchmarks.base import BenchError, SceneLanguage, Suite

VL_SEED_BASE = 2_000_000_000  # scene seeds disjoint from eval seeds (0..) and demo seeds ([1e9, 2e9))


@dataclass
class VLScenes:
    """Rendered scenes and their question/answer pairs (strings; model-independent)."""

    images: np.ndarray  # uint8 [S, N_cam, 3, H, W]
    scene_index: np.ndarray  # int64 [M] -> scene of pair m
    questions: list[str]  # [M]
    answers: list[str]  # [M]

    def answer_vocabulary(self, tokenizer: Any) -> tuple[int, ...]:
        """Sorted VLM-tokenizer ids of every answer word: the decoder's `text_vocab`."""
        ids: set[int] = set()
        for a in sorted(set(self.answers)):
            ids.update(tokenizer(a, add_special_tokens=False)["input_ids"])
        return tuple(sorted(ids))


def render_scenes(suite: Suite, n_scenes: int, *, image_size: int, cameras: tuple[str, ...],
                  seed: int = 0, grid_m: float = 0.0) -> VLScenes:
    """Render `n_scenes` fresh layouts (any train task's env: every tabletop scene holds everything)
    and ask the suite's questions about each (`SceneLanguage.scene_questions`, `grid_m` passed on)."""
    tasks = [t for t in suite.tasks() if t.train]
    if not tasks:
        raise BenchError(f"suite {suite.name} has no training tasks to render scenes from")
    ask = suite.scene_questions if isinstance(suite, SceneLanguage) else None
    env = suite.make_env(tasks[0].task_id, image_size=image_size, cameras=tuple(cameras))
    images, index, questions, answers = [], [], [], []
    try:
        for s in range(n_scenes):
            obs = env.reset(seed=VL_SEED_BASE + seed * 100_003 + s)
            if "privileged" not in obs:
                raise BenchError(f"suite {suite.name} exposes no privileged scene state; the discrete "
                                 "recipe's VL co-training needs it (use --vl-ratio 0)")
            if ask is None:
                raise BenchError(f"suite {suite.name} has no questions about its scenes (no scene_questions, "
                                 "benchmarks.base.SceneLanguage); the discrete recipe's VL co-training needs "
                                 "them (use --vl-ratio 0)")
            images.append(stack_images([obs], cameras)[0])
            for q, a in ask(obs["privileged"], grid_m):
                index.append(s)
                questions.append(q)
                answers.append(a)
    finally:
        env.close()
    return VLScenes(np.ascontiguousarray(np.stack(images)), np.asarray(index, np.int64), questions, answers)


@dataclass
class VLTrainingData:
    """Model-ready VL tensors (frozen features cached where the backbone allows), sampled by `sampler`."""

    scene_index: torch.Tensor  # long [M]
    question_index: torch.Tensor  # long [M] -> row of the per-question tensors
    targets: torch.Tensor  # long [M, max_answer_tokens + 1] joint ids
    input_ids: torch.Tensor  # long [K, L]
    attention_mask: torch.Tensor  # long [K, L]
    images: torch.Tensor | None  # uint8 [S, N_cam, 3, H, W] when not cached
    image_features: torch.Tensor | None  # fp16 [S, N*P, C]
    text_features: torch.Tensor | None  # fp16 [K, L, D]

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def batch(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        s, k = self.scene_index[idx], self.question_index[idx]
        out = {"vl_input_ids": self.input_ids[k], "vl_attention_mask": self.attention_mask[k],
               "vl_targets": self.targets[idx]}
        if self.image_features is not None:
            out["vl_image_features"] = self.image_features[s].float()
            out["vl_text_features"] = self.text_features[k].float()
        else:
            out["vl_images"] = self.images[s]
        return out


def build_vl_data(scenes: VLScenes, model: torch.nn.Module, *, feature_batch: int = 256) -> VLTrainingData:
    """Tokenise questions and answers for `model` (a DiscreteVLA) and cache frozen features."""
    uniq, inverse = np.unique(np.asarray(scenes.questions, dtype=str), return_inverse=True)
    tok = model.tokenize(list(uniq))
    targets = model.text_targets(scenes.answers)
    images = torch.from_numpy(scenes.images)
    probe = model.vlm.frozen_features(input_ids=tok["input_ids"][:1], attention_mask=tok["attention_mask"][:1])
    img_f = txt_f = None
    if probe is not None:
        was_training = model.vlm.training
        model.vlm.eval()
        with torch.no_grad():
            img_f = torch.cat([model.vlm.frozen_features(images=images[i:i + feature_batch]).image.half()
                               for i in range(0, len(images), feature_batch)])
            txt_f = model.vlm.frozen_features(input_ids=tok["input_ids"],
                                              attention_mask=tok["attention_mask"]).text.half()
        model.vlm.train(was_training)
    return VLTrainingData(torch.from_numpy(scenes.scene_index), torch.from_numpy(inverse), targets,
                          tok["input_ids"], tok["attention_mask"], None if img_f is not None else images, img_f, txt_f)


def discrete_batches(data: Any, action_tokens: torch.Tensor, vl: VLTrainingData | None, batch_size: int,
                     vl_batch: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """Endless seeded batches for the discrete recipe: `data.batch(idx)` (a `TrainingData`) plus the
    precomputed FAST targets of those rows, with `vl_batch` VL examples merged in (the co-training mix).
    Targets and language are cut to the batch's longest sequence (`trim_padding`, `trim_text_padding`:
    the same loss, less decoder and trunk work)."""
    g = torch.Generator().manual_seed(seed)
    n = len(data)
    while True:
        idx = torch.randint(0, n, (batch_size,), generator=g)
        batch = trim_text_padding(data.batch(idx))
        batch["action_tokens"] = trim_padding(action_tokens[idx])
        if vl is not None and vl_batch > 0:
            batch.update(vl.batch(torch.randint(0, len(vl), (vl_batch,), generator=g)))
            batch["vl_targets"] = trim_padding(batch["vl_targets"])
            trim_text_padding(batch, "vl_")
        yield batch
