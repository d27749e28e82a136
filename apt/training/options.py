"""`TrainOptions`: what one `apt-bench train` call asks for, each option defined once.

Every field carries its command-line flag, help and argparse keywords as field metadata, so the
one definition serves three readers: `apt/cli.py` builds the `train` subcommand from it, the
recipes (`apt/training/recipes/`) receive it, and `apt/training/ship.py` regenerates the command
that made a checkpoint from the options its config.json records. The suite (`--suite`) is not an
option here: the CLI resolves it and training receives the Suite itself.

Kept free of torch: the CLI imports this module to build its parser.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

from apt.argtypes import non_negative_int, positive_int


def _option(flag: str, default: Any = dataclasses.MISSING, help: str | None = None, **argparse: Any) -> Any:
    """A field with its flag and help; `argparse`: the other `add_argument` keywords (type, nargs...)."""
    return field(default=default, metadata={"flag": flag, "help": help, "argparse": argparse})


@dataclass(frozen=True)
class TrainOptions:
    """The options of `apt-bench train`, in the order `--help` lists them (values as parsed)."""

    policy: str = _option("--policy", required=True,
                          help="apt_pi0, apt_groot, baseline_pi0, baseline_groot, discrete_pi0, "
                               "discrete_groot, ki_pi0, or vlm_tiny")
    demos: str | None = _option("--demos", None, help="demonstration directory (apt-bench demos)")
    out: str | None = _option("--out", None, help="checkpoint directory to write")  # None: runs/checkpoints/<policy>
    steps: int = _option("--steps", 3000, help="total optimisation steps", type=positive_int)
    batch_size: int = _option("--batch-size", 64, type=positive_int)
    lr: float = _option("--lr", 3e-4, type=float)
    seed: int = _option("--seed", 0, type=non_negative_int)
    device: str = _option("--device", "cpu")
    preset: str | None = _option("--preset", None, help="model preset (default tiny_<arch>)")
    vlm: str | None = _option("--vlm", None, help="vlm_tiny checkpoint directory, or 'none'")
    stage: int | None = _option("--stage", None, help="apt only: run Stage 1 alone, or Stage 2 from --init",
                                type=int, choices=(1, 2))
    init: str | None = _option("--init", None, help="Stage-1 checkpoint for --stage 2")
    cameras: tuple[str, ...] = _option("--cameras", ("front",), nargs="+")
    threads: int | None = _option("--threads", None, help="torch CPU threads", type=positive_int)
    compile: bool = _option("--compile", False, help="torch.compile the training step (GPU runs)",
                            action="store_true")
    precision: str = _option(
        "--precision", "auto", choices=("auto", "bf16", "fp32"),
        help="bf16 autocast of the training step: auto = on CUDA only (default); bf16 = also on "
             "CPU, ~1.5x faster steps where the CPU has AVX512-BF16 or AMX (slower elsewhere); "
             "fp32 = never")
    ema_decay: float = _option(
        "--ema-decay", 0.999, type=float,
        help="decay of the EMA weights the checkpoint keeps (default 0.999, an average over "
             "~1000 steps; 0 = the last weights). Short runs want a shorter average")
    vl_ratio: float = _option("--vl-ratio", 0.25, type=float,
                              help="discrete/ki: vision-language examples per action example in a batch")
    vl_grid_cm: float = _option("--vl-grid", 0.0, type=float, metavar="CM",
                                help="discrete/ki: also ask each object's cell on a CM-centimetre table grid "
                                     "(fine position questions; default 0 = off)")
    action_vocab: int | None = _option(
        "--action-vocab", None, type=positive_int,
        help="discrete/ki: BPE vocabulary size of the action tokenizer (default 1024)")
    fast_scale: float = _option("--fast-scale", 10.0, type=float,
                                help="discrete/ki: scale of the DCT coefficients before rounding (FAST: 10; "
                                     "lower = coarser action tokens)")
    # The choices below repeat policy_model.VLM_MODES and fusion.FUSION_KINDS / CARRY_MODES, which
    # live in torch modules: this module stays torch-free (the CLI imports it); the configs validate.
    vlm_mode: str = _option("--vlm-mode", "frozen", choices=("frozen", "full"),
                            help="apt/baseline: the VLM trunk after Stage 1 (apt's Stage 2, the baseline "
                                 "throughout): frozen (default, as released) or full, trained at "
                                 "--vlm-lr-multiplier x --lr; Stage 1 always reads a frozen VLM")
    vlm_lr_multiplier: float | None = _option(
        "--vlm-lr-multiplier", None, type=float,
        help="the trunk's LR as a multiple of --lr: apt/baseline with --vlm-mode full (default 1); "
             "discrete/ki, whose --lr is the fresh decoder's (default 1)")
    fusion: str = _option("--fusion", "highway", choices=("highway", "cross_attention"),
                          help="apt/baseline: how language reaches the expert: highway = the authors' released "
                               "expert (default); cross_attention = the earlier inserted layers (an ablation)")
    carry: str = _option("--carry", "blocks", choices=("blocks", "all"),
                         help="apt with --fusion highway: what Stage 2 takes over from Stage 1: the attention "
                              "blocks only (default, as released) or every expert tensor")

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(self.cameras))  # argparse gives a list
        if self.out is None:
            object.__setattr__(self, "out", f"runs/checkpoints/{self.policy}")

    @staticmethod
    def default(name: str) -> Any:
        """The default of option `name` (what the CLI gives when the flag is left out)."""
        return _FIELDS[name].default

    def command_parts(self, names: Sequence[str]) -> list[str]:
        """'--flag value' for each named option: a switch alone (where set), a list's values joined by
        spaces."""
        parts = []
        for name in names:
            value, flag = getattr(self, name), _FIELDS[name].metadata["flag"]
            if isinstance(value, bool):
                parts += [flag] if value else []
            else:
                parts.append(f"{flag} {' '.join(value) if isinstance(value, tuple) else value}")
        return parts


_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainOptions)}
