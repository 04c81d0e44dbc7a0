"""Run configs: what a run trains, built from defaults plus flags and checked before anything runs.

A run config is the JSON-able dict stored in `<run>/config.json` and in every checkpoint: the task,
its whole env config, the trainer's config and the command. A resumed run continues with it, so
the flags that would change it are refused (`check_*_resume`). Every check here takes no time:
nothing is built until the run starts, and then the env is built once (`load_env`).

- Shared: `env_config` (a task's locked config, without building the env), `load_env`,
  `train_config`, `check_latest` (a resume starts from the run's latest checkpoint).
- Teachers (learning/train_jax_ppo.py): the flags that set the config's fields (`PPO_FLAGS`,
  `NETWORK_FLAGS`, `SAC_ONLY_FLAGS`), `make_teacher_config`, `check_train_config`,
  `check_teacher_resume`, `extend_run`.
- Students (experimental/train_dagger.py): `make_student_config`, `check_dagger_config`,
  `check_student_resume`, `find_teacher`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
from ml_collections import config_dict

from playground import cli_checks, registry
from playground.cli_checks import nonnegative_float, positive_float, positive_int, probability
from playground.envs.config import apply_overrides
from playground.errors import UsageError
from playground.files import policy_file
from playground.training import checkpoint, dagger, ppo_params
from playground.training.run_files import parse_overrides, tuples

# ----- shared -----


def env_config(env_name: str, overrides: Mapping[str, Any] | None = None) -> config_dict.ConfigDict:
    """The locked config an env built with `overrides` holds, without building the env.

    A build compiles the model (and, for AlohaS2RPegInsertion, computes its lifted states), so a
    run builds its env once, in `load_env`, from the config this gives."""
    owner = registry.get_env_class(env_name).__name__
    return apply_overrides(registry.get_default_config(env_name), overrides, owner=owner)


def load_env(run_config: Mapping[str, Any]):
    """(env, domain randomiser or None) of a run config, built from its stored env config."""
    config = registry.get_default_config(run_config["env_name"])
    config.update(tuples(run_config["env"]))
    env = registry.load(run_config["env_name"], config=config)
    randomizer = None
    if run_config["domain_randomization"]:
        randomizer = registry.get_domain_randomizer(run_config["env_name"], env.config)
    return env, randomizer


def train_config(run_config: Mapping[str, Any], key: str = "train") -> config_dict.ConfigDict:
    """The trainer's config of a run config (`train` for teachers, `dagger` for students)."""
    return config_dict.ConfigDict(tuples(run_config[key]))


def check_latest(step_dir: Path, step: int, then: str = "") -> None:
    """Raises UsageError when the run has checkpoints newer than `step` (a resume would overwrite
    them); `then` ends the advice."""
    newer = checkpoint.steps_after(step_dir.parent, step)
    if newer:
        raise UsageError(
            f"{step_dir} is not the run's latest checkpoint (newer: {newer}). Resume from the "
            f"run folder {step_dir.parent.parent}{then}."
        )


# ----- teachers -----

TEACHER_DEFAULT_ENV = "AlohaS2RPick"


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
TEACHER_IDENTITY_FLAGS = ("env_name", "algo", "seed", "domain_randomization")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.replace(" ", ",").split(",") if s)
    except ValueError as e:
        raise UsageError(f"layer sizes must be integers separated by commas, got {text!r}") from e
    if not sizes or min(sizes) < 1:
        raise UsageError(f"layer sizes must be positive integers, got {text!r}")
    return sizes


def make_teacher_config(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """A new teacher run's config, from defaults plus the flags set in `args`."""
    env_name = args.env_name or TEACHER_DEFAULT_ENV
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
            raise UsageError(f"--{name} does not apply to {algo.upper()}.")
        cfg[name] = value
    for name in NETWORK_FLAGS:
        value = getattr(args, name)
        if value is None:
            continue
        if algo == "sac" and name != "activation":
            if name == "policy_hidden_layer_sizes":
                cfg.network.hidden_layer_sizes = _sizes(value)
                continue
            raise UsageError(f"--{name} does not apply to SAC (its actor and critic share sizes).")
        cfg.network[name] = _sizes(value) if name.endswith("sizes") else value
    for name in SAC_ONLY_FLAGS:
        value = getattr(args, name)
        if value is not None:
            if algo != "sac":
                raise UsageError(f"--{name} applies to --algo sac only.")
            cfg[name] = value
    check_train_config(cfg, algo, args.max_devices_per_host)
    config = {
        "env_name": env_name,
        "algo": algo,
        "seed": 1 if args.seed is None else args.seed,
        "domain_randomization": bool(args.domain_randomization),
        "env": env_config(env_name, tuples(env_overrides) or None).to_dict(),
        "train": cfg.to_dict(),
        "command": command,
    }
    init = getattr(args, "init_policy", None)
    if init is not None:
        if algo != "ppo":
            raise UsageError("--init_policy applies to --algo ppo only.")
        check_init_policy(init, env_name, cfg)
        config["init_policy"] = str(init)
    return config


def check_init_policy(path: str, env_name: str, cfg: config_dict.ConfigDict) -> dict[str, Any]:
    """Reads the teacher file a run starts from; UsageError unless its task and network are
    the run's (the weights must fit the networks the trainer builds)."""
    try:
        payload = policy_file.read_policy(path, env_name)
    except (OSError, policy_file.PolicyFileError) as e:
        raise UsageError(f"--init_policy: {e}") from None
    net = payload["network"]
    want = {
        "policy_hidden_layer_sizes": tuple(cfg.network.policy_hidden_layer_sizes),
        "value_hidden_layer_sizes": tuple(cfg.network.value_hidden_layer_sizes),
        "activation": cfg.network.activation,
        "policy_obs_key": cfg.network.policy_obs_key,
        "value_obs_key": cfg.network.value_obs_key,
    }
    wrong = [f"{k} {tuples(net[k])!r} (run: {v!r})" for k, v in want.items() if tuples(net[k]) != v]
    if wrong:
        raise UsageError(f"--init_policy: {path!r} has a different network: {'; '.join(wrong)}.")
    return payload


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


def check_teacher_resume(args: argparse.Namespace, saved: Mapping[str, Any]) -> None:
    """A resumed run keeps its config: flags that would change it are an error, not ignored."""
    changed = []
    defaults = {
        "env_name": TEACHER_DEFAULT_ENV,
        "algo": "ppo",
        "seed": 1,
        "domain_randomization": False,
    }
    for name in TEACHER_IDENTITY_FLAGS:
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
        raise UsageError(
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
        raise UsageError("--num_timesteps on resume extends PPO runs only.")
    from playground.training.ppo import make_schedule

    sched = make_schedule(train_config(saved))
    if num_timesteps <= sched.total_steps:
        raise UsageError(
            f"--num_timesteps {num_timesteps:,} on resume must exceed the run's planned "
            f"{sched.total_steps:,} env steps (it extends the run; drop it to continue as planned)."
        )
    epochs = math.ceil(num_timesteps / sched.env_steps_per_epoch)
    train = dict(saved["train"])
    train["num_timesteps"] = epochs * sched.env_steps_per_epoch
    train["num_evals"] = epochs + 1
    return {**saved, "train": train}


# ----- students -----

ROOT = Path(__file__).resolve().parents[2]
# Playground's `train_dagger.py --domain-randomization` distils the Aloha student: so does ours.
STUDENT_DEFAULT_ENV = "AlohaS2RPegInsertionDistill"
DEFAULT_ENCODER = ROOT / "params" / "nature_cnn_cifar10"
# The teachers shipped in params/ (their cards are beside them): a student run without --teacher
# distils these, and only looks for the newest run in --logdir for a task with none shipped.
SHIPPED_TEACHERS = {
    "AlohaS2RPick": ROOT / "params" / "aloha_s2r_pick_native" / policy_file.POLICY_FILE,
    "AlohaS2RPegInsertion": ROOT
    / "params"
    / "aloha_s2r_peg_insertion_native"
    / policy_file.POLICY_FILE,
}
# Flags that describe the run itself; a resumed run must not change them.
STUDENT_IDENTITY_FLAGS = (
    "env_name",
    "teacher",
    "pick_teacher",
    "encoder",
    "seed",
    "domain_randomization",
)
STUDENT_RUN_DEFAULTS = {"iterations": 40, "eval_every": 10, "num_eval_envs": 64, "seed": 0}


def find_teacher(logdir: str | Path, teacher_env: str) -> Path:
    """The newest `<logdir>/<teacher_env>-*/policy.safetensors`, or an error that says how to
    make one."""
    root = Path(logdir).expanduser().resolve()
    name = policy_file.POLICY_FILE
    runs = [
        p for p in root.glob(f"{teacher_env}-*") if not p.name.startswith(f"{teacher_env}-dagger")
    ]
    found = [p / name for p in runs if (p / name).is_file()]
    if not found:
        legacy = [p / "policy.pkl" for p in runs if (p / "policy.pkl").is_file()]
        if legacy:  # runs from before the safe format: say how to convert, not "train one"
            raise policy_file.legacy_error(max(legacy, key=lambda p: p.stat().st_mtime))
        raise FileNotFoundError(
            f"No teacher found: no {root}/{teacher_env}-*/{name}. Train one with "
            f"`python learning/train_jax_ppo.py --env_name {teacher_env}` or pass --teacher PATH."
        )
    return max(found, key=lambda p: p.stat().st_mtime)


def default_teacher(logdir: str | Path, teacher_env: str) -> Path:
    """The shipped teacher of `teacher_env` (`SHIPPED_TEACHERS`), else the newest run's."""
    shipped = SHIPPED_TEACHERS.get(teacher_env)
    if shipped is not None and shipped.is_file():
        return shipped
    return find_teacher(logdir, teacher_env)


def needs_pick_teacher(env_name: str, env_cfg: config_dict.ConfigDict) -> bool:
    """Whether the student's teacher is the composite one: a task whose agent also picks
    (`phase1="agent"`, the whole task from the table)."""
    cls = registry.get_env_class(env_name)
    return hasattr(cls, "PICK_TEACHER_ENV") and env_cfg.get("phase1") == "agent"


def make_student_config(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """A new student run's config, from defaults plus the flags set in `args`."""
    env_name = args.env_name or STUDENT_DEFAULT_ENV
    if env_name not in registry.VISION_ENVS:
        registry.get_default_config(env_name)  # an unknown name lists the valid ones
        raise UsageError(
            f"{env_name!r} has no cameras; distil into one of: {', '.join(registry.VISION_ENVS)}."
        )
    overrides = parse_overrides(args.env_config, "--env-config")
    if args.domain_randomization:
        overrides["vision.visual_dr.enabled"] = True
    cfg = dagger.task_config(env_name)
    for key in cfg:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = tuple(value) if isinstance(cfg[key], tuple) else value
    check_dagger_config(cfg)
    run = {
        k: getattr(args, k) if getattr(args, k) is not None else v
        for k, v in STUDENT_RUN_DEFAULTS.items()
    }
    for key in ("iterations", "eval_every", "num_eval_envs"):
        if run[key] < 1:
            raise UsageError(f"--{key} must be at least 1, got {run[key]}.")
    env_cfg = env_config(env_name, tuples(overrides) or None)
    cls = registry.get_env_class(env_name)
    composite = needs_pick_teacher(env_name, env_cfg)
    if args.pick_teacher and not composite:
        raise UsageError(
            f"--pick_teacher: {env_name} with phase1={env_cfg.get('phase1', '-')!r} has one "
            "teacher (--teacher); a pick teacher drives the whole Aloha task from the table "
            '(phase1="agent").'
        )
    teacher = args.teacher or default_teacher(args.logdir, cls.TEACHER_ENV)
    pick_teacher = ""
    if composite:
        pick = args.pick_teacher or default_teacher(args.logdir, cls.PICK_TEACHER_ENV)
        pick_teacher = str(Path(pick).expanduser().resolve())
    # The files' headers now, so that a wrong file is a one-line error before any env is built
    # (dagger_run.load_teacher checks the shapes against the built env).
    for path, flag, want in (
        (teacher, "--teacher", cls.TEACHER_ENV),
        (pick_teacher, "--pick_teacher", getattr(cls, "PICK_TEACHER_ENV", "")),
    ):
        if path:
            found = policy_file.read_policy(path)["env_name"]
            if found != want:
                raise policy_file.PolicyFileError(
                    f"{flag}: teacher policy file {str(path)!r} was trained on {found!r}; "
                    f"{env_name} distils a {want!r} teacher there."
                )
    return {
        "env_name": env_name,
        "teacher": str(Path(teacher).expanduser().resolve()),
        "pick_teacher": pick_teacher,
        "encoder": str(args.encoder or DEFAULT_ENCODER),
        "domain_randomization": bool(args.domain_randomization),
        **run,
        "env": env_cfg.to_dict(),
        "dagger": cfg.to_dict(),
        "command": command,
    }


def check_dagger_config(cfg: config_dict.ConfigDict) -> None:
    """Raises UsageError for DAgger sizes that only fail together, before any env is built
    (dagger.Dagger checks the same when it is built, after the env has compiled)."""
    if cfg.updates_per_iteration % cfg.update_unroll:
        raise cli_checks.UsageError(
            f"updates_per_iteration ({cfg.updates_per_iteration}) must be a multiple of "
            f"update_unroll ({cfg.update_unroll})."
        )


def check_student_resume(args: argparse.Namespace) -> None:
    """A resumed run keeps its config: flags that would change it are an error, not ignored."""
    changed = [f"--{k}" for k in STUDENT_IDENTITY_FLAGS if getattr(args, k) is not None]
    changed += [
        f"--{k}"
        for k in (*STUDENT_RUN_DEFAULTS, *dagger.default_config())
        if k not in ("iterations", "seed") and getattr(args, k, None) is not None
    ]
    if args.env_config:
        changed.append("--env-config")
    if changed:
        raise UsageError(
            "A resumed run continues with the config stored in its checkpoint; these flags would "
            f"change it: {', '.join(changed)}. Start a new run instead, or drop them "
            "(--iterations may be raised to train longer)."
        )
