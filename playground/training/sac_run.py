"""A SAC teacher run (`train_jax_ppo.py --algo sac`): brax's SAC trainer in the same run folder.

SAC suits the tasks with a flat, low-dimensional policy observation (brax's SAC takes one flat
observation, so actor and critic both see `state`). brax's SAC owns its loop: it writes its own
params checkpoints (`<run>/sac_checkpoints/<step>/`, observation normaliser and policy) at every
evaluation. Resuming is refused with the reason: brax 0.14.2's own SAC restore path fails (it
puts unreplicated params into its replicated training state). Evaluation on held-out seeds, the
learning curve, TensorBoard and the video are the same as for PPO.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from brax.training.agents.sac import networks as sac_networks
from brax.training.agents.sac import train as sac

from playground.envs.wrappers import wrap_for_brax_training
from playground.errors import UsageError
from playground.training import evaluate, run_logger, video
from playground.training.options import RunOptions
from playground.training.ppo import bind_randomizer
from playground.training.run_config import train_config
from playground.training.run_files import write_json

SAC_CHECKPOINTS = "sac_checkpoints"


def refuse_resume(path: Path) -> None:
    """Raises if `path` is a SAC run folder: those cannot be resumed (see the module doc)."""
    config = path / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("algo") == "sac":
        raise UsageError(
            f"{path} is a SAC run, and SAC runs cannot be resumed: brax 0.14.2's SAC restores "
            "its checkpoint params after replicating its state across devices and then fails "
            "reading them back (AttributeError in sac/train.py _unpmap). Start a new run; its "
            f"policy params are in {path / SAC_CHECKPOINTS}."
        )


def _latest_brax_checkpoint(run_dir: Path) -> Path | None:
    root = run_dir / SAC_CHECKPOINTS
    steps = sorted(p for p in root.glob("*") if p.name.isdigit()) if root.is_dir() else []
    return steps[-1] if steps else None


def run(
    options: RunOptions, run_config: dict[str, Any], run_dir: Path, env, randomizer
) -> dict[str, Any]:
    """Trains a SAC run with brax's trainer; returns its final.json."""
    if options.play_only:
        raise UsageError(
            "--play_only evaluates PPO runs; a SAC run's final.json holds its evaluation."
        )
    cfg = train_config(run_config)
    episode_length = env.config.episode_length if cfg.episode_length <= 0 else cfg.episode_length
    network_factory = functools.partial(
        sac_networks.make_sac_networks,
        hidden_layer_sizes=tuple(cfg.network.hidden_layer_sizes),
        activation=getattr(jax.nn, cfg.network.activation),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", run_config)
    logger = run_logger.RunLogger(
        run_dir,
        cfg.num_timesteps,
        0,
        use_tb=options.use_tb,
        use_wandb=options.use_wandb,
        config=run_config,
        show_progress=options.progress,
    )
    logger.write(
        f"{run_config['env_name']} (SAC): {cfg.num_timesteps:,} env steps; run folder {run_dir}"
    )
    t0 = time.perf_counter()
    make_policy, params, _ = sac.train(
        environment=env,
        num_timesteps=cfg.num_timesteps,
        episode_length=episode_length,
        wrap_env_fn=functools.partial(wrap_for_brax_training, observation_key="state"),
        action_repeat=cfg.action_repeat,
        num_envs=cfg.num_envs,
        num_eval_envs=cfg.num_eval_envs,
        learning_rate=cfg.learning_rate,
        discounting=cfg.discounting,
        seed=run_config["seed"],
        batch_size=cfg.batch_size,
        num_evals=cfg.num_evals,
        normalize_observations=cfg.normalize_observations,
        max_devices_per_host=options.max_devices_per_host,
        reward_scaling=cfg.reward_scaling,
        min_replay_size=cfg.min_replay_size,
        max_replay_size=cfg.max_replay_size,
        grad_updates_per_step=cfg.grad_updates_per_step,
        deterministic_eval=True,
        network_factory=network_factory,
        randomization_fn=randomizer,
        progress_fn=lambda step, m: logger.log(step, {k: float(v) for k, v in m.items()}),
        checkpoint_logdir=str(run_dir / SAC_CHECKPOINTS),
    )
    wall = time.perf_counter() - t0

    def policy_on_dict(p, deterministic=True):
        inner = make_policy(p, deterministic)
        return lambda obs, key: inner(obs["state"], key)

    eval_randomizer = bind_randomizer(
        randomizer, jax.random.PRNGKey(run_config["seed"] + 11), cfg.num_eval_envs
    )
    evaluator = evaluate.make_evaluator(
        env, policy_on_dict, cfg.num_eval_envs, episode_length, cfg.action_repeat, eval_randomizer
    )
    rng = jax.random.PRNGKey(run_config["seed"] + evaluate.HELD_OUT_SEED_OFFSET)
    final_eval = {k: float(v) for k, v in evaluator(params, rng).items()}
    summary = {
        "env_name": run_config["env_name"],
        "algo": "sac",
        "env_steps": cfg.num_timesteps,
        "success_rate": final_eval["eval/success_rate"],
        "episode_reward": final_eval["eval/episode_reward"],
        "eval_episodes": cfg.num_eval_envs,
        "wall_seconds": wall,
        "checkpoint": str(_latest_brax_checkpoint(run_dir)),
        "run_dir": str(run_dir),
    }
    if options.render_final_policy:
        path, success = video.write_rollout_video(
            env,
            policy_on_dict(params),
            run_dir / "rollout.mp4",
            jax.random.PRNGKey(run_config["seed"]),
            num_episodes=options.num_videos,
        )
        summary["video"], summary["video_success"] = str(path), float(np.mean(success))
    write_json(run_dir / "final.json", summary)
    logger.write(
        f"done: held-out success {summary['success_rate']:.0%} over {cfg.num_eval_envs} episodes"
    )
    logger.close()
    return summary
