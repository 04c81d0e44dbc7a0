"""MuJoCo-Warp's batch ray tracer behind the `Renderer` interface (the hybrid path).

Physics stays in MJX-JAX; only the poses of a `Frame` are copied into a warp-impl `mjx.Data`
whose leading axis is the render context's fixed `nworld` (= `batch_size`). The scene BVH is
refitted to those poses and the megakernel renders every world in one call.

Semantics learnt from MJX 3.17's `mjx.warp.render` and the vendored `mujoco_warp` sources:

- the render context only knows its *active* cameras, ordered by model camera id; its packed
  buffers (`rgb_adr`, `depth_adr`, `seg_adr`) are indexed by active index, not model id;
- packed depth is already planar z-depth in metres and 0 on a miss (`mjx.get_depth` would
  divide by a scale and clip to [0, 1], so the raw buffer is sliced here instead);
- pixel `y * W + x` with `y = 0` at the top of the image, as this interface wants;
- rgb is packed as `a << 24 | r << 16 | g << 8 | b`, each byte `int(255 * c)` (truncated);
- model fields the kernel reads as `field[world % field.shape[0]]` (geom_rgba, geom_size,
  light_diffuse, ...) take a per-world leading axis through the FFI.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from playground.render.base import Frame, Images, Renderer, RenderSpec, to_uint8


class WarpUnavailableError(ImportError):
    """warp-lang is not installed, so the MuJoCo-Warp renderer cannot be built."""


def _require_warp() -> None:
    try:
        import warp  # noqa: F401
    except ImportError as err:
        raise WarpUnavailableError(
            "The 'warp' renderer needs warp-lang (MuJoCo-Warp's ray tracer): "
            f"pip install -e .[warp] ({err})"
        ) from err


def _quantised_background(rgb: tuple[float, float, float]) -> tuple[float, float, float, float]:
    """A background colour that warp's truncating byte packing turns into the rounded byte.

    Warp stores `int(255 * c)`; handing it `(round(255 * c) + 0.5) / 255` gives the same byte
    `to_uint8` would, so the background matches the other backends exactly.
    """
    out = [(float(np.round(np.clip(c, 0.0, 1.0) * 255.0)) + 0.5) / 255.0 for c in rgb]
    return (out[0], out[1], out[2], 1.0)


def _broadcast(x: np.ndarray | jax.Array, n: int) -> jax.Array:
    x = jnp.asarray(x)
    return jnp.broadcast_to(x, (n, *x.shape))


class WarpRenderer(Renderer):
    """Renders a batch of frames with MuJoCo-Warp's ray tracer (any geom type, meshes too).

    Of a `Frame` it honours, per env: `geom_xpos`, `geom_xmat`, `cam_xpos`, `cam_xmat`,
    `geom_rgba` (colour; alpha 0 hides a geom, any other alpha is opaque), `geom_size`,
    `light_dir`, `light_diffuse` and `brightness`. Colours, sizes and light colours reach warp
    as per-world model fields.

    `render` is per env and vmappable: under `vmap` the whole batch (which must be
    `batch_size`, warp's fixed `nworld`) is rendered in one call. An unbatched call needs
    `batch_size == 1`; otherwise it raises, eagerly at once and under `jit` when it runs
    (tracing cannot tell yet whether a `vmap` will follow). With `segmentation=True`,
    `segment_batch` returns the geom id per pixel.

    Approximations and limits, all from how MuJoCo-Warp works:

    - `brightness` scales the rendered 8-bit colour. The headlight's terms are compile-time
      constants of the warp kernel, so they cannot be scaled per world; since the shading is
      linear in every light and the ambient, scaling the colour is the same except where a
      pixel saturated (> 1 before warp's clamp) and for material emission.
    - Colour bytes are truncated by warp (`int(255 * c)`), so they can sit one step below the
      rounded value other backends give; the background colour is exact.
    - Light positions (point and spot lights) are the model's at `qpos0`; the `Frame` holds no
      light positions, so lights on moving bodies do not follow them.
    - Camera optics (fovy, intrinsics) are the model's, fixed when the context is built.
    - Shadows (`spec.shadows`) keep 30% of an occluded light, warp's default. Material
      textures are used; flex bodies are not supported (the `Frame` has no flex vertices).
    """

    name = "warp"
    fixed_batch_reason = "MuJoCo-Warp's nworld is fixed at context creation"

    def __init__(
        self,
        mj_model: mujoco.MjModel,
        spec: RenderSpec,
        batch_size: int,
        segmentation: bool = False,
    ):
        _require_warp()
        super().__init__(mj_model, spec, batch_size)
        self._segmentation = bool(segmentation)
        b = self.batch_size

        # Active cameras are ordered by model id; map each spec camera to its active index.
        active_ids = np.unique(self.scene.cam_ids)
        self._active_index = np.searchsorted(active_ids, self.scene.cam_ids)
        cam_active = [bool(i in active_ids) for i in range(mj_model.ncam)]
        self._ctx = mjx.create_render_context(
            mjm=mj_model,
            nworld=b,
            cam_res=(spec.width, spec.height),
            render_rgb=True,
            render_depth=True,
            render_seg=self._segmentation,
            use_textures=True,
            use_shadows=spec.shadows,
            enabled_geom_groups=list(spec.geom_groups),
            cam_active=cam_active,
            background_color=_quantised_background(spec.background),
        )
        self._rgb_adr = np.asarray(self._ctx.rgb_adr.numpy(), np.int64)
        self._depth_adr = np.asarray(self._ctx.depth_adr.numpy(), np.int64)
        self._seg_adr = np.asarray(self._ctx.seg_adr.numpy(), np.int64)

        # Poses at qpos0 fill what a Frame does not carry: cameras outside the spec and light
        # positions (make_data(impl="warp") leaves light_xpos/light_xdir at zero, which would
        # leave only ambient light).
        mj_data = mujoco.MjData(mj_model)
        mujoco.mj_forward(mj_model, mj_data)
        self._mx = mjx.put_model(mj_model, impl="warp")
        template = mjx.make_data(mj_model, impl="warp")
        self._data = template.tree_replace(
            {
                "qpos": _broadcast(mj_data.qpos.astype(np.float32), b),
                "cam_xpos": _broadcast(mj_data.cam_xpos.astype(np.float32), b),
                "cam_xmat": _broadcast(mj_data.cam_xmat.reshape(-1, 3, 3).astype(np.float32), b),
                "_impl.light_xpos": _broadcast(mj_data.light_xpos.astype(np.float32), b),
                "_impl.light_xdir": _broadcast(mj_data.light_xdir.astype(np.float32), b),
                "_impl._jax_token": jnp.zeros((b,), template._impl._jax_token.dtype),
            }
        )

    # -- public API -------------------------------------------------------------------------

    def render(self, frame: Frame) -> Images:
        # An eager call on concrete arrays cannot be under vmap: say so before the fallback.
        traced = any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(frame))
        if self.batch_size != 1 and not traced:
            raise ValueError(self._unbatched_message())
        return self._render_one(frame)

    def segment_batch(self, frames: Frame) -> jax.Array:
        """Geom id per pixel, int32 `[B, C, H, W]`, -1 where nothing is hit.

        Needs `segmentation=True` at construction; meant for labels and parity tests.
        """
        if not self._segmentation:
            raise ValueError("Build the WarpRenderer with segmentation=True to segment.")
        _, _, seg = self._render_packed(frames)
        return self._unpack(seg[..., 0], self._seg_adr)

    # -- batching ---------------------------------------------------------------------------

    def _unbatched_message(self) -> str:
        return (
            f"WarpRenderer was built for batch_size={self.batch_size}; an unbatched render() "
            "call renders one env, which only works with batch_size=1. Call it under jax.vmap "
            "(or render_batch) over the whole batch."
        )

    def _render_unbatched(self, frame: Frame) -> Images:
        if self.batch_size == 1:
            frames = jax.tree.map(lambda x: x[None], frame)
            return jax.tree.map(lambda x: x[0], self._render_batch(frames))

        # custom_vmap traces this even when the call is vmapped (and vmap(jit(...)) only meets
        # the batch after tracing), so it cannot raise here; fail only if it really runs.
        message = self._unbatched_message()

        def fail(*_: object) -> Images:
            raise ValueError(message)

        c, h, w = self.scene.num_cameras, self.spec.height, self.spec.width
        shapes = Images(
            rgb=jax.ShapeDtypeStruct((c, h, w, 3), jnp.uint8),
            depth=jax.ShapeDtypeStruct((c, h, w), jnp.float32),
        )
        return jax.pure_callback(fail, shapes, frame.brightness)

    # -- the render itself ------------------------------------------------------------------

    def _render_packed(self, frames: Frame) -> tuple[jax.Array, jax.Array, jax.Array]:
        n = frames.geom_xpos.shape[0]
        if n != self.batch_size:
            raise ValueError(
                f"WarpRenderer was built for batch_size={self.batch_size} but got {n} frames."
            )
        ids = jnp.asarray(self.scene.cam_ids)
        light_dir = frames.light_dir / jnp.maximum(
            jnp.linalg.norm(frames.light_dir, axis=-1, keepdims=True), 1e-9
        )  # the kernel assumes unit directions, as MuJoCo guarantees
        mx = self._mx.replace(
            geom_rgba=frames.geom_rgba.astype(jnp.float32),
            geom_size=frames.geom_size.astype(jnp.float32),
            light_diffuse=frames.light_diffuse.astype(jnp.float32),
        )
        d = self._data.tree_replace(
            {
                "geom_xpos": frames.geom_xpos.astype(jnp.float32),
                "geom_xmat": frames.geom_xmat.astype(jnp.float32),
                "cam_xpos": self._data.cam_xpos.at[:, ids].set(frames.cam_xpos),
                "cam_xmat": self._data.cam_xmat.at[:, ids].set(frames.cam_xmat),
                "_impl.light_xdir": light_dir.astype(jnp.float32),
            }
        )
        ctx = self._ctx.pytree()
        d = mjx.refit_bvh(mx, d, ctx)
        if self._segmentation:
            rgb, depth, seg, _ = mjx.render_with_segmentation(mx, d, ctx)
        else:
            rgb, depth, _ = mjx.render(mx, d, ctx)
            seg = jnp.zeros((n, 0, 2), jnp.int32)
        return rgb, depth, seg

    def _unpack(self, packed: jax.Array, adr: np.ndarray) -> jax.Array:
        """The spec's cameras out of a packed `[B, pixels]` buffer, as `[B, C, H, W]`."""
        h, w = self.spec.height, self.spec.width
        starts = adr[self._active_index]
        return jnp.stack(
            [packed[:, s : s + h * w].reshape(-1, h, w) for s in starts.tolist()], axis=1
        )

    def _render_batch(self, frames: Frame) -> Images:
        rgb_packed, depth_packed, _ = self._render_packed(frames)
        px = self._unpack(rgb_packed, self._rgb_adr)
        channels = [(px >> shift) & 0xFF for shift in (16, 8, 0)]
        rgb = jnp.stack(channels, axis=-1).astype(jnp.float32) / 255.0
        rgb = rgb * frames.brightness.reshape(-1, 1, 1, 1, 1)
        depth = self._unpack(depth_packed, self._depth_adr).astype(jnp.float32)
        return Images(rgb=to_uint8(rgb), depth=depth)
