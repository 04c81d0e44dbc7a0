"""Teacher training: the command line of learning/train_jax_ppo.py and the run it drives.

A run folder `logs/<env>-<timestamp>[-suffix]/` gets `config.json` (everything needed to rebuild
the run), `checkpoints/<step>/` (orbax: params, optimiser state, normaliser, rng and the config),
`tb/` (TensorBoard), `metrics.jsonl`, `learning_curve.png`, the final policy `policy.safetensors`
(read by AlohaS2RPegInsertion's phase 1, the DAgger distiller and the ONNX exporter),
`best_policy.safetensors` (the policy of the best held-out evaluation so far, the latest on a
tie), `final.json` (held-out evaluation and wall times) and `rollout.mp4`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_dict

from playground import cli_checks, registry
from playground.cli_checks import (
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    probability,
)
from playground.files import policy_file
from playground.training import checkpoint, evaluate, ppo_params, run_logger, video
from playground.training.run_files import new_run_dir, parse_overrides, tuples, write_json

DEFAULT_ENV = "AlohaS2RPick"
BEST_POLICY = policy_file.BEST_POLICY_FILE


def _episode_length(text: str) -> int:
    value = cli_checks.integer(text)
    if value != -1 and value < 1:
        # Any value <= 0 would silently mean the env's own length; only -1 says so.
        raise argparse.ArgumentTypeError(
            f"must be a positive number of steps or -1 (the env's own), got {text!r}"
        )
    return value


# Hyperparameter flags (Playground's names) -> (type, help). Unset flags keep the per-env config.
# Each type checks its value's range, so a bad value fails before anything is built.
PPO_FLAGS: dict[str, tuple[Any, str]] = {
    "num_timesteps": (positive_int, "total env steps to train for"),
    "num_evals": (
        positive_int,
        "evaluations (and checkpoints) over the run, including the one at step 0",
    ),
    "reward_scaling": (positive_float, "multiplies rewards in the PPO loss"),
    "episode_length": (_episode_length, "steps per episode (-1: the env's own)"),
    "normalize_observations": (bool, "running mean/std normalisation of observations"),
    "action_repeat": (positive_int, "env steps per policy action"),
    "unroll_length": (positive_int, "steps per env in one rollout segment"),
    "num_minibatches": (positive_int, "minibatches per PPO pass"),
    "num_updates_per_batch": (positive_int, "PPO passes over each batch"),
    "discounting": (probability, "discount factor gamma"),
    "learning_rate": (positive_float, "Adam learning rate"),
    "entropy_cost": (nonnegative_float, "entropy bonus weight"),
    "num_envs": (positive_int, "parallel training envs (split evenly over all devices and hosts)"),
    "num_eval_envs": (positive_int, "held-out evaluation episodes per evaluation"),
    "batch_size": (positive_int, "segments per minibatch"),
    "max_grad_norm": (nonnegative_float, "global gradient-norm clip (0: off)"),
    "clipping_epsilon": (positive_float, "PPO ratio clip"),
    "gae_lambda": (probability, "GAE lambda"),
}
NETWORK_FLAGS: dict[str, tuple[Any, str]] = {
    "policy_hidden_layer_sizes": (str, "policy MLP sizes, e.g. 32,32,32,32"),
    "value_hidden_layer_sizes": (str, "value MLP sizes, e.g. 256,256,256,256,256"),
    "policy_obs_key": (str, "observation the policy sees (state)"),
    "value_obs_key": (str, "observation the value function sees (privileged_state)"),
    # The policy file stores the name and its reader accepts only these: an unknown one would
    # otherwise fail only at the first save, after the first epoch.
    "activation": (
        cli_checks.choice(policy_file.ACTIVATIONS),
        f"hidden activation: {', '.join(policy_file.ACTIVATIONS)}",
    ),
}
SAC_ONLY_FLAGS = ("grad_updates_per_step", "min_replay_size", "max_replay_size")
# Flags that describe the run itself; on resume they must match the checkpoint's (or be unset).
IDENTITY_FLAGS = ("env_name", "algo", "seed", "domain_randomization")


def _to_bool(text: str) -> bool:
    low = str(text).lower()
    if low in ("1", "true", "t", "yes", "y"):
        return True
    if low in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_bool(p: argparse.ArgumentParser, name: str, default: bool | None, help_text: str) -> None:
    """--name, --name=true|false and --noname, as absl (and so Playground's script) accepts."""
    shown = "per-env config" if default is None else str(default).lower()
    p.add_argument(
        f"--{name}",
        nargs="?",
        const=True,
        default=default,
        type=_to_bool,
        metavar="BOOL",
        help=f"{help_text} (default: {shown})",
    )
    p.add_argument(f"--no{name}", dest=name, action="store_false", help=argparse.SUPPRESS)


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
    _add_bool(run, "domain_randomization", None, "per-env physics randomisation (default false)")
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
    _add_bool(run, "play_only", False, "only evaluate (and render) the loaded checkpoint")
    _add_bool(run, "use_tb", True, "write TensorBoard scalars to <run>/tb")
    _add_bool(run, "use_wandb", False, "also log to Weights & Biases (needs wandb)")
    _add_bool(run, "render_final_policy", True, "write <run>/rollout.mp4 of the final policy")
    run.add_argument(
        "--num_videos", type=positive_int, default=3, help="episodes in the video (default 3)"
    )
    _add_bool(run, "run_evals", True, "evaluate on held-out seeds after every epoch")
    _add_bool(run, "progress", True, "show the console progress bar")
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
            _add_bool(hp, name, None, text)
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


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.replace(" ", ",").split(",") if s)
    except ValueError as e:
        raise ValueError(f"layer sizes must be integers separated by commas, got {text!r}") from e
    if not sizes or min(sizes) < 1:
        raise ValueError(f"layer sizes must be positive integers, got {text!r}")
    return sizes


def make_run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The full description of a new run (JSON-able), from defaults plus the flags set."""
    env_name = args.env_name or DEFAULT_ENV
    algo = args.algo or "ppo"
    env_overrides = parse_overrides(args.env_config, "--env_config")
    if args.impl is not None:
        env_overrides["impl"] = args.impl
    cfg = ppo_params.ppo_config(env_name) if algo == "ppo" else ppo_params.sac_config(env_name)
    for name in PPO_FLAGS:
        value = getattr(args, name)
        if value is None:
            continue
        if name not in cfg:
            raise ValueError(f"--{name} does not apply to {algo.upper()}.")
        cfg[name] = value
    for name in NETWORK_FLAGS:
        value = getattr(args, name)
        if value is None:
            continue
        if algo == "sac" and name != "activation":
            if name == "policy_hidden_layer_sizes":
                cfg.network.hidden_layer_sizes = _sizes(value)
                continue
            raise ValueError(f"--{name} does not apply to SAC (its actor and critic share sizes).")
        cfg.network[name] = _sizes(value) if name.endswith("sizes") else value
    for name in SAC_ONLY_FLAGS:
        value = getattr(args, name)
        if value is not None:
            if algo != "sac":
                raise ValueError(f"--{name} applies to --algo sac only.")
            cfg[name] = value
    check_train_config(cfg, algo, args.max_devices_per_host)
    # Built only now: a bad size above fails in a second, not after the env has compiled.
    env = registry.load(env_name, config_overrides=tuples(env_overrides) or None)
    return {
        "env_name": env_name,
        "algo": algo,
        "seed": 1 if args.seed is None else args.seed,
        "domain_randomization": bool(args.domain_randomization),
        "env": env.config.to_dict(),
        "train": cfg.to_dict(),
        "command": " ".join(["learning/train_jax_ppo.py", *sys.argv[1:]]),
    }


def check_train_config(
    cfg: config_dict.ConfigDict, algo: str, max_devices_per_host: int | None = None
) -> None:
    """Raises UsageError for sizes that only fail together, before any env is built.

    Each flag's own range is checked by argparse; these are the splits the trainers need, which
    otherwise fail inside them after the env has compiled (PPO: batch_size * num_minibatches
    segments per update drawn evenly from num_envs envs on every device; SAC: brax's own asserts
    on the replay sizes)."""
    devices = len(jax.local_devices()[: max_devices_per_host or None]) * jax.process_count()
    if algo == "ppo":
        from playground.training.ppo import check_batch

        try:
            check_batch(cfg, devices)
        except ValueError as e:
            raise cli_checks.UsageError(str(e)) from None
        return
    if cfg.num_envs % devices:
        raise cli_checks.UsageError(
            f"num_envs ({cfg.num_envs}) must be divisible by the number of devices ({devices})."
        )
    if cfg.min_replay_size > cfg.max_replay_size:
        raise cli_checks.UsageError(
            f"min_replay_size ({cfg.min_replay_size:,}) must not exceed max_replay_size "
            f"({cfg.max_replay_size:,})."
        )
    # brax fills the buffer to min_replay_size in whole steps of all envs before training.
    prefill = -(-cfg.min_replay_size // cfg.num_envs) * cfg.num_envs * cfg.action_repeat
    if prefill >= cfg.num_timesteps:
        raise cli_checks.UsageError(
            f"num_timesteps ({cfg.num_timesteps:,}) must exceed the {prefill:,} env steps that "
            f"fill the replay buffer to min_replay_size ({cfg.min_replay_size:,}) first."
        )


def _check_resume_flags(args: argparse.Namespace, saved: dict[str, Any]) -> None:
    """A resumed run keeps its config: flags that would change it are an error, not ignored."""
    changed = []
    defaults = {"env_name": DEFAULT_ENV, "algo": "ppo", "seed": 1, "domain_randomization": False}
    for name in IDENTITY_FLAGS:
        value = getattr(args, name)
        if value is not None and value != saved.get(name, defaults[name]):
            changed.append(f"--{name}={value} (checkpoint: {saved.get(name)})")
    for name in (*PPO_FLAGS, *NETWORK_FLAGS, *SAC_ONLY_FLAGS):
        if name == "num_timesteps":  # extends the run (`extend_run`), checked there
            continue
        if getattr(args, name) is not None:
            changed.append(f"--{name}")
    if args.env_config or args.impl:
        changed.append("--env_config/--impl")
    if changed:
        raise ValueError(
            "A resumed run continues with the config stored in its checkpoint; these flags would "
            f"change it: {', '.join(changed)}. Start a new run instead (without "
            "--load_checkpoint_path), or drop them."
        )


def extend_run(saved: dict[str, Any], num_timesteps: int) -> dict[str, Any]:
    """The saved run config, trained for at least `num_timesteps` env steps.

    The run goes on with more epochs of the same size (same updates per epoch, one evaluation and
    checkpoint after each), so the steps already taken and the step counter keep their meaning.
    """
    if saved["algo"] != "ppo":
        raise ValueError("--num_timesteps on resume extends PPO runs only.")
    from playground.training.ppo import make_schedule

    sched = make_schedule(_train_config(saved))
    if num_timesteps <= sched.total_steps:
        raise ValueError(
            f"--num_timesteps {num_timesteps:,} on resume must exceed the run's planned "
            f"{sched.total_steps:,} env steps (it extends the run; drop it to continue as planned)."
        )
    epochs = math.ceil(num_timesteps / sched.env_steps_per_epoch)
    train = dict(saved["train"])
    train["num_timesteps"] = epochs * sched.env_steps_per_epoch
    train["num_evals"] = epochs + 1
    return {**saved, "train": train}


def _load_env(run_config: dict[str, Any]):
    env_config = registry.get_default_config(run_config["env_name"])
    env_config.update(tuples(run_config["env"]))
    env = registry.load(run_config["env_name"], config=env_config)
    randomizer = None
    if run_config["domain_randomization"]:
        randomizer = registry.get_domain_randomizer(run_config["env_name"], env.config)
    return env, randomizer


def _train_config(run_config: dict[str, Any]) -> config_dict.ConfigDict:
    return config_dict.ConfigDict(tuples(run_config["train"]))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the command line; returns the summary also written to `<run>/final.json`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, KeyError, checkpoint.CheckpointError, FileNotFoundError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        parser.exit(2, f"train_jax_ppo.py: error: {message}\n")


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from playground.training import sac_run  # it imports this module's helpers

    if args.process_id is not None and args.num_processes is not None:
        if args.process_id >= args.num_processes:
            raise cli_checks.UsageError(
                f"--process_id {args.process_id} must be below --num_processes "
                f"{args.num_processes}."
            )
    if args.load_checkpoint_path is None:
        if args.play_only:
            raise ValueError("--play_only needs --load_checkpoint_path (a run to evaluate).")
        # Before the run, not at its first write: the run folder is made under it.
        cli_checks.check_writable_dir(args.logdir, "--logdir")
    if args.coordinator_address:
        jax.distributed.initialize(
            coordinator_address=args.coordinator_address,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    if args.load_checkpoint_path:
        sac_run.refuse_resume(Path(args.load_checkpoint_path))
        saved, step, step_dir = checkpoint.read_config(args.load_checkpoint_path)
        _check_resume_flags(args, saved)
        newer = checkpoint.steps_after(step_dir.parent, step)
        if newer and not args.play_only:
            raise ValueError(
                f"{step_dir} is not the run's latest checkpoint (newer: {newer}). Resume from the "
                f"run folder {step_dir.parent.parent} to continue from the latest, or delete the "
                "newer step folders to branch from this one."
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
    env, randomizer = _load_env(run_config)
    if run_config["algo"] == "sac":
        return sac_run.run(args, run_config, run_dir, env, randomizer)
    return _run_ppo(args, run_config, run_dir, env, randomizer)


def _run_ppo(args, run_config, run_dir: Path, env, randomizer) -> dict[str, Any]:
    from playground.training.ppo import PPOTrainer

    cfg = _train_config(run_config)
    lead = jax.process_index() == 0
    trainer = PPOTrainer(env, cfg, run_config["seed"], randomizer, args.max_devices_per_host)
    state, start = trainer.init_state(), 0
    if args.load_checkpoint_path:
        restored, _, start = checkpoint.restore(args.load_checkpoint_path, state)
        state = jax.tree.map(jnp.asarray, restored)
    total = trainer.schedule.total_steps
    logger = run_logger.RunLogger(
        run_dir,
        total,
        start,
        use_tb=args.use_tb and lead,
        use_wandb=args.use_wandb and lead,
        config=run_config,
        show_progress=args.progress and lead,
    )
    if lead:
        write_json(run_dir / "config.json", run_config)
        logger.write(
            f"{run_config['env_name']}: {total:,} env steps in "
            f"{trainer.schedule.num_epochs} epochs "
            f"on {trainer.device_count} device(s); run folder {run_dir}"
            + (f"; resuming at step {start:,}" if start else "")
        )
    ckpt = checkpoint.Checkpointer(run_dir / checkpoint.CHECKPOINT_DIR) if lead else None

    def save(path: Path, st, step: int, extra: dict[str, Any] | None = None) -> Path:
        return policy_file.save_policy(
            path,
            env_name=run_config["env_name"],
            params=trainer.inference_params(st),
            observation_size=trainer.observation_size,
            action_size=env.action_size,
            policy_hidden_layer_sizes=tuple(cfg.network.policy_hidden_layer_sizes),
            value_hidden_layer_sizes=tuple(cfg.network.value_hidden_layer_sizes),
            activation=cfg.network.activation,
            policy_obs_key=cfg.network.policy_obs_key,
            value_obs_key=cfg.network.value_obs_key,
            extra={
                "env_steps": step,
                "run_dir": str(run_dir),
                "config": run_config,
                **(extra or {}),
            },
        )

    epoch_seconds: list[float] = []
    t_start = time.perf_counter()
    if not args.play_only:
        if start == 0 and args.run_evals and cfg.num_evals > 1 and lead:
            logger.log(0, trainer.evaluate(state))

        best_path = run_dir / BEST_POLICY
        # A resumed run competes with the best of its earlier part.
        best = _best_success(best_path) if args.load_checkpoint_path else -1.0

        def on_epoch(step: int, st, metrics: dict[str, float]) -> None:
            nonlocal best
            epoch_seconds.append(metrics["training/epoch_seconds"])
            if lead:
                logger.log(step, metrics)
                success = metrics.get("eval/success_rate")
                # PPO's held-out success swings by several points from one evaluation to the
                # next late in a run, so the last policy is not always the best one seen.
                # Written before the checkpoint, so that a resume knows every earlier best.
                if success is not None and success >= best:
                    best = success
                    save(best_path, st, step, {"held_out_success_rate": success})
                ckpt.save(step, st, run_config)

        state, step = trainer.run(state, start, on_epoch, run_evals=args.run_evals)
    else:
        step = start
    train_seconds = time.perf_counter() - t_start

    summary: dict[str, Any] = {}
    if lead:
        final_eval = trainer.evaluate(state)
        params = trainer.inference_params(state)
        policy_path = save(run_dir / policy_file.POLICY_FILE, state, step)
        summary = {
            "env_name": run_config["env_name"],
            "env_steps": step,
            "success_rate": final_eval["eval/success_rate"],
            "episode_reward": final_eval["eval/episode_reward"],
            "eval_episodes": cfg.num_eval_envs,
            "eval_seed": run_config["seed"] + evaluate.HELD_OUT_SEED_OFFSET,
            "device": f"{jax.devices()[0].platform} x{trainer.device_count}",
            "wall_seconds": train_seconds,
            **_wall_split(epoch_seconds),
            "policy": str(policy_path),
            "run_dir": str(run_dir),
        }
        if (run_dir / BEST_POLICY).is_file():
            best_extra = policy_file.read_policy(run_dir / BEST_POLICY)["extra"]
            summary["best_policy"] = str(run_dir / BEST_POLICY)
            summary["best_env_steps"] = best_extra["env_steps"]
            summary["best_success_rate"] = best_extra["held_out_success_rate"]
        if args.render_final_policy:
            policy = trainer.make_policy(params, deterministic=True)
            try:
                path, success = video.write_rollout_video(
                    env,
                    policy,
                    run_dir / "rollout.mp4",
                    jax.random.PRNGKey(run_config["seed"]),
                    num_episodes=args.num_videos,
                )
                summary["video"] = str(path)
                summary["video_success"] = float(np.mean(success))
            except RuntimeError as e:  # the trained policy is saved; only the video is lost
                summary["video_error"] = str(e)
                logger.write(f"no video: {e}")
        write_json(run_dir / "final.json", summary)
        logger.write(
            f"done: {step:,} steps, held-out success {summary['success_rate']:.0%} over "
            f"{cfg.num_eval_envs} episodes, reward {summary['episode_reward']:.2f}; "
            f"policy {policy_path}"
        )
    logger.close()
    if ckpt is not None:
        ckpt.close()
    return summary


def _best_success(path: Path) -> float:
    """Held-out success of a run's best policy so far (-1 when there is none yet)."""
    legacy = path.with_suffix(".pkl")
    if not path.is_file() and legacy.is_file():
        # Resuming without it would silently forget the earlier part's best policy.
        raise policy_file.legacy_error(legacy)
    if not path.is_file():
        return -1.0
    return float(policy_file.read_policy(path)["extra"]["held_out_success_rate"])


def _wall_split(epoch_seconds: list[float]) -> dict[str, float]:
    """The first epoch of a process includes compilation; the others are pure training."""
    if not epoch_seconds:
        return {}
    out = {"first_epoch_seconds": epoch_seconds[0]}
    if len(epoch_seconds) > 1:
        steady = float(np.mean(epoch_seconds[1:]))
        out["steady_epoch_seconds"] = steady
        out["jit_seconds_estimate"] = max(epoch_seconds[0] - steady, 0.0)
    return out
