"""How a policy's action becomes actuator targets: delta position control with an action delay.

Each step the action (in [-1, 1]) joins a short history; the action applied is one of the last few,
drawn from the skewed delay distribution, scaled by `scale` and added to the current position
targets, which are clipped to the actuators' control ranges. Shared by the tasks and, later, the
robot-side runner.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from playground.envs import delays


@dataclasses.dataclass(frozen=True)
class DeltaPositionControl:
    scale: float
    ctrl_lo: np.ndarray  # [nu]
    ctrl_hi: np.ndarray  # [nu]
    delay_pmf: np.ndarray  # [history]

    @classmethod
    def from_model(
        cls, mj_model: mujoco.MjModel, scale: float, history: int, skew: float
    ) -> DeltaPositionControl:
        return cls(
            scale=float(scale),
            ctrl_lo=mj_model.actuator_ctrlrange[:, 0].copy(),
            ctrl_hi=mj_model.actuator_ctrlrange[:, 1].copy(),
            delay_pmf=delays.skewed_delay_pmf(history, skew),
        )

    def initial_history(self) -> jax.Array:
        return jnp.zeros((len(self.delay_pmf), len(self.ctrl_lo)))

    def apply(
        self, ctrl: jax.Array, history: jax.Array, action: jax.Array, rng: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """(new targets, new action history) after `action`."""
        history = delays.push(history, action)
        return self.targets(ctrl, delays.delayed(history, rng, self.delay_pmf)), history

    def targets(self, ctrl: jax.Array, action: jax.Array) -> jax.Array:
        """New targets for an action applied now (the robot side: its delays are real)."""
        return jnp.clip(ctrl + self.scale * action, self.ctrl_lo, self.ctrl_hi)
