"""Per-env PPO (and SAC) hyperparameters as ConfigDicts; the CLI overrides any field.

The Aloha values follow MuJoCo Playground's published Aloha sim-to-real settings (a GPU budget:
2048 envs, tens of millions of steps). FrankaReach is sized to learn on a laptop CPU in minutes,
so that every change to the trainer can be checked end to end without a GPU
(tests/test_train_ppo.py; the measured runs are in docs/results.md, "Teacher training").
"""

from __future__ import annotations

from ml_collections import config_dict

from playground import registry


def _base() -> config_dict.ConfigDict:
    return config_dict.create(
        num_timesteps=20_000_000,
        num_evals=5,
        reward_scaling=1.0,
        episode_length=-1,  # -1: the env's own episode_length
        normalize_observations=True,
        action_repeat=1,
        unroll_length=10,
        num_minibatches=32,
        num_updates_per_batch=8,
        discounting=0.97,
        learning_rate=1e-3,
        entropy_cost=2e-2,
        num_envs=2048,
        num_eval_envs=128,
        batch_size=512,
        max_grad_norm=1.0,
        clipping_epsilon=0.3,
        gae_lambda=0.95,
        network=config_dict.create(
            policy_hidden_layer_sizes=(32, 32, 32, 32),
            value_hidden_layer_sizes=(256, 256, 256, 256, 256),
            activation="swish",
            policy_obs_key="state",
            value_obs_key="privileged_state",
        ),
    )


def ppo_config(env_name: str) -> config_dict.ConfigDict:
    registry.get_default_config(env_name)  # raises a KeyError listing valid names
    cfg = _base()
    if env_name == "AlohaS2RPegInsertion":
        cfg.num_timesteps = 10_000_000
        cfg.network.value_hidden_layer_sizes = (32, 32, 32, 32)
    elif env_name == "FrankaReach":
        cfg.num_timesteps = 400_000
        cfg.num_evals = 6
        cfg.num_envs = 128
        cfg.batch_size = 128
        cfg.num_minibatches = 4
        cfg.num_updates_per_batch = 4
        cfg.unroll_length = 10
        cfg.discounting = 0.95
        cfg.learning_rate = 1e-3
        cfg.entropy_cost = 1e-3
        cfg.num_eval_envs = 64
        cfg.network.policy_hidden_layer_sizes = (64, 64)
        cfg.network.value_hidden_layer_sizes = (64, 64)
    return cfg


def sac_config(env_name: str) -> config_dict.ConfigDict:
    registry.get_default_config(env_name)
    return config_dict.create(
        num_timesteps=2_000_000,
        num_evals=5,
        reward_scaling=1.0,
        episode_length=-1,
        normalize_observations=True,
        action_repeat=1,
        discounting=0.97,
        learning_rate=3e-4,
        num_envs=128,
        num_eval_envs=64,
        batch_size=256,
        grad_updates_per_step=8,
        min_replay_size=8192,
        max_replay_size=1_000_000,
        network=config_dict.create(hidden_layer_sizes=(256, 256), activation="swish"),
    )
