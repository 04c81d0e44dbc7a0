"""A PPO teacher run: train, keep the best policy, evaluate, write the run folder's outputs.

A run folder `logs/<env>-<timestamp>[-suffix]/` gets `config.json` (everything needed to rebuild
the run), `checkpoints/<step>/` (orbax: params, optimiser state, normaliser, rng and the config),
`tb/` (TensorBoard), `metrics.jsonl`, `learning_curve.png`, the final policy `policy.safetensors`
(read by AlohaS2RPegInsertion's phase 1, the DAgger distiller and the ONNX exporter),
`best_policy.safetensors` (the policy of the best held-out evaluation so far, the latest on a
tie), `final.json` (held-out evaluation and wall times) and `rollout.mp4`. The command line is
teacher.py; the loop itself is ppo.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from playground.errors import UsageError
from playground.files import policy_file
from playground.training import checkpoint, evaluate, run_logger, video
from playground.training.options import RunOptions
from playground.training.ppo import PPOTrainer
from playground.training.run_config import train_config
from playground.training.run_files import write_json

BEST_POLICY = policy_file.BEST_POLICY_FILE


def run(
    options: RunOptions, run_config: dict[str, Any], run_dir: Path, env, randomizer
) -> dict[str, Any]:
    """Trains (or, with `play_only`, only evaluates) a PPO run; returns its final.json."""
    cfg = train_config(run_config)
    lead = jax.process_index() == 0
    trainer = PPOTrainer(env, cfg, run_config["seed"], randomizer, options.max_devices_per_host)
    state, start = trainer.init_state(), 0
    if options.load_checkpoint_path:
        restored, _, start = checkpoint.restore(options.load_checkpoint_path, state)
        state = jax.tree.map(jnp.asarray, restored)
    elif run_config.get("init_policy"):
        state = init_from_policy(state, run_config["init_policy"], run_config["env_name"])
    total = trainer.schedule.total_steps
    logger = run_logger.RunLogger(
        run_dir,
        total,
        start,
        use_tb=options.use_tb and lead,
        use_wandb=options.use_wandb and lead,
        config=run_config,
        show_progress=options.progress and lead,
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
    if not options.play_only:
        if start == 0 and options.run_evals and cfg.num_evals > 1 and lead:
            logger.log(0, trainer.evaluate(state))

        best_path = run_dir / BEST_POLICY
        # A resumed run competes with the best of its earlier part.
        best = best_success(best_path) if options.load_checkpoint_path else -1.0

        def on_epoch(step: int, st, metrics: dict[str, float]) -> None:
            nonlocal best
            epoch_seconds.append(metrics["training/epoch_seconds"])
            if lead:
                logger.log(step, metrics)
                success = metrics.get("eval/success_rate")
                # PPO's held-out success swings from one evaluation to the next late in a run
                # (docs/results.md lists a run's evaluations), so the last policy is not always
                # the best one seen.
                # Written before the checkpoint, so that a resume knows every earlier best.
                if success is not None and success >= best:
                    best = success
                    save(best_path, st, step, {"held_out_success_rate": success})
                ckpt.save(step, st, run_config)

        state, step = trainer.run(state, start, on_epoch, run_evals=options.run_evals)
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
            **wall_split(epoch_seconds),
            "policy": str(policy_path),
            "run_dir": str(run_dir),
        }
        if (run_dir / BEST_POLICY).is_file():
            best_extra = policy_file.read_policy(run_dir / BEST_POLICY)["extra"]
            summary["best_policy"] = str(run_dir / BEST_POLICY)
            summary["best_env_steps"] = best_extra["env_steps"]
            summary["best_success_rate"] = best_extra["held_out_success_rate"]
        if options.render_final_policy:
            policy = trainer.make_policy(params, deterministic=True)
            try:
                path, success = video.write_rollout_video(
                    env,
                    policy,
                    run_dir / "rollout.mp4",
                    jax.random.PRNGKey(run_config["seed"]),
                    num_episodes=options.num_videos,
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


def init_from_policy(state, path: str, env_name: str):
    """`state` with the normaliser and both networks of the teacher file at `path`.

    The optimiser state stays fresh: Adam's moments belong to the run that wrote them, and a
    fine-tune usually changes the learning rate anyway."""
    normalizer, policy, value = policy_file.read_policy(path, env_name)["params"]
    loaded = (normalizer, policy, value)
    own = (state.normalizer_params, state.params.policy, state.params.value)
    mine = jax.tree_util.tree_structure(own)
    if jax.tree_util.tree_structure(loaded) != mine:
        raise UsageError(f"--init_policy: {path!r} does not hold this run's networks.")
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(own), strict=True):
        if np.shape(a) != np.shape(b):
            raise UsageError(
                f"--init_policy: {path!r} holds a {np.shape(a)} array where the run has "
                f"{np.shape(b)} (observation or action size differs)."
            )
    loaded = jax.tree.map(lambda a, b: jnp.asarray(a, dtype=jnp.result_type(b)), loaded, own)
    return state.replace(
        normalizer_params=loaded[0],
        params=state.params.replace(policy=loaded[1], value=loaded[2]),
    )


def best_success(path: Path) -> float:
    """Held-out success of a run's best policy so far (-1 when there is none yet)."""
    legacy = path.with_suffix(".pkl")
    if not path.is_file() and legacy.is_file():
        # Resuming without it would silently forget the earlier part's best policy.
        raise policy_file.legacy_error(legacy)
    if not path.is_file():
        return -1.0
    return float(policy_file.read_policy(path)["extra"]["held_out_success_rate"])


def wall_split(epoch_seconds: list[float]) -> dict[str, float]:
    """The first epoch of a process includes compilation; the others are pure training."""
    if not epoch_seconds:
        return {}
    out = {"first_epoch_seconds": epoch_seconds[0]}
    if len(epoch_seconds) > 1:
        steady = float(np.mean(epoch_seconds[1:]))
        out["steady_epoch_seconds"] = steady
        out["jit_seconds_estimate"] = max(epoch_seconds[0] - steady, 0.0)
    return out
