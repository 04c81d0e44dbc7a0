"""The physics switch: MJX-JAX and MuJoCo-Warp step the same task to the same result.

`native` (MuJoCo C) has its own file, tests/test_physics_native.py."""

import jax
import jax.numpy as jnp
import numpy as np

from playground import physics, registry

from .conftest import BATCH


def test_warp_is_available_with_dev_install():
    # warp-lang is in the dev extra, so the warp backend is exercised wherever tests run; the
    # tests run on CPU, where MuJoCo C (`native`) is available too.
    assert physics.available_impls() == ["jax", "warp", "native"]


def test_jax_and_warp_agree_on_pick(pick):
    warp_env = registry.load("AlohaS2RPick", config_overrides={"impl": "warp"})
    assert warp_env.impl == "warp" and pick.env.impl == "jax"
    reset, step = jax.jit(jax.vmap(warp_env.reset)), jax.jit(jax.vmap(warp_env.step))
    keys = jax.random.split(jax.random.PRNGKey(0), BATCH)
    w, j = reset(keys), pick.reset(keys)
    np.testing.assert_allclose(w.data.qpos, j.data.qpos, atol=1e-6)
    action = jnp.zeros((BATCH, 7)).at[:, 0].set(0.5).at[:, 1].set(-0.5)
    for _ in range(10):  # 0.5 s: the arm moves, the block rests on the table
        w, j = step(w, action), pick.step(j, action)
    block = pick.env.block
    # Same servo motion and the same resting block (contacts differ slightly between solvers).
    np.testing.assert_allclose(w.data.qpos[:, :6], j.data.qpos[:, :6], atol=5e-3)
    np.testing.assert_allclose(w.data.xpos[:, block.body], j.data.xpos[:, block.body], atol=1e-3)
    for key, shape in pick.env.observation_size.items():
        assert w.obs[key].shape == (BATCH, *shape)
    np.testing.assert_allclose(w.obs["privileged_state"], j.obs["privileged_state"], atol=0.05)
