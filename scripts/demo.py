"""The CPU demo of the pipeline as it stands: tasks, physics, randomisation, and brax training.

    python scripts/demo.py            # 7 minutes on 2 CPU cores the first time (cold cache)
    python scripts/demo.py --quick    # skip the PPO stage

Stages, each printing its result:
1. Feasibility: a scripted grasp-and-lift (native MuJoCo) picks the AlohaS2RPick block.
2. Batched MJX rollout of AlohaS2RPick with per-env domain randomisation: env steps/s, rewards.
3. AlohaS2RPegInsertion from its lifted start: both arms hold their objects.
4. A short Brax PPO run on AlohaS2RPick through the training wrapper (asymmetric actor-critic).
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

import playground  # noqa: F401  (XLA flags and compilation cache first)
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


def short_ppo(num_timesteps: int) -> None:
    from brax.training.agents.ppo import networks as ppo_networks
    from brax.training.agents.ppo import train as ppo

    t = stage(
        f"4. Brax PPO on AlohaS2RPick, {num_timesteps:,} env steps (a smoke run, not a teacher)"
    )
    env = registry.load("AlohaS2RPick")

    def progress(step, metrics):
        print(
            f"  step {step:>7,}: eval reward {float(metrics['eval/episode_reward']):7.2f}, "
            f"success steps/episode {float(metrics.get('eval/episode_success', 0.0)):.2f}  "
            f"[{time.perf_counter() - t:.0f} s]",
            flush=True,
        )

    ppo.train(
        environment=env,
        num_timesteps=num_timesteps,
        episode_length=40,
        num_envs=32,
        batch_size=32,
        num_minibatches=4,
        unroll_length=10,
        num_updates_per_batch=2,
        num_evals=3,
        num_eval_envs=32,
        learning_rate=1e-3,
        entropy_cost=1e-2,
        discounting=0.97,
        normalize_observations=True,
        wrap_env_fn=wrap_for_brax_training,
        randomization_fn=registry.get_domain_randomizer("AlohaS2RPick"),
        network_factory=functools.partial(
            ppo_networks.make_ppo_networks,
            policy_hidden_layer_sizes=(32, 32),
            value_hidden_layer_sizes=(64, 64),
            policy_obs_key="state",
            value_obs_key="privileged_state",
        ),
        progress_fn=progress,
        seed=0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="skip the PPO stage")
    parser.add_argument("--batch", type=int, default=64, help="envs in the rollout stage")
    parser.add_argument(
        "--ppo_timesteps", type=int, default=10_240, help="env steps in the PPO stage"
    )
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
        short_ppo(args.ppo_timesteps)
    print(f"\nDemo finished in {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
