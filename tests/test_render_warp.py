"""The MuJoCo-Warp renderer: parity with MuJoCo's OpenGL renderer, batching and the contract."""

from __future__ import annotations

import sys

import pytest

pytest.importorskip("warp")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from mujoco import mjx  # noqa: E402

import playground  # noqa: E402, F401  (MUJOCO_GL=egl before mujoco renders)
from playground.render.base import Frame  # noqa: E402
from playground.render.warp import WarpRenderer  # noqa: E402

from .render_scene import (
    BATCH,
    SPEC,
    assert_matches_gl,
)


@pytest.fixture(scope="module")
def renderer(render_model) -> WarpRenderer:
    return WarpRenderer(render_model, SPEC, BATCH, segmentation=True)


def _frames(renderer: WarpRenderer, render_model, render_datas) -> Frame:
    frames = [renderer.frame(render_model, mjx.put_data(render_model, d)) for d in render_datas]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *frames)


@pytest.fixture(scope="module")
def frames(renderer, render_model, render_datas) -> Frame:
    return _frames(renderer, render_model, render_datas)


@pytest.fixture(scope="module")
def images(renderer, frames):
    return jax.jit(renderer.render_batch)(frames)


def test_parity_with_mujoco_opengl(renderer, render_model, render_datas, frames, images):
    seg = np.asarray(renderer.segment_batch(frames))
    assert_matches_gl(render_model, render_datas, seg, np.asarray(images.depth), images.rgb)


def test_contract_shapes_and_dtypes(images):
    c, h, w = len(SPEC.cameras), SPEC.height, SPEC.width
    assert images.rgb.shape == (BATCH, c, h, w, 3) and images.rgb.dtype == jnp.uint8
    assert images.depth.shape == (BATCH, c, h, w) and images.depth.dtype == jnp.float32


def test_batch_of_one_matches_batch_of_four(render_model, render_datas, images):
    single = WarpRenderer(render_model, SPEC, 1)
    env = 2
    frame = single.frame(render_model, mjx.put_data(render_model, render_datas[env]))
    out = single.render(frame)  # unbatched call: fine with batch_size=1
    assert out.rgb.shape == (len(SPEC.cameras), SPEC.height, SPEC.width, 3)
    np.testing.assert_array_equal(np.asarray(out.rgb), np.asarray(images.rgb[env]))
    np.testing.assert_array_equal(np.asarray(out.depth), np.asarray(images.depth[env]))


def test_per_env_frame_fields(renderer, render_model, render_datas):
    base = renderer.frame(render_model, mjx.put_data(render_model, render_datas[0]))
    frames = jax.tree.map(lambda x: jnp.stack([x] * BATCH), base)
    sphere = render_model.geom("sphere").id
    box = render_model.geom("box").id
    rgba = frames.geom_rgba.at[1, sphere].set(jnp.array([1.0, 1.0, 1.0, 1.0]))
    rgba = rgba.at[1, box, 3].set(0.0)  # alpha 0 hides a geom
    frames = frames.replace(
        geom_rgba=rgba,
        brightness=frames.brightness.at[2].set(0.5),
        light_diffuse=frames.light_diffuse.at[3].set(0.0),
    )
    out = jax.jit(renderer.render_batch)(frames)
    seg = np.asarray(renderer.segment_batch(frames))
    rgb = np.asarray(out.rgb).astype(int)

    # Env 1: the sphere turns white, the box disappears, the rest is untouched.
    on_sphere = seg[0] == sphere
    assert on_sphere.any() and (rgb[1][on_sphere] > rgb[0][on_sphere]).all()
    assert (seg[0] == box).any() and not (seg[1] == box).any()
    untouched = (seg[0] == seg[1]) & ~on_sphere
    np.testing.assert_array_equal(rgb[1][untouched], rgb[0][untouched])
    # Env 2: half brightness halves the image (8-bit rounding aside).
    assert np.abs(rgb[2] - rgb[0] * 0.5).max() <= 1.0
    # Env 3: without the directional light only ambient and headlight remain.
    hit = seg[0] >= 0
    assert rgb[3][hit].mean() < rgb[0][hit].mean() - 10


def test_wrong_batch_sizes_raise_clear_errors(renderer, frames):
    with pytest.raises(ValueError, match=r"batch_size=4.*vmapped over 3"):
        jax.vmap(renderer.render)(jax.tree.map(lambda x: x[:3], frames))
    one = jax.tree.map(lambda x: x[0], frames)
    with pytest.raises(ValueError, match=r"batch_size=4.*unbatched"):
        renderer.render(one)
    # Under jit the unbatched path can only fail when it runs (vmap may still come later).
    with pytest.raises(Exception, match=r"batch_size=4"):
        jax.block_until_ready(jax.jit(renderer.render)(one))


def test_unbatched_fields_are_broadcast_under_vmap(renderer, frames, images):
    shared = frames.replace(geom_rgba=frames.geom_rgba[0], light_diffuse=frames.light_diffuse[0])
    axes = Frame(**{f: 0 for f in Frame.__dataclass_fields__}).replace(
        geom_rgba=None, light_diffuse=None
    )
    out = jax.vmap(renderer.render, in_axes=(axes,))(shared)
    np.testing.assert_array_equal(np.asarray(out.rgb), np.asarray(images.rgb))


def test_missing_warp_is_an_import_error(render_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "warp", None)  # makes `import warp` fail
    with pytest.raises(ImportError, match=r"warp-lang.*pip install -e \.\[warp\]"):
        WarpRenderer(render_model, SPEC, 1)


def test_matches_the_jax_ray_caster(renderer, render_model, frames, images):
    from playground.render.jax_raycast import JaxRenderer

    jr = JaxRenderer(render_model, SPEC, BATCH)
    ids = np.asarray(jax.jit(jax.vmap(jr.geom_ids))(frames))
    depth = np.asarray(jax.jit(jr.render_batch)(frames).depth)
    seg, wdepth = np.asarray(renderer.segment_batch(frames)), np.asarray(images.depth)
    for env in range(BATCH):
        for c in range(len(SPEC.cameras)):
            assert np.mean(ids[env, c] == seg[env, c]) >= 0.99, (env, c)
            same = (ids[env, c] == seg[env, c]) & (ids[env, c] >= 0)
            # Both are exact ray casts: sub-millimetre everywhere they see the same geom.
            assert np.abs(depth[env, c] - wdepth[env, c])[same].max() < 1e-3, (env, c)
