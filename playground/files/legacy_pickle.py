"""One-time conversion of legacy pickle policy files (`.pkl`, format v1) to safetensors.

    python scripts/convert_policy.py OLD.pkl [NEW.safetensors]

This is the only module of the package that unpickles anything, and it exists only to read the
files the project wrote before it switched to safetensors. It is safe because unpickling can only
build the globals that `find_class` returns, and `_AllowListUnpickler.find_class` returns nothing
but the few our policy and student files contain: numpy arrays, dtypes and scalars, and brax's
normaliser state (`RunningStatisticsState`, `NormalizationMode`, `UInt64`: plain data classes).
A jax array is rebuilt as a numpy array by our own function, never by jax's reconstructor. Any
other global (`builtins.open`, `os.system`, `subprocess.Popen`, ...) is refused before it is
looked up, so a crafted file stops with `PolicyFileError` and runs nothing. The payload is then
checked and written through the safetensors writer, which stores only numeric arrays, the two
normaliser classes and JSON text; the new file is read back and compared array by array.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from playground import cli_checks
from playground.files import policy_file as pf

LEGACY_FORMATS = {
    "s2r-playground/ppo-policy/v1": pf.FORMAT,
    "s2r-playground/pixel-student/v1": pf.STUDENT_FORMAT,
}
# The globals a legacy file may name. numpy 2 pickles name numpy._core, numpy 1 numpy.core.
_NUMPY_RECONSTRUCTORS = {
    (module, name)
    for module in ("numpy._core.multiarray", "numpy.core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {(module, "_frombuffer") for module in ("numpy._core.numeric", "numpy.core.numeric")}
ALLOWED_GLOBALS = frozenset(
    {
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        *_NUMPY_RECONSTRUCTORS,
        ("brax.training.acme.running_statistics", "RunningStatisticsState"),
        ("brax.training.acme.running_statistics", "NormalizationMode"),
        ("brax.training.types", "UInt64"),
        ("jax._src.array", "_reconstruct_array"),
    }
)
MAX_BYTES = 1 << 30  # policy files are megabytes; a bigger .pkl is not one of ours


class _AllowListUnpickler(pickle.Unpickler):
    """An Unpickler that can build only `ALLOWED_GLOBALS` (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: not one of the classes policy files hold"
            )
        if (module, name) == ("jax._src.array", "_reconstruct_array"):
            return _numpy_from_jax_reduce
        return super().find_class(module, name)


# numpy's own array rebuilder (what `ndarray.__reduce__` names), the only one a jax array's
# pickle may call.
_NP_RECONSTRUCT = np.zeros(0).__reduce__()[0]


def _numpy_from_jax_reduce(fun: Any, args: Any, arr_state: Any, aval_state: Any) -> np.ndarray:
    """What jax's `_reconstruct_array` unpickles, as a numpy array and without jax."""
    del aval_state  # weak_type only; values, shape and dtype are in the numpy state
    if fun is not _NP_RECONSTRUCT or not isinstance(args, tuple):
        raise pickle.UnpicklingError("a jax array in the file is not rebuilt from numpy's state")
    array = fun(*args)
    if type(array) is not np.ndarray:
        raise pickle.UnpicklingError("a jax array in the file is not a numpy array underneath")
    array.__setstate__(arr_state)
    return array


def read_legacy(path: str | Path) -> dict[str, Any]:
    """The payload of a legacy `.pkl` policy or student file, in the current format's terms."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Legacy policy file {str(path)!r} does not exist.")
    if path.stat().st_size > MAX_BYTES:
        raise pf.PolicyFileError(f"{str(path)!r} is over {MAX_BYTES} bytes: not a policy file.")
    try:
        with path.open("rb") as f:
            payload = _AllowListUnpickler(f).load()
    except Exception as e:  # noqa: BLE001 - refused globals, damage: all mean "not converted"
        raise pf.PolicyFileError(
            f"{str(path)!r} cannot be converted: {e}. Only policy and student files written by "
            "this project are read, through an allow-list of the classes they hold."
        ) from None
    found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
    if found not in LEGACY_FORMATS:
        raise pf.PolicyFileError(
            f"{str(path)!r} has format {found!r}; expected one of {sorted(LEGACY_FORMATS)}."
        )
    return {**payload, "format": LEGACY_FORMATS[found]}


def default_output(path: Path) -> Path:
    return path.with_suffix(pf.SUFFIX)


def convert(src: str | Path, dst: str | Path | None = None, overwrite: bool = False) -> Path:
    """Writes `src` (legacy pickle) as safetensors at `dst` and checks every array survived."""
    src = Path(src)
    dst = Path(dst) if dst is not None else default_output(src)
    if dst.suffix != pf.SUFFIX:
        raise ValueError(f"the output {dst} must end in {pf.SUFFIX}")
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists; pass --overwrite to replace it.")
    payload = read_legacy(src)
    try:
        pf.save_payload(dst, payload)
    except (TypeError, ValueError) as e:
        raise pf.PolicyFileError(f"{str(src)!r} cannot be converted: {e}") from None
    reader = pf.read_student if payload["format"] == pf.STUDENT_FORMAT else pf.read_policy
    again = reader(dst)
    old, new = jax.tree.leaves(payload["params"]), jax.tree.leaves(again["params"])
    same = len(old) == len(new) and all(
        np.asarray(a).dtype == np.asarray(b).dtype and np.array_equal(a, b, equal_nan=True)
        for a, b in zip(old, new, strict=True)
    )
    if not same or jax.tree.structure(payload["params"]) != jax.tree.structure(again["params"]):
        dst.unlink()
        raise pf.PolicyFileError(f"{dst} did not read back identical to {src}; removed it.")
    return dst


def main(argv: list[str] | None = None) -> Path:
    p = cli_checks.ArgumentParser(
        prog="convert_policy.py",
        description="Convert a legacy .pkl policy or student file to .safetensors, reading it "
        "through an allow-list of the classes our files hold (anything else is refused).",
    )
    p.add_argument("src", type=Path, help="legacy policy.pkl, best_policy.pkl or student.pkl")
    p.add_argument("dst", type=Path, nargs="?", default=None, help="default: SRC.safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = p.parse_args(argv)
    try:
        # Before the source is read: a bad output path needs no unpickling to be refused.
        cli_checks.check_writable_file(args.dst or default_output(args.src), "dst")
        dst = convert(args.src, args.dst, args.overwrite)
    except (OSError, ValueError) as e:
        p.exit(2, f"convert_policy.py: error: {e}\n")
    print(f"{args.src} -> {dst} (every array identical)")
    return dst


if __name__ == "__main__":
    main(sys.argv[1:])
