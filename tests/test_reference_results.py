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
