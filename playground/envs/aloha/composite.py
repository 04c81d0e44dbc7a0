"""The composite Aloha teacher: the pick policy on each arm until both objects are lifted, then
the insertion policy on both arms.

    teacher = composite.load("params/aloha_s2r_pick_native/policy.safetensors",
                             "params/aloha_s2r_peg_insertion_native/policy.safetensors")
    action = teacher(obs, rng)    # obs of AlohaS2RPegInsertion with phase1="agent" or "policy"

The pick policy was trained on one (left) arm; the right arm runs the same policy on its own
observation, expressed in its own base frame, where it is the left arm's mirror (`arm.py`). Each
arm's pick observation is `obs["pick_state"][i]` (`[2, 47]`), the insertion policy reads
`obs["state"]`, and the phase flag is the last entry of `obs["state"]` (1 once both objects were
above `switch_height_m`). `combine` is the one place where the two phases meet: the env's
`phase1="policy"` mode (the pick policy drives until the switch, then the agent) and the ONNX
export of the composite teacher (`playground/deploy/export.py`) call it too.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from playground.files import policy_file

PICK_ENV = "AlohaS2RPick"
INSERT_ENV = "AlohaS2RPegInsertion"
PICK_ACTION = 7  # per arm: 6 joints + gripper

PolicyFn = Callable[[Mapping[str, jax.Array], jax.Array], jax.Array]


def combine(
    switched: jax.Array, pick_left: jax.Array, pick_right: jax.Array, after: jax.Array
) -> jax.Array:
    """`[..., 14]`: the two arms' pick actions before the switch, `after` from it on."""
    before = jnp.concatenate([pick_left, pick_right], axis=-1)
    return jnp.where(jnp.asarray(switched)[..., None] > 0.5, after, before)


def pick_actions(pick: PolicyFn, pick_state: jax.Array, rng: jax.Array) -> tuple[jax.Array, ...]:
    """(left, right) pick actions `[7]` from the per-arm observations `[2, 47]`."""
    k = jax.random.split(rng, 2)
    return tuple(pick({"state": pick_state[i]}, k[i]) for i in range(2))


@dataclasses.dataclass(frozen=True)
class CompositeTeacher:
    """`teacher(obs, rng) -> action [14]` for one observation (jit- and vmap-able)."""

    pick_payload: Mapping[str, Any]
    insert_payload: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pick", policy_file.make_policy_fn(self.pick_payload))
        object.__setattr__(self, "_insert", policy_file.make_policy_fn(self.insert_payload))

    def __call__(self, obs: Mapping[str, jax.Array], rng: jax.Array) -> jax.Array:
        k_pick, k_insert = jax.random.split(rng)
        left, right = pick_actions(self._pick, obs["pick_state"], k_pick)
        after = self._insert(obs, k_insert)
        return combine(obs["state"][-1], left, right, after)


def read(
    pick_path: str | os.PathLike, insert_path: str | os.PathLike
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two policy files' payloads; a file for the wrong task or a missing one is a
    PolicyFileError / FileNotFoundError that names the file and the task it should hold."""
    pick = policy_file.read_policy(pick_path, env_name=PICK_ENV)
    insert = policy_file.read_policy(insert_path, env_name=INSERT_ENV)
    if int(pick["network"]["action_size"]) != PICK_ACTION:
        raise policy_file.PolicyFileError(
            f"{pick_path}: a pick policy acts on one arm ({PICK_ACTION} actions), this one has "
            f"{pick['network']['action_size']}."
        )
    return pick, insert


def load(pick_path: str | os.PathLike, insert_path: str | os.PathLike) -> CompositeTeacher:
    return CompositeTeacher(*read(pick_path, insert_path))
