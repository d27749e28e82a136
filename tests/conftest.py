"""Shared fixtures: the real tabletop suite and a tiny demonstration set made with its expert."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_DEMO_TASKS = ("place-red-plate", "push-green-left")


@pytest.fixture(scope="session")
def suite():
    from apt.registry import get_suite

    return get_suite("tabletop")


@pytest.fixture(scope="session")
def demos_dir(tmp_path_factory, suite) -> Path:
    """2 expert episodes of two training tasks at 32 px, front and wrist cameras (seconds to make)."""
    from apt.demos.generate import generate_demos

    out = tmp_path_factory.mktemp("demos") / "tabletop"
    generate_demos(suite, out, episodes_per_task=2, workers=0, seed=0, image_size=32, tasks=TINY_DEMO_TASKS,
                   cameras=("front", "wrist"), progress=False)
    return out


@pytest.fixture
def run_episodes(tmp_path, capsys):
    """`apt-bench run ... --workers 0` into a fresh store -> (episodes DataFrame, printed table)."""
    from apt.cli import main
    from apt.eval.store import read_episodes

    def run(*args: str):
        store = tmp_path / "run.sqlite"
        assert main(["run", *args, "--workers", "0", "--store", str(store)]) == 0
        return read_episodes(store), capsys.readouterr().out

    return run


def assert_imports_lazily(setup: str, heavy: tuple[str, ...]) -> None:
    """Run `setup` in a fresh interpreter and check none of the `heavy` modules got imported."""
    import subprocess
    import sys

    code = f"import sys; {setup}; bad = [m for m in {heavy!r} if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)
