"""Delay buffers and noise (shared with the robot side later) and the policy params file.

tests/test_safe_files.py covers what the policy files refuse (pickles, crafted files)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from playground.envs import delays
from playground.files import policy_file


def test_skewed_pmf():
    pmf = delays.skewed_delay_pmf(4, 3.0)
    assert pmf.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.diff(pmf) < 0)  # mostly fresh
    assert pmf[0] == pytest.approx(1 / (1 + 1 / 8 + 1 / 27 + 1 / 64), rel=1e-5)
    np.testing.assert_allclose(delays.skewed_delay_pmf(3, 0.0), [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_array_equal(delays.skewed_delay_pmf(1, 3.0), [1.0])
    with pytest.raises(ValueError, match=">= 1"):
        delays.skewed_delay_pmf(0, 1.0)


def test_history_push_and_delayed_draws_follow_pmf():
    h = delays.init_history(jnp.array([0.0]), 4)
    for v in (1.0, 2.0, 3.0):
        h = delays.push(h, jnp.array([v]))
    np.testing.assert_array_equal(h[:, 0], [3.0, 2.0, 1.0, 0.0])  # newest first
    pmf = delays.skewed_delay_pmf(4, 3.0)
    keys = jax.random.split(jax.random.PRNGKey(0), 20000)
    draws = np.asarray(jax.vmap(lambda k: delays.delayed(h, k, pmf))(keys))[:, 0]
    freq = np.array([(draws == 3.0 - k).mean() for k in range(4)])
    np.testing.assert_allclose(freq, pmf, atol=0.01)


def test_uniform_noise_bounds_and_seed():
    x = jnp.zeros(1000)
    a = delays.uniform_noise(jax.random.PRNGKey(1), x, 0.1)
    b = delays.uniform_noise(jax.random.PRNGKey(1), x, 0.1)
    np.testing.assert_array_equal(a, b)
    assert float(jnp.max(jnp.abs(a))) <= 0.1 and float(jnp.std(a)) == pytest.approx(
        0.1 / np.sqrt(3), rel=0.1
    )


def test_policy_file_round_trip_and_errors(tmp_path):
    params = ({"mean": np.zeros(3)}, {"w": np.arange(6.0).reshape(2, 3)}, {"v": np.ones(2)})
    path = policy_file.save_policy(
        tmp_path / "p.safetensors",
        env_name="AlohaS2RPick",
        params=params,
        observation_size={"state": (3,), "privileged_state": (5,)},
        action_size=2,
        policy_hidden_layer_sizes=(4,),
        value_hidden_layer_sizes=(4,),
        extra={"num_timesteps": 10},
    )
    assert not list(tmp_path.glob("*.tmp*"))  # the atomic write left no temp file
    payload = policy_file.read_policy(path, env_name="AlohaS2RPick")
    np.testing.assert_array_equal(payload["params"][1]["w"], params[1]["w"])
    assert payload["network"]["observation_size"]["state"] == (3,)
    assert payload["extra"] == {"num_timesteps": 10}
    with pytest.raises(policy_file.PolicyFileError, match="trained on 'AlohaS2RPick'"):
        policy_file.read_policy(path, env_name="AlohaS2RPegInsertion")
    with pytest.raises(policy_file.PolicyFileError, match="p.safetensors.*format.*pixel-student"):
        policy_file.read_student(path)  # a teacher is not a student
    with pytest.raises(ValueError, match="activation"):
        policy_file.save_policy(
            tmp_path / "x", env_name="e", params=params, observation_size={}, action_size=1,
            policy_hidden_layer_sizes=(1,), value_hidden_layer_sizes=(1,), activation="gelu",
        )  # fmt: skip
