"""`apt-bench` command line: argument parsing only; each subcommand calls one function elsewhere.

`train`, `demos` and `splits` receive their `--suite` as a Suite (resolved here by the registry);
`train` receives its other options as one `TrainOptions` (apt/training/options.py), from whose
fields its flags are built.

User errors (BenchError) print one clear line and exit 2; nothing else is caught, so bugs keep
their tracebacks.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from typing import Any, Callable, Sequence

from apt.argtypes import non_negative_float, non_negative_int, positive_int
from apt.registry import get_suite, import_target
from apt.training.options import TrainOptions
from benchmarks.base import BenchError

DEFAULT_STORE = "runs/results.sqlite"


Kwargs = dict[str, Any]


def _call(target: str, prepare: Callable[[Kwargs], Kwargs] | None = None) -> Callable[[argparse.Namespace], int]:
    """Handler that imports `module:function` lazily and calls it with the parsed options (turned
    into the function's arguments by `prepare`, where given)."""

    def handler(ns: argparse.Namespace) -> int:
        fn = import_target(target)
        kwargs: Kwargs = {k: v for k, v in vars(ns).items() if k not in ("command", "handler")}
        return int(fn(**(prepare(kwargs) if prepare else kwargs)) or 0)

    return handler


def _with_suite(kwargs: Kwargs) -> Kwargs:
    """`--suite NAME` resolved: the subcommand receives the Suite (unknown names fail here)."""
    return {**kwargs, "suite": get_suite(kwargs["suite"])}


def _with_suite_factory(kwargs: Kwargs) -> Kwargs:
    """The Suite, and `make_suite`: a picklable factory that rebuilds it in worker processes."""
    return {**_with_suite(kwargs), "make_suite": functools.partial(get_suite, kwargs["suite"])}


def _train_arguments(kwargs: Kwargs) -> Kwargs:
    """`train(options, suite)`: every other parsed value is a TrainOptions field."""
    suite = get_suite(kwargs.pop("suite"))
    return {"options": TrainOptions(**kwargs), "suite": suite}


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    """The `train` flags, from TrainOptions' field metadata; `--suite` keeps its place after `--policy`."""
    for f in dataclasses.fields(TrainOptions):
        default = {} if f.default is dataclasses.MISSING else {"default": f.default}
        parser.add_argument(f.metadata["flag"], dest=f.name, help=f.metadata["help"], **default,
                            **f.metadata["argparse"])
        if f.name == "policy":
            parser.add_argument("--suite", default="tabletop")


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
    run.add_argument("--episodes", type=positive_int, default=None,
                     help="episodes per instruction entry (default: the suite's quick setting)")
    run.add_argument("--workers", type=non_negative_int, default=None,
                     help="env worker processes (0 = in-process; default: the engine predicted faster "
                          "from costs measured before the run, in-process on 2 cores, a sized Ray pool on more)")
    run.add_argument("--in-flight", type=positive_int, default=None,
                     help="episodes each worker plays at once, batching their policy calls (default: "
                          "a learned policy's batch, sized from measured costs on Ray; otherwise 1)")
    run.add_argument("--store", default=DEFAULT_STORE, help="SQLite results store")
    run.add_argument("--video", action="store_true", help="write one MP4 per episode")
    run.add_argument("--ray-address", default=None, help="join an existing Ray cluster")
    run.add_argument("--seed", type=non_negative_int, default=0, help="first episode seed")
    run.add_argument("--image-size", type=positive_int, default=None)
    run.add_argument("--replan-steps", type=positive_int, default=None,
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
    spl.set_defaults(handler=_call("apt.splits.command:splits_command", _with_suite))

    dem = sub.add_parser("demos", help="write scripted-expert demonstrations")
    dem.add_argument("--suite", default="tabletop")
    dem.add_argument("--out", required=True)
    dem.add_argument("--episodes-per-task", type=positive_int, default=50)
    dem.add_argument("--workers", type=non_negative_int, default=None)
    dem.add_argument("--seed", type=non_negative_int, default=0)
    dem.add_argument("--image-size", type=positive_int, default=96)
    dem.add_argument("--format", default=None, choices=("apt-bench-demos", "libero_hdf5"),
                     help="on-disk format (default: the suite's native one, e.g. LIBERO HDF5 for "
                          "libero_goal; else apt-bench's)")
    dem.add_argument("--tasks", nargs="+", default=None, help="only these training task ids")
    dem.add_argument("--cameras", nargs="+", default=None,
                     help="record only these cameras (default: every camera the suite has)")
    dem.add_argument("--expert-noise", type=non_negative_float, default=None,
                     help="std of the expert's per-step action noise, recorded in the labels "
                          "(default 0.1; 0 = clean labels, e.g. for FAST-token policies)")
    dem.add_argument("--clean-labels", action="store_true",
                     help="execute the noisy actions but record the expert's intended (noise-free) "
                          "action as each frame's label (DART-style)")
    dem.set_defaults(handler=_call("apt.demos.generate:demos_command", _with_suite_factory))
    trn = sub.add_parser("train", help="train a policy with its recipe and write a checkpoint")
    _add_train_options(trn)
    trn.set_defaults(handler=_call("apt.training.train:train", _train_arguments))

    srv = sub.add_parser("serve", help="serve a policy over the openpi websocket protocol")
    srv.add_argument("--policy", required=True, help="policy name or checkpoint directory")
    srv.add_argument("--suite", default="tabletop")
    srv.add_argument("--host", default="127.0.0.1",
                     help="bind address (default loopback; anything else is reachable, unauthenticated)")
    srv.add_argument("--port", type=non_negative_int, default=8000, help="TCP port (0 = any free port)")
    srv.add_argument("--device", default="cpu", help="cpu or cuda[:N] for learned policies")
    srv.add_argument("--seed", type=non_negative_int, default=0, help="policy seed (reference policies)")
    srv.add_argument("--max-message-mb", type=positive_int, default=32,
                     help="largest request accepted; bigger ones close the connection (code 1009)")
    srv.add_argument("--max-batch", type=positive_int, default=64,
                     help="most observations in one batched request")
    srv.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
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
