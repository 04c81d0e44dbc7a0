"""The training wrapper: every task plugs into `brax.training.agents.ppo` and `sac` through it.

Layers (innermost first):
- `BatchEnv`: vmaps reset/step over envs; with a randomiser, each env steps its own model.
- `EpisodeWrapper`: counts steps; at the time limit sets `done` with `info["truncation"] = 1`, so
  a time-out is a truncation (bootstrapped by the learner) and never a termination.
- `AutoResetWrapper`: an env that is done starts a new episode from a *fresh random* reset (new
  key, new object poses), not a replay of its first reset.
`wrap_for_brax_training` builds the stack with the signature brax's `wrap_env_fn` expects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from mujoco import mjx

from playground.compat import ensure_brax_compat
from playground.envs.base import MjxEnv, State
from playground.errors import UnknownNameError, UsageError

Randomizer = Callable[[mjx.Model], tuple[mjx.Model, mjx.Model]]


class Wrapper:
    def __init__(self, env: Any):
        self.env = env

    def reset(self, rng: jax.Array) -> State:
        return self.env.reset(rng)

    def step(self, state: State, action: jax.Array) -> State:
        return self.env.step(state, action)

    @property
    def unwrapped(self) -> MjxEnv:
        return self.env.unwrapped

    def __getattr__(self, name: str) -> Any:
        if name == "env":  # not yet set: avoid infinite recursion during unpickling/copy
            raise AttributeError(name)
        return getattr(self.env, name)


class BatchEnv(Wrapper):
    """reset(rng [B, 2]) and step(state [B], action [B, nu]); optional per-env models."""

    def __init__(self, env: MjxEnv, randomization_fn: Randomizer | None = None):
        super().__init__(env)
        self._models = self._in_axes = None
        if randomization_fn is not None:
            self._models, self._in_axes = randomization_fn(env.unwrapped.mjx_model)

    def _vmap(self, method: str, *args):
        raw = self.env.unwrapped
        if self._models is None:
            return jax.vmap(getattr(raw, method))(*args)

        def call(model, *a):
            return getattr(raw.replace_model(model), method)(*a)

        in_axes = (self._in_axes,) + (0,) * len(args)
        return jax.vmap(call, in_axes=in_axes)(self._models, *args)

    def reset(self, rng: jax.Array) -> State:
        return self._vmap("reset", rng)

    def step(self, state: State, action: jax.Array) -> State:
        return self._vmap("step", state, action)


class EpisodeWrapper(Wrapper):
    """Time limit as truncation, action repeat, and per-episode sums of reward and metrics."""

    def __init__(self, env: Any, episode_length: int, action_repeat: int = 1):
        super().__init__(env)
        if episode_length < 1 or action_repeat < 1:
            raise UsageError("episode_length and action_repeat must be >= 1")
        self.episode_length = int(episode_length)
        self.action_repeat = int(action_repeat)

    def reset(self, rng: jax.Array) -> State:
        state = self.env.reset(rng)
        zeros = jnp.zeros_like(state.reward)
        info = dict(state.info)
        info.update(
            steps=zeros,
            truncation=zeros,
            episode_done=zeros,
            episode_metrics={
                "sum_reward": zeros,
                "length": zeros,
                **{k: zeros for k in state.metrics},
            },
        )
        return state.replace(info=info)

    def step(self, state: State, action: jax.Array) -> State:
        def repeat(carry, _):
            s, total = carry
            s = self.env.step(s, action)
            return (s, total + s.reward), None

        (state, reward), _ = jax.lax.scan(
            repeat, (state, jnp.zeros_like(state.reward)), None, length=self.action_repeat
        )
        # A finished episode's count is kept through the auto-reset (brax reads it as the
        # episode length) and restarts here, on the new episode's first step.
        steps = (
            jnp.where(state.info["episode_done"] > 0, 0, state.info["steps"]) + self.action_repeat
        )
        timed_out = (steps >= self.episode_length).astype(state.done.dtype)
        truncation = timed_out * (1 - state.done)
        done = jnp.maximum(state.done, timed_out)
        info = dict(state.info)
        prev_done = info["episode_done"]
        ep = {k: v * (1 - prev_done) for k, v in info["episode_metrics"].items()}
        ep["sum_reward"] = ep["sum_reward"] + reward
        ep["length"] = ep["length"] + self.action_repeat
        for k, v in state.metrics.items():
            if k in ep:  # brax's EvalWrapper adds metrics of its own after reset; skip those
                ep[k] = ep[k] + v
        info.update(steps=steps, truncation=truncation, episode_done=done, episode_metrics=ep)
        return state.replace(reward=reward, done=done, info=info)


# Bookkeeping that must survive an auto-reset: it describes the transition just taken.
_KEEP_ON_RESET = ("steps", "truncation", "episode_done", "episode_metrics")


class AutoResetWrapper(Wrapper):
    """Replaces each done env by a fresh random reset, drawn from that env's own rng stream."""

    def reset(self, rng: jax.Array) -> State:
        return self.env.reset(rng)

    def step(self, state: State, action: jax.Array) -> State:
        # A done env still gets stepped (its result is discarded): brax expects a fixed batch.
        state = self.env.step(state, action)

        def fresh(s: State) -> State:
            keys = jax.vmap(jax.random.split)(s.info["rng"])[:, 1]
            new = self.env.reset(keys)
            done = s.done.astype(bool)

            def pick(a, b):
                mask = done.reshape(done.shape + (1,) * (a.ndim - done.ndim))
                return jnp.where(mask, a, b)

            info = jax.tree_util.tree_map(pick, new.info, s.info)
            info = dict(info)
            for key in _KEEP_ON_RESET:
                if key in s.info:
                    info[key] = s.info[key]
            return s.replace(
                data=jax.tree_util.tree_map(pick, new.data, s.data),
                obs=jax.tree_util.tree_map(pick, new.obs, s.obs),
                info=info,
            )

        return jax.lax.cond(jnp.any(state.done > 0), fresh, lambda s: s, state)


class SelectObservation(Wrapper):
    """Exposes one observation key as a flat vector, for learners without dict observations.

    brax's SAC accepts only a flat observation; `wrap_for_brax_training(..., observation_key=
    "state")` gives it the policy's view (the privileged view is then unused: SAC's critic and
    actor share one input).
    """

    def __init__(self, env: Any, key: str):
        super().__init__(env)
        sizes = env.unwrapped.observation_size
        if key not in sizes:
            raise UnknownNameError(f"observation key {key!r} not in {sorted(sizes)}")
        if len(sizes[key]) != 1:
            raise UsageError(f"observation {key!r} has shape {sizes[key]}; a flat vector is needed")
        self.key = key

    @property
    def observation_size(self) -> int:
        return int(self.env.unwrapped.observation_size[self.key][0])

    def _select(self, state: State) -> State:
        return state.replace(obs=state.obs[self.key])

    def reset(self, rng: jax.Array) -> State:
        return self._select(self.env.reset(rng))

    def step(self, state: State, action: jax.Array) -> State:
        # The full dict rides in info (added by _KeepFullObservation) so the inner step gets it;
        # it leaves info before going down, as the inner layers never saw that key.
        info = dict(state.info)
        full = state.replace(obs=info.pop("_full_obs"), info=info)
        return self._select(self.env.step(full, action))


class _KeepFullObservation(Wrapper):
    def reset(self, rng: jax.Array) -> State:
        s = self.env.reset(rng)
        return s.replace(info={**s.info, "_full_obs": s.obs})

    def step(self, state: State, action: jax.Array) -> State:
        s = self.env.step(state, action)
        return s.replace(info={**s.info, "_full_obs": s.obs})


def wrap_for_brax_training(
    env: MjxEnv,
    episode_length: int,
    action_repeat: int = 1,
    randomization_fn: Randomizer | None = None,
    observation_key: str | None = None,
) -> Wrapper:
    """The stack brax's trainers expect (pass as `wrap_env_fn`); also installs the jax shim.

    PPO: use as is (dict observations; choose `policy_obs_key`/`value_obs_key` in the network
    factory). SAC: `functools.partial(wrap_for_brax_training, observation_key="state")`.
    """
    ensure_brax_compat()
    batched = BatchEnv(env, randomization_fn)
    wrapped: Wrapper = AutoResetWrapper(EpisodeWrapper(batched, episode_length, action_repeat))
    if observation_key is not None:
        wrapped = SelectObservation(_KeepFullObservation(wrapped), observation_key)
    return wrapped
