"""The Panda arm as the Franka tasks see it: ids, delta end-effector control and proprioception."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from playground.envs.franka import constants as c
from playground.envs.franka.ik import DifferentialIK, axis_angle_to_matrix, rotation_error

PROPRIO_SIZE = 7 + 7 + 3 + 6 + 1  # joint pos, joint vel, tcp pos, tcp rotation (2 columns), gripper
# The servo runs the arm at up to this fraction of the Panda's joint speed limits, a margin under
# the limit the robot-side safety layer enforces (playground/deploy), so that layer acts on faults
# only.
SERVO_SPEED_FRACTION = 0.95


@dataclasses.dataclass(frozen=True)
class Panda:
    qpos_adr: np.ndarray  # [7] arm joints
    dof_adr: np.ndarray  # [7]
    finger_qpos_adr: np.ndarray  # [2]
    arm_actuators: np.ndarray  # [7]
    gripper_actuator: int
    tcp_site: int
    hand_body: int
    ik: DifferentialIK
    # Largest change of an arm joint target per control step `[7]`; None: unlimited.
    max_target_step: np.ndarray | None = None

    @classmethod
    def from_model(
        cls, m: mujoco.MjModel, ik_damping: float = 1e-2, ctrl_dt: float | None = None
    ) -> Panda:
        """`ctrl_dt` turns on the servo's speed limit: SERVO_SPEED_FRACTION of the Panda's."""
        joints = [m.joint(n) for n in c.ARM_JOINTS]
        qpos_adr = np.array([j.qposadr[0] for j in joints])
        dof_adr = np.array([j.dofadr[0] for j in joints])
        tcp = m.site(c.TCP_SITE).id
        hand = m.body(c.HAND_BODY).id
        act = np.array([m.actuator(n).id for n in c.ARM_JOINTS])
        ik = DifferentialIK(
            site_id=tcp,
            body_id=int(m.site_bodyid[tcp]),
            dofs=dof_adr,
            qpos_adr=qpos_adr,
            q_lo=m.actuator_ctrlrange[act, 0].copy(),
            q_hi=m.actuator_ctrlrange[act, 1].copy(),
            damping=ik_damping,
            q_rest=m.keyframe("home").qpos[qpos_adr].copy() if m.nkey else None,
        )
        return cls(
            qpos_adr=qpos_adr,
            dof_adr=dof_adr,
            finger_qpos_adr=np.array([m.joint(n).qposadr[0] for n in c.FINGER_JOINTS]),
            arm_actuators=act,
            gripper_actuator=m.actuator(c.GRIPPER_ACTUATOR).id,
            tcp_site=tcp,
            hand_body=hand,
            ik=ik,
            max_target_step=None
            if ctrl_dt is None
            else SERVO_SPEED_FRACTION * np.asarray(c.ARM_MAX_SPEED_RAD_S) * ctrl_dt,
        )

    def tcp_pos(self, data: mjx.Data) -> jax.Array:
        return data.site_xpos[self.tcp_site]

    def tcp_rot(self, data: mjx.Data) -> jax.Array:
        return data.site_xmat[self.tcp_site].reshape(3, 3)

    def advance_goal(
        self, data: mjx.Data, goal_pos: jax.Array, delta_pos_m: jax.Array, max_lead_m: float
    ) -> jax.Array:
        """The goal moved by `delta_pos_m`, kept within `max_lead_m` (per axis) of the TCP."""
        tcp = self.tcp_pos(data)
        return tcp + jnp.clip(goal_pos + delta_pos_m - tcp, -max_lead_m, max_lead_m)

    def servo_targets(
        self, model: mjx.Model, data: mjx.Data, goal_pos: jax.Array, goal_rot: jax.Array | None
    ) -> jax.Array:
        """Arm joint targets `[7]` one IK step towards the goal pose (orientation optional),
        moved at most `max_target_step` from the current targets (`data.ctrl`)."""
        pos_err = goal_pos - self.tcp_pos(data)
        if goal_rot is None:
            q = self.ik.solve(model, data, pos_err)
        else:
            q = self.ik.solve(model, data, pos_err, rotation_error(self.tcp_rot(data), goal_rot))
        if self.max_target_step is None:
            return q
        held = data.ctrl[self.arm_actuators]
        return jnp.clip(q, held - self.max_target_step, held + self.max_target_step)

    @staticmethod
    def turn(goal_rot: jax.Array, delta_rot_rad: jax.Array) -> jax.Array:
        """The orientation goal turned by the axis-angle `delta_rot_rad` (world frame)."""
        return axis_angle_to_matrix(delta_rot_rad) @ goal_rot

    def gripper_opening(self, data: mjx.Data) -> jax.Array:
        """Mean finger travel in m (0 closed, 0.04 open)."""
        return jnp.mean(data.qpos[self.finger_qpos_adr])

    def proprioception(self, data: mjx.Data) -> jax.Array:
        """What a student may see of the robot `[PROPRIO_SIZE]`: joints, hand pose, gripper."""
        rot = self.tcp_rot(data)
        return jnp.concatenate(
            [
                data.qpos[self.qpos_adr],
                data.qvel[self.dof_adr],
                self.tcp_pos(data),
                rot[:, 0],
                rot[:, 2],
                self.gripper_opening(data)[None] / c.GRIPPER_OPEN_M,
            ]
        )
