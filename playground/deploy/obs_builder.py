"""The robot-side observation builder: readings -> policy inputs, actions -> actuator targets.

It runs the task's own JAX functions (jitted on the CPU), not a re-implementation of them, so
that a robot feeds its policy what the policy saw in training and turns actions into targets as
the env does:
- the measured joints go into an MJX Data of the task's model and MJX kinematics computes the
  frames (hand pose, sites) the observation reads, as the env's physics step leaves them;
- the task's `robot_observation(data, memory)` builds the observation vectors (the same function
  the env's `step` uses, minus the simulated noise and delays: the robot has real ones);
- the task's `robot_command(data, memory, action)` turns an action into actuator targets (for
  the Franka tasks: the env's goal update and IK servo);
- camera images of a vision task are stacked as the env stacks them: `rgb` uint8
  `[cams, H, W, 3]`, `depth` float32 `[cams, H, W]`, cameras in the config's order.
A task is deployable when it defines the `robot_*` hooks (see `FrankaReach`).

One difference is MuJoCo's, not ours: after a physics step the env's frames come from the last
substep's forward pass, one substep (5 ms) before its joint values, in MJX and MuJoCo C alike;
the builder computes them from the joints it reads. tests/test_sim2sim.py bounds the difference.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

from playground.deploy.robot import Reading
from playground.deploy.safety import finite_vector

_SINGLE_DOF = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
HOOKS = ("robot_task", "robot_memory", "robot_observation", "robot_command", "robot_success")


class DeployError(ValueError):
    """A task, reading or robot that cannot be deployed together, with the reason."""


def deployable(env: Any) -> bool:
    return all(hasattr(env, h) for h in HOOKS) and hasattr(env, "ROBOT_JOINTS")


def check_deployable(env: Any) -> None:
    if not deployable(env):
        from playground import registry

        names = [n for n in registry.ALL_ENVS if deployable(registry.get_env_class(n))]
        raise DeployError(
            f"{type(env).__name__} has no robot-side hooks ({', '.join(HOOKS)}); "
            f"deployable tasks: {names}."
        )


def joint_addresses(m: mujoco.MjModel, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(qpos addresses, dof addresses) of single-dof joints, in the order of `names`."""
    joints = [m.joint(n) for n in names]
    for j in joints:
        if int(m.jnt_type[j.id]) not in _SINGLE_DOF:
            raise DeployError(f"Robot joint {j.name!r} is not a hinge or slide joint.")
    return np.array([j.qposadr[0] for j in joints]), np.array([j.dofadr[0] for j in joints])


def check_reading(reading: Any, joint_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(qpos, qvel) float32 `[n]` of a reading, or a DeployError saying what is wrong with it."""
    n = len(joint_names)
    joints = []
    for field in ("qpos", "qvel"):
        value, why = finite_vector(getattr(reading, field, None), n)
        if value is None:
            raise DeployError(
                f"Reading's {field} refused ({why}); the task measures {n} joints "
                f"{list(joint_names)} as finite real numbers."
            )
        with np.errstate(over="ignore"):
            value = value.astype(np.float32)
        if not np.all(np.isfinite(value)):
            raise DeployError(f"Reading's {field} has values beyond float32.")
        joints.append(value)
    return joints[0], joints[1]


def home_data(m: mujoco.MjModel) -> mujoco.MjData:
    """The model at its `home` keyframe (or qpos0): the pose of what the robot does not measure."""
    d = mujoco.MjData(m)
    if m.nkey and "home" in [m.key(i).name for i in range(m.nkey)]:
        mujoco.mj_resetDataKeyframe(m, d, m.key("home").id)
    mujoco.mj_forward(m, d)
    return d


class ObservationBuilder:
    """One per robot and task; `start` at each episode, then `observe` and `command` per step."""

    def __init__(self, env: Any):
        check_deployable(env)
        self.env = env
        m = env.mj_model
        self.joint_names = tuple(env.ROBOT_JOINTS)
        self.qpos_adr, self.dof_adr = joint_addresses(m, self.joint_names)
        home = home_data(m)
        self._home_ctrl = home.ctrl.astype(np.float32)
        # An MJX Data with the home pose: the robot's joints are written into it per reading.
        template = mjx.put_data(m, home)
        vision = env.config.get("vision")
        self.cameras = tuple(vision.cameras) if vision else ()
        self._rgb = bool(vision and vision.rgb)
        self._depth = bool(vision and vision.depth)
        self._image_shape = (int(vision.height), int(vision.width)) if vision else None

        def measured(qpos, qvel, ctrl):
            d = template.replace(
                qpos=template.qpos.at[self.qpos_adr].set(qpos),
                qvel=template.qvel.at[self.dof_adr].set(qvel),
                ctrl=ctrl,
            )
            # Frames, and com/cdof for the Jacobians the IK servo takes.
            return mjx.com_pos(env.mjx_model, mjx.kinematics(env.mjx_model, d))

        def start(qpos, qvel, ctrl, task):
            return env.robot_memory(measured(qpos, qvel, ctrl), task)

        def observe(qpos, qvel, ctrl, memory):
            return env.robot_observation(measured(qpos, qvel, ctrl), memory)

        def command(qpos, qvel, ctrl, memory, action):
            return env.robot_command(measured(qpos, qvel, ctrl), memory, action)

        self._start, self._observe = jax.jit(start), jax.jit(observe)
        self._command = jax.jit(command)
        self.memory: dict[str, jax.Array] | None = None
        self._pending: dict[str, jax.Array] | None = None
        self._ctrl = jnp.asarray(self._home_ctrl)
        self._reading: Reading | None = None

    def _joints(self, reading: Reading) -> tuple[np.ndarray, np.ndarray]:
        return check_reading(reading, self.joint_names)

    def start(self, reading: Reading, task: dict[str, Any], targets: np.ndarray | None = None):
        """Begins an episode: `task` holds the operator's inputs (e.g. FrankaReach's target),
        `targets` the actuator targets the robot holds now (default: the home keyframe's)."""
        qpos, qvel = self._joints(reading)
        self._ctrl = jnp.asarray(self._home_ctrl if targets is None else targets, jnp.float32)
        task = {k: jnp.asarray(v, jnp.float32) for k, v in task.items()}
        self.memory = self._start(qpos, qvel, self._ctrl, task)
        self._pending = None
        # Compile the per-step functions now (discarding the results), not inside the first
        # control period.
        self._observe(qpos, qvel, self._ctrl, self.memory)
        self._command(qpos, qvel, self._ctrl, self.memory, jnp.zeros(self.env.action_size))

    def observe(self, reading: Reading) -> dict[str, np.ndarray]:
        """The policy's inputs for `reading` (every observation the task defines for a robot)."""
        if self.memory is None:
            raise DeployError("ObservationBuilder.observe before start().")
        qpos, qvel = self._joints(reading)
        self._reading = reading
        built = self._observe(qpos, qvel, self._ctrl, self.memory)
        obs = {k: np.asarray(v) for k, v in built.items()}
        if self._rgb:
            obs["rgb"] = self._stack(reading, "", np.uint8, 3)
        if self._depth:
            obs["depth"] = self._stack(reading, "/depth", np.float32, None)
        return obs

    def command(self, action: Any) -> np.ndarray:
        """Actuator targets `[nu]` for the policy's `action` in the state last observed.

        The servo's new memory is kept aside until `sent` says the targets went out: a step
        that is refused or held leaves the memory as it was. An action that is not a finite
        real vector of the task's size never reaches the servo (DeployError), and neither do
        non-finite targets or memory it would return.
        """
        if self._reading is None:
            raise DeployError("ObservationBuilder.command before observe().")
        a, why = finite_vector(action, self.env.action_size)
        if a is None:
            raise DeployError(f"Action refused before the servo: {why}.")
        qpos, qvel = self._joints(self._reading)
        ctrl, memory = self._command(
            qpos, qvel, self._ctrl, self.memory, jnp.asarray(a, jnp.float32)
        )
        ctrl = np.asarray(ctrl)
        leaves = jax.tree_util.tree_leaves(memory)
        if not (np.all(np.isfinite(ctrl)) and all(np.all(np.isfinite(x)) for x in leaves)):
            raise DeployError("The servo returned non-finite targets or memory; nothing kept.")
        self._pending = memory
        return ctrl

    def sent(self, targets: np.ndarray) -> None:
        """Records what the robot was sent (after the safety layer): the next command's base,
        and the servo memory of the command it came from."""
        self._ctrl = jnp.asarray(targets, jnp.float32)
        if self._pending is not None:
            self.memory, self._pending = self._pending, None

    def held(self, targets: np.ndarray) -> None:
        """The robot was held at `targets` instead (`Robot.hold`): the next command's base; the
        servo's memory stays as it was before the step."""
        self._ctrl = jnp.asarray(targets, jnp.float32)
        self._pending = None

    def _stack(self, reading: Reading, suffix: str, dtype, channels: int | None) -> np.ndarray:
        shape = (*self._image_shape, channels) if channels else self._image_shape
        images = []
        for cam in self.cameras:
            key = cam + suffix
            if key not in reading.images:
                raise DeployError(
                    f"Reading has no image {key!r}; the policy needs {list(self.cameras)}."
                )
            img = np.asarray(reading.images[key])
            if img.shape != shape or img.dtype != dtype:
                raise DeployError(
                    f"Image {key!r} is {img.dtype} {img.shape}; the policy was trained on "
                    f"{np.dtype(dtype)} {shape}."
                )
            images.append(img)
        return np.stack(images)
