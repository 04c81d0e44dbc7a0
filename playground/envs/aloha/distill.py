"""AlohaS2RPegInsertionDistill: peg insertion seen through both wrist cameras, for a pixel student.

The task, physics, reward and success are AlohaS2RPegInsertion's. The student's observations are
the two D405 wrist cameras at 32x32, RGB and depth (with the depth-camera noise model, range
0.4 m), and `proprio` [65]: per arm the noisy joint positions and velocities, the commanded servo
targets and the pinch site's pose in the arm's base frame (32 each, as measured by the robot
itself), plus the phase flag. The teacher's `state` and `privileged_state` stay in the obs.
Visual randomisation (off by default; `vision.visual_dr.enabled`) varies the peg and socket
colours, the table, the lights, the brightness and the wrist-camera mounts.
"""

from __future__ import annotations

import numpy as np
from ml_collections import config_dict

from playground.envs.aloha import peg_insertion
from playground.envs.vision import VisionEnv, vision_config

SOCKET_GEOMS = ("socket_bottom", "socket_top", "socket_left", "socket_right", "socket_end")
ARM_OBS = 47  # arm.arm_observation: qpos 8, qvel 8, ctrl 7, pinch pos 3, pinch rot6 6, object ...
ROBOT_PART = 32  # its first 32 entries are the robot's own measurements


def default_config() -> config_dict.ConfigDict:
    cfg = peg_insertion.default_config()
    cfg.vision = vision_config(
        cameras=("left/wrist_cam", "right/wrist_cam"),
        width=32,
        height=32,
        rgb=True,
        depth=True,
        object_geoms=(*SOCKET_GEOMS, "peg"),
        table_geoms=("table", "table_body"),
    )
    return cfg


class AlohaS2RPegInsertionDistill(VisionEnv, peg_insertion.AlohaS2RPegInsertion):
    TEACHER_ENV = "AlohaS2RPegInsertion"
    POSE_BODY = "peg"
    PROPRIO = np.concatenate(
        [np.arange(ROBOT_PART), ARM_OBS + np.arange(ROBOT_PART), [2 * ARM_OBS + 3]]
    )
    default_config = staticmethod(default_config)


domain_randomize = peg_insertion.domain_randomize
