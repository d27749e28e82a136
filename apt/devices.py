"""The one check of a `--device` argument, shared by evaluation, training and learned policies.

It lives below all of them (it imports no project module but `benchmarks.base`), so a policy never
imports training to place its model, and `apt-bench run`, `apt-bench serve` and `apt-bench train`
refuse a device with the same words. torch is imported only for a CUDA device (and to build a
`torch.device`): `apt-bench run` with a reference policy on cpu never loads it.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import TYPE_CHECKING, Any

from benchmarks.base import BenchError

if TYPE_CHECKING:
    import torch


def check_device(device: str) -> None:
    """BenchError unless `device` is cpu, or cuda[:N] with a CUDA GPU present."""
    if device == "cpu":
        return
    if not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise BenchError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
    try:
        import torch
    except ImportError:
        raise BenchError(f"--device {device} needs PyTorch with CUDA, and torch is not installed; "
                         "rerun with --device cpu") from None
    if not torch.cuda.is_available():
        raise BenchError(f"--device {device} asked for, but no CUDA GPU is available "
                         "(torch.cuda.is_available() is False); rerun with --device cpu")
    index = int(device[5:]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise BenchError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")


def resolve_device(device: str) -> "torch.device":
    """`check_device`, then the torch.device to place a model on."""
    import torch

    check_device(device)
    return torch.device(device)


SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
              "amx_tile", "amx_bf16", "neon", "asimd", "sve")


def cpu_info() -> dict[str, Any]:
    """The CPU a run computed on, stored with the run: the same episode can end differently on
    another instruction set, because torch picks other kernels (summation orders) for it. torch's
    own kernel choice is added when torch is already loaded (reference policies never load it)."""
    flags: set[str] = set()
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features") and not flags:
                    flags = set(value.split())
                elif key.strip() == "model name" and value.strip():
                    model = value.strip()
    except OSError:
        pass
    info: dict[str, Any] = {"model": model, "machine": platform.machine(), "cores": os.cpu_count(),
                            "simd": [f for f in SIMD_FLAGS if f in flags]}
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS reports one (Linux; a container
    or `taskset` may allow fewer than the machine has), else every core."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
