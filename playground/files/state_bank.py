"""Banks of simulator states that episodes can start from (`.npz`, arrays only).

AlohaS2RPegInsertion starts part of its episodes from the states where a pick policy had just
lifted both objects (`scripts/switch_states.py` writes them), so its insertion teacher learns
from grasps as a policy leaves them. The file holds `qpos [n, nq]`, `qvel [n, nv]`, `ctrl [n, nu]`
and a JSON `meta` string (scene, source policy, command). It is read with
`allow_pickle=False`: numpy then refuses object arrays, so loading runs no code.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from playground.errors import UsageError
from playground.files import atomic

KEYS = ("qpos", "qvel", "ctrl")
_REPO = Path(__file__).resolve().parents[2]


class StateBankError(UsageError):
    """A state bank file that is missing, unreadable, or made for another model."""


def save(
    path: str | os.PathLike,
    qpos: np.ndarray,
    qvel: np.ndarray,
    ctrl: np.ndarray,
    meta: dict[str, Any],
) -> Path:
    arrays = {"qpos": qpos, "qvel": qvel, "ctrl": ctrl}
    n = {len(a) for a in arrays.values()}
    if len(n) != 1 or 0 in n:
        raise ValueError(f"qpos, qvel and ctrl need the same non-zero row count, got {n}")
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        **{k: np.asarray(v, np.float32) for k, v in arrays.items()},
        meta=np.asarray(json.dumps(meta, sort_keys=True)),
    )
    return atomic.write_bytes(path, buf.getvalue())


def load(path: str | os.PathLike, model: mujoco.MjModel) -> dict[str, Any]:
    """`{"qpos", "qvel", "ctrl": float32 arrays, "meta": dict}`, checked against `model`."""
    path = Path(path)
    if not path.is_absolute() and not path.is_file() and (_REPO / path).is_file():
        # A run config names its bank relative to the checkout (params/...): found from any
        # working directory.
        path = _REPO / path
    if not path.is_file():
        raise StateBankError(
            f"{path}: no such state bank file (write one with scripts/switch_states.py)"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in (*KEYS, "meta") if k not in z.files]
            if missing:
                raise StateBankError(f"{path}: not a state bank, it lacks {', '.join(missing)}")
            out = {k: np.asarray(z[k], np.float32) for k in KEYS}
            meta = json.loads(str(z["meta"]))
    except StateBankError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise StateBankError(f"{path}: not a readable state bank ({e})") from e
    sizes = {"qpos": model.nq, "qvel": model.nv, "ctrl": model.nu}
    rows = len(out["qpos"])
    for k, size in sizes.items():
        a = out[k]
        if a.ndim != 2 or a.shape[1] != size or len(a) != rows:
            raise StateBankError(
                f"{path}: {k} has shape {a.shape}, this model needs [{rows}, {size}] "
                "(a bank written for another scene?)"
            )
        if not np.all(np.isfinite(a)):
            raise StateBankError(f"{path}: {k} holds non-finite values")
    if rows == 0:
        raise StateBankError(f"{path}: the bank is empty")
    out["meta"] = meta if isinstance(meta, dict) else {}
    return out
