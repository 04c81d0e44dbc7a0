"""One ViperX arm in a compiled ALOHA model: its indices, frames, observations and grasp test.

Both Aloha tasks read an arm through this module, so the pick policy's observation of "its arm
and its object" is the same function in AlohaS2RPick and in phase 1 of AlohaS2RPegInsertion.
Every observation is expressed in the arm's base frame, as on the real robot.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from playground.envs import control, delays, randomize
from playground.envs.aloha import constants as c

STATE_SIZE = 47  # see arm_observation
PRIVILEGED_EXTRA_SIZE = 11


@dataclasses.dataclass(frozen=True)
class Arm:
    prefix: str
    qpos_adr: np.ndarray  # [8] 6 arm joints + 2 fingers
    dof_adr: np.ndarray  # [8]
    actuator_ids: np.ndarray  # [7]
    ctrl_lo: np.ndarray  # [7]
    ctrl_hi: np.ndarray  # [7]
    pinch_site: int
    base_pos: np.ndarray  # [3] world
    base_rot: np.ndarray  # [3, 3] world-from-base

    def to_base(self, p_world: jax.Array) -> jax.Array:
        return (p_world - self.base_pos) @ self.base_rot

    def rot_to_base(self, r_world: jax.Array) -> jax.Array:
        return self.base_rot.T @ r_world


def find_arm(mj_model: mujoco.MjModel, prefix: str) -> Arm:
    jnt = [mj_model.joint(prefix + n) for n in c.ARM_JOINTS + c.FINGER_JOINTS]
    act = np.array([mj_model.actuator(prefix + n).id for n in c.ACTUATORS])
    data = mujoco.MjData(mj_model)
    mujoco.mj_kinematics(mj_model, data)
    base = mj_model.body(prefix + "base_link").id
    return Arm(
        prefix=prefix,
        qpos_adr=np.array([j.qposadr[0] for j in jnt]),
        dof_adr=np.array([j.dofadr[0] for j in jnt]),
        actuator_ids=act,
        ctrl_lo=mj_model.actuator_ctrlrange[act, 0].copy(),
        ctrl_hi=mj_model.actuator_ctrlrange[act, 1].copy(),
        pinch_site=mj_model.site(prefix + "pinch").id,
        base_pos=data.xpos[base].copy(),
        base_rot=data.xmat[base].reshape(3, 3).copy(),
    )


@dataclasses.dataclass(frozen=True)
class FreeObject:
    body: int
    geom: int  # the geom whose half-size defines the grasp width
    qpos_adr: int
    dof_adr: int


def find_object(mj_model: mujoco.MjModel, body: str, geom: str) -> FreeObject:
    b = mj_model.body(body)
    j = mj_model.joint(b.jntadr[0])
    return FreeObject(b.id, mj_model.geom(geom).id, int(j.qposadr[0]), int(j.dofadr[0]))


def rot6(r: jax.Array) -> jax.Array:
    """First two columns of a rotation matrix: a continuous 6-D orientation code."""
    return r[:, :2].T.reshape(-1)


@dataclasses.dataclass(frozen=True)
class ArmReading:
    """What the sensors (or the simulator) say about an arm and its object, in the base frame."""

    qpos: jax.Array  # [8]
    qvel: jax.Array  # [8]
    ctrl: jax.Array  # [7]
    pinch_pos: jax.Array  # [3]
    pinch_rot: jax.Array  # [3, 3]
    obj_pos: jax.Array  # [3]
    obj_rot: jax.Array  # [3, 3]
    target_pos: jax.Array  # [3]


def read_arm(arm: Arm, obj: FreeObject, data: mjx.Data, target_world: jax.Array) -> ArmReading:
    return ArmReading(
        qpos=data.qpos[arm.qpos_adr],
        qvel=data.qvel[arm.dof_adr],
        ctrl=data.ctrl[arm.actuator_ids],
        pinch_pos=arm.to_base(data.site_xpos[arm.pinch_site]),
        pinch_rot=arm.rot_to_base(data.site_xmat[arm.pinch_site]),
        obj_pos=arm.to_base(data.xpos[obj.body]),
        obj_rot=arm.rot_to_base(data.xmat[obj.body]),
        target_pos=arm.to_base(target_world),
    )


def add_noise(reading: ArmReading, rng: jax.Array, noise) -> ArmReading:
    """Sensor noise as on the robot: joint encoders, and an object pose from a perception system.

    `noise` holds uniform half-widths: qpos_rad, qvel_rad_s, object_pos_m, object_angle_rad.
    Finger positions and the commanded ctrl are exact (the robot knows what it sent).
    """
    k = jax.random.split(rng, 4)
    arm_mask = jnp.array([1.0] * 6 + [0.0] * 2)
    return dataclasses.replace(
        reading,
        qpos=delays.uniform_noise(k[0], reading.qpos, noise.qpos_rad * arm_mask),
        qvel=delays.uniform_noise(k[1], reading.qvel, noise.qvel_rad_s * arm_mask),
        obj_pos=delays.uniform_noise(k[2], reading.obj_pos, noise.object_pos_m),
        obj_rot=randomize.small_rotation(k[3], noise.object_angle_rad) @ reading.obj_rot,
    )


def arm_observation(r: ArmReading) -> jax.Array:
    """The policy's view of one arm and its object: `[STATE_SIZE]`.

    qpos 8 | qvel 8 | ctrl 7 | pinch pos 3 | pinch rot6 6 | object pos 3 | object rot6 6 |
    object - pinch 3 | target - object 3.
    """
    return jnp.concatenate(
        [
            r.qpos,
            r.qvel,
            r.ctrl,
            r.pinch_pos,
            rot6(r.pinch_rot),
            r.obj_pos,
            rot6(r.obj_rot),
            r.obj_pos - r.pinch_pos,
            r.target_pos - r.obj_pos,
        ]
    )


def privileged_extras(
    arm: Arm, obj: FreeObject, model: mjx.Model, data: mjx.Data, grasped: jax.Array
) -> jax.Array:
    """What only the simulator knows: object velocity, size, mass and the grasp flag `[11]`."""
    linvel = data.qvel[obj.dof_adr : obj.dof_adr + 3] @ arm.base_rot
    angvel = data.qvel[obj.dof_adr + 3 : obj.dof_adr + 6]  # body frame: frame-independent
    return jnp.concatenate(
        [linvel, angvel, model.geom_size[obj.geom], model.body_mass[obj.body][None], grasped[None]]
    )


def is_grasped(
    arm: Arm, obj: FreeObject, model: mjx.Model, data: mjx.Data, grip_width_axis: int = 1
) -> jax.Array:
    """1.0 when the object sits between the pads and the fingers rest on it (geometric test).

    Geometric, not contact-based, so that it reads the same on every physics implementation:
    the object's centre is within the pad area in the gripper frame, the commanded gripper is
    closing, and the finger gap has stopped at about the object's width (the fingers would close
    further if nothing were between them).
    """
    grip_rot = data.site_xmat[arm.pinch_site]
    rel = (data.xpos[obj.body] - data.site_xpos[arm.pinch_site]) @ grip_rot
    half = model.geom_size[obj.geom]
    # Half-extent of the object along each gripper axis (rows: gripper axes in the object frame).
    obj_rot_in_grip = grip_rot.T @ data.xmat[obj.body]
    extent = jnp.abs(obj_rot_in_grip) @ half
    # The pads overlap the object (it may be held off-centre, e.g. a peg by its end).
    inside = (jnp.abs(rel[0]) < c.PAD_HALF_LENGTH_M + extent[0]) & (
        jnp.abs(rel[2]) < c.PAD_HALF_HEIGHT_M + extent[2]
    )
    gap = 2.0 * data.qpos[arm.qpos_adr[6]]
    width = 2.0 * extent[grip_width_axis]
    touching = (gap < width + 0.006) & (gap > 0.5 * width)
    closing = data.ctrl[arm.actuator_ids[6]] < data.qpos[arm.qpos_adr[6]]
    return (inside & touching & closing).astype(jnp.float32)


# The robot side (playground/deploy).
# Fastest safe change of an arm joint's target: the ViperX 300 S joints' Dynamixel servos turn
# at about 3 rad/s unloaded (XM540-W270, 30 rpm); a policy's own steps are far smaller
# (action_scale per control period: 0.4 rad/s). The gripper's target is metres of finger
# travel; the policy moves it up to 0.4 m/s (the fingers follow at their servo's pace), which
# this limit lets through: it catches a jump across the whole range, not the policy's steps.
ARM_TARGET_SPEED_RAD_S = 3.0
GRIPPER_TARGET_SPEED_M_S = 0.5


def robot_target_speed(arms: int) -> np.ndarray:
    """Per actuator `[7 * arms]`, in the actuator order of one arm after another."""
    return np.tile([ARM_TARGET_SPEED_RAD_S] * 6 + [GRIPPER_TARGET_SPEED_M_S], arms)


def robot_targets(
    ctrl_law: control.DeltaPositionControl, ctrl: jax.Array, action: jax.Array
) -> jax.Array:
    """Actuator targets for an action applied now; a non-finite action holds `ctrl` (NaN
    survives `clip`)."""
    finite = jnp.all(jnp.isfinite(action))
    action = jnp.where(finite, jnp.clip(action, -1.0, 1.0), 0.0)
    return jnp.where(finite, ctrl_law.targets(ctrl, action), ctrl)
