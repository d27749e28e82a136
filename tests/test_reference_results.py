"""The committed tabletop reference: tables regenerate from the committed store exactly, and every
stored episode comes from a checkpoint shipped in checkpoints/tabletop (same sha256)."""

import json
from pathlib import Path

import pytest

from apt.eval import compare as cmp
from apt.eval.store import read_episodes
from apt.training.checkpoints import checkpoint_sha256

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results" / "tabletop"
CKPTS = ROOT / "checkpoints" / "tabletop"

pytestmark = pytest.mark.skipif(not (RESULTS / "store.sqlite").is_file(), reason="no committed reference store")


def test_committed_tables_regenerate_from_the_store(tmp_path):
    for fmt, name in (("md", "results.md"), ("csv", "results.csv")):
        out = tmp_path / name
        assert cmp.compare(str(RESULTS / "store.sqlite"), fmt=fmt, out=str(out), versus="baseline_pi0") == 0
        assert out.read_text() == (RESULTS / name).read_text(), f"{name} is stale: regenerate it (results/tabletop/README.md)"


def test_stored_episodes_come_from_the_shipped_checkpoints():
    manifest = json.loads((CKPTS / "MANIFEST.json").read_text())["checkpoints"]
    df = read_episodes(RESULTS / "store.sqlite")
    for policy, sha in df.groupby("policy_id")["checkpoint_sha256"].unique().items():
        assert len(sha) == 1, f"{policy}: episodes from several checkpoints"
        assert manifest[policy]["sha256"] == sha[0] == checkpoint_sha256(CKPTS / policy)
        assert manifest[policy]["size_bytes"] <= 8_000_000


SEED_STORE = RESULTS / "seeds.sqlite"
SEED_SPLITS = ["seen", "paraphrased", "unseen", "compositional"]


@pytest.mark.skipif(not SEED_STORE.is_file(), reason="no committed training-seed store")
def test_training_seed_table_regenerates_from_shipped_seed_checkpoints(tmp_path):
    """results/tabletop/seeds.md: apt_pi0 and baseline_pi0 over training seeds 0 (the shipped
    reference) and 1, 2 (checkpoints/tabletop/seeds/seed<N>), on the same episodes."""
    out = tmp_path / "seeds.md"
    assert cmp.compare([str(RESULTS / "store.sqlite"), str(SEED_STORE)], policies=["apt_pi0", "baseline_pi0"],
                       splits=SEED_SPLITS, out=str(out), versus="baseline_pi0", across_checkpoints=True) == 0
    assert out.read_text() == (RESULTS / "seeds.md").read_text(), "seeds.md is stale: regenerate it (results/tabletop/README.md)"
    df = read_episodes(SEED_STORE)
    main = json.loads((CKPTS / "MANIFEST.json").read_text())["checkpoints"]
    for policy in ("apt_pi0", "baseline_pi0"):
        shas = {json.loads((CKPTS / "seeds" / f"seed{s}" / "MANIFEST.json").read_text())["checkpoints"][policy]["sha256"]
                for s in (1, 2)}
        assert set(df.loc[df["policy_id"] == policy, "checkpoint_sha256"]) == shas
        assert len(shas) == 2 and main[policy]["sha256"] not in shas
        for s in (1, 2):
            d = CKPTS / "seeds" / f"seed{s}" / policy
            assert checkpoint_sha256(d) in shas and json.loads((d / "config.json").read_text())["recipe"]["seed"] == s
        cells = df[df["policy_id"] == policy].groupby(["checkpoint_sha256", "split"]).size()
        assert set(cells.index.get_level_values("split")) == set(SEED_SPLITS) and cells.min() >= 240
