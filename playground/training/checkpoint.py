"""Orbax checkpoints of a training run: the full training state plus the run's config.

Layout: `<run_dir>/checkpoints/<env_steps>/{state,config,_CHECKPOINT_METADATA}`. Orbax writes each
checkpoint into a temporary folder and renames it only once complete, so a crash (even SIGKILL)
mid-save leaves the previous checkpoint as the latest. A step counts only when it is complete:
a folder named by its step that holds orbax's commit marker `_CHECKPOINT_METADATA`, written last.
Anything else in `checkpoints/` (a file named like a step, a half-copied or rsync-interrupted
folder, orbax's `*.orbax-checkpoint-tmp` leftovers) is ignored, both when the latest step is
chosen and when a resume asks whether newer steps exist. When the latest checkpoint cannot be
restored (truncated or deleted files), resume falls back to the previous one with a warning that
names both, so a preempted job resumes unattended. Errors name the file and say why.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from playground.errors import UsageError

CHECKPOINT_DIR = "checkpoints"
COMMIT_MARKER = "_CHECKPOINT_METADATA"  # orbax writes it once the step folder is complete


class CheckpointError(UsageError):
    """A checkpoint that cannot be used, with the path and the reason in the message."""


class CheckpointFallbackWarning(UserWarning):
    """The latest checkpoint was unusable and an older one was taken instead."""


def is_complete(step_dir: Path) -> bool:
    """A step folder orbax finished writing (not a stray file or a half-copied folder)."""
    return step_dir.name.isdigit() and step_dir.is_dir() and (step_dir / COMMIT_MARKER).is_file()


def complete_steps(root: str | Path) -> list[int]:
    """The complete checkpoint steps in `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if is_complete(p))


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
        self._move_aside(self.root / str(step))
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config)
            ),
            force=True,
        )
        self._manager.wait_until_finished()
        return self.root / str(step)

    def _move_aside(self, step_dir: Path) -> None:
        """Frees a step's name when a resume writes that step again: the entry there was
        passed over (incomplete, or unrestorable and fallen back from), and orbax refuses to save
        over it. Renamed, not deleted, so nothing of the user's is lost."""
        if not step_dir.exists() and not step_dir.is_symlink():
            return
        n = 1
        while (aside := step_dir.with_name(f"{step_dir.name}.unusable-{n}")).exists():
            n += 1
        step_dir.rename(aside)
        warnings.warn(
            f"{step_dir} was not a usable checkpoint; moved it to {aside} to save step "
            f"{step_dir.name} again (delete it once you no longer need it).",
            CheckpointFallbackWarning,
            stacklevel=3,
        )
        self._manager.reload()

    def latest_step(self) -> int | None:
        steps = complete_steps(self.root)
        return steps[-1] if steps else None

    def close(self) -> None:
        self._manager.close()


def _candidates(path: Path) -> tuple[Path, list[int]]:
    """(checkpoint root, steps to try newest first) for a run folder, a checkpoints folder or one
    step folder. A step folder named explicitly is the only candidate (no fall-back)."""
    if path.name.isdigit() and path.is_dir() and (path / "state").exists():
        if not is_complete(path):
            raise CheckpointError(
                f"Checkpoint {path} is incomplete: it has no {COMMIT_MARKER}, which orbax writes "
                "last (a copy cut short?). Resume from the run folder to take the newest complete "
                "one."
            )
        return path.parent, [int(path.name)]
    root = checkpoint_root(path)
    if not root.is_dir():
        raise CheckpointError(f"No checkpoint at {path}: the folder does not exist.")
    steps = complete_steps(root)
    if not steps:
        raise CheckpointError(
            f"No checkpoint in {root}: expected complete step folders (e.g. {root}/1000/state "
            f"with {root}/1000/{COMMIT_MARKER}) written by learning/train_jax_ppo.py."
        )
    return root, steps[::-1]


def steps_after(root: Path, step: int) -> list[int]:
    """Complete checkpoint steps in `root` newer than `step` (stray entries do not count)."""
    return [s for s in complete_steps(root) if s > step]


def _read_step_config(step_dir: Path) -> dict[str, Any]:
    config_file = step_dir / "config" / "metadata"
    if not config_file.exists():
        candidates = list((step_dir / "config").glob("*")) if (step_dir / "config").is_dir() else []
        if not candidates:
            raise CheckpointError(f"Checkpoint {step_dir} has no config: missing {config_file}.")
        config_file = candidates[0]
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"Checkpoint config {config_file} is unreadable: {e}") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"Checkpoint config {config_file} is not a JSON object.")
    return config


def _restore_state(step_dir: Path, abstract: Any) -> Any:
    if not (step_dir / "state").is_dir():
        raise CheckpointError(f"Checkpoint {step_dir / 'state'} is missing.")
    try:
        return ocp.StandardCheckpointer().restore(step_dir / "state", abstract)
    except Exception as e:  # orbax raises many types for a damaged file
        raise CheckpointError(
            f"Checkpoint {step_dir / 'state'} could not be restored "
            f"({type(e).__name__}: {e}). It may be corrupt, or written for a different network or "
            "config."
        ) from e


def _first_usable(path: str | Path, load: Any) -> tuple[Any, int, Path]:
    """`load(step_dir)` of the newest candidate it succeeds on; a warning names the ones passed
    over. With no usable candidate, the newest one's error (older failures summarised)."""
    root, steps = _candidates(Path(path).expanduser().resolve())
    errors: list[CheckpointError] = []
    for step in steps:
        step_dir = root / str(step)
        try:
            value = load(step_dir)
        except CheckpointError as e:
            errors.append(e)
            continue
        if errors:
            bad = ", ".join(str(root / str(s)) for s in steps[: len(errors)])
            warnings.warn(
                f"Checkpoint {bad} could not be used ({errors[0]}); resuming from the previous "
                f"complete one, {step_dir}.",
                CheckpointFallbackWarning,
                stacklevel=3,
            )
        return value, step, step_dir
    if len(errors) > 1:
        raise CheckpointError(f"{errors[0]} The {len(errors) - 1} older checkpoint(s) failed too.")
    raise errors[0]


def read_config(path: str | Path) -> tuple[dict[str, Any], int, Path]:
    """(config, step, step folder) of the newest complete checkpoint under `path` whose config
    reads."""
    return _first_usable(path, _read_step_config)


def restore(path: str | Path, target: Any) -> tuple[Any, dict[str, Any], int]:
    """(state shaped like `target`, config, step) from the newest complete checkpoint under `path`
    that restores; older ones are tried in turn, with a `CheckpointFallbackWarning`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, jax.tree.map(np.asarray, target))
    (restored, config), step, _ = _first_usable(
        path, lambda d: (_restore_state(d, abstract), _read_step_config(d))
    )
    return restored, config, step
