"""The physics switch: MJX's `jax` implementation or MuJoCo-Warp (`warp`), chosen by config.

This is the only module that knows which implementation runs; envs call `put_model`,
`make_data` and `step` and never branch on the implementation themselves.
"""

from __future__ import annotations

import importlib.util

import mujoco
from mujoco import mjx

IMPLS: tuple[str, ...] = ("jax", "warp")


def available_impls() -> list[str]:
    """Implementations usable in this Python environment (`jax` always; `warp` if installed)."""
    impls = ["jax"]
    # MJX ships MuJoCo-Warp itself; only the warp-lang package is extra.
    if importlib.util.find_spec("warp") is not None:
        impls.append("warp")
    return impls


def check_impl(impl: str) -> str:
    """Returns `impl` if it can run here, else raises a ValueError that says why and what can."""
    if impl not in IMPLS:
        raise ValueError(f"Unknown physics impl {impl!r}; choose one of {list(IMPLS)}.")
    if impl not in available_impls():
        raise ValueError(
            f"Physics impl {impl!r} needs the warp-lang package, which is not installed "
            f"(pip install -e .[warp]). Available here: {available_impls()}."
        )
    return impl


def put_model(mj_model: mujoco.MjModel, impl: str) -> mjx.Model:
    return mjx.put_model(mj_model, impl=check_impl(impl))


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
    return mjx.make_data(model, impl=impl)


def step(model: mjx.Model, data: mjx.Data) -> mjx.Data:
    return mjx.step(model, data)
