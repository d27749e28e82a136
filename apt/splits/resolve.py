"""Resolving what a user names as a split to one validated `InstructionSet` (`load_split`).

Splits a user can ask for:
- a shipped split: `train` (the labels of the demonstrations), `seen`, `paraphrased`, `unseen`,
  `compositional`;
- a control split generated from `seen`: `blank`, `shuffled`, `swapped`; or from any other split
  with `KIND@BASE` (e.g. `swapped@paraphrased`, `blank@my_split.yaml`);
- a path to the user's own YAML file, validated like the shipped ones (except for coverage: a
  user's split may cover a subset of tasks).

A set named by a file path (or a control of one) is keyed by content in the results store
(`InstructionSet.store_key`); a named split by its name.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from apt.splits.controls import derive_control
from apt.splits.instruction_set import (InstructionSet, is_shipped, load_instruction_set, looks_like_path,
                                        shipped_path, split_names, training_set)
from apt.splits.names import CONTROL_SPLITS, SPLITS, TRAIN_SPLIT
from apt.splits.validate import check_instruction_set
from benchmarks.base import BenchError, TaskSpec, did_you_mean


def load_split(suite_name: str, split: str, tasks: Sequence[TaskSpec]) -> InstructionSet:
    """Resolve a split name, `KIND@BASE`, a control kind, or a YAML path to a validated set.

    Raises BenchError for unknown names (with a close match and the valid names) and for any
    problem `check_instruction_set` finds.
    """
    return replace(_resolve(suite_name, split, tasks), keyed_by_content=_names_a_file(split))


def _names_a_file(split: str) -> bool:
    """Whether the split argument (or the base of `KIND@BASE`) names a file rather than a split."""
    base = split.partition("@")[2] if "@" in split and not Path(split).exists() else split
    return looks_like_path(base) or Path(base).is_file()


def _resolve(suite_name: str, split: str, tasks: Sequence[TaskSpec]) -> InstructionSet:
    if "@" in split and not Path(split).exists():
        kind, _, base_name = split.partition("@")
        if kind not in CONTROL_SPLITS:
            raise BenchError(f"unknown control split {kind!r} in {split!r}"
                             f"{did_you_mean(kind, CONTROL_SPLITS)}; control kinds: "
                             f"{', '.join(CONTROL_SPLITS)} (use KIND@BASE, e.g. swapped@paraphrased)")
        if "@" in base_name or base_name in CONTROL_SPLITS:
            raise BenchError(f"{split!r}: a control split is derived from a hand-written split, "
                             f"not from another control split")
        base = _resolve(suite_name, base_name, tasks)
        return derive_control(base, kind, tasks)
    if split in CONTROL_SPLITS:
        return derive_control(_resolve(suite_name, "seen", tasks), split, tasks)

    if looks_like_path(split) or Path(split).is_file():
        iset = load_instruction_set(split)
        user_file = not is_shipped(Path(split))
    else:
        path = shipped_path(suite_name, split)
        if not path.is_file():
            valid = [*split_names(suite_name), *CONTROL_SPLITS]
            if not valid:
                valid = [*SPLITS, *CONTROL_SPLITS]
            raise BenchError(
                f"unknown split {split!r} for suite {suite_name!r}{did_you_mean(split, valid)}; "
                f"valid splits: {', '.join(valid)}, KIND@BASE (e.g. swapped@paraphrased), "
                f"or a path to an instruction-set YAML file")
        iset = load_instruction_set(path)
        user_file = False
    if iset.suite != suite_name:
        raise BenchError(f"{iset.source}: instruction set is for suite {iset.suite!r}, not "
                         f"{suite_name!r}; pass --suite {iset.suite}")
    train = iset if iset.split == TRAIN_SPLIT and not user_file else training_set(suite_name, tasks)
    problems = check_instruction_set(iset, tasks, train, require_coverage=not user_file)
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise BenchError(f"{iset.source}: {len(problems)} problem(s):\n  {shown}{more}\n"
                         f"(run `apt-bench splits --suite {suite_name} --check {iset.source}`)")
    return iset
