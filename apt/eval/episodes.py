"""One episode from plan to stored row, and how any process plays it.

- `Episode` is the one spec of an episode: `runner.plan_run` makes it, the engine (local.py, or
  ray_pool.py's env workers) carries it, and the store's row is built from it (`Episode.record`).
  Its key (store.episode_key) is derived from its identity fields, so the two never disagree.
- `Plan` is how every episode of a run is played (sent once to each worker).
- `EpisodeRunner` plays episodes in one process (in-process engine and each env worker): one env
  per task, reused; a per-episode policy (`PerEpisodePolicy`) or one shared policy. Any failure of
  the env or the policy becomes an error result (the engine retries once, `MAX_ATTEMPTS`); a
  ProvenanceError is raised instead, since it invalidates the run.
"""

from __future__ import annotations

import json
import os
import traceback
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from apt.eval.rollout import EpisodeResult, ProvenanceError, Settings, now, run_episode
from apt.eval.store import EpisodeRecord, episode_key, sha256_text
from apt.eval.video import make_recorder
from apt.splits.instruction_set import InstructionEntry
from benchmarks.base import Policy, Suite

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
    max_batch: int = 32
    max_wait_ms: float = 5.0
    policy_actors: int = 1


def error_result(episode: Episode, err: str, started: str, attempts: int = 1) -> EpisodeResult:
    """A failed episode's result (recorded with `error` set and success False)."""
    return EpisodeResult(key=episode.key, success=False, steps=0, wall_s=0.0, instruction=episode.instruction,
                         error=err, started=started, finished=now(), attempts=attempts)


def _describe(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    where = f" at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{type(err).__name__}: {err}{where}"[:2000]


class EpisodeRunner:
    """Plays episodes in one process: one env per task (reused), policy per episode or shared."""

    def __init__(self, suite: Suite, plan: Plan, policy: Policy | None):
        self.suite, self.plan, self.policy = suite, plan, policy
        self.envs: dict[str, Any] = {}

    def _env(self, task_id: str):
        if task_id not in self.envs:
            s = self.plan.settings
            self.envs[task_id] = self.suite.make_env(task_id, image_size=s.image_size, cameras=s.cameras)
        return self.envs[task_id]

    def run(self, episode: Episode) -> EpisodeResult:
        """One episode; any failure becomes an error result, except ProvenanceError (raised)."""
        started = now()
        try:
            env = self._env(episode.task_id)
            if self.plan.episode_hook:
                policy = self.policy.episode_policy(episode.task_id)
            else:
                policy = self.policy
            policy.reset()
            camera = self.plan.settings.cameras[0] if self.plan.settings.cameras else None
            recorder = make_recorder(self.plan.video_dir, episode.key, camera)
            return run_episode(env, episode.key, episode.instruction, episode.seed, episode.max_steps, policy,
                               self.plan.settings.replan_steps, recorder, task_id=episode.task_id)
        except ProvenanceError:
            raise
        except Exception as err:  # noqa: BLE001 - one broken episode costs one episode
            env = self.envs.pop(episode.task_id, None)  # it may be in a bad state: rebuild on retry
            if env is not None:
                try:
                    env.close()
                except Exception:  # noqa: BLE001
                    pass
            return error_result(episode, _describe(err), started)

    def close(self) -> None:
        for env in self.envs.values():
            try:
                env.close()
            except Exception:  # noqa: BLE001
                pass
        self.envs.clear()
