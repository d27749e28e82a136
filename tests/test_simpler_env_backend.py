"""The original-SimplerEnv backend (`simpler_env`, user-installed): the Google Robot task table and
its instruction sets, the install error, and SimplerEnvEnv's action/observation mapping against a
fake env shaped like ManiSkill2_real2sim's. The real-simulator check runs only where `simpler_env`
is importable (it is not on PyPI; see benchmarks/simpler/simpler_env_backend.py).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from apt.registry import get_suite
from benchmarks.base import BenchError, Env, Suite
from conftest import assert_imports_lazily

GOOGLE = {
    "google_robot_pick_coke_can": ("pick coke can", 80),
    "google_robot_open_top_drawer": ("open top drawer", 113),
    "google_robot_open_middle_drawer": ("open middle drawer", 113),
    "google_robot_open_bottom_drawer": ("open bottom drawer", 113),
    "google_robot_close_top_drawer": ("close top drawer", 113),
    "google_robot_close_middle_drawer": ("close middle drawer", 113),
    "google_robot_close_bottom_drawer": ("close bottom drawer", 113),
}
BRIDGE = ("widowx_spoon_on_towel", "widowx_carrot_on_plate", "widowx_stack_cube",
          "widowx_put_eggplant_in_basket")
JOINTS = {
    "google_robot": (["joint_torso", "joint_shoulder", "joint_bicep", "joint_elbow", "joint_forearm",
                      "joint_wrist", "joint_gripper", "joint_finger_right", "joint_finger_left",
                      "joint_head_pan", "joint_head_tilt"], ["joint_finger_right", "joint_finger_left"]),
    "widowx": (["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate",
                "left_finger", "right_finger"], ["left_finger", "right_finger"]),
}
SIZES = {"google_robot": (512, 640), "widowx": (480, 640)}
CAMS = {"google_robot": "overhead_camera", "widowx": "3rd_view_camera"}
Z90 = [math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)]  # +90 deg about z, wxyz


class FakeSimplerEnv:
    """What `simpler_env.make(task)` returns, reduced to what SimplerEnvEnv touches."""

    def __init__(self, task_id: str, instruction: str = "from the env", success_at: int = 3):
        self.robot_uid = "widowx" if task_id.startswith("widowx") else "google_robot_static"
        robot = "widowx" if task_id.startswith("widowx") else "google_robot"
        names, fingers = JOINTS[robot]
        self.cam, self.hw = CAMS[robot], SIZES[robot]
        self.qpos = np.arange(len(names), dtype=np.float64) / 10
        self.unwrapped = self
        self.agent = SimpleNamespace(
            robot=SimpleNamespace(pose=SimpleNamespace(p=np.array([1.0, 2.0, 0.0]), q=np.array(Z90)),
                                  get_active_joints=lambda: [SimpleNamespace(name=n) for n in names],
                                  get_qpos=lambda: self.qpos),
            config=SimpleNamespace(gripper_joint_names=fingers))
        self.tcp = SimpleNamespace(pose=SimpleNamespace(p=np.array([1.0, 3.0, 0.5]), q=np.array(Z90)))
        self.instruction, self.success_at = instruction, success_at
        self.resets: list[tuple] = []
        self.actions: list[np.ndarray] = []
        self.closed = False

    def get_language_instruction(self) -> str:
        return self.instruction

    def reset(self, seed=None, options=None):
        self.resets.append((seed, options))
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.actions.append(np.array(action, dtype=np.float64))
        self.t += 1
        done = self.t >= self.success_at
        return self._obs(), float(done), done, False, {"success": np.bool_(done), "is_grasped": True,
                                                        "episode_stats": {}}

    def close(self):
        self.closed = True

    def _obs(self):
        h, w = self.hw
        rgb = np.full((h, w, 3), 7 * self.t if hasattr(self, "t") else 0, dtype=np.uint8)
        return {"agent": {"qpos": self.qpos, "base_pose": np.zeros(7)},
                "image": {self.cam: {"rgb": rgb, "depth": np.zeros((h, w, 1), np.float32)}}}


@pytest.fixture(scope="module")
def google():
    from apt.registry import get_suite

    return get_suite("simpler_google")


def _env(task_id: str, robot: str, **kw):
    from benchmarks.simpler.simpler_env_backend import SimplerEnvEnv

    fake = FakeSimplerEnv(task_id, **kw)
    env = SimplerEnvEnv(task_id=task_id, robot=robot, image_size=64, cameras=(CAMS[robot],),
                        n_configs=75 if task_id == "google_robot_pick_coke_can" else (
                            24 if robot == "widowx" else None),
                        env_factory=lambda tid: fake)
    return env, fake


# --- without simpler_env --------------------------------------------------------------------------


def test_import_is_lazy():
    assert_imports_lazily("import benchmarks.simpler as S; s = S.simpler_google(); s.tasks()",
                          ("simpler_env", "mani_skill2_real2sim", "mani_skill", "sapien", "gymnasium",
                           "torch"))


def test_google_tasks_and_specs(google):
    from benchmarks.simpler.google_robot import NOT_INCLUDED, SIMPLER_ENV_TASKS

    assert isinstance(google, Suite) and google.name == "simpler_google"
    tasks = {t.task_id: t for t in google.tasks()}
    assert {tid: (t.instruction, t.max_steps) for tid, t in tasks.items()} == GOOGLE
    assert all(t.train and t.attributes["robot"] == "google_robot" for t in tasks.values())
    assert tasks["google_robot_close_middle_drawer"].attributes["env_id"] == "CloseMiddleDrawerCustomInScene-v0"
    assert tasks["google_robot_open_top_drawer"].attributes["control_freq_hz"] == "3"
    # Every SimplerEnv task is a Google task here, a Bridge task, or left out with a reason.
    assert len(SIMPLER_ENV_TASKS) == 23 and set(tasks) <= set(SIMPLER_ENV_TASKS)
    assert set(tasks) | set(BRIDGE) | set(NOT_INCLUDED) == set(SIMPLER_ENV_TASKS)
    assert not set(tasks) & set(NOT_INCLUDED)
    a = google.action_spec
    assert (a.dim, a.mode, a.rotation, a.gripper) == (7, "delta", "axis_angle", "last dim: -1 open, +1 closed")
    assert google.observation_spec.cameras == ("overhead_camera",) and google.observation_spec.state_dim == 8
    assert google.protocol()["control_freq_hz"] == 3
    with pytest.raises(BenchError, match="did you mean 'google_robot_open_top_drawer'"):
        google.make_env("google_robot_open_top_drawers")
    with pytest.raises(BenchError, match="left out: the drawer"):
        google.make_env("google_robot_open_drawer")
    with pytest.raises(BenchError, match="unknown SimplerEnv camera"):
        google.make_env("google_robot_pick_coke_can", cameras=("3rd_view_camera",))
    with pytest.raises(BenchError, match="no scripted expert"):
        google.expert("google_robot_pick_coke_can")


def test_instruction_sets_validate(google, capsys):
    from apt.cli import main
    from apt.splits.resolve import load_split

    assert main(["splits", "--suite", "simpler_google", "--check"]) == 0
    assert "ok: 4 file(s)" in capsys.readouterr().out
    tasks = google.tasks()
    seen = load_split("simpler_google", "seen", tasks)
    assert {e.task_id: e.instruction for e in seen.entries} == {t.task_id: t.instruction for t in tasks}
    for split in ("paraphrased", "unseen"):
        by_task = load_split("simpler_google", split, tasks).by_task()
        assert set(by_task) == set(GOOGLE) and all(len(v) >= 5 for v in by_task.values())
    swapped = load_split("simpler_google", "swapped", tasks)
    by_id = {t.task_id: t for t in tasks}
    for e in swapped.entries:  # a drawer task gets another drawer of the same skill
        if e.task_id != "google_robot_pick_coke_can":
            assert e.instruction.split()[0] == by_id[e.task_id].instruction.split()[0]
            assert e.instruction != by_id[e.task_id].instruction


def test_make_env_without_simpler_env_names_the_install_steps(monkeypatch, google):
    from benchmarks.simpler import simpler, stack

    monkeypatch.setattr(stack, "have_simpler_env", lambda: False)
    for make in (lambda: google.make_env("google_robot_pick_coke_can"),
                 lambda: simpler(backend="simpler_env").make_env("widowx_carrot_on_plate")):
        with pytest.raises(BenchError, match="not installed") as err:
            make()
        for step in ("github.com/simpler-env/SimplerEnv", "--recurse-submodules",
                     "pip install -e ManiSkill2_real2sim", "pip install -e ."):
            assert step in str(err.value)


# --- action and observation mapping, against a fake env -------------------------------------------


def test_action_conversion_per_robot():
    from benchmarks.simpler.simpler_env_backend import to_simpler_env_action

    rot = np.array([0.1, -0.2, 0.3])
    a = np.array([0.01, -0.02, 2.0, *rot, 1.0])
    out, c = to_simpler_env_action(a, "widowx", 0.0)
    assert out.dtype == np.float64 and out.shape == (7,)
    np.testing.assert_allclose(out[:3], [0.01, -0.02, 1.0])  # translation clipped to [-1, 1]
    np.testing.assert_allclose(out[3:6], rot)  # axis-angle passed through
    assert out[6] == -1.0  # ours +1 closed -> WidowX -1 (close)
    assert to_simpler_env_action(np.array([0, 0, 0, 0, 0, 0, -1.0]), "widowx", c)[0][6] == 1.0
    # A rotation beyond pi/2 keeps its axis, its angle is clipped.
    big, _ = to_simpler_env_action(np.array([0, 0, 0, 0, 0, 3.0, 0.0]), "widowx", 0.0)
    np.testing.assert_allclose(big[3:6], [0, 0, math.pi / 2])
    # Google Robot: absolute closedness -> relative target, from the open gripper after reset.
    c, sent = 0.0, []
    for g in (-1.0, 1.0, 1.0, 0.0, -1.0, 5.0):
        out, c = to_simpler_env_action(np.array([0, 0, 0, *rot, g]), "google_robot", c)
        np.testing.assert_allclose(out[3:6], rot)
        sent.append(out[6])
    np.testing.assert_allclose(sent, [0.0, 1.0, 0.0, -0.5, -0.5, 1.0])
    with pytest.raises(BenchError, match="unknown SimplerEnv robot"):
        to_simpler_env_action(a, "panda", 0.0)


@pytest.mark.parametrize("task_id,robot", [("google_robot_pick_coke_can", "google_robot"),
                                           ("google_robot_close_top_drawer", "google_robot"),
                                           ("widowx_carrot_on_plate", "widowx")])
def test_env_maps_observations_actions_and_success(task_id, robot):
    env, fake = _env(task_id, robot)
    assert isinstance(env, Env)
    with pytest.raises(BenchError, match="before reset"):
        env.step(np.zeros(7))
    obs = env.reset(seed=101, instruction="  Do it, Robot!  ")
    assert obs["instruction"] == "  Do it, Robot!  "  # verbatim
    img = obs["images"][CAMS[robot]]
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and set(obs["images"]) == {CAMS[robot]}
    st = obs["state"]
    assert st.shape == (8,) and st.dtype == np.float32
    np.testing.assert_allclose(st[:3], [1.0, 0.0, 0.5], atol=1e-6)  # tcp in the rotated base frame
    np.testing.assert_allclose(st[3:6], 0.0, atol=1e-6)
    names, fingers = JOINTS[robot]
    np.testing.assert_allclose(st[6:], [fake.qpos[names.index(f)] for f in fingers])
    seed, options = fake.resets[-1]
    assert seed == 101
    opts = options["obj_init_options"]
    if task_id == "google_robot_pick_coke_can":  # 101 mod 75 = 26: grid cell 1, 2nd orientation
        assert opts["episode_id"] == 26 and opts["orientation"] == "upright"
        np.testing.assert_allclose(opts["init_xy"], [-0.35, 0.09])
    elif robot == "widowx":
        assert opts == {"episode_id": 101 % 24}
    else:
        assert opts == {"episode_id": 101}
    assert env.reset(seed=5, init_state=3).get("instruction") == "from the env"
    assert fake.resets[-1][1]["obj_init_options"]["episode_id"] == 3
    with pytest.raises(BenchError, match="episode index"):
        env.reset(init_state="3")

    steps = []
    for g in (1.0, 1.0, -1.0):
        obs, done, info = env.step(np.array([0.01, 0, 0, 0, 0.1, 0, g], dtype=np.float32))
        steps.append((done, info["success"]))
    assert steps == [(False, False), (False, False), (True, True)]
    assert info["is_grasped"] is True and "episode_stats" not in info
    grip = [a[6] for a in fake.actions]
    assert grip == ([1.0, 0.0, -1.0] if robot == "google_robot" else [-1.0, -1.0, 1.0])
    np.testing.assert_allclose(fake.actions[0][3:6], [0, 0.1, 0], rtol=1e-6)
    with pytest.raises(BenchError, match=r"float\[7\]"):
        env.step(np.zeros(6))
    env.close()
    assert fake.closed


def test_simpler_suite_backend_simpler_env_builds_these_envs(monkeypatch):
    from benchmarks.simpler import SimplerSuite, stack
    from benchmarks.simpler.simpler_env_backend import SimplerEnvEnv

    made: list[str] = []

    def make(task_id):
        made.append(task_id)
        return FakeSimplerEnv(task_id)

    monkeypatch.setattr(stack, "import_simpler_env", lambda: SimpleNamespace(make=make))
    suite = get_suite("simpler_env")
    assert suite.name == "simpler" and suite.backend == "simpler_env"
    assert [t.task_id for t in suite.tasks()] == list(BRIDGE)  # no ManiSkill3-only compositional tasks
    assert suite.tasks()[0].attributes["env_id"] == "PutSpoonOnTableClothInScene-v0"
    assert suite.action_spec.rotation == "axis_angle"
    assert suite.protocol()["n_configs"]["widowx_put_eggplant_in_basket"] == 24
    env = suite.make_env("widowx_stack_cube", image_size=32)
    assert isinstance(env, SimplerEnvEnv) and made == ["widowx_stack_cube"]
    assert env.reset(seed=0)["images"]["3rd_view_camera"].shape == (32, 32, 3)
    with pytest.raises(BenchError, match="did you mean 'widowx_stack_cube'"):
        suite.make_env("widowx_stack_cubes")
    # The Google suite builds through the same import.
    from benchmarks.simpler import simpler_google

    assert simpler_google().make_env("google_robot_open_top_drawer").reset(seed=1)["state"].shape == (8,)


# --- the real SimplerEnv (only where the user installed it) ----------------------------------------


def _have_simpler_env() -> bool:
    from benchmarks.simpler import stack

    return stack.have_simpler_env()


@pytest.mark.slow
@pytest.mark.skipif(not _have_simpler_env(), reason="simpler_env (original SimplerEnv) not installed; "
                    "see github.com/simpler-env/SimplerEnv")
def test_real_simpler_env_ids_and_instructions():
    import simpler_env

    from benchmarks.simpler import simpler, simpler_google

    suites = [simpler_google(), simpler(backend="simpler_env")]
    for suite in suites:
        assert {t.task_id for t in suite.tasks()} <= set(simpler_env.ENVIRONMENTS)
        for t in suite.tasks():
            env = suite.make_env(t.task_id, image_size=64)
            try:
                obs = env.reset(seed=0)
                assert obs["instruction"] == t.instruction
                assert env._env.unwrapped.get_language_instruction() == t.instruction
                obs, _, info = env.step(np.zeros(7, dtype=np.float32))
                assert isinstance(info["success"], bool) and obs["state"].shape == (8,)
            finally:
                env.close()
