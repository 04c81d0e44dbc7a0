"""Saves what each vision task's cameras see, as PNGs under docs/cameras/ (shown in the README).

    python scripts/camera_views.py                 # every vision task, seed 0
    python scripts/camera_views.py --tasks FrankaGraspStereo --seed 3 --visual-dr

One row per camera: RGB, then depth (if the task has it; no return in black, near is bright),
as the policy receives them after a reset and a few zero-action steps, scaled up 4x for viewing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import playground  # noqa: F401  (XLA flags before jax starts)
from playground import registry

ROOT = Path(__file__).resolve().parents[1]


def depth_to_rgb(depth: np.ndarray, max_m: float) -> np.ndarray:
    shade = np.where(depth > 0, 1.0 - np.clip(depth / max_m, 0.0, 1.0) * 0.85, 0.0)
    return np.repeat((shade * 255).astype(np.uint8)[..., None], 3, axis=-1)


def camera_sheet(name: str, seed: int, visual_dr: bool, steps: int = 3) -> np.ndarray:
    env = registry.load(name, config_overrides={"vision.visual_dr.enabled": visual_dr})
    state = jax.jit(env.reset)(jax.random.PRNGKey(seed))
    step = jax.jit(env.step)
    for _ in range(steps):
        state = step(state, jnp.zeros(env.action_size))
    v = env.config.vision
    rows = []
    for c in range(len(v.cameras)):
        tiles = []
        if v.rgb:
            tiles.append(np.asarray(state.obs["rgb"][c]))
        if v.depth:
            max_m = float(v.depth_noise.max_range.max_m)
            tiles.append(depth_to_rgb(np.asarray(state.obs["depth"][c]), max_m))
        rows.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(rows, axis=0)
    return sheet.repeat(4, axis=0).repeat(4, axis=1)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", nargs="+", default=list(registry.VISION_ENVS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--visual-dr", action="store_true", help="draw a randomised look")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "cameras")
    args = p.parse_args()
    import mediapy

    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.tasks:
        path = args.out / f"{name}.png"
        mediapy.write_image(str(path), camera_sheet(name, args.seed, args.visual_dr))
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
