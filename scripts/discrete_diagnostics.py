"""Why a tabletop checkpoint fails: offline action error on held-out demonstrations, and how its
gripper behaves in closed loop on the place tasks (results/tabletop/README.md, discrete_pi0).

    python scripts/discrete_diagnostics.py offline --demos DIR CKPT [CKPT ...]
    python scripts/discrete_diagnostics.py gripper CKPT [CKPT ...]

`offline`: mean |error| per action dimension of the first 4 actions of each predicted chunk (what
is executed before re-planning), in raw action units, on 1024 frames of a demo set the checkpoints
were not trained on (e.g. `apt-bench demos --seed 77 --episodes-per-task 5 --expert-noise 0`), plus
the share of greedy FAST generations that needed relaxed decoding (discrete checkpoints).
`gripper`: 3 place tasks x seeds 0-5 with their first `seen` instruction, 4 of 8 actions executed
per chunk as in the reference evaluation; per episode: success, whether the block was ever held,
the hand-block distance (cm) when the gripper first closes and whether another block was nearer,
and the number of open/close switches (a clean pick-and-place has 2).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

PLACE_TASKS = ("place-red-plate", "place-yellow-box", "place-blue-bowl")


def offline(demos_dir: str, checkpoints: list[str], frames: int = 1024) -> None:
    from apt.models.builders import build_model
    from apt.policies.transforms import Normalizer
    from apt.training.batches import build_training_data
    from apt.checkpoints import load_weights, read_meta
    from apt.demos.formats import load_demos
    from apt.registry import get_suite

    demos = load_demos(demos_dir, suite=get_suite("tabletop"))
    rows = torch.from_numpy(np.random.default_rng(0).choice(len(demos), min(frames, len(demos)), replace=False))
    for path in checkpoints:
        meta = read_meta(path)
        model = build_model(meta)
        load_weights(path, model, meta)
        model.eval()
        if hasattr(model, "relaxed_decoding"):
            model.relaxed_decoding = True
        state_norm, action_norm = (Normalizer.from_dict(meta.norm[k]) for k in ("state", "action"))
        data = build_training_data(demos, model, model.cfg.chunk_len, tuple(meta.observation_spec["cameras"]),
                                   state_norm, action_norm, progress=False)
        batch = data.batch(rows)
        with torch.no_grad():
            pred = model.sample_actions(batch, noise=torch.zeros_like(batch["actions"]))
        pred = np.clip(action_norm.unnormalize(pred.numpy()), -1, 1)[:, :4]
        true = action_norm.unnormalize(batch["actions"].numpy())[:, :4]
        mae = np.abs(pred - true).mean(axis=(0, 1))
        relaxed = getattr(model, "relaxed_chunks", None)
        print(f"{path}: MAE x {mae[0]:.3f} y {mae[1]:.3f} z {mae[2]:.3f} grip {mae[3]:.3f}"
              + (f"; relaxed-decoded {relaxed}/{len(rows)}" if relaxed is not None else ""))
        tokenizer = getattr(model, "action_tokenizer", None)
        if tokenizer is not None:  # what the FAST quantisation alone costs: round trip of the true chunks
            chunks = batch["actions"].numpy()
            round_trip = np.stack([tokenizer.decode(tokenizer.encode(c)) for c in chunks])
            q = np.abs(action_norm.unnormalize(round_trip)[:, :4] - true).mean(axis=(0, 1))
            print(f"{path}: FAST round trip of the true chunks, MAE x {q[0]:.3f} y {q[1]:.3f} z {q[2]:.3f} "
                  f"grip {q[3]:.3f}")


def gripper(checkpoints: list[str], seeds: int = 6, max_steps: int = 120) -> None:
    from apt.registry import get_suite
    from apt.splits.resolve import load_split
    from apt.policies.learned import load_policy
    from benchmarks.tabletop.tasks import parse_task_id

    suite = get_suite("tabletop")
    seen = load_split("tabletop", "seen", suite.tasks()).by_task()
    for path in checkpoints:
        policy = load_policy(path, suite)
        rows = []
        for task in PLACE_TASKS:
            _, obj, _ = parse_task_id(task)
            env = suite.make_env(task, image_size=96, cameras=tuple(policy.spec.observation.cameras))
            for seed in range(seeds):
                obs = env.reset(seed=seed, instruction=seen[task][0].instruction)
                policy.reset()
                closed, switches, close_cm, held, success, steps = False, 0, float("nan"), False, False, 0
                other = False  # the first close is nearer another block than the named one
                while steps < max_steps and not success:
                    for a in policy.act([obs])[0][:4]:
                        p = obs["privileged"]
                        if (a[3] > 0) != closed:
                            closed, switches = not closed, switches + 1
                            if closed and np.isnan(close_cm):
                                dist = {c: 100 * float(np.hypot(*(p["tcp"][:2] - xyz[:2])))
                                        for c, xyz in p["blocks"].items()}
                                close_cm, other = dist[obj], min(dist, key=dist.__getitem__) != obj
                        obs, _, info = env.step(a)
                        steps += 1
                        held |= bool(obs["privileged"]["held"][obj])
                        success = bool(info["success"])
                        if success or steps >= max_steps:
                            break
                rows.append((success, held, close_cm, other, switches))
            env.close()
        s, h, c, o, w = (np.array(x, dtype=float) for x in zip(*rows))
        print(f"{path}: {len(rows)} episodes; success {int(s.sum())}, block held {int(h.sum())}; first close "
              f"nearer another block {int(o.sum())}, > 8 cm from the named one {int(np.nansum(c > 8))}; "
              f"more than 4 open/close switches {int((w > 4).sum())}; switches per episode "
              f"{w.astype(int).tolist()}; first-close distance (cm) {np.round(c, 1).tolist()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    off = sub.add_parser("offline")
    off.add_argument("--demos", required=True)
    off.add_argument("checkpoints", nargs="+")
    grip = sub.add_parser("gripper")
    grip.add_argument("checkpoints", nargs="+")
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    torch.set_num_threads(1)
    if args.what == "offline":
        offline(args.demos, args.checkpoints)
    else:
        gripper(args.checkpoints)


if __name__ == "__main__":
    main()
