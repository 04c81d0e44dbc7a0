"""The CPU demo of the whole pipeline: tasks, physics, teacher, student, ONNX, sim-to-sim.

    python scripts/demo.py            # docs/results.md gives its measured time on 2 CPU cores
    python scripts/demo.py --quick    # stages 1-3 only (no training)

Stages, each printing its result:
1. Feasibility: a scripted grasp-and-lift (native MuJoCo) picks the AlohaS2RPick block.
2. Batched MJX rollout of AlohaS2RPick with per-env domain randomisation: env steps/s, rewards.
3. AlohaS2RPegInsertion from its lifted start: both arms hold their objects.
4. Teacher: learning/train_jax_ppo.py on FrankaReach (PPO, asymmetric actor-critic), with its
   run folder: checkpoints, logs, curve, policy, video.
5. Student: experimental/train_dagger.py --domain-randomization, a few DAgger iterations of
   the Aloha pixel student (both wrist cameras, RGB + depth) from the shipped teachers in
   params/, the whole task from the table; a short run, printed beside the shipped student's
   card.
6. ONNX: experimental/jax2onnx/aloha_nets_to_onnx.py exports the teacher and the student's last
   checkpoint, checked against JAX.
7. Sim-to-sim: scripts/sim2sim.py runs both ONNX policies on a native-MuJoCo robot (latency,
   safety layer, mujoco.Renderer cameras) beside the MJX env.
"""

# ruff: noqa: I001  (playground is imported first on purpose)
from __future__ import annotations

# First, before jax and mujoco load: XLA flags, compilation cache, headless MUJOCO_GL.
import playground  # noqa: F401

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from playground import cli_checks, registry
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


def teacher(num_timesteps: int, logdir: str) -> dict:
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
        f"episodes; run folder {summary['run_dir']} (policy.safetensors, checkpoints/, tb/, "
        f"learning_curve.png, rollout.mp4)"
    )
    print(f"({time.perf_counter() - t:.1f} s)")
    return summary


SHIPPED_STUDENT_CARD = "params/aloha_s2r_student_native.json"


def student(iterations: int, logdir: str) -> dict:
    from playground.training import distill

    t = stage(
        "5. Student distillation (experimental/train_dagger.py --domain-randomization): the "
        f"Aloha pixel student from the shipped teachers, {iterations} DAgger iterations"
    )
    summary = distill.main(
        [
            "--domain-randomization",
            "--env_config",
            "impl=native",
            "--iterations",
            str(iterations),
            "--eval_every",
            str(iterations),
            "--num_envs",
            "32",
            "--num_eval_envs",
            "16",
            "--num_videos",
            "1",
            "--logdir",
            logdir,
        ]
    )
    print(
        f"a short run ({summary['env_steps']:,} env steps): held-out success student "
        f"{summary['student_success_rate']:.0%}, teacher {summary['teacher_success_rate']:.0%} "
        f"on the same {summary['eval_episodes']} starts; run folder {summary['run_dir']} "
        "(students/, student.safetensors, checkpoints/, tb/, camera_views.mp4)"
    )
    card = Path(__file__).resolve().parents[1] / SHIPPED_STUDENT_CARD
    if card.is_file():
        shipped = json.loads(card.read_text())
        ev = (shipped.get("independent_evaluations") or [{}])[0]
        print(
            f"the shipped student ({SHIPPED_STUDENT_CARD}): {shipped['env_steps']:,} env steps, "
            f"{ev.get('success_rate', shipped['success_rate']):.1%} success against its teacher's "
            f"{ev.get('teacher', {}).get('success_rate', shipped['teacher_success_rate']):.1%} "
            f"on {ev.get('episodes', '?')} held-out starts"
        )
    print(f"({time.perf_counter() - t:.1f} s)")
    return summary


def export(run_dirs: list[str]) -> list[str]:
    """The ONNX file of each run: the teacher's, and the student's last checkpoint."""
    from playground.deploy import export_cli

    t = stage("6. ONNX export (experimental/jax2onnx/aloha_nets_to_onnx.py)")
    paths = []
    for run_dir in run_dirs:
        results = export_cli.main(["--checkpoint_path", run_dir])
        paths.append(results[0]["onnx"])  # a student run's newest checkpoint comes first
    print(f"({time.perf_counter() - t:.1f} s)")
    return paths


def sim_to_sim(onnx_paths: list[str], episodes: list[int]) -> None:
    from playground.deploy import sim2sim

    t = stage(f"7. Sim-to-sim (scripts/sim2sim.py): {' and '.join(map(str, episodes))} episodes")
    for path, n in zip(onnx_paths, episodes, strict=True):
        sim2sim.main(["--onnx", path, "--episodes", str(n)])
    print(f"({time.perf_counter() - t:.1f} s)")


def main(argv: list[str] | None = None) -> None:
    parser = cli_checks.ArgumentParser(
        prog="demo.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    positive = cli_checks.positive_int
    parser.add_argument("--quick", action="store_true", help="stages 1-3 only (no training)")
    parser.add_argument("--batch", type=positive, default=64, help="envs in the rollout stage")
    parser.add_argument(
        "--teacher_timesteps",
        type=positive,
        default=163_840,
        help="env steps of the FrankaReach teacher",
    )
    parser.add_argument(
        "--student_iterations",
        type=positive,
        default=6,
        help="DAgger iterations of the Aloha student (32 envs x 8 steps each)",
    )
    parser.add_argument(
        "--episodes", type=positive, default=16, help="sim-to-sim episodes of the teacher"
    )
    parser.add_argument(
        "--student_episodes",
        type=positive,
        default=4,
        help="sim-to-sim episodes of the Aloha student (160 steps each)",
    )
    parser.add_argument("--logdir", default="logs", help="where the run folders go")
    args = parser.parse_args(argv)
    if not args.quick:
        try:
            # Stage 4 writes there only after stages 1-3, minutes in.
            cli_checks.check_writable_dir(args.logdir, "--logdir")
        except cli_checks.UsageError as e:
            cli_checks.exit_usage(parser, e)
    start = time.perf_counter()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; "
        f"envs: {', '.join(registry.ALL_ENVS)}"
    )
    feasibility()
    batched_rollout(args.batch, 20)
    peg_lifted_start()
    if not args.quick:
        t = teacher(args.teacher_timesteps, args.logdir)
        s = student(args.student_iterations, args.logdir)
        sim_to_sim(export([t["run_dir"], s["run_dir"]]), [args.episodes, args.student_episodes])
    print(f"\nDemo finished in {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
