"""Atomic file writes shared by every writer of run outputs (policy files, ONNX files, JSON).

A temp file in the destination folder is written, flushed to disk, then renamed over the
destination, so a reader sees either the old file or the whole new one, even after a power loss.
The temp file is created with mode 0o666 like `open()` does, so the user's umask decides the final
permissions (`tempfile.mkstemp` would leave 0o600 and lock other users of a shared machine out).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every platform can open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to `path` atomically and durably, with the user's normal permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(6)}")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:  # another writer's temp file: draw another name
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    _fsync_dir(path.parent)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """`payload` as indented JSON (keys sorted; anything else JSON cannot hold as its str)."""
    return write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str))
