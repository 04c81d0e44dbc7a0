"""Names -> envs, their default configs and their domain randomisers.

    env = registry.load("AlohaS2RPick", config_overrides={"episode_length": 100})

An unknown name raises a KeyError listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Callable
from typing import Any

from ml_collections import config_dict

from playground.envs.aloha import distill, peg_insertion, pick
from playground.envs.base import MjxEnv
from playground.envs.franka import grasp, lift, reach, stereo
from playground.envs.vision import VisionEnv
from playground.errors import UnknownNameError


@dataclasses.dataclass(frozen=True)
class _Entry:
    env_class: type[MjxEnv]
    default_config: Callable[[], config_dict.ConfigDict]
    randomizer: Callable[..., Any] | None


_REGISTRY: dict[str, _Entry] = {
    "AlohaS2RPick": _Entry(pick.AlohaS2RPick, pick.default_config, pick.domain_randomize),
    "AlohaS2RPegInsertion": _Entry(
        peg_insertion.AlohaS2RPegInsertion,
        peg_insertion.default_config,
        peg_insertion.domain_randomize,
    ),
    "AlohaS2RPegInsertionDistill": _Entry(
        distill.AlohaS2RPegInsertionDistill, distill.default_config, distill.domain_randomize
    ),
    "FrankaGrasp": _Entry(grasp.FrankaGrasp, grasp.default_config, grasp.domain_randomize),
    "FrankaLift": _Entry(lift.FrankaLift, lift.default_config, lift.domain_randomize),
    "FrankaReach": _Entry(reach.FrankaReach, reach.default_config, reach.domain_randomize),
    "FrankaGraspStereo": _Entry(
        stereo.FrankaGraspStereo, stereo.grasp_config, grasp.domain_randomize
    ),
    "FrankaLiftStereo": _Entry(stereo.FrankaLiftStereo, stereo.lift_config, lift.domain_randomize),
    "FrankaReachStereo": _Entry(
        stereo.FrankaReachStereo, stereo.reach_config, reach.domain_randomize
    ),
}

ALL_ENVS: tuple[str, ...] = tuple(_REGISTRY)
# Tasks whose observations include camera images (playground.envs.vision).
VISION_ENVS: tuple[str, ...] = tuple(
    name for name, entry in _REGISTRY.items() if issubclass(entry.env_class, VisionEnv)
)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, ALL_ENVS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownNameError(f"Unknown env {name!r}.{hint} Valid names: {', '.join(ALL_ENVS)}")
    return _REGISTRY[name]


def get_env_class(name: str) -> type[MjxEnv]:
    return _entry(name).env_class


def get_default_config(name: str) -> config_dict.ConfigDict:
    return _entry(name).default_config()


def load(
    name: str,
    config: config_dict.ConfigDict | None = None,
    config_overrides: dict[str, Any] | None = None,
) -> MjxEnv:
    """Builds env `name` from `config` (default: its default config) with `config_overrides`."""
    entry = _entry(name)
    return entry.env_class(
        config=config or entry.default_config(), config_overrides=config_overrides
    )


def get_domain_randomizer(name: str, config: config_dict.ConfigDict | None = None):
    """`fn(model, rng[B, 2]) -> (batched model, in_axes)`, as brax's `randomization_fn` expects."""
    entry = _entry(name)
    if entry.randomizer is None:
        raise UnknownNameError(f"{name} has no domain randomiser.")
    if config is None:
        return entry.randomizer
    return functools.partial(entry.randomizer, config=config)
