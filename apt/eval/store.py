"""The results store: SQLite in WAL mode, written only by the driver process.

Tables
- `episodes`: one row per episode, primary key `key` = sha256 of the episode's identity (ARCHITECTURE.md §3:
  policy id, checkpoint sha256, suite, suite version, task_id, split, instruction id, instruction
  sha256, seed). Inserts are `INSERT OR IGNORE` and committed one episode at a time, so a rerun skips
  done episodes, a crash loses at most the episodes in flight, and two runs never double-count.
- `runs`: the protocol settings of each run (suite version, max/replan steps, image size, cameras,
  seeds, episodes, policy id + checkpoint sha256, apt-bench version, git SHA, command line).

Readers (compare, notebooks) use `read_episodes` (pandas); exports go to CSV or Parquet.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from benchmarks.base import BenchError

KEY_FIELDS = ("policy_id", "checkpoint_sha256", "suite", "suite_version", "task_id", "split_key",
              "instruction_id", "instruction_sha256", "seed")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def episode_key(policy_id: str, checkpoint_sha256: str, suite: str, suite_version: str, task_id: str,
                split_key: str, instruction_id: str, instruction_sha256: str, seed: int, protocol: str = "") -> str:
    """sha256 of the episode identity (a canonical JSON list, so no field can bleed into another).

    `protocol` (canonical JSON of the rollout settings that change outcomes: replan steps, image
    size, cameras, step limit) is part of the identity, so a re-run with other settings runs its
    own episodes instead of silently reusing the old ones.
    """
    ident = [policy_id, checkpoint_sha256, suite, str(suite_version), task_id, split_key,
             instruction_id, instruction_sha256, int(seed)] + ([protocol] if protocol else [])
    return sha256_text(json.dumps(ident, ensure_ascii=False, separators=(",", ":")))


@dataclass(frozen=True)
class EpisodeRecord:
    """One row of `episodes` (column order = field order)."""

    key: str
    run_id: str
    policy_id: str
    checkpoint_sha256: str
    suite: str
    suite_version: str
    task_id: str
    split: str  # display name (the split file's `split` field, or the control split's name)
    split_key: str  # what the key uses: the split name, or "sha256:<content hash>" for a user file
    split_sha256: str
    instruction_id: str
    instruction_sha256: str
    instruction: str  # the exact string the policy received
    axis: str
    seed: int
    episode_index: int
    success: bool
    steps: int
    wall_s: float
    error: str
    started: str
    finished: str
    video: str
    timing_json: str = "{}"  # per-episode inference timing (policy call; server vs round trip if remote)


_SQL_TYPES = {"str": "TEXT", "int": "INTEGER", "float": "REAL", "bool": "INTEGER"}  # annotations are strings
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(EpisodeRecord))

RUN_COLUMNS: tuple[str, ...] = (
    "run_id", "started", "finished", "policy_id", "checkpoint_sha256", "suite", "suite_version",
    "split", "split_sha256", "episodes", "first_seed", "max_steps", "replan_steps", "image_size",
    "cameras", "workers", "apt_bench_version", "git_sha", "command", "settings_json")


def _schema() -> str:
    cols = []
    for f in fields(EpisodeRecord):
        typ = _SQL_TYPES[str(f.type)]
        cols.append(f"{f.name} {typ}" + (" PRIMARY KEY" if f.name == "key" else ""))
    episodes = f"CREATE TABLE IF NOT EXISTS episodes ({', '.join(cols)})"
    runs = ("CREATE TABLE IF NOT EXISTS runs ("
            + ", ".join(f"{c} TEXT" + (" PRIMARY KEY" if c == "run_id" else "") for c in RUN_COLUMNS) + ")")
    return f"{episodes};\n{runs};\nCREATE INDEX IF NOT EXISTS episodes_cell ON episodes (policy_id, split);"


class Store:
    """The driver's handle on the results database (one connection, one writer)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            if self.path.is_dir():
                raise OSError(f"{self.path} is a directory")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.exists() and not os.access(self.path, os.W_OK):
                raise OSError("file is read-only")
            if not os.access(self.path.parent, os.W_OK):
                raise OSError(f"directory {self.path.parent} is not writable")
            self.conn = sqlite3.connect(str(self.path), timeout=30.0)
            self.conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across a crash of this process (not of the OS) in WAL mode.
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(_schema())
            self._add_new_columns()
            self.conn.commit()
        except (OSError, sqlite3.Error) as err:
            raise BenchError(f"results store {self.path} is not writable ({err}); pass --store with a "
                             "writable file path") from None

    def _add_new_columns(self) -> None:
        """Stores written by an older apt-bench gain columns added since (with their defaults)."""
        have = {row[1] for row in self.conn.execute("PRAGMA table_info(episodes)")}
        for f in fields(EpisodeRecord):
            if f.name not in have:
                default = "" if f.default is MISSING else " DEFAULT '" + str(f.default).replace("'", "''") + "'"
                self.conn.execute(f"ALTER TABLE episodes ADD COLUMN {f.name} {_SQL_TYPES[str(f.type)]}{default}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- writing -------------------------------------------------------------------------------
    def insert(self, record: EpisodeRecord) -> bool:
        """Insert one episode (committed at once); False if its key was already there."""
        row = tuple(getattr(record, c) for c in COLUMNS)
        row = tuple(int(v) if isinstance(v, bool) else v for v in row)
        cur = self.conn.execute(
            f"INSERT OR IGNORE INTO episodes ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            row)
        self.conn.commit()
        return cur.rowcount == 1

    def start_run(self, run: dict[str, Any]) -> None:
        values = {c: run.get(c) for c in RUN_COLUMNS}
        values = {c: (v if v is None or isinstance(v, str) else json.dumps(v)) for c, v in values.items()}
        self.conn.execute(f"INSERT OR REPLACE INTO runs ({', '.join(RUN_COLUMNS)}) VALUES "
                          f"({', '.join('?' * len(RUN_COLUMNS))})", tuple(values[c] for c in RUN_COLUMNS))
        self.conn.commit()

    def finish_run(self, run_id: str, finished: str, engine: dict[str, Any] | None = None) -> None:
        """Mark the run finished; `engine` (how the engine laid the run out: workers, episodes in
        flight, policy threads, batch sizes) joins its settings_json under "engine"."""
        if engine is not None:
            row = self.conn.execute("SELECT settings_json FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            settings = json.loads(row[0]) if row and row[0] else {}
            self.conn.execute("UPDATE runs SET settings_json = ? WHERE run_id = ?",
                              (json.dumps({**settings, "engine": engine}), run_id))
        self.conn.execute("UPDATE runs SET finished = ? WHERE run_id = ?", (finished, run_id))
        self.conn.commit()

    # --- reading -------------------------------------------------------------------------------
    def done_keys(self, keys: Iterable[str]) -> set[str]:
        """The subset of `keys` already stored."""
        keys = list(keys)
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            rows = self.conn.execute(f"SELECT key FROM episodes WHERE key IN ({', '.join('?' * len(part))})", part)
            found.update(r[0] for r in rows)
        return found

    def episodes(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT * FROM episodes", self.conn)
        df = _typed(df)
        if keys is not None:
            df = df[df["key"].isin(set(keys))]
        return df

    def runs(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM runs", self.conn)

    def export(self, path: str | os.PathLike) -> Path:
        return export(self.episodes(), path)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["success"] = df["success"].astype(bool)
    df["seed"] = df["seed"].astype("int64")
    df["episode_index"] = df["episode_index"].astype("int64")
    df["steps"] = df["steps"].astype("int64")
    df["error"] = df["error"].fillna("")
    return df


def read_episodes(path: str | os.PathLike) -> pd.DataFrame:
    """All stored episodes as a DataFrame (read-only; a missing store is a BenchError)."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"results store {path} not found; run `apt-bench run` first or pass --store")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0) as conn:
            df = pd.read_sql_query("SELECT * FROM episodes", conn)
    except sqlite3.Error as err:
        raise BenchError(f"results store {path} cannot be read ({err})") from None
    return _typed(df)


def export(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write episodes to .csv or .parquet (by suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix in (".parquet", ".pq"):
        df.to_parquet(path, index=False)
    else:
        raise BenchError(f"cannot export to {path}: use a .csv or .parquet file name")
    return path


def load_export(path: str | os.PathLike) -> pd.DataFrame:
    """Read an export back with the store's column types."""
    path = Path(path)
    if path.suffix == ".csv":
        df = pd.read_csv(path, dtype={c: str for c in ("key", "run_id", "policy_id", "checkpoint_sha256",
                                                          "suite", "suite_version", "task_id", "split",
                                                          "split_key", "split_sha256", "instruction_id",
                                                          "instruction_sha256", "instruction", "axis",
                                                          "error", "started", "finished", "video")},
                         keep_default_na=False)
    else:
        df = pd.read_parquet(path)
    return _typed(df)
