"""Policy params files: one self-describing file per trained policy, teacher or student.

- Teacher (`FORMAT`): a brax PPO policy, written by the teacher trainer and read by
  AlohaS2RPegInsertion (its phase-1 pick policy), the DAgger distiller and the ONNX exporter. It
  holds the env name, the network description (hidden sizes, activation, observation keys and
  sizes, action size) and the params (observation normaliser, policy, value).
- Student (`STUDENT_FORMAT`): a pixel student (playground/networks/student.py), written by the
  DAgger distiller and read by the ONNX exporter: the `Student` fields, the observation keys,
  shapes and dtypes it reads, and its params.

A reader can rebuild the network without any other file. Files are written atomically; errors
name the file and say what is wrong with it.
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
STUDENT_FORMAT = "s2r-playground/pixel-student/v1"
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
    """Writes a teacher's file atomically."""
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
    return _write_atomic(path, payload)


def _write_atomic(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Temp file + rename, so a crash never leaves a half-written file."""
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


def _read(path: str | os.PathLike, fmt: str, env_name: str | None) -> dict[str, Any]:
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
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise PolicyFileError(f"Policy file {str(path)!r} has format {found!r}; expected {fmt!r}.")
    if env_name is not None and payload["env_name"] != env_name:
        raise PolicyFileError(
            f"Policy file {str(path)!r} was trained on {payload['env_name']!r}, not {env_name!r}."
        )
    return payload


def read_policy(path: str | os.PathLike, env_name: str | None = None) -> dict[str, Any]:
    """Loads and validates a teacher policy file; `env_name` (if given) must match the file's."""
    return _read(path, FORMAT, env_name)


def ppo_networks_of(payload: Mapping[str, Any]):
    """brax's PPO networks described by a teacher file (params not included)."""
    from brax.training.acme import running_statistics
    from brax.training.agents.ppo import networks as ppo_networks

    net = payload["network"]
    return ppo_networks.make_ppo_networks(
        observation_size={k: tuple(v) for k, v in net["observation_size"].items()},
        action_size=net["action_size"],
        preprocess_observations_fn=running_statistics.normalize,
        policy_hidden_layer_sizes=tuple(net["policy_hidden_layer_sizes"]),
        value_hidden_layer_sizes=tuple(net["value_hidden_layer_sizes"]),
        activation=getattr(jax.nn, net["activation"]),
        policy_obs_key=net["policy_obs_key"],
        value_obs_key=net["value_obs_key"],
    )


def make_policy_fn(
    payload: Mapping[str, Any], deterministic: bool = True
) -> Callable[[Mapping[str, jax.Array], jax.Array], jax.Array]:
    """`fn(obs_dict, rng) -> action in [-1, 1]` for one observation (jit- and vmap-able)."""
    import jax.numpy as jnp
    from brax.training.agents.ppo import networks as ppo_networks

    params = jax.tree_util.tree_map(jnp.asarray, payload["params"])
    inference = ppo_networks.make_inference_fn(ppo_networks_of(payload))(
        (params[0], params[1]), deterministic
    )

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


def save_student(
    path: str | os.PathLike,
    *,
    env_name: str,
    params: Any,
    network: Mapping[str, Any],
    observation_spec: Mapping[str, tuple[tuple[int, ...], str]],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Writes a pixel student's file atomically.

    `network` holds the `Student` fields (action_size, use_rgb, use_depth, depth_scale_m,
    features, hidden); `observation_spec` maps each input it reads to (shape, dtype name).
    """
    payload = {
        "format": STUDENT_FORMAT,
        "env_name": env_name,
        "network": {k: tuple(v) if isinstance(v, list | tuple) else v for k, v in network.items()},
        "observation_spec": {k: (tuple(s), str(d)) for k, (s, d) in observation_spec.items()},
        "params": jax.tree_util.tree_map(np.asarray, params),
        "extra": dict(extra or {}),
    }
    return _write_atomic(path, payload)


def read_student(path: str | os.PathLike, env_name: str | None = None) -> dict[str, Any]:
    """Loads and validates a student file; `env_name` (if given) must match the file's."""
    return _read(path, STUDENT_FORMAT, env_name)


def make_student_fn(
    payload: Mapping[str, Any],
) -> Callable[[Mapping[str, jax.Array], jax.Array], jax.Array]:
    """`fn(obs_dict, rng) -> action in [-1, 1]` for one observation (jit- and vmap-able)."""
    import jax.numpy as jnp

    from playground.networks.student import Student

    student = Student(**payload["network"])
    params = jax.tree_util.tree_map(jnp.asarray, payload["params"])
    keys = tuple(payload["observation_spec"])

    def policy(obs: Mapping[str, jax.Array], rng: jax.Array) -> jax.Array:
        action, _ = student.apply(params, {k: obs[k] for k in keys})
        return action

    return policy
