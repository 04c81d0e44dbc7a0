"""Depth-camera noise: identity when off, each effect's statistics, seeding, jit and vmap."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import config_dict

import playground  # noqa: F401  (XLA flags + compilation cache before jax starts)
from playground.render import depth_noise

H = W = 64
PLANE_M = 0.3


def only(name: str, **params):
    """A config with only `name` enabled, its parameters overridden by `params`."""
    config = depth_noise.disabled_config()
    config[name].enabled = True
    config[name].update(params)
    return config


@functools.cache
def _compiled(config: config_dict.FrozenConfigDict):
    return jax.jit(functools.partial(depth_noise.apply, config=config))


def run(depth, config, seed=0):
    """`apply` under jit, compiled once per config (compiling dominates this file's run time)."""
    fn = _compiled(config_dict.FrozenConfigDict(config))
    return np.asarray(fn(jnp.asarray(depth, jnp.float32), jax.random.PRNGKey(seed)))


def plane(n, value=PLANE_M, h=H, w=W):
    return np.full((n, h, w), value, np.float32)


def binomial_tol(n, p, sigmas=5.0):
    """Tolerance on an observed fraction of `n` Bernoulli(p) trials."""
    return sigmas * math.sqrt(p * (1 - p) / n)


def random_depth(seed, shape=(4, H, W)):
    """Uniform [0, 1] m with a quarter of the pixels exactly 0 (no return) and a zero image."""
    rs = np.random.default_rng(seed)
    d = rs.uniform(0.0, 1.0, shape).astype(np.float32)
    d[rs.uniform(size=shape) < 0.25] = 0.0
    d[0] = 0.0
    return d


def test_all_disabled_is_identity_and_adds_no_ops():
    config = depth_noise.disabled_config()
    d = random_depth(0)
    out = depth_noise.apply(jnp.asarray(d), jax.random.PRNGKey(0), config)
    assert out.dtype == jnp.float32 and out.shape == d.shape
    np.testing.assert_array_equal(np.asarray(out), d)
    jaxpr = jax.make_jaxpr(functools.partial(depth_noise.apply, config=config))(
        jnp.asarray(d), jax.random.PRNGKey(0)
    )
    assert not jaxpr.eqns  # disabled effects are skipped at trace time


def test_pixel_dropout_fraction():
    p = 0.006
    out = run(plane(16), only("pixel_dropout", p=p))
    dropped = out == 0.0
    frac = dropped.mean()
    assert abs(frac - p) < binomial_tol(dropped.size, p), frac
    np.testing.assert_array_equal(out[~dropped], np.float32(PLANE_M))  # the rest is untouched


def test_multiplicative_mean_and_std():
    sigma = 0.01
    out = run(plane(16), only("multiplicative", sigma=sigma))
    n = out.size
    std = sigma * PLANE_M
    assert abs(out.mean() - PLANE_M) < 5 * std / math.sqrt(n)
    # The sample std of n normals has a relative standard error of 1 / sqrt(2 (n - 1)).
    assert abs(out.std() / std - 1) < 5 / math.sqrt(2 * (n - 1)), out.std()


def test_max_range_zeros_exactly_the_far_pixels():
    d = random_depth(1)
    out = run(d, only("max_range", max_m=0.4))
    np.testing.assert_array_equal(out, np.where(d > 0.4, 0.0, d))


def test_blackout_frequency():
    p, frames = 0.02, 20000
    out = run(plane(frames, h=4, w=4), only("blackout", p=p))
    black = np.all(out == 0.0, axis=(1, 2))
    assert np.all(out[~black] == np.float32(PLANE_M))  # a frame is either untouched or all 0
    assert abs(black.mean() - p) < binomial_tol(frames, p), black.mean()


def test_edge_dropout_only_at_a_step_edge():
    cfg = depth_noise.default_config().edge_dropout
    near, far = 0.2, 0.35  # central-difference gradient (far - near) / 2 = 0.075 m/px
    step = plane(32, far)
    step[:, :, : W // 2] = near
    out = run(step, only("edge_dropout"))
    dropped = out == 0.0
    edge_cols = [W // 2 - 1, W // 2]
    off_edge = np.ones(W, bool)
    off_edge[edge_cols] = False
    assert not dropped[:, :, off_edge].any()
    on_edge = dropped[:, :, edge_cols]
    p = cfg.gain * math.atan(cfg.scale * (far - near) / 2)
    assert abs(on_edge.mean() - p) < binomial_tol(on_edge.size, p), on_edge.mean()

    assert not (run(plane(32), only("edge_dropout")) == 0.0).any()
    # A tilted plane below the threshold (0.01 m/px) is not an edge either.
    ramp = np.broadcast_to(0.1 + 0.01 * np.arange(W, dtype=np.float32), (8, H, W))
    assert not (run(ramp, only("edge_dropout")) == 0.0).any()


def test_quantize_rounding_bound_and_levels():
    cfg = depth_noise.default_config().quantize
    bf, sub = cfg.baseline_focal, cfg.subpixel
    d = random_depth(2)
    d[d > 0] = 0.07 + 0.5 * d[d > 0]  # a D405's range, 0.07-0.57 m
    out = run(d, only("quantize", sigma_px=0.0))
    np.testing.assert_array_equal(out[d == 0], 0.0)
    valid = d > 0
    assert np.all(out[valid] > 0)
    bound = 0.5 * np.asarray(depth_noise.quantize_step_m(d, bf, sub))
    moved = np.abs(out - d)
    # Half a step, to first order; the second-order term and float32 rounding are far below 1%.
    assert np.all(moved <= 1.01 * bound + 1e-6 * d), (moved - bound).max()
    levels = bf * sub / out[valid].astype(np.float64)
    assert np.abs(levels - np.round(levels)).max() < 1e-2  # on the 1/subpixel disparity grid
    assert moved.max() > 0.1 * bound.max()  # and it did quantise


def test_quantize_noise_std_grows_with_depth_squared():
    cfg = depth_noise.default_config().quantize
    out = run(plane(16), only("quantize"))
    expected = PLANE_M**2 * cfg.sigma_px / cfg.baseline_focal  # first order in sigma_px
    # Rounding adds a uniform error of variance step**2 / 12 on top.
    step = float(depth_noise.quantize_step_m(PLANE_M, cfg.baseline_focal, cfg.subpixel))
    expected = math.sqrt(expected**2 + step**2 / 12)
    assert abs(out.std() / expected - 1) < 0.05, (out.std(), expected)
    assert abs(out.mean() - PLANE_M) < 0.1 * expected


def test_lines_values_and_no_return_kept():
    far = 0.5  # outside the streak depths, so streak pixels are easy to find
    d = plane(16, far)
    d[:, :, :8] = 0.0  # a no-return band
    out = run(d, only("lines", p_frame=1.0))
    changed = out != d
    assert changed.any(axis=(1, 2)).all()  # p_frame = 1: every frame has at least one line
    lo, hi = np.float32(0.08), np.float32(0.34)
    assert np.all((out[changed] >= lo) & (out[changed] <= hi))
    np.testing.assert_array_equal(out[:, :, :8], 0.0)  # streaks do not create returns...
    over = run(d, only("lines", p_frame=1.0, over_no_return=True))
    assert (over[:, :, :8] > 0).any()  # ...unless asked to


def test_lines_frame_probability():
    p, frames = 0.3, 400
    out = run(plane(frames, 0.5, 16, 16), only("lines", p_frame=p))
    streaked = (out != 0.5).any(axis=(1, 2))
    assert abs(streaked.mean() - p) < binomial_tol(frames, p), streaked.mean()


def test_seed_reproducible_and_seeds_differ():
    d = random_depth(3)
    config = depth_noise.default_config()
    a, b = run(d, config, seed=5), run(d, config, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, run(d, config, seed=6))


def test_batch_splits_the_key_per_image_and_matches_vmap():
    # Cheap effects: the batching is the same for all, and each variant below compiles anew.
    config = depth_noise.disabled_config()
    config.multiplicative.enabled = config.blackout.enabled = True
    d = jnp.asarray(random_depth(4, (6, 16, 16)))
    key = jax.random.PRNGKey(9)
    fn = functools.partial(depth_noise.apply, config=config)
    batched = jax.jit(fn)(d, key)
    nested = jax.jit(fn)(d.reshape(2, 3, 16, 16), key)
    np.testing.assert_allclose(np.asarray(nested).reshape(6, 16, 16), np.asarray(batched))
    keys = jax.random.split(key, 6)
    vmapped = jax.jit(jax.vmap(fn))(d, keys)
    np.testing.assert_allclose(np.asarray(batched), np.asarray(vmapped), rtol=1e-6)
    single = jax.jit(fn)(d[2], keys[2])  # one [H, W] image uses its key as is
    np.testing.assert_allclose(np.asarray(single), np.asarray(batched[2]), rtol=1e-6)
    # Identical images still get independent noise.
    same = jax.jit(fn)(jnp.broadcast_to(d[1], (6, 16, 16)), key)
    assert not np.array_equal(np.asarray(same[0]), np.asarray(same[1]))


@pytest.mark.parametrize("seed", [0, 1])
def test_everything_on_never_nan_negative_or_new_returns(seed):
    config = depth_noise.default_config()
    config.lines.p_frame = 1.0
    config.multiplicative.sigma = 0.5  # large enough to push some values below 0 before clipping
    config.quantize.sigma_px = 50.0  # large enough to push some disparities below 0
    config.max_range.enabled = False  # let huge depths reach the end
    d = random_depth(seed)
    d[1, 0, :4] = [1e-30, 1e-12, 1e3, 1e30]  # tiny and huge depths must not overflow to NaN
    out = run(d, config, seed)
    assert out.shape == d.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out)) and np.all(out >= 0)
    np.testing.assert_array_equal(out[d == 0], 0.0)


def test_bad_config_is_refused():
    config = depth_noise.default_config()
    config.pixel_dropout.p = 1.5
    with pytest.raises(ValueError, match="pixel_dropout.p"):
        depth_noise.apply(jnp.ones((4, 4)), jax.random.PRNGKey(0), config)
    with pytest.raises(TypeError):
        depth_noise.apply(jnp.ones((4, 4), jnp.int32), jax.random.PRNGKey(0))
