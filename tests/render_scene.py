"""A small primitive scene and MuJoCo's OpenGL renderer as the reference for renderer tests."""

from __future__ import annotations

import mujoco
import numpy as np

import playground  # noqa: F401  (MUJOCO_GL=egl before mujoco renders)
from playground.render.base import RenderSpec

# Fine tessellation, so GL's sphere/capsule/cylinder/ellipsoid meshes sit within a fraction of
# a millimetre of the exact surfaces the ray tracers intersect.
XML = """
<mujoco>
  <visual>
    <quality numslices="128" numstacks="64"/>
    <headlight ambient="0.2 0.2 0.2" diffuse="0.4 0.4 0.4" specular="0 0 0"/>
  </visual>
  <worldbody>
    <light name="sun" directional="true" pos="0 0 3" dir="0.3 0.2 -1" diffuse="0.5 0.5 0.5"
           specular="0 0 0"/>
    <camera name="front" pos="0 -1.6 1.1" xyaxes="1 0 0 0 0.6 0.8" fovy="50"/>
    <camera name="side" pos="1.5 0 0.5" xyaxes="0 1 0 -0.3 0 1" fovy="60"/>
    <geom name="floor" type="plane" size="2 2 0.1" rgba="0.5 0.6 0.7 1"/>
    <body name="objects" pos="0 0 0.3">
      <freejoint/>
      <geom name="box" type="box" size="0.1 0.15 0.1" pos="-0.35 0 0" euler="0 0 30"
            rgba="0.9 0.2 0.2 1"/>
      <geom name="sphere" type="sphere" size="0.12" pos="0 0.1 0" rgba="0.2 0.9 0.2 1"/>
      <geom name="capsule" type="capsule" size="0.05 0.1" pos="0.3 0 0" euler="60 0 0"
            rgba="0.2 0.2 0.9 1"/>
      <geom name="cylinder" type="cylinder" size="0.07 0.08" pos="0.1 -0.3 0"
            rgba="0.9 0.9 0.2 1"/>
      <geom name="ellipsoid" type="ellipsoid" size="0.12 0.06 0.09" pos="-0.15 -0.35 0.05"
            euler="0 30 0" rgba="0.9 0.2 0.9 1"/>
    </body>
  </worldbody>
</mujoco>
"""
# Spec order differs from model order, to check the camera mapping.
CAMERAS = ("side", "front")
WIDTH, HEIGHT = 64, 48
SPEC = RenderSpec(cameras=CAMERAS, width=WIDTH, height=HEIGHT)
# Free-body poses (position, axis-angle) per env; env 0 is the model's own.
POSES = [
    ((0.0, 0.0, 0.3), (0.0, 0.0, 1.0, 0.0)),
    ((0.1, -0.05, 0.35), (0.0, 0.0, 1.0, 0.7)),
    ((-0.1, 0.1, 0.4), (1.0, 0.0, 0.0, 0.35)),
    ((0.05, 0.0, 0.45), (0.3, 1.0, 0.2, -0.5)),
]


def scene_model() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(XML)


def scene_datas(model: mujoco.MjModel) -> list[mujoco.MjData]:
    out = []
    for pos, (*axis, angle) in POSES:
        d = mujoco.MjData(model)
        quat = np.zeros(4)
        mujoco.mju_axisAngle2Quat(quat, np.asarray(axis, float), angle)
        d.qpos[:7] = [*pos, *quat]
        mujoco.mj_forward(model, d)
        out.append(d)
    return out


BATCH = len(POSES)


def gl_reference(
    model: mujoco.MjModel, data: mujoco.MjData, camera: str, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MuJoCo's OpenGL rgb, geom ids (-1: none) and depth (metres) of one camera."""
    gl = mujoco.Renderer(model, height, width)
    try:
        gl.update_scene(data, camera=camera)
        rgb = gl.render().copy()
        gl.enable_segmentation_rendering()
        gl.update_scene(data, camera=camera)
        seg = gl.render()[..., 0].copy()
        gl.disable_segmentation_rendering()
        gl.enable_depth_rendering()
        gl.update_scene(data, camera=camera)
        depth = gl.render().copy()
    finally:
        gl.close()
    return rgb, seg, depth


def interior(seg: np.ndarray) -> np.ndarray:
    """Pixels whose four neighbours show the same geom (not on a silhouette)."""
    p = np.pad(seg, 1, constant_values=-2)
    return (
        (p[:-2, 1:-1] == seg) & (p[2:, 1:-1] == seg) & (p[1:-1, :-2] == seg) & (p[1:-1, 2:] == seg)
    )


def assert_matches_gl(
    model: mujoco.MjModel,
    datas: list[mujoco.MjData],
    seg: np.ndarray,
    depth: np.ndarray,
    rgb: np.ndarray,
) -> None:
    """A backend's geom ids, depth and rgb `[B, C, H, W(, 3)]` of SPEC against OpenGL's.

    The issue's bar: the same geom in >= 99% of pixels and depth within 1 mm.
    """
    for env, data in enumerate(datas):
        for c, camera in enumerate(SPEC.cameras):
            gl_rgb, gl_seg, gl_depth = gl_reference(model, data, camera, HEIGHT, WIDTH)
            ids, d = seg[env, c], depth[env, c]
            assert np.mean(ids == gl_seg) >= 0.99, (env, camera, np.mean(ids == gl_seg))
            np.testing.assert_array_equal(d == 0.0, ids < 0)  # 0 = no return, exactly there
            same = (ids == gl_seg) & (ids >= 0)
            err = np.abs(d - gl_depth)
            # GL draws curved geoms as facets: within a fraction of a millimetre inside an
            # object's image, millimetres off where a ray grazes a silhouette.
            assert err[same & interior(ids)].max() < 1e-3, (env, camera)
            assert err[same].max() < 5e-3, (env, camera)
            # The lights (not just ambient) shade the image: colours near GL's (no specular).
            diff = np.abs(np.asarray(rgb[env, c]).astype(int) - gl_rgb.astype(int))[same].mean()
            assert diff < 12.0, (env, camera, diff)
