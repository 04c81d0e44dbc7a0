"""Stereo variants of the Franka tasks: FrankaGraspStereo, FrankaLiftStereo, FrankaReachStereo.

Each is its task (same physics, reward, success) plus two RGB cameras facing the scene from the
far side of the table (`stereo_left` / `stereo_right`, 0.6 m apart, scene.xml) at 64x64, and a
`proprio` observation without anything a camera would have to find: for the box tasks the
noisy joints, hand pose and gripper, the commanded goal and the last action [34]; for reach the
robot's proprioception alone [24] (the target is a red marker the cameras see). Visual
randomisation (off by default) varies the box or target colour, the table, the lights and the
camera mounts.
"""

from __future__ import annotations

import numpy as np
from ml_collections import config_dict

from playground.envs.franka import box_task, grasp, lift, reach
from playground.envs.franka.panda import PROPRIO_SIZE
from playground.envs.vision import VisionEnv, vision_config

CAMERAS = ("stereo_left", "stereo_right")
RESOLUTION = 64
# Box-task state: proprio | box 3 | box rot 6 | box - tcp 3 | goal 3 | last action 7.
BOX_PROPRIO = np.concatenate(
    [np.arange(PROPRIO_SIZE), np.arange(box_task.OBS_SIZE - 10, box_task.OBS_SIZE)]
)
# Reach state: proprio | target 3 | target - tcp 3 | last action 3. The student gets the robot's
# proprioception only: with the last action as an input, a student cloned from teacher-driven
# data can learn to repeat it (the "copycat" shortcut of behaviour cloning from histories) instead
# of reading the target from the images.
REACH_PROPRIO = np.arange(PROPRIO_SIZE)


def _with_cameras(
    cfg: config_dict.ConfigDict, object_geoms: tuple[str, ...]
) -> config_dict.ConfigDict:
    cfg.vision = vision_config(
        cameras=CAMERAS,
        width=RESOLUTION,
        height=RESOLUTION,
        rgb=True,
        depth=False,
        object_geoms=object_geoms,
        table_geoms=("table",),
    )
    return cfg


def grasp_config() -> config_dict.ConfigDict:
    return _with_cameras(grasp.default_config(), ("box",))


def lift_config() -> config_dict.ConfigDict:
    return _with_cameras(lift.default_config(), ("box", "goal"))


def reach_config() -> config_dict.ConfigDict:
    return _with_cameras(reach.default_config(), ("target",))


class FrankaGraspStereo(VisionEnv, grasp.FrankaGrasp):
    TEACHER_ENV = "FrankaGrasp"
    POSE_BODY = "box"
    PROPRIO = BOX_PROPRIO
    default_config = staticmethod(grasp_config)


class FrankaLiftStereo(VisionEnv, lift.FrankaLift):
    TEACHER_ENV = "FrankaLift"
    POSE_BODY = "box"
    PROPRIO = BOX_PROPRIO
    default_config = staticmethod(lift_config)


class FrankaReachStereo(VisionEnv, reach.FrankaReach):
    TEACHER_ENV = "FrankaReach"
    POSE_BODY = "target"
    PROPRIO = REACH_PROPRIO
    default_config = staticmethod(reach_config)
