"""The robot-side observation builder: readings -> policy inputs, actions -> actuator targets.

It runs the task's own JAX functions (jitted on the CPU), not a re-implementation of them, so
that a robot feeds its policy what the policy saw in training and turns actions into targets as
the env does:
- the measured joints go into an MJX Data of the task's model and MJX kinematics computes the
  frames (hand pose, sites) the observation reads, as the env's physics step leaves them; so do
  the tracked objects' poses (`Reading.objects`) of a task that names `ROBOT_OBJECTS` (the
  Aloha teachers read the block, socket and peg poses, as a perception system reports them);
- the task's `robot_observation(data, memory)` builds the observation vectors (the same function
  the env's `step` uses, minus the simulated noise and delays: the robot has real ones);
- the task's `robot_command(data, memory, action)` turns an action into actuator targets (for
  the Franka tasks: the env's goal update and IK servo);
- camera images of a vision task are stacked as the env stacks them: `rgb` uint8
  `[cams, H, W, 3]`, `depth` float32 `[cams, H, W]`, cameras in the config's order.
A task is deployable when it defines the `robot_*` hooks (see `FrankaReach`, `AlohaS2RPick`).

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
from playground.errors import UsageError

_SINGLE_DOF = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
HOOKS = ("robot_task", "robot_memory", "robot_observation", "robot_command", "robot_success")


class DeployError(UsageError):
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


def object_addresses(m: mujoco.MjModel, names: tuple[str, ...]) -> np.ndarray:
    """qpos addresses of the free joints of the bodies `names` (7 entries each)."""
    out = []
    for n in names:
        body = m.body(n)
        if body.jntnum[0] != 1 or int(m.jnt_type[body.jntadr[0]]) != int(
            mujoco.mjtJoint.mjJNT_FREE
        ):
            raise DeployError(f"Tracked object {n!r} is not a free body.")
        out.append(int(m.jnt_qposadr[body.jntadr[0]]))
    return np.asarray(out, int)


def check_objects(reading: Any, names: tuple[str, ...]) -> np.ndarray:
    """float32 `[len(names), 7]` poses (unit quaternions) of a reading's tracked objects, or a
    DeployError saying which object is missing or why its pose is refused."""
    poses = getattr(reading, "objects", None) or {}
    if not isinstance(poses, dict):
        raise DeployError("Reading's objects must map object names to poses.")
    out = np.zeros((len(names), 7), np.float32)
    for i, n in enumerate(names):
        if n not in poses:
            raise DeployError(
                f"Reading has no pose of {n!r}; the policy reads the tracked objects {list(names)}."
            )
        value, why = finite_vector(poses[n], 7)
        if value is None:
            raise DeployError(
                f"Pose of {n!r} refused ({why}); a pose is [x, y, z, qw, qx, qy, qz]."
            )
        norm = float(np.linalg.norm(value[3:]))
        if not 0.5 < norm < 2.0:
            raise DeployError(f"Pose of {n!r} has a quaternion of norm {norm:.3g}, not about 1.")
        out[i, :3] = value[:3]
        out[i, 3:] = value[3:] / norm
    return out


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
        self.object_names = tuple(getattr(env, "ROBOT_OBJECTS", ()))
        obj_adr = object_addresses(m, self.object_names)
        obj_qpos = (obj_adr[:, None] + np.arange(7)).reshape(-1)
        home = home_data(m)
        self._home_ctrl = home.ctrl.astype(np.float32)
        # An MJX Data with the home pose: the robot's joints are written into it per reading.
        template = mjx.put_data(m, home)
        vision = env.config.get("vision")
        self.cameras = tuple(vision.cameras) if vision else ()
        self._rgb = bool(vision and vision.rgb)
        self._depth = bool(vision and vision.depth)
        self._image_shape = (int(vision.height), int(vision.width)) if vision else None

        def measured(qpos, qvel, ctrl, objects):
            full = template.qpos.at[self.qpos_adr].set(qpos)
            full = full.at[obj_qpos].set(objects.reshape(-1))
            d = template.replace(
                qpos=full, qvel=template.qvel.at[self.dof_adr].set(qvel), ctrl=ctrl
            )
            # Frames, and com/cdof for the Jacobians the IK servo takes.
            return mjx.com_pos(env.mjx_model, mjx.kinematics(env.mjx_model, d))

        def start(qpos, qvel, ctrl, objects, task):
            return env.robot_memory(measured(qpos, qvel, ctrl, objects), task)

        def observe(qpos, qvel, ctrl, objects, memory):
            return env.robot_observation(measured(qpos, qvel, ctrl, objects), memory)

        def command(qpos, qvel, ctrl, objects, memory, action):
            return env.robot_command(measured(qpos, qvel, ctrl, objects), memory, action)

        self._start, self._observe = jax.jit(start), jax.jit(observe)
        self._command = jax.jit(command)
        self.memory: dict[str, jax.Array] | None = None
        self._pending: dict[str, jax.Array] | None = None
        self._ctrl = jnp.asarray(self._home_ctrl)
        self._reading: Reading | None = None

    def _joints(self, reading: Reading) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        qpos, qvel = check_reading(reading, self.joint_names)
        return qpos, qvel, check_objects(reading, self.object_names)

    def start(self, reading: Reading, task: dict[str, Any], targets: np.ndarray | None = None):
        """Begins an episode: `task` holds the operator's inputs (e.g. FrankaReach's target),
        `targets` the actuator targets the robot holds now (default: the home keyframe's)."""
        qpos, qvel, objects = self._joints(reading)
        self._ctrl = jnp.asarray(self._home_ctrl if targets is None else targets, jnp.float32)
        task = {k: jnp.asarray(v, jnp.float32) for k, v in task.items()}
        self.memory = self._start(qpos, qvel, self._ctrl, objects, task)
        self._pending = None
        # Compile the per-step functions now (discarding the results), not inside the first
        # control period.
        self._observe(qpos, qvel, self._ctrl, objects, self.memory)
        self._command(qpos, qvel, self._ctrl, objects, self.memory, jnp.zeros(self.env.action_size))

    def observe(self, reading: Reading) -> dict[str, np.ndarray]:
        """The policy's inputs for `reading` (every observation the task defines for a robot)."""
        if self.memory is None:
            raise DeployError("ObservationBuilder.observe before start().")
        qpos, qvel, objects = self._joints(reading)
        self._reading = reading
        built = self._observe(qpos, qvel, self._ctrl, objects, self.memory)
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
        qpos, qvel, objects = self._joints(self._reading)
        ctrl, memory = self._command(
            qpos, qvel, self._ctrl, objects, self.memory, jnp.asarray(a, jnp.float32)
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
