"""Physics implementations behind one interface (see `playground.physics.mjx`)."""

from playground.physics.mjx import IMPLS, available_impls, check_impl, make_data, put_model, step

__all__ = ["IMPLS", "available_impls", "check_impl", "make_data", "put_model", "step"]
