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
    from apt.training.data import generate_demos

    out = tmp_path_factory.mktemp("demos") / "tabletop"
    generate_demos(suite, out, episodes_per_task=2, workers=0, seed=0, image_size=32, tasks=TINY_DEMO_TASKS,
                   cameras=("front", "wrist"), progress=False)
    return out
