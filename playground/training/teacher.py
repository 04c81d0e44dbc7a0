"""Teacher training's command line (learning/train_jax_ppo.py, `s2r-train-teacher`).

It parses the flags, builds the run config of a new run or checks a resume against the stored one
(run_config.py), gathers the flags that say how to run into `RunOptions` (options.py), builds the
env once and hands all of them to the run: ppo_run.py (the default) or sac_run.py (`--algo sac`).
ppo_run.py describes the run folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import jax

from playground import cli_checks, registry
from playground.cli_checks import nonnegative_int, positive_int
from playground.errors import UsageError
from playground.training import checkpoint, ppo_run, sac_run
from playground.training.options import RunOptions
from playground.training.ppo_run import BEST_POLICY  # noqa: F401  (users' code reads it here)
from playground.training.run_config import (  # noqa: F401  (re-exported: their old home)
    NETWORK_FLAGS,
    PPO_FLAGS,
    SAC_ONLY_FLAGS,
    TEACHER_DEFAULT_ENV,
    TEACHER_IDENTITY_FLAGS,
    check_latest,
    check_teacher_resume,
    check_train_config,
    extend_run,
    load_env,
    make_teacher_config,
)
from playground.training.run_files import new_run_dir

COMMAND = "learning/train_jax_ppo.py"
# Their names here before run_config.py held them.
DEFAULT_ENV = TEACHER_DEFAULT_ENV
IDENTITY_FLAGS = TEACHER_IDENTITY_FLAGS


def build_parser() -> argparse.ArgumentParser:
    p = cli_checks.ArgumentParser(
        prog="train_jax_ppo.py",
        description=(
            "Train a privileged-state teacher with Brax PPO (or SAC) on a registered task. "
            f"Tasks: {', '.join(registry.ALL_ENVS)}. Hyperparameters default to the task's "
            "config (playground/training/ppo_params.py); each flag set here overrides one field."
        ),
        allow_abbrev=False,
    )
    run = p.add_argument_group("run")
    run.add_argument("--env_name", default=None, help=f"task to train (default: {DEFAULT_ENV})")
    run.add_argument("--algo", choices=("ppo", "sac"), default=None, help="learner (default: ppo)")
    run.add_argument("--seed", type=int, default=None, help="run seed (default: 1)")
    cli_checks.add_bool(
        run, "domain_randomization", None, "per-env physics randomisation (default false)"
    )
    run.add_argument(
        "--env_config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an env config field, e.g. --env_config impl=warp "
        "--env_config delay.action_history=1 (repeatable)",
    )
    run.add_argument(
        "--impl", default=None, help="physics implementation: jax, warp or native (MuJoCo C, CPU)"
    )
    run.add_argument("--logdir", default="logs", help="parent of run folders (default: logs)")
    run.add_argument("--suffix", default=None, help="appended to the run folder name")
    run.add_argument(
        "--load_checkpoint_path",
        default=None,
        help="resume from a run folder, its checkpoints/ folder or one step folder; "
        "the run continues with the checkpoint's config and step counter; with "
        "--num_timesteps it trains longer (more epochs of the same size)",
    )
    run.add_argument(
        "--init_policy",
        default=None,
        metavar="POLICY.safetensors",
        help="start a new run from a teacher file's weights and normaliser (fine-tuning); the "
        "file must be of the same task and network; the optimiser starts afresh",
    )
    cli_checks.add_bool(run, "play_only", False, "only evaluate (and render) the loaded checkpoint")
    cli_checks.add_bool(run, "use_tb", True, "write TensorBoard scalars to <run>/tb")
    cli_checks.add_bool(run, "use_wandb", False, "also log to Weights & Biases (needs wandb)")
    cli_checks.add_bool(
        run, "render_final_policy", True, "write <run>/rollout.mp4 of the final policy"
    )
    run.add_argument(
        "--num_videos", type=positive_int, default=3, help="episodes in the video (default 3)"
    )
    cli_checks.add_bool(run, "run_evals", True, "evaluate on held-out seeds after every epoch")
    cli_checks.add_bool(run, "progress", True, "show the console progress bar")
    dist = p.add_argument_group("devices and hosts")
    dist.add_argument(
        "--max_devices_per_host",
        type=positive_int,
        default=None,
        help="use at most this many local devices (default: all)",
    )
    dist.add_argument(
        "--coordinator_address",
        default=None,
        help="host:port of process 0, for multi-host training via jax.distributed",
    )
    dist.add_argument("--num_processes", type=positive_int, default=None, help="hosts in the job")
    dist.add_argument("--process_id", type=nonnegative_int, default=None, help="this host's index")
    hp = p.add_argument_group("hyperparameters (default: per-env config)")
    for name, (kind, text) in PPO_FLAGS.items():
        if kind is bool:
            cli_checks.add_bool(hp, name, None, text)
        else:
            hp.add_argument(f"--{name}", type=kind, default=None, help=text)
    for name, (kind, text) in NETWORK_FLAGS.items():
        hp.add_argument(f"--{name}", type=kind, default=None, help=text)
    sac = p.add_argument_group("SAC only")
    sac.add_argument(
        "--grad_updates_per_step", type=positive_int, default=None, help="SAC updates per step"
    )
    sac.add_argument(
        "--min_replay_size", type=nonnegative_int, default=None, help="SAC warm-up transitions"
    )
    sac.add_argument(
        "--max_replay_size", type=positive_int, default=None, help="SAC replay capacity"
    )
    return p


def run_options(args: argparse.Namespace) -> RunOptions:
    """How this process runs the run, from the parsed flags."""
    return RunOptions(
        load_checkpoint_path=args.load_checkpoint_path,
        play_only=args.play_only,
        run_evals=args.run_evals,
        use_tb=args.use_tb,
        use_wandb=args.use_wandb,
        progress=args.progress,
        render_final_policy=args.render_final_policy,
        num_videos=args.num_videos,
        max_devices_per_host=args.max_devices_per_host,
    )


def make_run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The full description of a new run (JSON-able), from defaults plus the flags set."""
    return make_teacher_config(args, " ".join([COMMAND, *sys.argv[1:]]))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the command line; returns the summary also written to `<run>/final.json`."""
    return cli_checks.run_main(build_parser(), argv, _run)


def cli() -> int:
    """The `s2r-train-teacher` console command."""
    main()
    return 0


def _run(args: argparse.Namespace) -> dict[str, Any]:
    options = run_options(args)
    if args.process_id is not None and args.num_processes is not None:
        if args.process_id >= args.num_processes:
            raise cli_checks.UsageError(
                f"--process_id {args.process_id} must be below --num_processes "
                f"{args.num_processes}."
            )
    if options.load_checkpoint_path is None:
        if options.play_only:
            raise UsageError("--play_only needs --load_checkpoint_path (a run to evaluate).")
        # Before the run, not at its first write: the run folder is made under it.
        cli_checks.check_writable_dir(args.logdir, "--logdir")
    if args.coordinator_address:
        jax.distributed.initialize(
            coordinator_address=args.coordinator_address,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    if args.init_policy is not None and options.load_checkpoint_path:
        raise UsageError(
            "--init_policy starts a new run; --load_checkpoint_path resumes one: give one of them."
        )
    if options.load_checkpoint_path:
        sac_run.refuse_resume(Path(options.load_checkpoint_path))
        saved, step, step_dir = checkpoint.read_config(options.load_checkpoint_path)
        check_teacher_resume(args, saved)
        if not options.play_only:
            check_latest(
                step_dir,
                step,
                " to continue from the latest, or delete the newer step folders to branch from "
                "this one",
            )
        run_config = saved
        if args.num_timesteps is not None:
            run_config = extend_run(saved, args.num_timesteps)
        run_dir = step_dir.parent.parent
        # The resumed run writes its checkpoints, policies and final.json there.
        cli_checks.check_writable_dir(run_dir, "--load_checkpoint_path")
    else:
        run_config = make_run_config(args)
        run_dir = new_run_dir(args.logdir, run_config["env_name"], args.suffix)
    env, randomizer = load_env(run_config)
    if run_config["algo"] == "sac":
        return sac_run.run(options, run_config, run_dir, env, randomizer)
    return ppo_run.run(options, run_config, run_dir, env, randomizer)
