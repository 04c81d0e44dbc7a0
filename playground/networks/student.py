"""The pixel student: per-camera image encoders, a proprioception fusion MLP and two heads.

    student = Student(action_size=3, use_rgb=True, use_depth=False)
    action, pose = student.apply(params, obs)  # obs: a vision task's rgb / depth / proprio

Kind "pixels" (the default):
- RGB: one NatureCNN shared by every camera (the same weights see each view), initialised from
  the CIFAR-pretrained encoder (`init_from_pretrained`: the convolutions at any image size, the
  dense layer after them where the image is CIFAR's 32x32); frozen or fine-tuned by the optimiser.
- Depth: its own NatureCNN, one input channel, shared by the cameras, trained from scratch (the
  CIFAR encoder has never seen depth). Depth is divided by `depth_scale_m` to sit near [0, 1].
Kind "latent": the CIFAR convolutions frozen, depth pooled to a coarse grid; only the layers
after them learn (see `Student`).

Either way the camera features and the layer-normalised proprioception go through a fusion MLP;
a tanh head gives the action in [-1, 1] and an auxiliary head the object pose (position, unit
quaternion) that the privileged state supervises, so the encoder learns where the object is.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from playground.networks.nature_cnn import NatureCNN

POSE_SIZE = 7  # position 3 + quaternion 4 (w, x, y, z)


KINDS = ("pixels", "latent")


class Student(nn.Module):
    """The pixel student; `kind` says which part of it learns.

    - "pixels": every layer learns from the images (the RGB encoder fine-tuned from CIFAR, a
      depth NatureCNN from scratch, `features` per camera).
    - "latent": the CIFAR convolutions are frozen and their flattened feature maps, with the
      depth images average-pooled to a `depth_grid` x `depth_grid` map per camera, are the
      latents; a Dense layer of `features` per modality and the fusion MLP learn on them. The
      latents of a sample never change, so DAgger computes them once when it collects the
      sample and its updates never touch a convolution (playground/training/dagger.py).

    `encode(obs)` gives what the updates learn from (the images themselves for "pixels"),
    `head(latents)` the action and pose; `__call__` is both, from raw observations.
    """

    action_size: int
    use_rgb: bool = True
    use_depth: bool = False
    depth_scale_m: float = 0.4
    features: int = 512
    hidden: Sequence[int] = (256, 256)
    kind: str = "pixels"
    depth_grid: int = 8

    def setup(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"student kind {self.kind!r} is not one of {KINDS}")
        latent = self.kind == "latent"
        if self.use_rgb:
            self.rgb_encoder = NatureCNN(self.features, dense=not latent)
            if latent:
                self.rgb_latent = nn.Dense(self.features)
        if self.use_depth:
            if latent:
                self.depth_latent = nn.Dense(self.features)
            else:
                self.depth_encoder = NatureCNN(self.features)
        self.proprio_norm = nn.LayerNorm()
        self.fusion = [nn.Dense(width) for width in self.hidden]
        self.action_head = nn.Dense(self.action_size)
        self.pose_head = nn.Dense(POSE_SIZE)

    def __call__(self, obs: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        return self.head(self.encode(obs))

    def encode(self, obs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """What the trained layers read: the observations ("pixels") or the frozen latents."""
        if self.kind == "pixels":
            return {k: obs[k] for k in ("rgb", "depth", "proprio") if k in obs}
        out = {"proprio": obs["proprio"]}
        if self.use_rgb:
            rgb = obs["rgb"].astype(jnp.float32) / 255.0  # [..., cams, H, W, 3]
            feats = self.rgb_encoder(rgb)  # [..., cams, flat]
            # No stop_gradient needed: DAgger differentiates `head` only, and the optimiser
            # keeps the encoder frozen (dagger.make_optimizer).
            out["rgb_latent"] = feats.reshape(*feats.shape[:-2], -1)
        if self.use_depth:
            out["depth_latent"] = pool_depth(obs["depth"] / self.depth_scale_m, self.depth_grid)
        return out

    def head(self, x: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        parts = []
        if self.kind == "pixels":
            if self.use_rgb:
                rgb = x["rgb"].astype(jnp.float32) / 255.0  # [..., cams, H, W, 3]
                parts.append(_per_camera(self.rgb_encoder, rgb))
            if self.use_depth:
                depth = x["depth"][..., None] / self.depth_scale_m  # [..., cams, H, W, 1]
                parts.append(_per_camera(self.depth_encoder, depth))
        else:
            if self.use_rgb:
                parts.append(nn.swish(self.rgb_latent(x["rgb_latent"])))
            if self.use_depth:
                parts.append(nn.swish(self.depth_latent(x["depth_latent"])))
        parts.append(self.proprio_norm(x["proprio"]))
        h = jnp.concatenate(parts, axis=-1)
        for layer in self.fusion:
            h = nn.swish(layer(h))
        action = jnp.tanh(self.action_head(h))
        pose = self.pose_head(h)
        quat = pose[..., 3:] / (jnp.linalg.norm(pose[..., 3:], axis=-1, keepdims=True) + 1e-6)
        return action, jnp.concatenate([pose[..., :3], quat], axis=-1)


def _per_camera(encoder: nn.Module, images: jax.Array) -> jax.Array:
    """One encoder over each camera's image; the cameras' features side by side."""
    feats = encoder(images)  # NatureCNN keeps leading axes: [..., cams, features]
    return feats.reshape(*feats.shape[:-2], -1)


def pool_depth(depth: jax.Array, grid: int) -> jax.Array:
    """Depth `[..., cams, H, W]` averaged over blocks to `[..., cams * grid * grid]`: the mean
    keeps a pixel's dropout or line noise from deciding a cell (a nearest-pixel resize would)."""
    *lead, cams, h, w = depth.shape
    if h % grid or w % grid:
        raise ValueError(f"depth images of {h}x{w} do not split into a {grid}x{grid} grid")
    blocks = depth.reshape(*lead, cams, grid, h // grid, grid, w // grid)
    return blocks.mean(axis=(-3, -1)).reshape(*lead, cams * grid * grid)


def init_from_pretrained(params: dict, encoder_params: dict) -> tuple[dict, tuple[str, ...]]:
    """(`params` with the RGB encoder taken from the pretrained NatureCNN, layers kept fresh).

    The convolutions transfer at any image size. The dense layer after them reads the flattened
    feature map, whose size grows with the image (1024 inputs at CIFAR's 32x32, 2304 at 48x48):
    it is copied when the sizes match and otherwise keeps its fresh initialisation, and its name
    is returned. Any other mismatch is an error.
    """
    inner = dict(params["params"])
    if "rgb_encoder" not in inner:
        raise ValueError("This student has no RGB encoder to initialise (use_rgb=False).")
    want = jax.tree_util.tree_map(jnp.shape, inner["rgb_encoder"])
    got = jax.tree_util.tree_map(jnp.shape, encoder_params)
    if not any(name.startswith("Dense") for name in want):
        # A latent student's encoder is the convolutions alone; the CIFAR head is not needed.
        got = {k: v for k, v in got.items() if not k.startswith("Dense")}
    if set(want) != set(got):
        raise ValueError(f"Pretrained encoder layers {sorted(got)} do not match the student's.")
    encoder, fresh = {}, []
    for name in want:
        if want[name] == got[name]:
            encoder[name] = encoder_params[name]
        elif name.startswith("Dense") and want[name]["bias"] == got[name]["bias"]:
            encoder[name] = inner["rgb_encoder"][name]
            fresh.append(name)
        else:
            raise ValueError(
                f"Pretrained encoder layer {name} has shapes {got[name]}, which do not match "
                f"the student's {want[name]}."
            )
    inner["rgb_encoder"] = encoder
    return {**params, "params": inner}, tuple(fresh)


def pose_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Position MSE plus quaternion distance 1 - |<q, q*>| (q and -q are the same rotation)."""
    pos = jnp.mean(jnp.sum(jnp.square(pred[..., :3] - target[..., :3]), axis=-1))
    dot = jnp.abs(jnp.sum(pred[..., 3:] * target[..., 3:], axis=-1))
    return pos + jnp.mean(1.0 - jnp.clip(dot, 0.0, 1.0))
