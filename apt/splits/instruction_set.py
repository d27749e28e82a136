"""Instruction sets: loading, validation, and the generated language-reliance control splits.

An instruction set is one YAML file, `instruction_sets/<suite>/<split>.yaml` (format: DESIGN.md §3
and `instruction_sets/schema.json`), curated by hand. This module is the one reader of that
format: everything else gets typed, frozen `InstructionSet`s from `load_split`.

Splits a user can ask for (`load_split`):
- a shipped split: `train` (the labels of the demonstrations), `seen`, `paraphrased`, `unseen`,
  `compositional`;
- a control split generated from `seen`: `blank`, `shuffled`, `swapped`; or from any other split
  with `KIND@BASE` (e.g. `swapped@paraphrased`, `blank@my_split.yaml`);
- a path to the user's own YAML file, validated like the shipped ones (except for coverage: a
  user's split may cover a subset of tasks).

`InstructionSet.sha256` identifies the exact content evaluated: the hash of the file's bytes, or for
a generated control split the hash of a canonical JSON of its content. The results store keys
episodes by it, so editing a file never mixes old and new episodes.

Non-obvious behaviour:
- Leakage is judged after normalising case, punctuation and whitespace: "Put the RED block on the
  plate!" *is* the training instruction "put the red block on the plate" to most text encoders.
- Control splits keep the base entry's `id` and `task_id`, so a control episode is paired with the
  base episode (same task, same seeds) and its success is judged on the original task.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from benchmarks.base import BenchError, TaskSpec, did_you_mean, unknown

TRAIN_SPLIT = "train"
# Splits whose entries must be training tasks and must cover every training task.
TRAINING_TASK_SPLITS: tuple[str, ...] = ("seen", "paraphrased", "unseen")
# Splits whose instructions must not equal a training instruction (after normalising).
OOD_SPLITS: tuple[str, ...] = ("paraphrased", "unseen", "compositional")

_TOP_KEYS = ("suite", "split", "version", "entries")
_ENTRY_KEYS = ("id", "task_id", "instruction", "axis")
_ENTRY_OPTIONAL = ("note",)
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_AXIS_RE = re.compile(r"^[a-z_]+(\+[a-z_]+)*$")
_PUNCT_RE = re.compile(r"[^\w\s]")


@dataclass(frozen=True)
class InstructionEntry:
    """One instruction a policy receives, and the task it asks for (success is judged on it)."""

    id: str
    task_id: str
    instruction: str
    axis: str  # kind of change from training, e.g. "colour_synonym+new_verb"
    note: str = ""


@dataclass(frozen=True)
class InstructionSet:
    """One split of one suite, as loaded or generated."""

    suite: str
    split: str
    version: int
    entries: tuple[InstructionEntry, ...]
    path: Path | None  # None for generated control splits
    sha256: str  # of the file's bytes, or of a canonical JSON of a generated split's content

    @property
    def source(self) -> str:
        """How problems and logs name this set: its file, or `<suite/split>` when generated."""
        return str(self.path) if self.path is not None else f"<{self.suite}/{self.split}>"

    def task_ids(self) -> list[str]:
        """Task ids in first-appearance order, without repeats."""
        return list(dict.fromkeys(e.task_id for e in self.entries))

    def by_task(self) -> dict[str, list[InstructionEntry]]:
        out: dict[str, list[InstructionEntry]] = {}
        for e in self.entries:
            out.setdefault(e.task_id, []).append(e)
        return out


def instruction_sets_dir() -> Path:
    """The repository's `instruction_sets/` folder (next to the `apt` package)."""
    return Path(__file__).resolve().parents[2] / "instruction_sets"


def normalize_instruction(text: str) -> str:
    """Case-, punctuation- and whitespace-insensitive form used for leakage and ambiguity checks.

    >>> normalize_instruction("  Put the RED block, on the plate! ")
    'put the red block on the plate'
    """
    return " ".join(_PUNCT_RE.sub(" ", text.lower()).split())


# --------------------------------------------------------------------------------------------
# Loading


def _fail(source: str, problem: str) -> BenchError:
    return BenchError(f"{source}: {problem}; see instruction_sets/schema.json for the format")


def _parse(data: Any, source: str) -> tuple[str, str, int, tuple[InstructionEntry, ...]]:
    """Check the schema by hand (no jsonschema dependency) and build the entries."""
    if not isinstance(data, dict):
        raise _fail(source, f"expected a mapping with keys {list(_TOP_KEYS)}, got "
                            f"{type(data).__name__}")
    missing = [k for k in _TOP_KEYS if k not in data]
    if missing:
        raise _fail(source, f"missing top-level key(s) {missing}")
    extra = sorted(set(data) - set(_TOP_KEYS))
    if extra:
        raise _fail(source, f"unknown top-level key(s) {extra}")
    for key in ("suite", "split"):
        if not isinstance(data[key], str) or not data[key]:
            raise _fail(source, f"'{key}' must be a non-empty string, got {data[key]!r}")
    version = data["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _fail(source, f"'version' must be an integer >= 1, got {version!r}")
    raw = data["entries"]
    if not isinstance(raw, list) or not raw:
        raise _fail(source, "'entries' must be a non-empty list")
    entries = []
    for i, item in enumerate(raw):
        where = f"entry #{i}"
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            where = f"entry #{i} ({item['id']!r})"
        if not isinstance(item, dict):
            raise _fail(source, f"{where}: expected a mapping, got {type(item).__name__}")
        missing = [k for k in _ENTRY_KEYS if k not in item]
        if missing:
            raise _fail(source, f"{where}: missing key(s) {missing}")
        extra = sorted(set(item) - set(_ENTRY_KEYS) - set(_ENTRY_OPTIONAL))
        if extra:
            raise _fail(source, f"{where}: unknown key(s) {extra}")
        for key in (*_ENTRY_KEYS, *_ENTRY_OPTIONAL):
            if key in item and not isinstance(item[key], str):
                raise _fail(source, f"{where}: '{key}' must be a string, got "
                                    f"{type(item[key]).__name__} {item[key]!r}")
        for key in _ENTRY_KEYS:
            if not item[key].strip():
                raise _fail(source, f"{where}: '{key}' is empty")
        if not _ID_RE.match(item["id"]):
            raise _fail(source, f"{where}: id may only hold letters, digits, '_', '.', '-'")
        if not _AXIS_RE.match(item["axis"]):
            raise _fail(source, f"{where}: axis {item['axis']!r} must be lower_snake_case words "
                                "joined by '+'")
        parts = item["axis"].split("+")
        if parts != sorted(set(parts)):
            raise _fail(source, f"{where}: axis {item['axis']!r}: write its parts once each in "
                                f"alphabetical order ({'+'.join(sorted(set(parts)))!r}), so one "
                                "kind of change has one spelling")
        entries.append(InstructionEntry(id=item["id"], task_id=item["task_id"],
                                        instruction=item["instruction"], axis=item["axis"],
                                        note=item.get("note", "")))
    return data["suite"], data["split"], version, tuple(entries)


def load_instruction_set(path: str | Path) -> InstructionSet:
    """Read and schema-check one YAML file; any problem is a BenchError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"instruction set {path} not found" + (
            "" if path.suffix in (".yaml", ".yml") else " (expected a .yaml file)"))
    raw = path.read_bytes()
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise BenchError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise BenchError(f"{path}: malformed YAML{where}: {problem}") from None
    suite, split, version, entries = _parse(data, str(path))
    return InstructionSet(suite=suite, split=split, version=version, entries=entries, path=path,
                          sha256=hashlib.sha256(raw).hexdigest())


def suite_folder(suite_name: str) -> Path:
    """A suite's instruction-set folder: `<suite>/`, or `<family>/<suite>/` for suite families
    (`libero/libero_goal/`)."""
    flat = instruction_sets_dir() / suite_name
    nested = instruction_sets_dir() / suite_name.split("_")[0] / suite_name
    return nested if not flat.is_dir() and nested.is_dir() else flat


def _shipped_path(suite_name: str, split: str) -> Path:
    return suite_folder(suite_name) / f"{split}.yaml"


def _is_shipped(path: Path) -> bool:
    try:
        path.resolve().relative_to(instruction_sets_dir().resolve())
    except ValueError:
        return False
    return True


def training_set(suite_name: str, tasks: Sequence[TaskSpec]) -> InstructionSet:
    """The suite's shipped train.yaml, or, for a suite without one, its training tasks' canonical
    instructions."""
    path = _shipped_path(suite_name, TRAIN_SPLIT)
    if path.is_file():
        return load_instruction_set(path)
    entries = tuple(InstructionEntry(id=f"train-{t.task_id}", task_id=t.task_id,
                                     instruction=t.instruction, axis="canonical")
                    for t in tasks if t.train)
    return _generated(suite_name, TRAIN_SPLIT, 1, entries)


def _generated(suite: str, split: str, version: int,
               entries: tuple[InstructionEntry, ...]) -> InstructionSet:
    content = {"suite": suite, "split": split, "version": version,
               "entries": [[e.id, e.task_id, e.instruction, e.axis, e.note] for e in entries]}
    blob = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return InstructionSet(suite=suite, split=split, version=version, entries=entries, path=None,
                          sha256=hashlib.sha256(blob.encode("utf-8")).hexdigest())


def split_names(suite_name: str) -> list[str]:
    """Shipped split names of a suite: train, seen, paraphrased, unseen, compositional, then any
    other YAML file of its folder."""
    folder = suite_folder(suite_name)
    order = [TRAIN_SPLIT, "seen", "paraphrased", "unseen", "compositional"]
    found = sorted((p.stem for p in folder.glob("*.yaml")),
                   key=lambda s: (order.index(s) if s in order else len(order), s))
    return found


def _looks_like_path(split: str) -> bool:
    return split.endswith((".yaml", ".yml")) or "/" in split or "\\" in split


def load_split(suite_name: str, split: str, tasks: Sequence[TaskSpec]) -> InstructionSet:
    """Resolve a split name, `KIND@BASE`, a control kind, or a YAML path to a validated set.

    Raises BenchError for unknown names (with a close match and the valid names) and for any
    problem `check_instruction_set` finds.
    """
    from apt.registry import CONTROL_SPLITS, SPLITS  # lazy: registry is heavier

    if "@" in split and not Path(split).exists():
        kind, _, base_name = split.partition("@")
        if kind not in CONTROL_SPLITS:
            raise BenchError(f"unknown control split {kind!r} in {split!r}"
                             f"{did_you_mean(kind, CONTROL_SPLITS)}; control kinds: "
                             f"{', '.join(CONTROL_SPLITS)} (use KIND@BASE, e.g. swapped@paraphrased)")
        if "@" in base_name or base_name in CONTROL_SPLITS:
            raise BenchError(f"{split!r}: a control split is derived from a hand-written split, "
                             f"not from another control split")
        base = load_split(suite_name, base_name, tasks)
        return derive_control(base, kind, tasks)
    if split in CONTROL_SPLITS:
        return derive_control(load_split(suite_name, "seen", tasks), split, tasks)

    if _looks_like_path(split) or Path(split).is_file():
        iset = load_instruction_set(split)
        user_file = not _is_shipped(Path(split))
    else:
        path = _shipped_path(suite_name, split)
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


# --------------------------------------------------------------------------------------------
# Control splits


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
    from apt.registry import CONTROL_SPLITS

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
    return _generated(base.suite, split, base.version, tuple(entries))


# --------------------------------------------------------------------------------------------
# Validation


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

    if iset.path is not None and _is_shipped(iset.path):
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


# --------------------------------------------------------------------------------------------
# CLI


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


def splits_command(suite: str, check: bool, files: list[str]) -> int:
    """`apt-bench splits`: list the suite's splits, or (--check) validate shipped or given files.
    Splits belong to the suite's own name (`simpler_env` runs the `simpler` suite's splits)."""
    from apt.registry import get_suite  # lazy: imports the simulator adapter

    suite_obj = get_suite(suite)
    suite, tasks = suite_obj.name, list(suite_obj.tasks())
    if not check:
        if files:
            sets = [load_instruction_set(f) for f in files]
        else:
            names = split_names(suite)
            if not names:
                raise BenchError(f"suite {suite!r} ships no instruction sets in "
                                 f"{suite_folder(suite)}")
            sets = [load_split(suite, n, tasks) for n in names]
            if "seen" in names:
                seen = next(s for s in sets if s.split == "seen")
                from apt.registry import CONTROL_SPLITS

                sets += [derive_control(seen, k, tasks) for k in CONTROL_SPLITS]
        held = sum(not t.train for t in tasks)
        print(f"suite {suite}: {len(tasks)} tasks ({len(tasks) - held} training, {held} held out)")
        _print_table([_summary_row(s) for s in sets])
        return 0

    paths = [Path(f) for f in files] if files else [
        _shipped_path(suite, n) for n in split_names(suite)]
    if not paths:
        raise BenchError(f"suite {suite!r} ships no instruction sets in "
                         f"{suite_folder(suite)}; pass files to check")
    train = training_set(suite, tasks)
    problems: list[str] = []
    entries = 0
    for path in paths:
        iset = load_instruction_set(path)
        entries += len(iset.entries)
        if iset.suite != suite:
            problems.append(f"{iset.source}: instruction set is for suite {iset.suite!r}, checked "
                            f"against suite {suite!r}; pass --suite {iset.suite}")
            continue
        reference = iset if (iset.split == TRAIN_SPLIT and _is_shipped(path)) else train
        problems += check_instruction_set(iset, tasks, reference)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} problem(s) in {len(paths)} file(s)")
        return 1
    print(f"ok: {len(paths)} file(s), {entries} entries, suite {suite} ({len(tasks)} tasks)")
    return 0
