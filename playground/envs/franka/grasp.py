"""FrankaGrasp: the Panda grasps a box of random pose and lifts it, closing the gripper itself.

The box (8 x 3 x 6 cm nominal; size and mass randomised) lies on the table at x 0.3 to 0.6 m,
y within 0.25 m, yaw within 45 deg. Control and observations: box_task.py (6-DoF delta
end-effector actions plus a gripper command, 20 Hz).

Reward terms (weights in `config.reward`, each in `metrics`): keypoint (alignment of gripper and
box keypoints, 1 - tanh(d / keypoint_scale_m): largest at the grasp pose), grasp (the geometric
grasp test), lift (box height while grasped, saturating at `lift_height_m`), success, and
action-rate and joint-velocity penalties. Unlike a two-stage pipeline that holds the gripper open
while learning and scripts the grasp afterwards, the policy must close the gripper and lift.
`success`: the box held and raised more than `lift_height_m` above the table. An unstable
simulation or a box off the table terminates; the time limit is a truncation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from ml_collections import config_dict
from mujoco import mjx

from playground.envs.franka import box_task


def default_config() -> config_dict.ConfigDict:
    cfg = box_task.base_config()
    cfg.keypoint_scale_m = 0.05
    cfg.lift_height_m = 0.1
    cfg.reward = config_dict.create(
        keypoint=1.0, grasp=1.0, lift=4.0, success=2.0, action_rate=0.01, joint_vel=0.001
    )
    return cfg


class FrankaGrasp(box_task.FrankaBoxTask):
    reward_terms_names = ("keypoint", "grasp", "lift", "success", "action_rate", "joint_vel")

    def __init__(self, config: config_dict.ConfigDict | None = None, config_overrides=None):
        super().__init__(config or default_config(), config_overrides)

    def sample_goal(self, rng: jax.Array, box_pos: jax.Array) -> jax.Array:
        """The lift target: straight above the box's start, `lift_height_m` up (shown, observed)."""
        return box_pos.at[2].add(self.config.lift_height_m)

    def is_success(self, data: mjx.Data) -> jax.Array:
        lifted = self.box_height(data) > self.config.lift_height_m
        return (lifted & (self.is_grasped(data) > 0)).astype(jnp.float32)

    def reward_terms(self, data: mjx.Data, info: dict, action: jax.Array) -> dict[str, jax.Array]:
        grasped = self.is_grasped(data)
        height = jnp.clip(self.box_height(data) / self.config.lift_height_m, 0.0, 1.0)
        return {
            "keypoint": 1.0 - jnp.tanh(self.keypoint_distance(data) / self.config.keypoint_scale_m),
            "grasp": grasped,
            "lift": grasped * height,
            "success": self.is_success(data),
            "action_rate": -jnp.sum(jnp.square(action - info["last_action"])),
            "joint_vel": -jnp.sum(jnp.square(data.qvel[self.panda.dof_adr])),
        }

    def terminated(self, data: mjx.Data, info: dict) -> jax.Array:
        return (self.unstable(data) | self.off_table(data)).astype(jnp.float32)


def domain_randomize(
    model: mjx.Model, rng: jax.Array, config: config_dict.ConfigDict | None = None
):
    """Box size and mass, friction, arm gains per env; (batched model, in_axes)."""
    return box_task.domain_randomize(model, rng, config or default_config())
