"""The robot as a policy runner sees it: read joints and cameras, send actuator targets.

    reading = robot.read()          # joints (qpos/qvel in the model's order), camera images, time
    robot.send(targets)             # one position target per actuator, then a control period passes

A real robot's driver implements `Robot`; `playground.deploy.sim_robot.SimRobot` implements it on
native MuJoCo so that the same runner (playground/deploy/runner.py) drives a simulated robot
exactly as it would drive the real one (sim-to-sim).
"""

from __future__ import annotations

import abc
import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Reading:
    """One measurement of the robot.

    `qpos` / `qvel` cover `Robot.joint_names` in that order (rad or m, rad/s or m/s);
    `images` maps a camera name to uint8 RGB `[H, W, 3]`, and `<camera>/depth` to float32 metres
    `[H, W]` where the robot has depth; `time_s` is when the joints were measured.
    """

    time_s: float
    qpos: np.ndarray
    qvel: np.ndarray
    images: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


class Robot(abc.ABC):
    """The interface the runner uses; units and order as in the task's MJCF model."""

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
        """The actuator targets the robot holds now `[nu]` (where a policy's first step starts)."""

    @abc.abstractmethod
    def read(self) -> Reading:
        """The latest measurement."""

    @abc.abstractmethod
    def send(self, targets: np.ndarray) -> None:
        """Sends one position target per actuator `[nu]`; returns when the next control period
        starts."""

    @abc.abstractmethod
    def now_s(self) -> float:
        """The robot's clock, in the time base of `Reading.time_s` (for the watchdog)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Releases the robot's resources (connections, renderers)."""
