"""An exported policy on onnxruntime, with its inputs checked before every call.

    policy = OnnxPolicy("logs/FrankaReach-<ts>/onnx/teacher.onnx")
    action = policy({"state": state})        # one observation -> [action_size]
    actions = policy({"state": states})      # a batch [B, n] -> [B, action_size]

Inputs are checked by name, dtype (exactly the exported one: uint8 images stay uint8), shape
(with or without the batch dimension) and finiteness; a bad input is an `OnnxPolicyError` that
says which input and why, so a robot never acts on garbage. Outputs are checked too: a float
`[B, action_size]` (`[action_size]` unbatched) of finite values, else an `OnnxPolicyError` (the
runner counts it as a policy fault). `metadata` holds what the exporter wrote (task, inputs,
action scaling, control rate, source hash, parity), `last_latency_s` the time of the latest call.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from playground.errors import UsageError

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8, "tensor(double)": np.float64}


class OnnxPolicyError(UsageError):
    """An ONNX file or an input that cannot be used, with the reason."""


class OnnxPolicy:
    def __init__(self, path: str | os.PathLike, threads: int = 1):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX policy {str(self.path)!r} does not exist.")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own types for unreadable models
            raise OnnxPolicyError(
                f"ONNX policy {str(self.path)!r} cannot be loaded (corrupt or not ONNX): {e}"
            ) from e
        raw = self.session.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, Any] = {}
        for key, value in raw.items():
            try:
                self.metadata[key] = json.loads(value)
            except ValueError:
                self.metadata[key] = value
        self.inputs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        for spec in self.session.get_inputs():
            if spec.type not in _ORT_TYPES:
                raise OnnxPolicyError(f"Input {spec.name!r} has unsupported type {spec.type}.")
            self.inputs[spec.name] = (tuple(spec.shape[1:]), np.dtype(_ORT_TYPES[spec.type]))
        out = self.session.get_outputs()[0]
        self.output = out.name
        if out.type not in ("tensor(float)", "tensor(double)"):
            raise OnnxPolicyError(f"Output {out.name!r} has type {out.type}; actions are floats.")
        # With a symbolic last dimension `action_size` refuses to guess, and each call's output
        # check leaves the size to the caller (the runner checks the task's).
        last = out.shape[-1] if out.shape else None
        self._action_size = last if isinstance(last, int) and last > 0 else None
        self.last_latency_s = float("nan")

    @property
    def action_size(self) -> int:
        if self._action_size is None:
            out = self.session.get_outputs()[0]
            raise OnnxPolicyError(
                f"Output {out.name!r} declares shape {out.shape}: no fixed action size."
            )
        return self._action_size

    def check(self, obs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], bool]:
        """(validated feeds with a batch dimension, whether the call was unbatched)."""
        missing = [k for k in self.inputs if k not in obs]
        if missing:
            raise OnnxPolicyError(
                f"Missing input(s) {missing}; the policy reads {list(self.inputs)}."
            )
        feeds, unbatched = {}, None
        for name, (shape, dtype) in self.inputs.items():
            value = np.asarray(obs[name])
            if value.dtype != dtype:
                raise OnnxPolicyError(
                    f"Input {name!r} has dtype {value.dtype}; the policy takes {dtype} "
                    f"(shape {shape})."
                )
            if value.shape == shape:
                single = True
                value = value[None]
            elif value.ndim == len(shape) + 1 and value.shape[1:] == shape:
                single = False
            else:
                raise OnnxPolicyError(
                    f"Input {name!r} has shape {value.shape}; the policy takes {shape} or "
                    f"[B, {', '.join(map(str, shape))}]."
                )
            if unbatched is not None and single != unbatched:
                raise OnnxPolicyError("Mixing batched and unbatched inputs in one call.")
            unbatched = single
            if dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise OnnxPolicyError(f"Input {name!r} has non-finite values.")
            feeds[name] = value
        return feeds, bool(unbatched)

    def __call__(self, obs: Mapping[str, Any]) -> np.ndarray:
        feeds, unbatched = self.check(obs)
        t0 = time.perf_counter()
        (action,) = self.session.run([self.output], feeds)
        self.last_latency_s = time.perf_counter() - t0
        batch = len(next(iter(feeds.values()))) if feeds else 1
        action = self.check_output(action, batch)
        return action[0] if unbatched else action

    def check_output(self, action: Any, batch: int) -> np.ndarray:
        """`action` when it is a finite float `[batch, action_size]`, else an OnnxPolicyError."""
        action = np.asarray(action)
        if action.dtype.kind != "f":
            raise OnnxPolicyError(f"Output {self.output!r} has dtype {action.dtype}, not float.")
        size = self._action_size
        if action.ndim != 2 or action.shape[0] != batch or (size and action.shape[1] != size):
            raise OnnxPolicyError(
                f"Output {self.output!r} has shape {action.shape}; expected "
                f"[{batch}, {size or 'action_size'}]."
            )
        if not np.all(np.isfinite(action)):
            raise OnnxPolicyError(f"Output {self.output!r} has non-finite values.")
        return action
