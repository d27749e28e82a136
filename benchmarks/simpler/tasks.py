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
    source_model: str  # ManiSkill's model id of the object to move (the scripted expert's grasp)
    train: bool = True  # False: a compositional task (benchmarks/simpler/compositional.py)


BRIDGE_TASKS: tuple[BridgeTask, ...] = (
    BridgeTask("widowx_spoon_on_towel", "PutSpoonOnTableClothInScene-v1", "put the spoon on the towel",
               60, "put_on", "spoon", "towel", "flat_table", 24, "bridge_spoon_generated_modified"),
    BridgeTask("widowx_carrot_on_plate", "PutCarrotOnPlateInScene-v1", "put carrot on plate",
               60, "put_on", "carrot", "plate", "flat_table", 24, "bridge_carrot_generated_modified"),
    BridgeTask("widowx_stack_cube", "StackGreenCubeOnYellowCubeBakedTexInScene-v1",
               "stack the green block on the yellow block", 60, "stack", "green_cube", "yellow_cube",
               "flat_table", 24, "baked_green_cube_3cm"),
    BridgeTask("widowx_put_eggplant_in_basket", "PutEggplantInBasketScene-v1",
               "put eggplant into yellow basket", 120, "put_in", "eggplant", "basket", "sink", 64, "eggplant"),
)
# New pairings of the flat-table objects and targets (benchmarks/simpler/compositional.py): no
# demonstration shows them; each object and each target is seen in SimplerEnv's own tasks.
COMPOSITIONAL_TASKS: tuple[BridgeTask, ...] = (
    BridgeTask("widowx_carrot_on_towel", "AptBenchPutCarrotOnTowelInScene-v1", "put the carrot on the towel",
               60, "put_on", "carrot", "towel", "flat_table", 24, "bridge_carrot_generated_modified", False),
    BridgeTask("widowx_spoon_on_plate", "AptBenchPutSpoonOnPlateInScene-v1", "put the spoon on the plate",
               60, "put_on", "spoon", "plate", "flat_table", 24, "bridge_spoon_generated_modified", False),
    BridgeTask("widowx_stack_yellow_on_green", "AptBenchStackYellowCubeOnGreenCubeInScene-v1",
               "stack the yellow block on the green block", 60, "stack", "yellow_cube", "green_cube",
               "flat_table", 24, "baked_yellow_cube_3cm", False),
    BridgeTask("widowx_green_cube_on_plate", "AptBenchPutGreenCubeOnPlateInScene-v1",
               "put the green block on the plate", 60, "put_on", "green_cube", "plate", "flat_table", 24,
               "baked_green_cube_3cm", False),
)
ALL_TASKS: tuple[BridgeTask, ...] = BRIDGE_TASKS + COMPOSITIONAL_TASKS
BY_ID: dict[str, BridgeTask] = {t.task_id: t for t in ALL_TASKS}

EVAL_SETTINGS: dict[str, object] = {
    "control_freq_hz": 5,
    "sim_freq_hz": 500,
    "controller": "arm_pd_ee_target_delta_pose_align2_gripper_pd_joint_pos",
    "camera": "3rd_view_camera 640x480 (greenscreened Bridge background), resized to image_size",
    "episodes_per_task_simpler_env": 24,
    "max_steps": {t.task_id: t.max_steps for t in ALL_TASKS},
    "episode_starts": "episode i -> SimplerEnv episode_id i mod n_configs (paired across splits)",
    "n_configs": {t.task_id: t.n_configs for t in ALL_TASKS},
    "success": "ManiSkill3 evaluate()['success'] (source on target: bbox xy/z test, plus contact for "
               "carrot/cubes); the engine stops an episode at its first success",
}


def task_specs() -> list[TaskSpec]:
    """The four Bridge tasks, then the compositional ones (train=False). No two tasks share a
    scene's objects, so they carry no `scene` attribute (which would leave the `swapped` control
    without candidates): `swapped` gives another task's instruction. `table` is SimplerEnv's
    scene setting (flat_table / sink)."""
    return [TaskSpec(task_id=t.task_id, instruction=t.instruction, max_steps=t.max_steps,
                     attributes={"skill": t.skill, "object": t.object, "target": t.target,
                                 "table": t.scene, "env_id": t.env_id, "robot": "widowx"},
                     train=t.train)
            for t in ALL_TASKS]
