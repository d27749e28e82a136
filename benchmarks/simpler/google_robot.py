"""SimplerEnv's Google Robot tasks that carry one fixed instruction, as data (no simulator).

Task ids are SimplerEnv's own task names (`simpler_env.ENVIRONMENTS`); `env_id` is the
ManiSkill2_real2sim environment each one builds (`simpler_env.ENVIRONMENT_MAP`), and `instruction`
is that env's `get_language_instruction()`. `simpler_env.make` builds them with
`prepackaged_config=True` ("visual matching": the real-robot background green-screened in):
control at 3 Hz (sim 513 Hz), arm `arm_pd_ee_delta_pose_align_interpolate_by_planner` (end-effector
delta pose: translation in the robot base frame, rotation as an axis-angle vector in the base
frame about the end effector), gripper `gripper_pd_joint_target_delta_pos_interpolate_by_planner`
(a *relative* target; see simpler_env_backend.py), camera `overhead_camera` 640x512.

Left out, because a split entry must name one task with one instruction (`NOT_INCLUDED` says why
per task): `google_robot_move_near[_v1]` ("move X near Y", objects drawn per episode),
`google_robot_open_drawer` / `google_robot_close_drawer` (the drawer is drawn per episode),
`google_robot_place_in_closed_*` and `google_robot_place_apple_in_closed_top_drawer` (two-stage
instructions that change mid-episode), and the horizontal/vertical/standing coke-can variants
(the same instruction as `google_robot_pick_coke_can`, whose episodes cover their orientations).

Episode starts: `google_robot_pick_coke_can` episode i -> SimplerEnv's visual-matching grid
(5 x 5 can positions x 3 orientations = 75 configurations, i mod 75), passed as
`obj_init_options`; the drawer tasks' starts (one of 9 robot poses with their background images,
and the robot's colour variant) are drawn by the env from the reset seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.base import TaskSpec

CONTROL_FREQ_HZ = 3
SIM_FREQ_HZ = 513

# simpler_env.ENVIRONMENTS at commit 17bbe7e, in its order (validation of our task ids).
SIMPLER_ENV_TASKS: tuple[str, ...] = (
    "google_robot_pick_coke_can", "google_robot_pick_horizontal_coke_can",
    "google_robot_pick_vertical_coke_can", "google_robot_pick_standing_coke_can",
    "google_robot_move_near", "google_robot_move_near_v1",
    "google_robot_open_drawer", "google_robot_open_top_drawer", "google_robot_open_middle_drawer",
    "google_robot_open_bottom_drawer",
    "google_robot_close_drawer", "google_robot_close_top_drawer", "google_robot_close_middle_drawer",
    "google_robot_close_bottom_drawer",
    "google_robot_place_in_closed_drawer", "google_robot_place_in_closed_top_drawer",
    "google_robot_place_in_closed_middle_drawer", "google_robot_place_in_closed_bottom_drawer",
    "google_robot_place_apple_in_closed_top_drawer",
    "widowx_spoon_on_towel", "widowx_carrot_on_plate", "widowx_stack_cube",
    "widowx_put_eggplant_in_basket",
)


@dataclass(frozen=True)
class GoogleRobotTask:
    task_id: str  # SimplerEnv's task name
    env_id: str  # the ManiSkill2_real2sim environment id
    instruction: str  # the env's get_language_instruction() (the canonical one)
    max_steps: int  # the registration's max_episode_steps (= SimplerEnv's --max-episode-steps)
    skill: str  # pick / open / close
    object: str  # what the gripper acts on
    scene: str  # SimplerEnv's scene_name
    n_configs: int | None  # fixed start configurations chosen by episode id; None: the seed decides
    control_freq_hz: int = CONTROL_FREQ_HZ


def _drawer(skill: str, where: str) -> GoogleRobotTask:
    return GoogleRobotTask(f"google_robot_{skill}_{where}_drawer",
                           f"{skill.capitalize()}{where.capitalize()}DrawerCustomInScene-v0",
                           f"{skill} {where} drawer", 113, skill, f"{where}_drawer", "dummy_drawer", None)


GOOGLE_ROBOT_TASKS: tuple[GoogleRobotTask, ...] = (
    GoogleRobotTask("google_robot_pick_coke_can", "GraspSingleOpenedCokeCanInScene-v0", "pick coke can",
                    80, "pick", "coke_can", "google_pick_coke_can_1_v4", 75),
    *(_drawer(skill, where) for skill in ("open", "close") for where in ("top", "middle", "bottom")),
)
BY_ID: dict[str, GoogleRobotTask] = {t.task_id: t for t in GOOGLE_ROBOT_TASKS}

NOT_INCLUDED: dict[str, str] = {
    **{t: "same instruction as google_robot_pick_coke_can (one of its three orientations)"
       for t in ("google_robot_pick_horizontal_coke_can", "google_robot_pick_vertical_coke_can",
                 "google_robot_pick_standing_coke_can")},
    **{t: "instruction 'move X near Y' drawn per episode" for t in ("google_robot_move_near",
                                                                    "google_robot_move_near_v1")},
    "google_robot_open_drawer": "the drawer (and so the instruction) is drawn per episode",
    "google_robot_close_drawer": "the drawer (and so the instruction) is drawn per episode",
    **{t: "two-stage instruction (open the drawer, then place the object) changing mid-episode"
       for t in SIMPLER_ENV_TASKS if "place" in t},
}

# SimplerEnv's visual-matching coke-can grid (scripts/pick_coke_can_visual_matching.sh):
# --obj-init-x -0.35 -0.12 5 --obj-init-y -0.02 0.42 5, three orientations.
COKE_CAN_XS: tuple[float, ...] = tuple(float(x) for x in np.linspace(-0.35, -0.12, 5))
COKE_CAN_YS: tuple[float, ...] = tuple(float(y) for y in np.linspace(-0.02, 0.42, 5))
COKE_CAN_ORIENTATIONS: tuple[str, ...] = ("lr_switch", "upright", "laid_vertically")

EVAL_SETTINGS: dict[str, object] = {
    "control_freq_hz": CONTROL_FREQ_HZ,
    "sim_freq_hz": SIM_FREQ_HZ,
    "controller": "arm_pd_ee_delta_pose_align_interpolate_by_planner_"
                  "gripper_pd_joint_target_delta_pos_interpolate_by_planner",
    "camera": "overhead_camera 640x512 (real background green-screened in), resized to image_size",
    "max_steps": {t.task_id: t.max_steps for t in GOOGLE_ROBOT_TASKS},
    "episode_starts": "pick_coke_can: episode i -> grid cell and orientation i mod 75; drawers: "
                      "drawn by the env from the reset seed (9 robot poses x 3 robot colourings)",
    "success": "the env's evaluate()['success'] (coke can lifted; drawer joint >= 0.15 open / <= 0.05 "
               "closed); the engine stops at the first success, SimplerEnv judges the last step",
}


def obj_init_options(task_id: str, episode_id: int) -> dict[str, object]:
    """The `obj_init_options` fixing episode `episode_id`'s start ({} where the seed decides)."""
    if task_id != "google_robot_pick_coke_can":
        return {}
    i = int(episode_id) % (len(COKE_CAN_XS) * len(COKE_CAN_YS) * len(COKE_CAN_ORIENTATIONS))
    cell = i % (len(COKE_CAN_XS) * len(COKE_CAN_YS))
    return {"init_xy": [COKE_CAN_XS[cell // len(COKE_CAN_YS)], COKE_CAN_YS[cell % len(COKE_CAN_YS)]],
            "orientation": COKE_CAN_ORIENTATIONS[i // (len(COKE_CAN_XS) * len(COKE_CAN_YS))]}


def task_specs() -> list[TaskSpec]:
    """The seven Google Robot tasks (all training tasks). No `scene` attribute, so the `swapped`
    control may give the coke-can task a drawer instruction (it has no same-scene partner);
    `table` is SimplerEnv's scene_name. No task has a destination, so there is no `target`."""
    return [TaskSpec(task_id=t.task_id, instruction=t.instruction, max_steps=t.max_steps,
                     attributes={"skill": t.skill, "object": t.object, "table": t.scene,
                                 "env_id": t.env_id, "robot": "google_robot",
                                 "control_freq_hz": str(t.control_freq_hz)})
            for t in GOOGLE_ROBOT_TASKS]
