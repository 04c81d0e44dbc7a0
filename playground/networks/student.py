"""The pixel student: per-camera image encoders, a proprioception fusion MLP and two heads.

    student = Student(action_size=3, use_rgb=True, use_depth=False)
    action, pose = student.apply(params, obs)  # obs: a vision task's rgb / depth / proprio

- RGB: one NatureCNN shared by every camera (the same weights see each view), initialised from
  the CIFAR-pretrained encoder (`init_from_pretrained`: the convolutions at any image size, the
  dense layer after them where the image is CIFAR's 32x32); frozen or fine-tuned by the optimiser.
- Depth: its own NatureCNN, one input channel, shared by the cameras, trained from scratch (the
  CIFAR encoder has never seen depth). Depth is divided by `depth_scale_m` to sit near [0, 1].
- The camera features and the layer-normalised proprioception go through a fusion MLP; a tanh
  head gives the action in [-1, 1] and an auxiliary head the object pose (position, unit
  quaternion) that the privileged state supervises, so the encoder learns where the object is.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from playground.networks.nature_cnn import NatureCNN

POSE_SIZE = 7  # position 3 + quaternion 4 (w, x, y, z)


class Student(nn.Module):
    action_size: int
    use_rgb: bool = True
    use_depth: bool = False
    depth_scale_m: float = 0.4
    features: int = 512
    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, obs: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        parts = []
        if self.use_rgb:
            rgb = obs["rgb"].astype(jnp.float32) / 255.0  # [..., cams, H, W, 3]
            parts.append(self._per_camera(NatureCNN(self.features, name="rgb_encoder"), rgb))
        if self.use_depth:
            depth = obs["depth"][..., None] / self.depth_scale_m  # [..., cams, H, W, 1]
            parts.append(self._per_camera(NatureCNN(self.features, name="depth_encoder"), depth))
        parts.append(nn.LayerNorm(name="proprio_norm")(obs["proprio"]))
        x = jnp.concatenate(parts, axis=-1)
        for i, width in enumerate(self.hidden):
            x = nn.swish(nn.Dense(width, name=f"fusion_{i}")(x))
        action = jnp.tanh(nn.Dense(self.action_size, name="action_head")(x))
        pose = nn.Dense(POSE_SIZE, name="pose_head")(x)
        quat = pose[..., 3:] / (jnp.linalg.norm(pose[..., 3:], axis=-1, keepdims=True) + 1e-6)
        return action, jnp.concatenate([pose[..., :3], quat], axis=-1)

    @staticmethod
    def _per_camera(encoder: nn.Module, images: jax.Array) -> jax.Array:
        """One encoder over each camera's image; the cameras' features side by side."""
        feats = encoder(images)  # NatureCNN keeps leading axes: [..., cams, features]
        return feats.reshape(*feats.shape[:-2], -1)


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
