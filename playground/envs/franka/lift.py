"""FrankaLift: the Panda picks up the box and carries it to a goal position sampled per episode.

Workspace goal: x 0.3 to 0.6 m, y within 0.2 m, z 0.15 to 0.35 m above the table. Control and
observations: box_task.py.

Reward terms (weights in `config.reward`, each in `metrics`): reaching (TCP to box), lifting (box
height while grasped, saturating at `lift_height_m`, which is below every goal), goal tracking
coarse and fine (box to goal, 1 - tanh(d / scale) with scales 0.3 and 0.05 m, counted once the
box is off the table), success, and action-rate and joint-velocity penalties. Every shaped term
peaks at the goal, where the success test passes (a peer's tracking optimum sat 20 cm from its
5 cm success tolerance, so its policies reached but never lifted).

Terminations: success (box within `success_tol_m` of the goal, the episode ends with the
success bonus), box dropped (off the table, or back on the table after having been lifted;
also a penalty term), an
unstable simulation. The time limit is a truncation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from ml_collections import config_dict
from mujoco import mjx

from playground.envs.franka import box_task

LIFTED_M = 0.02  # box bottom this far above the table counts as lifted


def default_config() -> config_dict.ConfigDict:
    cfg = box_task.base_config()
    cfg.episode_length = 160
    cfg.lift_height_m = 0.05
    cfg.success_tol_m = 0.05
    cfg.goal_scales_m = (0.3, 0.05)
    cfg.reward = config_dict.create(
        reaching=1.0,
        lifting=2.0,
        goal_coarse=4.0,
        goal_fine=8.0,
        success=20.0,
        dropped=10.0,
        action_rate=0.01,
        joint_vel=0.001,
    )
    return cfg


class FrankaLift(box_task.FrankaBoxTask):
    reward_terms_names = (
        "reaching",
        "lifting",
        "goal_coarse",
        "goal_fine",
        "success",
        "dropped",
        "action_rate",
        "joint_vel",
    )

    def __init__(self, config: config_dict.ConfigDict | None = None, config_overrides=None):
        super().__init__(config or default_config(), config_overrides)

    def goal_distance(self, data: mjx.Data, goal: jax.Array) -> jax.Array:
        box, _ = self.box_pose(data)
        return jnp.linalg.norm(box - goal)

    def is_success(self, data: mjx.Data, goal: jax.Array) -> jax.Array:
        return (self.goal_distance(data, goal) < self.config.success_tol_m).astype(jnp.float32)

    def is_dropped(self, data: mjx.Data, info: dict) -> jax.Array:
        """Off the table, or fallen back onto it after having been carried off it."""
        was_lifted = info.get("was_lifted", jnp.zeros(()))
        on_table = self.box_height(data) < 0.005
        return (self.off_table(data) | ((was_lifted > 0) & on_table)).astype(jnp.float32)

    def reward_terms(self, data: mjx.Data, info: dict, action: jax.Array) -> dict[str, jax.Array]:
        box, _ = self.box_pose(data)
        tcp = self.panda.tcp_pos(data)
        grasped = self.is_grasped(data)
        height = self.box_height(data)
        lifted = (height > LIFTED_M).astype(jnp.float32)
        d_goal = self.goal_distance(data, info["goal"])
        coarse, fine = self.config.goal_scales_m
        return {
            "reaching": 1.0 - jnp.tanh(jnp.linalg.norm(box - tcp) / 0.1),
            "lifting": grasped * jnp.clip(height / self.config.lift_height_m, 0.0, 1.0),
            "goal_coarse": lifted * (1.0 - jnp.tanh(d_goal / coarse)),
            "goal_fine": lifted * (1.0 - jnp.tanh(d_goal / fine)),
            "success": self.is_success(data, info["goal"]),
            "dropped": -self.is_dropped(data, info),
            "action_rate": -jnp.sum(jnp.square(action - info["last_action"])),
            "joint_vel": -jnp.sum(jnp.square(data.qvel[self.panda.dof_adr])),
        }

    def terminated(self, data: mjx.Data, info: dict) -> jax.Array:
        ends = (
            self.unstable(data)
            | (self.is_success(data, info["goal"]) > 0)
            | (self.is_dropped(data, info) > 0)
        )
        return ends.astype(jnp.float32)

    def reset(self, rng: jax.Array):
        state = super().reset(rng)
        return state.replace(info={**state.info, "was_lifted": jnp.zeros(())})

    def step(self, state, action: jax.Array):
        new = super().step(state, action)
        lifted = (self.box_height(new.data) > LIFTED_M).astype(jnp.float32)
        was = jnp.maximum(new.info["was_lifted"], lifted)
        return new.replace(info={**new.info, "was_lifted": was})


def domain_randomize(
    model: mjx.Model, rng: jax.Array, config: config_dict.ConfigDict | None = None
):
    """Box size and mass, friction, arm gains per env; (batched model, in_axes)."""
    return box_task.domain_randomize(model, rng, config or default_config())
