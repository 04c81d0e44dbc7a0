"""A scripted top-down grasp for the Franka box tasks, acting through the env's own actions.

It reads the simulator state (it is an oracle, not a policy a robot could run) and emits the same
7-D delta end-effector actions a policy does, so a success proves the tasks feasible as defined:
hover above the box with the grasp orientation, descend, close, then carry the box to `carry_to`
(the lift target above the box for FrankaGrasp, the goal for FrankaLift). Pure JAX: jit- and
vmap-able.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from playground.envs.base import State
from playground.envs.franka.box_task import FrankaBoxTask
from playground.envs.franka.ik import rotation_vector

HOVER_M = 0.08  # above the box centre before descending


def cfg_open(env: FrankaBoxTask) -> float:
    """Gripper target when open (m per finger)."""
    return float(env.mj_model.actuator_ctrlrange[env.panda.gripper_actuator, 1])


def grasp_action(env: FrankaBoxTask, state: State, carry_to: jax.Array) -> jax.Array:
    """The scripted action `[7]` for one env's state."""
    data, info = state.data, state.info
    cfg = env.config
    box, _ = env.box_pose(data)
    tcp = env.panda.tcp_pos(data)
    frames = env.grasp_frames(data)
    # Of the two symmetric grasp orientations, the nearer one that the last wrist joint can
    # reach: with the hand pointing down, joint 7 turns it about the world's -z. Exact angles:
    # with the sin-sized small-angle error both candidates look alike near 90 degrees, the choice
    # flips every step and the hand never turns (docs/tasks.md, scripted grasp).
    q7 = data.qpos[env.panda.qpos_adr[6]]
    q7_max = env.panda.ik.q_hi[6] - 0.1

    def cost(frame):
        err = rotation_vector(info["rot_goal"], frame)
        over = jnp.maximum(jnp.abs(q7 - err[2]) - q7_max, 0.0)
        return jnp.linalg.norm(err) + 10.0 * over

    target_rot = frames[jnp.argmin(jax.vmap(cost)(frames))]
    rot_err = rotation_vector(info["rot_goal"], target_rot)

    aligned_xy = jnp.linalg.norm(tcp[:2] - box[:2]) < 0.015
    aligned_rot = jnp.linalg.norm(rotation_vector(env.panda.tcp_rot(data), target_rot)) < 0.1
    at_box = jnp.linalg.norm(tcp - box) < 0.012
    closing = data.ctrl[env.panda.gripper_actuator] < 0.5 * cfg_open(env)
    holding = at_box | closing  # once the fingers start closing, keep closing and go on
    lifted = env.is_grasped(data) > 0
    hover = box + jnp.array([0.0, 0.0, HOVER_M])
    target = jnp.where(
        lifted,
        carry_to,
        jnp.where(holding | (aligned_xy & aligned_rot), box, hover),
    )
    move = jnp.clip((target - info["tcp_goal"]) / cfg.pos_scale_m, -1.0, 1.0)
    move = jnp.where(holding & ~lifted, jnp.zeros(3), move)  # hold still while the fingers close
    # Once the fingers close, hold the hand's orientation: the grasp frames follow the box, and a
    # hand that kept turning after a held box pivoted a little would pivot it further, until it
    # slid out (docs/tasks.md, scripted grasp).
    turn = jnp.where(holding, 0.0, jnp.clip(rot_err / cfg.rot_scale_rad, -1.0, 1.0))
    gripper = jnp.where(holding, -1.0, 1.0)
    return jnp.concatenate([move, turn, gripper[None]])
