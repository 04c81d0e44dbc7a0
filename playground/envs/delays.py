"""Action and observation delay buffers, and observation noise.

One implementation, used by the envs and by the robot-side observation builder, so that what the
robot feeds a policy matches what the policy saw in training. Histories are arrays `[n, ...]` with
the newest entry at index 0; a delay of k control steps reads index k. `init_history` and `push`
keep NumPy arrays NumPy (float64 stays float64), so the robot side runs them outside JAX.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from playground.errors import UsageError


def skewed_delay_pmf(n: int, exponent: float) -> np.ndarray:
    """P(delay = k) proportional to 1 / (k + 1)^exponent for k in [0, n): mostly fresh, a few late.

    exponent 0 gives a uniform delay; n = 1 gives no delay.
    """
    if n < 1:
        raise UsageError(f"delay history length must be >= 1, got {n}")
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return (w / w.sum()).astype(np.float32)


def _xp(*arrays):
    return np if all(isinstance(a, np.ndarray) for a in arrays) else jnp


def init_history(x: jax.Array, n: int) -> jax.Array:
    """A history `[n, ...]` filled with `x` (the state at reset, so early delays read it)."""
    return _xp(x).broadcast_to(x[None], (n, *x.shape)).copy()


def push(history: jax.Array, x: jax.Array) -> jax.Array:
    """Inserts `x` as the newest entry, dropping the oldest."""
    return _xp(history, x).concatenate([x[None], history[:-1]], axis=0)


def sample_delay(rng: jax.Array, pmf: np.ndarray) -> jax.Array:
    return jax.random.choice(rng, len(pmf), p=jnp.asarray(pmf))


def delayed(history: jax.Array, rng: jax.Array, pmf: np.ndarray) -> jax.Array:
    """The history entry at a delay drawn from `pmf`."""
    return history[sample_delay(rng, pmf)]


def uniform_noise(rng: jax.Array, x: jax.Array, scale: jax.Array | float) -> jax.Array:
    """`x` plus noise uniform in [-scale, scale] (per element; `scale` broadcasts)."""
    return x + scale * jax.random.uniform(rng, x.shape, minval=-1.0, maxval=1.0)
