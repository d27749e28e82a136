"""`apt-bench` command line: argument parsing only; each subcommand calls one function elsewhere.

User errors (BenchError) print one clear line and exit 2; nothing else is caught, so bugs keep
their tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, Callable, Sequence

from benchmarks.base import BenchError

DEFAULT_STORE = "runs/results.sqlite"


def _non_negative(text: str, cast: Callable[[str], Any], what: str) -> Any:
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    return _non_negative(text, int, "an integer")


def _non_negative_float(text: str) -> float:
    return _non_negative(text, float, "a number")


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be >= 1, got 0")
    return value


def _call(target: str) -> Callable[[argparse.Namespace], int]:
    """Handler that imports `module:function` lazily and calls it with the parsed options."""

    def handler(ns: argparse.Namespace) -> int:
        module, _, attr = target.partition(":")
        fn = getattr(importlib.import_module(module), attr)
        kwargs: dict[str, Any] = {k: v for k, v in vars(ns).items() if k not in ("command", "handler")}
        return int(fn(**kwargs) or 0)

    return handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apt-bench",
        description="Out-of-distribution instruction generalization benchmark for VLA policies.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="roll out a policy on every (task, instruction) of a split")
    run.add_argument("--policy", required=True,
                     help="policy name (oracle, random, apt_pi0, ...) or a checkpoint directory")
    run.add_argument("--split", required=True,
                     help="seen|paraphrased|unseen|compositional|blank|shuffled|swapped, "
                          "KIND@BASE for a control split of another split, or a YAML file path")
    run.add_argument("--suite", default="tabletop")
    run.add_argument("--episodes", type=_positive_int, default=None,
                     help="episodes per instruction entry (default: the suite's quick setting)")
    run.add_argument("--workers", type=_non_negative_int, default=None,
                     help="env worker processes (0 = in-process, default = CPU count)")
    run.add_argument("--store", default=DEFAULT_STORE, help="SQLite results store")
    run.add_argument("--video", action="store_true", help="write one MP4 per episode")
    run.add_argument("--ray-address", default=None, help="join an existing Ray cluster")
    run.add_argument("--seed", type=_non_negative_int, default=0, help="first episode seed")
    run.add_argument("--image-size", type=_positive_int, default=None)
    run.add_argument("--replan-steps", type=_positive_int, default=None,
                     help="actions executed from each chunk before re-querying the policy")
    run.add_argument("--device", default="cpu", help="cpu or cuda[:N] for learned policies")
    run.add_argument("--noise-scale", type=float, default=None,
                     help="flow-matching policies: std of the sampler's starting noise (default: the "
                          "checkpoint's own, 1 unless its config.json 'inference' says otherwise; 0 = "
                          "deterministic)")
    run.set_defaults(handler=_call("apt.eval.runner:run"))

    cmp_ = sub.add_parser("compare", help="aggregate stored episodes into tables with 95%% CIs")
    cmp_.add_argument("--store", nargs="+", default=[DEFAULT_STORE],
                      help="one or more results stores, read together")
    cmp_.add_argument("--suite", default=None)
    cmp_.add_argument("--policies", nargs="*", default=None)
    cmp_.add_argument("--splits", nargs="*", default=None)
    cmp_.add_argument("--format", dest="fmt", choices=("md", "csv", "latex"), default="md")
    cmp_.add_argument("--out", default=None, help="write the table here instead of stdout")
    cmp_.add_argument("--plot", default=None, help="write a success/gap plot (PNG) here")
    cmp_.add_argument("--versus", default=None,
                      help="also tabulate each policy minus this one, per split, paired episode by episode")
    cmp_.add_argument("--across-checkpoints", action="store_true",
                      help="treat a policy's checkpoints as training seeds: mean ± SD of their success, and "
                           "with --versus the difference of means with a Welch CI over checkpoints")
    cmp_.set_defaults(handler=_call("apt.eval.compare:compare"))

    spl = sub.add_parser("splits", help="list and validate instruction sets")
    spl.add_argument("--suite", default="tabletop")
    spl.add_argument("--check", action="store_true", help="validate; non-zero exit on any problem")
    spl.add_argument("files", nargs="*", help="instruction-set YAML files to validate instead")
    spl.set_defaults(handler=_call("apt.splits.instruction_set:splits_command"))

    dem = sub.add_parser("demos", help="write scripted-expert demonstrations")
    dem.add_argument("--suite", default="tabletop")
    dem.add_argument("--out", required=True)
    dem.add_argument("--episodes-per-task", type=_positive_int, default=50)
    dem.add_argument("--workers", type=_non_negative_int, default=None)
    dem.add_argument("--seed", type=_non_negative_int, default=0)
    dem.add_argument("--image-size", type=_positive_int, default=96)
    dem.add_argument("--format", default=None, choices=("apt-bench-demos", "libero_hdf5"),
                     help="on-disk format (default: the suite's native one, e.g. LIBERO HDF5 for "
                          "libero_goal; else apt-bench's)")
    dem.add_argument("--tasks", nargs="+", default=None, help="only these training task ids")
    dem.add_argument("--cameras", nargs="+", default=None,
                     help="record only these cameras (default: every camera the suite has)")
    dem.add_argument("--expert-noise", type=_non_negative_float, default=None,
                     help="std of the expert's per-step action noise, recorded in the labels "
                          "(default 0.1; 0 = clean labels, e.g. for FAST-token policies)")
    dem.add_argument("--clean-labels", action="store_true",
                     help="execute the noisy actions but record the expert's intended (noise-free) "
                          "action as each frame's label (DART-style)")
    dem.set_defaults(handler=_call("apt.demos.native:demos_command"))
    trn = sub.add_parser("train", help="train a policy with its recipe and write a checkpoint")
    trn.add_argument("--policy", required=True,
                     help="apt_pi0, apt_groot, baseline_pi0, baseline_groot, discrete_pi0, "
                          "discrete_groot, ki_pi0, or vlm_tiny")
    trn.add_argument("--suite", default="tabletop")
    trn.add_argument("--demos", default=None, help="demonstration directory (apt-bench demos)")
    trn.add_argument("--out", default=None, help="checkpoint directory to write")
    trn.add_argument("--steps", type=_positive_int, default=3000, help="total optimisation steps")
    trn.add_argument("--batch-size", type=_positive_int, default=64)
    trn.add_argument("--lr", type=float, default=3e-4)
    trn.add_argument("--seed", type=_non_negative_int, default=0)
    trn.add_argument("--device", default="cpu")
    trn.add_argument("--preset", default=None, help="model preset (default tiny_<arch>)")
    trn.add_argument("--vlm", default=None, help="vlm_tiny checkpoint directory, or 'none'")
    trn.add_argument("--stage", type=int, choices=(1, 2), default=None,
                     help="apt only: run Stage 1 alone, or Stage 2 from --init")
    trn.add_argument("--init", default=None, help="Stage-1 checkpoint for --stage 2")
    trn.add_argument("--cameras", nargs="+", default=["front"])
    trn.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    trn.add_argument("--compile", action="store_true", help="torch.compile the training step (GPU runs)")
    trn.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                     help="bf16 autocast of the training step: auto = on CUDA only (default); bf16 = also on "
                          "CPU, ~1.5x faster steps where the CPU has AVX512-BF16 or AMX (slower elsewhere); "
                          "fp32 = never")
    trn.add_argument("--ema-decay", type=float, default=0.999,
                     help="decay of the EMA weights the checkpoint keeps (default 0.999, an average over "
                          "~1000 steps; 0 = the last weights). Short runs want a shorter average")
    trn.add_argument("--vl-ratio", type=float, default=0.25,
                     help="discrete/ki: vision-language examples per action example in a batch")
    trn.add_argument("--vl-grid", dest="vl_grid_cm", type=float, default=0.0, metavar="CM",
                     help="discrete/ki: also ask each object's cell on a CM-centimetre table grid "
                          "(fine position questions; default 0 = off)")
    trn.add_argument("--action-vocab", type=_positive_int, default=None,
                     help="discrete/ki: BPE vocabulary size of the action tokenizer (default 1024)")
    trn.add_argument("--fast-scale", type=float, default=10.0,
                     help="discrete/ki: scale of the DCT coefficients before rounding (FAST: 10; lower = "
                          "coarser action tokens)")
    trn.add_argument("--unfreeze-vlm", action="store_true",
                     help="apt only: Stage 2 also trains the VLM trunk (default: frozen, the prior's VLM)")
    trn.add_argument("--vlm-lr-multiplier", type=float, default=None,
                     help="the trunk's LR as a multiple of --lr: apt with --unfreeze-vlm (default 0.1); "
                          "discrete/ki, whose --lr is the fresh decoder's (default 1)")
    trn.set_defaults(handler=_call("apt.training.recipes:train"))

    srv = sub.add_parser("serve", help="serve a policy over the openpi websocket protocol")
    srv.add_argument("--policy", required=True, help="policy name or checkpoint directory")
    srv.add_argument("--suite", default="tabletop")
    srv.add_argument("--host", default="127.0.0.1",
                     help="bind address (default loopback; anything else is reachable, unauthenticated)")
    srv.add_argument("--port", type=_non_negative_int, default=8000, help="TCP port (0 = any free port)")
    srv.add_argument("--device", default="cpu", help="cpu or cuda[:N] for learned policies")
    srv.add_argument("--seed", type=_non_negative_int, default=0, help="policy seed (reference policies)")
    srv.add_argument("--max-message-mb", type=_positive_int, default=32,
                     help="largest request accepted; bigger ones close the connection (code 1009)")
    srv.add_argument("--max-batch", type=_positive_int, default=64,
                     help="most observations in one batched request")
    srv.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    srv.set_defaults(handler=_call("apt.serving.server:serve"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return ns.handler(ns)
    except BenchError as err:
        print(f"apt-bench {ns.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"apt-bench {ns.command}: interrupted; finished episodes are kept in the store",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
