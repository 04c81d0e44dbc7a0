"""A DAgger student run: teacher, student and loop built, trained, evaluated, written out.

A run folder `<logdir>/<task>-dagger-<timestamp>/` gets `config.json`, `checkpoints/<env_steps>/`
(orbax: the student's params, optimiser state, the aggregated DAgger buffer, rng and iteration,
plus the config; the envs restart from fresh states on resume), `tb/` and `metrics.jsonl` (losses,
beta, buffer fill, student success, and the teacher's success from the same held-out starts),
`students/<env_steps>.safetensors` (the student at each checkpoint) and `student.safetensors` (the
final student): safe files the ONNX exporter reads (aloha_nets_to_onnx.py), `final.json` and
`camera_views.mp4` (what the cameras saw in the first held-out episodes of the final evaluation,
as the student got it). The command line is distill.py; the loop itself is dagger.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_dict

from playground.envs.aloha import composite
from playground.envs.vision import VisionEnv
from playground.files import policy_file
from playground.networks import nature_cnn
from playground.networks.student import Student, init_from_pretrained
from playground.training import checkpoint, dagger, run_logger, video
from playground.training.evaluate import HELD_OUT_SEED_OFFSET, make_evaluator
from playground.training.options import RunOptions
from playground.training.ppo import bind_randomizer
from playground.training.run_config import train_config
from playground.training.run_files import write_json


def load_teacher(path: str | Path, env: VisionEnv, pick_path: str | Path = ""):
    """The teacher's deterministic policy `fn(obs, rng)` for one observation, after checking it
    was trained for `env`'s twin; with `pick_path`, the composite Aloha teacher (the pick policy
    per arm until both objects are up, then `path`'s insertion policy)."""
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
    if not pick_path:
        return policy_file.make_policy_fn(payload, deterministic=True)
    if "pick_state" not in env.observation_size:
        raise policy_file.PolicyFileError(
            f"{type(env).__name__} (phase1={env.config.phase1!r}) has no pick phase; a pick "
            f"teacher ({pick_path}) drives the whole task from the table only (phase1='agent')."
        )
    pick, _ = composite.read(pick_path, path)
    return composite.CompositeTeacher(pick, payload)


def make_student(env: VisionEnv, cfg: config_dict.ConfigDict) -> Student:
    v = env.config.vision
    return Student(
        action_size=env.action_size,
        use_rgb=bool(v.rgb),
        use_depth=bool(v.depth),
        depth_scale_m=float(v.depth_noise.max_range.max_m) if v.depth else 1.0,
        features=int(cfg.features),
        hidden=tuple(cfg.hidden),
        kind=str(cfg.student),
        depth_grid=int(cfg.depth_grid),
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


def make_loop(
    env: VisionEnv, teacher, student: Student, cfg: config_dict.ConfigDict, randomizer, key
) -> dagger.Dagger:
    """The DAgger loop of a run, its envs' physics randomised from `key` (none without a
    randomiser)."""
    randomization = bind_randomizer(randomizer, key, cfg.num_envs)
    return dagger.Dagger(env, teacher, student, cfg, type(env).POSE_BODY, randomization)


def _saved(state: dagger.DaggerState) -> dict[str, Any]:
    return {k: getattr(state, k) for k in dagger.CHECKPOINT_FIELDS}


def run(
    options: RunOptions, run_config: dict[str, Any], run_dir: Path, env: VisionEnv, randomizer
) -> dict[str, Any]:
    """Trains (or resumes) a student run; returns its final.json."""
    # Runs written before a field existed take its default (which is what they ran with).
    cfg = dagger.default_config()
    cfg.update(train_config(run_config, "dagger"))
    teacher = load_teacher(run_config["teacher"], env, run_config.get("pick_teacher", ""))
    student = make_student(env, cfg)
    seed = run_config["seed"]
    k_init, k_run = jax.random.split(jax.random.PRNGKey(seed))
    params, encoder_from = init_student_params(student, env, k_init, run_config["encoder"])
    k_dr_train, k_dr_eval = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), 0xD5))
    loop = make_loop(env, teacher, student, cfg, randomizer, k_dr_train)
    state = loop.init(k_run, params)
    if options.load_checkpoint_path:
        restored, _, _ = checkpoint.restore(options.load_checkpoint_path, _saved(state))
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
            # The teacher acts on one observation (the composite one indexes its arms).
            keys = jax.random.split(rng, mine.shape[0])
            return jnp.where(use_teacher, jax.vmap(teacher)(obs, keys), mine), {}

        return policy

    num_videos = min(options.num_videos, run_config["num_eval_envs"])
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
        use_tb=options.use_tb,
        config=run_config,
        show_progress=options.progress,
    )
    write_json(run_dir / "config.json", run_config)
    logger.write(
        f"{run_config['env_name']}: DAgger from "
        + (
            f"the composite teacher (pick {run_config['pick_teacher']}, then "
            f"{run_config['teacher']})"
            if run_config.get("pick_teacher")
            else f"teacher {run_config['teacher']}"
        )
        + "; encoder "
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
                # The same point as a safe student file: the ONNX exporter (playground/deploy)
                # turns each into `<env steps>.onnx` without reading orbax checkpoints.
                _save_student(
                    run_dir
                    / policy_file.STUDENT_CHECKPOINTS_DIR
                    / f"{done * steps_per_iteration}{policy_file.SUFFIX}",
                    run_dir,
                    run_config,
                    student,
                    loop,
                    state,
                )
            logger.log(done * steps_per_iteration, out)
        train_seconds = time.perf_counter() - t_start
        if final is None:
            final, frames = evaluate(state.params, use_teacher=False)

        student_path = _save_student(
            run_dir / policy_file.STUDENT_FILE, run_dir, run_config, student, loop, state
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
    path: Path,
    run_dir: Path,
    run_config: dict[str, Any],
    student: Student,
    loop: dagger.Dagger,
    state: dagger.DaggerState,
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
            "kind": student.kind,
            "depth_grid": student.depth_grid,
        },
        observation_spec={k: (tuple(v.shape), v.dtype.name) for k, v in loop.obs_spec.items()},
        extra={
            "iterations": int(state.iteration),
            "env_steps": int(state.iteration) * loop.config.num_envs * loop.config.unroll_length,
            "run_dir": str(run_dir),
            "config": run_config,
        },
    )
