"""Policies to ONNX with jax2onnx: teachers (state MLP) and pixel students, one file each.

    model = export.teacher_to_onnx(policy_file.read_policy("run/policy.safetensors"))
    model = export.student_to_onnx(policy_file.read_student("run/student.safetensors"))
    payload = export.composite_payload(pick_payload, insert_payload)   # the Aloha whole task
    export.check_parity(model, jax_fn, observations)   # raises ParityError past the tolerance
    export.save(model, "policy.onnx", metadata)

The ONNX graph is the deterministic policy as the env sees it: the teacher's observation
normaliser is folded into the graph as constants, and the output is the squashed action in
[-1, 1] (`action`, shape [B, action_size]). Inputs are named after the observation keys (`state`
for a teacher; `rgb`, `depth`, `proprio` for a student) with a dynamic batch dimension `B`.
Weights are embedded, so a policy is exactly one `.onnx` file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import onnx

from playground.files import atomic

PARITY_TOL = 1e-5
ACTION_OUTPUT = "action"


class ParityError(RuntimeError):
    """The ONNX model's actions differ from JAX's by more than the tolerance."""


def teacher_forward(payload: Mapping[str, Any]) -> Callable[[jax.Array], jax.Array]:
    """`fn(state [B, n]) -> action [B, a]` of a teacher policy file's deterministic policy."""
    from playground.files.policy_file import ppo_networks_of

    net = payload["network"]
    sizes = {k: tuple(v) for k, v in net["observation_size"].items()}
    networks = ppo_networks_of(payload)
    normalizer, policy = jax.tree_util.tree_map(jnp.asarray, tuple(payload["params"][:2]))
    key = net["policy_obs_key"]

    def forward(state: jax.Array) -> jax.Array:
        # The policy network reads only its own key, but brax's normaliser walks every key,
        # so the other keys get zeros of their trained shapes.
        obs = {k: jnp.zeros(state.shape[:-1] + s, state.dtype) for k, s in sizes.items()}
        obs[key] = state
        logits = networks.policy_network.apply(normalizer, policy, obs)
        return jnp.tanh(logits[..., : net["action_size"]])  # the tanh-normal's mode

    return forward


def depth_max_m(payload: Mapping[str, Any]) -> float | None:
    """The depth camera's range cut the student trained with (metres), or None: beyond it the
    training images had no return (0), so the graph cuts a raw depth image the same way and a
    robot passes its camera's depth as it comes (render/depth_noise.py, `max_range`)."""
    vision = payload.get("extra", {}).get("config", {}).get("env", {}).get("vision", {})
    cut = vision.get("depth_noise", {}).get("max_range", {}) if vision.get("depth") else {}
    return float(cut["max_m"]) if cut.get("enabled") else None


def student_forward(payload: Mapping[str, Any]) -> Callable[..., jax.Array]:
    """`fn(*inputs in observation_spec order) -> action [B, a]` of a student file."""
    from playground.networks.student import Student

    student = Student(**payload["network"])
    params = jax.tree_util.tree_map(jnp.asarray, payload["params"])
    keys = tuple(payload["observation_spec"])
    cut = depth_max_m(payload)

    def forward(*inputs: jax.Array) -> jax.Array:
        obs = dict(zip(keys, inputs, strict=True))
        if cut is not None and "depth" in obs:
            # Idempotent on the env's images (already cut), so parity holds on them.
            obs["depth"] = jnp.where(obs["depth"] > cut, 0.0, obs["depth"])
        return student.apply(params, obs)[0]

    return forward


def composite_payload(pick: Mapping[str, Any], insert: Mapping[str, Any]) -> dict[str, Any]:
    """The Aloha composite teacher (`envs/aloha/composite.py`) as one exportable policy: the
    pick policy on each arm until the phase flag (the last entry of `state`) is set, then the
    insertion policy. Inputs `pick_state` [B, 2, 47] and `state` [B, 98]."""
    from playground.envs.aloha import composite

    return {"composite": True, "env_name": composite.INSERT_ENV, "pick": pick, "insert": insert}


def composite_forward(payload: Mapping[str, Any]) -> Callable[..., jax.Array]:
    from playground.envs.aloha import composite

    pick, insert = teacher_forward(payload["pick"]), teacher_forward(payload["insert"])

    def forward(pick_state: jax.Array, state: jax.Array) -> jax.Array:
        left, right = pick(pick_state[:, 0]), pick(pick_state[:, 1])
        return composite.combine(state[:, -1], left, right, insert(state))

    return forward


def forward(payload: Mapping[str, Any]) -> Callable[..., jax.Array]:
    """The deterministic policy of a teacher, student or composite, inputs in `input_specs`
    order."""
    if payload.get("composite"):
        return composite_forward(payload)
    return student_forward(payload) if "observation_spec" in payload else teacher_forward(payload)


def input_specs(payload: Mapping[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Input name -> (shape without batch, dtype name) of a teacher, student or composite."""
    if payload.get("composite"):
        pick = input_specs(payload["pick"])["state"][0]
        return {
            "pick_state": ((2, *pick), "float32"),
            "state": input_specs(payload["insert"])["state"],
        }
    if "observation_spec" in payload:
        return {k: (tuple(s), str(d)) for k, (s, d) in payload["observation_spec"].items()}
    net = payload["network"]
    key = net["policy_obs_key"]
    return {key: (tuple(net["observation_size"][key]), "float32")}


def to_onnx(payload: Mapping[str, Any], model_name: str) -> onnx.ModelProto:
    """The ONNX model of a teacher or student file's deterministic policy."""
    from jax2onnx import to_onnx as convert

    specs = input_specs(payload)
    inputs = [SimpleNamespace(shape=("B", *s), dtype=np.dtype(d)) for s, d in specs.values()]
    # onnx_ir warns once per intermediate value whose shape jax2onnx left untyped (the conv
    # student's reshapes); the graph is complete, so the lines tell a user
    # nothing (onnx.checker checks the graph before it is written). Only that logger, only while
    # converting.
    serde = logging.getLogger("onnx_ir.serde")
    level = serde.level
    serde.setLevel(logging.ERROR)
    try:
        return convert(
            forward(payload),
            inputs,
            model_name=model_name,
            input_names=list(specs),
            output_names=[ACTION_OUTPUT],
            return_mode="proto",
        )
    finally:
        serde.setLevel(level)


def jax_actions(payload: Mapping[str, Any], observations: Mapping[str, np.ndarray]) -> np.ndarray:
    """The JAX policy's actions `[B, a]` on a batch of observations (the parity reference)."""
    fn = jax.jit(forward(payload))
    return np.asarray(fn(*(jnp.asarray(observations[k]) for k in input_specs(payload))))


def onnx_actions(model: onnx.ModelProto, observations: Mapping[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run([ACTION_OUTPUT], {k: np.asarray(observations[k]) for k in names})[0]


def check_parity(
    model: onnx.ModelProto,
    payload: Mapping[str, Any],
    observations: Mapping[str, np.ndarray],
    tol: float = PARITY_TOL,
) -> float:
    """Max abs difference of ONNX and JAX actions on `observations`; ParityError past `tol`."""
    ours = onnx_actions(model, observations)
    reference = jax_actions(payload, observations)
    if ours.shape != reference.shape:
        raise ParityError(f"ONNX action shape {ours.shape} differs from JAX's {reference.shape}.")
    diff = float(np.max(np.abs(ours - reference)))
    if not np.isfinite(diff) or diff > tol:
        raise ParityError(
            f"ONNX and JAX actions differ by up to {diff:.3g} on {len(reference)} recorded "
            f"observations (tolerance {tol:g}); the export is not written."
        )
    return diff


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save(model: onnx.ModelProto, path: str | os.PathLike, metadata: Mapping[str, Any]) -> Path:
    """Writes `model` with `metadata` (values JSON-encoded) as one file, atomically."""
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    onnx.checker.check_model(model)
    # Weights embedded (no external data): the serialised proto is the whole file.
    return atomic.write_bytes(path, model.SerializeToString())
