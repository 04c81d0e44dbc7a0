"""Vision tasks: camera observations, proprioception, depth noise and visual randomisation."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from playground import registry
from playground.envs import visual_dr

from .conftest import BATCH

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", registry.VISION_ENVS)
def test_observation_contract(name):
    env = registry.load(name)
    v = env.config.vision
    obs = jax.eval_shape(env.reset, jax.random.PRNGKey(0)).obs
    c, h, w = len(v.cameras), v.height, v.width
    assert {"state", "privileged_state", "proprio"} <= set(obs)
    assert ("rgb" in obs) == v.rgb and ("depth" in obs) == v.depth
    if v.rgb:
        assert obs["rgb"].shape == (c, h, w, 3) and obs["rgb"].dtype == jnp.uint8
    if v.depth:
        assert obs["depth"].shape == (c, h, w) and obs["depth"].dtype == jnp.float32
    # proprio is part of what the robot measures, never the object pose from the state.
    assert obs["proprio"].shape == (len(env.PROPRIO),)
    assert obs["proprio"].shape[0] < obs["state"].shape[0]


def test_registered_vision_tasks():
    assert set(registry.VISION_ENVS) == {
        "AlohaS2RPegInsertionDistill",
        "FrankaGraspStereo",
        "FrankaLiftStereo",
        "FrankaReachStereo",
    }
    d = registry.get_default_config("AlohaS2RPegInsertionDistill").vision
    assert (d.width, d.height, d.rgb, d.depth) == (32, 32, True, True)
    assert tuple(d.cameras) == ("left/wrist_cam", "right/wrist_cam")
    s = registry.get_default_config("FrankaGraspStereo").vision
    assert (s.width, s.height, s.rgb, s.depth) == (64, 64, True, False)


def test_distill_observations(distill):
    state = distill.run(distill.reset_batch(0), 2)
    obs = {k: np.asarray(v) for k, v in state.obs.items()}
    np.testing.assert_array_equal(obs["proprio"], obs["state"][:, distill.env.PROPRIO])
    depth = obs["depth"]
    max_m = distill.env.config.vision.depth_noise.max_range.max_m
    assert depth.min() >= 0.0 and depth.max() <= max_m
    assert (depth > 0).mean() > 0.5  # the wrist cameras see their objects and the table
    rgb = obs["rgb"]
    assert not np.array_equal(rgb[:, 0], rgb[:, 1])  # left and right views differ
    assert len({rgb[i].tobytes() for i in range(BATCH)}) == BATCH  # so do the envs


def test_reach_target_is_seen_by_the_stereo_cameras(reach_stereo):
    env = reach_stereo.env
    state = reach_stereo.reset_batch(1)
    target = env.mj_model.geom("target").id
    frames = jax.vmap(env.renderer.frame, in_axes=(None, 0))(env.mjx_model, state.data)
    ids = np.asarray(jax.jit(jax.vmap(env.renderer.geom_ids))(frames))
    for i in range(BATCH):
        assert np.any(ids[i] == target), f"env {i}: the target is outside both views"
    # What the env returned is that render.
    out = jax.vmap(env.renderer.render)(frames)
    np.testing.assert_array_equal(np.asarray(out.rgb), np.asarray(state.obs["rgb"]))


def test_visual_randomisation_changes_the_look_not_the_geometry(reach_stereo):
    env = reach_stereo.env
    cfg = env.config.vision.visual_dr.copy_and_resolve_references()
    cfg.enabled = True
    state = reach_stereo.reset_batch(2)
    data = jax.tree.map(lambda x: x[0], state.data)
    r, n_cams = env.renderer, len(env.config.vision.cameras)
    look = jax.jit(lambda visual: r.render(r.frame(env.mjx_model, data, visual)))
    sample = jax.jit(lambda key: visual_dr.sample(key, env.mj_model, n_cams, cfg))

    # The identity look is the model's own: what the env rendered without randomisation.
    same = look(visual_dr.identity(env.mj_model, n_cams))
    np.testing.assert_array_equal(np.asarray(same.rgb), np.asarray(state.obs["rgb"][0]))
    va = sample(jax.random.PRNGKey(0))
    a, b = look(va), look(sample(jax.random.PRNGKey(1)))
    np.testing.assert_array_equal(np.asarray(look(sample(jax.random.PRNGKey(0))).rgb), a.rgb)
    assert not np.array_equal(np.asarray(a.rgb), np.asarray(b.rgb))
    lo, hi = cfg.brightness
    assert lo <= float(va["brightness"]) <= hi
    table = env.mj_model.geom("table").id
    gray = np.asarray(va["geom_rgba"])[table, :3]
    assert np.all(gray >= cfg.table_gray[0] - cfg.table_tint - 1e-6)
    assert np.all(np.abs(np.asarray(va["cam_pos_offset"])) <= np.asarray(cfg.camera_pos_m) + 1e-7)
    # Jittered cameras: same scene, slightly different viewpoint, so depth changes a little.
    assert not np.array_equal(np.asarray(a.depth), np.asarray(same.depth))


def test_camera_pngs_in_docs_and_readme():
    readme = (ROOT / "README.md").read_text()
    for name in registry.VISION_ENVS:
        png = ROOT / "docs" / "cameras" / f"{name}.png"
        assert png.is_file() and png.stat().st_size > 0, png
        assert f"docs/cameras/{name}.png" in readme, name


def test_vision_config_errors():
    with pytest.raises(ValueError, match="enable rgb, depth or both"):
        registry.load("FrankaReachStereo", config_overrides={"vision.rgb": False})
    with pytest.raises(ValueError, match="No camera named 'nope'"):
        registry.load("FrankaReachStereo", config_overrides={"vision.cameras": ("nope",)})
    with pytest.raises(RuntimeError, match="'madrona' cannot run here"):
        registry.load("FrankaReachStereo", config_overrides={"vision.backend": "madrona"})
