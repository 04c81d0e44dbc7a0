"""DAgger distillation of a state-based teacher into the pixel student, all inside jit.

One iteration:
1. Roll out `unroll_length` steps of `num_envs` envs (auto-reset). At each step every env acts
   with the teacher's action with probability beta, else with the student's; the teacher labels
   every visited state either way (its deterministic action on the same observation dict: it
   reads `state`, the student `rgb`/`depth`/`proprio`).
2. Append what the student's trained layers read (`Student.encode`: the images for a "pixels"
   student, the frozen encoder's latents for a "latent" one), the teacher's labels and the object
   pose (the auxiliary target) to a ring buffer that keeps data across iterations: true DAgger,
   not only the latest rollout.
3. Take `updates_per_iteration` optax steps on minibatches drawn uniformly from the buffer, with
   random-shift augmentation of what the student sees (of the stored images for "pixels"; of
   the images before they are encoded, in step 1, for "latent"), jitted in chunks (see
   `Dagger.iterate`). Loss: MSE between the student's and the teacher's squashed actions, plus
   `pose_weight` x (position MSE + quaternion distance).
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
from playground.errors import UsageError
from playground.networks.student import Student, pose_loss

STUDENT_KEYS = ("rgb", "depth", "proprio")


def default_config() -> config_dict.ConfigDict:
    # Tuned on FrankaReachStereo at 48x48 so that a student learns on a CPU in minutes; the
    # measured runs are in docs/results.md ("Distillation").
    return config_dict.create(
        num_envs=32,
        unroll_length=20,
        episode_length=60,
        buffer_size=20_000,
        updates_per_iteration=64,
        update_unroll=8,  # optax steps per jitted call, unrolled (see Dagger.iterate)
        batch_size=128,
        learning_rate=1e-3,
        # The CIFAR features know nothing of where a small object is: fine-tune them at the
        # same rate (a lower rate left the pose loss higher; docs/results.md, "Distillation").
        encoder_learning_rate=1e-3,
        freeze_encoder=False,
        beta_decay=0.85,
        pose_weight=1.0,
        augment_shift_px=2,
        hidden=(256, 256),
        features=512,  # the pretrained NatureCNN's width
        # "pixels": every layer learns from the stored images; "latent": the CIFAR convolutions
        # are frozen, the buffer holds their features and only the layers after them learn
        # (playground/networks/student.py).
        student="pixels",
        depth_grid=8,  # "latent": the depth map is pooled to depth_grid x depth_grid per camera
        # How the rollout runs: "scan" (one jitted lax.scan) or "steps" (one jitted call per
        # env step). On the 2-core CPU "steps" was no faster, for the pixel and the latent
        # student alike (docs/results.md, "Distillation speed").
        rollout="scan",
    )


# Per task, what differs from `default_config` (a task not named here takes it as it is).
# AlohaS2RPegInsertionDistill: a Playground-sized budget on a CPU needs the latent student
# (docs/results.md, "Distillation speed"), more envs per iteration and fewer gradient samples per
# env step (2; Playground's student takes 4) than the Franka reach student's 12.8.
TASK_CONFIGS = {
    "AlohaS2RPegInsertionDistill": dict(
        student="latent",
        features=128,
        num_envs=128,
        unroll_length=8,
        episode_length=160,  # the task's own: the whole task, pick then insert
        buffer_size=100_000,
        updates_per_iteration=8,
        update_unroll=8,
        batch_size=256,
        hidden=(256, 256, 256),
        beta_decay=0.9,
    ),
}


def task_config(env_name: str | None) -> config_dict.ConfigDict:
    """`default_config` with the task's own settings (`TASK_CONFIGS`) applied."""
    cfg = default_config()
    for key, value in TASK_CONFIGS.get(env_name or "", {}).items():
        cfg[key] = value
    return cfg


# What a checkpoint keeps: everything but the env states, which restart fresh on resume (as a
# resumed teacher's do; an MJX Data also has zero-size fields that orbax refuses to save).
CHECKPOINT_FIELDS = ("params", "opt_state", "buffer", "buffer_count", "rng", "iteration")


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
    frozen = config.freeze_encoder or config.student == "latent"
    encoder = optax.set_to_zero() if frozen else optax.adam(config.encoder_learning_rate)

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


ROLLOUTS = ("scan", "steps")


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
            raise UsageError(
                f"No body named {pose_body!r} for the pose head in {type(env).__name__}."
            )
        if config.rollout not in ROLLOUTS:
            raise UsageError(f"rollout {config.rollout!r} is not one of {', '.join(ROLLOUTS)}.")
        if student.kind != config.student:
            raise UsageError(
                f"The student is of kind {student.kind!r}, the config says {config.student!r}."
            )
        self.wrapped = wrap_for_brax_training(env, config.episode_length, 1, randomization_fn)
        self.optimizer = make_optimizer(config)
        obs = jax.eval_shape(env.reset, jax.random.PRNGKey(0)).obs
        self.keys = tuple(k for k in STUDENT_KEYS if k in obs)
        self.obs_spec = {k: obs[k] for k in self.keys}
        if config.updates_per_iteration % config.update_unroll:
            raise UsageError(
                f"updates_per_iteration ({config.updates_per_iteration}) must be a multiple of "
                f"update_unroll ({config.update_unroll})."
            )
        self.rollout = config.rollout
        self._collect = jax.jit(self._collect_impl, donate_argnums=0)
        self._collect_step = jax.jit(self._step_impl, donate_argnums=0)
        self._end_collect = jax.jit(self._end_collect_impl, donate_argnums=0)
        self._update = jax.jit(self._update_impl, donate_argnums=0)

    def reset_envs(self, rng: jax.Array) -> Any:
        """Fresh states of the `num_envs` training envs."""
        return jax.jit(self.wrapped.reset)(jax.random.split(rng, self.config.num_envs))

    def sample_spec(self, params: Any) -> dict[str, jax.ShapeDtypeStruct]:
        """What one buffer row holds of the student's input: the images ("pixels") or the
        frozen latents ("latent"), and the proprioception."""
        batch = {k: jax.ShapeDtypeStruct((1, *v.shape), v.dtype) for k, v in self.obs_spec.items()}
        out = jax.eval_shape(
            lambda p, o: self.student.apply(p, o, method=Student.encode), params, batch
        )
        return {k: jax.ShapeDtypeStruct(v.shape[1:], v.dtype) for k, v in out.items()}

    def init(self, rng: jax.Array, params: Any) -> DaggerState:
        k_env, rng = jax.random.split(rng)
        env_state = self.reset_envs(k_env)
        size = self.config.buffer_size
        spec = self.sample_spec(params)
        buffer = {k: jnp.zeros((size, *s.shape), s.dtype) for k, s in spec.items()}
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
        inputs = {k: v for k, v in batch.items() if k not in ("action", "pose")}
        action, pose = self.student.apply(params, inputs, method=Student.head)
        action_mse = jnp.mean(jnp.square(action - batch["action"]))
        pose_term = pose_loss(pose, batch["pose"])
        total = action_mse + self.config.pose_weight * pose_term
        return total, {"loss": total, "action_mse": action_mse, "pose_loss": pose_term}

    def _step_impl(self, state: DaggerState) -> DaggerState:
        """One step of every env: act (teacher with probability beta, else the student), label
        with the teacher, write the samples to the buffer."""
        cfg = self.config
        beta = self.beta(state.iteration)
        rng, k_mix, k_teacher, k_aug = jax.random.split(state.rng, 4)
        env_state = state.env_state
        obs = env_state.obs
        seen = {k: obs[k] for k in self.keys}
        if cfg.student == "latent":
            # The latents are stored, so the augmentation happens here, once per sample; the
            # student acts on what it stores.
            seen = augment(seen, k_aug, cfg.augment_shift_px)
        inputs = self.student.apply(state.params, seen, method=Student.encode)
        student_action, _ = self.student.apply(state.params, inputs, method=Student.head)
        label = jax.vmap(self.teacher)(obs, jax.random.split(k_teacher, cfg.num_envs))
        use_teacher = jax.random.bernoulli(k_mix, beta, (cfg.num_envs, 1))
        action = jnp.where(use_teacher, label, student_action)
        sample = {**inputs, "action": label, "pose": pose_target(env_state.data, self.body_id)}
        idx = (state.buffer_count + jnp.arange(cfg.num_envs)) % cfg.buffer_size
        buffer = {
            k: state.buffer[k].at[idx].set(sample[k].astype(state.buffer[k].dtype))
            for k in state.buffer
        }
        return state.replace(
            buffer=buffer,
            buffer_count=state.buffer_count + cfg.num_envs,
            env_state=self.wrapped.step(env_state, action),
            rng=rng,
        )

    def _end_collect_impl(self, state: DaggerState) -> tuple[DaggerState, dict[str, jax.Array]]:
        metrics = {
            "beta": self.beta(state.iteration),
            "buffer_fill": jnp.minimum(state.buffer_count, self.config.buffer_size).astype(
                jnp.float32
            ),
        }
        return state.replace(iteration=state.iteration + 1), metrics

    def _collect_impl(self, state: DaggerState) -> tuple[DaggerState, dict[str, jax.Array]]:
        """The whole rollout in one call (rollout "scan")."""
        state, _ = jax.lax.scan(
            lambda st, _: (self._step_impl(st), None), state, None, self.config.unroll_length
        )
        return self._end_collect_impl(state)

    def collect(self, state: DaggerState) -> tuple[DaggerState, dict[str, jax.Array]]:
        """`unroll_length` steps of every env into the buffer; the iteration counter advances."""
        if self.rollout == "scan":
            return self._collect(state)
        for _ in range(self.config.unroll_length):
            state = self._collect_step(state)
        return self._end_collect(state)

    def iterate(self, state: DaggerState) -> tuple[DaggerState, dict[str, jax.Array]]:
        """One DAgger iteration: collect and aggregate, then `updates_per_iteration` updates.

        On a CPU, XLA runs the updates' convolutions (their gradients) inside a loop (a
        `lax.scan`) several times slower than outside one (jax-ml/jax#12868; the measurement is
        in docs/results.md, "Distillation"), so the updates run as
        `updates_per_iteration / update_unroll` calls of `update_unroll` unrolled steps each.
        Every call donates the state, so the buffer is updated in place.
        """
        state, metrics = self.collect(state)
        losses = []
        for _ in range(self.config.updates_per_iteration // self.config.update_unroll):
            state, chunk = self._update(state)
            losses.append(chunk)
        return state, metrics | jax.tree.map(lambda *x: jnp.mean(jnp.stack(x)), *losses)

    def _update_impl(self, state: DaggerState) -> tuple[DaggerState, dict[str, jax.Array]]:
        """`update_unroll` optax steps on minibatches drawn uniformly from the filled buffer."""
        cfg = self.config
        filled = jnp.minimum(state.buffer_count, cfg.buffer_size)
        rng, k_pick, k_aug = jax.random.split(state.rng, 3)
        params, opt_state = state.params, state.opt_state
        metrics = []
        for key in jax.random.split(k_aug, cfg.update_unroll):
            k_pick, k_batch = jax.random.split(k_pick)
            pick = jax.random.randint(k_batch, (cfg.batch_size,), 0, filled)
            batch = {k: v[pick] for k, v in state.buffer.items()}
            # A "latent" buffer holds no images: its samples were augmented when collected.
            batch = augment(batch, key, cfg.augment_shift_px)
            grads, m = jax.grad(self.loss, has_aux=True)(params, batch)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            metrics.append(m)
        mean = jax.tree.map(lambda *x: jnp.mean(jnp.stack(x)), *metrics)
        return state.replace(params=params, opt_state=opt_state, rng=rng), mean


def augment(batch: dict[str, jax.Array], rng: jax.Array, pad: int) -> dict[str, jax.Array]:
    """`batch` with its images (`rgb`, `depth`, where present) randomly shifted by up to `pad`
    pixels, every camera of a sample alike."""
    out = dict(batch)
    for i, k in enumerate(("rgb", "depth")):
        if k in out:
            img = out[k] if k == "rgb" else out[k][..., None]
            img = random_shift(img, jax.random.fold_in(rng, i), pad)
            out[k] = img if k == "rgb" else img[..., 0]
    return out
