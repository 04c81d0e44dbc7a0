"""brax's PPO actor-critic from a plain description: the one builder of teacher networks.

The description is what a teacher's policy file stores under `network` (playground/files/
policy_file.py) and what the teacher trainer's config holds under `network`
(playground/training/ppo_params.py): hidden sizes, activation name, the observation each part
sees (`policy_obs_key`, `value_obs_key`, the asymmetric actor-critic), plus the observation and
action sizes. Observations are normalised by brax's running statistics before both networks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
from brax.training.acme import running_statistics
from brax.training.agents.ppo import networks as ppo_networks


def make_ppo_networks(
    *,
    observation_size: Mapping[str, Sequence[int]],
    action_size: int,
    policy_hidden_layer_sizes: Sequence[int],
    value_hidden_layer_sizes: Sequence[int],
    activation: str,
    policy_obs_key: str,
    value_obs_key: str,
) -> ppo_networks.PPONetworks:
    """brax's PPO networks (params not included); `activation` names a `jax.nn` function."""
    return ppo_networks.make_ppo_networks(
        observation_size={k: tuple(v) for k, v in observation_size.items()},
        action_size=action_size,
        preprocess_observations_fn=running_statistics.normalize,
        policy_hidden_layer_sizes=tuple(policy_hidden_layer_sizes),
        value_hidden_layer_sizes=tuple(value_hidden_layer_sizes),
        activation=getattr(jax.nn, activation),
        policy_obs_key=policy_obs_key,
        value_obs_key=value_obs_key,
    )
