"""FrankaReach: kinematics, delta end-effector control, reward at known poses, randomisation."""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from playground import registry
from playground.envs.franka import constants as c
from playground.envs.franka import reach as reach_lib


def _dh_flange(q: np.ndarray) -> np.ndarray:
    """Flange position from the official modified-DH table (Craig), independent of the XML."""
    a = [0, 0, 0, 0.0825, -0.0825, 0, 0.088, 0]
    d = [0.333, 0, 0.316, 0, 0.384, 0, 0, 0.107]
    alpha = [0, -np.pi / 2, np.pi / 2, np.pi / 2, -np.pi / 2, np.pi / 2, np.pi / 2, 0]
    t = np.eye(4)
    for i, theta in enumerate(list(q) + [0.0]):
        ca, sa, ct, st = np.cos(alpha[i]), np.sin(alpha[i]), np.cos(theta), np.sin(theta)
        t = t @ np.array(
            [
                [ct, -st, 0, a[i]],
                [st * ca, ct * ca, -sa, -d[i] * sa],
                [st * sa, ct * sa, ca, d[i] * ca],
                [0, 0, 0, 1],
            ]
        )
    return t[:3, 3]


def test_model_matches_published_dh_table():
    m = mujoco.MjModel.from_xml_path(str(c.REACH_XML))
    d = mujoco.MjData(m)
    rng = np.random.default_rng(0)
    for _ in range(5):
        q = rng.uniform(m.jnt_range[:7, 0], m.jnt_range[:7, 1])
        d.qpos[:7] = q
        mujoco.mj_kinematics(m, d)
        np.testing.assert_allclose(d.xpos[m.body("hand").id], _dh_flange(q), atol=1e-9)
    total = m.body_subtreemass[m.body("link0").id]
    assert total == pytest.approx(
        0.629769
        + 4.970684
        + 0.646926
        + 3.228604
        + 3.587895
        + 1.225946
        + 1.666555
        + 0.735522
        + 0.73
        + 0.03,
        abs=1e-6,
    )


def test_delta_actions_move_the_hand_and_keep_it_down(reach):
    env = reach.env
    state = reach.reset_batch(0)
    start = state.data.site_xpos[:, env.panda.tcp_site]
    # +x for 5 steps: the hand moves about 5 x action_scale forward, and stays pointing down.
    state = reach.run(state, 5, reach.zeros().at[:, 0].set(1.0))
    state = reach.run(state, 5)
    moved = state.data.site_xpos[:, env.panda.tcp_site] - start
    assert np.all(moved[:, 0] > 0.6 * 5 * env.config.action_scale)
    assert np.all(np.abs(moved[:, 1:]) < 0.03)
    z_axis = state.data.site_xmat[:, env.panda.tcp_site].reshape(-1, 3, 3)[:, :, 2]
    assert np.all(z_axis[:, 2] < -0.97), "the hand keeps pointing down"


def test_proportional_controller_reaches_every_target(reach):
    """The task is solvable as defined: steering straight at the target succeeds."""
    env = reach.env
    state = reach.reset_batch(1)
    step_m = env.config.action_scale
    for _ in range(env.config.episode_length):
        offset = state.obs["privileged_state"][
            :, reach_lib.PROPRIO_SIZE + 3 : reach_lib.PROPRIO_SIZE + 6
        ]
        state = reach.step(state, jnp.clip(offset / step_m, -1.0, 1.0))
    assert np.all(state.metrics["success"] == 1.0)
    assert np.all(state.metrics["reach"] > 1.0 - np.tanh(env.config.success_tol_m / 0.1))


def test_reward_peaks_at_the_target(reach):
    env = reach.env
    state = reach.reset_batch(2)
    data = jax.tree.map(lambda x: x[0], state.data)
    tcp = data.site_xpos[env.panda.tcp_site]
    zero = jnp.zeros(3)
    at = env.reward_terms(data, tcp, zero, zero)
    near = env.reward_terms(data, tcp + jnp.array([0.02, 0, 0]), zero, zero)
    far = env.reward_terms(data, tcp + jnp.array([0.2, 0, 0]), zero, zero)
    assert float(at["reach"]) == pytest.approx(1.0)
    assert float(at["success"]) == float(near["success"]) == 1.0
    assert float(far["success"]) == 0.0
    assert float(at["reach"]) > float(near["reach"]) > float(far["reach"])
    jerk = env.reward_terms(data, tcp, jnp.ones(3), -jnp.ones(3))
    assert float(jerk["action_rate"]) == pytest.approx(-12.0)


def test_reach_randomisation_varies_gains_and_masses():
    env = registry.load("FrankaReach")
    rand = registry.get_domain_randomizer("FrankaReach")
    batched, _ = rand(env.mjx_model, jax.random.split(jax.random.PRNGKey(0), 3))
    gains = np.asarray(batched.actuator_gainprm[:, 0, 0])
    masses = np.asarray(batched.body_mass[:, env.mj_model.body("link3").id])
    assert len(set(gains.round(6))) == 3 and len(set(masses.round(6))) == 3
    assert np.all((gains > 0.8 * 4500 - 1e-3) & (gains < 1.2 * 4500 + 1e-3))
