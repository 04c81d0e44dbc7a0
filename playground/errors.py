"""The errors that mean "bad input", which every command line prints as one line.

A flag's value, a file (policy, student, checkpoint, state bank, ONNX), a task name or a config
that cannot be used raises a `UsageError` subclass whose message is the whole line the CLI prints
(`<prog>: error: <message>`, exit status 2). Anything else is a bug or a failure inside the run
and keeps its traceback: the CLIs catch this family only.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A bad command-line value, file or config; the message is the whole line the CLI prints."""


class UnknownNameError(UsageError, KeyError):
    """A task (or other registered) name that does not exist; the message lists the valid ones.

    Also a KeyError, as a lookup by name raises one."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""
