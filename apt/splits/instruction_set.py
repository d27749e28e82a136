"""Instruction sets: the typed, frozen form of one YAML file, and its one reader.

An instruction set is one YAML file, `instruction_sets/<suite>/<split>.yaml` (format: ARCHITECTURE.md §3
and `instruction_sets/schema.json`), curated by hand. This module is the one reader of that
format; everything else gets `InstructionSet`s from `apt.splits.resolve.load_split`.

`InstructionSet.sha256` identifies the exact content evaluated: the hash of the file's bytes, or for
a generated set (a control split, a suite's default training set) the hash of a canonical JSON of
its content. `InstructionSet.store_key` is how the results store names the split in episode keys:
its name, or that content hash for a set the user named by a file path, so moving the file keeps
its episodes and editing it never mixes old and new ones.

Non-obvious behaviour: leakage is judged after normalising case, punctuation and whitespace ("Put
the RED block on the plate!" *is* the training instruction "put the red block on the plate" to most
text encoders): `normalize_instruction`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from apt.splits.names import SPLITS, TRAIN_SPLIT
from benchmarks.base import BenchError, TaskSpec

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
    """One split of one suite, as loaded or generated.

    `keyed_by_content` is set by `load_split` when the user named the set (or the base of a
    control) by a file path; it decides `store_key`.
    """

    suite: str
    split: str
    version: int
    entries: tuple[InstructionEntry, ...]
    path: Path | None  # None for generated control splits
    sha256: str  # of the file's bytes, or of a canonical JSON of a generated split's content
    keyed_by_content: bool = False

    @property
    def source(self) -> str:
        """How problems and logs name this set: its file, or `<suite/split>` when generated."""
        return str(self.path) if self.path is not None else f"<{self.suite}/{self.split}>"

    @property
    def store_key(self) -> str:
        """How episode keys name this split: its name, or "sha256:<hex>" of its content when it was
        named by a file path (module docstring)."""
        return f"sha256:{self.sha256}" if self.keyed_by_content else self.split

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


def shipped_path(suite_name: str, split: str) -> Path:
    """Where a suite's shipped split lives (whether or not it exists)."""
    return suite_folder(suite_name) / f"{split}.yaml"


def is_shipped(path: Path) -> bool:
    """Whether `path` is inside the repository's `instruction_sets/` (not a user's file)."""
    try:
        path.resolve().relative_to(instruction_sets_dir().resolve())
    except ValueError:
        return False
    return True


def training_set(suite_name: str, tasks: Sequence[TaskSpec]) -> InstructionSet:
    """The suite's shipped train.yaml, or, for a suite without one, its training tasks' canonical
    instructions."""
    path = shipped_path(suite_name, TRAIN_SPLIT)
    if path.is_file():
        return load_instruction_set(path)
    entries = tuple(InstructionEntry(id=f"train-{t.task_id}", task_id=t.task_id,
                                     instruction=t.instruction, axis="canonical")
                    for t in tasks if t.train)
    return generated_set(suite_name, TRAIN_SPLIT, 1, entries)


def generated_set(suite: str, split: str, version: int,
                  entries: tuple[InstructionEntry, ...]) -> InstructionSet:
    """A set made in code (no file), identified by the hash of a canonical JSON of its content."""
    content = {"suite": suite, "split": split, "version": version,
               "entries": [[e.id, e.task_id, e.instruction, e.axis, e.note] for e in entries]}
    blob = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return InstructionSet(suite=suite, split=split, version=version, entries=entries, path=None,
                          sha256=hashlib.sha256(blob.encode("utf-8")).hexdigest())


def split_names(suite_name: str) -> list[str]:
    """Shipped split names of a suite: train, seen, paraphrased, unseen, compositional, then any
    other YAML file of its folder."""
    folder = suite_folder(suite_name)
    order = [TRAIN_SPLIT, *SPLITS]
    found = sorted((p.stem for p in folder.glob("*.yaml")),
                   key=lambda s: (order.index(s) if s in order else len(order), s))
    return found


def looks_like_path(split: str) -> bool:
    """Whether a split argument is spelled as a file path (a YAML name or one with a separator)."""
    return split.endswith((".yaml", ".yml")) or "/" in split or "\\" in split
