"""One episode: (env, task, instruction entry, seed, policy, protocol settings) -> EpisodeResult.

Nothing here is suite-specific: it meets environments and policies only through the protocols of
`benchmarks/base.py`. The engine (episodes.py, local.py, ray_pool.py) decides where the env and the
policy live; this module only plays one episode against them.

Protocol: the policy returns chunks float32[1, H, A]; the first `replan_steps` actions of each chunk
(default: all H) are executed before the policy is queried again. The episode ends on success
(`done`) or after `max_steps` env steps (the task's TaskSpec.max_steps unless overridden).

Provenance (reference/eval-conventions.md, LIBERO's file-name bug): the instruction the policy gets is
read from the very observation handed to it and must equal the split entry's text; a mismatch raises
ProvenanceError, which the engine never retries and which stops the whole run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Generator, Protocol

import numpy as np

from benchmarks.base import (BenchError, Env, NoiseSampling, Observation, Policy, RendersOnDemand, ReportsTiming,
                             RequestTiming)


class ProvenanceError(BenchError):
    """The instruction a policy received is not the split entry's text: the run is invalid."""


@dataclass(frozen=True)
class Settings:
    """Protocol settings of one run; stored with every run (they move scores by several points)."""

    replan_steps: int | None = None  # actions executed per chunk; None = the policy's chunk length
    image_size: int = 96
    cameras: tuple[str, ...] = ()  # what the env renders: the policy's cameras (+ one for video)
    max_steps: int | None = None  # None = each task's TaskSpec.max_steps
    noise_scale: float | None = None  # sampling policies' noise std (None: not a sampling policy)


def apply_settings(policy: Any, settings: Settings) -> Any:
    """Give a freshly built policy the run's inference settings (every process that builds one calls
    this, so in-process, policy actors and env workers run the same policy)."""
    if settings.noise_scale is not None and isinstance(policy, NoiseSampling):
        policy.noise_scale = settings.noise_scale
    return policy


@dataclass(frozen=True)
class EpisodeResult:
    """What one episode produced; the driver adds the work item's identity and stores it."""

    key: str
    success: bool
    steps: int
    wall_s: float
    instruction: str  # the exact string the policy received (None-safe: "" for blank controls)
    error: str = ""
    started: str = ""
    finished: str = ""
    video: str = ""
    attempts: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


class Recorder(Protocol):
    """Per-episode frame sink (video.py); a null object when videos are off."""

    def add(self, obs: Observation) -> None: ...

    def finish(self) -> str: ...


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def check_provenance(obs: Observation, expected: str) -> str:
    """The observation's instruction; ProvenanceError unless it equals `expected` exactly."""
    got = obs.get("instruction") if isinstance(obs, dict) else None
    if got != expected:
        raise ProvenanceError(
            f"instruction provenance violated: the split entry says {expected!r} but the observation "
            f"handed to the policy says {got!r}; the environment must put exactly the instruction "
            "passed to reset() in every observation (see reference/eval-conventions.md)")
    return got


def run_episode(env: Env, key: str, instruction: str, seed: int, max_steps: int, policy: Policy,
                replan_steps: int | None = None, recorder: Recorder | None = None,
                task_id: str = "") -> EpisodeResult:
    """Play one episode; exceptions of the env or the policy propagate (the engine retries them).
    Each observation handed to the policy carries `sample_key` = "<task_id>:<seed>:<step>"."""
    steps = play_steps(env, key, instruction, seed, max_steps, replan_steps, recorder, task_id)
    reports_timing = isinstance(policy, ReportsTiming)  # once per episode: a protocol check costs ~15 us
    try:
        obs = next(steps)
        while True:
            t_act = time.perf_counter()
            chunk = np.asarray(policy.act([obs]))
            obs = steps.send(Reply(chunk, time.perf_counter() - t_act,
                                   policy.last_timing if reports_timing else None))
    except StopIteration as stop:
        return stop.value


@dataclass(frozen=True)
class Reply:
    """What the engine sends back into `play_steps` for one observation: its chunk [1, H, A], the
    seconds the policy call took as the env saw it, and a remote policy's own report."""

    chunk: np.ndarray
    act_s: float
    remote: Any = None


def play_steps(env: Env, key: str, instruction: str, seed: int, max_steps: int, replan_steps: int | None = None,
               recorder: Recorder | None = None, task_id: str = "") -> Generator[Observation, Reply, EpisodeResult]:
    """One episode as a generator: yields each observation the policy must answer, receives a `Reply`,
    returns the EpisodeResult. Who calls the policy is the driver's business (`run_episode` one
    episode at a time; `episodes.Lockstep` many episodes with one batched call), so every driver
    plays exactly the same episode."""
    started, t0 = now(), time.perf_counter()
    timing = _Timing()
    t_env = time.perf_counter()
    obs = env.reset(seed=seed, instruction=instruction)
    timing.env_s += time.perf_counter() - t_env
    received = check_provenance(obs, instruction)
    if recorder is not None:
        recorder.add(obs)
    steps, success = 0, False
    blind_steps = recorder is None and isinstance(env, RendersOnDemand)
    while steps < max_steps and not success:
        check_provenance(obs, instruction)
        reply = yield {**obs, "sample_key": f"{task_id}:{seed}:{steps}"}
        timing.add(reply.act_s, reply.remote)
        chunk = np.asarray(reply.chunk)
        if chunk.ndim != 3 or chunk.shape[0] != 1 or chunk.shape[1] < 1:
            raise BenchError(f"policy returned actions of shape {chunk.shape}; expected [1, H, A]")
        n = chunk.shape[1] if replan_steps is None else min(replan_steps, chunk.shape[1])
        t_env = time.perf_counter()
        for i, action in enumerate(chunk[0, :n]):
            # Only the chunk's last observation is read (by the policy): the others need no images,
            # unless a video records them.
            blind = blind_steps and i < n - 1
            obs, done, info = env.step_unrendered(action) if blind else env.step(action)
            steps += 1
            if recorder is not None:
                recorder.add(obs)
            success = bool(info.get("success", done))
            if done or success or steps >= max_steps:
                break
        timing.env_s += time.perf_counter() - t_env
    video = recorder.finish() if recorder is not None else ""
    return EpisodeResult(key=key, success=success, steps=steps, wall_s=time.perf_counter() - t0,
                         instruction=received, started=started, finished=now(), video=video,
                         extra={"timing": timing.summary()})


class _Timing:
    """Per-episode inference timing: the policy call as the env sees it, plus what a remote policy
    reports in `last_timing` (server inference vs network round trip)."""

    def __init__(self) -> None:
        self.env_s = 0.0  # env.reset + env.step (rendering included), seconds
        self.act_ms: list[float] = []
        self.server_ms: list[float] = []
        self.round_trip_ms: list[float] = []

    def add(self, act_s: float, remote: Any) -> None:
        self.act_ms.append(act_s * 1e3)
        reported = remote is not None and isinstance(remote, RequestTiming)
        server = remote.server_infer_ms if reported else None
        rtt = remote.round_trip_ms if reported else None
        if server is not None:
            self.server_ms.append(float(server))
        if rtt is not None:
            self.round_trip_ms.append(float(rtt))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"calls": len(self.act_ms), "env_ms": round(self.env_s * 1e3, 3),
                               "act_ms_total": round(float(np.sum(self.act_ms)), 3)}
        if self.server_ms:
            out["server_infer_ms_total"] = round(float(np.sum(self.server_ms)), 3)
        for name, xs in (("act_ms", self.act_ms), ("server_infer_ms", self.server_ms),
                         ("round_trip_ms", self.round_trip_ms)):
            if xs:
                out[f"{name}_mean"] = round(float(np.mean(xs)), 3)
                out[f"{name}_p95"] = round(float(np.percentile(xs, 95)), 3)
        return out
