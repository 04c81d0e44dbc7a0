"""Compatibility between brax 0.14 and jax 0.10 to 0.12, in one place.

brax 0.14.2 (the newest) calls `jax.device_put_replicated` in its PPO, SAC and APG trainers and in
`brax.training.pmap`; jax 0.10 removed that function from the public namespace (accessing it
raises AttributeError). We provide an equivalent built only on public APIs (`jax.device_put` with
a `NamedSharding`) and install it on the `jax` module when, and only when, jax lacks it. Call
`ensure_brax_compat()` before training with brax; `playground.training` and the envs' wrappers do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def device_put_replicated(x: Any, devices: Sequence[jax.Device]) -> Any:
    """Stacks one copy of every leaf of `x` per device, sharded along a new leading axis.

    Matches the removed `jax.device_put_replicated`: the result has shape `[len(devices), ...]`
    and shard `i` lives on `devices[i]`, which is what `jax.pmap` expects for its inputs.
    """
    devices = list(devices)
    if not devices:
        raise ValueError("device_put_replicated needs at least one device")
    mesh = jax.sharding.Mesh(np.array(devices), ("replica",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("replica"))

    def put(leaf: Any) -> jax.Array:
        leaf = jnp.asarray(leaf)
        stacked = jnp.broadcast_to(leaf[None], (len(devices), *leaf.shape))
        return jax.device_put(stacked, sharding)

    return jax.tree_util.tree_map(put, x)


def jax_has_device_put_replicated() -> bool:
    try:
        jax.device_put_replicated  # noqa: B018 - the access itself is the test
    except AttributeError:
        return False
    return True


def ensure_brax_compat() -> bool:
    """Installs `device_put_replicated` on `jax` if missing. Returns True if it installed it."""
    if jax_has_device_put_replicated():
        return False
    jax.device_put_replicated = device_put_replicated
    return True
