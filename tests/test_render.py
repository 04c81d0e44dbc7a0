"""The pure-JAX ray caster and the renderer factory: parity with OpenGL, exact culling, batching."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

from playground import registry, render
from playground.render.base import RenderSpec
from playground.render.jax_raycast import JaxRenderer

from .render_scene import (
    BATCH,
    CAMERAS,
    HEIGHT,
    SPEC,
    WIDTH,
    assert_matches_gl,
)


@pytest.fixture(scope="module")
def renderer(render_model) -> JaxRenderer:
    # Small tiles and few slots, so this scene exercises culling, skipping and the fallback.
    return JaxRenderer(render_model, SPEC, BATCH, tile=8, max_per_tile=2)


def stack_frames(renderer, render_model, render_datas, visual=None):
    frames = [
        renderer.frame(render_model, mjx.put_data(render_model, d), visual) for d in render_datas
    ]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *frames)


@pytest.fixture(scope="module")
def frames(renderer, render_model, render_datas):
    return stack_frames(renderer, render_model, render_datas)


@pytest.fixture(scope="module")
def render_batch(renderer):
    return jax.jit(jax.vmap(renderer.render))


@pytest.fixture(scope="module")
def geom_ids(renderer):
    return jax.jit(jax.vmap(renderer.geom_ids))


@pytest.fixture(scope="module")
def images(render_batch, frames):
    return render_batch(frames)


def test_parity_with_mujoco_opengl(render_model, render_datas, frames, images, geom_ids):
    seg = np.asarray(geom_ids(frames))
    assert_matches_gl(render_model, render_datas, seg, np.asarray(images.depth), images.rgb)


def test_contract_shapes_and_dtypes(images):
    c = len(SPEC.cameras)
    assert images.rgb.shape == (BATCH, c, HEIGHT, WIDTH, 3) and images.rgb.dtype == jnp.uint8
    assert images.depth.shape == (BATCH, c, HEIGHT, WIDTH) and images.depth.dtype == jnp.float32
    assert np.all(np.asarray(images.depth) >= 0)


def test_batch_of_one_matches_batch(renderer, frames, images):
    one = jax.jit(renderer.render)(jax.tree.map(lambda x: x[2], frames))
    np.testing.assert_array_equal(np.asarray(one.depth), np.asarray(images.depth[2]))
    np.testing.assert_array_equal(np.asarray(one.rgb), np.asarray(images.rgb[2]))


def test_images_change_where_an_object_moves(
    render_model, render_datas, renderer, render_batch, geom_ids
):
    moved = mujoco.MjData(render_model)
    moved.qpos[:] = render_datas[0].qpos
    moved.qpos[0] += 0.05  # the objects' free body, 5 cm along x
    mujoco.mj_forward(render_model, moved)
    fr = stack_frames(
        renderer, render_model, [render_datas[0], moved, render_datas[2], render_datas[3]]
    )
    out, ids = render_batch(fr), np.asarray(geom_ids(fr))
    floor = render_model.geom("floor").id
    changed = np.any(np.asarray(out.rgb[0]) != np.asarray(out.rgb[1]), axis=-1)
    assert changed.mean() > 0.01
    # Pixels that see the floor in both frames, far from the objects' shadows, stay the same.
    both_floor = (ids[0] == floor) & (ids[1] == floor)
    np.testing.assert_allclose(
        np.asarray(out.depth[0])[both_floor], np.asarray(out.depth[1])[both_floor], rtol=1e-6
    )
    assert not np.any(changed & both_floor)


def test_hidden_object_disappears(render_model, renderer, frames, images, render_batch, geom_ids):
    sphere = render_model.geom("sphere").id
    hidden = frames.replace(geom_rgba=frames.geom_rgba.at[:, sphere, 3].set(0.0))
    out, ids = render_batch(hidden), np.asarray(geom_ids(hidden))
    before = np.asarray(geom_ids(frames)) == sphere
    assert before.any() and not np.any(ids == sphere)
    # What was behind it is further away, or there is nothing (no return).
    behind, was = np.asarray(out.depth)[before], np.asarray(images.depth)[before]
    assert np.all((behind > was) | (behind == 0.0))


def test_brightness_and_camera_offset(render_model, renderer, frames, images, render_batch):
    dim = render_batch(frames.replace(brightness=frames.brightness * 0.5))
    hit = np.asarray(images.depth) > 0
    assert (
        np.abs(np.asarray(dim.rgb, float)[hit] - np.asarray(images.rgb, float)[hit] * 0.5).max()
        <= 1.0
    )
    shifted = frames.replace(cam_xpos=frames.cam_xpos + jnp.array([0.0, 0.0, 0.05]))
    assert not np.array_equal(np.asarray(render_batch(shifted).depth), np.asarray(images.depth))


def test_culling_equals_brute_force_on_a_cluttered_scene():
    """The wrist cameras of peg insertion (17 boxes, 8 capsules) at random arm poses."""
    m = registry.load("AlohaS2RPegInsertion").mj_model
    spec = RenderSpec(cameras=("left/wrist_cam", "right/wrist_cam"), width=32, height=32)
    rng = np.random.default_rng(0)
    frames, jr = [], JaxRenderer(m, spec, 8, tile=8, max_per_tile=4)
    for _ in range(8):
        d = mujoco.MjData(m)
        lo, hi = m.jnt_range[:, 0], m.jnt_range[:, 1]
        limited = m.jnt_limited.astype(bool)
        q = d.qpos.copy()
        for j in np.flatnonzero(limited):
            q[m.jnt_qposadr[j]] = rng.uniform(lo[j], hi[j]) * 0.5
        d.qpos[:] = q
        mujoco.mj_forward(m, d)
        frames.append(jr.frame(m, mjx.put_data(m, d)))
    frames = jax.tree.map(lambda *xs: jnp.stack(xs), *frames)
    culled = np.asarray(jax.jit(jr.render_batch)(frames).depth)
    t, _ = jax.jit(jax.vmap(jr._cast))(frames)
    brute = np.asarray(jax.vmap(jr._untile)(jnp.where(jnp.isfinite(t), t, 0.0)))
    counts = jax.vmap(jr._candidates)(frames)
    assert max(int(c.max()) for _, c in counts.values()) > 0
    # The same pixels hit; depths equal up to float rounding (the two paths fuse differently).
    np.testing.assert_array_equal(culled == 0.0, brute == 0.0)
    np.testing.assert_allclose(culled, brute, atol=1e-4)


def test_scene_checks(render_model):
    with pytest.raises(ValueError, match="No camera named 'nope'.*front"):
        JaxRenderer(render_model, RenderSpec(cameras=("nope",)), 1)
    mesh_xml = """<mujoco><asset><mesh name="t" vertex="0 0 0 1 0 0 0 1 0 0 0 1"/></asset>
      <worldbody><camera name="c" pos="0 0 2"/><geom type="mesh" mesh="t"/></worldbody></mujoco>"""
    with pytest.raises(ValueError, match="primitive geoms only.*'warp'"):
        JaxRenderer(mujoco.MjModel.from_xml_string(mesh_xml), RenderSpec(cameras=("c",)), 1)


def test_shadows_darken_the_floor_only(render_model, render_datas):
    shadowed = JaxRenderer(
        render_model, RenderSpec(cameras=CAMERAS, width=WIDTH, height=HEIGHT, shadows=True), 1
    )
    plain = JaxRenderer(render_model, SPEC, 1)
    frame = plain.frame(render_model, mjx.put_data(render_model, render_datas[0]))
    a, b = jax.jit(plain.render)(frame), jax.jit(shadowed.render)(frame)
    np.testing.assert_array_equal(np.asarray(a.depth), np.asarray(b.depth))
    darker = np.asarray(b.rgb, int).sum(-1) < np.asarray(a.rgb, int).sum(-1)
    assert darker.mean() > 0.005  # the objects cast shadows
    assert not np.any(np.asarray(b.rgb, int) > np.asarray(a.rgb, int))


def test_factory_backends_and_errors(render_model):
    assert render.default_backend() == "jax"  # CPU: the fastest here (scripts/bench_render.py)
    assert "jax" in render.available_backends()
    assert isinstance(render.make_renderer(render_model, SPEC, 2), JaxRenderer)
    with pytest.raises(ValueError, match="Unknown render backend 'vulkan'"):
        render.make_renderer(render_model, SPEC, 2, backend="vulkan")
    with pytest.raises(
        RuntimeError, match=r"'madrona' cannot run here: .*Available backends: \['jax'"
    ):
        render.make_renderer(render_model, SPEC, 2, backend="madrona")
