"""The training wrapper: truncation vs termination, fresh auto-resets, per-env randomisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from playground import registry
from playground.envs import wrappers

B = 4


@pytest.fixture(scope="module")
def wrapped():
    # The wrapper does not depend on the physics; native C physics compiles in seconds where
    # MJX-JAX's step takes half a minute on 2 cores (test_physics_native compares the two).
    env = registry.load("AlohaS2RPick", config_overrides={"impl": "native"})
    dr = registry.get_domain_randomizer("AlohaS2RPick")
    randomization_fn = lambda m: dr(m, jax.random.split(jax.random.PRNGKey(7), B))  # noqa: E731
    w = wrappers.wrap_for_brax_training(env, episode_length=3, randomization_fn=randomization_fn)
    return w, jax.jit(w.reset), jax.jit(w.step)


def test_time_limit_is_truncation_and_reset_is_fresh(wrapped):
    w, reset, step = wrapped
    first = reset(jax.random.split(jax.random.PRNGKey(0), B))
    adr = w.unwrapped.block.qpos_adr
    s = first
    for i in range(3):
        s = step(s, jnp.zeros((B, 7)))
        expect_done = 1.0 if i == 2 else 0.0
        assert np.all(np.asarray(s.done) == expect_done)
    assert np.all(np.asarray(s.info["truncation"]) == 1.0)
    assert np.all(np.asarray(s.info["steps"]) == 3)  # the finished episode's length...
    # The new episode starts from a new random placement, not the first reset's.
    new_xy = np.asarray(s.data.qpos[:, adr : adr + 2])
    old_xy = np.asarray(first.data.qpos[:, adr : adr + 2])
    assert np.all(np.linalg.norm(new_xy - old_xy, axis=-1) > 1e-3)
    assert np.all(np.asarray(s.info["episode_metrics"]["length"]) == 3)
    s = step(s, jnp.zeros((B, 7)))
    assert np.all(np.asarray(s.info["steps"]) == 1)  # ...and the new episode counts from 1
    assert np.all(np.asarray(s.done) == 0.0)


def test_termination_is_not_truncation(wrapped):
    w, reset, step = wrapped
    s = reset(jax.random.split(jax.random.PRNGKey(1), B))
    adr = w.unwrapped.block.qpos_adr
    qpos = s.data.qpos.at[0, adr].set(0.95)  # env 0: block off the table
    s = s.replace(data=s.data.replace(qpos=qpos))
    s = step(s, jnp.zeros((B, 7)))
    assert float(s.done[0]) == 1.0 and float(s.info["truncation"][0]) == 0.0
    assert np.all(np.asarray(s.done[1:]) == 0.0)
    assert abs(float(s.data.qpos[0, adr])) < 0.6  # env 0 was reset onto the table


def test_each_env_steps_its_own_randomised_model(wrapped):
    w, reset, step = wrapped
    s = reset(jax.random.split(jax.random.PRNGKey(2), B))
    block = w.unwrapped.block
    sizes = np.asarray(w.env.env._models.geom_size[:, block.geom, 2])
    assert np.ptp(sizes) > 0.002
    # Each block rests on its own half-size: the per-env model reached reset.
    np.testing.assert_allclose(np.asarray(s.data.qpos[:, block.qpos_adr + 2]), sizes, atol=1e-6)
    s = step(s, jnp.zeros((B, 7)))
    np.testing.assert_allclose(
        np.asarray(s.obs["privileged_state"][:, 53:56]), np.stack([sizes] * 3, -1), atol=1e-6
    )


def test_bad_episode_length():
    with pytest.raises(ValueError, match="episode_length"):
        wrappers.EpisodeWrapper(None, episode_length=0)
