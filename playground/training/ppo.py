"""PPO built from brax's parts, with a training state that is checkpointed and resumed whole.

brax's `ppo.train` restores only network params (optimiser state and step counter restart), so the
loop lives here; the parts are brax's: networks (built by playground/networks/ppo.py; asymmetric
actor-critic via `policy_obs_key`/`value_obs_key`), the clipped PPO loss with GAE,
`generate_unroll`, the running observation normaliser and its pmap-aware gradient helper.
Data-parallel over local devices (pmap) and over hosts (`jax.distributed`): each device runs
`num_envs / device_count` envs and gradients and normaliser statistics are averaged over all
devices.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from brax.training import acting, gradients
from brax.training.acme import running_statistics, specs
from brax.training.agents.ppo import losses as ppo_losses
from brax.training.agents.ppo import networks as ppo_networks
from flax import struct
from ml_collections import config_dict

from playground.compat import device_put_replicated, ensure_brax_compat
from playground.envs.base import MjxEnv
from playground.envs.wrappers import Randomizer, wrap_for_brax_training
from playground.errors import UsageError
from playground.networks.ppo import make_ppo_networks
from playground.training import evaluate as evaluate_lib

AXIS = "devices"


@struct.dataclass
class TrainingState:
    """Everything a resumed run needs besides the env state, which a resume draws afresh."""

    optimizer_state: Any
    params: ppo_losses.PPONetworkParams
    normalizer_params: running_statistics.RunningStatisticsState
    rng: jax.Array  # this host's key for the next epoch


def make_networks(
    observation_size: dict[str, tuple[int, ...]], action_size: int, net: config_dict.ConfigDict
) -> ppo_networks.PPONetworks:
    """The networks of the config's `network` block (playground/networks/ppo.py builds them)."""
    return make_ppo_networks(
        observation_size=observation_size,
        action_size=action_size,
        policy_hidden_layer_sizes=net.policy_hidden_layer_sizes,
        value_hidden_layer_sizes=net.value_hidden_layer_sizes,
        activation=net.activation,
        policy_obs_key=net.policy_obs_key,
        value_obs_key=net.value_obs_key,
    )


@dataclasses.dataclass
class Schedule:
    """How `num_timesteps` splits into epochs (one evaluation and checkpoint after each)."""

    env_steps_per_update: int  # one PPO update: batch_size * num_minibatches * unroll * repeat
    updates_per_epoch: int
    num_epochs: int

    @property
    def env_steps_per_epoch(self) -> int:
        return self.env_steps_per_update * self.updates_per_epoch

    @property
    def total_steps(self) -> int:
        return self.env_steps_per_epoch * self.num_epochs


def make_schedule(cfg: config_dict.ConfigDict) -> Schedule:
    per_update = cfg.batch_size * cfg.num_minibatches * cfg.unroll_length * cfg.action_repeat
    epochs = max(cfg.num_evals - 1, 1)
    updates = max(1, math.ceil(cfg.num_timesteps / (epochs * per_update)))
    return Schedule(per_update, updates, epochs)


def check_batch(cfg: config_dict.ConfigDict, device_count: int) -> None:
    """Clear errors for batch settings that cannot split evenly."""
    if cfg.num_envs % device_count:
        raise UsageError(
            f"num_envs ({cfg.num_envs}) must be divisible by the number of devices "
            f"({device_count}) so that each gets the same share."
        )
    if (cfg.batch_size * cfg.num_minibatches) % cfg.num_envs:
        raise UsageError(
            f"batch_size * num_minibatches ({cfg.batch_size} * {cfg.num_minibatches}) must be a "
            f"multiple of num_envs ({cfg.num_envs})."
        )
    if cfg.batch_size % device_count:
        raise UsageError(
            f"batch_size ({cfg.batch_size}) must be divisible by the number of devices "
            f"({device_count})."
        )


def bind_randomizer(randomizer, key: jax.Array, num_envs: int):
    """`randomizer(model, rng[num_envs, 2])` with its keys bound, for the training wrapper."""
    if randomizer is None:
        return None
    return functools.partial(randomizer, rng=jax.random.split(key, num_envs))


class PPOTrainer:
    """Builds the compiled pieces once; `init_state`, `run` and `evaluate` use them."""

    def __init__(
        self,
        env: MjxEnv,
        cfg: config_dict.ConfigDict,
        seed: int = 0,
        randomization_fn: Randomizer | None = None,
        max_devices_per_host: int | None = None,
    ):
        ensure_brax_compat()
        self.env = env
        self.cfg = cfg
        self.seed = seed
        self.episode_length = (
            env.config.episode_length if cfg.episode_length <= 0 else cfg.episode_length
        )
        self.local_devices = jax.local_devices()[: max_devices_per_host or None]
        self.process_count = jax.process_count()
        self.device_count = len(self.local_devices) * self.process_count
        check_batch(cfg, self.device_count)
        self.schedule = make_schedule(cfg)
        self.observation_size = {k: tuple(v) for k, v in env.observation_size.items()}
        self.networks = make_networks(self.observation_size, env.action_size, cfg.network)
        self.make_policy = ppo_networks.make_inference_fn(self.networks)
        self.optimizer = optax.chain(
            optax.clip_by_global_norm(cfg.max_grad_norm)
            if cfg.max_grad_norm and cfg.max_grad_norm > 0
            else optax.identity(),
            optax.adam(cfg.learning_rate),
        )
        # One randomised model per env of a device (each device holds the same set, as brax's
        # trainers do); evaluation draws its own set from a held-out key.
        k_train, k_eval = jax.random.split(jax.random.PRNGKey(seed + 7))
        self.train_env = wrap_for_brax_training(
            env,
            self.episode_length,
            cfg.action_repeat,
            bind_randomizer(randomization_fn, k_train, cfg.num_envs // self.device_count),
        )
        self._evaluate = evaluate_lib.make_evaluator(
            env,
            lambda params, deterministic: self.make_policy(params, deterministic),
            cfg.num_eval_envs,
            self.episode_length,
            cfg.action_repeat,
            bind_randomizer(randomization_fn, k_eval, cfg.num_eval_envs),
        )
        self._epoch = jax.pmap(self._training_epoch, axis_name=AXIS, devices=self.local_devices)
        self._reset = jax.pmap(self.train_env.reset, axis_name=AXIS, devices=self.local_devices)

    # ----- state -----
    def init_state(self) -> TrainingState:
        key = jax.random.PRNGKey(self.seed)
        k_net, k_local = jax.random.split(key)
        k_policy, k_value = jax.random.split(k_net)  # same on every host
        params = ppo_losses.PPONetworkParams(
            policy=self.networks.policy_network.init(k_policy),
            value=self.networks.value_network.init(k_value),
        )
        obs_spec = {
            k: specs.Array(v, jnp.dtype("float32")) for k, v in self.observation_size.items()
        }
        return TrainingState(
            optimizer_state=self.optimizer.init(params),
            params=params,
            normalizer_params=running_statistics.init_state(obs_spec),
            rng=jax.random.fold_in(k_local, jax.process_index()),
        )

    @staticmethod
    def inference_params(state: TrainingState) -> tuple[Any, Any, Any]:
        """(normaliser, policy, value): what brax's inference fn and the policy file take."""
        return (state.normalizer_params, state.params.policy, state.params.value)

    # ----- one epoch (per device, under pmap) -----
    def _training_epoch(self, state: TrainingState, env_state, key: jax.Array):
        cfg = self.cfg
        loss_fn = functools.partial(
            ppo_losses.compute_ppo_loss,
            ppo_network=self.networks,
            entropy_cost=cfg.entropy_cost,
            discounting=cfg.discounting,
            reward_scaling=cfg.reward_scaling,
            gae_lambda=cfg.gae_lambda,
            clipping_epsilon=cfg.clipping_epsilon,
            normalize_advantage=True,
        )
        loss_and_grad = gradients.loss_and_pgrad(loss_fn, pmap_axis_name=AXIS, has_aux=True)
        local_envs = cfg.num_envs // self.device_count
        local_batch = cfg.batch_size // self.device_count
        unrolls = local_batch * cfg.num_minibatches // local_envs

        def minibatch(carry, data, normalizer):
            opt_state, params, key = carry
            key, k_loss = jax.random.split(key)
            (_, metrics), grads = loss_and_grad(params, normalizer, data, k_loss)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            return (opt_state, optax.apply_updates(params, updates), key), metrics

        def sgd_pass(carry, _, data, normalizer):
            opt_state, params, key = carry
            key, k_perm, k_grad = jax.random.split(key, 3)
            shuffled = jax.tree.map(
                lambda x: jax.random.permutation(k_perm, x).reshape(
                    (cfg.num_minibatches, -1) + x.shape[1:]
                ),
                data,
            )
            (opt_state, params, _), metrics = jax.lax.scan(
                functools.partial(minibatch, normalizer=normalizer),
                (opt_state, params, k_grad),
                shuffled,
            )
            return (opt_state, params, key), metrics

        def update(carry, _):
            state, env_state, key = carry
            key, k_sgd, k_unroll = jax.random.split(key, 3)
            policy = self.make_policy(self.inference_params(state))

            def unroll(c, _):
                env_s, k = c
                k, k_next = jax.random.split(k)
                env_s, data = acting.generate_unroll(
                    self.train_env,
                    env_s,
                    policy,
                    k,
                    cfg.unroll_length,
                    extra_fields=("truncation", "episode_metrics", "episode_done"),
                )
                return (env_s, k_next), data

            (env_state, _), data = jax.lax.scan(unroll, (env_state, k_unroll), None, length=unrolls)
            # [unrolls, unroll_length, envs, ...] -> [unrolls * envs, unroll_length, ...]
            data = jax.tree.map(lambda x: jnp.swapaxes(x, 1, 2), data)
            data = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), data)
            normalizer = running_statistics.update(
                state.normalizer_params, data.observation, pmap_axis_name=AXIS
            )
            (opt_state, params, _), metrics = jax.lax.scan(
                functools.partial(sgd_pass, data=data, normalizer=normalizer),
                (state.optimizer_state, state.params, k_sgd),
                None,
                length=cfg.num_updates_per_batch,
            )
            # Training-episode statistics: sums over the episodes that ended during this update,
            # divided by their count once per epoch (below).
            ended = data.extras["state_extras"]["episode_done"]
            episode = data.extras["state_extras"]["episode_metrics"]
            metrics["episodes_ended"] = jax.lax.psum(jnp.sum(ended), AXIS)
            for name, value in episode.items():
                metrics[f"episode_{name}"] = jax.lax.psum(jnp.sum(value * ended), AXIS)
            new_state = state.replace(
                optimizer_state=opt_state, params=params, normalizer_params=normalizer
            )
            return (new_state, env_state, key), metrics

        (state, env_state, _), metrics = jax.lax.scan(
            update, (state, env_state, key), None, length=self.schedule.updates_per_epoch
        )
        # Episode statistics are weighted by the episodes that ended in each update: a plain
        # mean over updates counts an update in which no episode ended as an episode of zeros
        # (envs that never terminate early end together, in some updates only).
        n_ended = jnp.sum(metrics["episodes_ended"])
        means = jax.tree.map(jnp.mean, metrics)
        for name, total in metrics.items():
            if name.startswith("episode_"):
                means[name] = jnp.sum(total) / jnp.maximum(n_ended, 1.0)
        return state, env_state, means

    # ----- host loop -----
    def reset_envs(self, key: jax.Array):
        local_envs = self.cfg.num_envs // self.process_count
        keys = jax.random.split(key, local_envs).reshape(len(self.local_devices), -1, 2)
        return self._reset(keys)

    def evaluate(self, state: TrainingState, rng: jax.Array | None = None) -> dict[str, float]:
        if rng is None:
            rng = jax.random.PRNGKey(self.seed + evaluate_lib.HELD_OUT_SEED_OFFSET)
        metrics = self._evaluate(self.inference_params(state), rng)
        return {k: float(v) for k, v in metrics.items()}

    def run(
        self,
        state: TrainingState,
        start_step: int = 0,
        on_epoch: Callable[[int, TrainingState, dict[str, float]], None] | None = None,
        run_evals: bool = True,
    ) -> tuple[TrainingState, int]:
        """Trains from `start_step` to the schedule's end; `on_epoch(step, state, metrics)`.

        `state` is unreplicated (as `init_state` returns it and checkpoints hold it).
        """
        sched = self.schedule
        epoch = start_step // sched.env_steps_per_epoch
        step = start_step
        rng = state.rng
        if self.process_count > 1:  # a restored key is host 0's; give each host its own stream
            rng = jax.random.fold_in(rng, jax.process_index())
        rng, k_env = jax.random.split(rng)
        env_state = self.reset_envs(k_env)
        replicated = device_put_replicated(
            state.replace(rng=jnp.zeros_like(rng)), self.local_devices
        )
        while epoch < sched.num_epochs:
            rng, k_epoch = jax.random.split(rng)
            keys = jax.random.split(k_epoch, len(self.local_devices))
            t0 = time.perf_counter()
            replicated, env_state, train_metrics = self._epoch(replicated, env_state, keys)
            train_metrics = jax.tree.map(lambda x: float(np.asarray(x)[0]), train_metrics)
            seconds = time.perf_counter() - t0
            epoch += 1
            step = epoch * sched.env_steps_per_epoch
            host_state = jax.tree.map(lambda x: x[0], replicated).replace(rng=rng)
            metrics = {f"training/{k}": v for k, v in train_metrics.items()}
            metrics["training/sps"] = sched.env_steps_per_epoch / seconds
            metrics["training/epoch_seconds"] = seconds
            if run_evals and jax.process_index() == 0:
                metrics.update(self.evaluate(host_state))
            if on_epoch is not None:
                on_epoch(step, host_state, metrics)
        return jax.tree.map(lambda x: x[0], replicated).replace(rng=rng), step
