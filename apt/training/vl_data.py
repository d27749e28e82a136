"""Vision-language co-training examples for the discrete recipe: questions about rendered scenes.

Why here and not `vl_pretrain.py`: the discrete VLA co-trains a *generative* objective (the same
next-token decoder answers questions), so it needs (scene image, question, short answer) triples,
where vision-language pretraining of the tiny trunk uses image-caption matching. Scenes are fresh
layouts of the suite rendered at the demonstrations' image size and cameras, so VL images look like
the policy's frames; answers are generated from the simulator's privileged state (ground truth).

Question templates (tabletop; every answer is a few words from a closed vocabulary):
  * "which blocks are in order from left to right?"      -> "green red yellow blue"
  * "which receptacles are in order from left to right?" -> "bowl box plate"
  * "where is the <colour> block?"                       -> "left front" (x: left/center/right; y: front/back)
  * "which block is nearest to the <receptacle>?"        -> "<colour>"
  * "is the <colour> block left or right of the <receptacle>?" -> "left" / "right"
Left/right are as seen from the front camera (-x is left), front is the camera side (-y).
These name the same attributes the instructions do (colours, receptacles, sides), which is the
grounding co-training is meant to keep alive in the VLM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from benchmarks.base import BenchError, Suite

VL_SEED_BASE = 2_000_000_000  # scene seeds disjoint from eval seeds (0..) and demo seeds ([1e9, 2e9))
_X_BANDS = (-0.09, 0.09)  # |x| beyond this is left / right, else center (metres, table frame)
_Y_SPLIT = 0.01  # y below this is front (towards the front camera)


def scene_questions(privileged: dict[str, Any]) -> list[tuple[str, str]]:
    """(question, answer) pairs that hold in a tabletop scene, from `obs["privileged"]`."""
    blocks = {c: np.asarray(p)[:2] for c, p in privileged["blocks"].items()}
    recs = {r: np.asarray(p)[:2] for r, p in privileged["receptacles"].items()}
    qa = [("which blocks are in order from left to right?", " ".join(sorted(blocks, key=lambda c: blocks[c][0]))),
          ("which receptacles are in order from left to right?", " ".join(sorted(recs, key=lambda r: recs[r][0])))]
    for c, (x, y) in blocks.items():
        side = "left" if x < _X_BANDS[0] else "right" if x > _X_BANDS[1] else "center"
        qa.append((f"where is the {c} block?", f"{side} {'front' if y < _Y_SPLIT else 'back'}"))
    for r, pr in recs.items():
        nearest = min(blocks, key=lambda c: float(np.linalg.norm(blocks[c] - pr)))
        qa.append((f"which block is nearest to the {r}?", nearest))
        for c, pc in blocks.items():
            qa.append((f"is the {c} block left or right of the {r}?", "left" if pc[0] < pr[0] else "right"))
    return qa


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
                  seed: int = 0) -> VLScenes:
    """Render `n_scenes` fresh layouts (any train task's env: every tabletop scene holds everything)."""
    tasks = [t for t in suite.tasks() if t.train]
    if not tasks:
        raise BenchError(f"suite {suite.name} has no training tasks to render scenes from")
    env = suite.make_env(tasks[0].task_id, image_size=image_size, cameras=tuple(cameras))
    images, index, questions, answers = [], [], [], []
    try:
        for s in range(n_scenes):
            obs = env.reset(seed=VL_SEED_BASE + seed * 100_003 + s)
            if "privileged" not in obs:
                raise BenchError(f"suite {suite.name} exposes no privileged scene state; the discrete "
                                 "recipe's VL co-training needs it (use --vl-ratio 0)")
            images.append(np.stack([obs["images"][c] for c in cameras]).transpose(0, 3, 1, 2))
            for q, a in scene_questions(obs["privileged"]):
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
    precomputed FAST targets of those rows, with `vl_batch` VL examples merged in (the co-training mix)."""
    g = torch.Generator().manual_seed(seed)
    n = len(data)
    while True:
        idx = torch.randint(0, n, (batch_size,), generator=g)
        batch = data.batch(idx)
        batch["action_tokens"] = action_tokens[idx]
        if vl is not None and vl_batch > 0:
            batch.update(vl.batch(torch.randint(0, len(vl), (vl_batch,), generator=g)))
        yield batch
