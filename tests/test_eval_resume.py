"""Resume: a run of 120 episodes is SIGKILLed at a random point and rerun with the same command; the
store must then hold exactly the expected keys, each once."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from apt.eval import runner  # noqa: E402
from apt.eval.store import episode_key, sha256_text  # noqa: E402
from tests import stub_suite as stub  # noqa: E402

EPISODES = 40  # x 3 seen entries = 120 episodes


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM episodes").fetchone()[0]
    except sqlite3.OperationalError:  # table not created yet
        return 0


def test_sigkill_then_rerun_gives_exactly_the_expected_keys(tmp_path):
    split = stub.write_splits(tmp_path / "splits")["seen"]
    db = tmp_path / "results.sqlite"
    cmd = [sys.executable, "-m", "apt.cli", "run", "--policy", "oracle", "--split", str(split),
           "--suite", "tests.stub_suite:SlowStubSuite", "--episodes", str(EPISODES), "--workers", "0",
           "--store", str(db)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    kill_after = random.Random().randint(5, 100)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _count(db) < kill_after and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    killed_at = _count(db)
    assert proc.returncode == -signal.SIGKILL, stderr
    assert kill_after <= killed_at < 3 * EPISODES, (kill_after, killed_at)

    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{killed_at} already stored, {3 * EPISODES - killed_at} to run" in rerun.stderr

    file_sha = hashlib.sha256(split.read_bytes()).hexdigest()
    protocol = runner.protocol_key(runner.plan_run(policy="oracle", split=str(split), suite=cmd[cmd.index("--suite") + 1],
                                                   episodes=EPISODES)[3].settings)
    expected = {episode_key("oracle", "", "stub", "1", task, f"sha256:{file_sha}", eid, sha256_text(text), seed,
                            protocol)
                for eid, task, text, _ in stub.SPLIT_ENTRIES["seen"] for seed in range(EPISODES)}
    with sqlite3.connect(db) as conn:
        keys = [r[0] for r in conn.execute("SELECT key FROM episodes")]
        runs = conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert len(keys) == len(set(keys)) == 3 * EPISODES  # none twice
    assert set(keys) == expected  # none missing, none extra
    assert runs == 2
