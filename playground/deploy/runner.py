"""The control loop that runs an exported policy on a robot, real or simulated.

Per control step: read the robot -> build the observation (obs_builder) -> ONNX policy ->
actuator targets (the task's servo) -> safety layer -> send. The loop's latency (reading in hand
to targets out: observation, policy, command, safety) is measured every step; the policy's own
onnxruntime time separately.

Episode start: `robot.hold()` commands the measured position, and the safety layer starts from
it, so the first command is rate-limited from where the joints are.

Faults. Whatever goes wrong in a step is a fault of one kind: `read` (read raised), `reading`
(joints not finite or of the wrong shape), `watchdog` (a stale reading, one stamped in the
future or on another clock, or a step that took too long), `policy` (the policy raised or gave
anything but a finite action of the task's size), `servo` (the task's `robot_command` failed or
gave non-finite targets), `safety` (the safety layer refused the targets), `send` (send raised),
and `start` (the episode could not start). On a fault nothing of that step is sent: the robot
holds its measured position (`Robot.hold`; a failing hold is counted as `hold`), the fault is
logged and counted, and the step waits out its control period. After `max_faults` consecutive
faults (3: 150 ms at 20 Hz) the runner calls `Robot.stop()` and ends the episode; a step that
sends resets the count. No exception leaves `run_episode`, except KeyboardInterrupt and
SystemExit, which pass after the robot is held and stopped.

Watchdog. A reading's age is measured on the runner's monotonic clock (`clock`, default
`time.monotonic`): `Reading.time_s` is on that clock, checked when the reading arrives and again
just before its targets are sent, so a stalled policy or servo is caught. A simulated robot
(`Robot.simulated_time`) stamps readings with simulated time, which does not pass while the
loop computes: there the age is the simulated age (`now_s() - time_s`) plus the wall time since
the reading arrived.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from playground.deploy.obs_builder import DeployError, ObservationBuilder
from playground.deploy.onnx_policy import OnnxPolicy
from playground.deploy.robot import Reading, Robot
from playground.deploy.safety import SafetyLayer, SafetyLimits, finite_vector, real_scalar

LOG = logging.getLogger("playground.deploy.runner")

# Consecutive faults before the robot is stopped: 150 ms at the tasks' 20 Hz.
DEFAULT_MAX_FAULTS = 3

FAULT_KINDS = (
    "start",
    "read",
    "reading",
    "watchdog",
    "policy",
    "servo",
    "safety",
    "send",
    "hold",
    "stop",
    "runner",
)


class Policy(Protocol):
    """What the runner calls: an `OnnxPolicy`, or anything with its call and `inputs`."""

    inputs: Mapping[str, Any]

    def __call__(self, obs: Mapping[str, np.ndarray]) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Fault:
    step: int
    kind: str  # one of FAULT_KINDS
    detail: str


@dataclasses.dataclass
class EpisodeLog:
    steps: int = 0  # control steps run (sent or faulted)
    sent: int = 0  # commands sent
    loop_latency_s: list[float] = dataclasses.field(default_factory=list)
    policy_latency_s: list[float] = dataclasses.field(default_factory=list)
    interventions: dict[str, int] = dataclasses.field(default_factory=dict)
    faults: dict[str, int] = dataclasses.field(default_factory=dict)
    fault_log: list[Fault] = dataclasses.field(default_factory=list)
    stopped: bool = False  # Robot.stop() was called
    stop_reason: str = ""


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
    policy: Policy,
    safety: SafetyLayer,
    task: dict[str, Any],
    steps: int,
    *,
    max_faults: int = DEFAULT_MAX_FAULTS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    period_s: float | None = None,
) -> EpisodeLog:
    """Runs one episode of `steps` control steps from the robot's current state (see the module
    doc for faults and the watchdog). `period_s` (default: the task's `ctrl_dt`) is how long a
    faulted step lasts, since no `send` paces it."""
    if not (isinstance(max_faults, int) and max_faults >= 1):
        raise ValueError(f"max_faults must be an integer >= 1, got {max_faults!r}")
    return _Loop(robot, builder, policy, safety, task, max_faults, clock, sleep, period_s).run(
        steps
    )


class _StepFault(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


class _Loop:
    def __init__(
        self,
        robot: Robot,
        builder: ObservationBuilder,
        policy: Policy,
        safety: SafetyLayer,
        task: dict[str, Any],
        max_faults: int,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        period_s: float | None,
    ):
        self.robot, self.builder, self.policy, self.safety = robot, builder, policy, safety
        self.task, self.max_faults, self.clock, self.sleep = task, max_faults, clock, sleep
        self.period_s = float(builder.env.ctrl_dt if period_s is None else period_s)
        self.action_size = int(builder.env.action_size)
        self.simulated = bool(getattr(robot, "simulated_time", False))
        self.log = EpisodeLog()
        self.in_a_row = 0

    def run(self, steps: int) -> EpisodeLog:
        before = self.safety.counts()
        try:
            self._episode(steps)
        except Exception as e:  # a bug of the runner's own: the robot still ends held and stopped
            self._record("runner", _why(e))
            self._hold()
            self._stop(f"runner error: {_why(e)}")
        except BaseException as e:  # Ctrl-C or an exit: stop the robot, then let it through
            self._hold()
            self._stop(f"interrupted: {type(e).__name__}")
            raise
        finally:
            after = self.safety.counts()
            self.log.interventions = {
                k: n - before.get(k, 0) for k, n in after.items() if n > before.get(k, 0)
            }
        return self.log

    def _episode(self, steps: int) -> None:
        if steps <= 0:
            return
        started = False
        while not self.log.stopped:
            t_step = self.clock()
            if not started:
                try:
                    self._start()
                    started = True
                except _StepFault as f:
                    self._fault(f, t_step)
                continue
            if self.log.steps >= steps:
                return
            self.log.steps += 1
            try:
                self._step()
                self.in_a_row = 0
            except _StepFault as f:
                self._fault(f, t_step)

    def _start(self) -> None:
        try:
            held = self.robot.hold()
            reading = self.robot.read()
        except Exception as e:
            raise _StepFault("start", _why(e)) from None
        received = self.clock()
        result = self.safety.reset(held, received)
        if not result.ok:
            raise _StepFault("start", result.detail)
        self._stamp(reading, received)
        try:
            self.builder.start(reading, self.task, result.targets)
        except Exception as e:
            raise _StepFault("start", _why(e)) from None

    def _step(self) -> None:
        try:
            reading = self.robot.read()
        except Exception as e:
            raise _StepFault("read", _why(e)) from None
        received = self.clock()
        stamp = self._stamp(reading, received)
        t0 = time.perf_counter()
        try:
            obs = self.builder.observe(reading)
        except Exception as e:
            raise _StepFault("reading", _why(e)) from None
        try:
            feeds = {name: obs[name] for name in self.policy.inputs}
            tp = time.perf_counter()
            action = self.policy(feeds)
            policy_s = getattr(self.policy, "last_latency_s", time.perf_counter() - tp)
        except Exception as e:
            raise _StepFault("policy", _why(e)) from None
        # The servo keeps state between steps: what it is given must be a valid action.
        action, why = finite_vector(action, self.action_size)
        if action is None:
            raise _StepFault("policy", f"action refused: {why}")
        try:
            targets = self.builder.command(action)
        except Exception as e:
            raise _StepFault("servo", _why(e)) from None
        result = self.safety.filter(targets, self.clock(), stamp)
        if not result.ok:
            kind = "watchdog" if result.refused == "watchdog" else "safety"
            raise _StepFault(kind, f"{result.refused}: {result.detail}")
        loop_s = time.perf_counter() - t0
        try:
            self.robot.send(result.targets)
        except Exception as e:
            raise _StepFault("send", _why(e)) from None
        self.log.sent += 1
        self.log.loop_latency_s.append(loop_s)
        self.log.policy_latency_s.append(float(policy_s))
        try:
            self.builder.sent(result.targets)
        except Exception as e:
            raise _StepFault("servo", _why(e)) from None

    def _stamp(self, reading: Reading, received: float) -> float:
        """The reading's time on the runner's clock, refused as a watchdog fault when unusable."""
        if not hasattr(reading, "time_s"):
            raise _StepFault("reading", f"read() returned {type(reading).__name__}, not a Reading")
        t = real_scalar(reading.time_s)
        if t is None:
            raise _StepFault("watchdog", "reading has no finite real timestamp")
        if self.simulated:
            try:
                now = real_scalar(self.robot.now_s())
            except Exception as e:
                raise _StepFault("read", f"now_s: {_why(e)}") from None
            if now is None:
                raise _StepFault("watchdog", "robot clock is not a finite real number")
            t = received - (now - t)
        why = self.safety.stale(received, t)
        if why is not None:
            raise _StepFault("watchdog", why)
        return t

    def _fault(self, fault: _StepFault, t_step: float) -> None:
        self.in_a_row += 1
        self._record(fault.kind, fault.detail)
        self._hold()
        if self.in_a_row >= self.max_faults:
            self._stop(f"{self.in_a_row} consecutive faults, the last {fault.kind}: {fault.detail}")
            return
        # Without a send to pace it the loop would spin through its fault budget at once.
        try:
            remaining = self.period_s - (self.clock() - t_step)
            if remaining > 0:
                self.sleep(remaining)
        except Exception as e:
            self._record("runner", f"pacing: {_why(e)}")

    def _record(self, kind: str, detail: str) -> None:
        self.log.faults[kind] = self.log.faults.get(kind, 0) + 1
        self.log.fault_log.append(Fault(self.log.steps, kind, detail))
        LOG.warning("step %d: %s fault: %s", self.log.steps, kind, detail)

    def _hold(self) -> None:
        try:
            held = self.robot.hold()
        except Exception as e:
            self._record("hold", _why(e))
            self.safety.rebase(None)  # where the robot holds is unknown: send nothing
            return
        targets, why = finite_vector(held, self.safety.size)
        if targets is None:
            self._record("hold", f"hold returned unusable targets: {why}")
        # The next command is rate-limited from where the robot now holds; a position beyond
        # the limits (or unknown) is refused, and nothing is sent until a hold gives a usable one.
        if self.safety.rebase(held).ok:
            try:
                self.builder.held(targets)
            except Exception as e:
                self._record("hold", f"builder: {_why(e)}")

    def _stop(self, reason: str) -> None:
        try:
            self.robot.stop()
        except Exception as e:
            self._record("stop", _why(e))
        self.log.stopped = True
        self.log.stop_reason = reason
        LOG.error("robot stopped: %s", reason)


def fault_summary(logs: list[EpisodeLog]) -> dict[str, Any]:
    """Fault counts by kind over episodes, and how many episodes ended in a stop."""
    faults: dict[str, int] = {}
    for log in logs:
        for k, n in log.faults.items():
            faults[k] = faults.get(k, 0) + n
    return {"faults": faults, "stopped_episodes": sum(log.stopped for log in logs)}


def latency_summary(seconds: list[float]) -> dict[str, float]:
    if not seconds:  # every step faulted
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    ms = np.asarray(seconds) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }
