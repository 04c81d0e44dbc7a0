"""DAgger distillation of a state-based teacher into the pixel student, all inside jit.

One iteration, one jitted call:
1. Roll out `unroll_length` steps of `num_envs` envs (auto-reset). At each step every env acts
   with the teacher's action with probability beta, else with the student's; the teacher labels
   every visited state either way (its deterministic action on the same observation dict: it
   reads `state`, the student `rgb`/`depth`/`proprio`).
2. Append the student's inputs, the teacher's labels and the object pose (the auxiliary target)
   to a ring buffer that keeps data across iterations: true DAgger, not only the latest rollout.
3. Take `updates_per_iteration` optax steps on minibatches drawn uniformly from the buffer, with
   random-shift augmentation of what the student sees. Loss: MSE between the student's and the
   teacher's squashed actions, plus `pose_weight` x (position MSE + quaternion distance).
beta decays geometrically per iteration (`beta_decay`), from 1 (the teacher drives) towards 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import optax
from flax import struct
from ml_collections import config_dict

from playground.envs.base import MjxEnv
from playground.envs.wrappers import Randomizer, wrap_for_brax_training
from playground.networks.student import Student, pose_loss

STUDENT_KEYS = ("rgb", "depth", "proprio")


def default_config() -> config_dict.ConfigDict:
    return config_dict.create(
        num_envs=32,
        unroll_length=25,
        episode_length=60,
        buffer_size=20_000,
        updates_per_iteration=16,
        batch_size=128,
        learning_rate=1e-3,
        encoder_learning_rate=1e-4,  # fine-tuning rate of the pretrained encoder
        freeze_encoder=False,
        beta_decay=0.6,
        pose_weight=0.1,
        augment_shift_px=2,
        hidden=(256, 256),
        features=512,  # the pretrained NatureCNN's width
    )


@struct.dataclass
class DaggerState:
    params: Any
    opt_state: Any
    buffer: dict[str, jax.Array]
    buffer_count: jax.Array  # samples written so far (the ring holds min(count, size))
    env_state: Any
    rng: jax.Array
    iteration: jax.Array


def pose_target(data, body_id: int) -> jax.Array:
    """World position and quaternion of the object the auxiliary head predicts `[..., 7]`."""
    return jnp.concatenate([data.xpos[..., body_id, :], data.xquat[..., body_id, :]], axis=-1)


def make_optimizer(config: config_dict.ConfigDict) -> optax.GradientTransformation:
    """Adam; the pretrained RGB encoder is frozen or fine-tuned at its own rate."""
    encoder = (
        optax.set_to_zero() if config.freeze_encoder else optax.adam(config.encoder_learning_rate)
    )

    def labels(params):
        def label(name, tree):
            kind = "encoder" if name == "rgb_encoder" else "rest"
            return jax.tree_util.tree_map(lambda _: kind, tree)

        return {"params": {k: label(k, v) for k, v in params["params"].items()}}

    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.multi_transform(
            {"encoder": encoder, "rest": optax.adam(config.learning_rate)}, labels
        ),
    )


def random_shift(images: jax.Array, rng: jax.Array, pad: int) -> jax.Array:
    """Shifts each sample's images (all cameras alike) by up to `pad` pixels, edges repeated."""
    if pad == 0:
        return images
    h, w = images.shape[-3], images.shape[-2]
    widths = [(0, 0)] * (images.ndim - 3) + [(pad, pad), (pad, pad), (0, 0)]
    padded = jnp.pad(images, widths, mode="edge")

    def crop(img, key):
        dy, dx = jax.random.randint(key, (2,), 0, 2 * pad + 1)
        start = (0,) * (img.ndim - 3) + (dy, dx, 0)
        return jax.lax.dynamic_slice(img, start, img.shape[:-3] + (h, w, img.shape[-1]))

    return jax.vmap(crop)(padded, jax.random.split(rng, images.shape[0]))


class Dagger:
    """The distillation loop for one env, teacher and student (see the module doc)."""

    def __init__(
        self,
        env: MjxEnv,
        teacher: Callable[[dict, jax.Array], jax.Array],
        student: Student,
        config: config_dict.ConfigDict,
        pose_body: str,
        randomization_fn: Randomizer | None = None,
    ):
        self.env, self.teacher, self.student, self.config = env, teacher, student, config
        self.body_id = mujoco.mj_name2id(env.mj_model, mujoco.mjtObj.mjOBJ_BODY, pose_body)
        if self.body_id < 0:
            raise ValueError(
                f"No body named {pose_body!r} for the pose head in {type(env).__name__}."
            )
        self.wrapped = wrap_for_brax_training(env, config.episode_length, 1, randomization_fn)
        self.optimizer = make_optimizer(config)
        obs = jax.eval_shape(env.reset, jax.random.PRNGKey(0)).obs
        self.keys = tuple(k for k in STUDENT_KEYS if k in obs)
        self._obs_spec = {k: obs[k] for k in self.keys}
        self.iterate = jax.jit(self._iterate)

    def init(self, rng: jax.Array, params: Any) -> DaggerState:
        k_env, rng = jax.random.split(rng)
        env_state = jax.jit(self.wrapped.reset)(jax.random.split(k_env, self.config.num_envs))
        size = self.config.buffer_size
        buffer = {k: jnp.zeros((size, *s.shape), s.dtype) for k, s in self._obs_spec.items()}
        buffer["action"] = jnp.zeros((size, self.env.action_size), jnp.float32)
        buffer["pose"] = jnp.zeros((size, 7), jnp.float32)
        return DaggerState(
            params=params,
            opt_state=self.optimizer.init(params),
            buffer=buffer,
            buffer_count=jnp.zeros((), jnp.int32),
            env_state=env_state,
            rng=rng,
            iteration=jnp.zeros((), jnp.int32),
        )

    def beta(self, iteration: jax.Array) -> jax.Array:
        return jnp.asarray(self.config.beta_decay, jnp.float32) ** iteration

    def loss(self, params, batch: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
        action, pose = self.student.apply(params, {k: batch[k] for k in self.keys})
        action_mse = jnp.mean(jnp.square(action - batch["action"]))
        pose_term = pose_loss(pose, batch["pose"])
        total = action_mse + self.config.pose_weight * pose_term
        return total, {"loss": total, "action_mse": action_mse, "pose_loss": pose_term}

    def _rollout(self, state: DaggerState, beta: jax.Array):
        def step(carry, _):
            env_state, rng = carry
            rng, k_mix, k_teacher = jax.random.split(rng, 3)
            obs = env_state.obs
            student_action, _ = self.student.apply(state.params, {k: obs[k] for k in self.keys})
            keys = jax.random.split(k_teacher, self.config.num_envs)
            label = jax.vmap(self.teacher)(obs, keys)
            use_teacher = jax.random.bernoulli(k_mix, beta, (self.config.num_envs, 1))
            action = jnp.where(use_teacher, label, student_action)
            sample = {k: obs[k] for k in self.keys}
            sample["action"] = label
            sample["pose"] = pose_target(env_state.data, self.body_id)
            next_state = self.wrapped.step(env_state, action)
            return (next_state, rng), sample

        (env_state, rng), samples = jax.lax.scan(
            step, (state.env_state, state.rng), None, length=self.config.unroll_length
        )
        return env_state, rng, samples

    def _iterate(self, state: DaggerState) -> tuple[DaggerState, dict[str, jax.Array]]:
        cfg = self.config
        beta = self.beta(state.iteration)
        env_state, rng, samples = self._rollout(state, beta)
        n = cfg.unroll_length * cfg.num_envs
        flat = jax.tree_util.tree_map(lambda x: x.reshape(n, *x.shape[2:]), samples)
        idx = (state.buffer_count + jnp.arange(n)) % cfg.buffer_size
        buffer = {
            k: state.buffer[k].at[idx].set(flat[k].astype(state.buffer[k].dtype)) for k in flat
        }
        count = state.buffer_count + n
        filled = jnp.minimum(count, cfg.buffer_size)

        def update(carry, key):
            params, opt_state = carry
            k_idx, k_aug = jax.random.split(key)
            pick = jax.random.randint(k_idx, (cfg.batch_size,), 0, filled)
            batch = {k: v[pick] for k, v in buffer.items()}
            for i, k in enumerate(("rgb", "depth")):
                if k in batch:
                    img = batch[k] if k == "rgb" else batch[k][..., None]
                    img = random_shift(img, jax.random.fold_in(k_aug, i), cfg.augment_shift_px)
                    batch[k] = img if k == "rgb" else img[..., 0]
            grads, metrics = jax.grad(self.loss, has_aux=True)(params, batch)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), metrics

        rng, k_upd = jax.random.split(rng)
        (params, opt_state), metrics = jax.lax.scan(
            update,
            (state.params, state.opt_state),
            jax.random.split(k_upd, cfg.updates_per_iteration),
        )
        metrics = jax.tree_util.tree_map(jnp.mean, metrics)
        metrics["beta"] = beta
        metrics["buffer_fill"] = filled.astype(jnp.float32)
        new = state.replace(
            params=params,
            opt_state=opt_state,
            buffer=buffer,
            buffer_count=count,
            env_state=env_state,
            rng=rng,
            iteration=state.iteration + 1,
        )
        return new, metrics
