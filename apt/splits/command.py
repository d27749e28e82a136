"""`apt-bench splits`: list a suite's instruction sets, or (--check) validate shipped or given files.

The CLI resolves the suite and passes the `Suite` object: the splits wing never looks names up in
the registry.
"""

from __future__ import annotations

from pathlib import Path

from apt.splits.controls import derive_control
from apt.splits.instruction_set import (InstructionSet, is_shipped, load_instruction_set, shipped_path,
                                        split_names, suite_folder, training_set)
from apt.splits.names import CONTROL_SPLITS, TRAIN_SPLIT
from apt.splits.resolve import load_split
from apt.splits.validate import check_instruction_set
from benchmarks.base import BenchError, Suite


def _summary_row(iset: InstructionSet) -> tuple[str, str, str, str]:
    axes: dict[str, int] = {}  # entries per kind of change (an entry may count under several)
    for e in iset.entries:
        for part in e.axis.split("+"):
            axes[part] = axes.get(part, 0) + 1
    axes_text = ", ".join(f"{a} {n}" for a, n in sorted(axes.items(), key=lambda kv: (-kv[1], kv[0])))
    return iset.split, str(len(iset.entries)), str(len(iset.task_ids())), axes_text


def _print_table(rows: list[tuple[str, ...]]) -> None:
    header = ("split", "entries", "tasks", "entries per axis")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    for r in [header, *rows]:
        print("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])


def splits_command(suite: Suite, check: bool, files: list[str]) -> int:
    """`apt-bench splits`: list the suite's splits, or (--check) validate shipped or given files.
    Splits belong to the suite's own name (`simpler_env` runs the `simpler` suite's splits)."""
    suite_name, tasks = suite.name, list(suite.tasks())
    if not check:
        if files:
            sets = [load_instruction_set(f) for f in files]
        else:
            names = split_names(suite_name)
            if not names:
                raise BenchError(f"suite {suite_name!r} ships no instruction sets in "
                                 f"{suite_folder(suite_name)}")
            sets = [load_split(suite_name, n, tasks) for n in names]
            if "seen" in names:
                seen = next(s for s in sets if s.split == "seen")
                sets += [derive_control(seen, k, tasks) for k in CONTROL_SPLITS]
        held = sum(not t.train for t in tasks)
        print(f"suite {suite_name}: {len(tasks)} tasks ({len(tasks) - held} training, {held} held out)")
        _print_table([_summary_row(s) for s in sets])
        return 0

    paths = [Path(f) for f in files] if files else [
        shipped_path(suite_name, n) for n in split_names(suite_name)]
    if not paths:
        raise BenchError(f"suite {suite_name!r} ships no instruction sets in "
                         f"{suite_folder(suite_name)}; pass files to check")
    train = training_set(suite_name, tasks)
    problems: list[str] = []
    entries = 0
    for path in paths:
        iset = load_instruction_set(path)
        entries += len(iset.entries)
        if iset.suite != suite_name:
            problems.append(f"{iset.source}: instruction set is for suite {iset.suite!r}, checked "
                            f"against suite {suite_name!r}; pass --suite {iset.suite}")
            continue
        reference = iset if (iset.split == TRAIN_SPLIT and is_shipped(path)) else train
        problems += check_instruction_set(iset, tasks, reference)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {len(paths)} file(s)")
        return 1
    print(f"ok: {len(paths)} file(s), {entries} entries, suite {suite_name} ({len(tasks)} tasks)")
    return 0
