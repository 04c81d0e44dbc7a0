"""What FrankaGrasp and FrankaLift share: the box scene, 6-DoF delta end-effector control,
observations, the grasp test and the keypoint alignment. Each task file adds its config, reward
terms, success and terminations.

Action `[7]` in [-1, 1]: a displacement of the tool-centre point's goal (`pos_scale_m` per unit,
world frame), a turn of the hand's goal orientation (axis-angle, `rot_scale_rad` per unit, world
frame) and the gripper target (-1 closed, +1 open, 4 cm per finger). A resolved-rate IK servo
(ik.py) drives the arm towards the goal pose every control step. Actions are delayed and the
policy's observation is noisy and delayed through the shared buffers (delays.py).

Observation `state` (what the robot can measure, noisy): proprioception, box position and
orientation (as from a perception system), box minus TCP, the goal, the last action.
`privileged_state`: the same clean, plus box velocity, size and mass, the grasp flag, the
servo's goal position and each finger pad's offset from the box centre.
"""

from __future__ import annotations

import abc
import functools
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from ml_collections import config_dict
from mujoco import mjx

from playground.envs import delays, randomize
from playground.envs.base import MjxEnv, State, sanitize
from playground.envs.franka import constants as c
from playground.envs.franka.ik import axis_angle_to_matrix
from playground.envs.franka.panda import PROPRIO_SIZE, Panda

PAD_HALF_X_M = 0.00875  # pad box half-sizes in the finger frame (panda.xml)
PAD_HALF_Z_M = 0.00825
KEYPOINT_OFFSETS_M = np.array(
    [[0.0, 0.0, 0.0], [0.05, 0.0, 0.0], [0.0, 0.05, 0.0], [0.0, 0.0, 0.05]], dtype=np.float32
)
NEUTRAL_ACTION = jnp.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])  # hold the pose, gripper open
OBS_SIZE = PROPRIO_SIZE + 3 + 6 + 3 + 3 + 7
PRIVILEGED_SIZE = OBS_SIZE + 6 + 3 + 1 + 1 + 3 + 6


def base_config() -> config_dict.ConfigDict:
    return config_dict.create(
        impl="jax",
        ctrl_dt=0.05,
        sim_dt=0.0025,  # the box tasks need the short step: xmls/franka/box.xml
        episode_length=150,
        pos_scale_m=0.02,
        rot_scale_rad=0.1,
        max_goal_lead_m=0.06,
        ik_damping=1e-2,
        delay=config_dict.create(action_history=2, obs_history=2, skew=3.0),
        obs_noise=config_dict.create(
            qpos_rad=0.005, qvel_rad_s=0.05, box_pos_m=0.005, box_angle_rad=float(np.deg2rad(3.0))
        ),
        init=config_dict.create(
            joint_rad=0.05,
            box_x_m=(0.3, 0.6),  # nearer the base, top-down grasps at y = 0 defeat the local IK
            box_y_m=(-0.25, 0.25),
            box_yaw_rad=float(np.pi / 4),
            goal_x_m=(0.3, 0.6),
            goal_y_m=(-0.2, 0.2),
            goal_z_m=(0.15, 0.35),
        ),
        dr=config_dict.create(
            box_half_size_m=((0.03, 0.05), (0.012, 0.018), (0.025, 0.035)),
            box_mass_kg=(0.05, 0.3),
            friction_scale=(0.7, 1.3),
            gain_scale=(0.8, 1.2),
        ),
    )


class FrankaBoxTask(MjxEnv, abc.ABC):
    """Reset, control, observation and grasp geometry of the box tasks."""

    reward_terms_names: tuple[str, ...] = ()

    def __init__(self, config: config_dict.ConfigDict, config_overrides=None):
        super().__init__(config, config_overrides)
        m = self.mj_model
        cfg = self.config
        self._panda = Panda.from_model(m, cfg.ik_damping, cfg.ctrl_dt)
        self._box_body = m.body("box").id
        self._box_geom = m.geom("box").id
        self._box_qpos = int(m.joint("box").qposadr[0])
        self._box_dof = int(m.joint("box").dofadr[0])
        self._goal_mocap = int(m.body("goal").mocapid[0])
        self._pads = (m.geom("left_pad").id, m.geom("right_pad").id)
        self._home_qpos = jnp.asarray(m.keyframe("home").qpos)
        self._home_ctrl = jnp.asarray(m.keyframe("home").ctrl)
        data = mujoco.MjData(m)
        mujoco.mj_resetDataKeyframe(m, data, m.keyframe("home").id)
        mujoco.mj_forward(m, data)
        self._down = jnp.asarray(data.site_xmat[self._panda.tcp_site].reshape(3, 3))
        self._act_pmf = delays.skewed_delay_pmf(cfg.delay.action_history, cfg.delay.skew)
        self._obs_pmf = delays.skewed_delay_pmf(cfg.delay.obs_history, cfg.delay.skew)

    def load_mj_model(self) -> mujoco.MjModel:
        return mujoco.MjModel.from_xml_path(str(c.BOX_XML))

    @property
    def action_size(self) -> int:
        return 7

    @property
    def panda(self) -> Panda:
        return self._panda

    @property
    def box_body(self) -> int:
        return self._box_body

    @property
    def box_qpos_adr(self) -> int:
        return self._box_qpos

    # ----- geometry -----
    def box_half_size(self) -> jax.Array:
        return self.mjx_model.geom_size[self._box_geom]

    def box_pose(self, data: mjx.Data) -> tuple[jax.Array, jax.Array]:
        return data.xpos[self._box_body], data.xmat[self._box_body].reshape(3, 3)

    def grasp_frames(self, data: mjx.Data) -> jax.Array:
        """The two hand orientations `[2, 3, 3]` that grasp the box across its y side.

        TCP z (approach) along -box z, TCP y (finger travel) along box y, and the same turned
        half a revolution about the approach axis: the gripper is symmetric.
        """
        _, rot = self.box_pose(data)
        bx, by, bz = rot[:, 0], rot[:, 1], rot[:, 2]
        first = jnp.stack([-bx, by, -bz], axis=1)
        second = jnp.stack([bx, -by, -bz], axis=1)
        return jnp.stack([first, second])

    def keypoint_distance(self, data: mjx.Data) -> jax.Array:
        """Mean distance between gripper and box keypoints, for the nearer grasp frame (m).

        The keypoints are the frame origin and points 5 cm along each axis, in the TCP frame on
        the gripper and in the grasp frame (at the box centre) on the box: zero only when the
        hand is at the box with the grasp orientation.
        """
        tcp, tcp_rot = self._panda.tcp_pos(data), self._panda.tcp_rot(data)
        box, _ = self.box_pose(data)
        offsets = jnp.asarray(KEYPOINT_OFFSETS_M)
        gripper = tcp + offsets @ tcp_rot.T

        def dist(frame):
            target = box + offsets @ frame.T
            return jnp.mean(jnp.linalg.norm(gripper - target, axis=-1))

        return jnp.min(jax.vmap(dist)(self.grasp_frames(data)))

    def is_grasped(self, data: mjx.Data) -> jax.Array:
        """Box between the pads with both fingers on it (a geometric test, 1.0 or 0.0)."""
        tcp, tcp_rot = self._panda.tcp_pos(data), self._panda.tcp_rot(data)
        box, box_rot = self.box_pose(data)
        local = tcp_rot.T @ (box - tcp)
        extent = jnp.abs(tcp_rot.T @ box_rot) @ self.box_half_size()  # box half-extent per TCP axis
        opening = self._panda.gripper_opening(data)
        inside = (jnp.abs(local[0]) < extent[0] + PAD_HALF_X_M) & (
            jnp.abs(local[2]) < extent[2] + PAD_HALF_Z_M
        )
        squeezed = (jnp.abs(opening - extent[1]) < 0.004) & (jnp.abs(local[1]) < 0.01)
        return (inside & squeezed).astype(jnp.float32)

    def box_height(self, data: mjx.Data) -> jax.Array:
        """Height of the box's lowest point above the table (m)."""
        box, rot = self.box_pose(data)
        return box[2] - jnp.abs(rot[2]) @ self.box_half_size()

    # ----- reset -----
    def reset(self, rng: jax.Array) -> State:
        cfg = self.config.init
        rng, k_q, k_x, k_y, k_yaw, k_goal, k_obs = jax.random.split(rng, 7)
        arm = self._panda.qpos_adr
        q = self._home_qpos[arm] + cfg.joint_rad * jax.random.uniform(
            k_q, (7,), minval=-1, maxval=1
        )
        q = jnp.clip(q, self._panda.ik.q_lo, self._panda.ik.q_hi)
        x = jax.random.uniform(k_x, minval=cfg.box_x_m[0], maxval=cfg.box_x_m[1])
        y = jax.random.uniform(k_y, minval=cfg.box_y_m[0], maxval=cfg.box_y_m[1])
        yaw = jax.random.uniform(k_yaw, minval=-1, maxval=1) * cfg.box_yaw_rad
        half = self.box_half_size()
        box = jnp.array([x, y, half[2], jnp.cos(yaw / 2), 0.0, 0.0, jnp.sin(yaw / 2)])
        qpos = self._home_qpos.at[arm].set(q)
        qpos = qpos.at[self._box_qpos : self._box_qpos + 7].set(box)
        ctrl = self._home_ctrl.at[self._panda.arm_actuators].set(q)
        goal = self.sample_goal(k_goal, box[:3])
        data = self.make_data().replace(qpos=qpos, ctrl=ctrl)
        data = data.replace(mocap_pos=data.mocap_pos.at[self._goal_mocap].set(goal))
        data = self.forward(data)
        tcp_goal = self._panda.tcp_pos(data)
        last_action = NEUTRAL_ACTION
        noisy, privileged = self._observe(data, goal, tcp_goal, last_action, k_obs)
        info = {
            "rng": rng,
            "goal": goal,
            "box_start": box[:3],
            "tcp_goal": tcp_goal,
            "rot_goal": self._panda.tcp_rot(data),
            # Until the first actions arrive the robot holds still with the gripper open.
            "action_history": jnp.tile(NEUTRAL_ACTION, (self.config.delay.action_history, 1)),
            "obs_history": delays.init_history(noisy, self.config.delay.obs_history),
            "last_action": last_action,
        }
        metrics = {name: jnp.zeros(()) for name in self.reward_terms_names}
        obs = {"state": noisy, "privileged_state": privileged}
        return State(data, obs, jnp.zeros(()), jnp.zeros(()), metrics, info)

    def sample_goal(self, rng: jax.Array, box_pos: jax.Array) -> jax.Array:
        cfg = self.config.init
        lo = jnp.array([cfg.goal_x_m[0], cfg.goal_y_m[0], cfg.goal_z_m[0]])
        hi = jnp.array([cfg.goal_x_m[1], cfg.goal_y_m[1], cfg.goal_z_m[1]])
        return jax.random.uniform(rng, (3,), minval=lo, maxval=hi)

    # ----- step -----
    def step(self, state: State, action: jax.Array) -> State:
        action = jnp.clip(self.check_action(action), -1.0, 1.0)
        info = dict(state.info)
        cfg = self.config
        rng, k_act, k_obs, k_noise = jax.random.split(info["rng"], 4)
        history = delays.push(info["action_history"], action)
        applied = delays.delayed(history, k_act, self._act_pmf)
        tcp_goal = self._panda.advance_goal(
            state.data, info["tcp_goal"], cfg.pos_scale_m * applied[:3], cfg.max_goal_lead_m
        )
        rot_goal = self._panda.turn(info["rot_goal"], cfg.rot_scale_rad * applied[3:6])
        q_target = self._panda.servo_targets(self.mjx_model, state.data, tcp_goal, rot_goal)
        gripper = 0.5 * (applied[6] + 1.0) * c.GRIPPER_OPEN_M
        ctrl = state.data.ctrl.at[self._panda.arm_actuators].set(q_target)
        ctrl = ctrl.at[self._panda.gripper_actuator].set(gripper)
        data = self.physics_step(state.data, ctrl)

        noisy, privileged = self._observe(data, info["goal"], tcp_goal, action, k_noise)
        obs_history = delays.push(info["obs_history"], noisy)
        terms = self.reward_terms(data, info, action)
        reward = sum(cfg.reward[k] * v for k, v in terms.items())
        done = self.terminated(data, info)
        info.update(
            rng=rng,
            action_history=history,
            obs_history=obs_history,
            last_action=action,
            tcp_goal=tcp_goal,
            rot_goal=rot_goal,
        )
        obs = {
            "state": delays.delayed(obs_history, k_obs, self._obs_pmf),
            "privileged_state": privileged,
        }
        obs, reward, metrics = sanitize(obs, reward, {**state.metrics, **terms})
        return state.replace(
            data=data, obs=obs, reward=reward, done=done, metrics=metrics, info=info
        )

    def unstable(self, data: mjx.Data) -> jax.Array:
        return ~(jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel)))

    def off_table(self, data: mjx.Data) -> jax.Array:
        box, _ = self.box_pose(data)
        return (box[2] < -0.05) | (jnp.abs(box[1]) > 0.8) | (box[0] < -0.7) | (box[0] > 1.3)

    # ----- observation -----
    def _observe(self, data, goal, tcp_goal, last_action, rng):
        proprio = self._panda.proprioception(data)
        box, rot = self.box_pose(data)
        tcp = self._panda.tcp_pos(data)
        clean = jnp.concatenate([proprio, box, rot[:, 0], rot[:, 1], box - tcp, goal, last_action])
        n = self.config.obs_noise
        k_q, k_qd, k_box, k_rot = jax.random.split(rng, 4)
        noisy_proprio = proprio.at[:7].set(delays.uniform_noise(k_q, proprio[:7], n.qpos_rad))
        noisy_proprio = noisy_proprio.at[7:14].set(
            delays.uniform_noise(k_qd, proprio[7:14], n.qvel_rad_s)
        )
        box_noisy = delays.uniform_noise(k_box, box, n.box_pos_m)
        turn = n.box_angle_rad * jax.random.uniform(k_rot, (3,), minval=-1, maxval=1)
        rot_noisy = axis_angle_to_matrix(turn) @ rot
        noisy = jnp.concatenate(
            [
                noisy_proprio,
                box_noisy,
                rot_noisy[:, 0],
                rot_noisy[:, 1],
                box_noisy - tcp,
                goal,
                last_action,
            ]
        )
        box_vel = data.qvel[self._box_dof : self._box_dof + 6]
        privileged = jnp.concatenate(
            [
                clean,
                box_vel,
                self.box_half_size(),
                self.mjx_model.body_mass[self._box_body][None],
                self.is_grasped(data)[None],
                tcp_goal,
                data.geom_xpos[self._pads[0]] - box,
                data.geom_xpos[self._pads[1]] - box,
            ]
        )
        return noisy, privileged

    # ----- per task -----
    @abc.abstractmethod
    def reward_terms(
        self, data: mjx.Data, info: dict, action: jax.Array
    ) -> dict[str, jax.Array]: ...

    @abc.abstractmethod
    def terminated(self, data: mjx.Data, info: dict) -> jax.Array: ...


def domain_randomize(model: mjx.Model, rng: jax.Array, config: config_dict.ConfigDict):
    """Per-env box size and mass, friction and arm gains; (batched model, in_axes)."""
    dr = config.dr
    ids = _ids()

    def sample(m: mjx.Model, key: jax.Array) -> dict[str, Any]:
        k_size, k_mass, k_fric, k_gain = jax.random.split(key, 4)
        lo = jnp.array([r[0] for r in dr.box_half_size_m])
        hi = jnp.array([r[1] for r in dr.box_half_size_m])
        half = jax.random.uniform(k_size, (3,), minval=lo, maxval=hi)
        mass = jax.random.uniform(k_mass, minval=dr.box_mass_kg[0], maxval=dr.box_mass_kg[1])
        return randomize.merge(
            randomize.set_box(m, ids["box_geom"], ids["box_body"], half, mass),
            randomize.scale_friction(m, k_fric, ids["friction_geoms"], dr.friction_scale),
            randomize.scale_position_gains(m, k_gain, ids["actuators"], dr.gain_scale),
        )

    return randomize.batch_model(model, rng, sample)


@functools.lru_cache(maxsize=1)
def _ids() -> dict[str, Any]:
    m = mujoco.MjModel.from_xml_path(str(c.BOX_XML))
    panda = Panda.from_model(m)
    return {
        "box_geom": m.geom("box").id,
        "box_body": m.body("box").id,
        "friction_geoms": [m.geom(n).id for n in ("box", "table", "left_pad", "right_pad")],
        "actuators": list(panda.arm_actuators),
    }
