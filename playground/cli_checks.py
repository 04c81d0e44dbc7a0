"""Checks of command-line values that every CLI shares, run before anything is built.

A bad value has to fail in the first second with one line that names the flag: unchecked, a
negative size trains for minutes before XLA refuses it, and an unwritable output path fails only
when the run is over, losing its result. Single flags are checked by argparse `type=` callables
(argparse names the flag in its error); checks of paths, or of flags that only make sense
together, raise `UsageError`, which each CLI's main prints as `<prog>: error: <message>` with exit
status 2 (`exit_usage`). Nothing here imports JAX, so a check costs no backend start.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

from playground.errors import UsageError

__all__ = ["UsageError"]  # one family for every bad input: playground/errors.py


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with the project's one command-line convention.

    - Flags are spelled as in MuJoCo Playground's absl CLIs: underscores (`--num_evals`), and a
      boolean is `--flag` / `--noflag` (`add_bool`).
    - The dashed spellings users type from Playground's other scripts and from argparse habits
      are aliases, accepted but not listed: `--num-evals` for `--num_evals`, `--no-flag`,
      `--no_flag` and `--no-flag-name` for `--noflag_name`.
    - An error is one line: the usage block argparse prints before it runs to dozens of lines
      for the trainers and buries the message.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (--help lists the flags)\n")

    def parse_known_args(self, args=None, namespace=None):
        import sys

        argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self._canonical(argv), namespace)

    def _canonical(self, argv: list[str]) -> list[str]:
        known = self._option_string_actions
        out = []
        for i, token in enumerate(argv):
            if token == "--":  # what follows is positional
                return out + argv[i:]
            if not token.startswith("--") or token in known:
                out.append(token)
                continue
            name, eq, value = token.partition("=")
            out.append(_alias_of(name, known) + eq + value)
        return out


def _alias_of(name: str, known) -> str:
    """The canonical flag that `name` spells another way, or `name` itself (argparse then
    reports it as unknown)."""
    if name in known:
        return name
    under = "--" + name[2:].replace("-", "_")
    if under in known:
        return under
    if under.startswith("--no_") and "--no" + under[5:] in known:
        return "--no" + under[5:]
    return name


def _to_bool(text: str) -> bool:
    low = str(text).lower()
    if low in ("1", "true", "t", "yes", "y"):
        return True
    if low in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_bool(
    container: argparse._ActionsContainer, name: str, default: bool | None, help_text: str
) -> None:
    """`--name`, `--name=true|false` and `--noname`, as absl accepts them; the parser's aliases
    add `--no-name` and `--no_name`."""
    shown = "per-env config" if default is None else str(default).lower()
    container.add_argument(
        f"--{name}",
        nargs="?",
        const=True,
        default=default,
        type=_to_bool,
        metavar="BOOL",
        help=f"{help_text} (default: {shown})",
    )
    container.add_argument(f"--no{name}", dest=name, action="store_false", help=argparse.SUPPRESS)


def exit_usage(parser: argparse.ArgumentParser, error: BaseException) -> NoReturn:
    """Prints `error` as the CLI's one-line error and exits with status 2 (as argparse does)."""
    # str(KeyError) quotes its message; the registry's KeyErrors are sentences.
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    parser.exit(2, f"{parser.prog}: error: {message}\n")


def run_main(parser: argparse.ArgumentParser, argv: list[str] | None, run: Callable[..., Any]):
    """Parses `argv` and returns `run(args)`. Bad input (the UsageError family, a missing file)
    ends as the one-line error; anything else keeps its traceback."""
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (UsageError, FileNotFoundError) as e:
        exit_usage(parser, e)


def _parse(text: str, kind: type) -> int | float:
    try:
        return kind(text)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def integer(text: str) -> int:
    """Any integer; the error says what was expected, not argparse's "invalid int value"."""
    return _parse(text, int)


def positive_int(text: str) -> int:
    value = _parse(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def one_of(choices: tuple[str, ...]):
    """An argparse type accepting only `choices` (whose error lists them)."""

    def check(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(choices)}, got {text!r}")
        return text

    check.__name__ = "choice"
    return check


def nonnegative_int(text: str) -> int:
    value = _parse(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive integer, got {text!r}")
    return value


def finite_float(text: str) -> float:
    value = _parse(text, float)
    if not math.isfinite(value):  # float() reads "nan" and "inf" without complaint
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or a positive number, got {text!r}")
    return value


def probability(text: str) -> float:
    value = finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}")
    return value


def choice(options: Iterable[str]) -> Callable[[str], str]:
    """A `type=` callable accepting only `options`; a typo gets the closest option suggested.

    For flags whose valid values are also typed elsewhere (a config field), where argparse's
    `choices=` would not run."""
    allowed = tuple(options)

    def check(text: str) -> str:
        if text in allowed:
            return text
        close = difflib.get_close_matches(text, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(allowed)}, got {text!r}{hint}")

    check.__name__ = "choice"
    return check


def _writable_folder(folder: Path, flag: str, shown: Path) -> None:
    """`folder` exists or can be made, and a file can be created in it; nothing is left."""
    try:
        probe = folder
        # The first part that exists is where the missing folders would be made.
        while not (probe.exists() or probe.is_symlink()):
            probe = probe.parent
        if not probe.is_dir():
            raise UsageError(
                f"{flag} {shown}: {probe} is not a folder, so nothing can be put there."
            )
        # Unlike os.access, a real file creation also catches a read-only filesystem and root.
        with tempfile.TemporaryFile(dir=probe):
            pass
    except UsageError:
        raise
    except OSError as e:
        raise UsageError(f"{flag} {shown} is not writable: {e.strerror or e}.") from None


def check_writable_dir(path: str | os.PathLike, flag: str) -> Path:
    """Raises UsageError unless `path` is a folder, or can be made into one, that this process can
    write in. Creates nothing that stays."""
    target = Path(path).expanduser()
    try:
        if target.exists() and not target.is_dir():
            raise UsageError(f"{flag} {target} is a file, not a folder.")
    except OSError as e:  # a name too long, say
        raise UsageError(f"{flag} {target} is not usable: {e.strerror or e}.") from None
    _writable_folder(target, flag, target)
    return target


def check_writable_file(path: str | os.PathLike, flag: str) -> Path:
    """Raises UsageError unless a file can be written at `path` (missing folders above it may be
    made). Creates nothing that stays."""
    target = Path(path).expanduser()
    try:
        if target.is_dir():
            raise UsageError(f"{flag} {target} is a folder, not a file.")
        if target.exists() and not os.access(target, os.W_OK):
            raise UsageError(f"{flag} {target} exists and is not writable.")
    except OSError as e:
        raise UsageError(f"{flag} {target} is not usable: {e.strerror or e}.") from None
    _writable_folder(target.parent, flag, target)
    return target
