"""Training throughput per policy recipe, and the data loader's share of step time (target < 10%).

Each recipe trains its tiny preset for a few steps on a small generated tabletop demo set with cached
frozen features, exactly as `apt-bench train` does, through the one `train_loop`, which times batch
fetching separately from compute. Both numbers come from the same run:

    .venv/bin/python -m benchmarks.speed.train_speed [--steps 20] [--batch-size 32] [--preset-size tiny]

`--precisions fp32 bf16` times each recipe under both (`apt-bench train --precision`) and prints the
bf16 step time as a ratio of the fp32 one measured in the same run (bf16 autocast pays off on CPUs
with AVX512-BF16 or AMX only; `apt.training.trainer.cpu_has_fast_bf16`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from apt.demos.formats import load_demos
from apt.demos.generate import generate_demos
from apt.models.action_tokens import ActionTokenizer
from apt.models.backbones import build_vlm
from apt.models.builders import get_preset
from apt.models.discrete import DiscreteConfig, DiscreteVLA
from apt.models.policy_model import ModelConfig, VLAModel
from apt.registry import get_suite
from apt.training.batches import build_training_data, chunk_indices, fit_normalizers
from apt.training.trainer import PRECISIONS, TrainConfig, cpu_has_fast_bf16, precision_flag, train_loop
from apt.training.vl_data import build_vl_data, discrete_batches, render_scenes

RECIPES = ("apt_pi0", "apt_groot", "baseline_pi0", "baseline_groot", "discrete_pi0", "ki_pi0")


def _model_and_batches(policy: str, size: str, demos, suite, batch_size: int):
    """(model, param groups, batch iterator) built the way the recipe builds them."""
    recipe, _, arch = policy.partition("_")
    sn, an = fit_normalizers(demos)
    if recipe in ("discrete", "ki"):
        cfg = get_preset(f"{size}_discrete", DiscreteConfig).replace(ki=recipe == "ki", action_dim=4, state_dim=4)
        chunks = an.normalize(demos.actions)[chunk_indices(demos.episode_starts, cfg.chunk_len)]
        tok = ActionTokenizer.fit(chunks, vocab_size=cfg.action_vocab)
        longest = max(len(t) for t in tok.encode_batch(chunks))
        vlm = build_vlm(cfg.vlm)
        scenes = render_scenes(suite, 32, image_size=int(demos.meta["image_size"]), cameras=("front",))
        cfg = cfg.replace(tokenizer=tok.to_dict(), max_action_tokens=max(cfg.max_action_tokens, longest + 4),
                          text_vocab=scenes.answer_vocabulary(vlm.tokenizer))
        model = DiscreteVLA(cfg, vlm=vlm)
        data = build_training_data(demos, model, cfg.chunk_len, ("front",), sn, an, progress=False)
        batches = discrete_batches(data, model.action_targets(data.action_chunks), build_vl_data(scenes, model),
                                   batch_size, max(1, batch_size // 4), seed=0)
        return model, model.param_groups(3e-4), batches
    stage = {"apt": "stage2", "baseline": "full"}[recipe]  # Stage 2 is APT's costlier stage
    cfg = get_preset(f"{size}_{arch}", ModelConfig).replace(stage=stage, action_dim=4, state_dim=4)
    model = VLAModel(cfg)
    data = build_training_data(demos, model, cfg.chunk_len, ("front",), sn, an, progress=False)
    return model, model.param_groups(3e-4), data.sampler(batch_size, 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--preset-size", default="tiny", choices=("tiny", "dummy"))
    ap.add_argument("--policies", nargs="+", default=list(RECIPES))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precisions", nargs="+", default=["auto"], choices=PRECISIONS,
                    help="time each recipe under each; the first is the reference of the ratio column")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    suite = get_suite("tabletop")
    image_size = 96 if args.preset_size == "tiny" else 32
    with tempfile.TemporaryDirectory() as tmp:
        generate_demos(suite, Path(tmp) / "demos", episodes_per_task=2, workers=0, image_size=image_size,
                       tasks=("place-red-plate", "push-green-left", "stack-blue-green"), cameras=("front",),
                       progress=False)
        demos = load_demos(Path(tmp) / "demos")
        print(f"CPU with native bf16 (AVX512-BF16 / AMX): {cpu_has_fast_bf16()}")
        print(f"{'policy':<16}{'precision':>10}{'samples/s':>12}{'step ms':>10}{'vs ' + args.precisions[0]:>10}"
              f"{'loader share':>14}")
        for policy in args.policies:
            model, groups, batches = _model_and_batches(policy, args.preset_size, demos, suite, args.batch_size)
            reference = None
            for precision in args.precisions:
                bf16 = precision_flag(precision)
                cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, device=args.device, warmup_steps=1,
                                  bf16=bf16)
                train_loop(model, groups, batches, TrainConfig(steps=2, device=args.device, warmup_steps=1,
                                                               bf16=bf16),
                           progress=False)  # warm-up (allocator, lazy init) outside the timed run
                t0 = time.perf_counter()
                res = train_loop(model, groups, batches, cfg, progress=False)
                step_ms = (time.perf_counter() - t0) / args.steps * 1e3
                reference = reference or step_ms
                flag = "" if res.data_fraction < 0.10 else "  (above the 10% target)"
                print(f"{policy:<16}{precision:>10}{res.samples_per_s:>12.1f}{step_ms:>10.1f}"
                      f"{step_ms / reference:>10.2f}{res.data_fraction:>13.1%}{flag}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
