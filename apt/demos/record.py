"""Recording expert episodes: what one generation worker process does.

`generate_demos` (apt/demos/generate.py) calls `init_worker` once per process (or once in-process
for workers=0), then `record_episode` per planned episode; each kept episode's arrays go to its
`episode_file`, which the format writers read back.

Workers are started with the 'spawn' method and build the simulator inside the worker (GL contexts
and MuJoCo state do not survive a fork). Each worker holds one environment at a time.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from apt.demos.episodes import DemoEpisode, episode_file
from benchmarks.base import BenchError, DemoRecording, Suite


@dataclass(frozen=True)
class EpisodeResult:
    """How one planned episode went; only successful ones were saved."""

    index: int
    task_id: str
    success: bool
    steps: int
    error: str = ""


# Per-process worker state (set by init_worker; in-process for workers=0).
_W: dict[str, Any] = {}


def demo_recording(suite: Suite) -> DemoRecording:
    """The suite's `demo_recording` (benchmarks.base.DemoRecording), or the default one."""
    rec = getattr(suite, "demo_recording", None)
    return rec if isinstance(rec, DemoRecording) else DemoRecording()


def init_worker(suite: Suite | None, make_suite: Callable[[], Suite] | None, image_size: int,
                cameras: tuple[str, ...], folder: str, noise: float, clean_labels: bool = False) -> None:
    """Set this process up to record episodes into `folder`: `suite` itself (in-process, or pickled
    into a spawned worker), else the one `make_suite()` builds inside the worker."""
    if suite is None:
        assert make_suite is not None, "init_worker needs a suite or make_suite"
        suite = make_suite()
    rec = demo_recording(suite)
    _W.clear()
    _W.update(suite=suite, image_size=image_size, cameras=cameras, folder=Path(folder),
              noise=noise, clean_labels=clean_labels, env=None, env_task=None, reset_options=dict(rec.reset_options),
              record_keys=rec.record_keys)


def close_worker() -> None:
    """Release the in-process worker's environment and state (workers=0)."""
    if _W.get("env") is not None:
        _W["env"].close()
    _W.clear()


def _worker_env(task_id: str) -> Any:
    """The worker's one environment, rebuilt when the task changes (one renderer per process)."""
    if _W["env_task"] != task_id:
        if _W["env"] is not None:
            _W["env"].close()
        _W["env"] = _W["suite"].make_env(task_id, image_size=_W["image_size"], cameras=_W["cameras"])
        _W["env_task"] = task_id
    return _W["env"]


def expert_parameters(suite: Suite) -> Mapping[str, inspect.Parameter]:
    """The parameters of the suite's `expert()`, by name (which optional keywords it takes)."""
    return inspect.signature(suite.expert).parameters


def _expert_options(suite: Suite, seed: int, noise: float) -> dict[str, Any]:
    """Keyword arguments the suite's `expert()` accepts beyond the protocol's task id: `seed` (so
    an episode's noise does not depend on which episodes its worker ran before) and `noise`."""
    params = expert_parameters(suite)
    options: dict[str, Any] = {}
    if "seed" in params:
        options["seed"] = seed
    if "noise" in params:
        options["noise"] = noise
    return options


def _labels(expert: Any, executed: np.ndarray) -> np.ndarray:
    """The expert's intended actions [H, A] for the chunk it just returned (`clean_labels`)."""
    intended = getattr(expert, "intended", None)
    if intended is None:
        raise BenchError(f"{type(expert).__name__} does not report its intended (noise-free) actions, "
                         "so --clean-labels cannot be used with it; use --expert-noise 0 for clean labels")
    intended = np.asarray(intended, dtype=np.float32)[0]
    assert intended.shape == executed.shape, (intended.shape, executed.shape)
    return intended


def record_episode(job: DemoEpisode) -> EpisodeResult:
    """Roll the expert once; save the episode's arrays to its episode file if it succeeded."""
    try:
        env = _worker_env(job.task_id)
        expert = _W["suite"].expert(job.task_id, **_expert_options(_W["suite"], job.seed,
                                                                    _W["noise"]))
        expert.reset()
        obs = env.reset(seed=job.seed, instruction=job.instruction, **_W["reset_options"])
        cams = _W["cameras"]
        images: dict[str, list[np.ndarray]] = {c: [] for c in cams}
        extras: dict[str, list[np.ndarray]] = {k: [] for k in _W["record_keys"]}
        states, actions, successes = [], [], []
        success = False
        while len(actions) < job.max_steps and not success:
            chunk = np.asarray(expert.act([obs]), dtype=np.float32)[0]  # [H, A], executed
            labels = _labels(expert, chunk) if _W["clean_labels"] else chunk
            for action, label in zip(chunk, labels):
                for c in cams:
                    images[c].append(np.asarray(obs["images"][c], dtype=np.uint8))
                for k in extras:
                    extras[k].append(np.asarray(obs["privileged"][k]))
                states.append(np.asarray(obs["state"], dtype=np.float32))
                actions.append(label)
                obs, _done, info = env.step(action)
                success = bool(info["success"])
                successes.append(success)
                if success or len(actions) >= job.max_steps:
                    break
        if success:
            flags = np.asarray(successes, dtype=bool)
            arrays = {"state": np.stack(states), "action": np.stack(actions), "success": flags}
            arrays.update({f"image_{c}": np.stack(images[c]) for c in cams})
            arrays.update({f"extra_{k}": np.stack(v) for k, v in extras.items()})
            np.savez(episode_file(_W["folder"], job.index), **arrays)
        return EpisodeResult(job.index, job.task_id, success, len(actions))
    except BenchError:
        raise  # a user-fixable setup problem (bad camera, missing GL): stop everything
    except Exception as err:  # noqa: BLE001 - one broken episode costs one episode
        return EpisodeResult(job.index, job.task_id, False, 0, f"{type(err).__name__}: {err}")
