"""The robot as a policy runner sees it: read joints and cameras, send actuator targets.

    reading = robot.read()          # joints (qpos/qvel in the model's order), camera images, time
    robot.send(targets)             # one position target per actuator, then a control period passes
    robot.hold()                    # on a fault: keep the measured position (returns its targets)
    robot.stop()                    # after repeated faults: stop for good

A real robot's driver implements `Robot`; `playground.deploy.sim_robot.SimRobot` implements it on
native MuJoCo so that the same runner (playground/deploy/runner.py) drives a simulated robot
exactly as it would drive the real one (sim-to-sim).
"""

from __future__ import annotations

import abc
import dataclasses
import time

import numpy as np


@dataclasses.dataclass(frozen=True)
class Reading:
    """One measurement of the robot.

    `qpos` / `qvel` cover `Robot.joint_names` in that order (rad or m, rad/s or m/s);
    `images` maps a camera name to uint8 RGB `[H, W, 3]`, and `<camera>/depth` to float32 metres
    `[H, W]` where the robot has depth; `objects` maps a tracked object's body name to its world
    pose `[7]` (position m, then quaternion w, x, y, z) from the cell's perception system (motion
    capture, fiducials, a pose estimator), for the state-based policies whose task names
    `ROBOT_OBJECTS`; `time_s` is when the joints were measured, on `time.monotonic()` of the
    runner's host (a driver converts its controller's stamps), or on the simulation's clock where
    `Robot.simulated_time` says so.
    """

    time_s: float
    qpos: np.ndarray
    qvel: np.ndarray
    images: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    objects: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


class Robot(abc.ABC):
    """The interface the runner uses; units and order as in the task's MJCF model."""

    # True where `Reading.time_s` and `now_s` are a simulation's time (the simulation may run
    # faster or slower than the wall clock); the runner's watchdog then measures a reading's age
    # on `now_s` and adds the wall time the loop spent on it, so a stall is still caught.
    simulated_time: bool = False

    @property
    @abc.abstractmethod
    def joint_names(self) -> tuple[str, ...]:
        """The measured joints, in the order of `Reading.qpos`."""

    @property
    @abc.abstractmethod
    def target_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) of each actuator's position target `[nu]`."""

    @property
    @abc.abstractmethod
    def held_targets(self) -> np.ndarray:
        """The actuator targets the robot holds now `[nu]` (the runner starts from `hold()`
        instead: the measured position, not a target the joints may not have reached)."""

    @abc.abstractmethod
    def read(self) -> Reading:
        """The latest measurement."""

    @abc.abstractmethod
    def send(self, targets: np.ndarray) -> None:
        """Sends one position target per actuator `[nu]`; returns when the next control period
        starts. The driver should hold the robot itself when no command arrives within its own
        timeout: the runner cannot act while a `read` or `send` blocks."""

    @abc.abstractmethod
    def hold(self) -> np.ndarray:
        """Commands the current measured position and returns those targets `[nu]`.

        Each actuator's target becomes where its joint is now, superseding commands in flight.
        The runner calls it on every fault, with a reading it could not use, so it must take
        the driver's own latest measurement. Returns without waiting for a control period.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Stops the robot until its operator restarts it (a protective stop, brakes): it stays
        still and takes no further `send`. The runner calls it after repeated faults."""

    def now_s(self) -> float:
        """The clock of `Reading.time_s`. Only read when `simulated_time` is set; otherwise the
        runner compares stamps with its own monotonic clock."""
        return time.monotonic()

    @abc.abstractmethod
    def close(self) -> None:
        """Releases the robot's resources (connections, renderers)."""
