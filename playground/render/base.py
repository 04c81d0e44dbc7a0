"""The renderer interface every backend implements, and the scene data they all read.

A renderer is built once for a model, a list of cameras, a resolution and a batch size. It is
called on a `Frame` (the poses and looks of one env, or a batch of them) and returns

- `rgb`:   uint8 `[..., cams, H, W, 3]`, row 0 at the top of the image;
- `depth`: float32 `[..., cams, H, W]`, linear z-depth in metres along the camera axis (what depth
  cameras report), 0 where no geometry is hit (no return).

The same layout and units come from every backend. `render(frame)` is written for one env and is
vmappable; under `vmap` (the training wrapper's batch) each backend receives the whole batch at
once through `jax.custom_batching.custom_vmap`, which is what batch renderers (MuJoCo-Warp's
`nworld`, Madrona's `num_worlds`) need and lets the JAX ray caster cull per batch.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from flax import struct
from mujoco import mjx

DEFAULT_GEOM_GROUPS: tuple[int, ...] = (0, 1, 2)
# What the ray caster can intersect; anything else visible makes the JAX backend refuse the scene.
PRIMITIVE_TYPES: tuple[int, ...] = (
    int(mujoco.mjtGeom.mjGEOM_PLANE),
    int(mujoco.mjtGeom.mjGEOM_SPHERE),
    int(mujoco.mjtGeom.mjGEOM_CAPSULE),
    int(mujoco.mjtGeom.mjGEOM_ELLIPSOID),
    int(mujoco.mjtGeom.mjGEOM_CYLINDER),
    int(mujoco.mjtGeom.mjGEOM_BOX),
)


@dataclasses.dataclass(frozen=True)
class RenderSpec:
    """What to render. Hashable, so it can key jit caches."""

    cameras: tuple[str, ...]
    width: int = 64
    height: int = 64
    geom_groups: tuple[int, ...] = DEFAULT_GEOM_GROUPS
    shadows: bool = False
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self):
        if not self.cameras:
            raise ValueError("RenderSpec needs at least one camera name.")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"Image size must be positive; got {self.width}x{self.height}.")
        object.__setattr__(self, "cameras", tuple(self.cameras))
        object.__setattr__(self, "geom_groups", tuple(int(g) for g in self.geom_groups))


@dataclasses.dataclass(frozen=True)
class Scene:
    """Static facts of a model the renderers need: camera ids and optics, visible geoms, lights."""

    spec: RenderSpec
    cam_ids: np.ndarray  # [C]
    cam_fovy_deg: np.ndarray  # [C]
    visible: np.ndarray  # [G] bool: in an enabled group and not fully transparent
    geom_type: np.ndarray  # [G]
    ambient: np.ndarray  # [3]: headlight ambient plus every light's ambient
    headlight_diffuse: np.ndarray  # [3]: a directional light along each camera's view axis
    light_active: np.ndarray  # [L] bool: directional lights (the ones this interface shades with)

    @classmethod
    def from_model(cls, mj_model: mujoco.MjModel, spec: RenderSpec) -> Scene:
        ids = []
        for name in spec.cameras:
            cid = mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_CAMERA, name)
            if cid < 0:
                names = [mj_model.cam(i).name for i in range(mj_model.ncam)]
                raise ValueError(f"No camera named {name!r} in the model; it has {names}.")
            ids.append(cid)
        visible = np.isin(mj_model.geom_group, spec.geom_groups) & (mj_model.geom_rgba[:, 3] > 0)
        vis = mj_model.vis
        ambient = np.asarray(vis.headlight.ambient, np.float32).copy()
        if vis.headlight.active:
            head = np.asarray(vis.headlight.diffuse, np.float32)
        else:
            head = np.zeros(3, np.float32)
        # The interface shades with directional lights only (the task scenes use no others).
        directional = mj_model.light_type == int(mujoco.mjtLightType.mjLIGHT_DIRECTIONAL)
        light_active = np.asarray(mj_model.light_active, bool) & directional
        ambient = ambient + mj_model.light_ambient[light_active].sum(axis=0)
        return cls(
            spec=spec,
            cam_ids=np.asarray(ids, np.int32),
            cam_fovy_deg=np.asarray(mj_model.cam_fovy[ids], np.float32),
            visible=visible,
            geom_type=np.asarray(mj_model.geom_type, np.int32),
            ambient=ambient.astype(np.float32),
            headlight_diffuse=head,
            light_active=light_active,
        )

    @property
    def num_cameras(self) -> int:
        return len(self.cam_ids)


@struct.dataclass
class Frame:
    """What changes between renders, for one env (or, with a leading axis, a batch)."""

    geom_xpos: jax.Array  # [G, 3]
    geom_xmat: jax.Array  # [G, 3, 3]
    cam_xpos: jax.Array  # [C, 3] the spec's cameras, in its order
    cam_xmat: jax.Array  # [C, 3, 3] columns: camera x (right), y (up), z (backwards) in world
    geom_rgba: jax.Array  # [G, 4]; alpha 0 hides a geom
    geom_size: jax.Array  # [G, 3]
    light_dir: jax.Array  # [L, 3] direction the light travels, world frame
    light_diffuse: jax.Array  # [L, 3]
    brightness: jax.Array  # [] multiplies every light and the ambient term


class Images(NamedTuple):
    rgb: jax.Array  # uint8 [..., C, H, W, 3]
    depth: jax.Array  # float32 [..., C, H, W], metres, 0 = no return


def frame_from_data(
    scene: Scene,
    model: mjx.Model | mujoco.MjModel,
    data: mjx.Data,
    visual: dict[str, jax.Array] | None = None,
) -> Frame:
    """The frame of one env's physics state, with its visual randomisation applied if given.

    `visual` (from `visual_dr.sample`) holds per-env colours, light directions, brightness and
    camera pose offsets; without it the model's own values are used.
    """
    ids = jnp.asarray(scene.cam_ids)
    cam_xpos = data.cam_xpos[ids]
    cam_xmat = data.cam_xmat[ids].reshape(-1, 3, 3)
    geom_rgba = jnp.asarray(model.geom_rgba, jnp.float32)
    light_dir = jnp.asarray(model.light_dir, jnp.float32)
    brightness = jnp.float32(1.0)
    if visual is not None:
        # Offsets live in each camera's own frame, as a mount's tolerance would.
        cam_xpos = cam_xpos + jnp.einsum("cij,cj->ci", cam_xmat, visual["cam_pos_offset"])
        cam_xmat = jnp.einsum("cij,cjk->cik", cam_xmat, visual["cam_rot_offset"])
        geom_rgba = visual["geom_rgba"]
        light_dir = visual["light_dir"]
        brightness = visual["brightness"]
    return Frame(
        geom_xpos=data.geom_xpos,
        geom_xmat=data.geom_xmat.reshape(-1, 3, 3),
        cam_xpos=cam_xpos,
        cam_xmat=cam_xmat,
        geom_rgba=geom_rgba,
        geom_size=jnp.asarray(model.geom_size, jnp.float32),
        light_dir=light_dir,
        light_diffuse=jnp.asarray(model.light_diffuse, jnp.float32),
        brightness=brightness,
    )


class Renderer(abc.ABC):
    """One backend, built for one model, spec and batch size.

    A backend implements `_render_batch` (frames with a leading batch axis). `render` is the
    per-env entry point; its `custom_vmap` rule hands a vmapped call the whole batch.
    """

    name: str = ""
    # Backends whose batch is fixed when built (MuJoCo-Warp's nworld, Madrona's num_worlds) say
    # so here; a vmap over another size is refused with this reason.
    fixed_batch_reason: str | None = None

    def __init__(self, mj_model: mujoco.MjModel, spec: RenderSpec, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
        self.spec = spec
        self.batch_size = int(batch_size)
        self.scene = Scene.from_model(mj_model, spec)
        self._render_one = jax.custom_batching.custom_vmap(self._render_unbatched)
        self._render_one.def_vmap(self._render_vmapped)

    @abc.abstractmethod
    def _render_batch(self, frames: Frame) -> Images:
        """Images of a batch of frames (leading axis on every field)."""

    def render(self, frame: Frame) -> Images:
        """Images of one env's frame; vmap it over a batch (see the module doc)."""
        return self._render_one(frame)

    def render_batch(self, frames: Frame) -> Images:
        """Images of a batch of frames (leading axis on every field)."""
        return jax.vmap(self.render)(frames)

    def frame(
        self,
        model: mjx.Model | mujoco.MjModel,
        data: mjx.Data,
        visual: dict[str, jax.Array] | None = None,
    ) -> Frame:
        return frame_from_data(self.scene, model, data, visual)

    def _render_unbatched(self, frame: Frame) -> Images:
        """One env, rendered as a batch of one."""
        out = self._render_batch(jax.tree_util.tree_map(lambda x: x[None], frame))
        return jax.tree_util.tree_map(lambda x: x[0], out)

    def _render_vmapped(
        self, axis_size: int, in_batched: list[Frame], frame: Frame
    ) -> tuple[Images, Images]:
        if self.fixed_batch_reason and axis_size != self.batch_size:
            raise ValueError(
                f"{type(self).__name__} was built for batch_size={self.batch_size} "
                f"({self.fixed_batch_reason}) but was vmapped over {axis_size} envs."
            )
        # Fields shared by the batch (e.g. the model's colours) arrive unbatched.
        frames = jax.tree_util.tree_map(
            lambda x, b: x if b else jnp.broadcast_to(x, (axis_size, *jnp.shape(x))),
            frame,
            in_batched[0],
        )
        out = self._render_batch(frames)
        return out, jax.tree_util.tree_map(lambda _: True, out)


def to_uint8(rgb: jax.Array) -> jax.Array:
    """[0, 1] floats to uint8 with rounding, as an 8-bit framebuffer stores them."""
    return jnp.round(jnp.clip(rgb, 0.0, 1.0) * 255.0).astype(jnp.uint8)
