"""The env API every task implements: `reset(rng) -> State`, `step(State, action) -> State`.

A State is immutable (a flax struct); `step` returns a new one. Observations are dicts with at
least `state` (what the policy sees: noisy, delayed) and `privileged_state` (clean, for the critic
and the teacher). All of it is jit- and vmap-able.
"""

from __future__ import annotations

import abc
import copy
import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
from flax import struct
from ml_collections import config_dict
from mujoco import mjx

from playground import physics
from playground.envs.config import apply_overrides
from playground.errors import UsageError

XML_DIR = Path(__file__).resolve().parents[2] / "xmls"

Observation = dict[str, jax.Array]


@struct.dataclass
class State:
    """One env's (or a batch's) state.

    `info` carries what the next step needs; `metrics` what logs need.
    """

    data: mjx.Data
    obs: Observation
    reward: jax.Array
    done: jax.Array
    metrics: dict[str, jax.Array]
    info: dict[str, Any]


def sanitize(*trees: Any) -> tuple[Any, ...]:
    """Each pytree (observations, reward, metrics) with non-finite values replaced by 0.

    A diverged physics state also ends its episode (each task's `done`); this keeps its last
    values from poisoning a learner's normaliser, losses, replay data or logged metrics before
    the reset.
    """
    clean = functools.partial(jnp.nan_to_num, nan=0.0, posinf=0.0, neginf=0.0)
    return tuple(jax.tree_util.tree_map(clean, t) for t in trees)


class MjxEnv(abc.ABC):
    """Base of every task: model loading, physics switch, timing and action checks."""

    def __init__(
        self,
        config: config_dict.ConfigDict,
        config_overrides: dict[str, Any] | None = None,
    ):
        self._config = apply_overrides(config, config_overrides, owner=type(self).__name__)
        cfg = self._config
        n_substeps = cfg.ctrl_dt / cfg.sim_dt
        if cfg.sim_dt <= 0 or abs(n_substeps - round(n_substeps)) > 1e-6 or round(n_substeps) < 1:
            raise UsageError(
                f"ctrl_dt ({cfg.ctrl_dt}) must be a positive whole multiple of "
                f"sim_dt ({cfg.sim_dt})."
            )
        self._n_substeps = int(round(n_substeps))
        self._mj_model = self.load_mj_model()
        self._mj_model.opt.timestep = cfg.sim_dt
        self._impl = physics.check_impl(cfg.impl)
        self._mjx_model = physics.put_model(self._mj_model, self._impl)
        # Shared by `replace_model` copies, so randomised per-env models reuse its C batches.
        self._native = (
            physics.NativePhysics(self._mj_model, self._mjx_model)
            if self._impl == "native"
            else None
        )

    # ----- what a task provides -----
    @abc.abstractmethod
    def load_mj_model(self) -> mujoco.MjModel:
        """Compiles the task's MJCF."""

    @abc.abstractmethod
    def reset(self, rng: jax.Array) -> State:
        """A fresh random initial state."""

    @abc.abstractmethod
    def step(self, state: State, action: jax.Array) -> State:
        """Applies `action` (in [-1, 1]^action_size) for one control step of `ctrl_dt` seconds."""

    # ----- shared machinery -----
    @property
    def config(self) -> config_dict.ConfigDict:
        return self._config

    @property
    def mj_model(self) -> mujoco.MjModel:
        return self._mj_model

    @property
    def mjx_model(self) -> mjx.Model:
        return self._mjx_model

    @property
    def impl(self) -> str:
        return self._impl

    @property
    def ctrl_dt(self) -> float:
        return float(self._config.ctrl_dt)

    @property
    def sim_dt(self) -> float:
        return float(self._config.sim_dt)

    @property
    def n_substeps(self) -> int:
        return self._n_substeps

    @property
    def action_size(self) -> int:
        return int(self._mj_model.nu)

    @functools.cached_property
    def observation_size(self) -> dict[str, tuple[int, ...]]:
        """Shape of each observation key, as brax's network factories expect."""
        obs = jax.eval_shape(self.reset, jax.random.PRNGKey(0)).obs
        return {k: tuple(v.shape) for k, v in obs.items()}

    @property
    def unwrapped(self) -> MjxEnv:
        return self

    def replace_model(self, model: mjx.Model) -> MjxEnv:
        """A shallow copy stepping `model`: how per-env randomised models are vmapped."""
        env = copy.copy(self)
        env._mjx_model = model
        return env

    def make_data(self) -> mjx.Data:
        cfg = self._config
        return physics.make_data(
            self._mj_model, self._mjx_model, self._impl, cfg.get("naconmax"), cfg.get("njmax")
        )

    def forward(self, data: mjx.Data) -> mjx.Data:
        """`mjx.forward` with this env's physics: derived fields (poses, sensors) of `data`'s state.

        With `impl="native"` it runs in MuJoCo C for the whole (vmapped) batch, several times
        cheaper than MJX-JAX's collision and constraint passes when a reset computes them.
        """
        if self._native is not None:
            return self._native.forward(self._mjx_model, data)
        return mjx.forward(self._mjx_model, data)

    def physics_step(self, data: mjx.Data, ctrl: jax.Array) -> mjx.Data:
        """Holds `ctrl` for `n_substeps` physics steps.

        With `impl="native"` the whole (vmapped) batch's substeps run in MuJoCo C in one host call.
        """
        data = data.replace(ctrl=ctrl)
        if self._native is not None:
            return self._native.step(self._mjx_model, data, self._n_substeps)

        def body(_, d):
            return physics.step(self._mjx_model, d)

        return jax.lax.fori_loop(0, self._n_substeps, body, data)

    def check_action(self, action: jax.Array) -> jax.Array:
        """Shape is checked at trace time, so a wrong action fails before anything compiles."""
        action = jnp.asarray(action)
        if action.shape != (self.action_size,):
            raise ValueError(
                f"{type(self).__name__}.step expects an action of shape ({self.action_size},) "
                f"for one env (vmap over a batch); got shape {action.shape}."
            )
        return action
