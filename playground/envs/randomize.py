"""Physics domain randomisation shared by all tasks.

A task's randomiser draws new values for a few model fields per env; `batch_model` turns that into
the batched model plus the `in_axes` tree that the training wrapper vmaps over. Each sampler below
returns the updated full field arrays for one env, so tasks compose them into a dict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

FieldSampler = Callable[[mjx.Model, jax.Array], dict[str, jax.Array]]


def batch_model(
    model: mjx.Model, rng: jax.Array, sample: FieldSampler
) -> tuple[mjx.Model, mjx.Model]:
    """Applies `sample` once per key in `rng` (`[B, 2]`); returns (batched model, in_axes)."""
    values = jax.vmap(lambda key: sample(model, key))(rng)
    batched = model.tree_replace(values)
    in_axes = jax.tree_util.tree_map(lambda _: None, model)
    in_axes = in_axes.tree_replace({name: 0 for name in values})
    return batched, in_axes


def _factors(key: jax.Array, n: int, scale_range: Sequence[float]) -> jax.Array:
    lo, hi = scale_range
    return jax.random.uniform(key, (n,), minval=lo, maxval=hi)


def scale_friction(model: mjx.Model, key: jax.Array, geom_ids, scale_range) -> dict[str, jax.Array]:
    """Sliding friction of each geom in `geom_ids` times a factor drawn per geom."""
    ids = jnp.asarray(geom_ids)
    f = _factors(key, len(geom_ids), scale_range)
    return {"geom_friction": model.geom_friction.at[ids, 0].multiply(f)}


def scale_position_gains(
    model: mjx.Model, key: jax.Array, actuator_ids, scale_range
) -> dict[str, jax.Array]:
    """kp of position actuators: gain kp and bias -kp scale together so the servo target holds."""
    ids = jnp.asarray(actuator_ids)
    f = _factors(key, len(actuator_ids), scale_range)
    return {
        "actuator_gainprm": model.actuator_gainprm.at[ids, 0].multiply(f),
        "actuator_biasprm": model.actuator_biasprm.at[ids, 1].multiply(f),
    }


def scale_damping(model: mjx.Model, key: jax.Array, dof_ids, scale_range) -> dict[str, jax.Array]:
    ids = jnp.asarray(dof_ids)
    f = _factors(key, len(dof_ids), scale_range)
    return {"dof_damping": model.dof_damping.at[ids].multiply(f)}


def _is_free_body(model: mjx.Model, body_id: int) -> bool:
    jnt = int(np.asarray(model.body_jntadr)[body_id])
    return (
        int(np.asarray(model.body_parentid)[body_id]) == 0
        and jnt >= 0
        and int(np.asarray(model.jnt_type)[jnt]) == mujoco.mjtJoint.mjJNT_FREE
    )


def _free_body_invweight(mass: jax.Array, inertia: jax.Array) -> jax.Array:
    """`body_invweight0` of a free body: [1 / mass, mean of 1 / principal moments].

    Contact softness is scaled by the bodies' inverse weights, which the compiler derives from
    the masses (mj_setConst) and nothing recomputes at run time: a block made twice as heavy
    but left with its compiled weight gets contacts scaled for another body (it sinks twice as
    deep into the table), and squeezed between the gripper pads it can slip out of the grasp.
    For a free body both values are exact at any pose (the centre-of-mass translation and the
    trace of the inverse inertia).
    """
    return jnp.stack([1.0 / mass, jnp.mean(1.0 / inertia)])


def scale_mass(model: mjx.Model, key: jax.Array, body_ids, scale_range) -> dict[str, jax.Array]:
    """Body mass times a factor; the inertia scales with it (same shape, denser material).

    Free bodies get matching contact weights (`body_invweight0`). A link in a chain keeps its
    compiled weight: that one depends on the whole chain's pose and masses at qpos0.
    """
    ids = jnp.asarray(body_ids)
    f = _factors(key, len(body_ids), scale_range)
    free = jnp.asarray([_is_free_body(model, int(b)) for b in body_ids])
    weight_factor = jnp.where(free, 1.0 / f, 1.0)
    return {
        "body_mass": model.body_mass.at[ids].multiply(f),
        "body_inertia": model.body_inertia.at[ids].multiply(f[:, None]),
        "body_invweight0": model.body_invweight0.at[ids].multiply(weight_factor[:, None]),
    }


def set_box(
    model: mjx.Model, geom_id: int, body_id: int, half_size: jax.Array, mass: jax.Array
) -> dict[str, jax.Array]:
    """A solid free box body of the given half-sizes `[3]` and mass: size, bounds, inertia and
    contact weight agree."""
    if not _is_free_body(model, body_id):
        raise ValueError(
            f"set_box needs a free body (a freejoint child of the world), not {body_id}"
        )
    hx, hy, hz = half_size[0], half_size[1], half_size[2]
    inertia = mass / 3.0 * jnp.stack([hy**2 + hz**2, hx**2 + hz**2, hx**2 + hy**2])
    aabb = model.geom_aabb.at[geom_id].set(jnp.concatenate([jnp.zeros(3), half_size]))
    return {
        "geom_size": model.geom_size.at[geom_id].set(half_size),
        "geom_rbound": model.geom_rbound.at[geom_id].set(jnp.linalg.norm(half_size)),
        "geom_aabb": aabb,
        "body_mass": model.body_mass.at[body_id].set(mass),
        "body_inertia": model.body_inertia.at[body_id].set(inertia),
        "body_invweight0": model.body_invweight0.at[body_id].set(
            _free_body_invweight(mass, inertia)
        ),
    }


def merge(*updates: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Combines sampler outputs; a field updated twice must be chained, not merged."""
    out: dict[str, jax.Array] = {}
    for update in updates:
        clash = set(out) & set(update)
        if clash:
            raise ValueError(f"fields updated by two samplers: {sorted(clash)}; chain them instead")
        out.update(update)
    return out


def small_rotation(rng: jax.Array, max_angle_rad: float) -> jax.Array:
    """A rotation matrix about a random axis by an angle uniform in [0, max_angle_rad]."""
    k_axis, k_angle = jax.random.split(rng)
    axis = jax.random.normal(k_axis, (3,))
    axis = axis / (jnp.linalg.norm(axis) + 1e-9)
    angle = jax.random.uniform(k_angle, minval=0.0, maxval=max_angle_rad)
    k = jnp.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return jnp.eye(3) + jnp.sin(angle) * k + (1 - jnp.cos(angle)) * k @ k
