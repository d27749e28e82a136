"""Which demonstration format a path holds, and `load_demos`: the one reader training uses.

Formats: apt-bench's own directories (apt/demos/native.py, memory-mapped), LIBERO HDF5 files
(apt/demos/libero_hdf5.py) and LeRobot v2.x datasets (apt/demos/lerobot.py), both decoded into
memory once. Every reader returns the same `Demos` object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from apt.demos.lerobot import LEROBOT, load_lerobot
from apt.demos.libero_hdf5 import HDF5_SUFFIXES, LIBERO_HDF5, hdf5_files, load_libero_hdf5
from apt.demos.native import FORMAT, META_FILE, Demos, load_native
from benchmarks.base import BenchError, Suite


def detect_format(path: str | Path) -> str:
    """Which demonstration format `path` holds: native.FORMAT ("apt-bench-demos"), "libero_hdf5"
    or "lerobot".

    A LIBERO .hdf5 file or a directory holding .hdf5 files -> "libero_hdf5"; a directory with
    meta/info.json -> "lerobot"; any other directory, or a path that does not exist, -> the
    apt-bench format, whose reader then says what is missing. An existing file of another kind
    raises BenchError.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in HDF5_SUFFIXES:
            return LIBERO_HDF5
        raise BenchError(f"{path} is a file, not a demonstration dataset: pass an apt-bench demos "
                         f"directory, a LIBERO .hdf5 file (or a directory of them), or a LeRobot "
                         f"dataset root (the directory holding meta/info.json)")
    if path.is_dir():
        if (path / META_FILE).is_file():
            return FORMAT
        if (path / "meta" / "info.json").is_file():
            return LEROBOT
        if hdf5_files(path):
            return LIBERO_HDF5
    return FORMAT


def load_external(path: str | Path, fmt: str, *, suite: Suite | None = None, **options: Any) -> Demos:
    """Load a non-apt-bench dataset of format `fmt` (from `detect_format`); `options` go to the loader."""
    loaders: dict[str, Callable[..., Demos]] = {LIBERO_HDF5: load_libero_hdf5, LEROBOT: load_lerobot}
    if fmt not in loaders:
        raise BenchError(f"unknown demonstration format {fmt!r}; formats: {FORMAT}, {', '.join(loaders)}")
    return loaders[fmt](path, suite=suite, **options)


def load_demos(path: str | Path, suite: Suite | None = None, suite_version: str | None = None,
               *, verify: bool = False, **options: Any) -> Demos:
    """Open a demonstration dataset: an apt-bench directory (images memory-mapped, nothing
    decoded), or a LIBERO .hdf5 file / directory or a LeRobot v2.x root (decoded into memory by
    their readers, which `options` configure; see `detect_format`).

    `suite` / `suite_version`, when given, must match what the data was made with (external data
    records no suite version; its tasks are checked against the suite's where it can be). `verify`
    recomputes `data_hash` (reads every image once).
    """
    fmt = detect_format(path)
    if fmt != FORMAT:
        return load_external(path, fmt, suite=suite, **options)
    if options:
        raise BenchError(f"{path} is an apt-bench demonstration directory: options "
                         f"{sorted(options)} apply to LIBERO / LeRobot datasets only")
    return load_native(path, suite, suite_version, verify=verify)
