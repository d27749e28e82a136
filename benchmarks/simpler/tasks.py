"""The SimplerEnv Bridge (WidowX) tasks and SimplerEnv's evaluation settings, as data (no simulator).

Task ids are SimplerEnv's own task names (simpler_env.ENVIRONMENTS); each maps to the ManiSkill3
environment id that implements it (mani-skill 3.0.1,
mani_skill/envs/tasks/digital_twins/bridge_dataset_eval/put_on_in_scene.py).

SimplerEnv's Bridge evaluation settings, recorded with every run (`SimplerSuite.protocol()`):
- control at 5 Hz (sim 500 Hz), controller `arm_pd_ee_target_delta_pose_align2_gripper_pd_joint_pos`
  (end-effector delta pose on the previous *target*, translation in the robot base frame, rotation
  as XYZ Euler angles composed in the base frame; gripper finger position target);
- episode budget = the ManiSkill3 registration's max_episode_steps: 60 steps, 120 for the eggplant;
- third-person camera `3rd_view_camera` 640x480 with the real Bridge background green-screened in;
- episode i uses SimplerEnv's fixed object configuration `episode_id = i mod n_configs` (24 for
  carrot, spoon and cubes; 64 for the eggplant): every split sees the same starts (paired);
- SimplerEnv reports 24 episodes per Bridge task.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.base import TaskSpec


@dataclass(frozen=True)
class BridgeTask:
    task_id: str  # SimplerEnv's task name
    env_id: str  # the ManiSkill3 environment id
    instruction: str  # the env's get_language_instruction() (the canonical one)
    max_steps: int  # ManiSkill3 registration's max_episode_steps
    skill: str
    object: str
    target: str
    scene: str  # "flat_table" or "sink"
    n_configs: int  # fixed episode configurations (episode_id range)


BRIDGE_TASKS: tuple[BridgeTask, ...] = (
    BridgeTask("widowx_spoon_on_towel", "PutSpoonOnTableClothInScene-v1", "put the spoon on the towel",
               60, "put_on", "spoon", "towel", "flat_table", 24),
    BridgeTask("widowx_carrot_on_plate", "PutCarrotOnPlateInScene-v1", "put carrot on plate",
               60, "put_on", "carrot", "plate", "flat_table", 24),
    BridgeTask("widowx_stack_cube", "StackGreenCubeOnYellowCubeBakedTexInScene-v1",
               "stack the green block on the yellow block", 60, "stack", "green_cube", "yellow_cube",
               "flat_table", 24),
    BridgeTask("widowx_put_eggplant_in_basket", "PutEggplantInBasketScene-v1",
               "put eggplant into yellow basket", 120, "put_in", "eggplant", "basket", "sink", 64),
)
BY_ID: dict[str, BridgeTask] = {t.task_id: t for t in BRIDGE_TASKS}

EVAL_SETTINGS: dict[str, object] = {
    "control_freq_hz": 5,
    "sim_freq_hz": 500,
    "controller": "arm_pd_ee_target_delta_pose_align2_gripper_pd_joint_pos",
    "camera": "3rd_view_camera 640x480 (greenscreened Bridge background), resized to image_size",
    "episodes_per_task_simpler_env": 24,
    "max_steps": {t.task_id: t.max_steps for t in BRIDGE_TASKS},
    "episode_starts": "episode i -> SimplerEnv episode_id i mod n_configs (paired across splits)",
    "n_configs": {t.task_id: t.n_configs for t in BRIDGE_TASKS},
    "success": "ManiSkill3 evaluate()['success'] (source on target: bbox xy/z test, plus contact for "
               "carrot/cubes); the engine stops an episode at its first success",
}

# Google Robot tasks exist only in the original SimplerEnv (backend simpler_env).
GOOGLE_ROBOT_TASKS: tuple[str, ...] = (
    "google_robot_pick_coke_can", "google_robot_pick_horizontal_coke_can",
    "google_robot_pick_vertical_coke_can", "google_robot_pick_standing_coke_can",
    "google_robot_pick_object", "google_robot_move_near", "google_robot_move_near_v0",
    "google_robot_move_near_v1", "google_robot_open_drawer", "google_robot_open_top_drawer",
    "google_robot_open_middle_drawer", "google_robot_open_bottom_drawer", "google_robot_close_drawer",
    "google_robot_close_top_drawer", "google_robot_close_middle_drawer",
    "google_robot_close_bottom_drawer", "google_robot_place_apple_in_closed_top_drawer",
)


def task_specs() -> list[TaskSpec]:
    """The four Bridge tasks. No task shares its objects with another, so they carry no `scene`
    attribute (which would leave the `swapped` control without candidates): `swapped` gives another
    Bridge task's instruction, naming objects absent from the scene. `table` is SimplerEnv's
    scene setting (flat_table / sink)."""
    return [TaskSpec(task_id=t.task_id, instruction=t.instruction, max_steps=t.max_steps,
                     attributes={"skill": t.skill, "object": t.object, "target": t.target,
                                 "table": t.scene, "env_id": t.env_id, "robot": "widowx"},
                     train=True)
            for t in BRIDGE_TASKS]
