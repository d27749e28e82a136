"""New Bridge tasks that recombine SimplerEnv's flat-table objects and targets (the `compositional`
split), as ManiSkill3 environments built on its public `BaseBridgeEnv` API.

SimplerEnv's three flat-table tasks each pair one object with one target: spoon->towel,
carrot->plate, green cube->yellow cube. The tasks here keep the same scene, camera, robot, object
models, start grid and success predicate (`BaseBridgeEnv._evaluate`) and swap the pairing:

- widowx_carrot_on_towel: the carrot (starts as in the carrot task) onto the towel;
- widowx_spoon_on_plate: the spoon (starts as in the spoon task) onto the plate;
- widowx_stack_yellow_on_green: the yellow cube onto the green one (the stack task reversed);
- widowx_green_cube_on_plate: the green cube onto the plate (a cube never goes on a plate).

Each object keeps the orientations and the resting height of its own SimplerEnv task, each target
its own; the 24 configurations are SimplerEnv's 4x4 grid of (object, target) cell pairs times the
object's orientations, or for the cubes two grid sizes, as SimplerEnv's stack task (episode_id =
i mod n_configs, as the original tasks). "Completely on the
target" is required where the source task requires it (carrot, cube), not for the spoon (as
SimplerEnv's spoon task).

Importing this module imports ManiSkill3 and registers the environments; `env.py` imports it in
the process that builds a compositional env. tests/test_simpler.py checks that each task resets,
steps, and is solved by the scripted expert.
"""

from __future__ import annotations

import numpy as np
import torch
from mani_skill.envs.tasks.digital_twins.bridge_dataset_eval.base_env import (
    BRIDGE_DATASET_ASSET_PATH,
    BaseBridgeEnv,
)
from mani_skill.utils import io_utils
from mani_skill.utils.registration import register_env
from transforms3d.euler import euler2quat

CARROT = "bridge_carrot_generated_modified"
PLATE = "bridge_plate_objaverse_larger"
SPOON = "bridge_spoon_generated_modified"
TOWEL = "table_cloth_generated_shorter"
GREEN = "baked_green_cube_3cm"
YELLOW = "baked_yellow_cube_3cm"

# Resting heights (z, world frame) and orientations of each model in its own SimplerEnv task.
_Z = {CARROT: 0.887529, PLATE: 0.869532, SPOON: 0.88, TOWEL: 0.875, GREEN: 0.887529, YELLOW: 0.887529}
_SOURCE_QUATS = {
    CARROT: [euler2quat(0, 0, np.pi), euler2quat(0, 0, -np.pi / 2)],
    SPOON: [np.array([1.0, 0, 0, 0]), euler2quat(0, 0, np.pi / 2)],
    GREEN: [np.array([1.0, 0, 0, 0])],
    YELLOW: [np.array([1.0, 0, 0, 0])],
}
_BAKED_JSON = "info_bridge_custom_baked_tex_v0.json"
_BAKED = {GREEN, YELLOW}


def _grid_configs(source: str, target: str, half_edges: tuple[float, ...]) -> torch.Tensor:
    """SimplerEnv's start grid: every ordered pair of distinct corners of a square around
    (-0.16, 0) in the world frame, per half-edge length; [n, 2 objects, xyz]."""
    centre = np.array([-0.16, 0.0])
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]]) * 2 - 1
    out = []
    for h in half_edges:
        cells = corners * h + centre
        for i, a in enumerate(cells):
            for j, b in enumerate(cells):
                if i != j:
                    out.append([np.append(a, _Z[source]), np.append(b, _Z[target])])
    return torch.tensor(np.asarray(out))


def _quat_configs(source: str) -> torch.Tensor:
    return torch.tensor(np.stack([np.stack([q, np.array([1.0, 0, 0, 0])]) for q in _SOURCE_QUATS[source]]))


class _RecombinedBridgeEnv(BaseBridgeEnv):
    """A flat-table Bridge task with a chosen (source, target) pair and instruction."""

    SOURCE: str
    TARGET: str
    INSTRUCTION: str
    HALF_EDGES: tuple[float, ...] = (0.075,)
    COMPLETELY_ON: bool = True
    scene_setting = "flat_table"

    def __init__(self, **kwargs):
        self.objects_excluded_from_greenscreening = [self.SOURCE, self.TARGET]
        super().__init__(obj_names=[self.SOURCE, self.TARGET],
                         xyz_configs=_grid_configs(self.SOURCE, self.TARGET, self.HALF_EDGES),
                         quat_configs=_quat_configs(self.SOURCE), **kwargs)

    def _load_scene(self, options: dict):
        # Cube models are described in the baked-texture model file, the others in the default one.
        if {self.SOURCE, self.TARGET} & _BAKED:
            self.model_db = {**self.model_db,
                             **io_utils.load_json(BRIDGE_DATASET_ASSET_PATH / "custom" / _BAKED_JSON)}
        super()._load_scene(options)

    def evaluate(self):
        return super()._evaluate(success_require_src_completely_on_target=self.COMPLETELY_ON)

    def get_language_instruction(self, **kwargs):
        return [self.INSTRUCTION] * self.num_envs


@register_env("AptBenchPutCarrotOnTowelInScene-v1", max_episode_steps=60,
              asset_download_ids=["bridge_v2_real2sim"])
class PutCarrotOnTowelInScene(_RecombinedBridgeEnv):
    SOURCE, TARGET, INSTRUCTION = CARROT, TOWEL, "put the carrot on the towel"


@register_env("AptBenchPutSpoonOnPlateInScene-v1", max_episode_steps=60,
              asset_download_ids=["bridge_v2_real2sim"])
class PutSpoonOnPlateInScene(_RecombinedBridgeEnv):
    SOURCE, TARGET, INSTRUCTION = SPOON, PLATE, "put the spoon on the plate"
    COMPLETELY_ON = False


@register_env("AptBenchStackYellowCubeOnGreenCubeInScene-v1", max_episode_steps=60,
              asset_download_ids=["bridge_v2_real2sim"])
class StackYellowCubeOnGreenCubeInScene(_RecombinedBridgeEnv):
    SOURCE, TARGET, INSTRUCTION = YELLOW, GREEN, "stack the yellow block on the green block"
    MODEL_JSON = _BAKED_JSON
    HALF_EDGES = (0.05, 0.1)


@register_env("AptBenchPutGreenCubeOnPlateInScene-v1", max_episode_steps=60,
              asset_download_ids=["bridge_v2_real2sim"])
class PutGreenCubeOnPlateInScene(_RecombinedBridgeEnv):
    SOURCE, TARGET, INSTRUCTION = GREEN, PLATE, "put the green block on the plate"
    HALF_EDGES = (0.05, 0.1)
