"""Rollout videos: a policy drives the env in JAX.

The rollout is one jitted scan over a batch of episodes (the env's own reset and step, so noise,
delays and auto-reset do not interfere).
- `write_rollout_video`: only positions come back to the host, where native MuJoCo rebuilds each
  frame's kinematics and renders it from an overview camera with `mujoco.Renderer`.
- `write_camera_video`: a vision task's own camera observations, as the policy saw them
  (recorded during an evaluation, see `evaluate.make_evaluator`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from playground.envs.base import MjxEnv


def rollout_positions(
    env: MjxEnv,
    policy: Callable[[dict, jax.Array], tuple[jax.Array, dict]],
    rng: jax.Array,
    num_episodes: int,
    episode_length: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(qpos `[E, T+1, nq]`, mocap_pos `[E, T+1, nmocap, 3]`, success `[E]`) of `num_episodes`.

    An episode that terminates early is frozen at its last state for the remaining frames.
    """
    k_reset, k_act = jax.random.split(rng)

    def episode(key_reset, key_act):
        state = env.reset(key_reset)

        def body(carry, key):
            state, done = carry
            action, _ = policy(state.obs, key)
            nxt = env.step(state, action)
            state = jax.tree.map(lambda new, old: jnp.where(done, old, new), nxt, state)
            done = done | (nxt.done > 0)
            return (state, done), (state.data.qpos, state.data.mocap_pos)

        (last, _), (qpos, mocap) = jax.lax.scan(
            body, (state, jnp.array(False)), jax.random.split(key_act, episode_length)
        )
        qpos = jnp.concatenate([state.data.qpos[None], qpos])
        mocap = jnp.concatenate([state.data.mocap_pos[None], mocap])
        return qpos, mocap, last.metrics.get("success", jnp.zeros(()))

    run = jax.jit(jax.vmap(episode))
    qpos, mocap, success = run(
        jax.random.split(k_reset, num_episodes), jax.random.split(k_act, num_episodes)
    )
    return np.asarray(qpos), np.asarray(mocap), np.asarray(success)


def camera_grid(rgb: np.ndarray | None, depth: np.ndarray | None, scale: int) -> np.ndarray:
    """Frames `[T, H', W', 3]` with each camera's RGB (top row) and depth (bottom row, white =
    near, black = no return) side by side, enlarged `scale` times (nearest neighbour).

    `rgb`: uint8 `[T, cams, H, W, 3]`; `depth`: metres `[T, cams, H, W]`; either may be None.
    """
    rows = []
    if rgb is not None:
        rows.append(np.concatenate(list(np.moveaxis(rgb, 1, 0)), axis=2))
    if depth is not None:
        far = max(float(depth.max()), 1e-6)
        grey = np.where(depth > 0, 255 * (1.0 - 0.8 * depth / far), 0).astype(np.uint8)
        grey = np.repeat(grey[..., None], 3, axis=-1)
        rows.append(np.concatenate(list(np.moveaxis(grey, 1, 0)), axis=2))
    grid = np.concatenate(rows, axis=1)
    return grid.repeat(scale, axis=1).repeat(scale, axis=2)


def write_camera_video(
    path: str | Path,
    frames: dict[str, np.ndarray],
    fps: float,
    scale: int = 4,
) -> Path:
    """Writes an MP4 of a vision task's camera observations, episodes one after another.

    `frames`: `rgb` uint8 `[E, T, cams, H, W, 3]` and/or `depth` metres `[E, T, cams, H, W]`,
    for example what `evaluate.make_evaluator(..., record=...)` recorded.
    """
    import mediapy

    if not frames:
        raise ValueError("No camera observations (rgb or depth) to write.")
    episodes = len(next(iter(frames.values())))
    video = np.concatenate(
        [
            camera_grid(
                frames["rgb"][e] if "rgb" in frames else None,
                frames["depth"][e] if "depth" in frames else None,
                scale,
            )
            for e in range(episodes)
        ]
    )
    _use_bundled_ffmpeg(mediapy)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mediapy.write_video(str(path), video, fps=round(fps))
    return path


def render_frames(
    mj_model: mujoco.MjModel,
    qpos: np.ndarray,
    mocap_pos: np.ndarray,
    camera: str,
    height: int = 240,
    width: int = 320,
) -> np.ndarray:
    """RGB frames `[T, H, W, 3]` uint8 of one episode's positions seen from `camera`."""
    if mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
        names = [mj_model.camera(i).name for i in range(mj_model.ncam)]
        raise ValueError(f"Camera {camera!r} is not in the model; cameras: {names}")
    data = mujoco.MjData(mj_model)
    frames = []
    try:
        renderer = mujoco.Renderer(mj_model, height, width)
    except Exception as e:  # mujoco raises FatalError or a GL error without a usable context
        raise RuntimeError(
            f"mujoco.Renderer could not start ({e}). Without a display, set MUJOCO_GL=egl (or "
            "osmesa) before mujoco is first imported; `import playground` before `import mujoco` "
            "does this for you."
        ) from e
    with renderer:
        for q, m in zip(qpos, mocap_pos, strict=True):
            data.qpos[:] = q
            if mj_model.nmocap:
                data.mocap_pos[:] = m
            mujoco.mj_forward(mj_model, data)
            renderer.update_scene(data, camera)
            frames.append(renderer.render().copy())
    return np.stack(frames)


def write_rollout_video(
    env: MjxEnv,
    policy: Callable[[dict, jax.Array], tuple[jax.Array, dict]],
    path: str | Path,
    rng: jax.Array,
    num_episodes: int = 3,
    camera: str | None = None,
    episode_length: int | None = None,
) -> tuple[Path, np.ndarray]:
    """Writes an MP4 of `num_episodes` episodes one after another; returns (path, success)."""
    import mediapy

    _use_bundled_ffmpeg(mediapy)
    episode_length = episode_length or env.config.episode_length
    qpos, mocap, success = rollout_positions(env, policy, rng, num_episodes, episode_length)
    camera = camera or _default_camera(env.mj_model)
    frames = np.concatenate(
        [render_frames(env.mj_model, q, m, camera) for q, m in zip(qpos, mocap, strict=True)]
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mediapy.write_video(str(path), frames, fps=round(1.0 / env.ctrl_dt))
    return path, success


def _use_bundled_ffmpeg(mediapy) -> None:
    """mediapy needs an ffmpeg binary; without one on PATH, use imageio-ffmpeg's bundled one."""
    import shutil

    if shutil.which("ffmpeg") is None:
        import imageio_ffmpeg

        mediapy.set_ffmpeg(imageio_ffmpeg.get_ffmpeg_exe())


def _default_camera(mj_model: mujoco.MjModel) -> str:
    names = [mj_model.camera(i).name for i in range(mj_model.ncam)]
    for preferred in ("front_cam", "overhead_cam"):
        if preferred in names:
            return preferred
    if not names:
        raise ValueError("The model has no camera to render a video from.")
    return names[0]
