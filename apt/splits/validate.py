"""Validation of an instruction set against its suite's tasks and training instructions
(`check_instruction_set`): what `load_split` enforces and `apt-bench splits --check` reports.

Every problem is one line naming the file, the entry and the problem, so a curator fixes a file
from the report alone.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from apt.splits.instruction_set import InstructionEntry, InstructionSet, is_shipped, normalize_instruction
from apt.splits.names import TRAIN_SPLIT, TRAINING_TASK_SPLITS
from benchmarks.base import TaskSpec, did_you_mean


def _vocabulary(texts: Iterable[str]) -> set[str]:
    return {w for t in texts for w in normalize_instruction(t).split()}


def check_instruction_set(iset: InstructionSet, tasks: Sequence[TaskSpec], train: InstructionSet,
                          *, require_coverage: bool = True) -> list[str]:
    """Every problem of `iset` against the suite's tasks and training instructions.

    Each problem is one line naming the file, the entry id (where there is one) and the problem.
    Checks: unknown task id; duplicate entry id; the same instruction for two tasks (ambiguous);
    OOD splits: an instruction equal (after normalising) to a training instruction; seen: an
    instruction that is not its task's training instruction; unseen: no word outside the training
    vocabulary; compositional: a task present in training; seen/paraphrased/unseen: a held-out task,
    or (with `require_coverage`) a training task without an entry; compositional: a held-out task
    without an entry; train: a held-out task; shipped files: suite/split fields that disagree with
    the file's folder and name.
    """
    src = iset.source
    problems: list[str] = []
    by_id = {t.task_id: t for t in tasks}
    train_tasks = [t.task_id for t in tasks if t.train]
    held_out = [t.task_id for t in tasks if not t.train]
    in_training = set(train_tasks) | {e.task_id for e in train.entries}

    if iset.path is not None and is_shipped(iset.path):
        if iset.path.parent.name != iset.suite:
            problems.append(f"{src}: field suite {iset.suite!r} does not match its folder "
                            f"{iset.path.parent.name!r}")
        if iset.path.stem != iset.split:
            problems.append(f"{src}: field split {iset.split!r} does not match its file name "
                            f"{iset.path.stem!r}")

    # Training instructions: the train set's entries plus every training task's canonical one.
    train_norm: dict[str, str] = {}
    for e in train.entries:
        train_norm.setdefault(normalize_instruction(e.instruction), e.task_id)
    for t in tasks:
        if t.train:
            train_norm.setdefault(normalize_instruction(t.instruction), t.task_id)
    train_vocab = _vocabulary(train_norm)
    train_by_task: dict[str, set[str]] = {}
    for e in train.entries:
        train_by_task.setdefault(e.task_id, set()).add(normalize_instruction(e.instruction))

    seen_ids: set[str] = set()
    seen_text: dict[str, InstructionEntry] = {}
    for e in iset.entries:
        where = f"{src}: entry {e.id!r}"
        if e.id in seen_ids:
            problems.append(f"{where}: duplicate entry id")
        seen_ids.add(e.id)
        if e.task_id not in by_id:
            problems.append(f"{where}: unknown task id {e.task_id!r}"
                            f"{did_you_mean(e.task_id, list(by_id))}")
            continue
        norm = normalize_instruction(e.instruction)
        other = seen_text.get(norm)
        if other is not None and other.task_id != e.task_id:
            problems.append(f"{where}: instruction {e.instruction!r} also asks for task "
                            f"{other.task_id!r} (entry {other.id!r}); it must name exactly one task")
        seen_text.setdefault(norm, e)

        if iset.split not in (TRAIN_SPLIT, "seen"):  # every OOD split, users' ones too
            if norm in train_norm:
                problems.append(f"{where}: instruction {e.instruction!r} is identical (ignoring case, "
                                f"punctuation and spaces) to the training instruction of "
                                f"{train_norm[norm]!r}; an out-of-distribution split must reword it")
        if iset.split == "seen" and norm not in train_by_task.get(e.task_id, set()):
            problems.append(f"{where}: instruction {e.instruction!r} is not a training instruction "
                            f"of {e.task_id!r}; the seen split repeats train.yaml")
        if iset.split == "unseen" and not (set(norm.split()) - train_vocab):
            problems.append(f"{where}: instruction {e.instruction!r} uses only training vocabulary; "
                            f"it belongs in paraphrased")
        if iset.split == "compositional" and e.task_id in in_training:
            problems.append(f"{where}: task {e.task_id!r} appears in training, so it is not a "
                            f"held-out combination")
        if iset.split in (TRAIN_SPLIT, *TRAINING_TASK_SPLITS) and not by_id[e.task_id].train:
            problems.append(f"{where}: task {e.task_id!r} is held out of training; it belongs in "
                            f"compositional")

    if require_coverage:
        covered = {e.task_id for e in iset.entries}
        if iset.split in (TRAIN_SPLIT, *TRAINING_TASK_SPLITS):
            for tid in train_tasks:
                if tid not in covered:
                    problems.append(f"{src}: training task {tid!r} has no entry")
        elif iset.split == "compositional":
            for tid in held_out:
                if tid not in covered:
                    problems.append(f"{src}: held-out task {tid!r} has no entry")
    return problems
