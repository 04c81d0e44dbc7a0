"""Madrona-MJX's batch renderer behind the `Renderer` interface, where it can run at all.

Madrona-MJX is CUDA-only, built from source, pins jax<0.6 and is no longer developed, so this
adapter is only usable in an environment built for it. It is UNTESTED: no machine it was
written on had CUDA and madrona_mjx. It follows the wrapper's documented use (`BatchRenderer`,
`init(data, model)` once, then `render(token, data)`) and nothing more.
"""

from __future__ import annotations

import importlib
import importlib.util

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from playground.render.base import Frame, Images, Renderer, RenderSpec, to_uint8

_INSTALL_HINT = "build from source: https://github.com/shacklettbp/madrona_mjx"
# Madrona keeps one global renderer state per process; a second one breaks the first.
_INSTANCES = 0


def _jax_version() -> tuple[int, ...]:
    return tuple(int(p) for p in jax.__version__.split(".")[:2] if p.isdigit())


def madrona_unavailable_reason() -> str | None:
    """None if Madrona-MJX can be used here, else a one-line reason why not."""
    if importlib.util.find_spec("madrona_mjx") is None:
        return f"madrona_mjx is not installed (CUDA-only, {_INSTALL_HINT})."
    if _jax_version() >= (0, 6):
        return f"madrona_mjx pins jax<0.6 (its XLA custom calls), but jax is {jax.__version__}."
    if jax.default_backend() != "gpu":
        return "madrona_mjx needs a CUDA GPU visible to JAX; none was found."
    try:
        importlib.import_module("madrona_mjx.renderer")
    except Exception as err:  # a broken build fails in many ways; report whichever it was
        return f"madrona_mjx failed to import: {err!r}."
    return None


class MadronaRenderer(Renderer):
    """Madrona's batch renderer (ray tracer) for a fixed number of worlds (`batch_size`).

    Untested here (no CUDA). It honours the poses of a `Frame` (`geom_xpos`, `geom_xmat`,
    `cam_xpos`, `cam_xmat`) and `brightness` (scaling the image); colours and lights are the
    model's, uploaded once at construction. Depth is passed on as Madrona reports it; whether
    that is planar z in metres with 0 on a miss, as this interface promises, is unverified.
    """

    name = "madrona"
    fixed_batch_reason = "Madrona's num_worlds is fixed when it is built"

    def __init__(
        self, mj_model: mujoco.MjModel, spec: RenderSpec, batch_size: int, gpu_id: int = 0
    ):
        global _INSTANCES
        reason = madrona_unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"The 'madrona' renderer is unavailable: {reason}")
        if _INSTANCES:
            raise RuntimeError(
                "Madrona allows one BatchRenderer per process and one already exists; reuse it."
            )
        super().__init__(mj_model, spec, batch_size)
        from madrona_mjx.renderer import BatchRenderer

        # Madrona orders its outputs by enabled camera id; map spec order onto that.
        enabled = np.unique(self.scene.cam_ids)
        self._out_index = np.searchsorted(enabled, self.scene.cam_ids)
        self._mx = mjx.put_model(mj_model)
        self._renderer = BatchRenderer(
            self._mx,
            gpu_id,
            self.batch_size,
            spec.width,
            spec.height,
            enabled_geom_groups=np.array(spec.geom_groups),
            enabled_cameras=enabled,
            add_cam_debug_geo=False,
            use_rasterizer=False,
        )
        _INSTANCES += 1
        mj_data = mujoco.MjData(mj_model)
        mujoco.mj_forward(mj_model, mj_data)
        self._data = mjx.put_data(mj_model, mj_data)
        batch = jax.tree.map(lambda x: jnp.broadcast_to(x, (self.batch_size, *x.shape)), self._data)
        self._token, _, _ = jax.vmap(self._renderer.init, in_axes=(0, None))(batch, self._mx)

    def _render_unbatched(self, frame: Frame) -> Images:
        # Traced even when vmapped (the rule then takes over), so it must not raise itself.
        frames = jax.tree.map(lambda x: jnp.broadcast_to(x, (self.batch_size, *x.shape)), frame)
        return jax.tree.map(lambda x: x[0], self._render_batch(frames))

    def _render_batch(self, frames: Frame) -> Images:
        ids = jnp.asarray(self.scene.cam_ids)

        def data_of(f: Frame) -> mjx.Data:
            return self._data.replace(
                geom_xpos=f.geom_xpos,
                geom_xmat=f.geom_xmat,
                cam_xpos=self._data.cam_xpos.at[ids].set(f.cam_xpos),
                cam_xmat=self._data.cam_xmat.at[ids].set(f.cam_xmat),
            )

        data = jax.vmap(data_of)(frames)
        _, rgba, depth = jax.vmap(self._renderer.render, in_axes=(None, 0))(self._token, data)
        idx = jnp.asarray(self._out_index)
        rgb = rgba[:, idx, ..., :3].astype(jnp.float32) / 255.0
        rgb = rgb * frames.brightness.reshape(-1, 1, 1, 1, 1)
        return Images(rgb=to_uint8(rgb), depth=depth[:, idx, ..., 0].astype(jnp.float32))
