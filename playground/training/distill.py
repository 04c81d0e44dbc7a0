"""Student distillation: the command line of experimental/train_dagger.py and the run it drives.

    python experimental/train_dagger.py --domain-randomization
    python experimental/train_dagger.py --teacher logs/FrankaReach-<ts>/policy.safetensors

The teacher is a state-based policy file written by learning/train_jax_ppo.py for the vision
task's state-based twin (`TEACHER_ENV` of the task class: FrankaReach for FrankaReachStereo);
without `--teacher`, the newest `<logdir>/<twin>-*/policy.safetensors` is used. A run folder
`<logdir>/<task>-dagger-<timestamp>/` gets `config.json`, `checkpoints/<env_steps>/` (orbax: the
student's params, optimiser state, the aggregated DAgger buffer, rng and iteration, plus the
config; the envs restart from fresh states on resume), `tb/` and `metrics.jsonl` (losses, beta,
buffer fill, student success, and the teacher's success from the same held-out starts),
`student.safetensors` (the final student, read by the ONNX exporter), `final.json` and
`camera_views.mp4` (what the cameras saw in the first held-out episodes of the final evaluation,
as the student got it).
"""

from __future__ import annotations

import argparse
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
from playground.envs.vision import VisionEnv
from playground.files import policy_file
from playground.networks import nature_cnn
from playground.networks.student import Student, init_from_pretrained
from playground.training import checkpoint, dagger, run_logger, video
from playground.training.evaluate import HELD_OUT_SEED_OFFSET, make_evaluator
from playground.training.ppo import bind_randomizer
from playground.training.run_files import new_run_dir, parse_overrides, tuples, write_json

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ENV = "FrankaReachStereo"
DEFAULT_ENCODER = ROOT / "params" / "nature_cnn_cifar10"
# Flags that describe the run itself; a resumed run must not change them.
IDENTITY_FLAGS = ("env_name", "teacher", "encoder", "seed", "domain_randomization")
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
}


def _flag(p: argparse._ActionsContainer, name: str, **kw) -> None:
    """`--some-flag` and `--some_flag` both work (Playground's scripts use underscores)."""
    dashed, under = f"--{name.replace('_', '-')}", f"--{name}"
    names = [dashed] if dashed == under else [dashed, under]
    p.add_argument(*names, dest=name, **kw)


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
        "newest <logdir>/<state task>-*/policy.safetensors)",
    )
    _flag(
        run,
        "encoder",
        default=None,
        help=f"pretrained NatureCNN params folder, or 'none' (default: {DEFAULT_ENCODER})",
    )
    _flag(
        run,
        "domain_randomization",
        action="store_true",
        default=None,
        help="physics and visual domain randomisation (per env, drawn at reset)",
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
        help="override an env config field, e.g. --env-config vision.width=48 (repeatable)",
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
    _flag(run, "no_progress", action="store_true", help="no console progress bar")
    _flag(run, "no_tb", action="store_true", help="no TensorBoard logs")
    hp = p.add_argument_group("DAgger (default: playground/training/dagger.py default_config)")
    _flag(
        hp,
        "freeze_encoder",
        action="store_true",
        default=None,
        help="keep the pretrained RGB encoder fixed (default: fine-tune it)",
    )
    for key, value in dagger.default_config().items():
        if isinstance(value, bool):
            continue
        kind = DAGGER_CHECKS.get(key, type(value[0] if isinstance(value, tuple) else value))
        if isinstance(value, tuple):
            _flag(hp, key, type=kind, nargs="+", default=None, help=f"default {value}")
        else:
            _flag(hp, key, type=kind, default=None, help=f"default {value}")
    return p


RUN_DEFAULTS = {"iterations": 40, "eval_every": 10, "num_eval_envs": 64, "seed": 0}


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


def load_teacher(path: str | Path, env: VisionEnv):
    """The teacher's deterministic policy, after checking it was trained for `env`'s twin."""
    payload = policy_file.read_policy(path)
    net = payload["network"]
    state_size = tuple(net["observation_size"].get(net["policy_obs_key"], ()))
    want = tuple(env.observation_size["state"])
    twin = type(env).TEACHER_ENV
    if payload["env_name"] != twin or state_size != want or net["action_size"] != env.action_size:
        raise policy_file.PolicyFileError(
            f"Teacher policy file {str(path)!r} was trained on {payload['env_name']!r} "
            f"({net['policy_obs_key']} size {state_size}, {net['action_size']} actions); "
            f"{type(env).__name__} distils a {twin!r} teacher (state size {want}, "
            f"{env.action_size} actions)."
        )
    return policy_file.make_policy_fn(payload, deterministic=True)


def make_student(env: VisionEnv, cfg: config_dict.ConfigDict) -> Student:
    v = env.config.vision
    return Student(
        action_size=env.action_size,
        use_rgb=bool(v.rgb),
        use_depth=bool(v.depth),
        depth_scale_m=float(v.depth_noise.max_range.max_m) if v.depth else 1.0,
        features=int(cfg.features),
        hidden=tuple(cfg.hidden),
    )


def init_student_params(
    student: Student, env: VisionEnv, rng: jax.Array, encoder: str
) -> tuple[Any, str]:
    """(params, where the RGB encoder came from): pretrained if `encoder` names params."""
    obs = jax.eval_shape(env.reset, jax.random.PRNGKey(0)).obs
    dummy = {k: jnp.zeros(obs[k].shape, obs[k].dtype) for k in dagger.STUDENT_KEYS if k in obs}
    params = student.init(rng, dummy)
    if encoder.lower() == "none" or not student.use_rgb:
        return params, "random init"
    enc, card = nature_cnn.load_pretrained(encoder)
    params, fresh = init_from_pretrained(params, enc["params"])
    where = f"{encoder} ({card.get('data', '?')})"
    if fresh:
        where += f"; {', '.join(fresh)} freshly initialised for this image size"
    return params, where


def make_run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The full description of a new run (JSON-able), from defaults plus the flags set."""
    env_name = args.env_name or DEFAULT_ENV
    if env_name not in registry.VISION_ENVS:
        registry.get_default_config(env_name)  # an unknown name lists the valid ones
        raise ValueError(
            f"{env_name!r} has no cameras; distil into one of: {', '.join(registry.VISION_ENVS)}."
        )
    overrides = parse_overrides(args.env_config, "--env-config")
    if args.domain_randomization:
        overrides["vision.visual_dr.enabled"] = True
    cfg = dagger.default_config()
    for key in cfg:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = tuple(value) if isinstance(cfg[key], tuple) else value
    check_dagger_config(cfg)
    run = {
        k: getattr(args, k) if getattr(args, k) is not None else v for k, v in RUN_DEFAULTS.items()
    }
    for key in ("iterations", "eval_every", "num_eval_envs"):
        if run[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be at least 1, got {run[key]}.")
    teacher = args.teacher or find_teacher(
        args.logdir, registry.get_env_class(env_name).TEACHER_ENV
    )
    # Built only after every check above, each of which takes no time.
    env = registry.load(env_name, config_overrides=tuples(overrides) or None)
    return {
        "env_name": env_name,
        "teacher": str(Path(teacher).expanduser().resolve()),
        "encoder": str(args.encoder or DEFAULT_ENCODER),
        "domain_randomization": bool(args.domain_randomization),
        **run,
        "env": env.config.to_dict(),
        "dagger": cfg.to_dict(),
        "command": " ".join(["experimental/train_dagger.py", *sys.argv[1:]]),
    }


def check_dagger_config(cfg: config_dict.ConfigDict) -> None:
    """Raises UsageError for DAgger sizes that only fail together, before any env is built
    (dagger.Dagger checks the same when it is built, after the env has compiled)."""
    if cfg.updates_per_iteration % cfg.update_unroll:
        raise cli_checks.UsageError(
            f"updates_per_iteration ({cfg.updates_per_iteration}) must be a multiple of "
            f"update_unroll ({cfg.update_unroll})."
        )


def _check_resume_flags(args: argparse.Namespace) -> None:
    """A resumed run keeps its config: flags that would change it are an error, not ignored."""
    changed = [f"--{k.replace('_', '-')}" for k in IDENTITY_FLAGS if getattr(args, k) is not None]
    changed += [
        f"--{k.replace('_', '-')}"
        for k in (*RUN_DEFAULTS, *dagger.default_config())
        if k not in ("iterations", "seed") and getattr(args, k, None) is not None
    ]
    if args.env_config:
        changed.append("--env-config")
    if changed:
        raise ValueError(
            "A resumed run continues with the config stored in its checkpoint; these flags would "
            f"change it: {', '.join(changed)}. Start a new run instead, or drop them "
            "(--iterations may be raised to train longer)."
        )


def _saved(state: dagger.DaggerState) -> dict[str, Any]:
    return {k: getattr(state, k) for k in dagger.CHECKPOINT_FIELDS}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the command line; returns the summary also written to `<run>/final.json`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (
        ValueError,
        KeyError,
        checkpoint.CheckpointError,
        FileNotFoundError,
        policy_file.PolicyFileError,
    ) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        parser.exit(2, f"train_dagger.py: error: {message}\n")


def _run(args: argparse.Namespace) -> dict[str, Any]:
    if args.load_checkpoint_path:
        _check_resume_flags(args)
        run_config, step, step_dir = checkpoint.read_config(args.load_checkpoint_path)
        newer = checkpoint.steps_after(step_dir.parent, step)
        if newer:
            raise ValueError(
                f"{step_dir} is not the run's latest checkpoint (newer: {newer}). Resume from the "
                f"run folder {step_dir.parent.parent}."
            )
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

    env_config = registry.get_default_config(run_config["env_name"])
    env_config.update(tuples(run_config["env"]))
    env = registry.load(run_config["env_name"], config=env_config)
    randomizer = None
    if run_config["domain_randomization"]:
        randomizer = registry.get_domain_randomizer(run_config["env_name"], env.config)
    cfg = config_dict.ConfigDict(tuples(run_config["dagger"]))
    teacher = load_teacher(run_config["teacher"], env)
    student = make_student(env, cfg)
    seed = run_config["seed"]
    k_init, k_run = jax.random.split(jax.random.PRNGKey(seed))
    params, encoder_from = init_student_params(student, env, k_init, run_config["encoder"])
    k_dr_train, k_dr_eval = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), 0xD5))
    loop = dagger.Dagger(
        env,
        teacher,
        student,
        cfg,
        type(env).POSE_BODY,
        bind_randomizer(randomizer, k_dr_train, cfg.num_envs),
    )
    state = loop.init(k_run, params)
    if args.load_checkpoint_path:
        restored, _, _ = checkpoint.restore(args.load_checkpoint_path, _saved(state))
        state = state.replace(**jax.tree.map(jnp.asarray, restored))
        state = state.replace(
            env_state=loop.reset_envs(jax.random.fold_in(k_run, int(state.iteration)))
        )
    steps_per_iteration = cfg.num_envs * cfg.unroll_length
    start_iteration = int(state.iteration)
    total_iterations = run_config["iterations"]

    def make_student_policy(p, deterministic=True):
        return lambda obs, rng: (student.apply(p, {k: obs[k] for k in loop.keys})[0], {})

    def make_either_policy(p, deterministic=True):
        """(student params, use_teacher): one compiled evaluation serves both policies."""
        params, use_teacher = p

        def policy(obs, rng):
            mine = make_student_policy(params)(obs, rng)[0]
            return jnp.where(use_teacher, teacher(obs, rng), mine), {}

        return policy

    num_videos = min(args.num_videos, run_config["num_eval_envs"])
    camera_keys = tuple(k for k in ("rgb", "depth") if k in loop.keys)
    evaluate_either = make_evaluator(
        env,
        make_either_policy,
        run_config["num_eval_envs"],
        cfg.episode_length,
        1,
        bind_randomizer(randomizer, k_dr_eval, run_config["num_eval_envs"]),
        record=lambda st: {k: st.obs[k][:num_videos] for k in camera_keys},
    )
    eval_key = jax.random.PRNGKey(seed + HELD_OUT_SEED_OFFSET)

    def evaluate(p, use_teacher: bool) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        metrics, frames = evaluate_either((p, jnp.asarray(use_teacher)), eval_key)
        return {k: float(v) for k, v in metrics.items()}, frames

    logger = run_logger.RunLogger(
        run_dir,
        total_iterations * steps_per_iteration,
        start_iteration * steps_per_iteration,
        use_tb=not args.no_tb,
        config=run_config,
        show_progress=not args.no_progress,
    )
    write_json(run_dir / "config.json", run_config)
    logger.write(
        f"{run_config['env_name']}: DAgger from teacher {run_config['teacher']}; encoder "
        f"{encoder_from}; {total_iterations} iterations of {steps_per_iteration:,} env steps; "
        f"run folder {run_dir}"
        + (f"; resuming at iteration {start_iteration}" if start_iteration else "")
    )
    teacher_eval = {
        k.replace("eval/", "eval/teacher_"): v
        for k, v in evaluate(state.params, use_teacher=True)[0].items()
    }
    logger.write(f"teacher on the held-out starts: {teacher_eval['eval/teacher_success_rate']:.0%}")
    ckpt = checkpoint.Checkpointer(run_dir / checkpoint.CHECKPOINT_DIR, max_to_keep=2)

    try:
        t_start = time.perf_counter()
        iteration_seconds: list[float] = []
        final, frames = None, None
        for it in range(start_iteration, total_iterations):
            t0 = time.perf_counter()
            state, out = loop.iterate(state)
            out = {f"dagger/{k}": float(v) for k, v in out.items()}
            iteration_seconds.append(time.perf_counter() - t0)
            out["dagger/iteration_seconds"] = iteration_seconds[-1]
            done = it + 1
            final = None
            if done % run_config["eval_every"] == 0 or done == total_iterations:
                final, frames = evaluate(state.params, use_teacher=False)
                out |= final | teacher_eval
                ckpt.save(done * steps_per_iteration, _saved(state), run_config)
            logger.log(done * steps_per_iteration, out)
        train_seconds = time.perf_counter() - t_start
        if final is None:
            final, frames = evaluate(state.params, use_teacher=False)

        student_path = _save_student(
            run_dir / policy_file.STUDENT_FILE, run_config, student, loop, state
        )
        summary: dict[str, Any] = {
            "env_name": run_config["env_name"],
            "teacher": run_config["teacher"],
            "iterations": int(state.iteration),
            "env_steps": int(state.iteration) * steps_per_iteration,
            "student_success_rate": final["eval/success_rate"],
            "teacher_success_rate": teacher_eval["eval/teacher_success_rate"],
            "student_episode_reward": final["eval/episode_reward"],
            "teacher_episode_reward": teacher_eval["eval/teacher_episode_reward"],
            "eval_episodes": run_config["num_eval_envs"],
            "eval_seed": seed + HELD_OUT_SEED_OFFSET,
            "device": f"{jax.devices()[0].platform}",
            "wall_seconds": train_seconds,
            "student": str(student_path),
            "run_dir": str(run_dir),
        }
        if len(iteration_seconds) > 1:
            summary["steady_iteration_seconds"] = float(np.median(iteration_seconds[1:]))
        if num_videos > 0:
            # The first held-out episodes of the final evaluation, as the student saw them.
            episodes = {k: np.swapaxes(np.asarray(v), 0, 1) for k, v in frames.items()}
            path = video.write_camera_video(
                run_dir / "camera_views.mp4", episodes, fps=1.0 / env.ctrl_dt
            )
            summary["video"] = str(path)
        write_json(run_dir / "final.json", summary)
        logger.write(
            f"done: {summary['iterations']} iterations, student success "
            f"{summary['student_success_rate']:.0%} vs teacher "
            f"{summary['teacher_success_rate']:.0%} on {summary['eval_episodes']} held-out "
            f"episodes; student {student_path}"
        )
    finally:
        logger.close()
        ckpt.close()
    return summary


def _save_student(
    path: Path, run_config: dict[str, Any], student: Student, loop: dagger.Dagger, state
) -> Path:
    return policy_file.save_student(
        path,
        env_name=run_config["env_name"],
        params=state.params,
        network={
            "action_size": student.action_size,
            "use_rgb": student.use_rgb,
            "use_depth": student.use_depth,
            "depth_scale_m": student.depth_scale_m,
            "features": student.features,
            "hidden": tuple(student.hidden),
        },
        observation_spec={k: (tuple(v.shape), v.dtype.name) for k, v in loop.obs_spec.items()},
        extra={
            "iterations": int(state.iteration),
            "run_dir": str(path.parent),
            "config": run_config,
        },
    )
