"""Depth-camera artefacts for rendered depth images, so a pixel student sees what real sensors see.

Renderers return clean float32 linear z-depth in metres, `[..., H, W]`, with 0 meaning no return.
A real active-stereo camera (the RealSense D405 on ALOHA's wrists) does not: it loses pixels,
quantises depth, and now and then produces whole bad frames. A student trained only on clean
depth learns to rely on detail that the real camera never delivers, so `apply` corrupts the
rendered image with the artefacts below. Each effect has its own sub-dict in `default_config()`
with an `enabled` flag; the defaults describe a D405-like camera at close range.

Effects, in the order they are applied:

- `multiplicative`: `d *= 1 + N(0, sigma)` per pixel. Stereo matching error grows with depth; a
  relative error is the simplest model of it that needs no camera intrinsics.
- `quantize`: stereo cameras measure disparity, not depth, in steps of `1 / subpixel` pixels.
  Model: `disp = baseline_focal / d` (`baseline_focal` = baseline [m] * focal length [px]), plus
  `N(0, sigma_px)` sub-pixel matching noise, rounded to a multiple of `1 / subpixel`, and
  `d = baseline_focal / disp`. Adjacent disparity levels are `step(d) = d**2 / (baseline_focal *
  subpixel)` metres apart, so depth resolution gets coarser with the square of depth as on the
  real camera. With `sigma_px = 0` the rounding moves a value by at most half a step (to first
  order in `step / d`; see `quantize_step_m`). A disparity that noise pushes to 0 or below is
  outside the matcher's search range and becomes no return (0). Defaults: D405, 18 mm baseline,
  ~674 px focal length at its native 1280x720 (87 deg horizontal FOV), 1/32 px disparity units and
  0.08 px RMS sub-pixel error (the datasheet figure). Quantisation happens at the sensor's native
  resolution, so these values do not change with the (usually much smaller) rendered resolution.
- `max_range`: depth beyond `max_m` is set to 0. The camera's depth filter (and its weak
  projector) yields no return far away; the student must not learn from far detail that the
  real camera drops. Applied to the measured (noisy) value, as the camera's threshold is.
- `edge_dropout`: stereo matching fails at depth discontinuities (occlusion: one camera sees what
  the other cannot), which leaves holes along object silhouettes. A pixel whose central-difference
  depth gradient magnitude `g` (metres per pixel, edge-padded borders) exceeds `threshold` is
  dropped with probability `clip(gain * arctan(scale * g), 0, 1)`: steeper edges fail more
  often, saturating for large jumps. The gradient is taken after `max_range`, so silhouettes
  against out-of-range background count as edges. `g` is per pixel, so `threshold` depends on the
  image resolution (0.05 m/px suits the 64x64 student images at 0.1-0.4 m).
- `pixel_dropout`: each pixel independently set to 0 with probability `p`: isolated invalid
  pixels from low texture, specular highlights or failed left-right consistency checks.
- `lines`: with probability `p_frame` per image, 1..`max_lines` straight streaks (random
  endpoints, widths of `width_px` pixels) with a constant depth each, drawn from `depth_m`. Stray
  light (sunlight, reflections of the projector) produces false near matches along such lines.
  By default a streak replaces only pixels that had a return in the input, to keep the rule that
  no return stays no return; `over_no_return=True` draws streaks over no-return pixels as well.
- `blackout`: with probability `p` the whole image is 0: dropped frames, USB resets and
  auto-exposure failures, which the policy must ride out rather than react to.

All randomness comes from the explicit `rng`; each effect draws from its own stream (`fold_in`
with a fixed index), so turning one effect on or off does not change another's noise. The config
is static: its Python values are read at trace time and disabled effects add no operations at
all. `apply` is pure, jit-able and vmap-able. The output has the input's shape and dtype, is never
negative or NaN for finite non-negative input, and input zeros stay 0.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from ml_collections import config_dict

Config = config_dict.ConfigDict | config_dict.FrozenConfigDict

# Fixed per-effect stream indices (`fold_in` in `_apply_one`): never renumber them, or every seed's
# noise changes. `max_range` draws nothing but keeps its index so the list stays the effect list.
_STREAMS = {
    "multiplicative": 0,
    "quantize": 1,
    "max_range": 2,
    "edge_dropout": 3,
    "pixel_dropout": 4,
    "lines": 5,
    "blackout": 6,
}


def default_config() -> config_dict.ConfigDict:
    """A D405-like wrist camera at 0.07-0.4 m, every effect enabled."""
    return config_dict.create(
        multiplicative=config_dict.create(enabled=True, sigma=0.01),
        quantize=config_dict.create(
            enabled=True,
            baseline_focal=0.018 * 674.0,  # m * px: D405 baseline x focal length at 1280x720
            subpixel=32,  # disparity units of 1/32 px
            sigma_px=0.08,  # RMS sub-pixel matching error
        ),
        max_range=config_dict.create(enabled=True, max_m=0.4),
        edge_dropout=config_dict.create(
            enabled=True,
            threshold=0.05,  # m per pixel: steps over 10 cm (a step h gives h / 2 on both sides)
            scale=10.0,  # px per m
            gain=0.6,  # caps the drop probability at 0.6 * pi / 2 ~ 0.94
        ),
        pixel_dropout=config_dict.create(enabled=True, p=0.006),
        lines=config_dict.create(
            enabled=True,
            p_frame=0.05,
            max_lines=4,
            width_px=(2, 5),  # integer widths, inclusive
            depth_m=(0.08, 0.34),
            over_no_return=False,
        ),
        blackout=config_dict.create(enabled=True, p=0.02),
    )


def disabled_config() -> config_dict.ConfigDict:
    """`default_config()` with every effect off; enable the ones wanted."""
    config = default_config()
    for name in _STREAMS:
        config[name].enabled = False
    return config


def quantize_step_m(depth: jax.Array, baseline_focal: float, subpixel: int) -> jax.Array:
    """Depth between adjacent disparity levels at `depth` (first order): `d**2 / (bf*subpixel)`."""
    return jnp.square(depth) / (baseline_focal * subpixel)


def apply(depth: jax.Array, rng: jax.Array, config: Config | None = None) -> jax.Array:
    """Corrupts depth images `[..., H, W]` (metres, 0 = no return) like a real depth camera.

    Images in the leading dimensions get independent noise: `rng` is split once per image, in
    row-major order of the leading indices, so `apply(x, k)` for `x` of shape `[N, H, W]` equals
    `jax.vmap(apply, (0, 0))(x, jax.random.split(k, N))`. A single `[H, W]` image uses `rng` as is.
    `config` (default: `default_config()`) is read at trace time; close over it, e.g.
    `jax.jit(functools.partial(apply, config=config))`.
    """
    config = default_config() if config is None else config
    _validate(config)
    depth = jnp.asarray(depth)
    if depth.ndim < 2:
        raise ValueError(f"Depth images need shape [..., H, W]; got {depth.shape}.")
    if not jnp.issubdtype(depth.dtype, jnp.floating):
        raise TypeError(f"Depth must be floating-point metres; got {depth.dtype}.")
    if not any(config[name].enabled for name in _STREAMS):
        return depth
    if depth.ndim == 2:
        return _apply_one(depth, rng, config)
    lead, (h, w) = depth.shape[:-2], depth.shape[-2:]
    n = math.prod(lead)
    keys = jax.random.split(rng, n)
    flat = jax.vmap(lambda d, k: _apply_one(d, k, config))(depth.reshape((n, h, w)), keys)
    return flat.reshape(depth.shape)


def _validate(config: Config) -> None:
    unknown = set(config.keys()) - set(_STREAMS)
    if unknown:
        raise ValueError(f"Unknown depth-noise effects {sorted(unknown)}; known: {list(_STREAMS)}.")
    for name in ("pixel_dropout", "blackout"):
        if config[name].enabled and not 0.0 <= config[name].p <= 1.0:
            raise ValueError(f"{name}.p must be in [0, 1]; got {config[name].p}.")
    lines = config.lines
    if lines.enabled:
        if not 0.0 <= lines.p_frame <= 1.0:
            raise ValueError(f"lines.p_frame must be in [0, 1]; got {lines.p_frame}.")
        if int(lines.max_lines) < 1:
            raise ValueError(f"lines.max_lines must be >= 1; got {lines.max_lines}.")
        lo, hi = lines.width_px
        if not 0 < lo <= hi:
            raise ValueError(f"lines.width_px must be 0 < min <= max; got {lines.width_px}.")
        lo, hi = lines.depth_m
        if not 0 < lo <= hi:
            raise ValueError(f"lines.depth_m must be 0 < min <= max; got {lines.depth_m}.")
    q = config.quantize
    if q.enabled and (q.baseline_focal <= 0 or int(q.subpixel) < 1 or q.sigma_px < 0):
        raise ValueError(f"quantize needs baseline_focal > 0, subpixel >= 1, sigma_px >= 0: {q}.")


def _apply_one(depth: jax.Array, rng: jax.Array, config: Config) -> jax.Array:
    dtype = depth.dtype
    # Disparity and line geometry need float32 precision even for half-precision input.
    d = depth.astype(jnp.promote_types(dtype, jnp.float32))
    has_return = d > 0
    key = lambda name: jax.random.fold_in(rng, _STREAMS[name])  # only enabled effects fold in

    if config.multiplicative.enabled:
        eps = jax.random.normal(key("multiplicative"), d.shape, d.dtype)
        # A > 100-sigma draw could flip the sign; a depth camera never reports negative depth.
        d = jnp.maximum(d * (1.0 + config.multiplicative.sigma * eps), 0.0)

    if config.quantize.enabled:
        d = _quantize(d, key("quantize"), config.quantize)

    if config.max_range.enabled:
        d = jnp.where(d > config.max_range.max_m, 0.0, d)

    if config.edge_dropout.enabled:
        d = _edge_dropout(d, key("edge_dropout"), config.edge_dropout)

    if config.pixel_dropout.enabled:
        drop = jax.random.bernoulli(key("pixel_dropout"), config.pixel_dropout.p, d.shape)
        d = jnp.where(drop, 0.0, d)

    if config.lines.enabled:
        d = _lines(d, has_return, key("lines"), config.lines)

    if config.blackout.enabled:
        d = jnp.where(jax.random.bernoulli(key("blackout"), config.blackout.p), 0.0, d)

    return d.astype(dtype)


def _quantize(d: jax.Array, rng: jax.Array, q: Config) -> jax.Array:
    valid = d > 0
    bf = jnp.asarray(q.baseline_focal, d.dtype)
    disp = bf / jnp.where(valid, d, 1.0)
    if q.sigma_px > 0:
        disp = disp + q.sigma_px * jax.random.normal(rng, d.shape, d.dtype)
    disp = jnp.round(disp * q.subpixel) / q.subpixel
    # Disparity <= 0 is no match; a disparity overflowing to inf maps to depth 0, also no return.
    ok = valid & (disp > 0)
    return jnp.where(ok, bf / jnp.where(ok, disp, 1.0), 0.0)


def _edge_dropout(d: jax.Array, rng: jax.Array, e: Config) -> jax.Array:
    p = jnp.pad(d, 1, mode="edge")
    gy = 0.5 * (p[2:, 1:-1] - p[:-2, 1:-1])
    gx = 0.5 * (p[1:-1, 2:] - p[1:-1, :-2])
    g = jnp.sqrt(gx * gx + gy * gy)
    prob = jnp.clip(e.gain * jnp.arctan(e.scale * g), 0.0, 1.0)
    prob = jnp.where(g > e.threshold, prob, 0.0)
    drop = jax.random.uniform(rng, d.shape, d.dtype) < prob
    return jnp.where(drop, 0.0, d)


def _lines(d: jax.Array, has_return: jax.Array, rng: jax.Array, c: Config) -> jax.Array:
    h, w = d.shape
    n_max = int(c.max_lines)
    # Two draws for everything (fewer RNG kernels to compile than one draw per parameter).
    k_frame, k_line = jax.random.split(rng)
    u_frame = jax.random.uniform(k_frame, (2,), d.dtype)
    u = jax.random.uniform(k_line, (n_max, 6), d.dtype)
    on = u_frame[0] < c.p_frame
    count = jnp.minimum(1 + jnp.floor(u_frame[1] * n_max), n_max)  # uniform on 1..n_max
    active = on & (jnp.arange(n_max) < count)  # [L]: a static L, unused lines masked out
    size = jnp.array([w, h], d.dtype)
    a = u[:, 0:2] * size  # endpoints (x, y) in pixel units
    b = u[:, 2:4] * size
    lo, hi = int(c.width_px[0]), int(c.width_px[1])
    width = jnp.minimum(lo + jnp.floor(u[:, 4] * (hi - lo + 1)), hi)  # uniform on lo..hi
    lo, hi = float(c.depth_m[0]), float(c.depth_m[1])
    value = lo + (hi - lo) * u[:, 5]

    # Distance from every pixel centre to every segment: project, clamp to the segment, measure.
    ys, xs = jnp.meshgrid(
        jnp.arange(h, dtype=d.dtype) + 0.5, jnp.arange(w, dtype=d.dtype) + 0.5, indexing="ij"
    )
    pix = jnp.stack([xs, ys], axis=-1)  # [H, W, 2]
    ab = b - a  # [L, 2]
    ap = pix[None] - a[:, None, None]  # [L, H, W, 2]
    # A zero-length segment is a disc around its point; the floor only avoids 0 / 0.
    t = (
        jnp.sum(ap * ab[:, None, None], -1)
        / jnp.maximum(jnp.sum(ab * ab, -1), 1e-12)[:, None, None]
    )
    closest = ap - jnp.clip(t, 0.0, 1.0)[..., None] * ab[:, None, None]
    dist2 = jnp.sum(closest * closest, -1)  # [L, H, W]
    hit = active[:, None, None] & (dist2 <= jnp.square(0.5 * width)[:, None, None])

    # Where lines cross, the last one drawn wins.
    last = n_max - 1 - jnp.argmax(hit[::-1], axis=0)
    streak = jnp.any(hit, axis=0)
    if not c.over_no_return:
        streak = streak & has_return
    return jnp.where(streak, value[last], d)
