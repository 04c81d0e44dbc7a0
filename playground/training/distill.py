"""Student distillation's command line (experimental/train_dagger.py, `s2r-distill-student`).

    python experimental/train_dagger.py --domain-randomization
    python experimental/train_dagger.py --teacher logs/FrankaReach-<ts>/policy.safetensors

The teacher is a state-based policy file written by learning/train_jax_ppo.py for the vision
task's state-based twin (`TEACHER_ENV` of the task class: FrankaReach for FrankaReachStereo);
without `--teacher`, the one shipped in params/ (`run_config.SHIPPED_TEACHERS`), else the newest
`<logdir>/<twin>-*/policy.safetensors`. The default task, AlohaS2RPegInsertionDistill, is the
whole bimanual task from the table: its teacher is the composite one (envs/aloha/composite.py),
`--pick_teacher` (AlohaS2RPick) per arm until both objects are up, then `--teacher`
(AlohaS2RPegInsertion). This module parses
the flags, builds the run config of a new run or checks a resume against the stored one
(run_config.py), gathers the flags that say how to run into `RunOptions` (options.py), builds the
env once and hands them to the run (dagger_run.py, which describes the run folder).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from playground import cli_checks, registry
from playground.cli_checks import (
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    probability,
)
from playground.networks.student import KINDS
from playground.training import checkpoint, dagger, dagger_run
from playground.training.dagger_run import (  # noqa: F401  (re-exported: their old home)
    init_student_params,
    load_teacher,
    make_student,
)
from playground.training.options import RunOptions
from playground.training.run_config import (  # noqa: F401  (re-exported: their old home)
    DEFAULT_ENCODER,
    STUDENT_DEFAULT_ENV,
    STUDENT_IDENTITY_FLAGS,
    STUDENT_RUN_DEFAULTS,
    check_dagger_config,
    check_latest,
    check_student_resume,
    find_teacher,
    load_env,
    make_student_config,
)
from playground.training.run_files import new_run_dir, parse_overrides, tuples

COMMAND = "experimental/train_dagger.py"
# Their names here before run_config.py held them.
DEFAULT_ENV = STUDENT_DEFAULT_ENV
IDENTITY_FLAGS = STUDENT_IDENTITY_FLAGS
RUN_DEFAULTS = STUDENT_RUN_DEFAULTS
# The range of each DAgger config field's flag (fields not named keep their plain type).
DAGGER_CHECKS = {
    "num_envs": positive_int,
    "unroll_length": positive_int,
    "episode_length": positive_int,
    "buffer_size": positive_int,
    "updates_per_iteration": positive_int,
    "update_unroll": positive_int,
    "batch_size": positive_int,
    "learning_rate": positive_float,
    "encoder_learning_rate": nonnegative_float,
    "beta_decay": probability,
    "pose_weight": nonnegative_float,
    "augment_shift_px": nonnegative_int,
    "hidden": positive_int,
    "features": positive_int,
    "depth_grid": positive_int,
    "student": cli_checks.one_of(KINDS),
    "rollout": cli_checks.one_of(dagger.ROLLOUTS),
}


def check_vision_env(env_name: str, flag: str) -> None:
    """UsageError unless `env_name` is a task with cameras (an unknown name lists them all)."""
    if env_name not in registry.VISION_ENVS:
        registry.get_default_config(env_name)  # an unknown name lists the valid ones
        raise cli_checks.UsageError(
            f"{flag} {env_name} has no cameras; use one of {', '.join(registry.VISION_ENVS)}."
        )


def dagger_config(items: list[str], env_name: str | None = None) -> Any:
    """`dagger.task_config(env_name)` with `--dagger KEY=VALUE` items set (the benchmark
    scripts' form), each checked as this command line checks its flag of the same name;
    UsageError names the first bad one."""
    cfg = dagger.task_config(env_name)
    for key, value in parse_overrides(items, "--dagger").items():
        if key not in cfg:
            raise cli_checks.UsageError(
                f"--dagger {key}: no such DAgger config field (fields: {', '.join(cfg)})."
            )
        check = DAGGER_CHECKS.get(key)
        for item in value if isinstance(value, list) else [value]:
            try:
                if check is not None:
                    check(str(item))
            except argparse.ArgumentTypeError as e:
                raise cli_checks.UsageError(f"--dagger {key}: {e}") from None
        try:
            cfg[key] = tuples(value)
        except (TypeError, ValueError):  # ConfigDict refuses a value of another type
            raise cli_checks.UsageError(
                f"--dagger {key}: expected {type(cfg[key]).__name__}, got {value!r}"
            ) from None
    check_dagger_config(cfg)
    return cfg


def _flag(p: argparse._ActionsContainer, name: str, **kw) -> None:
    # Underscores, as Playground's absl scripts; the parser takes `--some-flag` as an alias.
    p.add_argument(f"--{name}", dest=name, **kw)


def build_parser() -> argparse.ArgumentParser:
    vision = ", ".join(registry.VISION_ENVS)
    p = cli_checks.ArgumentParser(
        prog="train_dagger.py",
        description=(
            "Distil a state-based teacher policy into a pixel student with DAgger "
            f"(playground/training/dagger.py). Vision tasks: {vision}."
        ),
        allow_abbrev=False,
    )
    run = p.add_argument_group("run")
    _flag(run, "env_name", default=None, help=f"vision task (default: {DEFAULT_ENV})")
    _flag(
        run,
        "teacher",
        default=None,
        help="the teacher's policy.safetensors from learning/train_jax_ppo.py (default: the "
        "shipped one in params/, else the newest <logdir>/<state task>-*/policy.safetensors)",
    )
    _flag(
        run,
        "pick_teacher",
        default=None,
        help="the whole Aloha task: the AlohaS2RPick policy that drives each arm until both "
        "objects are up, --teacher then inserts (default: the shipped one in params/)",
    )
    _flag(
        run,
        "encoder",
        default=None,
        help=f"pretrained NatureCNN params folder, or 'none' (default: {DEFAULT_ENCODER})",
    )
    cli_checks.add_bool(
        run,
        "domain_randomization",
        None,
        "physics and visual domain randomisation (per env, drawn at reset)",
    )
    _flag(run, "seed", type=int, default=None, help="run seed (default: 0)")
    _flag(
        run, "iterations", type=positive_int, default=None, help="DAgger iterations (default: 40)"
    )
    _flag(
        run,
        "eval_every",
        type=positive_int,
        default=None,
        help="iterations between evaluations (10)",
    )
    _flag(run, "num_eval_envs", type=positive_int, default=None, help="held-out eval episodes (64)")
    _flag(
        run,
        "env_config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an env config field, e.g. --env_config vision.width=48 (repeatable)",
    )
    _flag(run, "logdir", default="logs", help="parent of run folders (default: logs)")
    _flag(run, "suffix", default=None, help="appended to the run folder name")
    _flag(
        run,
        "load_checkpoint_path",
        default=None,
        help="resume from a run folder, its checkpoints/ folder or one step folder",
    )
    _flag(
        run,
        "num_videos",
        type=nonnegative_int,
        default=2,
        help="episodes in camera_views.mp4 (0: none)",
    )
    cli_checks.add_bool(run, "progress", True, "show the console progress bar")
    cli_checks.add_bool(run, "tb", True, "write TensorBoard logs")
    hp = p.add_argument_group(
        "DAgger (default: playground/training/dagger.py task_config of the task)"
    )
    cli_checks.add_bool(
        hp, "freeze_encoder", None, "keep the pretrained RGB encoder fixed (default: fine-tune)"
    )
    for key, value in dagger.default_config().items():
        if isinstance(value, bool):
            continue
        kind = DAGGER_CHECKS.get(key, type(value[0] if isinstance(value, tuple) else value))
        text = f"default {value}" + "".join(
            f"; {task}: {own[key]}" for task, own in dagger.TASK_CONFIGS.items() if key in own
        )
        if isinstance(value, tuple):
            _flag(hp, key, type=kind, nargs="+", default=None, help=text)
        else:
            _flag(hp, key, type=kind, default=None, help=text)
    return p


def run_options(args: argparse.Namespace) -> RunOptions:
    """How this process runs the run, from the parsed flags."""
    return RunOptions(
        load_checkpoint_path=args.load_checkpoint_path,
        use_tb=args.tb,
        progress=args.progress,
        num_videos=args.num_videos,
    )


def make_run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The full description of a new run (JSON-able), from defaults plus the flags set."""
    return make_student_config(args, " ".join([COMMAND, *sys.argv[1:]]))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the command line; returns the summary also written to `<run>/final.json`."""
    return cli_checks.run_main(build_parser(), argv, _run)


def cli() -> int:
    """The `s2r-distill-student` console command."""
    main()
    return 0


def _run(args: argparse.Namespace) -> dict[str, Any]:
    options = run_options(args)
    if options.load_checkpoint_path:
        check_student_resume(args)
        run_config, step, step_dir = checkpoint.read_config(options.load_checkpoint_path)
        check_latest(step_dir, step)
        if args.iterations is not None:
            run_config["iterations"] = args.iterations
        run_dir = step_dir.parent.parent
        # The resumed run writes its checkpoints, student and final.json there.
        cli_checks.check_writable_dir(run_dir, "--load-checkpoint-path")
    else:
        # Before the run, not at its first write: the run folder is made under it.
        cli_checks.check_writable_dir(args.logdir, "--logdir")
        run_config = make_run_config(args)
        run_dir = new_run_dir(args.logdir, f"{run_config['env_name']}-dagger", args.suffix)
    env, randomizer = load_env(run_config)
    return dagger_run.run(options, run_config, run_dir, env, randomizer)
