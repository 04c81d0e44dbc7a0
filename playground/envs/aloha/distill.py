"""AlohaS2RPegInsertionDistill: the whole bimanual task seen through both wrist cameras, for a
pixel student.

The task, physics, reward and success are AlohaS2RPegInsertion's with `phase1="agent"`: both
objects start on the table and the agent drives both arms from the first step, picks, then
inserts (`episode_length` 160, `peg_insertion.WHOLE_TASK_EPISODE_LENGTH`). Its teacher is the
composite one (`composite.py`: the pick policy per arm until both objects are up, then the
insertion policy), which reads `state` and `pick_state`. `--env_config phase1=lifted` gives the
insertion alone, from both objects held, with the insertion policy as the teacher. The
student's observations are
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

from playground.envs.aloha import composite, peg_insertion
from playground.envs.vision import VisionEnv, vision_config

SOCKET_GEOMS = ("socket_bottom", "socket_top", "socket_left", "socket_right", "socket_end")
ARM_OBS = 47  # arm.arm_observation: qpos 8, qvel 8, ctrl 7, pinch pos 3, pinch rot6 6, object ...
ROBOT_PART = 32  # its first 32 entries are the robot's own measurements


def default_config() -> config_dict.ConfigDict:
    cfg = peg_insertion.default_config()
    cfg.phase1 = "agent"
    cfg.episode_length = peg_insertion.WHOLE_TASK_EPISODE_LENGTH
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
    # From the table (phase1 "agent"), each arm's pick policy drives until both objects are up.
    PICK_TEACHER_ENV = composite.PICK_ENV
    POSE_BODY = "peg"
    PROPRIO = np.concatenate(
        [np.arange(ROBOT_PART), ARM_OBS + np.arange(ROBOT_PART), [2 * ARM_OBS + 3]]
    )
    default_config = staticmethod(default_config)


domain_randomize = peg_insertion.domain_randomize
