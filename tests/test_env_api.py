"""Registered envs (the two Franka box stereo variants by shape only, see conftest): reset/step
under jit and vmap, shapes, finiteness, bad actions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from .conftest import BATCH, STEPPED_ENVS


@pytest.mark.parametrize("name", STEPPED_ENVS)
def test_reset_step_shapes_and_finite(compiled_envs, name):
    c = compiled_envs[name]
    state = c.reset_batch(0)
    actions = jax.random.uniform(
        jax.random.PRNGKey(1), (BATCH, c.env.action_size), minval=-1, maxval=1
    )
    for _ in range(3):
        state = c.step(state, actions)
    assert set(state.obs) >= {"state", "privileged_state"}
    for key, shape in c.env.observation_size.items():
        assert state.obs[key].shape == (BATCH, *shape), key
        assert np.all(np.isfinite(state.obs[key])), key
    assert state.reward.shape == (BATCH,) and np.all(np.isfinite(state.reward))
    assert state.done.shape == (BATCH,)
    for k, v in state.metrics.items():
        assert v.shape == (BATCH,) and np.all(np.isfinite(v)), k
    assert np.all(state.data.ctrl >= c.env.mj_model.actuator_ctrlrange[:, 0] - 1e-6)
    assert np.all(state.data.ctrl <= c.env.mj_model.actuator_ctrlrange[:, 1] + 1e-6)


@pytest.mark.parametrize("name", STEPPED_ENVS)
def test_wrong_action_shape_is_a_clear_error(compiled_envs, name):
    c = compiled_envs[name]
    state = c.reset_batch(0)
    with pytest.raises(ValueError, match=rf"action of shape \({c.env.action_size},\)"):
        c.step(state, jnp.zeros((BATCH, c.env.action_size + 1)))


@pytest.mark.parametrize("name", STEPPED_ENVS)
def test_resets_are_random_and_reproducible(compiled_envs, name):
    c = compiled_envs[name]
    a, b, again = c.reset_batch(0), c.reset_batch(1), c.reset_batch(0)
    np.testing.assert_array_equal(a.data.qpos, again.data.qpos)
    np.testing.assert_array_equal(a.obs["state"], again.obs["state"])
    assert not np.allclose(a.data.qpos, b.data.qpos)
    # Within one batch, every env starts differently too (pose or servo targets).
    start = np.concatenate([np.asarray(a.data.qpos), np.asarray(a.data.ctrl)], axis=-1)
    assert len({tuple(np.round(q, 6)) for q in start}) == BATCH


@pytest.mark.parametrize("name", STEPPED_ENVS)
def test_privileged_state_is_clean_and_state_is_noisy(compiled_envs, name):
    c = compiled_envs[name]
    s = c.reset_batch(3)
    n = s.obs["state"].shape[-1]
    # The first entries of both are the same quantities (arm joints), once with sensor noise.
    diff = np.abs(np.asarray(s.obs["state"][:, :6]) - np.asarray(s.obs["privileged_state"][:, :6]))
    assert diff.max() > 0 and diff.max() <= c.env.config.obs_noise.qpos_rad + 1e-6
    assert n < s.obs["privileged_state"].shape[-1]
