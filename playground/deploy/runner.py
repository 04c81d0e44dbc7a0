"""The control loop that runs an exported policy on a robot, real or simulated.

Per control step: read the robot -> build the observation (obs_builder) -> ONNX policy ->
actuator targets (the task's servo) -> safety layer -> send. The loop's latency (reading in hand
to targets out: observation, policy, command, safety) is measured every step; the policy's own
onnxruntime time separately.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from playground.deploy.obs_builder import DeployError, ObservationBuilder
from playground.deploy.onnx_policy import OnnxPolicy
from playground.deploy.robot import Robot
from playground.deploy.safety import SafetyLayer, SafetyLimits


@dataclasses.dataclass
class EpisodeLog:
    steps: int = 0
    loop_latency_s: list[float] = dataclasses.field(default_factory=list)
    policy_latency_s: list[float] = dataclasses.field(default_factory=list)
    interventions: dict[str, int] = dataclasses.field(default_factory=dict)


def check_policy(policy: OnnxPolicy, env_name: str, builder: ObservationBuilder) -> None:
    """The policy was exported for this task and reads only what the builder provides."""
    trained_on = policy.metadata.get("s2r/env_name")
    if trained_on != env_name:
        raise DeployError(
            f"{policy.path} was exported for {trained_on!r}, not {env_name!r}: run it with "
            f"--env {trained_on}."
        )
    if policy.action_size != builder.env.action_size:
        raise DeployError(
            f"{policy.path} outputs {policy.action_size} actions; {env_name} takes "
            f"{builder.env.action_size}."
        )


def safety_limits(robot: Robot, env: Any, watchdog_s: float) -> SafetyLimits:
    """The robot's target limits, and per-step target changes within the task's safe speeds."""
    lower, upper = robot.target_limits
    return SafetyLimits(
        lower=lower,
        upper=upper,
        max_step=np.asarray(env.robot_target_speed()) * env.ctrl_dt,
        watchdog_s=watchdog_s,
    )


def run_episode(
    robot: Robot,
    builder: ObservationBuilder,
    policy: OnnxPolicy,
    safety: SafetyLayer,
    task: dict[str, Any],
    steps: int,
) -> EpisodeLog:
    """Runs one episode of `steps` control steps from the robot's current state."""
    log = EpisodeLog()
    before = safety.counts()
    held = robot.held_targets
    builder.start(robot.read(), task, held)
    safety.reset(held, robot.now_s())
    for _ in range(steps):
        reading = robot.read()
        t0 = time.perf_counter()
        obs = builder.observe(reading)
        action = policy({name: obs[name] for name in policy.inputs})
        policy_s = policy.last_latency_s
        targets = safety.filter(builder.command(action), robot.now_s(), reading.time_s)
        builder.sent(targets)
        log.loop_latency_s.append(time.perf_counter() - t0)
        log.policy_latency_s.append(policy_s)
        robot.send(targets)
        log.steps += 1
    after = safety.counts()
    log.interventions = {k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)}
    return log


def latency_summary(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }
