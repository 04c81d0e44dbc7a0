"""A `Robot` on native MuJoCo (C, `mujoco.MjData`), with cameras from `mujoco.Renderer`.

It stands in for the real robot in sim-to-sim (scripts/sim2sim.py): the runner cannot tell it
from a real one, and nothing of the JAX env's state reaches the policy except through `read()`.
- Episodes start from the env's own `reset` distribution (`start_episode(key)` draws one with the
  JAX env and copies its pose into MuJoCo), and return the operator's task inputs.
- `send` holds the targets on the position actuators for one control period (`ctrl_dt`) of
  native physics at the task's `sim_dt`.
- Latency (on by default): targets reach the actuators and readings reach the runner after a
  random number of control periods, drawn per step from the task's own delay distributions
  (`config.delay`) through the shared buffers of playground/envs/delays.py. Camera images are
  rendered from the current state, as in the env.
- Tracked objects (`ROBOT_OBJECTS` of the Aloha teachers' tasks): their poses are reported as a
  perception system would, with the joints' latency; sensor noise adds `sensor_noise` times the
  task's `obs_noise.object_pos_m` and `object_angle_rad` (uniform, as in the env). Where the task
  observes one object against another (`obs_noise.relative_pos_m`), the position error is one
  draw common to the objects plus a small one each, so their difference is as precise as in
  training.
- Sensor noise (off by default): `sensor_noise` times the task's `config.obs_noise` on the joint
  positions and velocities the robot reports. The env adds that noise to the policy's input
  only, as robustness margin; on a robot the servo computes its targets from the same readings,
  so joint noise also moves the targets (see the README's sim-to-sim table).
- Images come from MuJoCo's OpenGL renderer, not from the JAX ray caster the policy was trained
  on: a renderer gap the policy has to bridge, as it has to bridge the real cameras'.
- `success(task)` is the task's success on the full simulated state (the simulator knows it).
- Its clock is the simulation's (`simulated_time`): physics advances only in `send`, so the
  runner adds its own wall-clock time to a reading's age. `hold()` sets every actuator's target
  to its joint's current position (commands still in the latency buffer are dropped) without
  stepping; `stop()` holds and refuses `send` until the next `start_episode`.
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import mujoco
import numpy as np
from mujoco import mjx

from playground.deploy.obs_builder import check_deployable, joint_addresses, object_addresses
from playground.deploy.robot import Reading, Robot
from playground.envs import delays

# Effects the ray caster does not draw either (it shades with directional lights only).
_OFF = ("mjRND_REFLECTION", "mjRND_SKYBOX", "mjRND_HAZE", "mjRND_FOG")


class SimRobot(Robot):
    simulated_time = True

    def __init__(self, env: Any, seed: int = 0, latency: bool = True, sensor_noise: float = 0.0):
        check_deployable(env)
        self.env = env
        self.model = copy.deepcopy(env.mj_model)
        self.data = mujoco.MjData(self.model)
        self._names = tuple(env.ROBOT_JOINTS)
        self._qpos_adr, self._dof_adr = joint_addresses(self.model, self._names)
        self._objects = tuple(getattr(env, "ROBOT_OBJECTS", ()))
        self._obj_adr = object_addresses(self.model, self._objects)
        self._rng = np.random.default_rng(seed)
        cfg = env.config
        delay = cfg.get("delay") if latency else None
        self._act_pmf = delays.skewed_delay_pmf(delay.action_history, delay.skew) if delay else None
        self._obs_pmf = delays.skewed_delay_pmf(delay.obs_history, delay.skew) if delay else None
        noise = cfg.get("obs_noise")
        self._noise = (
            (sensor_noise * noise.qpos_rad, sensor_noise * noise.qvel_rad_s) if noise else (0, 0)
        )
        self._obj_noise = (
            (
                sensor_noise * noise.get("object_pos_m", 0.0),
                sensor_noise * noise.get("object_angle_rad", 0.0),
            )
            if noise
            else (0.0, 0.0)
        )
        # A task that observes one object against another (`obs_noise.relative_pos_m`, the peg
        # against the socket) assumes a tracker whose position error is mostly common to the
        # objects (the camera's calibration): each reading shifts all of them by one draw of
        # `object_pos_m`, and each by its own half of `relative_pos_m`, so that their
        # difference is off by at most `relative_pos_m`, as in training.
        rel = noise.get("relative_pos_m") if noise else None
        self._rel_noise = None if rel is None else sensor_noise * rel
        vision = cfg.get("vision")
        self._renderer = None
        if vision:
            self._cameras = tuple(vision.cameras)
            self._depth = bool(vision.depth)
            self._rgb = bool(vision.rgb)
            self._renderer = mujoco.Renderer(self.model, int(vision.height), int(vision.width))
            self._shadows = bool(vision.shadows)
        self._reset = jax.jit(env.reset)
        self._success = jax.jit(env.robot_success)
        self._targets: np.ndarray | None = None
        self._readings: np.ndarray | None = None
        self._sent: np.ndarray | None = None
        self._stopped = False
        # Where each actuator's target equals its joint's position (joint transmissions; a
        # position servo's length is gear * qpos). Others hold their current target.
        m = self.model
        self._hold_joint = m.actuator_trntype == mujoco.mjtTrn.mjTRN_JOINT
        self._hold_adr = m.jnt_qposadr[np.where(self._hold_joint, m.actuator_trnid[:, 0], 0)]
        self._hold_gear = m.actuator_gear[:, 0].copy()

    # ----- Robot -----
    @property
    def joint_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def target_limits(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.model.actuator_ctrlrange
        return r[:, 0].copy(), r[:, 1].copy()

    def now_s(self) -> float:
        return float(self.data.time)

    def read(self) -> Reading:
        if self._readings is None:
            raise RuntimeError("SimRobot.read before start_episode().")
        k = self._draw(self._obs_pmf)
        t, qpos, qvel, objects = self._split(self._readings[k])
        return Reading(time_s=t, qpos=qpos, qvel=qvel, images=self._render(), objects=objects)

    def send(self, targets: np.ndarray) -> None:
        if self._sent is None:
            raise RuntimeError("SimRobot.send before start_episode().")
        if self._stopped:
            raise RuntimeError("SimRobot.send after stop(): start_episode() restarts it.")
        targets = np.asarray(targets, np.float64)
        if targets.shape != (self.model.nu,) or not np.all(np.isfinite(targets)):
            raise ValueError(f"SimRobot.send needs {self.model.nu} finite targets, got {targets}.")
        self._sent = delays.push(self._sent, targets)
        self.data.ctrl[:] = self._sent[self._draw(self._act_pmf)]
        mujoco.mj_step(self.model, self.data, nstep=self.env.n_substeps)
        self._readings = delays.push(self._readings, self._measure())

    def hold(self) -> np.ndarray:
        if self._sent is None:
            raise RuntimeError("SimRobot.hold before start_episode().")
        d = self.data
        targets = np.where(self._hold_joint, self._hold_gear * d.qpos[self._hold_adr], d.ctrl)
        self._sent = delays.init_history(targets, len(self._sent))
        d.ctrl[:] = targets
        return targets.copy()

    def stop(self) -> None:
        if self._sent is not None:
            self.hold()
        self._stopped = True

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ----- simulation only -----
    def start_episode(self, key: jax.Array) -> dict[str, np.ndarray]:
        """Puts the robot and scene in a state drawn from the env's `reset`; returns the task
        inputs an operator would give (e.g. FrankaReach's target position)."""
        state = self._reset(key)
        d = self.data
        mujoco.mj_resetData(self.model, d)
        src = state.data
        d.qpos[:], d.qvel[:], d.ctrl[:] = np.asarray(src.qpos), np.asarray(src.qvel), src.ctrl
        d.mocap_pos[:], d.mocap_quat[:] = np.asarray(src.mocap_pos), np.asarray(src.mocap_quat)
        mujoco.mj_forward(self.model, d)
        self._sent = delays.init_history(d.ctrl.copy(), self._history(self._act_pmf))
        self._readings = delays.init_history(self._measure(), self._history(self._obs_pmf))
        self._stopped = False
        return {k: np.asarray(v) for k, v in self.env.robot_task(state.info).items()}

    @property
    def held_targets(self) -> np.ndarray:
        """The actuator targets the robot holds at the start of an episode."""
        return self.data.ctrl.copy()

    def success(self, task: dict[str, np.ndarray]) -> bool:
        return bool(self._success(mjx.put_data(self.model, self.data), task))

    # ----- internals -----
    @staticmethod
    def _history(pmf: np.ndarray | None) -> int:
        return 1 if pmf is None else len(pmf)

    def _draw(self, pmf: np.ndarray | None) -> int:
        return 0 if pmf is None else int(self._rng.choice(len(pmf), p=pmf / pmf.sum()))

    def _measure(self) -> np.ndarray:
        """[time, qpos, qvel, object poses] of the robot's joints and tracked objects, with
        sensor noise, as one vector."""
        n = len(self._names)
        q_noise, v_noise = self._noise
        qpos = self.data.qpos[self._qpos_adr] + q_noise * self._rng.uniform(-1, 1, n)
        qvel = self.data.qvel[self._dof_adr] + v_noise * self._rng.uniform(-1, 1, n)
        pos_noise, _ = self._obj_noise
        if self._rel_noise is not None:
            common = pos_noise * self._rng.uniform(-1, 1, 3)
            shifts = [
                common + 0.5 * self._rel_noise * self._rng.uniform(-1, 1, 3) for _ in self._obj_adr
            ]
        else:
            shifts = [pos_noise * self._rng.uniform(-1, 1, 3) for _ in self._obj_adr]
        poses = [self._object_pose(adr, d) for adr, d in zip(self._obj_adr, shifts, strict=True)]
        return np.concatenate([[self.data.time], qpos, qvel, *poses])

    def _object_pose(self, adr: int, shift: np.ndarray) -> np.ndarray:
        _, angle_noise = self._obj_noise
        pose = self.data.qpos[adr : adr + 7].copy()
        pose[:3] += shift
        if angle_noise > 0:
            # A turn of up to angle_noise about a random axis, as the env's perception noise.
            axis = self._rng.normal(size=3)
            axis /= np.linalg.norm(axis)
            half = 0.5 * angle_noise * self._rng.uniform(-1, 1)
            turn = np.concatenate([[np.cos(half)], np.sin(half) * axis])
            out = np.zeros(4)
            mujoco.mju_mulQuat(out, turn, pose[3:])
            pose[3:] = out
        return pose

    def _split(self, v: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, dict]:
        n = len(self._names)
        poses = v[1 + 2 * n :].reshape(-1, 7)
        objects = {name: poses[i].copy() for i, name in enumerate(self._objects)}
        return float(v[0]), v[1 : 1 + n].copy(), v[1 + n : 1 + 2 * n].copy(), objects

    def _render(self) -> dict[str, np.ndarray]:
        if self._renderer is None:
            return {}
        r, images = self._renderer, {}
        for cam in self._cameras:
            r.update_scene(self.data, camera=cam)
            for flag in _OFF:
                r.scene.flags[getattr(mujoco.mjtRndFlag, flag)] = 0
            r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = int(self._shadows)
            if self._rgb:
                images[cam] = r.render().copy()
            if self._depth:
                r.enable_depth_rendering()
                images[f"{cam}/depth"] = r.render().astype(np.float32)
                r.disable_depth_rendering()
        return images
