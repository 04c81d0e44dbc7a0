"""The run config and the run options (playground/training/run_config.py, options.py).

A run config holds its env's whole config, read without building the env (a build compiles the
model; for AlohaS2RPegInsertion it also computes the lifted states), and a run builds its env once.
The run code gets a frozen `RunOptions`, never the parsed flags.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import jax
import pytest

from playground import registry
from playground.envs.config import flat_keys
from playground.files import policy_file
from playground.training import distill, ppo, run_config, teacher
from playground.training.options import RunOptions
from playground.training.ppo_params import ppo_config
from playground.training.run_files import parse_overrides, tuples

TRAINING = Path(__file__).resolve().parents[1] / "playground" / "training"


def _overrides(name: str) -> list[str]:
    """A few KEY=VALUE overrides every task takes: a plain, a dotted and a list-valued key."""
    config = registry.get_default_config(name)
    scale = next(k for k in flat_keys(config) if k.startswith("dr.") and k.endswith("_scale"))
    items = ["episode_length=57", "delay.action_history=2", f"{scale}=[0.8, 1.25]"]
    if name in registry.VISION_ENVS:
        items.append("vision.width=40")
    return items


@pytest.mark.parametrize("name", registry.ALL_ENVS)
@pytest.mark.parametrize("with_overrides", [False, True], ids=["defaults", "overrides"])
def test_env_config_is_the_built_envs_config(name, with_overrides):
    items = _overrides(name) if with_overrides else []
    overrides = tuples(parse_overrides(items, "--env_config")) or None
    config = run_config.env_config(name, overrides)
    env = registry.load(name, config_overrides=overrides)
    assert config.is_locked
    assert config.to_dict() == env.config.to_dict()


def test_env_config_names_a_bad_key_as_the_env_does():
    with pytest.raises(KeyError, match="nosuch") as ours:
        run_config.env_config("FrankaReach", {"nosuch": 1})
    with pytest.raises(KeyError, match="nosuch") as built:
        registry.load("FrankaReach", config_overrides={"nosuch": 1})
    assert str(ours.value) == str(built.value)


def test_a_new_run_config_builds_no_env_and_rebuilds_the_same_one(tmp_path, monkeypatch):
    args = teacher.build_parser().parse_args(
        ["--env_name", "FrankaReach", "--logdir", str(tmp_path), "--env_config", "delay.skew=0.5"]
    )
    load = registry.load

    def no_env(*a, **k):
        raise AssertionError("make_run_config built an env")

    monkeypatch.setattr(registry, "load", no_env)
    config = teacher.make_run_config(args)
    assert config["env"]["delay"]["skew"] == 0.5
    monkeypatch.setattr(registry, "load", load)
    env, randomizer = run_config.load_env(config)
    assert env.config.to_dict() == config["env"] and randomizer is None


def test_run_options_are_frozen_and_taken_from_the_flags(tmp_path):
    args = teacher.build_parser().parse_args(
        [
            "--load_checkpoint_path",
            str(tmp_path),
            "--play_only",
            "--norun_evals",
            "--nouse_tb",
            "--use_wandb",
            "--noprogress",
            "--norender_final_policy",
            "--num_videos",
            "5",
            "--max_devices_per_host",
            "1",
        ]
    )
    options = teacher.run_options(args)
    assert options == RunOptions(
        load_checkpoint_path=str(tmp_path),
        play_only=True,
        run_evals=False,
        use_tb=False,
        use_wandb=True,
        progress=False,
        render_final_policy=False,
        num_videos=5,
        max_devices_per_host=1,
    )
    # Every field is a flag of the teacher's command line.
    assert all(hasattr(args, f.name) for f in dataclasses.fields(RunOptions))
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.use_tb = True  # type: ignore[misc]
    student = distill.run_options(
        distill.build_parser().parse_args(["--notb", "--num_videos", "0"])
    )
    assert (student.use_tb, student.progress, student.num_videos) == (False, True, 0)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update(f"{node.module}.{a.name}" for a in node.names)
            names.add(node.module)
    return names


def test_run_code_imports_no_command_line():
    """Algorithms and run code sit below the command lines; none of them parses flags."""
    clis = ("playground.training.teacher", "playground.training.distill", "argparse")
    for module in ("ppo", "dagger", "ppo_run", "sac_run", "dagger_run", "options"):
        bad = {n for n in _imports(TRAINING / f"{module}.py") if n.startswith(clis)}
        assert not bad, f"{module}.py imports {bad}"
    for module in ("run_config", "checkpoint", "run_files", "run_logger", "evaluate"):
        bad = {n for n in _imports(TRAINING / f"{module}.py") if n.startswith(clis[:2])}
        assert not bad, f"{module}.py imports {bad}"


def test_trainer_and_policy_file_build_the_same_networks():
    cfg = ppo_config("FrankaReach")
    sizes = {"state": (5,), "privileged_state": (9,)}
    ours = ppo.make_networks(sizes, 3, cfg.network)
    payload = {"network": {"observation_size": sizes, "action_size": 3, **cfg.network.to_dict()}}
    theirs = policy_file.ppo_networks_of(payload)
    key = jax.random.PRNGKey(0)
    for a, b in (
        (ours.policy_network, theirs.policy_network),
        (ours.value_network, theirs.value_network),
    ):
        shapes = jax.tree.map(lambda x: x.shape, (a.init(key), b.init(key)))
        assert shapes[0] == shapes[1]
