"""Physics implementations behind one interface (see `playground.physics.mjx`)."""

from playground.physics.mjx import IMPLS, available_impls, check_impl, make_data, put_model, step
from playground.physics.native import NativePhysics

__all__ = [
    "IMPLS",
    "NativePhysics",
    "available_impls",
    "check_impl",
    "make_data",
    "put_model",
    "step",
]
