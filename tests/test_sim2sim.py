"""Deployment on a robot: the observation builder matches the env, native MuJoCo matches MJX,
and exported policies run through the robot runner (scripts/sim2sim.py) on a native-MuJoCo
robot with the success they have in MJX."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

from playground import registry
from playground.deploy import runner, sim2sim
from playground.deploy.obs_builder import DeployError, ObservationBuilder, joint_addresses
from playground.deploy.onnx_policy import OnnxPolicy
from playground.deploy.robot import Reading
from playground.deploy.safety import SafetyLayer
from playground.deploy.sim_robot import SimRobot
from playground.envs import delays
from tests.test_runner_faults import tiny_onnx

# Without simulated delays and noise, the env's observation is the clean one a robot builds.
EXACT = {
    "delay.action_history": 1,
    "delay.obs_history": 1,
    "obs_noise.qpos_rad": 0.0,
    "obs_noise.qvel_rad_s": 0.0,
    "obs_noise.pos_m": 0.0,
}


@pytest.fixture(scope="module")
def exact_reach():
    return registry.load("FrankaReach", config_overrides=EXACT)


def reading_of(env, data) -> Reading:
    qpos_adr, dof_adr = joint_addresses(env.mj_model, tuple(env.ROBOT_JOINTS))
    q, v = np.asarray(data.qpos)[qpos_adr], np.asarray(data.qvel)[dof_adr]
    return Reading(time_s=float(data.time), qpos=q, qvel=v)


def test_delay_buffers_keep_numpy_for_the_robot_side():
    h = delays.init_history(np.array([1.0, 2.0]), 3)
    h = delays.push(h, np.array([3.0, 4.0]))
    assert isinstance(h, np.ndarray) and h.dtype == np.float64
    np.testing.assert_array_equal(h, [[3, 4], [1, 2], [1, 2]])
    assert isinstance(delays.push(jnp.zeros((2, 1)), jnp.ones(1)), jax.Array)


def test_builder_reproduces_the_env_step(exact_reach):
    """Readings of the env's joints through the builder give the env's observation, and its
    commands are the env's actuator targets, step after step.

    Joint values, target and last action match exactly. Frames (hand pose) differ slightly: after
    a step the env's frames come from the last substep's forward pass, 5 ms before its joints
    (MuJoCo's step order, in MJX and C alike), while the builder computes them from the joints
    it reads; the hand moves at most a few mm in 5 ms.
    """
    env = exact_reach
    builder = ObservationBuilder(env)
    state = jax.jit(env.reset)(jax.random.PRNGKey(3))
    step = jax.jit(env.step)
    builder.start(
        reading_of(env, state.data),
        env.robot_task(state.info),
        np.asarray(state.data.ctrl),
    )
    exact = np.r_[0:14, 23:27, 30:33]  # joints, gripper, target, last action
    frames = np.r_[14:23, 27:30]  # hand position and rotation, target - hand
    start_tcp = np.asarray(state.obs["state"])[14:17]
    actions = jax.random.uniform(jax.random.PRNGKey(4), (8, 3), minval=-1, maxval=1)
    for i, a in enumerate(actions):
        obs = builder.observe(reading_of(env, state.data))["state"]
        want = np.asarray(state.obs["state"])
        np.testing.assert_allclose(obs[exact], want[exact], atol=1e-5)
        # At reset (a forward pass of the current joints) the frames agree too.
        np.testing.assert_allclose(obs[frames], want[frames], atol=1e-5 if i == 0 else 5e-3)
        targets = builder.command(np.asarray(a))
        builder.sent(targets)
        state = step(state, a)
        np.testing.assert_allclose(targets, state.data.ctrl, atol=1e-5 if i == 0 else 1e-2)
    # Not vacuous: the hand moved well beyond those tolerances.
    assert np.abs(obs[14:17] - start_tcp).max() > 0.02


def test_native_mujoco_steps_the_panda_like_mjx():
    """Large target jumps (the servo at its speed limit): MuJoCo C and MJX agree. A force-limited
    kv servo broke this (xmls/franka/panda.xml says why)."""
    env = registry.load("FrankaReach")
    m = env.mj_model
    d = mujoco.MjData(m)
    mujoco.mj_resetDataKeyframe(m, d, m.keyframe("home").id)
    d.ctrl[:7] += 0.3
    dx = mjx.put_data(m, d)

    def twenty_steps(model, dx):
        return jax.lax.fori_loop(0, 20, lambda _, x: mjx.step(model, x), dx)

    dx = jax.jit(twenty_steps)(env.mjx_model, dx)
    with jax.enable_x64(True):
        # In float64 the engines agree to rounding: same integrator, same equations.
        dx64 = jax.jit(twenty_steps)(mjx.put_model(m), mjx.put_data(m, d))
    mujoco.mj_step(m, d, nstep=20)
    assert np.abs(d.qpos[:7] - m.keyframe("home").qpos[:7]).max() > 0.05  # it moved
    np.testing.assert_allclose(np.asarray(dx.qpos), d.qpos, atol=1e-4)
    assert np.asarray(dx64.qpos).dtype == np.float64
    np.testing.assert_allclose(np.asarray(dx64.qpos), d.qpos, atol=1e-10, rtol=0)


def test_sim_robot_starts_where_the_env_resets(exact_reach):
    env = exact_reach
    robot = SimRobot(env, latency=False, sensor_noise=0.0)
    key = jax.random.PRNGKey(11)
    task = robot.start_episode(key)
    state = jax.jit(env.reset)(key)
    np.testing.assert_allclose(task["target_pos"], state.info["target_pos"])
    reading = robot.read()
    np.testing.assert_allclose(reading.qpos, reading_of(env, state.data).qpos, atol=1e-6)
    assert reading.images == {}
    with pytest.raises(ValueError, match="finite targets"):
        robot.send(np.full(env.mj_model.nu, np.nan))
    robot.close()


def test_sim_robot_holds_its_measured_position_and_stops(exact_reach):
    env = exact_reach
    robot = SimRobot(env, latency=True)
    try:
        robot.start_episode(jax.random.PRNGKey(5))
        nu = env.mj_model.nu
        robot.send(robot.held_targets + 0.05)  # moving: the joints lag their targets
        m = robot.model
        joints = robot.data.qpos[m.jnt_qposadr[m.actuator_trnid[:, 0]]].copy()
        held = robot.hold()
        np.testing.assert_array_equal(held, joints)  # every Franka actuator drives one joint
        np.testing.assert_array_equal(robot.held_targets, held)
        assert np.all(robot._sent == held)  # commands in the latency buffer are dropped
        robot.stop()
        with pytest.raises(RuntimeError, match="after stop"):
            robot.send(held)
        assert held.shape == (nu,)
        robot.start_episode(jax.random.PRNGKey(6))  # the operator's restart
        robot.send(robot.held_targets)
    finally:
        robot.close()


def test_an_invalid_action_never_enters_the_servo_memory(exact_reach):
    """One NaN action froze FrankaReach's servo for the rest of an episode."""
    env = exact_reach
    builder = ObservationBuilder(env)
    state = jax.jit(env.reset)(jax.random.PRNGKey(2))
    reading = reading_of(env, state.data)
    builder.start(reading, env.robot_task(state.info), np.asarray(state.data.ctrl))
    builder.observe(reading)
    memory = {k: np.asarray(v) for k, v in builder.memory.items()}
    for bad in (np.array([np.nan, 0.0, 0.0]), np.full(3, np.inf), np.zeros(2), [10**400] * 3):
        with pytest.raises(DeployError, match="before the servo"):
            builder.command(bad)
    # The task's hook itself, given NaN: the targets held, the memory as it was.
    qpos, qvel = reading.qpos.astype(np.float32), reading.qvel.astype(np.float32)
    no_objects = np.zeros((0, 7), np.float32)  # FrankaReach tracks none
    ctrl, after = builder._command(
        qpos, qvel, builder._ctrl, no_objects, builder.memory, jnp.full(3, jnp.nan)
    )
    np.testing.assert_array_equal(np.asarray(ctrl), np.asarray(builder._ctrl))
    for k, v in memory.items():
        np.testing.assert_array_equal(np.asarray(after[k]), v)
    # A command that is not sent (held instead) leaves the memory too; a sent one moves it.
    targets = builder.command(np.array([1.0, 0.0, 0.0]))
    builder.held(np.asarray(state.data.ctrl))
    np.testing.assert_array_equal(np.asarray(builder.memory["last_action"]), memory["last_action"])
    builder.command(np.array([1.0, 0.0, 0.0]))
    builder.sent(targets)
    np.testing.assert_array_equal(np.asarray(builder.memory["last_action"]), [1.0, 0.0, 0.0])


class WallClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def test_runner_survives_faults_on_the_sim_robot(exact_reach):
    """A policy that gives NaN, raises and stalls between good steps on the native-MuJoCo robot:
    each fault held and counted, the servo not frozen by the NaN, the stall caught although
    simulated time stood still, no exception."""
    env = exact_reach
    clock = WallClock()
    calls = []

    def policy(obs):
        calls.append(len(calls))
        i = len(calls)
        if i == 2:
            return np.array([np.nan, 0.0, 0.0])
        if i == 4:
            raise RuntimeError("onnxruntime failed")
        if i == 6:
            clock.advance(0.3)  # longer than the watchdog, in wall time only
        clock.advance(0.001)
        return np.array([0.0, 0.0, -1.0])

    policy.inputs = ("state",)
    robot = SimRobot(env, latency=False)
    builder = ObservationBuilder(env)
    safety = SafetyLayer(runner.safety_limits(robot, env, 0.25))
    try:
        task = robot.start_episode(jax.random.PRNGKey(4))
        log = runner.run_episode(
            robot, builder, policy, safety, task, 10, clock=clock, sleep=clock.advance
        )
    finally:
        robot.close()
    assert log.faults == {"policy": 2, "watchdog": 1}, log.fault_log
    assert not log.stopped and log.steps == 10 and log.sent == 7
    assert all(np.all(np.isfinite(np.asarray(v))) for v in builder.memory.values())
    np.testing.assert_array_equal(np.asarray(builder.memory["last_action"]), [0, 0, -1])


def test_sim2sim_stops_a_nan_policy_and_reports_it(tmp_path, capsys):
    """scripts/sim2sim.py with an ONNX policy that only gives NaN: every episode is held, then
    stopped after --max-faults faults; the run ends with its summary, not a traceback."""
    path = tiny_onnx(
        tmp_path / "nan.onnx",
        [0.0, np.nan, 0.0],
        inputs=33,
        metadata={"s2r/env_name": "FrankaReach", "s2r/kind": "teacher"},
    )
    summary = sim2sim.main(
        ["--onnx", str(path), "--episodes", "2", "--steps", "10", "--no-mjx", "--max-faults", "2"]
    )
    assert summary["faults"] == {"policy": 4} and summary["stopped_episodes"] == 2
    assert summary["interventions"] == {}
    assert "2 episode(s) stopped after 2 in a row" in capsys.readouterr().out
    for bad in (["--max-faults", "0"], ["--watchdog_s", "-1"], ["--watchdog_s", "nan"]):
        with pytest.raises(SystemExit) as e:
            sim2sim.main(["--onnx", str(path), *bad])
        assert e.value.code == 2


@pytest.fixture(scope="module")
def teacher_sim2sim(exported, tmp_path_factory):
    path = exported["teacher"][0]
    out = tmp_path_factory.mktemp("s2s") / "summary.json"
    return sim2sim.main(
        ["--onnx", str(path), "--env", "FrankaReach", "--episodes", "16", "--json", str(out)]
    ), out


def test_teacher_sim2sim_success_matches_mjx(teacher_sim2sim):
    """The CPU-trained FrankaReach teacher on a native-MuJoCo robot (latency, sensor noise,
    safety layer) succeeds as often as in MJX from the same starts, within binomial noise."""
    summary, out = teacher_sim2sim
    assert out.is_file()
    n = summary["episodes"]
    mjx_rate, native = summary["mjx_success_rate"], summary["native_success_rate"]
    assert mjx_rate >= 0.75, summary  # a teacher that works, so the comparison means something
    p = max(mjx_rate, 0.5 / n)
    assert native >= mjx_rate - 2.5 * np.sqrt(p * (1 - p) / n) - 1.0 / n, summary
    # The servo stays under the robot's speed limits: the safety layer has nothing to fix.
    assert summary["interventions"].get("rate_limit", 0) == 0, summary
    assert summary["loop_latency"]["p50_ms"] < 50.0  # a 20 Hz loop has 50 ms


def test_student_runs_on_the_sim_robot_with_rendered_cameras(exported):
    """The pixel student's inputs come from mujoco.Renderer images at its trained size."""
    path = exported["student"][0]
    policy = OnnxPolicy(path)
    env = sim2sim.env_for(policy, None)
    builder = ObservationBuilder(env)
    robot = SimRobot(env, seed=1)
    safety = runner.SafetyLayer(runner.safety_limits(robot, env, 0.25))
    try:
        task = robot.start_episode(jax.random.PRNGKey(0))
        reading = robot.read()
        h, w = env.config.vision.height, env.config.vision.width
        assert reading.images["stereo_left"].shape == (h, w, 3)
        assert reading.images["stereo_left"].dtype == np.uint8
        assert reading.images["stereo_left"].std() > 5  # a scene, not a blank frame
        log = runner.run_episode(robot, builder, policy, safety, task, steps=5)
    finally:
        robot.close()
    assert log.steps == 5 and len(log.loop_latency_s) == 5
    obs = builder.observe(reading)
    assert obs["rgb"].shape == (2, h, w, 3) and obs["proprio"].shape == (24,)


def test_deploy_errors_are_clear(exported, exact_reach):
    with pytest.raises(DeployError, match="deployable tasks: .*AlohaS2RPick.*FrankaReach"):
        ObservationBuilder(registry.load("FrankaGrasp"))
    builder = ObservationBuilder(exact_reach)
    with pytest.raises(DeployError, match="before start"):
        builder.observe(Reading(0.0, np.zeros(9), np.zeros(9)))
    state = jax.jit(exact_reach.reset)(jax.random.PRNGKey(0))
    builder.start(reading_of(exact_reach, state.data), exact_reach.robot_task(state.info))
    with pytest.raises(DeployError, match="measures 9 joints"):
        builder.observe(Reading(0.0, np.zeros(7), np.zeros(7)))
    with pytest.raises(DeployError, match="non-finite"):
        builder.observe(Reading(0.0, np.full(9, np.nan), np.zeros(9)))
    # A teacher exported for FrankaReach refuses another task.
    policy = OnnxPolicy(exported["teacher"][0])
    with pytest.raises(DeployError, match="exported for 'FrankaReach'"):
        runner.check_policy(policy, "FrankaReachStereo", builder)
    # A vision builder names the missing camera.
    stereo = ObservationBuilder(sim2sim.env_for(OnnxPolicy(exported["student"][0]), None))
    stereo.start(reading_of(exact_reach, state.data), exact_reach.robot_task(state.info))
    with pytest.raises(DeployError, match="no image 'stereo_left'"):
        stereo.observe(reading_of(exact_reach, state.data))


def test_sim2sim_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        sim2sim.main(["--onnx", str(tmp_path / "missing.onnx")])
    assert e.value.code == 2
    assert "missing.onnx" in capsys.readouterr().err
