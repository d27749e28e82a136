"""`torchrun --nproc_per_node 2` on CPU (gloo) runs two training steps of a tiny config."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from apt.registry import get_suite
from apt.checkpoints import read_meta
from apt.demos.generate import generate_demos


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("policy,preset", [("discrete_pi0", "dummy_discrete"), ("baseline_pi0", "dummy_pi0")])
def test_torchrun_two_cpu_ranks_two_steps(tmp_path, policy, preset):
    demos = tmp_path / "demos"
    generate_demos(get_suite("tabletop"), demos, episodes_per_task=1, workers=0, seed=0, image_size=32,
                   tasks=("place-red-plate",), cameras=("front",), progress=False)
    out = tmp_path / "ck"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "apt.cli", "train", "--policy", policy, "--demos", str(demos), "--out", str(out),
           "--steps", "2", "--batch-size", "4", "--preset", preset, "--vlm", "none", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    meta = read_meta(out)  # written once, by rank 0 (ranks' weights were checked equal at the end)
    assert meta.train["world_size"] == 2 and meta.train["stages"]["full"]["steps"] == 2
    assert proc.stdout.count("wrote") == 1
