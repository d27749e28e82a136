"""LIBERO-Goal compositional goals (benchmarks/libero/compositional.py) against the real LIBERO.

What is checked, and how:
- the committed BDDL files are exactly what the generator writes (byte-identical), they describe the
  LIBERO-Goal scene unchanged, and every goal is a combination no LIBERO-Goal task uses;
- registration: libero_goal lists them as held-out tasks (train=False) with LIBERO-Goal's max steps
  and the init states of the LIBERO-Goal task they name; the compositional split validates;
- slow, real simulator: each file loads (env created, init state 0, 5 steps, observation shapes);
- slow, *predicates*: the success check is False at reset and True once the goal state is made to
  hold by writing MuJoCo state directly (objects teleported onto/into their target through their
  free joint's qpos, drawer/knob joints set inside LIBERO's own open/turn-on ranges, physics
  stepped to settle). This validates the success predicates, not that a robot can reach the goal;
- slow, *solvability by actions*: a hand-written waypoint sequence for the OSC delta controller
  (above the object, descend, close, lift, above the target, lower, release) reaches success for
  the pick-and-place goals listed in ACTION_SOLVED, from two init states each. The drawer, stove
  and drawer-insertion goals are not shown solvable by actions here.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.base import BenchError

from benchmarks.libero.stack import have_libero  # noqa: E402

HAVE_LIBERO = have_libero()
pytestmark = pytest.mark.skipif(not HAVE_LIBERO, reason="LIBERO is not importable here "
                                "(install with `bash install.sh --libero`)")

from benchmarks.libero import compositional as C  # noqa: E402 - imports no simulator

GOAL_NAMES = [g.name for g in C.GOALS]
# goal name -> (grasp height above the object's body origin in m, position gain) for the scripted
# pick-and-place; the tall bottle is grasped at mid-height and moved faster to fit 300 steps.
ACTION_SOLVED = {"cheese-on-plate": (0.0, 10.0), "cheese-on-stove": (0.0, 10.0),
                 "cheese-on-cabinet": (0.0, 10.0), "bottle-on-plate": (0.09, 20.0)}
SETTLE = np.array([0, 0, 0, 0, 0, 0, -1.0])


def _goal(name: str) -> C.CompositionalGoal:
    return next(g for g in C.GOALS if g.name == name)


# --- files and registration (LIBERO imported, no simulator) ----------------------------------


def test_generated_files_are_byte_identical_to_the_generator():
    assert C.stale_files() == [], "regenerate: python -m benchmarks.libero compositional"
    assert C.main(["--check"]) == 0
    assert len(GOAL_NAMES) == len(set(GOAL_NAMES)) == len({g.file_name for g in C.GOALS}) >= 4


def test_files_keep_the_libero_goal_scene_and_change_only_the_goal():
    from benchmarks.libero import LiberoSuite
    from benchmarks.libero.bddl import read_bddl

    base = LiberoSuite("libero_goal", compositional=False)
    originals = [read_bddl(base._bddl(i).path) for i in range(10)]
    seen_goals = {frozenset(o.goal) for o in originals}

    def scene_lines(path):  # everything but language, objects of interest and goal
        text = path.read_text(encoding="utf-8")
        for head in (":language", ":obj_of_interest", ":goal"):
            a, b = C._section(text, head)
            text = text[:a] + text[b:]
        return text

    template = scene_lines(C.template_path())
    for g in C.GOALS:
        b = read_bddl(C.BDDL_DIR / g.file_name)
        assert scene_lines(b.path) == template
        assert (b.objects, b.fixtures) == (originals[0].objects, originals[0].fixtures)
        assert b.goal == g.goal and frozenset(b.goal) not in seen_goals
        assert b.language.lower() == g.instruction
        names = set(b.objects) | set(b.fixtures)
        for atom in b.goal:  # every argument is an object, a fixture or a region of one
            assert all(a in names or any(a.startswith(n + "_") for n in b.fixtures) for a in atom[1:])
    # Pick-and-place goals: object-target pairs that no LIBERO-Goal task uses.
    seen_pairs = {(a[1], a[2]) for o in originals for a in o.goal if len(a) == 3}
    for g in C.GOALS:
        pairs = {(a[1], a[2]) for a in g.goal if len(a) == 3}
        if len(g.goal) == 1 and pairs:
            assert not pairs & seen_pairs, g.name


def test_registered_as_held_out_libero_goal_tasks():
    from benchmarks.libero import LiberoSuite

    suite = LiberoSuite("libero_goal")
    tasks = {t.task_id: t for t in suite.tasks()}
    comp = [t for t in suite.tasks() if not t.train]
    assert [t.task_id for t in comp] == [f"libero_goal/comp-{n}" for n in GOAL_NAMES]
    assert [t.task_id for t in suite.tasks() if t.train] == [f"libero_goal/{i}" for i in range(10)]
    scene = tasks["libero_goal/0"].attributes["scene"]
    for g, t in zip(C.GOALS, comp):
        assert t.instruction == g.instruction and t.max_steps == 300
        assert t.attributes["scene"] == scene and t.attributes["skill"]
        assert t.attributes["init_states_from"] == f"libero_goal/{g.init_from}"
        states = suite.init_states(t.task_id)
        np.testing.assert_array_equal(states, suite.init_states(f"libero_goal/{g.init_from}"))
        assert states.shape[0] == 50
    assert len(LiberoSuite("libero_goal", compositional=False).tasks()) == 10
    assert all(t.train for t in LiberoSuite("libero_spatial").tasks())
    with pytest.raises(BenchError, match="comp-<name>"):
        suite.make_env("libero_goal/comp-nope")
    with pytest.raises(BenchError):
        LiberoSuite("libero_spatial").make_env("libero_goal/comp-cheese-on-plate")


def test_compositional_split_validates_and_lists_exactly_the_goals_solved_by_actions():
    from apt.splits.command import splits_command
    from apt.splits.instruction_set import load_instruction_set
    from apt.splits.validate import check_instruction_set
    from benchmarks.libero import LiberoSuite

    sets = C.BDDL_DIR.parents[3] / "instruction_sets" / "libero" / "libero_goal"
    tasks = LiberoSuite("libero_goal").tasks()
    iset = load_instruction_set(sets / "compositional.yaml")
    assert check_instruction_set(iset, tasks, load_instruction_set(sets / "train.yaml")) == []
    by_task = iset.by_task()
    assert set(by_task) == {_goal(n).task_id for n in ACTION_SOLVED}  # only goals shown solvable
    for g in (_goal(n) for n in ACTION_SOLVED):
        entries = by_task[g.task_id]
        canonical = [e for e in entries if "paraphrase" not in e.axis]
        assert [e.instruction for e in canonical] == [g.instruction] and canonical[0].axis == g.axis
    assert splits_command(LiberoSuite("libero_goal"), True, []) == 0  # `apt-bench splits --suite libero_goal --check`


# --- the real simulator ------------------------------------------------------------------------


def _make_goal_hold(env, goal: C.CompositionalGoal, atoms=None, settle: int = 40) -> dict:
    """Write MuJoCo state so that `atoms` (default: the whole goal) hold, then step to settle.

    Open/Turnon: the articulation's joints set to the middle of LIBERO's own open / turn-on range.
    On/In: the object's free joint moved onto (4 cm above) / into the target body or region site,
    velocities zeroed; then `settle` zero-delta steps (gripper open) let physics settle it.
    """
    from benchmarks.libero.bddl import read_bddl

    e = env._env.env
    sim = e.sim
    fixtures = read_bddl(C.BDDL_DIR / goal.file_name).fixtures
    atoms = goal.goal if atoms is None else atoms
    for atom in sorted(atoms, key=lambda a: a[0].lower() in ("on", "in")):  # open drawers first
        pred = atom[0].lower()
        if pred in ("open", "turnon"):
            name = atom[1]
            if name in e.object_sites_dict:
                joints = e.object_sites_dict[name].joints
                parent = next(f for f in fixtures if name.startswith(f + "_"))
            else:
                joints, parent = e.get_object(name).joints, name
            art = e.get_object(parent).object_properties["articulation"]
            q = float(np.mean(art["default_open_ranges" if pred == "open" else "default_turnon_ranges"]))
            assert joints
            for j in joints:
                sim.data.set_joint_qpos(j, q)
        elif pred in ("on", "in"):
            obj, target = atom[1], atom[2]
            sim.forward()
            if target in e.object_sites_dict:
                pos = np.array(sim.data.get_site_xpos(target))
            else:
                pos = np.array(sim.data.body_xpos[e.obj_body_id[target]])
            (joint,) = e.get_object(obj).joints
            qpos = np.array(sim.data.get_joint_qpos(joint))
            qpos[:3] = pos + [0, 0, 0.04 if pred == "on" else 0.01]
            sim.data.set_joint_qpos(joint, qpos)
            sim.data.set_joint_qvel(joint, np.zeros(6))
        else:  # pragma: no cover - a new predicate needs a new branch here
            raise AssertionError(f"no way to make {atom} hold")
    sim.forward()
    info: dict = {}
    for _ in range(settle):
        _, _, info = env.step(SETTLE)
    return info


@pytest.mark.slow
@pytest.mark.parametrize("name", GOAL_NAMES)
def test_goal_loads_and_its_predicate_holds_only_when_the_goal_state_holds(name):
    from benchmarks.libero import LiberoSuite

    goal = _goal(name)
    suite = LiberoSuite("libero_goal")
    env = suite.make_env(goal.task_id, image_size=64, cameras=("agentview",))
    try:
        obs = env.reset(init_state=0)
        assert obs["instruction"] == goal.instruction
        for _ in range(5):
            obs, done, info = env.step(np.zeros(7, np.float32))
            assert info["success"] is False and done is False  # false at reset
        img = obs["images"]["agentview"]
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and img.std() > 1
        assert obs["state"].shape == (8,) and np.all(np.isfinite(obs["state"]))
        if len(goal.goal) > 1:  # a conjunction: each part alone is not success
            for atom in goal.goal:
                env.reset(init_state=0)
                assert _make_goal_hold(env, goal, atoms=(atom,))["success"] is False, atom
        env.reset(init_state=0)
        assert _make_goal_hold(env, goal)["success"] is True
    finally:
        env.close()


def _pick_and_place(env, obs, obj: str, target: str, grasp_dz: float,
                    gain: float) -> tuple[int | None, bool]:
    """Scripted waypoints for the OSC delta controller from privileged object poses.

    Returns (the step at which success was first seen or None, success at the end). Actions:
    xyz delta = clip(gain * error, -1, 1), no rotation (the gripper starts pointing down),
    gripper -1 open / +1 closed.
    """
    sim = env._env.env.sim
    state = {"obs": obs, "first": None, "steps": 0}

    def eef():
        return state["obs"]["privileged"]["robot0_eef_pos"]

    def step(a):
        state["obs"], _, info = env.step(a)
        state["steps"] += 1
        if info["success"] and state["first"] is None:
            state["first"] = state["steps"]

    def go(goal_pos, grip, n=60, tol=0.005):
        for _ in range(n):
            d = goal_pos - eef()
            step(np.concatenate([np.clip(gain * d, -1, 1), [0, 0, 0], [grip]]))
            if np.linalg.norm(d) < tol:
                break

    def hold(grip, n):
        for _ in range(n):
            step(np.array([0, 0, 0, 0, 0, 0, grip], dtype=float))

    o = state["obs"]["privileged"][f"{obj}_pos"].copy()
    go(o + [0, 0, 0.10], -1)
    go(o + [0, 0, grasp_dz], -1, tol=0.003)
    hold(1, 15)
    go(eef() + [0, 0, 0.15], 1)
    t = (np.array(sim.data.get_site_xpos(target)) if target.endswith(("_region", "_side"))
         else state["obs"]["privileged"][f"{target}_pos"].copy())
    go(t + [0, 0, 0.15 + grasp_dz], 1)
    go(t + [0, 0, 0.03 + grasp_dz], 1, tol=0.004)
    hold(-1, 20)
    go(eef() + [0, 0, 0.10], -1)
    hold(-1, 10)
    return state["first"], bool(env._env.check_success())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ACTION_SOLVED))
def test_goal_is_solvable_by_a_hand_written_action_sequence(name):
    from benchmarks.libero import LiberoSuite

    goal = _goal(name)
    ((pred, obj, target),) = goal.goal
    assert pred == "On"
    env = LiberoSuite("libero_goal").make_env(goal.task_id, cameras=())
    try:
        for init in (0, 7):
            obs = env.reset(init_state=init)
            first, at_end = _pick_and_place(env, obs, obj, target, *ACTION_SOLVED[name])
            assert first is not None and at_end, f"{name}: scripted pick-and-place failed, init {init}"
            assert first <= 300  # within LIBERO-Goal's episode budget (the engine stops at success)
    finally:
        env.close()
