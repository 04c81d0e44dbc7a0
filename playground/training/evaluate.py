"""Evaluation of a policy on held-out seeds: success rate, return and each reward term.

One episode per eval env, run through the same training wrapper (so randomisation, truncation and
noise match training). An episode's success is the env's `success` metric at its last step (at
the time limit, or at the step that terminated it), so a policy must still hold the goal when
the episode ends; returns and reward terms are summed up to that step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from playground.envs.base import MjxEnv
from playground.envs.wrappers import Randomizer, wrap_for_brax_training

PolicyFn = Callable[[dict, jax.Array], tuple[jax.Array, dict]]
MakePolicy = Callable[..., PolicyFn]  # make_policy(params, deterministic) -> PolicyFn

# Seeds for evaluation live far from training's (which start at the run seed).
HELD_OUT_SEED_OFFSET = 1_000_003


def make_evaluator(
    env: MjxEnv,
    make_policy: MakePolicy,
    num_eval_envs: int,
    episode_length: int,
    action_repeat: int = 1,
    randomization_fn: Randomizer | None = None,
    record: Callable[[Any], Any] | None = None,
) -> Callable[[Any, jax.Array], Any]:
    """`evaluate(params, rng) -> metrics`, jitted, for the deterministic policy of `params`.

    With `record`, `evaluate` returns `(metrics, recorded)`: `record(state)` of the batched
    state after reset and after every step, stacked on a leading time axis (for videos of what
    the eval episodes saw, without compiling a second rollout).
    """
    wrapped = wrap_for_brax_training(env, episode_length, action_repeat, randomization_fn)
    n_steps = -(-episode_length // action_repeat)

    def evaluate(params, rng: jax.Array) -> Any:
        policy = make_policy(params, deterministic=True)
        k_reset, k_act = jax.random.split(rng)
        state = wrapped.reset(jax.random.split(k_reset, num_eval_envs))
        zeros = jnp.zeros(num_eval_envs)
        init = (
            state,
            zeros,
            zeros,
            zeros,
            jax.tree.map(jnp.zeros_like, state.info["episode_metrics"]),
        )

        def body(carry, key):
            state, finished, success, length, episode = carry
            action, _ = policy(state.obs, key)
            state = wrapped.step(state, action)
            seen = record(state) if record is not None else None
            ends = (state.done > 0) & (finished == 0)
            success = jnp.where(ends, state.metrics.get("success", zeros), success)
            length = jnp.where(ends, state.info["steps"], length)
            episode = jax.tree.map(
                lambda old, new: jnp.where(ends, new, old), episode, state.info["episode_metrics"]
            )
            finished = jnp.maximum(finished, ends.astype(finished.dtype))
            return (state, finished, success, length, episode), seen

        (_, finished, success, length, episode), recorded = jax.lax.scan(
            body, init, jax.random.split(k_act, n_steps)
        )
        metrics = {
            "eval/success_rate": jnp.mean(success),
            "eval/episode_reward": jnp.mean(episode["sum_reward"]),
            "eval/episode_reward_std": jnp.std(episode["sum_reward"]),
            "eval/episode_length": jnp.mean(length),
            "eval/finished": jnp.mean(finished),
        }
        for name, value in episode.items():
            if name not in ("sum_reward", "length"):
                metrics[f"eval/episode_{name}"] = jnp.mean(value)
        if record is None:
            return metrics
        first = jax.tree.map(lambda x: x[None], record(state))
        return metrics, jax.tree.map(lambda a, b: jnp.concatenate([a, b]), first, recorded)

    return jax.jit(evaluate)
