"""Policy files: one self-describing safetensors file per trained teacher or student.

- Teacher (`FORMAT`, `policy.safetensors`, `best_policy.safetensors`): a brax PPO policy, written
  by the teacher trainer and read by AlohaS2RPegInsertion (its phase-1 pick policy), the DAgger
  distiller, the ONNX exporter and the scripts. It holds the env name, the network description
  (hidden sizes, activation, observation keys and sizes, action size) and the params
  (observation normaliser, policy, value).
- Student (`STUDENT_FORMAT`, `student.safetensors`): a pixel student
  (playground/networks/student.py), written by the DAgger distiller and read by the ONNX
  exporter: the `Student` fields, the observation keys, shapes and dtypes it reads, and its params.

Why safetensors: a file holds only tensors and a JSON header, so reading one can never run code,
unlike a pickle; and it is the format our users know from model hubs (flax's msgpack would be as
safe, but is little known outside JAX). Every array is one tensor named by its '/'-joined path in
the params tree (`params/1/params/hidden_0/kernel`). The header's metadata holds `format` and, as
JSON, everything else: env name, network, `extra` (env steps, success, the run's config) and the
shape of the params tree, which the reader rebuilds node by node from a fixed vocabulary (dicts,
lists, tuples, plain values, arrays, and the two brax normaliser classes). Nothing from the file
is ever evaluated, imported or looked up by name outside that vocabulary.

Legacy `.pkl` files (format v1) are refused with `LegacyPolicyFileError`, which names the one-time
conversion command (playground/files/legacy_pickle.py). Files are written atomically with the
user's normal permissions (playground/files/atomic.py); errors name the file and say what is wrong.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from playground.errors import UsageError
from playground.files import atomic

FORMAT = "s2r-playground/ppo-policy/v2"
STUDENT_FORMAT = "s2r-playground/pixel-student/v2"
ACTIVATIONS = ("swish", "relu", "tanh", "elu")
SUFFIX = ".safetensors"
POLICY_FILE = "policy" + SUFFIX
BEST_POLICY_FILE = "best_policy" + SUFFIX
STUDENT_FILE = "student" + SUFFIX
# A student run's student at each of its checkpoints: `<run>/students/<env steps>.safetensors`.
STUDENT_CHECKPOINTS_DIR = "students"
LEGACY_SUFFIXES = (".pkl", ".pickle")
CONVERT_COMMAND = "python scripts/convert_policy.py"
TEACHER_NETWORK_KEYS = (
    "observation_size",
    "action_size",
    "policy_hidden_layer_sizes",
    "value_hidden_layer_sizes",
    "activation",
    "policy_obs_key",
    "value_obs_key",
)
STUDENT_NETWORK_KEYS = (
    "action_size",
    "use_rgb",
    "use_depth",
    "depth_scale_m",
    "features",
    "hidden",
    "kind",  # absent in files written before the "latent" kind: "pixels"
    "depth_grid",
)
_META_KEY = "s2r"  # header metadata entry holding the JSON payload


class PolicyFileError(UsageError):
    """A policy file exists but cannot be used (corrupt, wrong format, wrong env or shapes)."""


class LegacyPolicyFileError(PolicyFileError):
    """A pickle policy file of the old format: never loaded, only converted."""


def legacy_error(path: str | os.PathLike) -> LegacyPolicyFileError:
    return LegacyPolicyFileError(
        f"Policy file {str(path)!r} is a legacy pickle (reading one can run code), so it is not "
        f"loaded; convert it once with `{CONVERT_COMMAND} {path}`, which reads it through an "
        f"allow-list of the classes policy files hold, and use the {SUFFIX} file it writes."
    )


# ----- the params tree <-> flat tensors + JSON -----


def _struct_types() -> dict[str, tuple[type, dict[str, Callable[[Any], Any]]]]:
    """The classes a params tree may hold besides containers: name -> (class, static-field
    converters). The file names one of these keys; it never names a module or a class."""
    from brax.training import types
    from brax.training.acme import running_statistics as rs

    return {
        "RunningStatisticsState": (rs.RunningStatisticsState, {"mode": rs.NormalizationMode}),
        "UInt64": (types.UInt64, {}),
    }


def _json_scalar(x: Any) -> bool:
    return x is None or isinstance(x, bool | int | float | str)


def _encode(node: Any, key: str, tensors: dict[str, np.ndarray], structs) -> dict[str, Any]:
    for name, (cls, _) in structs.items():
        if type(node) is cls:
            fields, static = {}, {}
            for f in dataclasses.fields(node):
                value = getattr(node, f.name)
                if f.metadata.get("pytree_node", True):
                    fields[f.name] = _encode(value, f"{key}/{f.name}", tensors, structs)
                else:
                    if isinstance(value, int) and not isinstance(value, bool):
                        value = int(value)  # an IntEnum such as NormalizationMode
                    if not _json_scalar(value):
                        raise TypeError(f"{key}/{f.name}: static field of type {type(value)}")
                    static[f.name] = value
            return {"struct": name, "fields": fields, "static": static}
    if isinstance(node, Mapping):
        children = {}
        for k, v in node.items():
            if not isinstance(k, str) or not k or "/" in k:
                raise TypeError(f"{key}: dict key {k!r} is not a non-empty string without '/'")
            children[k] = _encode(v, f"{key}/{k}", tensors, structs)
        return {"dict": children}
    if type(node) in (tuple, list):
        kind = type(node).__name__
        return {kind: [_encode(v, f"{key}/{i}", tensors, structs) for i, v in enumerate(node)]}
    # Before plain values: np.float64 is a Python float too, and must keep its dtype.
    if isinstance(node, np.ndarray | np.generic | jax.Array):
        array = np.asarray(node)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{key}: arrays of dtype {array.dtype} cannot be stored")
        if not array.flags.c_contiguous:
            array = array.copy(order="C")
        tensors[key] = array
        return {"array": key}
    if _json_scalar(node):
        return {"value": node}
    raise TypeError(f"{key}: {type(node).__name__} cannot be stored in a policy file")


def _decode(node: Any, tensors: Mapping[str, np.ndarray], used: set[str], structs) -> Any:
    if not isinstance(node, dict) or len(node) != (3 if "struct" in node else 1):
        raise ValueError(f"malformed params tree node {str(node)[:80]!r}")
    if "array" in node:
        key = node["array"]
        if not isinstance(key, str) or key not in tensors or key in used:
            raise ValueError(f"params tree names tensor {key!r}, which is missing or reused")
        used.add(key)
        return tensors[key]
    if "dict" in node and isinstance(node["dict"], dict):
        return {k: _decode(v, tensors, used, structs) for k, v in node["dict"].items()}
    if "tuple" in node and isinstance(node["tuple"], list):
        return tuple(_decode(v, tensors, used, structs) for v in node["tuple"])
    if "list" in node and isinstance(node["list"], list):
        return [_decode(v, tensors, used, structs) for v in node["list"]]
    if "value" in node and _json_scalar(node["value"]):
        return node["value"]
    if "struct" in node:
        name, fields, static = node["struct"], node.get("fields"), node.get("static")
        if name not in structs or not isinstance(fields, dict) or not isinstance(static, dict):
            raise ValueError(f"unknown or malformed struct {str(name)[:40]!r} in the params tree")
        cls, converters = structs[name]
        kwargs = {k: _decode(v, tensors, used, structs) for k, v in fields.items()}
        for k, v in static.items():
            if not _json_scalar(v):
                raise ValueError(f"static field {k!r} of {name} is not a plain value")
            kwargs[k] = converters[k](v) if k in converters else v
        return cls(**kwargs)
    raise ValueError(f"malformed params tree node {str(node)[:80]!r}")


def _json_default(x: Any) -> Any:
    # As the run's config.json is written (run_files.write_json): a writer at the end of a long
    # run must not fail on an odd value in `extra`; it is kept as text.
    if isinstance(x, np.generic | np.ndarray):
        return x.tolist()
    return str(x)


def tuples(x: Any) -> Any:
    """JSON gives lists where the payload held tuples (shapes, layer sizes, configs)."""
    if isinstance(x, dict):
        return {k: tuples(v) for k, v in x.items()}
    if isinstance(x, list):
        return tuple(tuples(v) for v in x)
    return x


# ----- writing -----


def _write(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    from safetensors.numpy import save

    tensors: dict[str, np.ndarray] = {}
    params = jax.tree_util.tree_map(np.asarray, payload["params"])
    tree = _encode(params, "params", tensors, _struct_types())
    body = {k: v for k, v in payload.items() if k not in ("format", "params")}
    body["params"] = tree
    metadata = {
        "format": payload["format"],
        # Key order kept: a student's observation_spec order is its ONNX input order.
        _META_KEY: json.dumps(body, default=_json_default),
    }
    return atomic.write_bytes(path, save(tensors, metadata=metadata))


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
    """Writes a teacher's file atomically; `extra` is stored as JSON."""
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
        "params": params,
        "extra": dict(extra or {}),
    }
    return _write(path, payload)


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
        "params": params,
        "extra": dict(extra or {}),
    }
    return _write(path, payload)


def save_payload(path: str | os.PathLike, payload: Mapping[str, Any]) -> Path:
    """Writes a payload as read by `read_policy`/`read_student` (the converter uses it)."""
    fmt = payload.get("format")
    if fmt not in (FORMAT, STUDENT_FORMAT):
        raise ValueError(f"payload format {fmt!r} is neither {FORMAT!r} nor {STUDENT_FORMAT!r}")
    _check_payload(dict(payload), fmt)
    return _write(path, dict(payload))


# ----- reading -----


def _looks_like_pickle(head: bytes) -> bool:
    # Only for the error message (a pickle is never loaded either way). Protocol 2+ pickles
    # start with PROTO n, protocols 0-1 often with '(', ']' or '}'; a safetensors file has its
    # JSON header's '{' at byte 8.
    if len(head) > 8 and head[8:9] == b"{":
        return False
    proto = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
    return proto or head[:1] in (b"(", b"]", b"}")


def _check_payload(payload: dict[str, Any], fmt: str) -> None:
    """Raises ValueError for a payload whose fields a reader would trip over."""
    if not isinstance(payload.get("env_name"), str):
        raise ValueError("no env_name")
    net = payload.get("network")
    if not isinstance(net, dict):
        raise ValueError("no network description")
    if not isinstance(payload.get("extra"), dict):
        raise ValueError("extra is not a dict")
    if fmt == FORMAT:
        missing = [k for k in TEACHER_NETWORK_KEYS if k not in net]
        if missing:
            raise ValueError(f"network description lacks {missing}")
        if net["activation"] not in ACTIVATIONS:
            raise ValueError(f"activation {net['activation']!r} not in {ACTIVATIONS}")
        if not isinstance(net["observation_size"], dict) or not isinstance(net["action_size"], int):
            raise ValueError("malformed observation_size or action_size")
        params = payload.get("params")
        if not isinstance(params, tuple | list) or len(params) != 3:
            raise ValueError("params are not (normaliser, policy, value)")
    else:
        unknown = set(net) - set(STUDENT_NETWORK_KEYS)
        if unknown or "action_size" not in net:
            raise ValueError(f"student network fields {sorted(net)} are not {STUDENT_NETWORK_KEYS}")
        spec = payload.get("observation_spec")
        if not isinstance(spec, dict) or not all(
            isinstance(v, tuple | list) and len(v) == 2 and isinstance(v[1], str)
            for v in spec.values()
        ):
            raise ValueError("malformed observation_spec")


def _read(
    path: str | os.PathLike, fmt: str | tuple[str, ...], env_name: str | None
) -> dict[str, Any]:
    """`fmt`: the format the file must have, or several it may have (`read_any`)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Policy file {str(path)!r} does not exist.")
    if path.suffix.lower() in LEGACY_SUFFIXES:
        raise legacy_error(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any parse failure means a corrupt or foreign file
        with path.open("rb") as f:
            head = f.read(16)
        if _looks_like_pickle(head):
            raise legacy_error(path) from None
        raise PolicyFileError(
            f"Policy file {str(path)!r} is corrupt or not a policy file ({SUFFIX}): {e}"
        ) from None
    found = metadata.get("format")
    allowed = (fmt,) if isinstance(fmt, str) else fmt
    if found not in allowed:
        what = {FORMAT: "a teacher policy", STUDENT_FORMAT: "a pixel student"}
        expected = " or ".join(f"{f!r} ({what.get(f, f)})" for f in allowed)
        raise PolicyFileError(
            f"Policy file {str(path)!r} has format {found!r} ({what.get(found, 'unknown')}); "
            f"expected {expected}."
        )
    try:
        body = json.loads(metadata[_META_KEY])
        if not isinstance(body, dict) or "params" not in body:
            raise ValueError("the metadata is not a payload")
        used: set[str] = set()
        params = _decode(body.pop("params"), tensors, used, _struct_types())
        if used != set(tensors):
            raise ValueError(f"tensors {sorted(set(tensors) - used)[:3]} are not in the tree")
        payload = {**tuples(body), "format": found, "params": params}
        _check_payload(payload, found)
    except (KeyError, TypeError, ValueError, RecursionError) as e:
        raise PolicyFileError(f"Policy file {str(path)!r} is corrupt: {e}") from None
    if env_name is not None and payload["env_name"] != env_name:
        raise PolicyFileError(
            f"Policy file {str(path)!r} was trained on {payload['env_name']!r}, not {env_name!r}."
        )
    return payload


def read_policy(path: str | os.PathLike, env_name: str | None = None) -> dict[str, Any]:
    """Loads and validates a teacher policy file; `env_name` (if given) must match the file's."""
    return _read(path, FORMAT, env_name)


def read_student(path: str | os.PathLike, env_name: str | None = None) -> dict[str, Any]:
    """Loads and validates a student file; `env_name` (if given) must match the file's."""
    return _read(path, STUDENT_FORMAT, env_name)


def read_any(path: str | os.PathLike, env_name: str | None = None) -> dict[str, Any]:
    """A teacher policy or a student file (its `format` says which)."""
    return _read(path, (FORMAT, STUDENT_FORMAT), env_name)


# ----- networks from a payload -----


def ppo_networks_of(payload: Mapping[str, Any]) -> Any:
    """brax's PPO networks described by a teacher file (params not included)."""
    from playground.networks.ppo import make_ppo_networks

    net = payload["network"]
    if net["activation"] not in ACTIVATIONS:
        raise PolicyFileError(f"activation {net['activation']!r} not in {ACTIVATIONS}")
    return make_ppo_networks(**{k: net[k] for k in TEACHER_NETWORK_KEYS})


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
) -> tuple[Callable[[Mapping[str, jax.Array], jax.Array], jax.Array], dict[str, Any]]:
    """Reads `path` and returns (policy_fn, payload)."""
    payload = read_policy(path, env_name)
    return make_policy_fn(payload, deterministic), payload


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
