"""The tabletop environment: layouts, observations, rendering, errors (real MuJoCo, small sizes)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.base import BenchError, Env, Policy, Suite, check_compatible
from benchmarks.tabletop import TabletopSuite
from benchmarks.tabletop.tasks import all_tasks

SUITE = TabletopSuite()
TASK_IDS = [t.task_id for t in SUITE.tasks()]


def _poses(obs) -> dict[str, np.ndarray]:
    p = obs["privileged"]
    out = {f"block_{c}": v for c, v in p["blocks"].items()}
    out |= {f"quat_{c}": v for c, v in p["block_quat"].items()}
    out |= {f"rec_{r}": v for r, v in p["receptacles"].items()}
    out["tcp"] = p["tcp"]
    return out


def test_suite_satisfies_protocols():
    assert isinstance(SUITE, Suite)
    assert SUITE.name == "tabletop" and SUITE.version == "1"
    assert len(SUITE.tasks()) == 32 and len(set(TASK_IDS)) == 32
    env = SUITE.make_env(TASK_IDS[0], cameras=())
    assert isinstance(env, Env)
    expert = SUITE.expert(TASK_IDS[0])
    assert isinstance(expert, Policy) and expert.spec.chunk == 1
    check_compatible(SUITE.action_spec, SUITE.observation_spec, expert.spec)


def test_layout_depends_only_on_seed():
    envs = [SUITE.make_env(tid, cameras=()) for tid in TASK_IDS]
    for seed in (0, 1, 17):
        ref = _poses(envs[0].reset(seed=seed))
        for env in envs[1:]:
            poses = _poses(env.reset(seed=seed))
            for k in ref:
                np.testing.assert_array_equal(poses[k], ref[k], err_msg=f"{env.task_id} seed {seed} {k}")
    a, b = _poses(envs[0].reset(seed=0)), _poses(envs[0].reset(seed=1))
    assert not np.allclose(a["block_red"], b["block_red"])
    assert not np.allclose(a["rec_bowl"], b["rec_bowl"])


def test_layouts_are_separated():
    env = SUITE.make_env(TASK_IDS[0], cameras=())
    for seed in range(40):
        p = env.reset(seed=seed)["privileged"]
        blocks = np.array([v[:2] for v in p["blocks"].values()])
        items = np.concatenate([blocks, np.array([v[:2] for v in p["receptacles"].values()])])
        d = np.linalg.norm(items[:, None] - items[None], axis=-1) + np.eye(len(items))
        assert d.min() > 0.08, f"seed {seed}: items {d.min():.3f} m apart"


def test_success_false_at_reset_and_after_idle_steps():
    envs = {tid: SUITE.make_env(tid, cameras=()) for tid in TASK_IDS}
    for seed in range(30):
        for tid, env in envs.items():
            env.reset(seed=seed)
            assert not env.task_success(), f"{tid} succeeds at reset of seed {seed}"
    for tid, env in envs.items():  # a gripper that only opens does not solve anything either
        env.reset(seed=5)
        for _ in range(3):
            _, done, info = env.step(np.array([0, 0, 0, -1], dtype=np.float32))
            assert info["success"] is False and done is False, tid


def test_observation_shapes_and_instruction():
    env = SUITE.make_env("stack-red-green", image_size=48, cameras=("front", "wrist"))
    obs = env.reset(seed=0)
    assert obs["instruction"] == "stack the red block on the green block"  # canonical by default
    custom = "  Put the crimson cube onto the GREEN one!! "
    obs = env.reset(seed=0, instruction=custom)
    assert obs["instruction"] == custom
    assert set(obs["images"]) == {"front", "wrist"}
    for img in obs["images"].values():
        assert img.shape == (48, 48, 3) and img.dtype == np.uint8
    assert obs["state"].shape == (SUITE.observation_spec.state_dim,) and obs["state"].dtype == np.float32
    obs, done, info = env.step(np.zeros(4, dtype=np.float32))
    assert obs["instruction"] == custom and isinstance(info["success"], bool) and isinstance(done, bool)
    assert env.reset(seed=0, instruction="")["instruction"] == ""  # blank control split stays blank
    assert obs["images"]["front"].shape == (48, 48, 3)


def test_both_cameras_render_varied_images_and_sizes_change():
    for size in (32, 96, 64):  # smaller after bigger re-uses the one renderer's buffer
        env = SUITE.make_env("place-blue-box", image_size=size, cameras=("front", "wrist"))
        obs = env.reset(seed=3)
        for cam, img in obs["images"].items():
            assert img.shape == (size, size, 3), (cam, size)
            assert img.std() > 10, f"{cam} at {size}px is nearly constant"
            assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20, f"{cam} at {size}px has too few colours"
    # same state, same image; the gripper moving changes the front image
    env = SUITE.make_env("place-blue-box", image_size=64, cameras=("front",))
    a = env.reset(seed=3)["images"]["front"]
    b = env.reset(seed=3)["images"]["front"]
    np.testing.assert_array_equal(a, b)
    for _ in range(3):
        c = env.step(np.array([1, 0, -1, 1], dtype=np.float32))[0]["images"]["front"]
    assert np.abs(c.astype(int) - a).sum() > 0


def test_no_camera_env_renders_nothing():
    env = SUITE.make_env("push-red-left", cameras=())
    obs = env.reset(seed=0)
    assert obs["images"] == {}
    assert env.step(np.zeros(4))[0]["images"] == {}


def test_errors_are_clear():
    with pytest.raises(BenchError, match="image_size must be a positive"):
        SUITE.make_env("place-red-bowl", image_size=0)
    with pytest.raises(BenchError, match="image_size must be a positive"):
        SUITE.make_env("place-red-bowl", image_size=-5)
    with pytest.raises(BenchError, match="unknown tabletop task id 'place-purple-bowl'"):
        SUITE.make_env("place-purple-bowl")
    with pytest.raises(BenchError, match="unknown tabletop task id"):
        SUITE.expert("stack-red-red")
    with pytest.raises(BenchError, match=r"unknown tabletop camera\(s\) \['top'\]"):
        SUITE.make_env("place-red-bowl", cameras=("front", "top"))
    env = SUITE.make_env("place-red-bowl", cameras=())
    with pytest.raises(BenchError, match="before reset"):
        env.step(np.zeros(4))
    env.reset(seed=0)
    with pytest.raises(BenchError, match="float\\[4\\]"):
        env.step(np.zeros(3))


def test_actions_are_clipped_and_deterministic():
    env = SUITE.make_env("place-red-bowl", cameras=())
    start = env.reset(seed=2)["state"].copy()
    big = env.step(np.array([50.0, 0, 0, 0]))[0]["state"]
    env.reset(seed=2)
    unit = env.step(np.array([1.0, 0, 0, 0]))[0]["state"]
    np.testing.assert_allclose(big, unit, atol=1e-9)
    assert 0.015 < unit[0] - start[0] < 0.035  # about XYZ_STEP per step
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (20, 4))
    runs = []
    for _ in range(2):
        env.reset(seed=9)
        runs.append(np.stack([env.step(a)[0]["state"] for a in actions]))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_init_state_reproduces_seed_layout():
    from benchmarks.tabletop.scene import sample_layout

    env = SUITE.make_env("push-green-right", cameras=())
    by_seed = _poses(env.reset(seed=11))
    by_state = _poses(env.reset(init_state=sample_layout(11)))
    for k in by_seed:
        np.testing.assert_array_equal(by_seed[k], by_state[k])
    with pytest.raises(BenchError, match="init_state"):
        env.reset(init_state={"blocks": {}})


def test_one_renderer_per_process():
    from benchmarks.tabletop import render

    e1 = SUITE.make_env("place-red-bowl", image_size=32, cameras=("front",))
    e2 = SUITE.make_env("place-red-plate", image_size=32, cameras=("wrist",))
    e1.reset(seed=0)
    r1 = render._renderer
    e2.reset(seed=0)
    assert render._renderer is r1 and r1 is not None


def test_tasks_cover_taxonomy():
    skills = {t.attributes["skill"] for t in all_tasks()}
    assert skills == {"place", "stack", "push"}
    assert sum(not t.train for t in all_tasks()) == 8
