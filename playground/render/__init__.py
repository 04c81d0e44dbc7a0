"""Batch rendering behind one interface (`base.Renderer`), with three backends.

    renderer = render.make_renderer(mj_model, render.RenderSpec(cameras=("cam",), width=32,
                                    height=32), batch_size=256)            # backend="auto"
    images = jax.vmap(renderer.render)(jax.vmap(renderer.frame, (None, 0))(model, data))

- `jax`: the pure-JAX ray caster (`jax_raycast`), primitive geoms, every device.
- `warp`: MuJoCo-Warp's ray tracer through MJX (`warp`), where warp-lang is installed; meshes too.
- `madrona`: Madrona-MJX (`madrona`), only where `import madrona_mjx` works (CUDA, jax<0.6).

`auto` picks the fastest available backend on the current device by `scripts/bench_render.py`:
on CPU that is `jax` (docs/rendering.md, "Rendering speed"). No GPU was available to measure on;
there `auto` prefers `warp` when it is installed (MuJoCo-Warp is built for CUDA) and otherwise
`jax`.
"""

from __future__ import annotations

import importlib.util

import jax
import mujoco

from playground.render.base import Frame, Images, Renderer, RenderSpec, Scene, frame_from_data

BACKENDS: tuple[str, ...] = ("jax", "warp", "madrona")

__all__ = [
    "BACKENDS",
    "Frame",
    "Images",
    "Renderer",
    "RenderSpec",
    "Scene",
    "available_backends",
    "default_backend",
    "frame_from_data",
    "make_renderer",
    "unavailable_reason",
]


def unavailable_reason(backend: str) -> str | None:
    """None if `backend` can run here, else why not (one line)."""
    if backend == "jax":
        return None
    if backend == "warp":
        if importlib.util.find_spec("warp") is None:
            return "warp-lang is not installed (pip install -e .[warp])"
        return None
    if backend == "madrona":
        from playground.render.madrona import madrona_unavailable_reason

        return madrona_unavailable_reason()
    raise ValueError(
        f"Unknown render backend {backend!r}; choose one of {list(BACKENDS)} or 'auto'."
    )


def available_backends() -> list[str]:
    return [b for b in BACKENDS if unavailable_reason(b) is None]


def default_backend() -> str:
    """The backend `auto` resolves to on the current default JAX device (see the module doc)."""
    if jax.default_backend() == "gpu" and unavailable_reason("warp") is None:
        return "warp"
    return "jax"


def make_renderer(
    mj_model: mujoco.MjModel,
    spec: RenderSpec,
    batch_size: int,
    backend: str = "auto",
    **options,
) -> Renderer:
    """A renderer for `spec`'s cameras of `mj_model`, rendering batches of `batch_size` envs.

    Choosing a backend that cannot run here raises a RuntimeError saying why and which can.
    `options` go to the backend's constructor (e.g. the jax caster's `tile`).
    """
    name = default_backend() if backend == "auto" else backend
    reason = unavailable_reason(name)
    if reason is not None:
        raise RuntimeError(
            f"Render backend {name!r} cannot run here: {reason}. "
            f"Available backends: {available_backends()}."
        )
    if name == "jax":
        from playground.render.jax_raycast import JaxRenderer as cls
    elif name == "warp":
        from playground.render.warp import WarpRenderer as cls
    else:
        from playground.render.madrona import MadronaRenderer as cls
    return cls(mj_model, spec, batch_size, **options)
