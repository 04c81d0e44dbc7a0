"""Camera observations for any task: the vision variants are the task plus this mixin.

    class FrankaGraspStereo(VisionEnv, grasp.FrankaGrasp): PROPRIO = ...

`reset` and `step` run the task's own, then render the configured cameras of the new physics
state (inside the same jitted, vmappable step) and add
- `rgb`: uint8 `[cams, H, W, 3]` (if `vision.rgb`),
- `depth`: float32 metres `[cams, H, W]`, through the depth-camera noise model (if `vision.depth`),
- `proprio`: the part of the task's noisy, delayed `state` the robot measures itself (joints,
  gripper, its own commands): what a pixel student gets besides the images.
`state` and `privileged_state` stay, so a teacher can label the same states. Visual domain
randomisation (`vision.visual_dr`) is drawn per env at reset and kept for the episode.
Images are rendered from the current state, not delayed: cameras are not what the delay model
of the joint sensors describes.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_dict

from playground import render
from playground.envs import visual_dr
from playground.envs.base import State, sanitize
from playground.errors import UsageError
from playground.render import depth_noise


def vision_config(
    cameras: tuple[str, ...],
    width: int,
    height: int,
    rgb: bool = True,
    depth: bool = False,
    object_geoms: tuple[str, ...] = (),
    table_geoms: tuple[str, ...] = (),
) -> config_dict.ConfigDict:
    """The `vision` sub-config of a vision task (see the module doc for what each part does)."""
    dr = visual_dr.default_config()
    dr.object_geoms, dr.table_geoms = tuple(object_geoms), tuple(table_geoms)
    return config_dict.create(
        cameras=tuple(cameras),
        width=width,
        height=height,
        rgb=rgb,
        depth=depth,
        backend="auto",  # jax | warp | madrona | auto (see playground.render)
        # warp and madrona render a fixed number of envs at once: set it to the batch size.
        batch_size=1,
        geom_groups=render.base.DEFAULT_GEOM_GROUPS,
        shadows=False,
        depth_noise=depth_noise.default_config() if depth else depth_noise.disabled_config(),
        visual_dr=dr,
    )


class VisionEnv:
    """Mixin adding rendered cameras to a task's observations; list it before the task class."""

    # Indices of the task's `state` vector that form `proprio`.
    PROPRIO: ClassVar[np.ndarray]
    # The state-based task whose teacher a student of this task distils, and the body whose
    # pose the student's auxiliary head predicts (playground/training/dagger.py).
    TEACHER_ENV: ClassVar[str]
    POSE_BODY: ClassVar[str]

    @staticmethod
    @abc.abstractmethod
    def default_config() -> config_dict.ConfigDict:
        """The task's config plus its `vision` sub-config (`vision_config`)."""

    def __init__(self, config: config_dict.ConfigDict | None = None, config_overrides=None):
        config = config or self.default_config()
        super().__init__(config=config, config_overrides=config_overrides)
        v = self.config.vision
        if not (v.rgb or v.depth):
            raise UsageError("vision: enable rgb, depth or both.")
        spec = render.RenderSpec(
            cameras=tuple(v.cameras),
            width=int(v.width),
            height=int(v.height),
            geom_groups=tuple(v.geom_groups),
            shadows=bool(v.shadows),
        )
        self._renderer = render.make_renderer(
            self.mj_model, spec, int(v.batch_size), backend=v.backend
        )

    @property
    def renderer(self) -> render.Renderer:
        return self._renderer

    def reset(self, rng: jax.Array) -> State:
        rng, k_look, k_noise = jax.random.split(rng, 3)
        state = super().reset(rng)
        info = dict(state.info)
        v = self.config.vision
        if v.visual_dr.enabled:
            n_cams = len(v.cameras)
            info["visual"] = visual_dr.sample(k_look, self.mj_model, n_cams, v.visual_dr)
        return state.replace(obs=self._observe_pixels(state, info, k_noise), info=info)

    def step(self, state: State, action: jax.Array) -> State:
        state = super().step(state, action)
        # The task advanced its key in `step`; folding it gives this step's noise without
        # touching the task's own random stream.
        key = jax.random.fold_in(state.info["rng"], 0x5EE)
        return state.replace(obs=self._observe_pixels(state, state.info, key))

    def robot_observation(self, data, memory: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """The task's robot-side observation plus `proprio`; camera images come from the robot
        (playground/deploy/obs_builder.py stacks them as `rgb` / `depth`)."""
        obs = super().robot_observation(data, memory)
        return {**obs, "proprio": obs["state"][jnp.asarray(self.PROPRIO)]}

    def _observe_pixels(self, state: State, info: dict[str, Any], rng: jax.Array):
        v = self.config.vision
        frame = self._renderer.frame(self.mjx_model, state.data, info.get("visual"))
        images = self._renderer.render(frame)
        obs = dict(state.obs)
        obs["proprio"] = state.obs["state"][jnp.asarray(self.PROPRIO)]
        if v.rgb:
            obs["rgb"] = images.rgb
        if v.depth:
            (depth,) = sanitize(depth_noise.apply(images.depth, rng, v.depth_noise))
            obs["depth"] = depth
        return obs
