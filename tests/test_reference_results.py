"""The committed references (tabletop, LIBERO-Goal): tables regenerate from the committed store
exactly, and every stored episode comes from a checkpoint shipped beside it (same sha256)."""

import json
from pathlib import Path

import pytest

from apt.eval import compare as cmp
from apt.eval.store import read_episodes
from apt.checkpoints import checkpoint_sha256

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "tabletop"
CKPTS = ROOT / "checkpoints" / "tabletop"
# (results folder, checkpoints folder, the tables committed there)
REFERENCES = {"tabletop": (RESULTS, CKPTS, ("results.md", "results.csv")),
              "libero": (ROOT / "results" / "libero", ROOT / "checkpoints" / "libero_goal", ("results.md",))}


def _reference(name: str) -> tuple[Path, Path, tuple[str, ...]]:
    results, ckpts, tables = REFERENCES[name]
    if not (results / "store.sqlite").is_file():
        pytest.skip(f"no committed {name} reference store")
    return results, ckpts, tables


@pytest.mark.parametrize("name", list(REFERENCES))
def test_committed_tables_regenerate_from_the_store(tmp_path, name):
    results, _, tables = _reference(name)
    for table in tables:
        out = tmp_path / table
        fmt = out.suffix.lstrip(".")
        assert cmp.compare(str(results / "store.sqlite"), fmt=fmt, out=str(out), versus="baseline_pi0") == 0
        assert out.read_text() == (results / table).read_text(), \
            f"{table} is stale: regenerate it ({results.relative_to(ROOT)}/README.md)"


@pytest.mark.parametrize("name", list(REFERENCES))
def test_stored_episodes_come_from_the_shipped_checkpoints(name):
    results, ckpts, _ = _reference(name)
    manifest = json.loads((ckpts / "MANIFEST.json").read_text())["checkpoints"]
    df = read_episodes(results / "store.sqlite")
    for policy, sha in df.groupby("policy_id")["checkpoint_sha256"].unique().items():
        assert len(sha) == 1, f"{policy}: episodes from several checkpoints"
        assert manifest[policy]["sha256"] == sha[0] == checkpoint_sha256(ckpts / policy)
        assert manifest[policy]["size_bytes"] <= 8_000_000


SEED_STORE = RESULTS / "seeds.sqlite"
SEED_SPLITS = ["seen", "paraphrased", "unseen", "compositional"]
SEEDS = (0, 1, 2)


@pytest.mark.skipif(not SEED_STORE.is_file(), reason="no committed training-seed store")
def test_training_seed_table_regenerates_from_shipped_seed_checkpoints(tmp_path):
    """results/tabletop/seeds.md: apt_pi0 and baseline_pi0 (front camera, the first reference recipe)
    over training seeds 0, 1, 2 (checkpoints/tabletop/seeds/seed<N>), on the same episodes."""
    out = tmp_path / "seeds.md"
    assert cmp.compare([str(SEED_STORE)], policies=["apt_pi0", "baseline_pi0"], splits=SEED_SPLITS, out=str(out),
                       versus="baseline_pi0", across_checkpoints=True) == 0
    assert out.read_text() == (RESULTS / "seeds.md").read_text(), "seeds.md is stale: regenerate it (results/tabletop/README.md)"
    df = read_episodes(SEED_STORE)
    main = json.loads((CKPTS / "MANIFEST.json").read_text())["checkpoints"]
    for policy in ("apt_pi0", "baseline_pi0"):
        shas = {json.loads((CKPTS / "seeds" / f"seed{s}" / "MANIFEST.json").read_text())["checkpoints"][policy]["sha256"]
                for s in SEEDS}
        assert set(df.loc[df["policy_id"] == policy, "checkpoint_sha256"]) == shas
        assert len(shas) == len(SEEDS) and main[policy]["sha256"] not in shas
        for s in SEEDS:
            d = CKPTS / "seeds" / f"seed{s}" / policy
            config = json.loads((d / "config.json").read_text())
            assert checkpoint_sha256(d) in shas and config["recipe"]["seed"] == s
            assert config["observation_spec"]["cameras"] == ["front"]
        seeded = df[(df["policy_id"] == policy) & df["split"].isin(SEED_SPLITS)]
        cells = seeded.groupby(["checkpoint_sha256", "split"]).size()
        assert set(cells.index.get_level_values("split")) == set(SEED_SPLITS) and cells.min() >= 240
