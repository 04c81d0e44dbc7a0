"""FrankaReach: the Panda's tool-centre point reaches a random target in the workspace.

The smallest Franka task, small enough to prove learning on a CPU in minutes. Control: 20 Hz
(`ctrl_dt` 0.05 s, 10 physics substeps of 5 ms). An action in [-1, 1]^3 moves the tool-centre
point's goal by up to `action_scale` metres per axis (world frame); a resolved-rate IK servo drives
the arm towards that goal with the hand held pointing down (playground/envs/franka/ik.py), its joint
targets moving at most 95% of the Panda's joint speed limits per step (panda.py); the gripper stays
open. Actions are delayed and the policy's observation (`state`) is noisy and delayed through the
shared buffers (playground/envs/delays.py); `privileged_state` is clean. A robot runs the same servo
and observation (`command`, `policy_state`) through the `robot_*` hooks (playground/deploy).

Reward: weighted sum of `reward_terms` (weights in `config.reward`), each reported in `metrics`:
reach (1 - tanh(distance / reach_scale_m)), success (distance < `success_tol_m`), and small
action-rate and joint-velocity penalties. The shaped reach term peaks where success holds.
An episode counts as a success when it ends with the point within the tolerance.
"""

from __future__ import annotations

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
from playground.envs.franka.panda import PROPRIO_SIZE, Panda


def default_config() -> config_dict.ConfigDict:
    return config_dict.create(
        impl="jax",
        ctrl_dt=0.05,
        sim_dt=0.005,
        episode_length=60,
        action_scale=0.04,  # m per step and axis, added to the TCP goal
        max_goal_lead_m=0.08,  # the goal stays this close (per axis) to the measured TCP
        ik_damping=1e-2,
        delay=config_dict.create(action_history=2, obs_history=2, skew=3.0),
        obs_noise=config_dict.create(qpos_rad=0.005, qvel_rad_s=0.05, pos_m=0.002),
        init=config_dict.create(
            joint_rad=0.1,  # +- on every arm joint around the ready pose
            target_x_m=(0.30, 0.60),
            target_y_m=(-0.25, 0.25),
            target_z_m=(0.10, 0.45),
        ),
        reward=config_dict.create(reach=1.0, success=1.0, action_rate=0.05, joint_vel=0.001),
        reach_scale_m=0.1,
        success_tol_m=0.03,
        dr=config_dict.create(
            gain_scale=(0.8, 1.2), damping_scale=(0.8, 1.2), mass_scale=(0.9, 1.1)
        ),
    )


REWARD_TERMS = ("reach", "success", "action_rate", "joint_vel")
OBS_SIZE = PROPRIO_SIZE + 3 + 3 + 3  # proprioception, target, target - tcp, last action
PRIVILEGED_SIZE = OBS_SIZE + 3 + 3  # plus the servo's goal and the TCP velocity


class FrankaReach(MjxEnv):
    def __init__(self, config: config_dict.ConfigDict | None = None, config_overrides=None):
        super().__init__(config or default_config(), config_overrides)
        m = self.mj_model
        cfg = self.config
        self._panda = Panda.from_model(m, cfg.ik_damping, cfg.ctrl_dt)
        self._home_qpos = jnp.asarray(m.keyframe("home").qpos)
        self._home_ctrl = jnp.asarray(m.keyframe("home").ctrl)
        data = mujoco.MjData(m)
        mujoco.mj_resetDataKeyframe(m, data, m.keyframe("home").id)
        mujoco.mj_forward(m, data)
        self._down = jnp.asarray(data.site_xmat[self._panda.tcp_site].reshape(3, 3))
        self._target_mocap = m.body("target").mocapid[0]
        self._act_pmf = delays.skewed_delay_pmf(cfg.delay.action_history, cfg.delay.skew)
        self._obs_pmf = delays.skewed_delay_pmf(cfg.delay.obs_history, cfg.delay.skew)

    def load_mj_model(self) -> mujoco.MjModel:
        return mujoco.MjModel.from_xml_path(str(c.REACH_XML))

    @property
    def action_size(self) -> int:
        return 3  # tool-centre-point displacement; orientation and gripper are held

    @property
    def panda(self) -> Panda:
        return self._panda

    def reset(self, rng: jax.Array) -> State:
        cfg = self.config.init
        rng, k_q, k_t, k_obs = jax.random.split(rng, 4)
        arm = self._panda.qpos_adr
        q = self._home_qpos[arm] + cfg.joint_rad * jax.random.uniform(
            k_q, (7,), minval=-1, maxval=1
        )
        q = jnp.clip(q, self._panda.ik.q_lo, self._panda.ik.q_hi)
        qpos = self._home_qpos.at[arm].set(q)
        ctrl = self._home_ctrl.at[self._panda.arm_actuators].set(q)
        lo = jnp.array([cfg.target_x_m[0], cfg.target_y_m[0], cfg.target_z_m[0]])
        hi = jnp.array([cfg.target_x_m[1], cfg.target_y_m[1], cfg.target_z_m[1]])
        target = jax.random.uniform(k_t, (3,), minval=lo, maxval=hi)

        data = self.make_data().replace(qpos=qpos, ctrl=ctrl)
        data = data.replace(mocap_pos=data.mocap_pos.at[self._target_mocap].set(target))
        data = self.forward(data)
        last_action = jnp.zeros(3)
        goal = self._panda.tcp_pos(data)
        noisy, privileged = self._observe(data, target, goal, last_action, k_obs)
        info = {
            "rng": rng,
            "target_pos": target,
            "action_history": jnp.zeros((self.config.delay.action_history, 3)),
            "tcp_goal": goal,
            "obs_history": delays.init_history(noisy, self.config.delay.obs_history),
            "last_action": last_action,
        }
        metrics = {name: jnp.zeros(()) for name in REWARD_TERMS}
        obs = {"state": noisy, "privileged_state": privileged}
        return State(data, obs, jnp.zeros(()), jnp.zeros(()), metrics, info)

    def step(self, state: State, action: jax.Array) -> State:
        action = jnp.clip(self.check_action(action), -1.0, 1.0)
        info = dict(state.info)
        rng, k_act, k_obs, k_noise = jax.random.split(info["rng"], 4)
        history = delays.push(info["action_history"], action)
        applied = delays.delayed(history, k_act, self._act_pmf)
        ctrl, goal = self.command(state.data, info["tcp_goal"], applied)
        data = self.physics_step(state.data, ctrl)

        target = info["target_pos"]
        noisy, privileged = self._observe(data, target, goal, action, k_noise)
        obs_history = delays.push(info["obs_history"], noisy)
        terms = self.reward_terms(data, target, action, info["last_action"])
        reward = sum(self.config.reward[k] * v for k, v in terms.items())
        unstable = ~(jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel)))
        info.update(
            rng=rng,
            action_history=history,
            obs_history=obs_history,
            last_action=action,
            tcp_goal=goal,
        )
        obs = {
            "state": delays.delayed(obs_history, k_obs, self._obs_pmf),
            "privileged_state": privileged,
        }
        metrics = {**state.metrics, **terms}
        obs, reward, metrics = sanitize(obs, reward, metrics)
        return state.replace(
            data=data,
            obs=obs,
            reward=reward,
            done=unstable.astype(jnp.float32),
            metrics=metrics,
            info=info,
        )

    def command(
        self, data: mjx.Data, tcp_goal: jax.Array, action: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """(actuator targets `[nu]`, new TCP goal) for `action` in the measured state `data`.

        The Cartesian servo: the goal moves by the scaled action, then one IK step from the
        measured joints gives the arm's joint targets; the gripper target is kept.
        """
        goal = self._panda.advance_goal(
            data, tcp_goal, self.config.action_scale * action, self.config.max_goal_lead_m
        )
        q_target = self._panda.servo_targets(self.mjx_model, data, goal, self._down)
        return data.ctrl.at[self._panda.arm_actuators].set(q_target), goal

    def policy_state(self, data: mjx.Data, target: jax.Array, last_action: jax.Array) -> jax.Array:
        """The policy's `state` observation before noise and delay `[OBS_SIZE]`."""
        proprio = self._panda.proprioception(data)
        tcp = self._panda.tcp_pos(data)
        return jnp.concatenate([proprio, target, target - tcp, last_action])

    def _observe(
        self,
        data: mjx.Data,
        target: jax.Array,
        goal: jax.Array,
        last_action: jax.Array,
        rng: jax.Array,
    ):
        """(noisy, delayed-to-be policy observation, privileged observation).

        The privileged view adds what the robot side does not expose: the Cartesian servo's goal
        (its internal state) and the TCP velocity.
        """
        clean = self.policy_state(data, target, last_action)
        n = self.config.obs_noise
        scale = jnp.concatenate(
            [
                jnp.full(7, n.qpos_rad),
                jnp.full(7, n.qvel_rad_s),
                jnp.full(3, n.pos_m),
                jnp.zeros(PROPRIO_SIZE - 17 + 3),  # rotation, gripper, target: exact
                jnp.full(3, n.pos_m),
                jnp.zeros(3),
            ]
        )
        tcp_vel = self._panda.ik.jacobians(self.mjx_model, data)[0] @ data.qvel[self._panda.dof_adr]
        privileged = jnp.concatenate([clean, goal, tcp_vel])
        return delays.uniform_noise(rng, clean, scale), privileged

    # ----- the robot side (playground/deploy): the same functions, without simulated noise -----
    ROBOT_JOINTS = c.ARM_JOINTS + c.FINGER_JOINTS  # what the robot measures, in qpos order

    def robot_task(self, info: dict[str, Any]) -> dict[str, jax.Array]:
        """What an operator gives the robot for an episode, taken from a `reset` state's info."""
        return {"target_pos": info["target_pos"]}

    def robot_memory(self, data: mjx.Data, task: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """The controller state the robot keeps between steps, at the start of an episode."""
        return {
            "target_pos": task["target_pos"],
            "tcp_goal": self._panda.tcp_pos(data),
            "last_action": jnp.zeros(3),
        }

    def robot_observation(
        self, data: mjx.Data, memory: dict[str, jax.Array]
    ) -> dict[str, jax.Array]:
        """The policy's observation from measured joints (`data` holds their kinematics)."""
        return {"state": self.policy_state(data, memory["target_pos"], memory["last_action"])}

    def robot_command(
        self, data: mjx.Data, memory: dict[str, jax.Array], action: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(actuator targets `[nu]`, memory) for the policy's `action`, as `step` computes them.

        A non-finite action holds the current targets and leaves the memory as it was: NaN
        survives `clip`, and once in `tcp_goal` it would freeze the servo for the episode.
        """
        finite = jnp.all(jnp.isfinite(action))
        action = jnp.where(finite, jnp.clip(action, -1.0, 1.0), 0.0)
        ctrl, goal = self.command(data, memory["tcp_goal"], action)
        new = {**memory, "tcp_goal": goal, "last_action": action}
        return (
            jnp.where(finite, ctrl, data.ctrl),
            jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, memory),
        )

    def robot_success(self, data: mjx.Data, task: dict[str, jax.Array]) -> jax.Array:
        """The episode's success in a full (simulated) state: the env's `success` term."""
        return self.distance(data, task["target_pos"]) < self.config.success_tol_m

    def robot_target_speed(self) -> np.ndarray:
        """Fastest safe change of each actuator target per second (the Panda's published
        joint velocity limits; the fingers' speed)."""
        return np.array(c.ARM_MAX_SPEED_RAD_S + (c.FINGER_MAX_SPEED_M_S,))

    def distance(self, data: mjx.Data, target: jax.Array) -> jax.Array:
        return jnp.linalg.norm(self._panda.tcp_pos(data) - target)

    def reward_terms(
        self, data: mjx.Data, target: jax.Array, action: jax.Array, last_action: jax.Array
    ) -> dict[str, jax.Array]:
        dist = self.distance(data, target)
        return {
            "reach": 1.0 - jnp.tanh(dist / self.config.reach_scale_m),
            "success": (dist < self.config.success_tol_m).astype(jnp.float32),
            "action_rate": -jnp.sum(jnp.square(action - last_action)),
            "joint_vel": -jnp.sum(jnp.square(data.qvel[self._panda.dof_adr])),
        }


def domain_randomize(
    model: mjx.Model, rng: jax.Array, config: config_dict.ConfigDict | None = None
):
    """Per-env actuator gains, joint damping and link masses; (batched model, in_axes)."""
    dr = (config or default_config()).dr
    ids = _ids()

    def sample(m: mjx.Model, key: jax.Array) -> dict[str, Any]:
        k_gain, k_damp, k_mass = jax.random.split(key, 3)
        return randomize.merge(
            randomize.scale_position_gains(m, k_gain, ids["actuators"], dr.gain_scale),
            randomize.scale_damping(m, k_damp, ids["dofs"], dr.damping_scale),
            randomize.scale_mass(m, k_mass, ids["links"], dr.mass_scale),
        )

    return randomize.batch_model(model, rng, sample)


@functools.lru_cache(maxsize=1)
def _ids() -> dict[str, Any]:
    m = mujoco.MjModel.from_xml_path(str(c.REACH_XML))
    panda = Panda.from_model(m)
    return {
        "actuators": list(panda.arm_actuators),
        "dofs": list(panda.dof_adr),
        "links": [m.body(f"link{i}").id for i in range(1, 8)],
    }
