"""One episode from plan to stored row, and how any process plays it.

- `Episode` is the one spec of an episode: `runner.plan_run` makes it, the engine (local.py, or
  ray_pool.py's env workers) carries it, and the store's row is built from it (`Episode.record`).
  Its key (store.episode_key) is derived from its identity fields, so the two never disagree.
- `Plan` is how every episode of a run is played (sent once to each worker).
- `EpisodeRunner` plays episodes in one process (in-process engine and each env worker), up to
  `Plan.in_flight` at once in lockstep so a shared policy answers them in one batched call: envs
  per task, reused; a per-episode policy (`PerEpisodePolicy`) or one shared policy. Any failure of
  the env or the policy becomes an error result (the engine retries once, `MAX_ATTEMPTS`); a
  ProvenanceError is raised instead, since it invalidates the run.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generator

import numpy as np

from apt.eval.rollout import EpisodeResult, ProvenanceError, Reply, Settings, now, play_steps
from apt.eval.store import EpisodeRecord, episode_key, sha256_text
from apt.eval.video import make_recorder
from apt.splits.instruction_set import InstructionEntry
from benchmarks.base import Observation, Policy, ReportsTiming, Suite

MAX_ATTEMPTS = 2  # one retry


@dataclass(frozen=True)
class Episode:
    """An episode's identity (what its store key hashes) and what a worker needs to play it."""

    policy_id: str
    checkpoint_sha256: str
    suite: str
    suite_version: str
    split: str  # display name (the split file's `split` field, or the control split's name)
    split_key: str  # how the key names the split: InstructionSet.store_key
    split_sha256: str
    entry: InstructionEntry  # its task is the one success is judged on
    seed: int
    episode_index: int  # i of the run's episodes per entry: seed = the run's first seed + i
    max_steps: int
    protocol: str  # canonical JSON of the rollout settings that change outcomes (runner.protocol_key)

    @property
    def task_id(self) -> str:
        return self.entry.task_id

    @property
    def instruction(self) -> str:
        """The exact string the policy must receive."""
        return self.entry.instruction

    @cached_property
    def instruction_sha256(self) -> str:
        return sha256_text(self.entry.instruction)

    @cached_property
    def key(self) -> str:
        """The results store's primary key: sha256 of the identity (store.episode_key)."""
        return episode_key(self.policy_id, self.checkpoint_sha256, self.suite, self.suite_version,
                           self.entry.task_id, self.split_key, self.entry.id, self.instruction_sha256,
                           self.seed, self.protocol)

    def record(self, result: EpisodeResult, run_id: str) -> EpisodeRecord:
        """The store's row for this episode's `result`, played in run `run_id`."""
        return EpisodeRecord(
            key=self.key, run_id=run_id, policy_id=self.policy_id, checkpoint_sha256=self.checkpoint_sha256,
            suite=self.suite, suite_version=self.suite_version, task_id=self.entry.task_id, split=self.split,
            split_key=self.split_key, split_sha256=self.split_sha256, instruction_id=self.entry.id,
            instruction_sha256=self.instruction_sha256, instruction=result.instruction, axis=self.entry.axis,
            seed=self.seed, episode_index=self.episode_index, success=bool(result.success),
            steps=int(result.steps), wall_s=float(result.wall_s), error=result.error, started=result.started,
            finished=result.finished, video=result.video,
            timing_json=json.dumps(result.extra.get("timing", {}), sort_keys=True))


@dataclass(frozen=True)
class Plan:
    """How every episode of a run is played; sent to each worker (small, picklable)."""

    suite_ref: str
    policy_name: str
    policy_seed: int = 0
    device: str = "cpu"
    episode_hook: bool = False  # the policy is a PerEpisodePolicy (benchmarks.base)
    settings: Settings = field(default_factory=Settings)
    video_dir: str | None = None
    max_batch: int = 32  # observations per call of a policy actor (several micro-batches of the policy)
    max_wait_ms: float = 5.0
    policy_actors: int = 1
    in_flight: int = 0  # episodes each worker plays at once, in lockstep (0: 1 in-process, sized on Ray)
    policy_threads: int = 0  # torch threads of a policy actor (0: torch's default)


def error_result(episode: Episode, err: str, started: str, attempts: int = 1) -> EpisodeResult:
    """A failed episode's result (recorded with `error` set and success False)."""
    return EpisodeResult(key=episode.key, success=False, steps=0, wall_s=0.0, instruction=episode.instruction,
                         error=err, started=started, finished=now(), attempts=attempts)


def _describe(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{type(err).__name__}: {err}{where}"[:2000]


@dataclass
class _Slot:
    """One episode in flight: its generator (rollout.play_steps), env, policy and pending observation."""

    episode: Episode
    started: str
    env: Any
    policy: Policy
    steps: Generator[Observation, Reply, EpisodeResult]
    obs: Observation


class EpisodeRunner:
    """Plays episodes in one process, up to `width` at once in lockstep: each round asks every
    distinct policy once for all its episodes' observations (one batched call: a shared policy sees
    up to `width` observations, a per-episode policy its own one), then steps each episode's env.
    Envs are kept per task and reused (one per episode in flight). With a batch-invariant policy an
    episode plays the same at any width (README: same episodes, same answers)."""

    def __init__(self, suite: Suite, plan: Plan, policy: Policy | None, width: int = 1):
        self.suite, self.plan, self.policy = suite, plan, policy
        self.width = max(1, width)
        self.idle_envs: dict[str, list[Any]] = {}  # task_id -> envs not in use
        self.active: list[_Slot] = []
        self.done: list[tuple[Episode, EpisodeResult]] = []  # finished since the last round

    @property
    def free(self) -> int:
        """Episodes that can start now."""
        return self.width - len(self.active)

    def start(self, episode: Episode) -> None:
        """Begin `episode` (reset its env, first observation); a failure is queued as its result."""
        started, env = now(), None
        try:
            idle = self.idle_envs.get(episode.task_id)
            s = self.plan.settings
            env = idle.pop() if idle else self.suite.make_env(episode.task_id, image_size=s.image_size,
                                                                cameras=s.cameras)
            policy = self.policy.episode_policy(episode.task_id) if self.plan.episode_hook else self.policy
            policy.reset()
            camera = s.cameras[0] if s.cameras else None
            recorder = make_recorder(self.plan.video_dir, episode.key, camera) if self.plan.video_dir else None
            steps = play_steps(env, episode.key, episode.instruction, episode.seed, episode.max_steps,
                               s.replan_steps, recorder, task_id=episode.task_id)
            slot = _Slot(episode, started, env, policy, steps, next(steps))
        except StopIteration as stop:  # over before the first query (max_steps 0)
            self._finish(episode, env, stop.value)
            return
        except ProvenanceError:
            raise
        except Exception as err:  # noqa: BLE001 - one broken episode costs one episode
            self._fail(episode, env, err, started)
            return
        self.active.append(slot)

    def round(self) -> list[tuple[Episode, EpisodeResult]]:
        """One policy call per distinct policy, one chunk of env steps per episode; returns the
        episodes finished since the last round with their results."""
        groups: dict[int, list[_Slot]] = {}
        for slot in self.active:
            groups.setdefault(id(slot.policy), []).append(slot)
        for group in groups.values():
            policy = group[0].policy
            t = time.perf_counter()
            try:
                actions = np.asarray(policy.act([slot.obs for slot in group]))
            except Exception as err:  # noqa: BLE001 - the call's episodes fail, as on a policy actor
                for slot in group:
                    slot.steps.close()
                    self._fail(slot.episode, slot.env, err, slot.started)
                self.active = [s for s in self.active if s not in group]
                continue
            dt = time.perf_counter() - t
            remote = policy.last_timing if isinstance(policy, ReportsTiming) else None
            for i, slot in enumerate(group):
                self._advance(slot, Reply(actions[i:i + 1], dt, remote))
        done, self.done = self.done, []
        return done

    def run(self, episode: Episode) -> EpisodeResult:
        """One episode on its own; any failure becomes an error result, except ProvenanceError (raised)."""
        self.start(episode)
        while self.active:
            self.done.extend(self.round())
        done, self.done = self.done, []
        return next(result for ep, result in done if ep.key == episode.key)

    def _advance(self, slot: _Slot, reply: Reply) -> None:
        try:
            slot.obs = slot.steps.send(reply)
            return
        except StopIteration as stop:
            self._finish(slot.episode, slot.env, stop.value)
        except ProvenanceError:
            raise
        except Exception as err:  # noqa: BLE001
            self._fail(slot.episode, slot.env, err, slot.started)
        self.active.remove(slot)

    def _finish(self, episode: Episode, env: Any, result: EpisodeResult) -> None:
        self.idle_envs.setdefault(episode.task_id, []).append(env)
        self.done.append((episode, result))

    def _fail(self, episode: Episode, env: Any, err: BaseException, started: str) -> None:
        if env is not None:  # it may be in a bad state: a retry builds a fresh one
            _close(env)
        self.done.append((episode, error_result(episode, _describe(err), started)))

    def close(self) -> None:
        for env in [e for envs in self.idle_envs.values() for e in envs] + [s.env for s in self.active]:
            _close(env)
        self.idle_envs.clear()
        self.active.clear()


def _close(env: Any) -> None:
    try:
        env.close()
    except Exception:  # noqa: BLE001
        pass
