"""notebooks/generalization_gaps.ipynb runs headless on a small store written here, and its gap
numbers are the ones `apt-bench compare` computes from the same store."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from apt.eval import compare as cmp
from apt.eval.store import EpisodeRecord, Store, episode_key, read_episodes, sha256_text

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "generalization_gaps.ipynb"
SPLITS = {"seen": ("canonical", 0.8), "paraphrased": ("synonym", 0.5), "compositional": ("new-pair", 0.3),
          "blank": ("control", 0.05)}


def _write_store(path: Path) -> None:
    rng = np.random.default_rng(0)
    with Store(path) as store:
        for policy, scale in (("apt_pi0", 1.0), ("baseline_pi0", 0.7)):
            for split, (axis, p) in SPLITS.items():
                for task in ("place-red-bowl", "stack-red-green", "push-blue-left"):
                    for seed in range(6):
                        instr = f"{split} {task}"
                        ident = dict(policy_id=policy, checkpoint_sha256="c" * 64, suite="tabletop",
                                     suite_version="1", task_id=task, split_key=split,
                                     instruction_id=f"{split}-{task}", instruction_sha256=sha256_text(instr),
                                     seed=seed)
                        store.insert(EpisodeRecord(
                            key=episode_key(**ident), run_id=f"{policy}-{split}", split=split, split_sha256="f" * 64,
                            instruction=instr, axis=axis, episode_index=seed,
                            success=bool(rng.random() < p * scale), steps=30, wall_s=0.1, error="",
                            started="2026-01-01T00:00:00", finished="2026-01-01T00:00:01", video="",
                            **{k: v for k, v in ident.items() if k != "split_key"}, split_key=split))


@pytest.mark.slow
def test_notebook_executes_and_reports_the_compare_gaps(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    store, figures = tmp_path / "store.sqlite", tmp_path / "figures"
    _write_store(store)
    monkeypatch.setenv("APT_BENCH_STORE", str(store))
    monkeypatch.setenv("APT_BENCH_FIGURES", str(figures))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    for name in ("success_and_gaps.png", "gap_heatmap.png", "success_by_axis.png"):
        assert (figures / name).stat().st_size > 1000, name
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"{len(read_episodes(store))} episodes" in text
    gap = cmp.tables(read_episodes(store))["gap"].set_index(["policy", "split"])
    # The printed table carries compare's gaps (rounded to 3 places) for every policy and OOD split.
    for (policy, split), row in gap.iterrows():
        line = next(ln for ln in text.splitlines() if ln.split()[:2] == [policy, split])
        assert f"{round(row['gap'], 3):.3f}".rstrip("0").rstrip(".") in line or f"{row['gap']:.3f}" in line, line
