"""The Aloha tasks on the robot side: the observation builder reproduces the env's observations
(tracked objects included), the composite teacher switches when both objects are up, the pick
policy works on the mirrored right arm, and exported Aloha teachers run on the native robot."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from playground import registry
from playground.deploy.obs_builder import DeployError, ObservationBuilder, joint_addresses
from playground.deploy.robot import Reading
from playground.deploy.sim_robot import SimRobot
from playground.envs.aloha import composite
from playground.files import policy_file

REPO = Path(__file__).resolve().parents[1]
PICK_POLICY = REPO / "params" / "aloha_s2r_pick_native" / "policy.safetensors"
INSERT_POLICY = REPO / "params" / "aloha_s2r_peg_insertion_native" / "policy.safetensors"

# Without simulated delays and noise, the env's observation is the clean one a robot builds.
EXACT = {
    "delay.action_history": 1,
    "delay.obs_history": 1,
    "obs_noise.qpos_rad": 0.0,
    "obs_noise.qvel_rad_s": 0.0,
    "obs_noise.object_pos_m": 0.0,
    "obs_noise.object_angle_rad": 0.0,
}


def reading_of(env, data) -> Reading:
    qpos_adr, dof_adr = joint_addresses(env.mj_model, tuple(env.ROBOT_JOINTS))
    qpos = np.asarray(data.qpos)
    objects = {}
    for name in env.ROBOT_OBJECTS:
        adr = int(env.mj_model.jnt_qposadr[env.mj_model.body(name).jntadr[0]])
        objects[name] = qpos[adr : adr + 7].copy()
    return Reading(
        time_s=float(data.time),
        qpos=qpos[qpos_adr],
        qvel=np.asarray(data.qvel)[dof_adr],
        objects=objects,
    )


# arm_observation: qpos 8 | qvel 8 | ctrl 7 | then frames: pinch pose, object pose, differences
ARM_EXACT = np.r_[0:23]
ARM_FRAMES = np.r_[23:47]


def _drive(env, builder, state, actions, check):
    step = jax.jit(env.step)
    builder.start(reading_of(env, state.data), env.robot_task(state.info), state.data.ctrl)
    for i, a in enumerate(actions):
        obs = builder.observe(reading_of(env, state.data))
        check(i, obs, state)
        targets = builder.command(np.asarray(a))
        builder.sent(targets)
        state = step(state, a)
        # The env draws no delay here: the robot's targets are the env's.
        np.testing.assert_allclose(targets, state.data.ctrl, atol=1e-5)
    return state


def test_pick_builder_reproduces_the_env_observation():
    """Joints, targets and the tracked block through the builder give the env's `state`; frames
    agree within the one-substep offset of MuJoCo's step order (tests/test_sim2sim.py)."""
    env = registry.load("AlohaS2RPick", config_overrides=EXACT)
    state = jax.jit(env.reset)(jax.random.PRNGKey(5))
    actions = jax.random.uniform(jax.random.PRNGKey(6), (6, 7), minval=-1, maxval=1)

    def check(i, obs, state):
        want = np.asarray(state.obs["state"])
        np.testing.assert_allclose(obs["state"][ARM_EXACT], want[ARM_EXACT], atol=1e-5)
        tol = 1e-5 if i == 0 else 5e-3
        np.testing.assert_allclose(obs["state"][ARM_FRAMES], want[ARM_FRAMES], atol=tol)

    _drive(env, ObservationBuilder(env), state, actions, check)


def test_whole_task_builder_reproduces_state_pick_state_and_the_phase_flag():
    exact_peg = {**EXACT, "obs_noise.relative_pos_m": 0.0, "phase1": "agent"}
    env = registry.load("AlohaS2RPegInsertion", config_overrides=exact_peg)
    state = jax.jit(env.reset)(jax.random.PRNGKey(7))
    actions = jax.random.uniform(jax.random.PRNGKey(8), (4, 14), minval=-1, maxval=1)
    exact = np.r_[ARM_EXACT, 47 + ARM_EXACT, 97]

    def check(i, obs, state):
        assert set(obs) == {"state", "pick_state"}
        want, pick = np.asarray(state.obs["state"]), np.asarray(state.obs["pick_state"])
        np.testing.assert_allclose(obs["state"][exact], want[exact], atol=1e-5)
        np.testing.assert_allclose(obs["state"], want, atol=1e-5 if i == 0 else 5e-3)
        np.testing.assert_allclose(obs["pick_state"], pick, atol=1e-5 if i == 0 else 5e-3)
        assert obs["state"][-1] == 0.0  # objects on the table: phase 1

    _drive(env, ObservationBuilder(env), state, actions, check)


def test_the_robots_phase_flag_latches_once_both_objects_are_up():
    env = registry.load("AlohaS2RPegInsertion", config_overrides={"phase1": "agent"})
    builder = ObservationBuilder(env)
    state = jax.jit(env.reset)(jax.random.PRNGKey(1))
    reading = reading_of(env, state.data)
    builder.start(reading, env.robot_task(state.info), state.data.ctrl)
    assert builder.observe(reading)["state"][-1] == 0.0
    up = dict(reading.objects)
    for name in ("socket", "peg"):
        up[name] = up[name].copy()
        up[name][2] = env.config.switch_height_m + 0.05
    lifted = Reading(reading.time_s, reading.qpos, reading.qvel, objects=up)
    builder.observe(lifted)
    builder.sent(builder.command(np.zeros(14)))
    # Set from the lifted reading on, and kept when the objects are lower again.
    assert builder.observe(reading)["state"][-1] == 1.0


def test_readings_without_the_tracked_objects_are_refused():
    env = registry.load("AlohaS2RPick")
    builder = ObservationBuilder(env)
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))
    good = reading_of(env, state.data)
    builder.start(good, env.robot_task(state.info))
    bad = [
        ({}, "no pose of 'block'"),
        ({"block": np.r_[good.objects["block"][:3], 0, 0, 0, 0]}, "norm 0"),
        ({"block": np.full(7, np.nan)}, "refused"),
        ({"block": np.zeros(3)}, "refused"),
    ]
    for objects, why in bad:
        with pytest.raises(DeployError, match=why):
            builder.observe(Reading(good.time_s, good.qpos, good.qvel, objects=objects))


def test_sim_robot_reports_tracked_objects_with_the_envs_perception_noise():
    env = registry.load("AlohaS2RPick")
    quiet = SimRobot(env, latency=False)
    key = jax.random.PRNGKey(2)
    quiet.start_episode(key)
    exact = quiet.read().objects["block"]
    adr = int(env.mj_model.jnt_qposadr[env.mj_model.body("block").jntadr[0]])
    np.testing.assert_allclose(exact, quiet.data.qpos[adr : adr + 7], atol=1e-12)
    noisy = SimRobot(env, latency=False, sensor_noise=1.0, seed=3)
    noisy.start_episode(key)
    seen = noisy.read().objects["block"]
    off = np.abs(seen[:3] - exact[:3])
    assert 0 < off.max() <= env.config.obs_noise.object_pos_m + 1e-9
    assert abs(np.linalg.norm(seen[3:]) - 1.0) < 1e-6
    turn = 2 * np.arccos(min(1.0, abs(float(np.dot(seen[3:], exact[3:])))))
    assert 0 < turn <= env.config.obs_noise.object_angle_rad + 1e-6
    quiet.close()
    noisy.close()


def test_combine_uses_the_pick_actions_until_the_flag_is_set():
    left, right, after = jnp.full(7, 1.0), jnp.full(7, 2.0), jnp.full(14, 3.0)
    np.testing.assert_array_equal(composite.combine(0.0, left, right, after), [1.0] * 7 + [2.0] * 7)
    np.testing.assert_array_equal(composite.combine(1.0, left, right, after), after)
    batch = composite.combine(jnp.array([0.0, 1.0]), left[None], right[None], after[None])
    np.testing.assert_array_equal(batch[:, 0], [1.0, 3.0])


def _whole_task(overrides, n=16, steps=60, seed=0):
    env = registry.load(
        "AlohaS2RPegInsertion",
        config_overrides={"impl": "native", "episode_length": 200, **overrides},
    )
    reset, step = jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))
    state = reset(jax.random.split(jax.random.PRNGKey(seed), n))
    return env, state, step


# CI budget (the suite's 20-minute limit): slow; pytest --slow runs it.
@pytest.mark.slow
def test_pick_policy_lifts_with_both_arms_and_the_switch_is_exact():
    """phase1="policy": the shipped pick policy lifts the socket with the left arm and the peg
    with the mirrored right arm; `has_switched` turns on at the first step both are above
    `switch_height_m` and stays on; the agent's action is ignored until the phase flag the
    agent sees is set."""
    env, state, step = _whole_task({"phase1": "policy", "pick_policy_path": str(PICK_POLICY)})
    n = state.obs["state"].shape[0]
    bodies = [o.body for o in env.objects]
    h = env.config.switch_height_m
    switched_at = np.full(n, -1)
    push = jnp.full((n, 14), 1.0)  # would drive every joint to its limit if it were applied
    for t in range(60):
        seen_flag = np.asarray(state.obs["state"][:, -1])
        before = np.asarray(state.data.ctrl)
        state = step(state, push)
        flag = np.asarray(state.info["has_switched"])
        z = np.asarray(state.data.xpos[:, bodies, 2])
        up = np.all(z > h, axis=1)
        first = (switched_at < 0) & up
        np.testing.assert_array_equal(flag > 0, (switched_at >= 0) | up)
        switched_at[first] = t
        # Before the agent sees the flag its all-ones action is not what moved the targets.
        ignored = seen_flag == 0
        grown = np.asarray(state.data.ctrl) - before
        assert not np.any(np.all(grown[ignored] > 0.01, axis=1))
    assert np.mean(switched_at >= 0) >= 15 / 16, switched_at


def test_the_right_arm_sees_itself_as_the_left_arm_does():
    """The same joint angles on both arms give the same pinch pose in each arm's base frame:
    the right arm's observation is the left arm's mirror image, so one pick policy serves both."""
    env = registry.load("AlohaS2RPegInsertion", config_overrides={"phase1": "agent"})
    state = jax.jit(env.reset)(jax.random.PRNGKey(4))
    left, right = env.arms
    q = np.asarray(state.data.qpos).copy()
    q[right.qpos_adr] = q[left.qpos_adr] = [0.3, -0.2, 0.9, 0.1, -0.5, 0.2, 0.02, 0.02]
    # Jitted: op by op, MJX's forward pass took two minutes of the CI budget.
    data = jax.jit(env.forward)(state.data.replace(qpos=jnp.asarray(q)))
    observe = jax.jit(env.robot_observation)
    pick = np.asarray(observe(data, {"has_switched": jnp.zeros(())})["pick_state"])
    pinch = np.r_[23:32]
    np.testing.assert_allclose(pick[0][pinch], pick[1][pinch], atol=1e-5)


def test_composite_files_for_the_wrong_task_are_refused(tmp_path):
    with pytest.raises(policy_file.PolicyFileError, match="AlohaS2RPegInsertion"):
        composite.read(PICK_POLICY, PICK_POLICY)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        composite.read(tmp_path / "missing.safetensors", PICK_POLICY)


@pytest.fixture(scope="module")
def pick_onnx(tmp_path_factory) -> Path:
    from playground.deploy import export_cli

    out = tmp_path_factory.mktemp("pick_onnx")
    (result,) = export_cli.main(["--checkpoint_path", str(PICK_POLICY), "--output_dir", str(out)])
    return Path(result["onnx"])


def test_exported_pick_teacher_succeeds_on_the_native_robot(pick_onnx, tmp_path):
    """The shipped pick teacher through ONNX, the builder (block pose from the tracker), the
    servo and the safety layer on native MuJoCo with the task's latency."""
    from playground.deploy import sim2sim

    summary = sim2sim.main(
        [
            "--onnx",
            str(pick_onnx),
            "--episodes",
            "8",
            "--no-mjx",
            "--json",
            str(tmp_path / "s.json"),
        ]
    )
    assert summary["native_success_rate"] >= 6 / 8, summary
    assert summary["interventions"] == {}, summary  # the policy's targets need no correction
    assert summary["faults"] == {}, summary


@pytest.fixture(scope="module")
def insert_policy(tmp_path_factory) -> Path:
    """An AlohaS2RPegInsertion policy file (untrained weights): the composite's structure does
    not depend on what the insertion policy learned."""
    from .conftest import random_policy_file

    return random_policy_file(
        tmp_path_factory.mktemp("insert") / "policy.safetensors", "AlohaS2RPegInsertion"
    )


# CI budget (the suite's 20-minute limit): slow; pytest --slow runs it.
@pytest.mark.slow
def test_composite_teacher_is_the_pick_policy_then_the_insertion_policy(insert_policy):
    """In the whole task (`phase1="agent"`) the composite teacher's action is the pick policy's
    per arm while the phase flag it sees is 0 and the insertion policy's from then on; and the
    env's `phase1="policy"` mode, which runs the same rule, follows the same trajectory."""
    teacher = composite.load(PICK_POLICY, insert_policy)
    pick = policy_file.make_policy_fn(teacher.pick_payload)
    insert = policy_file.make_policy_fn(teacher.insert_payload)

    @jax.jit
    @jax.vmap
    def parts(obs, key):
        left, right = composite.pick_actions(pick, obs["pick_state"], key)
        return jnp.concatenate([left, right]), insert(obs, key), teacher(obs, key)

    agent, s_agent, step_agent = _whole_task({"phase1": "agent"}, n=8)
    _, s_policy, step_policy = _whole_task(
        {"phase1": "policy", "pick_policy_path": str(PICK_POLICY)}, n=8
    )
    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    for _ in range(70):
        before, after, action = (np.asarray(x) for x in parts(s_agent.obs, keys))
        flag = np.asarray(s_agent.obs["state"][:, -1])[:, None] > 0.5
        np.testing.assert_array_equal(action, np.where(flag, after, before))
        s_agent = step_agent(s_agent, jnp.asarray(action))
        s_policy = step_policy(s_policy, jnp.asarray(after))
        np.testing.assert_allclose(s_agent.data.qpos, s_policy.data.qpos, atol=1e-5)
    assert np.all(np.asarray(s_agent.info["has_switched"]) == 1.0)


@pytest.fixture(scope="module")
def composite_onnx(tmp_path_factory) -> Path:
    """The shipped teachers as one composite ONNX file."""
    from playground.deploy import export_cli

    out = tmp_path_factory.mktemp("composite_onnx")
    (result,) = export_cli.main(
        [
            "--checkpoint_path",
            str(INSERT_POLICY),
            "--pick_policy",
            str(PICK_POLICY),
            "--output_dir",
            str(out),
        ]
    )
    assert result["kind"] == "composite"
    return Path(result["onnx"])


# CI budget (the suite's 20-minute limit): slow; pytest --slow runs it.
@pytest.mark.slow
def test_exported_composite_teacher_runs_the_whole_task_on_the_native_robot(composite_onnx):
    """The shipped teachers' composite ONNX file does the whole bimanual task on native MuJoCo
    (socket and peg poses from the tracker, the task's latency, the safety layer): both arms
    pick their objects with the pick policy, then the insertion policy inserts the peg, without
    a fault (docs/results.md has the 64-episode figures, with and without sensor noise)."""
    from playground.deploy import sim2sim

    summary = sim2sim.main(["--onnx", str(composite_onnx), "--episodes", "8", "--nomjx"])
    assert summary["steps_per_episode"] == 160
    assert summary["native_lifted_both_rate"] >= 7 / 8, summary
    assert summary["native_success_rate"] >= 6 / 8, summary
    assert summary["faults"] == {}, summary


def test_eval_policy_scores_the_whole_task_from_the_table(insert_policy, tmp_path, capsys):
    """`eval_policy.py --pick_policy`: the pick policy lifts both objects, then the insertion
    policy runs; the result records both counts and the overrides that made it."""
    import json

    from .conftest import load_script

    out = tmp_path / "whole.json"
    load_script("eval_policy").main(
        [
            str(insert_policy),
            "--pick_policy",
            str(PICK_POLICY),
            "--episodes",
            "8",
            "--impl",
            "native",
            "--json",
            str(out),
        ]
    )
    result = json.loads(out.read_text())
    assert result["lifted_both"] >= 7, result
    assert result["env_overrides"]["phase1"] == "policy"
    assert result["env_overrides"]["episode_length"] == 160
    assert "lifted both objects" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        load_script("eval_policy").main([str(PICK_POLICY), "--pick_policy", str(PICK_POLICY)])
    assert e.value.code == 2
    assert "not 'AlohaS2RPegInsertion'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # an override the task has no field for: one line
        load_script("eval_policy").main([str(PICK_POLICY), "--env_config", "no_such_key=1"])
    assert e.value.code == 2
    assert "Unknown config key 'no_such_key'" in capsys.readouterr().err


def test_tracked_peg_and_socket_share_most_of_their_position_error():
    """With sensor noise the stand-in tracker moves both objects by one common error and each by
    a small one: the peg-to-socket offset is as precise as the policy saw in training."""
    env = registry.load("AlohaS2RPegInsertion", config_overrides={"delay.obs_history": 1})
    robot = SimRobot(env, seed=3, latency=False, sensor_noise=1.0)
    robot.start_episode(jax.random.PRNGKey(2))
    noise = env.config.obs_noise
    errors, rel_errors = [], []
    for _ in range(200):
        robot.send(robot.held_targets)  # one control period: a new measurement
        reading = robot.read()
        err = {}
        for name in env.ROBOT_OBJECTS:
            adr = int(robot.model.jnt_qposadr[robot.model.body(name).jntadr[0]])
            err[name] = reading.objects[name][:3] - robot.data.qpos[adr : adr + 3]
        errors.append(np.stack(list(err.values())))
        rel_errors.append(err["peg"] - err["socket"])
    errors, rel_errors = np.abs(np.asarray(errors)), np.abs(np.asarray(rel_errors))
    assert errors.max() <= noise.object_pos_m + 0.5 * noise.relative_pos_m + 1e-9
    assert errors.max() > noise.object_pos_m  # the common part is the cell's whole error
    assert rel_errors.max() <= noise.relative_pos_m + 1e-9
    assert rel_errors.max() > 0.5 * noise.relative_pos_m
