"""impl="native": MuJoCo C physics behind the env API, against MJX-JAX on the same tasks.

The contact-free checks use a small arm (tests below define it as an MjxEnv task), so MJX-JAX
compiles in seconds and the two engines solve the same equations: they must agree to 1e-5.
With contacts the collision code and the constraint solver differ between engines, so the
grasp-and-lift check compares outcomes within a tolerance instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from ml_collections import config_dict
from mujoco import mjx

from playground import physics, registry
from playground.envs import randomize, wrappers
from playground.envs.aloha import constants as aloha
from playground.envs.aloha import scripted
from playground.envs.base import MjxEnv, State
from playground.physics import native

ARM_XML = """
<mujoco model="three_link_arm">
  <option timestep="0.005" integrator="implicitfast"/>
  <default><geom contype="0" conaffinity="0"/></default>
  <worldbody>
    <body name="link1" pos="0 0 0.5">
      <joint name="j1" axis="0 0 1" damping="0.5"/>
      <geom type="capsule" fromto="0 0 0 0.3 0 0" size="0.03" mass="1"/>
      <body name="link2" pos="0.3 0 0">
        <joint name="j2" axis="0 1 0" damping="0.4"/>
        <geom type="capsule" fromto="0 0 0 0.25 0 0" size="0.025" mass="0.7"/>
        <body name="link3" pos="0.25 0 0">
          <joint name="j3" axis="0 1 0" damping="0.3"/>
          <geom type="box" size="0.05 0.02 0.02" pos="0.05 0 0" mass="0.3"/>
          <site name="tip" pos="0.1 0 0"/>
        </body>
      </body>
    </body>
    <body name="target" mocap="true" pos="0.4 0.1 0.3"/>
  </worldbody>
  <actuator>
    <position joint="j1" kp="20"/>
    <position joint="j2" kp="20"/>
    <general joint="j3" dyntype="filter" dynprm="0.05" gainprm="4" biasprm="0 -4 0"/>
  </actuator>
  <sensor>
    <framepos objtype="site" objname="tip"/>
    <jointvel joint="j2"/>
  </sensor>
</mujoco>
"""


class Arm(MjxEnv):
    """A contact-free three-link arm reaching a mocap target: exercises every state channel
    (qpos, qvel, act of a filtered actuator, mocap, sensors) without contacts."""

    def __init__(self, impl: str = "jax"):
        cfg = config_dict.create(impl=impl, ctrl_dt=0.02, sim_dt=0.005)
        super().__init__(cfg)
        self._tip = self.mj_model.site("tip").id
        self._target = self.mj_model.body("target").mocapid[0]

    def load_mj_model(self) -> mujoco.MjModel:
        return mujoco.MjModel.from_xml_string(ARM_XML)

    def reset(self, rng: jax.Array) -> State:
        k_q, k_t = jax.random.split(rng)
        qpos = jax.random.uniform(k_q, (3,), minval=-0.5, maxval=0.5)
        target = jnp.array([0.4, 0.1, 0.3]) + jax.random.uniform(k_t, (3,), maxval=0.1)
        data = self.make_data().replace(qpos=qpos)
        data = data.replace(mocap_pos=data.mocap_pos.at[self._target].set(target))
        data = mjx.forward(self.mjx_model, data)
        return State(data, self._obs(data), jnp.zeros(()), jnp.zeros(()), {}, {"rng": rng})

    def step(self, state: State, action: jax.Array) -> State:
        data = self.physics_step(state.data, 1.5 * self.check_action(action))
        reward = -jnp.linalg.norm(data.site_xpos[self._tip] - data.mocap_pos[self._target])
        done = (~jnp.all(jnp.isfinite(data.qpos))).astype(state.done.dtype)
        return state.replace(data=data, obs=self._obs(data), reward=reward, done=done)

    def _obs(self, data: mjx.Data) -> dict[str, jax.Array]:
        o = jnp.concatenate([data.qpos, data.qvel, data.act, data.site_xpos[self._tip]])
        return {"state": o, "privileged_state": jnp.concatenate([o, data.sensordata])}


B = 4
STEPS = 100


def _actions(steps: int = STEPS, batch: int = B, size: int = 3) -> jax.Array:
    """Smooth, different motions per env and joint: the arm swings through its workspace."""
    t = jnp.arange(steps)[:, None, None] * 0.02
    phase = jnp.arange(batch)[None, :, None] + jnp.arange(size)[None, None, :] * 0.7
    return jnp.sin(2.0 * t * (1 + 0.3 * jnp.arange(size)) + phase)


def _rollout(env, step_fn=None):
    """A jitted scan of `STEPS` batched steps; returns the stacked states."""
    step_fn = step_fn or jax.vmap(env.step)

    @jax.jit
    def run(keys, actions):
        state = jax.vmap(env.reset)(keys)

        def body(s, a):
            s = step_fn(s, a)
            return s, s

        return jax.lax.scan(body, state, actions)[1]

    return run(jax.random.split(jax.random.PRNGKey(0), B), _actions())


def _assert_same_trajectory(a: State, b: State, atol: float) -> None:
    for name in ("qpos", "qvel", "act", "xpos", "xmat", "site_xpos", "sensordata", "cdof"):
        np.testing.assert_allclose(
            getattr(a.data, name), getattr(b.data, name), atol=atol, rtol=0, err_msg=name
        )
    for key in a.obs:
        np.testing.assert_allclose(a.obs[key], b.obs[key], atol=atol, rtol=0, err_msg=key)
    np.testing.assert_allclose(a.reward, b.reward, atol=atol, rtol=0)


def test_contact_free_trajectories_match_jax_over_100_steps():
    # float64 on both sides: float32 MJX alone drifts by ~1e-5 over 100 steps of a swinging arm.
    with jax.enable_x64(True):
        jax_traj = _rollout(Arm("jax"))
        native_traj = _rollout(Arm("native"))
        assert native_traj.data.qpos.dtype == jnp.float64
    assert np.ptp(np.asarray(native_traj.data.qpos[:, 0, 0])) > 0.5, "the arm should move"
    assert np.ptp(np.asarray(native_traj.data.act)) > 0.1, "the filtered actuator is active"
    # Poses and sensors too: derived fields describe the state before the last substep in both.
    _assert_same_trajectory(native_traj, jax_traj, atol=1e-5)


# CI budget: slow (pytest --slow); the float64 test above runs the same path.
@pytest.mark.slow
def test_float32_matches_jax_closely():
    native_traj, jax_traj = _rollout(Arm("native")), _rollout(Arm("jax"))
    assert native_traj.data.qpos.dtype == jnp.float32
    _assert_same_trajectory(native_traj, jax_traj, atol=2e-4)


def _scale_damping_and_mass(model: mjx.Model) -> tuple[mjx.Model, mjx.Model]:
    """Env i: every joint's damping and every link's mass times 0.5, 1, 2, 4."""
    factors = jnp.array([0.5, 1.0, 2.0, 4.0])

    def sample(m, key):
        f = factors[key[0]]
        return {
            "dof_damping": m.dof_damping * f,
            "body_mass": m.body_mass * f,
            "body_inertia": m.body_inertia * f,
        }

    rng = jnp.stack([jnp.arange(B), jnp.zeros(B, jnp.int32)], axis=1).astype(jnp.uint32)
    return randomize.batch_model(model, rng, sample)


def test_randomised_models_reach_the_c_side():
    with jax.enable_x64(True):
        trajs = {}
        for impl in ("jax", "native"):
            env = Arm(impl)
            batched = wrappers.BatchEnv(env, _scale_damping_and_mass)
            trajs[impl] = _rollout(env, step_fn=batched.step)
        plain = Arm("native")
        plain._native = env._native  # same C batches: randomised fields must be restored
        plain_traj = _rollout(plain)
        jax_plain = _rollout(Arm("jax"))
    # Each env's own masses and damping, as MJX-JAX steps them...
    _assert_same_trajectory(trajs["native"], trajs["jax"], atol=1e-5)
    # ...which change its motion (same start and actions as the plain env) unless scaled by 1.
    change = np.abs(np.asarray(trajs["native"].data.qpos) - np.asarray(plain_traj.data.qpos))
    change = change.max(axis=(0, 2))
    assert change[1] < 1e-9 and np.all(change[[0, 2, 3]] > 0.01), change
    # A batch that stepped randomised models steps the compiled one again afterwards.
    _assert_same_trajectory(plain_traj, jax_plain, atol=1e-5)


def test_forward_matches_mjx_forward():
    """`MjxEnv.forward` (C's mj_forward for native) computes what mjx.forward does."""
    with jax.enable_x64(True):
        env = Arm("native")
        state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(1), B))
        data = state.data.replace(qvel=jnp.ones((B, 3)), ctrl=jnp.full((B, 3), 0.3))
        ours = jax.jit(jax.vmap(env.forward))(data)
        ref = jax.jit(jax.vmap(lambda d: mjx.forward(env.mjx_model, d)))(data)
    for name in ("xpos", "xmat", "site_xpos", "sensordata", "subtree_com", "qacc", "act_dot"):
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), atol=1e-9, err_msg=name)
    np.testing.assert_array_equal(ours.qpos, data.qpos)


def test_one_host_call_per_control_step_for_the_whole_batch(monkeypatch):
    env = Arm("native")
    calls = []
    host = env._native._host_step

    def counting(*args):
        out = host(*args)
        calls.append(out[1].shape)  # qpos
        return out

    monkeypatch.setattr(env._native, "_host_step", counting)
    _rollout(env)
    assert calls == [(B, 3)] * STEPS


def test_nested_vmap_and_unbatched_calls():
    env = Arm("native")
    keys = jax.random.split(jax.random.PRNGKey(3), 6).reshape(2, 3, 2)
    state = jax.jit(jax.vmap(jax.vmap(env.reset)))(keys)
    action = jnp.full((2, 3, 3), 0.4)
    nested = jax.jit(jax.vmap(jax.vmap(env.step)))(state, action)
    one = jax.tree_util.tree_map(lambda x: x[1, 2], state)
    single = jax.jit(env.step)(one, action[1, 2])
    np.testing.assert_allclose(nested.data.qpos[1, 2], single.data.qpos, atol=1e-6)
    np.testing.assert_allclose(nested.obs["state"][1, 2], single.obs["state"], atol=1e-6)


def test_gradients_raise_a_clear_error():
    env = Arm("native")
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))

    def loss(action):
        return env.step(state, action).reward

    with pytest.raises(NotImplementedError, match='not supported with impl="native"'):
        jax.grad(loss)(jnp.zeros(3))
    with pytest.raises(NotImplementedError, match='not supported with impl="native"'):
        jax.jvp(loss, (jnp.zeros(3),), (jnp.ones(3),))
    assert jnp.isfinite(jax.jit(loss)(jnp.zeros(3)))  # no derivative asked: no error


def test_diverged_env_reads_nan_like_mjx(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo logs the instability warning to ./MUJOCO_LOG.TXT
    env = Arm("native")
    state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), 2))
    qvel = state.data.qvel.at[0].set(1e12)
    state = state.replace(data=state.data.replace(qvel=qvel))
    out = jax.jit(jax.vmap(env.step))(state, jnp.zeros((2, 3)))
    assert np.all(np.isnan(out.data.qpos[0])) and out.done[0] == 1.0
    assert np.all(np.isfinite(out.data.qpos[1])) and out.done[1] == 0.0


def test_unknown_and_unsupported_impls_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="Unknown physics impl 'mujoco'.*native"):
        physics.check_impl("mujoco")
    assert "native" in physics.available_impls()
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.raises(ValueError, match="only with JAX's CPU backend.*'gpu'"):
        physics.check_impl("native")
    with pytest.raises(ValueError, match="impl 'native'"):
        registry.load("AlohaS2RPick", config_overrides={"impl": "native"})


def test_thread_count_follows_the_environment(monkeypatch):
    monkeypatch.setenv(native.NTHREAD_ENV, "3")
    assert native.default_nthread() == 3
    monkeypatch.setenv(native.NTHREAD_ENV, "0")
    with pytest.raises(ValueError, match=native.NTHREAD_ENV):
        native.default_nthread()
    monkeypatch.delenv(native.NTHREAD_ENV)
    assert native.default_nthread() == len(os.sched_getaffinity(0))


# ----- a real task: AlohaS2RPick -----


@pytest.fixture(scope="module")
def pick_native():
    return registry.load("AlohaS2RPick", config_overrides={"impl": "native"})


def _scripted_lift(env: MjxEnv, block_xy=(-0.15, 0.05), yaw=0.3, phase_steps=20):
    """The scripted top-down grasp of `scripted.grasp_and_lift` at control rate through
    `env.physics_step`: IK targets ramped over each phase, integral correction per step."""
    m = env.mj_model
    arm, block = env.arm, env.block
    home = m.keyframe("home")
    qpos = np.array(home.qpos)
    half = float(m.geom_size[block.geom][2])
    qpos[block.qpos_adr : block.qpos_adr + 7] = [
        *block_xy,
        half,
        np.cos(yaw / 2),
        0,
        0,
        np.sin(yaw / 2),
    ]
    data = env.make_data().replace(qpos=jnp.asarray(qpos), ctrl=jnp.asarray(home.ctrl))
    data = jax.jit(mjx.forward)(env.mjx_model, data)
    step = jax.jit(env.physics_step)
    scratch = mujoco.MjData(m)
    scratch.qpos[:] = qpos
    mujoco.mj_forward(m, scratch)
    grasp = scratch.xpos[block.body].copy()
    grasp[2] = max(grasp[2], aloha.PAD_TIP_BELOW_PINCH_M + 0.008)
    rot = scripted.top_down_rotation(yaw)
    plan = [
        (grasp + [0, 0, 0.10], aloha.GRIPPER_OPEN_M),
        (grasp, aloha.GRIPPER_OPEN_M),
        (grasp, aloha.GRIPPER_CLOSED_M),
        (np.array([grasp[0], grasp[1], 0.15]), aloha.GRIPPER_CLOSED_M),
    ]
    adr = arm.qpos_adr[:6]
    correction = np.zeros(6)
    heights = []
    for target, grip in plan:
        scratch.qpos[:] = np.asarray(data.qpos, dtype=np.float64)
        q, _ = scripted.solve_ik(m, scratch, arm, target, rot)
        start = np.asarray(data.qpos)[adr].astype(np.float64)
        for i in range(phase_steps):
            goal = start + min(1.0, (i + 1) / (0.6 * phase_steps)) * (q - start)
            correction = np.clip(
                correction + 0.5 * (goal - np.asarray(data.qpos)[adr]), -0.15, 0.15
            )
            ctrl = np.asarray(data.ctrl).copy()
            ctrl[arm.actuator_ids[:6]] = goal + correction
            ctrl[arm.actuator_ids[6]] = grip
            data = step(data, jnp.asarray(ctrl, dtype=data.ctrl.dtype))
        heights.append(float(data.xpos[block.body, 2]))
    return np.array(heights), half


def test_scripted_grasp_lifts_the_block_under_both_impls(pick, pick_native):
    native_h, half = _scripted_lift(pick_native)
    jax_h, _ = _scripted_lift(pick.env)
    # Both lift the 2 cm block more than 8 cm off the table (the scripted test's criterion).
    assert native_h[-1] > half + 0.08 and jax_h[-1] > half + 0.08, (native_h, jax_h)
    # The engines' contact code differs (collision functions, the order of contacts in the
    # Newton solve), so heights are compared within tolerances, not to float precision.
    # Resting on the table (approach, descent, closing): measured within 2e-5 m.
    np.testing.assert_allclose(native_h[:3], jax_h[:3], atol=1e-4)
    # Lifted, the block hangs between the pads by friction and where it settles in the grip
    # follows the contact points: measured within 0.3 mm over three placements; 2 mm is still
    # far below the 8 cm lift criterion and the task's 2.5 cm success radius.
    assert abs(native_h[-1] - jax_h[-1]) < 2e-3, (native_h, jax_h)


def test_brax_training_wrapper_auto_resets_under_scan():
    """The brax training stack (per-env models, time limit, auto-reset) over a scanned unroll, as
    brax's `generate_unroll` runs it: native and jax agree through two episodes."""
    with jax.enable_x64(True):
        out = {}
        for impl in ("jax", "native"):
            w = wrappers.wrap_for_brax_training(
                Arm(impl), episode_length=3, randomization_fn=_scale_damping_and_mass
            )

            @jax.jit
            def unroll(state, w=w):
                def body(s, a):
                    s = w.step(s, a)
                    return s, (s.done, s.info["truncation"], s.data.qpos, s.obs["state"])

                return jax.lax.scan(body, state, _actions(steps=5))

            first = jax.jit(w.reset)(jax.random.split(jax.random.PRNGKey(0), B))
            out[impl] = (first, *unroll(first))
    first, last, (done, truncation, qpos, obs) = out["native"]
    np.testing.assert_array_equal(done[:, 0], [0, 0, 1, 0, 0])
    np.testing.assert_array_equal(truncation[:, 0], [0, 0, 1, 0, 0])
    # The auto-reset drew a new random start, not the first one.
    assert np.all(np.abs(qpos[2] - first.data.qpos) > 1e-3)
    for a, b in zip(out["native"][2], out["jax"][2], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


# CI budget: slow (pytest --slow); test_randomised_models_reach_the_c_side and the
# bounding-volume test cover per-env model fields in C.
@pytest.mark.slow
def test_randomised_block_size_reaches_the_c_side(pick_native):
    """AlohaS2RPick's randomiser resizes the block per env; reset rests it on its own half-height.
    Were C stepping the compiled 2 cm block, small blocks would jump up and large ones sink."""
    env = pick_native
    dr = registry.get_domain_randomizer("AlohaS2RPick")
    batched = wrappers.BatchEnv(env, lambda m: dr(m, jax.random.split(jax.random.PRNGKey(7), 8)))
    state = jax.jit(batched.reset)(jax.random.split(jax.random.PRNGKey(0), 8))
    step = jax.jit(batched.step)
    for _ in range(5):
        state = step(state, jnp.zeros((8, 7)))
    half = np.asarray(batched._models.geom_size[:, env.block.geom, 2])
    assert np.ptp(half) > 0.01, "the draw should cover small and large blocks"
    z = np.asarray(state.data.xpos[:, env.block.body, 2])
    np.testing.assert_allclose(z, half, atol=5e-4)
    assert np.all(np.isfinite(state.obs["state"]))


def test_bounding_volumes_follow_randomised_geoms(pick_native):
    """C's midphase culls with each body's compiled boxes: they are refitted to new geom sizes."""
    nat = pick_native._native
    m = nat._mj_model
    sim = native._Sim(m, 2, 1, [])
    compiled = np.array(sim.field("bvh_aabb"))
    g, b = pick_native.block.geom, pick_native.block.body
    aabb = np.tile(m.geom_aabb.reshape(1, -1), (2, 1))
    aabb.reshape(2, -1, 6)[1, g, 3:] = 0.03
    sim.set_fields({"geom_aabb": aabb})
    bvh = np.asarray(sim.field("bvh_aabb")).reshape(2, -1, 6)
    np.testing.assert_allclose(bvh[0], compiled.reshape(2, -1, 6)[0], atol=1e-12)
    np.testing.assert_allclose(bvh[1, m.body_bvhadr[b], 3:], 0.03, atol=1e-12)
    sim.set_fields({})  # back to the compiled model
    np.testing.assert_allclose(sim.field("bvh_aabb"), compiled, atol=1e-12)


# CI budget: slow (pytest --slow): a fresh two-device process compiles everything again.
@pytest.mark.slow
def test_pmap_over_two_host_devices():
    """pmap over 2 local CPU devices, in a fresh process (device count is fixed at start)."""
    code = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, {tests!r})
        import jax, jax.numpy as jnp, numpy as np
        import playground
        from test_physics_native import Arm
        assert jax.local_device_count() == 2, jax.devices()
        env = Arm("native")
        keys = jax.random.split(jax.random.PRNGKey(0), 4).reshape(2, 2, 2)
        state = jax.pmap(jax.vmap(env.reset))(keys)
        step = jax.pmap(jax.vmap(env.step))
        for _ in range(5):
            state = step(state, jnp.full((2, 2, 3), 0.5))
        flat = jax.tree_util.tree_map(lambda x: x.reshape(4, *x.shape[2:]), state)
        ref = jax.jit(jax.vmap(env.reset))(keys.reshape(4, 2))
        ref_step = jax.jit(jax.vmap(env.step))
        for _ in range(5):
            ref = ref_step(ref, jnp.full((4, 3), 0.5))
        np.testing.assert_allclose(flat.data.qpos, ref.data.qpos, atol=1e-6)
        print("ok")
        """
    ).format(tests=os.path.dirname(__file__))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok" in result.stdout
