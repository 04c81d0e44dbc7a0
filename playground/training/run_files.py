"""Small helpers the training command lines share: run folders, JSON files, config overrides."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from playground.errors import UsageError
from playground.files import atomic
from playground.files.policy_file import tuples  # noqa: F401  (run configs use it too)


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def new_run_dir(logdir: str, env_name: str, suffix: str | None) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{env_name}-{stamp}" + (f"-{suffix}" if suffix else "")
    path = Path(logdir).expanduser().resolve() / name
    n = 1
    while path.exists():  # two runs started within one second
        n += 1
        path = path.with_name(f"{name}-{n}")
    return path


write_json = atomic.write_json  # run outputs and the robot side's summaries share one writer


def parse_overrides(items: list[str], flag: str) -> dict[str, Any]:
    """`["a.b=1", "c=x"]` (a repeatable KEY=VALUE flag) to `{"a.b": 1, "c": "x"}`."""
    overrides = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key] = parse_value(value)
    return overrides
