"""Config helpers: overrides with dotted keys that fail loudly on a key the config lacks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ml_collections import config_dict

from playground.errors import UnknownNameError


def flat_keys(config: config_dict.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, config_dict.ConfigDict):
            keys.extend(flat_keys(value, name + "."))
        else:
            keys.append(name)
    return keys


def apply_overrides(
    config: config_dict.ConfigDict, overrides: Mapping[str, Any] | None, owner: str = "config"
) -> config_dict.ConfigDict:
    """Returns a copy of `config` with `overrides` applied.

    Keys may be dotted (`"obs_noise.qpos_rad"`) or nested dicts. An unknown key raises a KeyError
    naming the key and listing the valid ones, so a typo never silently does nothing.
    """
    config = config_dict.ConfigDict(config.to_dict())
    for key, value in _flatten(overrides or {}).items():
        node = config
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, config_dict.ConfigDict) or part not in node:
                valid = ", ".join(flat_keys(config))
                raise UnknownNameError(
                    f"Unknown config key {'.'.join(parts[: i + 1])!r} in override {key!r} for "
                    f"{owner}. Valid keys: {valid}"
                )
            if i < len(parts) - 1:
                node = node[part]
        node[parts[-1]] = value
    config.lock()
    return config


def _flatten(overrides: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, Mapping) and not isinstance(value, config_dict.ConfigDict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
