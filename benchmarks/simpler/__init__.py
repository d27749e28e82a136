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

The original SimplerEnv (`simpler_env` on ManiSkill2_real2sim, installed by the user from
github.com/simpler-env/SimplerEnv in its own environment): `simpler(backend="simpler_env")`
(suite `simpler_env`) for the Bridge tasks and `simpler_google()` (suite `simpler_google`) for the Google Robot tasks;
modules google_robot.py (task table), simpler_env_backend.py (env), simpler_env_suite.py (suite).
"""

from __future__ import annotations

from benchmarks.simpler.simpler_env_suite import SimplerEnvSuite
from benchmarks.simpler.suite import SimplerSuite
from benchmarks.simpler.tasks import BRIDGE_TASKS, EVAL_SETTINGS


def simpler(backend: str = "maniskill3", sim_backend: str = "cpu") -> SimplerSuite | SimplerEnvSuite:
    """The Bridge (WidowX) tasks: on ManiSkill3 (default), or on the original SimplerEnv
    (backend="simpler_env", user-installed; no compositional tasks, no scripted expert there)."""
    if backend == "simpler_env":
        return SimplerEnvSuite(robot="widowx", name="simpler")
    return SimplerSuite(backend=backend, sim_backend=sim_backend)


def simpler_env_bridge() -> SimplerEnvSuite:
    """The Bridge tasks on the original SimplerEnv (suite `simpler_env`)."""
    return simpler(backend="simpler_env")


def simpler_google(**kw) -> SimplerEnvSuite:
    """SimplerEnv's Google Robot tasks (original SimplerEnv, user-installed; simpler_env_suite.py)."""
    return SimplerEnvSuite(robot="google_robot", **kw)


__all__ = ["SimplerSuite", "SimplerEnvSuite", "simpler", "simpler_env_bridge", "simpler_google",
           "BRIDGE_TASKS", "EVAL_SETTINGS"]
