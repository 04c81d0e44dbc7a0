"""Visual domain randomisation: how the scene looks to the cameras, drawn per env at reset.

Real cameras see other colours, lighting and mounting errors than the simulator. Per env this
draws
- object colours (each RGB channel of each listed object geom shifted by up to
  `object_color_shift`) and a table colour (grey level in `table_gray`, with a small tint),
- light directions (each directional light tilted by up to `light_tilt_deg`),
- a brightness factor on every light and the ambient term,
- camera pose jitter in each camera's own frame (`camera_pos_m` per axis, up to `camera_rot_deg`).
Our lights are directional (as in the task scenes), so their position does not change the
image and is not drawn. The result is the `visual` dict `render.frame_from_data` applies.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from ml_collections import config_dict

from playground.envs.randomize import small_rotation
from playground.errors import UsageError


def default_config() -> config_dict.ConfigDict:
    return config_dict.create(
        enabled=False,
        object_geoms=(),  # geom names whose colour shifts
        table_geoms=(),  # geom names drawn in a random grey
        object_color_shift=0.25,
        table_gray=(0.15, 0.6),
        table_tint=0.04,
        light_tilt_deg=20.0,
        brightness=(0.6, 1.4),
        camera_pos_m=(0.005, 0.005, 0.005),
        camera_rot_deg=3.0,
    )


def geom_ids(mj_model: mujoco.MjModel, names) -> np.ndarray:
    ids = []
    for name in names:
        i = mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_GEOM, name)
        if i < 0:
            raise UsageError(f"visual_dr: no geom named {name!r} in the model.")
        ids.append(i)
    return np.asarray(ids, np.int32)


def identity(mj_model: mujoco.MjModel, num_cameras: int) -> dict[str, jax.Array]:
    """The model's own look: what `sample` returns with every range at zero."""
    return {
        "geom_rgba": jnp.asarray(mj_model.geom_rgba, jnp.float32),
        "light_dir": jnp.asarray(mj_model.light_dir, jnp.float32),
        "brightness": jnp.ones((), jnp.float32),
        "cam_pos_offset": jnp.zeros((num_cameras, 3), jnp.float32),
        "cam_rot_offset": jnp.tile(jnp.eye(3, dtype=jnp.float32), (num_cameras, 1, 1)),
    }


def sample(
    rng: jax.Array, mj_model: mujoco.MjModel, num_cameras: int, config: config_dict.ConfigDict
) -> dict[str, jax.Array]:
    """One env's randomised look (see the module doc). Jit-able; `config` is static."""
    out = identity(mj_model, num_cameras)
    k_obj, k_table, k_tint, k_light, k_bright, k_pos, k_rot = jax.random.split(rng, 7)
    rgba = out["geom_rgba"]
    obj = geom_ids(mj_model, config.object_geoms)
    if len(obj):
        shift = jax.random.uniform(
            k_obj,
            (len(obj), 3),
            minval=-config.object_color_shift,
            maxval=config.object_color_shift,
        )
        rgba = rgba.at[obj, :3].set(jnp.clip(rgba[obj, :3] + shift, 0.0, 1.0))
    table = geom_ids(mj_model, config.table_geoms)
    if len(table):
        lo, hi = config.table_gray
        gray = jax.random.uniform(k_table, (), minval=lo, maxval=hi)
        tint = jax.random.uniform(k_tint, (3,), minval=-config.table_tint, maxval=config.table_tint)
        rgba = rgba.at[table, :3].set(jnp.clip(gray + tint, 0.0, 1.0))
    n_light = mj_model.nlight
    tilt = np.deg2rad(config.light_tilt_deg)
    turns = jax.vmap(lambda k: small_rotation(k, tilt))(jax.random.split(k_light, max(n_light, 1)))
    light_dir = jnp.einsum("lij,lj->li", turns[:n_light], out["light_dir"])
    lo, hi = config.brightness
    cam_rot = jax.vmap(lambda k: small_rotation(k, np.deg2rad(config.camera_rot_deg)))(
        jax.random.split(k_rot, num_cameras)
    )
    span = jnp.asarray(config.camera_pos_m, jnp.float32)
    return {
        "geom_rgba": rgba,
        "light_dir": light_dir,
        "brightness": jax.random.uniform(k_bright, (), minval=lo, maxval=hi),
        "cam_pos_offset": jax.random.uniform(k_pos, (num_cameras, 3), minval=-1, maxval=1) * span,
        "cam_rot_offset": cam_rot.astype(jnp.float32),
    }
