"""FrankaGrasp and FrankaLift: IK, keypoint reward, scripted grasp-and-lift, terminations."""

import functools

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

from playground import registry
from playground.envs.franka import scripted
from playground.envs.wrappers import BatchEnv

from .conftest import BATCH, set_free_body


@pytest.fixture(scope="module")
def ik_converge():
    env = registry.load("FrankaGrasp")
    ik = env.panda.ik

    @jax.jit
    def run(qpos, pos, rot):
        data = env.make_data().replace(qpos=qpos)
        return ik.converge(env.mjx_model, data, pos, rot, iterations=60)

    return env, run


def test_ik_reaches_reachable_targets_within_a_millimetre(ik_converge):
    env, run = ik_converge
    m = env.mj_model
    d = mujoco.MjData(m)
    rng = np.random.default_rng(0)
    home = m.keyframe("home").qpos.copy()
    lo, hi = np.asarray(env.panda.ik.q_lo), np.asarray(env.panda.ik.q_hi)
    for _ in range(4):
        # A target the arm can reach: forward kinematics of a random nearby configuration.
        q = np.clip(home[:7] + rng.uniform(-0.5, 0.5, 7), lo, hi)
        d.qpos[:] = home
        d.qpos[:7] = q
        mujoco.mj_kinematics(m, d)
        pos = d.site_xpos[env.panda.tcp_site].copy()
        rot = d.site_xmat[env.panda.tcp_site].reshape(3, 3).copy()
        q_sol, err = run(jnp.asarray(home), jnp.asarray(pos), jnp.asarray(rot))
        assert float(err) < 1e-3
        assert np.all(np.asarray(q_sol) >= lo - 1e-6) and np.all(np.asarray(q_sol) <= hi + 1e-6)


def test_ik_degrades_gracefully_when_unreachable(ik_converge):
    env, run = ik_converge
    home = jnp.asarray(env.mj_model.keyframe("home").qpos)
    far = jnp.array([2.0, 0.5, 0.4])  # 2 m away: beyond the arm's 0.855 m reach
    q_sol, err = run(home, far, None)
    q_sol = np.asarray(q_sol)
    assert np.all(np.isfinite(q_sol)) and np.isfinite(float(err))
    lo, hi = np.asarray(env.panda.ik.q_lo), np.asarray(env.panda.ik.q_hi)
    assert np.all(q_sol >= lo - 1e-6) and np.all(q_sol <= hi + 1e-6)
    start = float(jnp.linalg.norm(far - jnp.array([0.307, 0.0, 0.487])))
    assert float(err) < start - 0.3, "the arm stretches towards the target"


def test_keypoint_reward_is_largest_at_the_grasp_pose(franka_grasp):
    env = franka_grasp.env
    state = franka_grasp.reset_batch(0)
    data = jax.tree.map(lambda x: x[0], state.data)
    box, _ = env.box_pose(data)
    frame = env.grasp_frames(data)[0]
    q, err = env.panda.ik.converge(env.mjx_model, data, box, frame, iterations=80)
    assert float(err) < 1e-3

    def keypoint_at(q_arm):
        d = data.replace(qpos=data.qpos.at[env.panda.qpos_adr].set(q_arm))
        d = mjx.kinematics(env.mjx_model, d)
        info = jax.tree.map(lambda x: x[0], state.info)
        return float(env.reward_terms(d, info, jnp.zeros(7))["keypoint"])

    best = keypoint_at(q)
    assert best > 0.95
    rng = np.random.default_rng(1)
    for _ in range(5):
        assert keypoint_at(q + jnp.asarray(rng.uniform(-0.15, 0.15, 7))) < best


def _grasp_carry(env):
    """FrankaGrasp's carry target: 6 cm past the lift height above the box's start."""
    return lambda s: s.info["box_start"] + jnp.array([0.0, 0.0, env.config.lift_height_m + 0.06])


def _lift_carry(env):
    return lambda s: s.info["goal"]


def _scripted_outcomes(env, reset, step, rngs, carry_fn):
    """Runs the scripted grasp from the starts `rngs` `[B, 2]` for one episode.

    Returns per env: success (FrankaGrasp: at the last step; FrankaLift: at any step, which ends
    the episode), whether any step dropped the box, and the final gripper target.
    """
    act = jax.jit(jax.vmap(lambda s, t: scripted.grasp_action(env, s, t)))
    state = reset(rngs)
    ever = np.zeros(len(rngs))
    dropped = np.zeros(len(rngs), bool)
    done = np.zeros(len(rngs), bool)
    for _ in range(env.config.episode_length):
        state = step(state, act(state, carry_fn(state)))
        live = ~done
        ever = np.where(live, np.maximum(ever, np.asarray(state.metrics["success"])), ever)
        if "dropped" in state.metrics:
            dropped |= live & (np.asarray(state.metrics["dropped"]) != 0.0)
        done |= np.asarray(state.done) > 0
        if done.all():
            break
    last = np.asarray(state.metrics["success"])
    gripper = np.asarray(state.data.ctrl[:, env.panda.gripper_actuator])
    return {"last": last, "ever": ever, "dropped": dropped, "done": done, "gripper": gripper}


# Outcomes of contact-rich episodes can flip with a processor's float rounding, so these tests
# count successes over 16 or 32 starts and assert a rate with a margin, not every episode
# (docs/tasks.md, "FrankaGrasp's scripted grasp", has the measured counts).
SCRIPTED_SEEDS = (7, 8, 9, 10)  # 4 fixture batches: 16 starts


def _fixture_outcomes(compiled, carry_fn):
    runs = [
        _scripted_outcomes(
            compiled.env,
            compiled.reset,
            compiled.step,
            jax.random.split(jax.random.PRNGKey(seed), BATCH),
            carry_fn,
        )
        for seed in SCRIPTED_SEEDS
    ]
    return {k: np.concatenate([r[k] for r in runs]) for k in runs[0]}


def test_scripted_grasp_and_lift_succeeds_in_frankagrasp(franka_grasp):
    env = franka_grasp.env
    out = _fixture_outcomes(franka_grasp, _grasp_carry(env))
    assert not out["done"].any(), "nothing terminates a successful grasp"
    ok = out["last"] == 1.0
    assert ok.sum() >= 15, out["last"]
    # The policy's own gripper command closed the hand on the box.
    assert np.all(out["gripper"][ok] < 0.005)


def test_scripted_grasp_and_lift_reaches_the_goal_in_frankalift(franka_lift):
    out = _fixture_outcomes(franka_lift, _lift_carry(franka_lift.env))
    ok = out["ever"] == 1.0
    assert ok.sum() >= 15, out["ever"]
    assert np.all(out["done"][ok]), "reaching the goal ends the episode"
    assert out["dropped"].sum() <= 1


@pytest.mark.parametrize("name", ["FrankaGrasp", "FrankaLift"])
def test_scripted_grasp_succeeds_with_domain_randomisation_on_native_physics(name):
    """32 randomised boxes (size, mass up to 0.3 kg, friction, arm gains) under impl=native.

    Before the 2.5 ms step, impratio 10 and the converged solve, heavy boxes crept down the pads
    and about half of these grasps dropped their box.
    """
    env = registry.load(name, config_overrides={"impl": "native"})
    n = 32
    randomizer = registry.get_domain_randomizer(name, env.config)
    batch = BatchEnv(
        env, functools.partial(randomizer, rng=jax.random.split(jax.random.PRNGKey(107), n))
    )
    carry = _grasp_carry(env) if name == "FrankaGrasp" else _lift_carry(env)
    out = _scripted_outcomes(
        env,
        jax.jit(batch.reset),
        jax.jit(batch.step),
        jax.random.split(jax.random.PRNGKey(7), n),
        carry,
    )
    successes = out["last"] if name == "FrankaGrasp" else out["ever"]
    assert successes.sum() >= 30, successes


def test_lift_shaping_peaks_where_success_holds(franka_lift):
    env = franka_lift.env
    state = franka_lift.reset_batch(2)
    info = jax.tree.map(lambda x: x[0], state.info)
    data = jax.tree.map(lambda x: x[0], state.data)
    weights = env.config.reward

    def shaped_at(offset):
        # Box (with the hand closed on it) placed at goal + offset.
        pos = info["goal"] + jnp.asarray(offset)
        qpos = data.qpos.at[env.box_qpos_adr : env.box_qpos_adr + 3].set(pos)
        d = mjx.kinematics(env.mjx_model, data.replace(qpos=qpos))
        terms = env.reward_terms(d, info, jnp.zeros(7))
        shaped = sum(weights[k] * terms[k] for k in ("goal_coarse", "goal_fine"))
        return float(shaped), float(terms["success"])

    at_goal, ok = shaped_at([0.0, 0.0, 0.0])
    near, ok_near = shaped_at([0.04, 0.0, 0.0])
    far, ok_far = shaped_at([0.2, 0.0, 0.0])
    assert ok == ok_near == 1.0 and ok_far == 0.0
    assert at_goal > near > far


def test_lift_terminations(franka_lift):
    env = franka_lift.env
    state = franka_lift.reset_batch(3)
    # Box pushed off the table's edge: dropped, terminated, penalised.
    off = set_free_body(state, env.box_qpos_adr, [0.5, 1.2, -0.2])
    after = franka_lift.step(off, franka_lift.zeros())
    assert np.all(np.asarray(after.done) == 1.0)
    assert np.all(np.asarray(after.metrics["dropped"]) == -1.0)
    # Box at the goal: success ends the episode.
    goal = np.asarray(state.info["goal"][0])
    at_goal = set_free_body(state, env.box_qpos_adr, goal)
    after = franka_lift.step(at_goal, franka_lift.zeros())
    assert float(after.metrics["success"][0]) == 1.0 and float(after.done[0]) == 1.0
    # Nothing happening: no termination (the time limit is the wrapper's truncation).
    calm = franka_lift.step(state, franka_lift.zeros())
    assert np.all(np.asarray(calm.done) == 0.0)


def test_box_tasks_randomise_size_and_mass():
    env = registry.load("FrankaGrasp")
    batched, _ = registry.get_domain_randomizer("FrankaGrasp")(
        env.mjx_model, jax.random.split(jax.random.PRNGKey(0), 3)
    )
    sizes = np.asarray(batched.geom_size[:, env.mj_model.geom("box").id])
    masses = np.asarray(batched.body_mass[:, env.box_body])
    assert len({tuple(s.round(5)) for s in sizes}) == 3 and len(set(masses.round(5))) == 3
    assert np.all((sizes[:, 1] >= 0.012) & (sizes[:, 1] <= 0.018))
