"""Results store: idempotent inserts, keys, exports, unwritable paths."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from apt.eval.store import (EpisodeRecord, Store, episode_key, load_export, read_episodes,  # noqa: E402
                            sha256_text)
from benchmarks.base import BenchError  # noqa: E402


def _record(seed: int = 0, **kw) -> EpisodeRecord:
    ident = dict(policy_id="oracle", checkpoint_sha256="", suite="stub", suite_version="1",
                 task_id="reach-a", split_key="seen", instruction_id="seen-a",
                 instruction_sha256=sha256_text("go to a"), seed=seed)
    base = dict(key=episode_key(**ident), run_id="r1", split="seen", split_sha256="f" * 64,
                instruction="go to a", axis="canonical", episode_index=seed, success=True, steps=7,
                wall_s=0.25, error="", started="2026-01-01T00:00:00", finished="2026-01-01T00:00:01",
                video="", **{k: v for k, v in ident.items() if k != "split_key"}, split_key="seen")
    base.update(kw)
    return EpisodeRecord(**base)


def test_key_depends_on_every_identity_field():
    ident = dict(policy_id="p", checkpoint_sha256="c", suite="s", suite_version="1", task_id="t",
                 split_key="seen", instruction_id="i", instruction_sha256="h", seed=3)
    k = episode_key(**ident)
    assert k == episode_key(**ident) and len(k) == 64
    for field, other in [("policy_id", "q"), ("checkpoint_sha256", "d"), ("suite", "x"),
                         ("suite_version", "2"), ("task_id", "u"), ("split_key", "paraphrased"),
                         ("instruction_id", "j"), ("instruction_sha256", "g"), ("seed", 4)]:
        assert episode_key(**{**ident, field: other}) != k, field
    # No field can bleed into its neighbour.
    assert episode_key(**{**ident, "policy_id": "p", "checkpoint_sha256": "c"}) != episode_key(
        **{**ident, "policy_id": "pc", "checkpoint_sha256": ""})


def test_same_record_twice_gives_one_row(tmp_path):
    path = tmp_path / "r.sqlite"
    with Store(path) as db:
        assert db.insert(_record(0)) is True
        assert db.insert(_record(0)) is False
        assert db.insert(replace(_record(0), success=False, run_id="r2")) is False  # first write wins
        assert db.insert(_record(1)) is True
        assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.done_keys([_record(0).key, _record(5).key]) == {_record(0).key}
    df = read_episodes(path)
    assert len(df) == 2 and df["key"].is_unique
    assert df.set_index("seed").loc[0, "success"] == True  # noqa: E712


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_round_trip(tmp_path, suffix):
    with Store(tmp_path / "r.sqlite") as db:
        db.insert(_record(0))
        db.insert(_record(1, success=False, error="RuntimeError: boom", instruction=""))
        db.insert(_record(2, instruction='say "hi", then\nstop'))
        original = db.episodes()
        out = db.export(tmp_path / f"episodes{suffix}")
    back = load_export(out)
    pd.testing.assert_frame_equal(original.reset_index(drop=True), back[original.columns].reset_index(drop=True),
                                  check_dtype=False)
    assert set(back["instruction"]) == {"go to a", "", 'say "hi", then\nstop'}


def test_unwritable_store_is_a_bench_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(BenchError, match="not writable"):
        Store(blocker / "results.sqlite")
    with pytest.raises(BenchError, match="not writable"):
        Store(tmp_path)  # a directory


def test_export_rejects_unknown_suffix(tmp_path):
    with Store(tmp_path / "r.sqlite") as db:
        with pytest.raises(BenchError, match="csv or .parquet"):
            db.export(tmp_path / "x.json")


def test_store_from_an_older_version_gains_new_columns(tmp_path):
    """A results file written before `timing_json` existed still opens and takes new episodes."""
    import sqlite3
    from dataclasses import fields

    from apt.eval.store import EpisodeRecord, Store

    path = tmp_path / "old.sqlite"
    old_cols = [f.name for f in fields(EpisodeRecord) if f.name != "timing_json"]
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE episodes ({', '.join(c + (' PRIMARY KEY' if c == 'key' else '') for c in old_cols)})")
        conn.execute("INSERT INTO episodes (key, success) VALUES ('old', 1)")
    store = Store(path)
    try:
        cols = {r[1] for r in store.conn.execute("PRAGMA table_info(episodes)")}
        assert "timing_json" in cols
        assert store.conn.execute("SELECT timing_json FROM episodes WHERE key='old'").fetchone() == ("{}",)
    finally:
        store.close()
