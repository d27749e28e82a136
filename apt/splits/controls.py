"""Language-reliance control splits, generated from a hand-written split (`blank`, `shuffled`,
`swapped`; `apt-bench run --split KIND@BASE`).

Non-obvious behaviour: a control keeps the base entry's `id` and `task_id`, so a control episode is
paired with the base episode (same task, same seeds) and its success is judged on the original
task; only the instruction changes. Everything is deterministic (no per-process hash salt).
"""

from __future__ import annotations

import hashlib
import random
from typing import Sequence

from apt.splits.instruction_set import InstructionEntry, InstructionSet, generated_set, normalize_instruction
from apt.splits.names import CONTROL_SPLITS
from benchmarks.base import BenchError, TaskSpec, unknown


def _stable_int(*parts: object) -> int:
    """A process-independent integer from its parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def shuffle_words(text: str, key: int) -> str:
    """The words of `text` in an order fixed by `key`, different from the original whenever the
    text has at least two distinct words (otherwise returned unchanged)."""
    words = text.split()
    if len(set(words)) < 2:
        return " ".join(words)
    rng = random.Random(key)
    for _ in range(32):
        perm = words[:]
        rng.shuffle(perm)
        if perm != words:
            return " ".join(perm)
    # Practically unreachable; a rotation by one differs from any non-constant sequence.
    return " ".join(words[1:] + words[:1])


def _swap_candidates(task: TaskSpec, tasks: Sequence[TaskSpec]) -> list[TaskSpec]:
    """Other tasks whose instruction the policy could follow in the same scene, best first.

    Training tasks are preferred (their instruction is one the policy was trained to follow), then
    those of the same skill (so only the object/target words differ). Tasks with a `scene`
    attribute only swap within their scene; tabletop scenes hold everything, so it has none.
    """
    scene = task.attributes.get("scene")
    others = [t for t in tasks if t.task_id != task.task_id and t.attributes.get("scene") == scene
              and normalize_instruction(t.instruction) != normalize_instruction(task.instruction)]
    skill = task.attributes.get("skill")

    def rank(t: TaskSpec) -> tuple[int, int]:
        return (0 if t.train else 1, 0 if skill is not None and t.attributes.get("skill") == skill else 1)

    if not others:
        return []
    best = min(rank(t) for t in others)
    return sorted((t for t in others if rank(t) == best), key=lambda t: t.task_id)


def derive_control(base: InstructionSet, kind: str, tasks: Sequence[TaskSpec],
                   seed: int = 0) -> InstructionSet:
    """A language-reliance control of `base`: same entry ids and task ids, altered instructions.

    - `blank`: the empty instruction.
    - `shuffled`: the entry's words in a fixed random order (seeded by `seed` and the entry id),
      always different from the original when it has two distinct words.
    - `swapped`: the canonical instruction of another task in the same scene, chosen
      deterministically (same skill and a training task preferred); success is still judged on
      the entry's own task, so a policy that follows language fails.
    The entry's axis becomes the control kind; its note keeps the original instruction.
    """
    if kind not in CONTROL_SPLITS:
        raise unknown("control split", kind, CONTROL_SPLITS)
    by_id = {t.task_id: t for t in tasks}
    entries = []
    for e in base.entries:
        origin = f"{kind} control of {base.split}/{e.id} ({e.axis}): {e.instruction!r}"
        if kind == "blank":
            text = ""
        elif kind == "shuffled":
            text = shuffle_words(e.instruction, _stable_int("shuffled", seed, e.id))
        else:
            if e.task_id not in by_id:
                raise BenchError(f"{base.source}: entry {e.id!r}: unknown task id {e.task_id!r}, "
                                 "cannot choose a swapped instruction")
            options = _swap_candidates(by_id[e.task_id], tasks)
            if not options:
                raise BenchError(f"{base.source}: entry {e.id!r}: no other task shares the scene "
                                 f"of {e.task_id!r}, so there is no instruction to swap in")
            other = options[_stable_int("swapped", seed, e.id) % len(options)]
            text = other.instruction
            origin += f"; instruction of {other.task_id}"
        entries.append(InstructionEntry(id=e.id, task_id=e.task_id, instruction=text, axis=kind,
                                        note=origin))
    split = kind if base.split == "seen" else f"{kind}@{base.split}"
    if seed:
        split += f"#seed{seed}"
    return generated_set(base.suite, split, base.version, tuple(entries))
