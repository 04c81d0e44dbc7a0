"""AlohaS2RPick: physics invariants, reward values at known poses, randomisation."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from playground import registry
from playground.envs.aloha import arm as arm_lib
from playground.envs.aloha import constants as c
from playground.envs.aloha import pick as pick_lib
from playground.envs.aloha import scripted

from .conftest import rotation_angle_deg, set_free_body


def test_released_block_falls_and_rests(pick):
    env = pick.env
    state = pick.reset_batch(0)
    block = env.block
    xy = state.data.qpos[0, block.qpos_adr : block.qpos_adr + 2]
    state = set_free_body(state, block.qpos_adr, [xy[0], xy[1], 0.20])
    heights = []
    for _ in range(20):  # 1 s
        state = pick.step(state, pick.zeros())
        heights.append(float(state.data.xpos[0, block.body, 2]))
    half = float(env.mj_model.geom_size[block.geom][2])
    assert heights[3] < 0.20 - 0.03, "the block should be falling"
    assert heights[-1] == pytest.approx(half, abs=0.003), "it rests on the table"
    assert np.linalg.norm(state.data.qvel[0, block.dof_adr : block.dof_adr + 6]) < 0.05


def test_joint_targets_tracked_and_clipped(pick):
    env = pick.env
    arm = env.arm
    state = pick.reset_batch(0)
    lo, hi = env.mj_model.actuator_ctrlrange[arm.actuator_ids].T
    # Push the waist and wrist rotation to +1 for 30 steps, then hold for 20.
    push = pick.zeros().at[:, 0].set(1.0).at[:, 5].set(1.0)
    state = pick.run(state, 30, push)
    state = pick.run(state, 20)
    ctrl = np.asarray(state.data.ctrl[:, arm.actuator_ids])
    q = np.asarray(state.data.qpos[:, arm.qpos_adr[:6]])
    assert np.all(ctrl >= lo - 1e-6) and np.all(ctrl <= hi + 1e-6)
    start_waist = np.asarray(pick.reset_batch(0).data.ctrl[:, 0])
    # 30 pushes of 0.02 rad; each step applies one of the last 4 actions, so around the switch
    # from push to hold a few pushes can be repeated or skipped.
    history = env.config.delay.action_history
    np.testing.assert_allclose(ctrl[:, 0] - start_waist, 0.6, atol=0.02 * (history - 1) + 1e-4)
    np.testing.assert_allclose(q[:, 0], ctrl[:, 0], atol=0.03)  # waist servo tracks its target
    np.testing.assert_allclose(q[:, 5], ctrl[:, 5], atol=0.03)
    jnt_range = env.mj_model.jnt_range[[env.mj_model.dof_jntid[d] for d in arm.dof_adr[:6]]]
    assert np.all(q >= jnt_range[:, 0] - 0.01) and np.all(q <= jnt_range[:, 1] + 0.01)


def _scripted_lift(env, half_size: float, pos_xy, yaw: float):
    """Native-MuJoCo scripted grasp and lift on the env's own model: (qpos, ctrl)."""
    m = env.mj_model
    blk = env.block
    scripted.set_box_half_size(m, blk.geom, half_size)
    try:
        d = mujoco.MjData(m)
        mujoco.mj_resetDataKeyframe(m, d, m.keyframe("home").id)
        d.qpos[blk.qpos_adr : blk.qpos_adr + 7] = [
            *pos_xy,
            half_size,
            np.cos(yaw / 2),
            0,
            0,
            np.sin(yaw / 2),
        ]
        mujoco.mj_forward(m, d)
        result = scripted.grasp_and_lift(m, d, env.arm, blk)
        return result, d.qpos.copy(), d.ctrl.copy()
    finally:
        scripted.set_box_half_size(m, blk.geom, float(env.mjx_model.geom_size[blk.geom][0]))


@pytest.mark.parametrize(
    "half_size, pos_xy, yaw",
    [(0.02, (-0.15, 0.05), 0.3), (0.01, (-0.2, -0.05), -0.6), (0.03, (-0.1, 0.1), 0.0)],
)
def test_scripted_grasp_lifts_block_on_native_mujoco(pick, half_size, pos_xy, yaw):
    result, _, _ = _scripted_lift(pick.env, half_size, pos_xy, yaw)
    assert result.lifted, result.object_heights_m


def test_closed_gripper_holds_lifted_block_in_mjx(pick):
    """A grasp made on native MuJoCo, handed to MJX, keeps holding while the arm stays put."""
    env = pick.env
    result, qpos, ctrl = _scripted_lift(env, 0.02, (-0.15, 0.05), 0.3)
    assert result.lifted
    state = pick.reset_batch(0)
    data = state.data.replace(
        qpos=jnp.broadcast_to(qpos, state.data.qpos.shape).astype(state.data.qpos.dtype),
        qvel=jnp.zeros_like(state.data.qvel),
        ctrl=jnp.broadcast_to(ctrl, state.data.ctrl.shape).astype(state.data.ctrl.dtype),
    )
    state = state.replace(data=data)
    start_z = float(qpos[env.block.qpos_adr + 2])
    grasped = []
    for _ in range(40):  # 2 s
        state = pick.step(state, pick.zeros())
        grasped.append(float(state.metrics["grasp"][0]))
    z = float(state.data.xpos[0, env.block.body, 2])
    assert z > 0.09 and z == pytest.approx(start_z, abs=0.02)
    assert np.mean(grasped) == 1.0
    assert float(state.metrics["lift"][0]) > 0.9


CORNER_LANDING = Path(__file__).parent / "data" / "aloha_pick_corner_landing.json"


def _corner_landing_peaks(iterations: int | None = None, ls_iterations: int | None = None):
    """Peak block spin (rad/s) over 1 s after the recorded corner landing, for 40 block offsets.

    The state comes from a real evaluation episode (see the fixture's "source"); the block is
    moved by up to 4 mm so that the test does not hang on one contact configuration.
    """
    rec = json.loads(CORNER_LANDING.read_text())
    spec = mujoco.MjSpec.from_file(str(c.PICK_XML))
    spec.geom("block").size = [rec["block_half_size_m"]] * 3
    spec.geom("block").mass = rec["block_mass_kg"]
    m = spec.compile()  # block inertia, contact weight and bounding boxes follow its size
    if iterations is not None:
        m.opt.iterations, m.opt.ls_iterations = iterations, ls_iterations
    for name in ("geom_friction", "actuator_gainprm", "actuator_biasprm", "dof_damping"):
        getattr(m, name)[:] = np.asarray(rec[name])
    blk = arm_lib.find_object(m, "block", "block")
    peaks = []
    for dx, dy in np.random.default_rng(0).uniform(-0.004, 0.004, size=(40, 2)):
        d = mujoco.MjData(m)
        d.qpos[:], d.qvel[:], d.ctrl[:] = rec["qpos"], rec["qvel"], rec["ctrl"]
        d.qpos[blk.qpos_adr : blk.qpos_adr + 2] += [dx, dy]
        peak = 0.0
        for _ in range(200):
            mujoco.mj_step(m, d)
            spin = d.qvel[blk.dof_adr + 3 : blk.dof_adr + 6]
            peak = max(peak, float(np.linalg.norm(spin)))
        peaks.append(peak)
    return np.array(peaks)


def test_open_gripper_landing_on_block_corner_leaves_it_calm():
    """The solver converges when the open gripper comes down on a large block's corner.

    The knocked block tips at up to 9 rad/s, the same to 0.1 rad/s with twice the iterations.
    With the scene's earlier settings (3 Newton iterations, 1 line-search step) the solve does
    not converge: 37 of these 40 landings spin the block faster than 15 rad/s, some at
    thousands, and in the policy's episodes blocks were launched off the table.
    """
    peaks = _corner_landing_peaks()
    assert peaks.max() < 15.0
    np.testing.assert_allclose(peaks, _corner_landing_peaks(20, 20), atol=0.1)
    # The recorded state still reproduces the failure under the old settings.
    assert np.mean(_corner_landing_peaks(3, 1) > 15.0) > 0.5


def _grasp_and_hold(half_size: float, offset_m: float, impratio: float | None = None):
    """Scripted grasp of a 100 g block `offset_m` off its centre, lifted and held for 5 s.

    Native MuJoCo; returns (block height in m, block rotation relative to the gripper in deg
    over the hold).
    """
    spec = mujoco.MjSpec.from_file(str(c.PICK_XML))
    spec.geom("block").size = [half_size] * 3
    spec.geom("block").mass = 0.1  # the heaviest randomised block
    m = spec.compile()
    if impratio is not None:
        m.opt.impratio = impratio
    arm, blk = arm_lib.find_arm(m, "left/"), arm_lib.find_object(m, "block", "block")
    d = mujoco.MjData(m)
    mujoco.mj_resetDataKeyframe(m, d, m.keyframe("home").id)
    yaw = 0.3
    d.qpos[blk.qpos_adr + 2 : blk.qpos_adr + 7] = [
        half_size,
        np.cos(yaw / 2),
        0,
        0,
        np.sin(yaw / 2),
    ]
    mujoco.mj_forward(m, d)
    scripted.grasp_and_lift(m, d, arm, blk, grip_offset_m=np.array([offset_m, 0.0, 0.0]))

    def relative():
        return d.xmat[blk.body].reshape(3, 3).T @ d.site_xmat[arm.pinch_site].reshape(3, 3)

    start = relative()
    for _ in range(1000):
        mujoco.mj_step(m, d)
    return float(d.xpos[blk.body][2]), rotation_angle_deg(start, relative())


def test_held_block_does_not_creep_out_of_the_fingers():
    """Friction rows 10x stiffer than normal rows (impratio 10) stop a held block from creeping.

    With MuJoCo's default impratio of 1, static friction slips under a sustained load: a small
    heavy block slides out of a centred grasp, and a block held 8 mm off-centre pivots.
    """
    z, _ = _grasp_and_hold(0.012, 0.0)
    assert z > 0.1, "the small block stays lifted"
    _, turned = _grasp_and_hold(0.02, 0.008)
    assert turned < 4.0, turned
    # The same grasps with the default impratio: dropped, and pivoted by about 20 degrees.
    z1, _ = _grasp_and_hold(0.012, 0.0, impratio=1.0)
    _, turned1 = _grasp_and_hold(0.02, 0.008, impratio=1.0)
    assert z1 < 0.05 and turned1 > 10.0, (z1, turned1)


@pytest.fixture(scope="module")
def reward_fn(pick):
    env = pick.env

    @jax.jit
    def terms_at(qpos, target):
        data = env.make_data().replace(
            qpos=qpos, ctrl=jnp.asarray(env.mj_model.keyframe("home").ctrl)
        )
        data = mujoco.mjx.forward(env.mjx_model, data)
        return env.reward_terms(data, target, jnp.zeros(7), jnp.zeros(7))

    return terms_at


def test_success_at_target_and_not_far_away(pick, reward_fn):
    env = pick.env
    home = jnp.asarray(env.mj_model.keyframe("home").qpos)
    adr = env.block.qpos_adr
    target = jnp.array([-0.1, 0.0, 0.2])
    at_target = reward_fn(home.at[adr : adr + 3].set(target), target)
    assert float(at_target["success"]) == 1.0
    assert float(at_target["target"]) == pytest.approx(1.0, abs=1e-5)  # lifted and on target
    off_by_1cm = reward_fn(home.at[adr : adr + 3].set(target + jnp.array([0.01, 0, 0])), target)
    assert float(off_by_1cm["success"]) == 1.0
    far = reward_fn(home.at[adr : adr + 3].set(jnp.array([-0.1, 0.0, 0.02])), target)
    assert float(far["success"]) == 0.0 and float(far["target"]) == 0.0
    tilted = (
        home.at[adr : adr + 3]
        .set(target)
        .at[adr + 3 : adr + 7]
        .set(
            jnp.array([np.cos(np.pi / 8), np.sin(np.pi / 8), 0.0, 0.0])  # 45 deg about x
        )
    )
    tilted_terms = reward_fn(tilted, target)
    assert float(tilted_terms["success"]) == 0.0
    # Level: 1 upright once lifted, 1 - tanh(3) at 45 degrees, 0 on the table.
    assert float(at_target["level"]) == pytest.approx(1.0, abs=1e-5)
    assert float(tilted_terms["level"]) == pytest.approx(1.0 - np.tanh(3.0), abs=1e-4)
    assert float(far["level"]) == 0.0
    # Reach is largest with the block at the pinch point.
    pinch = reward_fn(home, target)
    assert float(at_target["reach"]) < 1.0 and 0.0 < float(pinch["reach"]) < 1.0


def test_domain_randomisation_per_env(pick):
    env = pick.env
    rng = jax.random.split(jax.random.PRNGKey(0), 8)
    model, in_axes = registry.get_domain_randomizer("AlohaS2RPick")(env.mjx_model, rng)
    again, _ = pick_lib.domain_randomize(env.mjx_model, rng)
    other, _ = pick_lib.domain_randomize(env.mjx_model, jax.random.split(jax.random.PRNGKey(1), 8))
    g, b = env.block.geom, env.block.body
    sizes = np.asarray(model.geom_size[:, g, 0])
    assert (
        sizes.shape == (8,) and np.all((sizes >= 0.01) & (sizes <= 0.03)) and np.ptp(sizes) > 0.002
    )
    masses = np.asarray(model.body_mass[:, b])
    assert np.all((masses >= 0.03) & (masses <= 0.1)) and np.ptp(masses) > 0.005
    np.testing.assert_array_equal(model.geom_size, again.geom_size)
    assert not np.allclose(model.actuator_gainprm, other.actuator_gainprm)
    assert in_axes.geom_size == 0 and in_axes.body_mass == 0 and in_axes.body_pos is None
    assert in_axes.dof_damping == 0 and in_axes.geom_friction == 0 and in_axes.actuator_gainprm == 0
    # Position servos stay consistent: bias = -kp for every randomised actuator.
    np.testing.assert_allclose(model.actuator_biasprm[:, :7, 1], -model.actuator_gainprm[:, :7, 0])
