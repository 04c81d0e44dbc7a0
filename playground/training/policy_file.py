"""The policy params file: one self-describing file per trained brax PPO policy.

Written by the teacher trainer, read by AlohaS2RPegInsertion (its phase-1 pick policy), the DAgger
distiller and the ONNX exporter. It holds the env name, the network description (hidden sizes,
activation, observation keys and sizes, action size) and the params (observation normaliser,
policy, value), so a reader can rebuild the network without any other file. Errors name the file
and say what is wrong with it.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

FORMAT = "s2r-playground/ppo-policy/v1"
ACTIVATIONS = ("swish", "relu", "tanh", "elu")


class PolicyFileError(ValueError):
    """A policy file exists but cannot be used (corrupt, wrong format, wrong env or shapes)."""


def save_policy(
    path: str | os.PathLike,
    *,
    env_name: str,
    params: Any,
    observation_size: Mapping[str, tuple[int, ...]],
    action_size: int,
    policy_hidden_layer_sizes: tuple[int, ...],
    value_hidden_layer_sizes: tuple[int, ...],
    activation: str = "swish",
    policy_obs_key: str = "state",
    value_obs_key: str = "privileged_state",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Writes atomically (temp file + rename), so a crash never leaves a half-written file."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} not in {ACTIVATIONS}")
    payload = {
        "format": FORMAT,
        "env_name": env_name,
        "network": {
            "observation_size": {k: tuple(v) for k, v in observation_size.items()},
            "action_size": int(action_size),
            "policy_hidden_layer_sizes": tuple(policy_hidden_layer_sizes),
            "value_hidden_layer_sizes": tuple(value_hidden_layer_sizes),
            "activation": activation,
            "policy_obs_key": policy_obs_key,
            "value_obs_key": value_obs_key,
        },
        "params": jax.tree_util.tree_map(np.asarray, params),
        "extra": dict(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_policy(path: str | os.PathLike, env_name: str | None = None) -> dict[str, Any]:
    """Loads and validates a policy file; `env_name` (if given) must match the file's."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Policy file {str(path)!r} does not exist.")
    try:
        with path.open("rb") as f:
            payload = pickle.load(f)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise PolicyFileError(
            f"Policy file {str(path)!r} is corrupt or not a policy file: {e}"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise PolicyFileError(
            f"Policy file {str(path)!r} has format {found!r}; expected {FORMAT!r}."
        )
    if env_name is not None and payload["env_name"] != env_name:
        raise PolicyFileError(
            f"Policy file {str(path)!r} was trained on {payload['env_name']!r}, not {env_name!r}."
        )
    return payload


def make_policy_fn(
    payload: Mapping[str, Any], deterministic: bool = True
) -> Callable[[Mapping[str, jax.Array], jax.Array], jax.Array]:
    """`fn(obs_dict, rng) -> action in [-1, 1]` for one observation (jit- and vmap-able)."""
    import jax.numpy as jnp
    from brax.training.acme import running_statistics  # noqa: F401 - params pytree types
    from brax.training.agents.ppo import networks as ppo_networks

    net = payload["network"]
    networks = ppo_networks.make_ppo_networks(
        observation_size=dict(net["observation_size"]),
        action_size=net["action_size"],
        preprocess_observations_fn=running_statistics.normalize,
        policy_hidden_layer_sizes=tuple(net["policy_hidden_layer_sizes"]),
        value_hidden_layer_sizes=tuple(net["value_hidden_layer_sizes"]),
        activation=getattr(jax.nn, net["activation"]),
        policy_obs_key=net["policy_obs_key"],
        value_obs_key=net["value_obs_key"],
    )
    params = jax.tree_util.tree_map(jnp.asarray, payload["params"])
    inference = ppo_networks.make_inference_fn(networks)((params[0], params[1]), deterministic)

    def policy(obs: Mapping[str, jax.Array], rng: jax.Array) -> jax.Array:
        action, _ = inference(obs, rng)
        return action

    return policy


def load_policy_fn(
    path: str | os.PathLike, env_name: str | None = None, deterministic: bool = True
):
    """Reads `path` and returns (policy_fn, payload)."""
    payload = read_policy(path, env_name)
    return make_policy_fn(payload, deterministic), payload
