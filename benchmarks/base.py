"""The contracts between simulated suites and policies (ARCHITECTURE.md §3).

This is the one module both sides read: suites, environments, scripted experts, learned policies,
`random` and remote policies all meet here through structural typing, so `benchmarks` never needs
to import the method package `apt`.
"""

from __future__ import annotations

import difflib
import hashlib

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Protocol, Sequence, TypedDict, runtime_checkable

import numpy as np

try:  # Python >= 3.11
    from typing import NotRequired
except ImportError:  # pragma: no cover - Python 3.10
    from typing_extensions import NotRequired


class BenchError(Exception):
    """An error a user can cause and fix (bad name, bad file, missing simulator...).

    The CLI prints its message and exits non-zero without a traceback; everything else is a bug.
    """


class SpecMismatch(BenchError):
    """A policy and a suite disagree on actions, cameras or state (checked before any episode)."""


def did_you_mean(name: str, options: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' for a near miss, else the empty string."""
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown(kind: str, name: str, options: list[str] | tuple[str, ...]) -> BenchError:
    return BenchError(f"unknown {kind} {name!r}{did_you_mean(name, options)}; "
                      f"valid {kind}s: {', '.join(options)}")


class Observation(TypedDict):
    """What every suite returns and every policy consumes.

    `privileged` carries simulator state for scripted experts only; learned policies must not read it.
    `sample_key` is added by the engine, not by suites: "<task_id>:<episode seed>:<step>", so a
    stochastic policy can draw per-episode random numbers that do not depend on batching or
    scheduling (apt.policies.learned.LearnedPolicy.keyed_noise).
    """

    images: dict[str, np.ndarray]  # camera name -> uint8[H, W, 3]
    state: np.ndarray  # float32[D] proprioception
    instruction: str  # exactly the string passed to Env.reset
    privileged: NotRequired[dict[str, Any]]
    sample_key: NotRequired[str]


def sample_seed(policy_seed: int, sample_key: str) -> int:
    """A 63-bit seed for one observation's random draws: a hash of the policy's seed and the
    observation's `sample_key`, so a stochastic policy's draws do not depend on batching."""
    digest = hashlib.sha256(f"{policy_seed}:{sample_key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class ActionSpec:
    """How an action vector is to be read; suites and policies each declare one."""

    dim: int
    mode: Literal["delta", "absolute"] = "delta"
    rotation: Literal["none", "axis_angle", "euler", "quat", "rot6d"] = "none"
    gripper: str = "last dim: -1 open, +1 closed"
    low: float = -1.0
    high: float = 1.0


@dataclass(frozen=True)
class ObservationSpec:
    """Cameras and proprioception a suite offers (or a policy needs)."""

    cameras: tuple[str, ...]
    state_dim: int
    image_size: int = 96


@dataclass(frozen=True)
class PolicySpec:
    """What a policy consumes and produces; compared with the suite's spec before the first episode."""

    action: ActionSpec
    observation: ObservationSpec
    chunk: int = 1  # action steps returned per call (H in float32[B, H, A])
    # Actions of each chunk to execute before asking again (receding horizon, as openpi's
    # replan_steps); None = the whole chunk. `apt-bench run --replan-steps` overrides it.
    replan: int | None = None


@dataclass(frozen=True)
class TaskSpec:
    """One task of a suite; `attributes` (skill, object, target...) build compositional splits."""

    task_id: str
    instruction: str  # the canonical (training) instruction
    max_steps: int
    attributes: Mapping[str, str] = field(default_factory=dict)
    train: bool = True


@runtime_checkable
class Env(Protocol):
    """One simulator instance for one task.

    The instruction the env puts in observations is exactly the one passed to `reset`, never
    re-derived from anything else (see LIBERO's file-name bug in reference/eval-conventions.md).
    """

    def reset(self, seed: int | None = None, instruction: str | None = None,
              init_state: Any = None) -> Observation: ...

    def step(self, action: np.ndarray) -> tuple[Observation, bool, dict[str, Any]]:
        """Apply one action; returns (obs, done, info) with info["success"] a bool."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class RendersOnDemand(Protocol):
    """An env that can step without rendering: the engine uses it for the steps inside an action
    chunk, whose observations no policy reads (images {}); rendering never changes the physics."""

    def step_unrendered(self, action: np.ndarray) -> tuple[Observation, bool, dict[str, Any]]: ...


@runtime_checkable
class Policy(Protocol):
    """A batch of observations in, a batch of action chunks float32[B, H, A] out."""

    spec: PolicySpec

    def reset(self) -> None: ...

    def act(self, observations: list[Observation]) -> np.ndarray: ...


# Optional policy hooks: a policy may also implement any of these; the engine checks with isinstance.


@runtime_checkable
class PerEpisodePolicy(Protocol):
    """A policy that plays each episode through its own fresh instance (scripted experts, the oracle:
    stateful per episode, reading privileged state). The engine builds it next to the env, in the
    env's process, instead of serving a shared batched policy."""

    def episode_policy(self, task_id: str) -> Policy: ...


@runtime_checkable
class NoiseSampling(Protocol):
    """A policy that samples noise (flow matching): `noise_scale` is the std of its draws, which
    `apt-bench run --noise-scale` overrides and every episode key records."""

    noise_scale: float


@runtime_checkable
class RequestTiming(Protocol):
    """How long one remote request took: server inference and network round trip, in milliseconds
    (None where the server does not report it)."""

    server_infer_ms: float | None
    round_trip_ms: float | None


@runtime_checkable
class ReportsTiming(Protocol):
    """A policy that reports how its last `act` call was spent (remote policies); the engine keeps it
    in the episode's timing record. None before the first call."""

    last_timing: RequestTiming | None


@runtime_checkable
class FixedBatch(Protocol):
    """A policy that runs its model on batches of exactly `batch_rows` observations (padding the last
    one), so an observation's answer does not depend on what it was batched with; the engine sizes
    its batches (episodes in flight per worker) to it."""

    batch_rows: int


@runtime_checkable
class IdentifiedPolicy(Protocol):
    """A policy that says what it is: the id and checkpoint hash the results store keys its episodes
    by (empty when it has no checkpoint); otherwise the name it was asked for is its id."""

    policy_id: str
    checkpoint_sha256: str


class ScriptedPolicy:
    """Common state of the privileged-state experts (tabletop, LIBERO): a chunk-1 spec reading no
    camera, a seeded generator, and per-batch-index episode state that `reset` drops.

    An expert whose `act` adds exploration noise may also set `intended` to the same actions
    before that noise: demonstrations can then execute the noisy action (states off the ideal
    path, and their corrections) and record the intended one as the label (DART-style).
    """

    def __init__(self, action_spec: ActionSpec, state_dim: int, noise: float = 0.0, seed: int = 0):
        self.noise = float(noise)
        self.spec = PolicySpec(action=action_spec, observation=ObservationSpec(cameras=(), state_dim=state_dim),
                               chunk=1)
        self._rng = np.random.default_rng(seed)
        self._episodes: list[Any] = []
        self.intended: np.ndarray | None = None  # the last `act` output before its noise, if known

    def reset(self) -> None:
        self._episodes = []


@dataclass(frozen=True)
class DemoRecording:
    """How a suite's scripted-expert demonstrations are recorded (optional `Suite.demo_recording`).

    reset_options: extra `Env.reset` keywords for demonstration episodes (LIBERO: fresh layouts
      sampled from the seed instead of the 50 fixed evaluation starts).
    record_keys: `Observation.privileged` arrays kept per step for a native writer (LIBERO: the
      MuJoCo state and joint positions its HDF5 files hold).
    native_format: the format `apt-bench demos` writes by default (an apt/demos/formats.py name), None =
      apt-bench's own.
    """

    reset_options: Mapping[str, Any] = field(default_factory=dict)
    record_keys: tuple[str, ...] = ()
    native_format: str | None = None


@runtime_checkable
class Suite(Protocol):
    """A set of tasks, a way to build environments for them, and (where one exists) an expert.

    A suite may also define `demo_recording: DemoRecording` (see there)."""

    name: str
    version: str
    action_spec: ActionSpec
    observation_spec: ObservationSpec

    def tasks(self) -> list[TaskSpec]: ...

    def make_env(self, task_id: str, image_size: int = 96,
                 cameras: tuple[str, ...] | None = None) -> Env: ...

    def expert(self, task_id: str) -> Policy: ...


@runtime_checkable
class SceneLanguage(Protocol):
    """Optional suite hook: ground-truth language about a scene, read from an observation's
    `privileged` state, for vision-language training of a policy's VLM.

    `caption_pairs` feeds image-text matching (`apt-bench train --policy vlm_tiny`,
    apt/training/vl_pretrain.py); `scene_questions` feeds the discrete recipes' VL co-training
    (apt/training/vl_data.py). Suites without it train policies all the same, but not these two
    (training says so). The tabletop suite implements it (benchmarks/tabletop/captions.py,
    questions.py).
    """

    def caption_pairs(self, privileged: Mapping[str, Any], n: int, rng: np.random.Generator,
                      kinds: Sequence[str] | None = None) -> list[tuple[str, str, str, str]]:
        """Up to `n` (true caption, false caption, kind, edit) of one scene, each false caption a
        minimal edit of its true one; `kinds`: only these statement kinds (None: all)."""
        ...

    def scene_questions(self, privileged: Mapping[str, Any], grid_m: float = 0.0) -> list[tuple[str, str]]:
        """(question, answer) pairs that hold in the scene; `grid_m` > 0 adds where-exactly questions
        answered by the cell on a `grid_m`-metre grid."""
        ...


def check_compatible(suite_action: ActionSpec, suite_obs: ObservationSpec, policy: PolicySpec) -> None:
    """Raise SpecMismatch naming every disagreement between a suite and a policy.

    Run once before the first episode, so a mismatch costs seconds, not a wasted evaluation.
    """
    problems: list[str] = []
    pa = policy.action
    if pa.dim != suite_action.dim:
        problems.append(f"action dimension: policy {pa.dim}, suite {suite_action.dim}")
    if pa.mode != suite_action.mode:
        problems.append(f"action mode: policy {pa.mode}, suite {suite_action.mode}")
    if pa.rotation != suite_action.rotation:
        problems.append(f"rotation format: policy {pa.rotation}, suite {suite_action.rotation}")
    if pa.gripper != suite_action.gripper:
        problems.append(f"gripper convention: policy '{pa.gripper}', suite '{suite_action.gripper}'")
    missing = [c for c in policy.observation.cameras if c not in suite_obs.cameras]
    if missing:
        problems.append(f"cameras {missing} not offered by the suite (it has {list(suite_obs.cameras)})")
    if policy.observation.state_dim and policy.observation.state_dim != suite_obs.state_dim:
        problems.append(f"state dimension: policy {policy.observation.state_dim}, suite {suite_obs.state_dim}")
    if policy.chunk < 1:
        problems.append(f"chunk length must be >= 1, got {policy.chunk}")
    if problems:
        raise SpecMismatch("policy and suite do not match: " + "; ".join(problems)
                           + ". Use a policy trained for this suite, or adapt its spec.")


def checked_action(action: Any, dim: int, layout: str, dtype: Any = np.float32) -> np.ndarray:
    """An env's action as a flat `dtype` array of `dim` finite numbers, or one clear BenchError
    naming the expected layout (e.g. "tabletop actions are float[4] (dx, dy, dz, gripper)")."""
    a = np.asarray(action, dtype=dtype).reshape(-1)
    if a.shape != (dim,):
        raise BenchError(f"{layout}, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise BenchError(f"non-finite action {a}")
    return a


def episode_index(task_id: str, seed: int | None, init_state: Any, n: int | None) -> int:
    """Which fixed start an episode uses: `init_state` (an int) or else `seed` (or 0), modulo the
    `n` starts a task has (None: unbounded)."""
    if init_state is not None:
        if not isinstance(init_state, (int, np.integer)) or isinstance(init_state, bool):
            raise BenchError(f"{task_id}: init_state must be an episode index (int), got "
                             f"{type(init_state).__name__}")
        i = int(init_state)
    else:
        i = 0 if seed is None else int(seed)
    return i % n if n else i


class SimulatorEnv:
    """Base of the envs that wrap one external simulator object in `self._env` (LIBERO, SimplerEnv):
    the attributes such an env starts with, the guard every `step` begins with, and `close()`, which
    releases the simulator once (later calls, and `step` before `reset`, see `_ready` False); garbage
    collection closes it too, so a GL / Vulkan context is freed even when the caller forgets."""

    _env: Any = None
    _ready: bool = False

    def __init__(self, task_id: str, image_size: int, cameras: tuple[str, ...]):
        self.task_id = task_id
        self.image_size = int(image_size)
        self.cameras = tuple(cameras)
        self.instruction = ""
        self._ready = False

    def _step_action(self, action: Any, dim: int, layout: str, dtype: Any = np.float32) -> np.ndarray:
        """`checked_action(action, dim, layout, dtype)`, after a BenchError if `reset` has not run
        ("<class>.step called before reset")."""
        if not self._ready:
            raise BenchError(f"{type(self).__name__}.step called before reset")
        return checked_action(action, dim, layout, dtype)

    def close(self) -> None:
        env = getattr(self, "_env", None)
        if env is not None:
            self._env = None
            self._ready = False
            env.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown; nothing useful to report
            pass
