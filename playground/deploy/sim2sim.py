"""The command line of scripts/sim2sim.py: an exported ONNX policy on a native-MuJoCo robot.

    python scripts/sim2sim.py --onnx logs/FrankaReach-<ts>/onnx/teacher.onnx --env FrankaReach
    python scripts/sim2sim.py --onnx RUN/onnx/student.onnx --env FrankaReachStereo --episodes 16

The policy runs exactly as on the robot (playground/deploy/runner.py): OnnxPolicy on onnxruntime,
the observation builder, the task's servo, the safety layer, and a `SimRobot` (native MuJoCo
physics, `mujoco.Renderer` cameras, the task's latency; `--sensor_noise` for noisy joint and
object readings).
Episodes start from held-out draws of the env's reset distribution. For reference the same ONNX
policy also drives the MJX env from the same starts (`--nomjx` skips it). Printed: success rate on
both, the control loop's latency per step (observation + policy + servo + safety) and the policy's
own, the safety layer's interventions, and the runner's faults (counted by kind; an episode with
`--max_faults` consecutive faults is stopped). `--json PATH` writes the summary.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from playground import cli_checks
from playground.cli_checks import nonnegative_float, nonnegative_int, positive_float, positive_int
from playground.deploy import export_cli, runner
from playground.deploy.obs_builder import DeployError, ObservationBuilder
from playground.deploy.onnx_policy import OnnxPolicy
from playground.deploy.safety import SafetyLayer
from playground.deploy.sim_robot import SimRobot
from playground.files import atomic

# Held-out starts: far from the seeds training and the exporter's parity rollouts use.
SEED_OFFSET = 10_000


def env_for(policy: OnnxPolicy, env_name: str | None):
    """The task the policy was exported for, with the env config written into the file."""
    trained_on = policy.metadata.get("s2r/env_name")
    if trained_on is None:
        raise DeployError(
            f"{policy.path} has no s2r/env_name metadata: export it with "
            "experimental/jax2onnx/aloha_nets_to_onnx.py."
        )
    name = env_name or trained_on
    # Any policy file this config names is read as safetensors only (PolicyFileError otherwise).
    saved = policy.metadata.get("s2r/env_config") if name == trained_on else None
    if saved is not None and not isinstance(saved, dict):
        raise DeployError(f"{policy.path}: s2r/env_config metadata is not a config dict.")
    return export_cli.load_env(name, saved)


def mjx_success(env, policy: OnnxPolicy, keys: jax.Array) -> float:
    """Success rate of the ONNX policy in the MJX env from the starts `keys` (batched)."""
    reset, step = jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))
    state = reset(keys)
    n = keys.shape[0]
    ended = np.zeros(n, bool)
    success = np.zeros(n)
    for t in range(int(env.config.episode_length)):
        obs = {k: np.asarray(state.obs[k]) for k in policy.inputs}
        state = step(state, jnp.asarray(policy(obs)))
        done = np.asarray(state.done) > 0
        last = t == int(env.config.episode_length) - 1
        now = ~ended & (done | last)
        success[now] = np.asarray(state.metrics["success"])[now]
        ended |= now
    return float(success.mean())


def run(args: argparse.Namespace) -> dict[str, Any]:
    policy = OnnxPolicy(args.onnx)
    env = env_for(policy, args.env)
    name = args.env or policy.metadata["s2r/env_name"]
    builder = ObservationBuilder(env)
    runner.check_policy(policy, name, builder)
    robot = SimRobot(env, seed=args.seed, latency=args.latency, sensor_noise=args.sensor_noise)
    safety = SafetyLayer(runner.safety_limits(robot, env, args.watchdog_s))
    keys = jax.random.split(jax.random.PRNGKey(SEED_OFFSET + args.seed), args.episodes)
    steps = args.steps or int(env.config.episode_length)
    successes, logs, switched = [], [], []
    t0 = time.perf_counter()
    try:
        for i in range(args.episodes):
            task = robot.start_episode(keys[i])
            logs.append(
                runner.run_episode(
                    robot, builder, policy, safety, task, steps, max_faults=args.max_faults
                )
            )
            successes.append(robot.success(task))
            # The whole Aloha task: did the robot side see both objects lifted (phase 2)?
            if builder.memory is not None and "has_switched" in builder.memory:
                switched.append(bool(builder.memory["has_switched"] > 0))
            if args.verbose:
                log = logs[-1]
                print(
                    f"episode {i}: success {successes[-1]}, interventions {log.interventions}, "
                    f"faults {log.faults}"
                    + (f", stopped: {log.stop_reason}" if log.stopped else ""),
                    flush=True,
                )
    finally:
        robot.close()
    wall = time.perf_counter() - t0
    interventions: dict[str, int] = {}
    for log in logs:
        for k, v in log.interventions.items():
            interventions[k] = interventions.get(k, 0) + v
    summary = {
        "onnx": str(policy.path),
        "env": name,
        "kind": policy.metadata.get("s2r/kind"),
        "episodes": args.episodes,
        "steps_per_episode": steps,
        "latency": args.latency,
        "sensor_noise": args.sensor_noise,
        "native_success_rate": float(np.mean(successes)),
        **({"native_lifted_both_rate": float(np.mean(switched))} if switched else {}),
        "loop_latency": runner.latency_summary([s for g in logs for s in g.loop_latency_s]),
        "policy_latency": runner.latency_summary([s for g in logs for s in g.policy_latency_s]),
        "interventions": interventions,
        **runner.fault_summary(logs),
        "max_faults": args.max_faults,
        "wall_s": wall,
    }
    if args.mjx:
        summary["mjx_success_rate"] = mjx_success(env, policy, keys)
    return summary


def report(s: dict[str, Any]) -> str:
    lat, pol = s["loop_latency"], s["policy_latency"]
    rows = [
        f"sim2sim: {s['kind']} policy on {s['env']}, {s['episodes']} held-out episodes x "
        f"{s['steps_per_episode']} steps (latency {'on' if s['latency'] else 'off'}, sensor "
        f"noise {s['sensor_noise']:g} x obs_noise)",
        f"  success, native MuJoCo robot : {s['native_success_rate']:.0%}",
    ]
    if "native_lifted_both_rate" in s:
        rows.append(f"  both objects lifted (native) : {s['native_lifted_both_rate']:.0%}")
    if "mjx_success_rate" in s:
        rows.append(f"  success, MJX env (same starts): {s['mjx_success_rate']:.0%}")
    rows += [
        f"  control loop per step        : p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms,"
        f" max {lat['max_ms']:.2f} ms",
        f"  of which the ONNX policy     : p50 {pol['p50_ms']:.2f} ms, p99 {pol['p99_ms']:.2f} ms",
        f"  safety interventions         : {s['interventions'] or 'none'}",
        f"  faults (robot held)          : {s['faults'] or 'none'}, "
        f"{s['stopped_episodes']} episode(s) stopped after {s['max_faults']} in a row",
        f"  wall time (robot included)   : {s['wall_s']:.1f} s",
    ]
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    p = cli_checks.ArgumentParser(
        prog="sim2sim.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    p.add_argument("--onnx", required=True, help="an exported policy (.onnx)")
    p.add_argument("--env", default=None, help="the task (default: the one in the file)")
    p.add_argument("--episodes", type=positive_int, default=32)
    p.add_argument(
        "--steps", type=nonnegative_int, default=0, help="per episode (0: episode_length)"
    )
    p.add_argument("--seed", type=int, default=0)
    cli_checks.add_bool(
        p, "latency", True, "the task's action and observation delays (--nolatency: none)"
    )
    p.add_argument(
        "--sensor_noise",
        type=nonnegative_float,
        default=0.0,
        help="joint reading noise as a fraction of the task's obs_noise (1 = the env's policy-"
        "input noise on every joint reading the servo uses; default 0)",
    )
    p.add_argument(
        "--watchdog_s",
        type=positive_float,
        default=0.25,
        help="refuse readings older than this (simulated age plus the loop's wall time)",
    )
    p.add_argument(
        "--max_faults",
        type=positive_int,
        default=runner.DEFAULT_MAX_FAULTS,
        help="consecutive faults (each held) before the robot is stopped",
    )
    cli_checks.add_bool(p, "mjx", True, "also run the MJX env from the same starts (--nomjx: skip)")
    p.add_argument("--json", default=None, help="write the summary here")
    p.add_argument(
        "--verbose", action="store_true", help="per-episode lines and every safety intervention"
    )
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("playground.deploy.safety").setLevel(
        logging.WARNING if args.verbose else logging.ERROR
    )
    try:
        if args.json:
            # Checked now: the summary is written only after every episode has run.
            cli_checks.check_writable_file(args.json, "--json")
        summary = run(args)
    except (FileNotFoundError, cli_checks.UsageError) as e:  # policy, deploy, name errors
        cli_checks.exit_usage(parser, e)
    print(report(summary), flush=True)
    if args.json:
        atomic.write_json(Path(args.json), summary)
    return summary


def cli() -> int:
    """The `s2r-sim2sim` console command."""
    main()
    return 0


if __name__ == "__main__":
    main(sys.argv[1:])
