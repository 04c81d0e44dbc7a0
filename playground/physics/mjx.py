"""The physics switch: MJX's `jax` implementation, MuJoCo-Warp (`warp`) or MuJoCo C (`native`).

This package is the only place that knows which implementation runs; envs call `put_model`,
`make_data` and `step` (and `MjxEnv.physics_step` hands `native` batches to
`playground.physics.native`) and never branch on the implementation themselves. With `native`
the MJX model and data are the `jax` ones: the physics steps (and `MjxEnv.forward`) run in C,
while a task's own `mjx.forward` or kinematics calls stay in JAX.
"""

from __future__ import annotations

import importlib.util

import jax
import mujoco
from mujoco import mjx

from playground.errors import UsageError
from playground.physics import native

IMPLS: tuple[str, ...] = ("jax", "warp", "native")


def available_impls() -> list[str]:
    """Implementations usable here: `jax` always; `warp` if installed; `native` on a CPU backend
    with MuJoCo's batch API."""
    impls = ["jax"]
    # MJX ships MuJoCo-Warp itself; only the warp-lang package is extra.
    if importlib.util.find_spec("warp") is not None:
        impls.append("warp")
    if native.is_available() and jax.default_backend() == "cpu":
        impls.append("native")
    return impls


def check_impl(impl: str) -> str:
    """Returns `impl` if it can run here, else raises a ValueError that says why and what can."""
    if impl not in IMPLS:
        raise UsageError(f"Unknown physics impl {impl!r}; choose one of {list(IMPLS)}.")
    if impl in available_impls():
        return impl
    if impl == "warp":
        why = "needs the warp-lang package, which is not installed (pip install -e .[warp])"
    elif not native.is_available():
        why = f"needs MuJoCo >= 4 (mujoco.batch); installed: mujoco {mujoco.__version__}"
    else:
        # Host callbacks would copy the whole batch off the accelerator and back every step.
        why = (
            f"runs MuJoCo C on the host CPU and is supported only with JAX's CPU backend; "
            f"the default backend here is {jax.default_backend()!r} (use 'jax' or 'warp' there, "
            f"or JAX_PLATFORMS=cpu)"
        )
    raise UsageError(f"Physics impl {impl!r} {why}. Available here: {available_impls()}.")


def _mjx_impl(impl: str) -> str:
    """The MJX implementation that holds the model and data: `native` keeps MJX-JAX's."""
    return "jax" if impl == "native" else impl


def put_model(mj_model: mujoco.MjModel, impl: str) -> mjx.Model:
    return mjx.put_model(mj_model, impl=_mjx_impl(check_impl(impl)))


# Warp preallocates contact and constraint buffers; these defaults fit our primitive-geom scenes.
WARP_NACONMAX_PER_WORLD = 48
WARP_NJMAX_PER_WORLD = 256


def make_data(
    mj_model: mujoco.MjModel,
    model: mjx.Model,
    impl: str,
    naconmax: int | None = None,
    njmax: int | None = None,
) -> mjx.Data:
    """A fresh Data for one world. `naconmax`/`njmax` size warp's contact and constraint buffers."""
    if impl == "warp":
        return mjx.make_data(
            mj_model,
            impl=impl,
            naconmax=naconmax or WARP_NACONMAX_PER_WORLD,
            njmax=njmax or WARP_NJMAX_PER_WORLD,
        )
    return mjx.make_data(model, impl=_mjx_impl(impl))


def step(model: mjx.Model, data: mjx.Data) -> mjx.Data:
    """One MJX physics step (`jax`, `warp`); `native` steps whole batches in NativePhysics."""
    return mjx.step(model, data)
