"""The CPU demo of the pipeline as it stands: tasks, physics, randomisation, teacher training.

    python scripts/demo.py            # about 4 minutes on 2 CPU cores the first time (cold cache)
    python scripts/demo.py --quick    # skip the teacher-training stage

Stages, each printing its result:
1. Feasibility: a scripted grasp-and-lift (native MuJoCo) picks the AlohaS2RPick block.
2. Batched MJX rollout of AlohaS2RPick with per-env domain randomisation: env steps/s, rewards.
3. AlohaS2RPegInsertion from its lifted start: both arms hold their objects.
4. Teacher training with learning/train_jax_ppo.py on FrankaReach (PPO, asymmetric actor-critic)
   to >= 90% held-out success, with its run folder: checkpoints, logs, curve, policy, video.
"""

# ruff: noqa: I001  (playground is imported first on purpose)
from __future__ import annotations

# First, before jax and mujoco load: XLA flags, compilation cache, headless MUJOCO_GL.
import playground  # noqa: F401

import argparse
import time

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from playground import registry
from playground.envs.aloha import scripted
from playground.envs.wrappers import wrap_for_brax_training


def stage(title: str) -> float:
    print(f"\n=== {title}", flush=True)
    return time.perf_counter()


def feasibility() -> None:
    t = stage("1. Scripted grasp-and-lift on native MuJoCo (AlohaS2RPick model)")
    env = registry.load("AlohaS2RPick")
    m, blk = env.mj_model, env.block
    d = mujoco.MjData(m)
    mujoco.mj_resetDataKeyframe(m, d, m.keyframe("home").id)
    d.qpos[blk.qpos_adr : blk.qpos_adr + 7] = [-0.15, 0.05, 0.02, np.cos(0.15), 0, 0, np.sin(0.15)]
    mujoco.mj_forward(m, d)
    result = scripted.grasp_and_lift(m, d, env.arm, blk)
    print(
        f"block height per phase (m): {np.round(result.object_heights_m, 3)}; "
        f"lifted: {result.lifted}"
    )
    print(f"({time.perf_counter() - t:.1f} s)")


def batched_rollout(batch: int, steps: int) -> None:
    t = stage(f"2. MJX rollout: AlohaS2RPick, {batch} envs x {steps} steps, domain randomisation")
    env = registry.load("AlohaS2RPick")
    w = wrap_for_brax_training(
        env,
        episode_length=env.config.episode_length,
        randomization_fn=lambda mdl: registry.get_domain_randomizer("AlohaS2RPick")(
            mdl, jax.random.split(jax.random.PRNGKey(0), batch)
        ),
    )

    @jax.jit
    def rollout(state, key):
        def body(s, k):
            a = jax.random.uniform(k, (batch, env.action_size), minval=-1, maxval=1)
            s = w.step(s, a)
            return s, s.metrics

        return jax.lax.scan(body, state, jax.random.split(key, steps))

    state = jax.jit(w.reset)(jax.random.split(jax.random.PRNGKey(1), batch))
    state, metrics = jax.block_until_ready(rollout(state, jax.random.PRNGKey(2)))
    compiled = time.perf_counter()
    state, metrics = jax.block_until_ready(rollout(state, jax.random.PRNGKey(3)))
    dt = time.perf_counter() - compiled
    sizes = np.asarray(w.env.env._models.geom_size[:, env.block.geom, 0])
    print(
        f"compile + first run {compiled - t:.1f} s; then {batch * steps / dt:,.0f} env steps/s "
        f"({batch * steps * env.n_substeps / dt:,.0f} physics steps/s)"
    )
    print(f"block half-sizes across envs: {sizes.min() * 100:.1f} to {sizes.max() * 100:.1f} cm")
    print(
        "mean reward terms (random actions): "
        + ", ".join(f"{k} {float(jnp.mean(v)):.3f}" for k, v in metrics.items())
    )


def peg_lifted_start() -> None:
    t = stage("3. AlohaS2RPegInsertion from its lifted start (no pick policy needed)")
    env = registry.load("AlohaS2RPegInsertion")
    reset, step = jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))
    state = reset(jax.random.split(jax.random.PRNGKey(0), 4))
    for _ in range(20):
        state = step(state, jnp.zeros((4, env.action_size)))
    socket, peg = env.objects
    print(
        "after 1 s holding still: socket z "
        f"{np.round(np.asarray(state.data.xpos[:, socket.body, 2]), 3)}, "
        f"peg z {np.round(np.asarray(state.data.xpos[:, peg.body, 2]), 3)}, "
        f"both held: {np.asarray(state.metrics['hold']).tolist()}"
    )
    print(f"({time.perf_counter() - t:.1f} s)")


def teacher(num_timesteps: int, logdir: str) -> None:
    from playground.training import teacher as teacher_cli

    t = stage(
        f"4. Teacher training (learning/train_jax_ppo.py): FrankaReach, {num_timesteps:,} steps"
    )
    summary = teacher_cli.main(
        [
            "--env_name",
            "FrankaReach",
            "--num_timesteps",
            str(num_timesteps),
            "--num_evals",
            "3",
            "--logdir",
            logdir,
            "--num_videos",
            "1",
        ]
    )
    print(
        f"held-out success {summary['success_rate']:.0%} over {summary['eval_episodes']} "
        f"episodes; run folder {summary['run_dir']} (policy.pkl, checkpoints/, tb/, "
        f"learning_curve.png, rollout.mp4)"
    )
    print(f"({time.perf_counter() - t:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="skip the teacher-training stage")
    parser.add_argument("--batch", type=int, default=64, help="envs in the rollout stage")
    parser.add_argument(
        "--teacher_timesteps",
        type=int,
        default=163_840,
        help="env steps of the FrankaReach teacher",
    )
    parser.add_argument("--logdir", default="logs", help="where the teacher's run folder goes")
    args = parser.parse_args()
    start = time.perf_counter()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; "
        f"envs: {', '.join(registry.ALL_ENVS)}"
    )
    feasibility()
    batched_rollout(args.batch, 20)
    peg_lifted_start()
    if not args.quick:
        teacher(args.teacher_timesteps, args.logdir)
    print(f"\nDemo finished in {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
