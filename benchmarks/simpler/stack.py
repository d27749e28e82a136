"""Finding and importing the SimplerEnv stacks, lazily, with messages that say how to fix them.

Two backends:
- `maniskill3`: `mani-skill` (PyPI, the `[simpler]` extra) registers the four SimplerEnv Bridge
  (WidowX) tasks on ManiSkill3 / SAPIEN 3. Needs (1) the package, (2) the Bridge assets under
  ManiSkill's asset folder (`MS_ASSET_DIR`, default ~/.maniskill/data), (3) a Vulkan driver SAPIEN
  can render with: a GPU driver, or on CPU Mesa's lavapipe >= 24.3 (Debian 12 needs
  bookworm-backports' mesa-vulkan-drivers; `bash install.sh --simpler` does it).
- `simpler_env`: the original SimplerEnv (Google Robot and Bridge tasks on ManiSkill2_real2sim),
  installed by the user from its repository; only detected here.

Non-obvious behaviour:
- ManiSkill reads `MS_ASSET_DIR` when `mani_skill` is first imported: set it before.
- `MS_SKIP_ASSET_DOWNLOAD_PROMPT=1` is set here (unless the user set it) so a missing asset raises
  instead of prompting on stdin; we check the assets first and name the download command.
- Nothing here runs at `import benchmarks.simpler`.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
from pathlib import Path
from typing import Any

from benchmarks.base import BenchError

INSTALL_HINT = ("install it with `bash install.sh --simpler` (mani-skill 3.0.1 and, on Debian, Mesa's "
                "lavapipe Vulkan driver from bookworm-backports) or `pip install 'apt-bench[simpler]'`")
ASSET_HINT = ("download them with `python -m mani_skill.utils.download_asset bridge_v2_real2sim` and "
              "`python -m mani_skill.utils.download_asset widowx250s` (internet needed), or point "
              "MS_ASSET_DIR at a folder holding ManiSkill's `data/` tree with them (the repository's "
              "CI uses ../shared/simpler_assets)")
VULKAN_HINT = ("SAPIEN renders through Vulkan: on a CPU-only machine install Mesa's lavapipe >= 24.3 "
               "(`bash install.sh --simpler` enables Debian bookworm-backports and installs "
               "mesa-vulkan-drivers 25.x; Debian 12's own 22.3 fails with 'failed to find a rendering "
               "device') and export VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/lvp_icd.json")
SIMPLER_ENV_HINT = ("the original SimplerEnv is not installed: it is not on PyPI; install it from its "
                    "repository (github.com/simpler-env/SimplerEnv: `git clone --recurse-submodules`, "
                    "then `pip install -e ManiSkill2_real2sim` and `pip install -e .` in the same "
                    "environment), or use backend='maniskill3' (the four Bridge tasks, `bash install.sh "
                    "--simpler`)")
# Folders (under ManiSkill's ASSET_DIR) the Bridge tasks load.
ASSET_PARTS = ("tasks/bridge_v2_real2sim_dataset/custom", "robots/widowx")


def _dist_version(*names: str) -> str:
    """The installed version of the first distribution found among `names`, else "not installed"."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def maniskill_version() -> str:
    return _dist_version("mani-skill")


def simpler_env_version() -> str:
    return _dist_version("simpler_env", "simpler-env")


def have_maniskill() -> bool:
    return _importable("mani_skill")


def asset_dir() -> Path:
    """ManiSkill's asset folder as it will be (or was) resolved: MS_ASSET_DIR/data or ~/.maniskill/data."""
    try:
        import sys

        if "mani_skill" in sys.modules:
            return Path(sys.modules["mani_skill"].ASSET_DIR)
    except AttributeError:
        pass
    root = os.environ.get("MS_ASSET_DIR", str(Path.home() / ".maniskill"))
    return Path(root) / "data"


def missing_assets() -> list[str]:
    root = asset_dir()
    return [str(root / p) for p in ASSET_PARTS if not (root / p).is_dir()]


def vulkan_icds() -> list[str]:
    """Vulkan driver manifests the loader will see (VK_ICD_FILENAMES wins when set)."""
    env = os.environ.get("VK_ICD_FILENAMES") or os.environ.get("VK_DRIVER_FILES")
    if env:
        return [p for p in env.split(os.pathsep) if p]
    found: list[str] = []
    for d in ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d"):
        found += sorted(glob.glob(f"{d}/*.json"))
    return found


def import_maniskill() -> Any:
    """`mani_skill.envs` imported (registers the Bridge tasks); BenchError naming the fix otherwise."""
    os.environ.setdefault("MS_SKIP_ASSET_DOWNLOAD_PROMPT", "1")
    if not have_maniskill():
        raise BenchError(f"the simpler suite (backend maniskill3) needs ManiSkill3, which is not "
                         f"installed: {INSTALL_HINT}")
    missing = missing_assets()
    if missing:
        raise BenchError(f"SimplerEnv Bridge assets are missing ({', '.join(missing)}): {ASSET_HINT}")
    if not vulkan_icds():
        raise BenchError(f"no Vulkan driver found (no ICD manifest under /usr/share/vulkan/icd.d and "
                         f"VK_ICD_FILENAMES unset): {VULKAN_HINT}")
    try:
        import gymnasium  # noqa: F401
        import mani_skill
        import mani_skill.envs  # noqa: F401  (registers the tasks)
    except ImportError as e:
        raise BenchError(f"ManiSkill3 is installed but cannot be imported ({e}): {INSTALL_HINT}") from e
    return mani_skill


def have_simpler_env() -> bool:
    return _importable("simpler_env")


def import_simpler_env() -> Any:
    if not have_simpler_env():
        raise BenchError(SIMPLER_ENV_HINT)
    try:
        import simpler_env
    except ImportError as e:
        raise BenchError(f"simpler_env is installed but cannot be imported ({e}); "
                         f"{SIMPLER_ENV_HINT}") from e
    return simpler_env


def render_error(task_id: str, err: Exception) -> BenchError:
    """A BenchError for an env that could not be created, naming the likely cause."""
    text = f"{type(err).__name__}: {err}"
    hint = VULKAN_HINT if ("render" in text.lower() or "vulkan" in text.lower()) else (
        f"check the assets ({ASSET_HINT}) and the install ({INSTALL_HINT})")
    return BenchError(f"cannot create the SimplerEnv env for {task_id} ({text}); "
                      f"VK_ICD_FILENAMES={os.environ.get('VK_ICD_FILENAMES')!r}, "
                      f"MS_ASSET_DIR={os.environ.get('MS_ASSET_DIR')!r}. {hint}")

