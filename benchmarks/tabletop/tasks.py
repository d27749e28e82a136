"""The tabletop task taxonomy: skills x objects x targets, and which combinations are held out.

Every scene holds every object and every receptacle, so the image never says which task is asked;
only the instruction does. Compositional held-out tasks are chosen so that every object, target
and skill still appears in some training task.
"""

from __future__ import annotations

from benchmarks.base import BenchError, TaskSpec

OBJECTS: tuple[str, ...] = ("red", "green", "blue", "yellow")  # coloured graspable blocks
RECEPTACLES: tuple[str, ...] = ("bowl", "plate", "box")  # neutral-coloured targets
SIDES: tuple[str, ...] = ("left", "right")  # as seen from the front camera
SKILLS: tuple[str, ...] = ("place", "stack", "push")

# Preposition per receptacle, used by the canonical template.
_PREPOSITION = {"bowl": "in", "plate": "on", "box": "in"}

# (skill, object, target) combinations never shown in training demonstrations.
HELD_OUT: frozenset[tuple[str, str, str]] = frozenset({
    ("place", "red", "bowl"),
    ("place", "green", "plate"),
    ("place", "blue", "box"),
    ("stack", "red", "blue"),
    ("stack", "green", "yellow"),
    ("stack", "yellow", "red"),
    ("push", "blue", "left"),
    ("push", "yellow", "right"),
})

MAX_STEPS: dict[str, int] = {"place": 80, "stack": 80, "push": 60}


def task_id(skill: str, obj: str, target: str) -> str:
    return f"{skill}-{obj}-{target}"


def canonical_instruction(skill: str, obj: str, target: str) -> str:
    """The training template a task's demonstrations are labelled with."""
    if skill == "place":
        return f"put the {obj} block {_PREPOSITION[target]} the {target}"
    if skill == "stack":
        return f"stack the {obj} block on the {target} block"
    if skill == "push":
        return f"push the {obj} block to the {target}"
    raise BenchError(f"unknown tabletop skill {skill!r}; skills are {list(SKILLS)}")


def _combinations() -> list[tuple[str, str, str]]:
    combos = [("place", o, r) for o in OBJECTS for r in RECEPTACLES]
    combos += [("stack", o, b) for o in OBJECTS for b in OBJECTS if b != o]
    combos += [("push", o, s) for o in OBJECTS for s in SIDES]
    return combos


def all_tasks() -> list[TaskSpec]:
    """All tabletop tasks in a fixed order (the order defines nothing but display)."""
    return [
        TaskSpec(
            task_id=task_id(s, o, t),
            instruction=canonical_instruction(s, o, t),
            max_steps=MAX_STEPS[s],
            attributes={"skill": s, "object": o, "target": t},
            train=(s, o, t) not in HELD_OUT,
        )
        for s, o, t in _combinations()
    ]


def parse_task_id(tid: str) -> tuple[str, str, str]:
    """'stack-red-green' -> ('stack', 'red', 'green'), with a clear error for unknown ids."""
    parts = tid.split("-")
    if len(parts) == 3 and tuple(parts) in set(_combinations()):
        return parts[0], parts[1], parts[2]
    known = ", ".join(t.task_id for t in all_tasks()[:4])
    raise BenchError(f"unknown tabletop task id {tid!r}; ids look like '<skill>-<object>-<target>', "
                     f"e.g. {known} (see `apt-bench splits --suite tabletop`)")
