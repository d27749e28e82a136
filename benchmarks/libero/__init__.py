"""LIBERO behind the Suite protocol (extra `[libero]`): real LIBERO, offline, from PyPI.

Entry point: `LiberoSuite(benchmark="libero_goal", preset="openpi")`, and one factory per suite
for the registry (`libero_goal()`, `libero_spatial()`, `libero_object()`, `libero_10()`,
`libero_90()`). Importing this package imports no simulator: LIBERO (and robosuite, mujoco, GL)
is imported lazily, in the process that calls `tasks()` / `make_env()`.

Non-obvious behaviour (details in each module):
- LIBERO's `task.language` comes from the BDDL file *name*; the `(:language ...)` text inside the
  file can differ (LIBERO-PRO's language perturbation lives only there). The env delivers exactly
  the instruction passed to `reset`; `seen` uses task.language; `pro_language` uses the BDDL text.
- Episode i starts from the task's fixed init state i (`reset(init_state=i)`), then settle steps.
- Images are rendered at the preset's render size, rotated 180 degrees (openpi and LeRobot both
  do), then resized to the requested size. Only requested cameras are rendered.
- Some LIBERO-PRO variant suites name files the package does not ship: see `variants()`.
"""

from __future__ import annotations

from benchmarks.libero.protocol import PRESETS, LiberoProtocol, get_protocol
from benchmarks.libero.suite import LiberoSuite, pro_language_entries, variants

SUITES: tuple[str, ...] = ("libero_goal", "libero_spatial", "libero_object", "libero_10", "libero_90")
# Base suites whose LIBERO-PRO `_lan` variant ships a `pro_language` split.
PRO_LANGUAGE_SUITES: tuple[str, ...] = ("libero_goal", "libero_spatial", "libero_object", "libero_10")


def libero_goal(**kw) -> LiberoSuite:
    return LiberoSuite("libero_goal", **kw)


def libero_spatial(**kw) -> LiberoSuite:
    return LiberoSuite("libero_spatial", **kw)


def libero_object(**kw) -> LiberoSuite:
    return LiberoSuite("libero_object", **kw)


def libero_10(**kw) -> LiberoSuite:
    return LiberoSuite("libero_10", **kw)


def libero_90(**kw) -> LiberoSuite:
    return LiberoSuite("libero_90", **kw)


__all__ = ["LiberoSuite", "LiberoProtocol", "PRESETS", "get_protocol", "variants",
           "pro_language_entries", "SUITES", "PRO_LANGUAGE_SUITES", "libero_goal", "libero_spatial",
           "libero_object", "libero_10", "libero_90"]
