"""Orbax checkpoints of a training run: the full training state plus the run's config.

Layout: `<run_dir>/checkpoints/<env_steps>/{state,config}`. Orbax writes each checkpoint into a
temporary folder and renames it only once complete, so a crash (even SIGKILL) mid-save leaves the
previous checkpoint as the latest; half-written folders are never picked up by `latest_step`.
Errors name the file and say why (missing, empty, unreadable, config mismatch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_DIR = "checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, with the path and the reason in the message."""


def checkpoint_root(path: str | Path) -> Path:
    """The folder that holds step folders, from a run folder or that folder itself."""
    path = Path(path).expanduser().resolve()
    if (path / CHECKPOINT_DIR).is_dir():
        return path / CHECKPOINT_DIR
    return path


class Checkpointer:
    """Saves and restores `{state pytree, config dict}` by step; keeps the newest `max_to_keep`."""

    def __init__(self, root: str | Path, max_to_keep: int = 3):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._manager = ocp.CheckpointManager(
            self.root,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            item_names=("state", "config"),
        )

    def save(self, step: int, state: Any, config: dict[str, Any]) -> Path:
        state = jax.tree.map(np.asarray, state)
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config)
            ),
            force=True,
        )
        self._manager.wait_until_finished()
        return self.root / str(step)

    def latest_step(self) -> int | None:
        self._manager.reload()
        return self._manager.latest_step()

    def close(self) -> None:
        self._manager.close()


def _step_dir(path: Path) -> tuple[Path, int]:
    """(checkpoint root, step) for a run folder, a checkpoints folder or one step folder."""
    if path.name.isdigit() and (path / "state").exists():
        return path.parent, int(path.name)
    root = checkpoint_root(path)
    if not root.is_dir():
        raise CheckpointError(f"No checkpoint at {path}: the folder does not exist.")
    steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and p.is_dir())
    if not steps:
        raise CheckpointError(
            f"No checkpoint in {root}: expected step folders (e.g. {root}/1000/state) written by "
            "learning/train_jax_ppo.py."
        )
    return root, steps[-1]


def steps_after(root: Path, step: int) -> list[int]:
    """Finished checkpoint steps in `root` newer than `step`."""
    return sorted(
        int(p.name) for p in Path(root).iterdir() if p.name.isdigit() and int(p.name) > step
    )


def read_config(path: str | Path) -> tuple[dict[str, Any], int, Path]:
    """(config, step, step folder) of the latest checkpoint under `path`."""
    root, step = _step_dir(Path(path).expanduser().resolve())
    config_file = root / str(step) / "config" / "metadata"
    if not config_file.exists():
        candidates = (
            list((root / str(step) / "config").glob("*"))
            if (root / str(step) / "config").is_dir()
            else []
        )
        if not candidates:
            raise CheckpointError(
                f"Checkpoint {root / str(step)} has no config: missing {config_file}."
            )
        config_file = candidates[0]
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"Checkpoint config {config_file} is unreadable: {e}") from e
    return config, step, root / str(step)


def restore(path: str | Path, target: Any) -> tuple[Any, dict[str, Any], int]:
    """(state shaped like `target`, config, step) from the latest checkpoint under `path`."""
    config, step, step_dir = read_config(path)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, jax.tree.map(np.asarray, target))
    try:
        restored = ocp.StandardCheckpointer().restore(step_dir / "state", abstract)
    except Exception as e:  # orbax raises many types for a damaged file
        raise CheckpointError(
            f"Checkpoint {step_dir / 'state'} could not be restored "
            f"({type(e).__name__}: {e}). It may be corrupt, or written for a different network or "
            "config; delete it to fall back to the previous step."
        ) from e
    return restored, config, step
