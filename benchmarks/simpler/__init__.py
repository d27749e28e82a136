"""SimplerEnv behind the Suite protocol (extra `[simpler]`): the four Bridge (WidowX) tasks on
ManiSkill3, offline with local assets.

Entry point: `SimplerSuite(backend="maniskill3")`, and `simpler()` for the registry. Importing
this package imports no simulator: ManiSkill3 / SAPIEN are imported in the process that calls
`make_env()`.

Set-up: `bash install.sh --simpler` (mani-skill 3.0.1; on Debian 12, Mesa's lavapipe from
bookworm-backports for CPU rendering), `VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/lvp_icd.json` on
CPU-only machines, and the Bridge assets under MS_ASSET_DIR (ManiSkill downloads them; offline,
point MS_ASSET_DIR at a copy). Modules: tasks.py (task table, SimplerEnv's evaluation settings),
env.py (observation and action mapping), expert.py (scripted expert), stack.py (imports, errors).
"""

from __future__ import annotations

from benchmarks.simpler.suite import SimplerSuite
from benchmarks.simpler.tasks import BRIDGE_TASKS, EVAL_SETTINGS


def simpler(**kw) -> SimplerSuite:
    return SimplerSuite(**kw)


__all__ = ["SimplerSuite", "simpler", "BRIDGE_TASKS", "EVAL_SETTINGS"]
