"""Reading LIBERO task files (BDDL): the `(:language ...)` text, objects, goal; task attributes.

Non-obvious behaviour: LIBERO's `task.language` is parsed from the BDDL *file name*, not from the
`(:language ...)` text inside the file. They differ in 5 of 10 standard LIBERO-Goal tasks and in
every task of LIBERO-PRO's `_lan` suites (whose whole point is the text). This module is how the
adapter reads the text itself; which one a split uses is written in the split's entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from benchmarks.base import BenchError

_TOKEN = re.compile(r"\(|\)|[^\s()]+")

# Goal predicate -> skill name (LIBERO's predicates are case-insensitive).
_SKILLS = {"on": "place", "in": "place", "open": "open", "close": "close", "turnon": "turn_on",
           "turnoff": "turn_off"}


def _parse(text: str) -> list:
    """S-expression -> nested lists of tokens (comments ';' stripped)."""
    text = "\n".join(line.split(";", 1)[0] for line in text.splitlines())
    stack: list[list] = [[]]
    for tok in _TOKEN.findall(text):
        if tok == "(":
            stack.append([])
        elif tok == ")":
            if len(stack) == 1:
                raise ValueError("unbalanced ')'")
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(tok)
    if len(stack) != 1:
        raise ValueError("unbalanced '('")
    return stack[0]


def _typed_names(group: list) -> dict[str, str]:
    """['a_1', '-', 'cat', 'b_1', 'c_1', '-', 'cat2'] -> {'a_1': 'cat', 'b_1': 'cat2', 'c_1': 'cat2'}."""
    out: dict[str, str] = {}
    pending: list[str] = []
    i = 0
    while i < len(group):
        if group[i] == "-" and i + 1 < len(group):
            for n in pending:
                out[n] = group[i + 1]
            pending = []
            i += 2
        else:
            pending.append(group[i])
            i += 1
    return out


def _flat(expr) -> str:
    return "(" + " ".join(_flat(e) for e in expr) + ")" if isinstance(expr, list) else expr


@dataclass(frozen=True)
class BddlTask:
    """What the adapter needs from one BDDL problem file."""

    path: Path
    language: str  # the (:language ...) text, whitespace collapsed, case kept
    objects: dict[str, str]  # instance -> category (movable objects)
    fixtures: dict[str, str]  # instance -> category (tables, cabinets, stoves...)
    goal: tuple[tuple[str, ...], ...]  # conjunction of atoms, e.g. (("on", "plate_1", "flat_stove_1_cook_region"),)

    def attributes(self) -> dict[str, str]:
        """Task attributes for compositional/control splits: skill, object(s), target(s), goal."""
        skills, objs, targets = [], [], []
        for atom in self.goal:
            pred = atom[0].lower()
            skills.append(_SKILLS.get(pred, pred))
            args = list(atom[1:])
            if pred in ("on", "in") and len(args) == 2:
                objs.append(self._category(args[0]))
                targets.append(self._category(args[1]))
            elif args:
                objs.append(self._category(args[0]))
        uniq = lambda xs: ",".join(dict.fromkeys(xs))  # noqa: E731
        return {"skill": uniq(skills), "object": uniq(objs), "target": uniq(targets),
                "goal": " ".join(_flat([a[0], *a[1:]]) for a in self.goal)}

    def _category(self, name: str) -> str:
        """'akita_black_bowl_1' -> 'akita_black_bowl'; 'wooden_cabinet_1_top_region' ->
        'wooden_cabinet.top_region' (a region of an instance keeps the region's name)."""
        every = {**self.fixtures, **self.objects}
        if name in every:
            return every[name]
        for inst in sorted(every, key=len, reverse=True):
            if name.startswith(inst + "_"):
                return f"{every[inst]}.{name[len(inst) + 1:]}"
        return name

    def scene_signature(self) -> str:
        """What is on the table (categories of fixtures and objects), independent of the goal."""
        return "|".join(sorted(self.fixtures.values())) + "||" + "|".join(sorted(self.objects.values()))


def read_bddl(path: str | Path) -> BddlTask:
    """Parse a LIBERO BDDL problem file; BenchError naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"LIBERO task file {path} is missing from the installed package")
    try:
        tree = _parse(path.read_text(encoding="utf-8"))
        (define,) = [e for e in tree if isinstance(e, list) and e and e[0] == "define"]
        sections = {e[0]: e[1:] for e in define[1:] if isinstance(e, list) and e and isinstance(e[0], str)}
        language = " ".join(sections.get(":language", []))
        goal_expr = sections.get(":goal", [[]])[0]
        atoms = goal_expr[1:] if goal_expr and str(goal_expr[0]).lower() == "and" else [goal_expr]
        goal = tuple(tuple(a) for a in atoms if a and all(isinstance(t, str) for t in a))
    except (ValueError, IndexError, TypeError) as e:
        raise BenchError(f"LIBERO task file {path} is malformed: {e}") from e
    if not language:
        raise BenchError(f"LIBERO task file {path} has no (:language ...) text")
    return BddlTask(path=path, language=" ".join(language.split()),
                    objects=_typed_names(sections.get(":objects", [])),
                    fixtures=_typed_names(sections.get(":fixtures", [])), goal=goal)
