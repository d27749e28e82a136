"""The scripted LIBERO-Goal expert (benchmarks/libero/expert.py, with its motion primitives in
motion.py and the scene's geometry in goal_scene.py).

- Planning from BDDL goals (no simulator): each goal atom maps to the right skill sequence, a
  drawer is opened before something is put in it, and goals without a skill are refused clearly.
- Orientation helpers: the pitch used for drawer handles points the gripper where asked, and the
  rotation-error vector inverts a known rotation.
- Slow, real LIBERO: the expert solves two tasks with different skills (drawer opening and the
  stove knob) from several fixed init states within LIBERO-Goal's 300-step budget, reads only the
  privileged state, and refuses benchmarks whose scene it was not written for.
- Slow, real LIBERO: `apt-bench demos` writes LIBERO HDF5 from fresh sampled layouts (none of
  them an evaluation start); the loader reads back the same states, actions and labels, and
  replaying a demo's actions from its first stored MuJoCo state follows the recorded path.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.base import BenchError
from benchmarks.libero import expert as E
from benchmarks.libero import goal_scene as S
from benchmarks.libero import motion as M

GOAL_PLANS = {
    (("Open", "wooden_cabinet_1_middle_region"),): [("open_drawer", "wooden_cabinet_1_middle_region")],
    (("In", "akita_black_bowl_1", "wooden_cabinet_1_top_region"),):
        [("clear", "akita_black_bowl_1", "wooden_cabinet_1_top_region"),
         ("open_drawer", "wooden_cabinet_1_top_region"),
         ("pick_place", "akita_black_bowl_1", "wooden_cabinet_1_top_region")],
    (("On", "plate_1", "main_table_stove_front_region"),):
        [("push", "plate_1", "main_table_stove_front_region")],
    (("Turnon", "flat_stove_1"),): [("turn_on", "flat_stove_1")],
    (("On", "cream_cheese_1", "akita_black_bowl_1"),):
        [("pick_place", "cream_cheese_1", "akita_black_bowl_1")],
    (("Open", "wooden_cabinet_1_top_region"), ("In", "cream_cheese_1", "wooden_cabinet_1_top_region")):
        [("clear", "cream_cheese_1", "wooden_cabinet_1_top_region"),
         ("open_drawer", "wooden_cabinet_1_top_region"),
         ("pick_place", "cream_cheese_1", "wooden_cabinet_1_top_region")],
}


@pytest.mark.parametrize("goal", list(GOAL_PLANS), ids=lambda g: "+".join(a[0] for a in g))
def test_plan_maps_goal_atoms_to_skills_in_order(goal):
    assert E.plan_for(goal) == GOAL_PLANS[goal]


@pytest.mark.parametrize("atom", [("Close", "wooden_cabinet_1_top_region"),
                                  ("On", "plate_1", "akita_black_bowl_1"),
                                  ("On", "ketchup_1", "plate_1")])
def test_plan_refuses_goals_it_has_no_skill_for(atom):
    with pytest.raises(BenchError, match="no skill for the goal atom"):
        E.plan_for((atom,))


def test_pitch_points_a_downward_gripper_along_the_direction():
    down = np.array([0.0, 0.0, -1.0])
    for direction in ([0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [np.sqrt(0.5), np.sqrt(0.5), 0.0]):
        r = M.pitch_towards(np.array(direction))
        np.testing.assert_allclose(r @ down, direction, atol=1e-12)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)


def test_push_lean_tips_the_fingers_back_from_the_push_direction():
    """The push leans the hand toward the goal: rotating about z x d by the tilt moves a downward
    gripper's fingertips back against d (behind the hand), and about z it is a plain yaw."""
    d = np.array([np.sqrt(0.5), np.sqrt(0.5), 0.0])
    tilt = M.rotation_about(np.cross([0.0, 0.0, 1.0], d), 0.9)
    pointing = tilt @ np.array([0.0, 0.0, -1.0])
    np.testing.assert_allclose(pointing, -np.sin(0.9) * d + [0, 0, -np.cos(0.9)], atol=1e-12)
    np.testing.assert_allclose(M.rotation_about(np.array([0.0, 0.0, 2.0]), 0.4), M.yaw_rotation(0.4), atol=1e-12)


def test_rotation_vector_inverts_a_known_rotation():
    for angle in (0.0, 0.3, -1.2, 3.0):
        np.testing.assert_allclose(M.rotation_vector(M.yaw_rotation(angle)), [0.0, 0.0, angle], atol=1e-9)


# --- real LIBERO ------------------------------------------------------------------------------

from benchmarks.libero.stack import have_libero  # noqa: E402

HAVE_LIBERO = have_libero()
needs_libero = pytest.mark.skipif(not HAVE_LIBERO, reason="LIBERO is not importable here "
                                  "(install with `bash install.sh --libero`)")


def _run(suite, task_id: str, init: int, max_steps: int = 300) -> tuple[bool, int, dict]:
    env = suite.make_env(task_id, cameras=())
    try:
        policy = suite.expert(task_id)
        obs = env.reset(init_state=init)
        for step in range(1, max_steps + 1):
            chunk = policy.act([obs])
            assert chunk.shape == (1, 1, 7) and chunk.dtype == np.float32
            assert np.all(np.abs(chunk) <= 1.0)
            obs, success, _ = env.step(chunk[0, 0])
            if success:
                return True, step, obs["privileged"]
        return False, max_steps, obs["privileged"]
    finally:
        env.close()


@needs_libero
@pytest.mark.slow
@pytest.mark.parametrize("task_id", ["libero_goal/0", "libero_goal/7"])  # drawer; stove knob
def test_expert_solves_the_task_from_several_init_states(task_id):
    from benchmarks.libero import LiberoSuite

    suite = LiberoSuite("libero_goal")
    for init in (0, 11, 37):
        ok, steps, p = _run(suite, task_id, init)
        assert ok, f"{task_id} init {init}: not solved in 300 steps; joints {p['fixture_joints']}"
        assert steps < 250


@needs_libero
def test_expert_exists_only_for_the_libero_goal_scene():
    from benchmarks.libero import LiberoSuite

    with pytest.raises(BenchError, match="LIBERO-Goal scene only"):
        LiberoSuite("libero_spatial").expert("libero_spatial/0")
    policy = LiberoSuite("libero_goal").expert("libero_goal/comp-cheese-on-plate")
    assert policy.plan == [("pick_place", "cream_cheese_1", "plate_1")]
    with pytest.raises(BenchError, match="privileged fixture state"):
        policy.act([{"privileged": {"robot0_eef_pos": np.zeros(3)}}])


@needs_libero
@pytest.mark.slow
def test_demos_are_written_as_libero_hdf5_from_sampled_layouts_and_replay(tmp_path):
    import json

    import h5py

    from apt.demos.formats import load_demos
    from apt.demos.generate import generate_demos
    from benchmarks.libero import LiberoSuite

    suite = LiberoSuite("libero_goal")
    out = tmp_path / "demos"
    summary = generate_demos(suite, out, episodes_per_task=2, workers=0, tasks=["libero_goal/7"],
                             image_size=32, progress=False)
    assert summary.episodes == 2 and summary.per_task == {"libero_goal/7": 2}
    record = json.loads((out / "generation.json").read_text())
    assert record["format"] == "libero_hdf5" and record["reset_options"] == {"init_state": "sampled"}
    assert not (out / "meta.json").exists()  # so load_demos reads the .hdf5 files
    with h5py.File(out / "turn_on_the_stove_demo.hdf5", "r") as f:
        info = json.loads(f["data"].attrs["problem_info"])
        assert info["language_instruction"] == "turn on the stove"
        demos = [f[f"data/demo_{i}"] for i in range(2)]
        starts = np.stack([d["states"][0] for d in demos])
        ee = [np.asarray(d["obs/ee_pos"]) for d in demos]
        first_actions = np.asarray(demos[0]["actions"])
        assert demos[0]["obs/agentview_rgb"].shape[1:] == (32, 32, 3)
        assert demos[0]["obs/joint_states"].shape[1] == 7 and demos[0]["dones"][-1] == 1
    fixed = suite.init_states("libero_goal/7")
    # Fresh layouts: the two demos differ from each other and from every evaluation start.
    assert np.abs(starts[0] - starts[1]).max() > 1e-3
    assert min(np.abs(fixed - s).max() for s in starts) > 1e-3

    loaded = load_demos(out, suite=suite)
    assert loaded.num_episodes == 2 and set(loaded.task_ids) == {"libero_goal/7"}
    assert set(loaded.instructions) == {"turn on the stove"}
    np.testing.assert_allclose(loaded.states[: len(ee[0]), :3], ee[0], atol=1e-6)
    np.testing.assert_allclose(loaded.actions[: len(first_actions)], first_actions, atol=1e-6)

    env = suite.make_env("libero_goal/7", cameras=())
    try:  # LIBERO's own replay: restore the first stored state, apply the stored actions
        obs = env.reset(init_state=starts[0])
        path = []
        for a in first_actions:
            path.append(obs["state"][:3])
            obs, _, _ = env.step(a)
        # Contact makes replays drift (the recorded episode stops the step the knob crosses the
        # success threshold, so a replay can end just short of it): the arm must follow the
        # recorded path and turn the knob most of the way.
        assert np.abs(np.stack(path) - ee[0]).max() < 0.01
        assert obs["privileged"]["fixture_joints"]["flat_stove_1_button"] > 0.3
    finally:
        env.close()


# --- geometry of the drawer-clearing step, on a synthetic LIBERO-Goal scene -------------------

def _scene(bowl_xy, top_q=0.0):
    """Privileged state shaped like LiberoEnv's for the LIBERO-Goal scene (task 3, init 0): the
    cabinet turned 180 degrees about z, its drawers opening toward +y."""
    cabinet = (np.array([0.0208, -0.2335, 0.905]), np.array([0.0, 0.0, 0.0, 1.0]))
    return {"robot0_eef_pos": np.array([-0.2, 0.0, 1.18]), "robot0_eef_quat": np.array([1.0, 0.0, 0.0, 0.0]),
            "akita_black_bowl_1_pos": np.array([*bowl_xy, 0.898]),
            "wine_bottle_1_pos": np.array([-0.211, -0.035, 0.899]),
            "cream_cheese_1_pos": np.array([-0.049, 0.148, 0.909]),
            "plate_1_pos": np.array([0.035, -0.012, 0.903]),
            "fixture_bodies": {f"wooden_cabinet_1_cabinet_{lvl}": cabinet for lvl in ("top", "middle", "bottom")},
            "fixture_joints": {"wooden_cabinet_1_top_level": top_q, "wooden_cabinet_1_middle_level": 0.0,
                               "wooden_cabinet_1_bottom_level": 0.0},
            "sites": {"wooden_cabinet_1_top_region": np.array([0.035, -0.243, 1.091])}}


def _episode(privileged):
    from benchmarks.base import ActionSpec

    expert = E.LiberoExpert("libero_goal/3", (("In", "akita_black_bowl_1", "wooden_cabinet_1_top_region"),),
                            ActionSpec(dim=7))
    return E._Episode(expert, privileged, np.random.default_rng(0))


def test_open_drawer_footprint_moves_with_the_slide():
    ep = _episode(_scene((-0.08, 0.014)))
    lo, hi = S.drawer_rect(ep.p, "wooden_cabinet_1_cabinet_top", E.DRAWER_OPEN_Q)
    # the box's front (local -y) faces world +y and moves out by the slide's travel
    np.testing.assert_allclose(lo, [0.0208 - 0.1127, -0.2335 + 0.152 - 0.0943], atol=1e-6)
    np.testing.assert_allclose(hi, [0.0208 + 0.106, -0.2335 + 0.152 + 0.1093], atol=1e-6)
    closed_lo, _ = S.drawer_rect(ep.p, "wooden_cabinet_1_cabinet_top", 0.0)
    assert closed_lo[1] == pytest.approx(lo[1] - 0.152)


def test_bowl_under_the_drawer_is_dragged_out_sideways_never_into_the_cabinet():
    ep = _episode(_scene((-0.08, 0.014)))  # under the open drawer's front-left corner
    d = ep._way_out("akita_black_bowl_1", "wooden_cabinet_1_cabinet_top")
    assert d is not None and d[0] < 0 and d[1] >= 0, d  # away from the drawer, not toward -y
    assert np.linalg.norm(d) == pytest.approx(1.0)
    far = _episode(_scene((-0.25, 0.15)))
    assert far._way_out("akita_black_bowl_1", "wooden_cabinet_1_cabinet_top") is None


def test_bowl_is_grasped_where_the_hand_misses_the_open_drawer():
    cleared = _episode(_scene((-0.137, 0.049), top_q=-0.157))  # where the drag leaves it
    (lo, hi), = S.open_drawer_rects(cleared.p)
    offset, yaw = cleared._grasp("akita_black_bowl_1")
    point = np.array([-0.137, 0.049]) + offset[:2]
    half = np.array([S.HAND_HALF_DEPTH, S.HAND_HALF_SPAN]) if yaw == 0.0 \
        else np.array([S.HAND_HALF_SPAN, S.HAND_HALF_DEPTH])
    assert np.any(point - half > hi) or np.any(point + half < lo)  # footprints apart
    # with no drawer open the bowl is taken at its default rim point, upright
    offset, yaw = _episode(_scene((-0.137, 0.049)))._grasp("akita_black_bowl_1")
    assert yaw == 0.0 and np.allclose(offset, E.GRASP_OFFSET["akita_black_bowl"])


def test_expert_table_lists_every_goal_and_reports_failures():
    from benchmarks.libero import compositional
    from benchmarks.libero.expert_table import TaskRow, task_ids, to_markdown

    ids = task_ids()
    assert ids[:10] == [f"libero_goal/{i}" for i in range(10)]
    assert ids[10:] == [g.task_id for g in compositional.GOALS] and len(set(ids)) == len(ids)
    md = to_markdown([TaskRow("libero_goal/3", 50, 43, (0, 10), 283.3, 292, 300),
                      TaskRow("libero_goal/9", 50, 0, tuple(range(50)), None, None, 300)])
    lines = md.splitlines()
    assert lines[2] == "| libero_goal/3 | 86% | 43/50 | 283.3 | 292 (limit 300) | 0, 10 |"
    assert lines[3].startswith("| libero_goal/9 | 0% | 0/50 | - | - (limit 300) | 0, 1, 2,")
