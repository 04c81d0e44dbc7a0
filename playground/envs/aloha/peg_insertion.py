"""AlohaS2RPegInsertion: the left arm holds a socket, the right a peg; the policy inserts the peg.

Phase 1 (pick) brings both objects up, phase 2 (the policy's job) inserts. `config.phase1` says
how phase 1 happens:
- `"lifted"` (default): each episode starts from a state where both arms already hold their
  objects. The states come from a scripted grasp-and-lift on native MuJoCo with random object
  placements (`lifted_states`), computed once when the env is built; no pick policy is needed.
  With `config.switch_states_path` (a `.npz` state bank), an episode starts with probability
  `switch_states_prob` from one of the bank's states instead: where a pick policy had just
  lifted both objects, so the insertion policy also learns from grasps as a policy leaves them.
- `"policy"`: objects start on the table and a frozen AlohaS2RPick policy, read from the
  `.safetensors` policy file `config.pick_policy_path` (a legacy pickle is refused), drives each
  arm (the right arm sees itself in its own base frame, where it is the left arm's mirror) until
  both objects are lifted above `switch_height_m`. From then on (`has_switched` = 1) the agent's
  action drives both arms. Before the switch the agent's action is ignored and every reward term
  is zero. The two phases meet in `composite.combine`, as in the composite teacher.
- `"agent"`: objects on the table, and the agent's action drives both arms from the first step
  (the whole task: a pixel student, or the composite teacher of `composite.py`). `has_switched`
  flips as in `"policy"`; reward terms are zero before it.
In both table modes the obs also holds `pick_state` `[2, 47]`: each arm's pick observation,
noisy and delayed as `state` is, in the arm's own base frame (what the pick policy reads). The
whole task needs the pick phase's steps too: run it with `episode_length=160`.

Action: 14 = [left arm 6, left gripper, right arm 6, right gripper], deltas on position targets
as in AlohaS2RPick, delayed the same way. Reward terms (`config.reward` weights, each in
`metrics`): approach (peg tip to socket entrance), alignment (angle between the peg and the
socket's axis), axis (peg tip near the socket's axis, within `axis_reach_m` of the entrance),
insertion (depth along the socket's axis while on it, from `insertion_lead_m` in front of the
entrance), hold (both objects grasped), drop (-1 when either falls), action_rate. The peg has
5 mm per side in the socket, so alignment and axis are steepest at a few degrees and millimetres
(docs/results.md has the runs that asked for them). `success`: peg tip deeper than
`success_depth_m` inside the socket and within `axis_tol_m` of its axis. Terminations: a drop, a
large tilt, an object off the table, or non-finite physics; the time limit is a truncation
(training wrapper), never a termination.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from ml_collections import config_dict
from mujoco import mjx

from playground.envs import control, delays, randomize
from playground.envs.aloha import arm as arm_lib
from playground.envs.aloha import composite, scripted
from playground.envs.aloha import constants as c
from playground.envs.base import MjxEnv, State, sanitize
from playground.errors import UsageError

PHASE1_MODES = ("lifted", "policy", "agent")
# The whole task from the table: the pick phase (its length is measured in docs/results.md)
# plus the 100 steps the insertion policy trains with.
WHOLE_TASK_EPISODE_LENGTH = 160
# Where each arm grips its object, in the object's frame: at its centre of mass, so gravity
# puts no torque on the grasp; the peg still sticks out 48 mm, more than the 30 mm to insert.
SOCKET_GRIP_M = (0.0, 0.0, 0.0)
PEG_GRIP_M = (0.0, 0.0, 0.0)


def default_config() -> config_dict.ConfigDict:
    return config_dict.create(
        impl="jax",
        ctrl_dt=0.05,
        sim_dt=0.005,
        episode_length=100,
        action_scale=0.02,
        phase1="lifted",
        pick_policy_path="",
        switch_height_m=0.08,
        num_lifted_states=32,
        lifted_states_seed=0,
        lift_height_m=0.15,
        # phase1="lifted": a bank of states where a pick policy had just lifted both objects
        # (scripts/switch_states.py); each episode starts from it with this probability, else
        # from the scripted lifted states. Empty: scripted lifted states only.
        switch_states_path="",
        switch_states_prob=0.8,
        delay=config_dict.create(action_history=4, obs_history=4, skew=3.0),
        obs_noise=config_dict.create(
            qpos_rad=0.02,
            qvel_rad_s=0.1,
            object_pos_m=0.005,
            object_angle_rad=float(np.deg2rad(3.0)),
            # +- on each axis of the peg tip's offset from the socket entrance: the pose of one
            # part against the other, as a close-range tracker (a wrist camera, fiducials on
            # both parts) measures it. The objects' own noise above is the cell's, and at +-5 mm
            # each their difference would be off by more than the 5 mm clearance
            # (docs/teachers.md, "Peg insertion").
            relative_pos_m=0.002,
        ),
        init=config_dict.create(
            object_radius_m=(0.26, 0.34),  # phase1="policy": objects on the table, arm base frame
            object_angle_rad=float(np.deg2rad(15.0)),
            object_yaw_rad=float(np.deg2rad(10.0)),
            target_jitter_rad=0.03,  # phase1="lifted": +- on each arm joint's servo target
        ),
        # Where the arms should bring their objects (world); also each arm's obs target.
        socket_target_m=(-0.07, -0.02, 0.17),
        peg_target_m=(0.07, -0.02, 0.17),
        reward=config_dict.create(
            approach=1.0,
            alignment=1.0,
            axis=1.0,
            insertion=4.0,
            hold=0.5,
            drop=5.0,
            success=2.0,
            action_rate=0.01,
        ),
        insertion_depth_m=0.05,  # insertion reward saturates at this depth
        # ... and starts this far in front of the entrance (on the axis), so that the last step
        # in pays (docs/results.md, "Aloha insertion").
        insertion_lead_m=0.02,
        # The peg (20 mm) has 5 mm per side in the socket (30 mm): the shaping terms are
        # steepest at the scale the insertion needs, a few degrees and a few millimetres.
        alignment_scale_rad=0.15,
        axis_scale_m=0.005,
        axis_reach_m=0.03,  # the axis term counts within this distance of the entrance
        success_depth_m=0.03,
        axis_tol_m=0.008,
        drop_height_m=0.04,
        max_tilt_rad=float(np.deg2rad(60.0)),
        dr=config_dict.create(
            object_mass_scale=(0.7, 1.5),
            friction_scale=(0.7, 1.3),
            gain_scale=(0.8, 1.2),
            damping_scale=(0.8, 1.2),
        ),
    )


REWARD_TERMS = (
    "approach",
    "alignment",
    "axis",
    "insertion",
    "hold",
    "drop",
    "success",
    "action_rate",
)


class AlohaS2RPegInsertion(MjxEnv):
    def __init__(self, config: config_dict.ConfigDict | None = None, config_overrides=None):
        super().__init__(config or default_config(), config_overrides)
        cfg = self.config
        if cfg.phase1 not in PHASE1_MODES:
            raise UsageError(f"phase1 must be one of {PHASE1_MODES}, got {cfg.phase1!r}")
        m = self.mj_model
        self._left = arm_lib.find_arm(m, "left/")
        self._right = arm_lib.find_arm(m, "right/")
        self._socket = arm_lib.find_object(m, "socket", "socket_bottom")
        self._peg = arm_lib.find_object(m, "peg", "peg")
        self._sites = {
            n: m.site(n).id for n in ("socket_entrance", "socket_rear", "peg_tip", "peg_tail")
        }
        self._home_qpos = jnp.asarray(m.keyframe("home").qpos)
        self._home_ctrl = jnp.asarray(m.keyframe("home").ctrl)
        self._control = control.DeltaPositionControl.from_model(
            m, cfg.action_scale, cfg.delay.action_history, cfg.delay.skew
        )
        self._obs_pmf = delays.skewed_delay_pmf(cfg.delay.obs_history, cfg.delay.skew)
        self._targets = (jnp.asarray(cfg.socket_target_m), jnp.asarray(cfg.peg_target_m))
        self._pick_policy = None
        if cfg.phase1 == "policy":
            if not cfg.pick_policy_path:
                raise UsageError(
                    'phase1="policy" needs config.pick_policy_path (an AlohaS2RPick policy file).'
                )
            from playground.files import policy_file

            self._pick_policy, _ = policy_file.load_policy_fn(
                cfg.pick_policy_path, env_name=composite.PICK_ENV
            )
        self._switch_states = None
        if cfg.phase1 in ("policy", "agent"):
            self._lifted = None
        else:
            if cfg.switch_states_path:
                if not 0.0 <= cfg.switch_states_prob <= 1.0:
                    raise UsageError(
                        f"switch_states_prob must be in [0, 1], got {cfg.switch_states_prob}"
                    )
                from playground.files import state_bank

                bank = state_bank.load(cfg.switch_states_path, m)
                self._switch_states = tuple(bank[k] for k in state_bank.KEYS)
            self._lifted = lifted_states(
                m,
                self._left,
                self._right,
                self._socket,
                self._peg,
                cfg.num_lifted_states,
                cfg.lifted_states_seed,
                cfg.lift_height_m,
            )

    def load_mj_model(self) -> mujoco.MjModel:
        return mujoco.MjModel.from_xml_path(str(c.PEG_INSERTION_XML))

    @property
    def arms(self) -> tuple[arm_lib.Arm, arm_lib.Arm]:
        return self._left, self._right

    @property
    def objects(self) -> tuple[arm_lib.FreeObject, arm_lib.FreeObject]:
        return self._socket, self._peg

    @property
    def lifted_bank(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self._lifted

    @property
    def switch_states(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(qpos, qvel, ctrl) of the pick-policy switch states, when a bank is configured."""
        return self._switch_states

    # ----- reset -----
    def reset(self, rng: jax.Array) -> State:
        rng, k_init, k_obs = jax.random.split(rng, 3)
        if self._lifted is None:
            qpos, ctrl = self._table_start(k_init)
            switched = jnp.zeros(())
        else:
            bank_qpos, bank_ctrl = (jnp.asarray(x) for x in self._lifted)
            k_pick, k_jitter = jax.random.split(k_init)
            i = jax.random.randint(k_pick, (), 0, bank_qpos.shape[0])
            qpos, ctrl = bank_qpos[i], bank_ctrl[i]
            qvel = jnp.zeros(self.mj_model.nv)
            if self._switch_states is not None:
                s_qpos, s_qvel, s_ctrl = (jnp.asarray(x) for x in self._switch_states)
                k_bank, k_switch = jax.random.split(jax.random.fold_in(k_init, 1))
                j = jax.random.randint(k_switch, (), 0, s_qpos.shape[0])
                use = jax.random.uniform(k_bank) < self.config.switch_states_prob
                qpos = jnp.where(use, s_qpos[j], qpos)
                qvel = jnp.where(use, s_qvel[j], qvel)
                ctrl = jnp.where(use, s_ctrl[j], ctrl)
            # Nudge the arm servo targets: the arms drift to a nearby pose carrying their
            # objects, so no two episodes start alike even when they share a lifted state.
            arm_ids = jnp.concatenate([self._left.actuator_ids[:6], self._right.actuator_ids[:6]])
            jitter = (
                jax.random.uniform(k_jitter, (12,), minval=-1, maxval=1)
                * self.config.init.target_jitter_rad
            )
            ctrl = ctrl.at[arm_ids].add(jitter)
            switched = jnp.ones(())
        data = self.make_data().replace(qpos=qpos, ctrl=ctrl)
        if self._lifted is not None:
            data = data.replace(qvel=qvel)
        data = self.forward(data)
        noisy, privileged, pick_obs = self._observe(data, switched, k_obs)
        info = {
            "rng": rng,
            "has_switched": switched,
            "action_history": self._control.initial_history(),
            "obs_history": delays.init_history(noisy, self.config.delay.obs_history),
            "pick_obs_history": delays.init_history(pick_obs, self.config.delay.obs_history),
            "last_action": jnp.zeros(self.action_size),
        }
        metrics = {name: jnp.zeros(()) for name in REWARD_TERMS}
        obs = {"state": noisy, "privileged_state": privileged}
        if self._lifted is None:
            obs["pick_state"] = pick_obs
        return State(data, obs, jnp.zeros(()), jnp.zeros(()), metrics, info)

    def _table_start(self, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Objects on the table in front of their arms (random placement), arms at home."""
        cfg = self.config.init
        qpos = self._home_qpos
        keys = jax.random.split(rng, 2)
        for key, arm, obj, yaw0 in (
            (keys[0], self._left, self._socket, 0.0),
            (keys[1], self._right, self._peg, np.pi),
        ):
            k_r, k_a, k_y = jax.random.split(key, 3)
            r = jax.random.uniform(
                k_r, minval=cfg.object_radius_m[0], maxval=cfg.object_radius_m[1]
            )
            a = jax.random.uniform(k_a, minval=-1, maxval=1) * cfg.object_angle_rad
            xy = arm.base_pos[:2] + r * (arm.base_rot[:2, :2] @ jnp.array([jnp.cos(a), jnp.sin(a)]))
            yaw = yaw0 + a + jax.random.uniform(k_y, minval=-1, maxval=1) * cfg.object_yaw_rad
            z = self._home_qpos[obj.qpos_adr + 2]
            quat = jnp.array([jnp.cos(yaw / 2), 0.0, 0.0, jnp.sin(yaw / 2)])
            qpos = qpos.at[obj.qpos_adr : obj.qpos_adr + 7].set(
                jnp.concatenate([xy, z[None], quat])
            )
        return qpos, self._home_ctrl

    # ----- step -----
    def step(self, state: State, action: jax.Array) -> State:
        action = jnp.clip(self.check_action(action), -1.0, 1.0)
        info = dict(state.info)
        rng, k_act, k_obs, k_noise, k_pick = jax.random.split(info["rng"], 5)
        switched = info["has_switched"]
        if self._pick_policy is not None:
            # The composite teacher's rule, on the observation an agent was given: the pick
            # policy per arm until the (delayed) phase flag says both objects are up.
            left, right = composite.pick_actions(self._pick_policy, state.obs["pick_state"], k_pick)
            action = composite.combine(state.obs["state"][-1], left, right, action)
        ctrl, history = self._control.apply(state.data.ctrl, info["action_history"], action, k_act)
        data = self.physics_step(state.data, ctrl)

        if self._lifted is None:
            switched = jnp.maximum(switched, self._both_lifted(data))
        noisy, privileged, pick_obs = self._observe(data, switched, k_noise)
        obs_history = delays.push(info["obs_history"], noisy)
        terms = self.reward_terms(data, action, info["last_action"])
        terms = {k: v * switched for k, v in terms.items()}
        reward = sum(self.config.reward[k] * v for k, v in terms.items() if k != "success") + (
            self.config.reward.success * terms["success"]
        )
        done = self._terminated(data, switched)
        info.update(
            rng=rng,
            has_switched=switched,
            action_history=history,
            obs_history=obs_history,
            last_action=action,
        )
        pick_history = delays.push(info["pick_obs_history"], pick_obs)
        info["pick_obs_history"] = pick_history
        obs = {
            "state": delays.delayed(obs_history, k_obs, self._obs_pmf),
            "privileged_state": privileged,
        }
        if self._lifted is None:  # one delay draw for both views, as a robot's readings share one
            obs["pick_state"] = delays.delayed(pick_history, k_obs, self._obs_pmf)
        obs, reward, metrics = sanitize(obs, reward, {**state.metrics, **terms})
        return state.replace(
            data=data,
            obs=obs,
            reward=reward,
            done=done,
            metrics=metrics,
            info=info,
        )

    # ----- observation -----
    def _observe(self, data: mjx.Data, switched: jax.Array, rng: jax.Array):
        """(noisy policy obs, clean privileged obs, per-arm pick obs `[2, 47]`)."""
        k = jax.random.split(rng, 3)
        noisy_parts, clean_parts, extras = [], [], []
        pairs = (
            (self._left, self._socket, self._targets[0]),
            (self._right, self._peg, self._targets[1]),
        )
        for i, (arm, obj, target) in enumerate(pairs):
            clean = arm_lib.read_arm(arm, obj, data, target)
            noisy = arm_lib.add_noise(clean, k[i], self.config.obs_noise)
            grasped = arm_lib.is_grasped(arm, obj, self.mjx_model, data)
            noisy_parts.append(arm_lib.arm_observation(noisy))
            clean_parts.append(arm_lib.arm_observation(clean))
            extras.append(arm_lib.privileged_extras(arm, obj, self.mjx_model, data, grasped))
        rel = self._site("socket_entrance", data) - self._site("peg_tip", data)
        noisy_rel = delays.uniform_noise(k[2], rel, self.config.obs_noise.relative_pos_m)
        state = jnp.concatenate([*noisy_parts, noisy_rel, switched[None]])
        depth, off_axis = self.insertion(data)
        privileged = jnp.concatenate(
            [*clean_parts, rel, switched[None], *extras, jnp.stack([depth, off_axis])]
        )
        return state, privileged, jnp.stack(noisy_parts)

    # ----- the robot side (playground/deploy): the same functions, without simulated noise -----
    ROBOT_JOINTS = tuple(p + n for p in ("left/", "right/") for n in c.ARM_JOINTS + c.FINGER_JOINTS)
    ROBOT_OBJECTS = ("socket", "peg")  # their poses come from the cell's perception system

    def robot_task(self, info: dict[str, Any]) -> dict[str, jax.Array]:
        """The episode's phase at its start: 0 from the table (the whole task), 1 when both
        objects are already held."""
        return {"has_switched": info["has_switched"]}

    def robot_memory(self, data: mjx.Data, task: dict[str, jax.Array]) -> dict[str, jax.Array]:
        return {"has_switched": jnp.maximum(task["has_switched"], self._both_lifted(data))}

    def robot_observation(
        self, data: mjx.Data, memory: dict[str, jax.Array]
    ) -> dict[str, jax.Array]:
        """`state` (the insertion policy's) and `pick_state` (each arm's pick observation)."""
        switched = jnp.maximum(memory["has_switched"], self._both_lifted(data))
        pairs = (
            (self._left, self._socket, self._targets[0]),
            (self._right, self._peg, self._targets[1]),
        )
        parts = [arm_lib.arm_observation(arm_lib.read_arm(a, o, data, t)) for a, o, t in pairs]
        rel = self._site("socket_entrance", data) - self._site("peg_tip", data)
        return {
            "state": jnp.concatenate([*parts, rel, switched[None]]),
            "pick_state": jnp.stack(parts),
        }

    def robot_command(
        self, data: mjx.Data, memory: dict[str, jax.Array], action: jax.Array
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """(actuator targets, memory): delta position control now; the phase flag latches."""
        switched = jnp.maximum(memory["has_switched"], self._both_lifted(data))
        return arm_lib.robot_targets(self._control, data.ctrl, action), {"has_switched": switched}

    def robot_success(self, data: mjx.Data, task: dict[str, jax.Array]) -> jax.Array:
        return self.is_success(data) > 0

    def robot_target_speed(self) -> np.ndarray:
        return arm_lib.robot_target_speed(2)

    def _site(self, name: str, data: mjx.Data) -> jax.Array:
        return data.site_xpos[self._sites[name]]

    # ----- task geometry, reward, termination -----
    def insertion(self, data: mjx.Data) -> tuple[jax.Array, jax.Array]:
        """(depth of the peg tip inside the socket along its axis, distance from that axis), m."""
        entrance = self._site("socket_entrance", data)
        axis = data.xmat[self._socket.body][:, 0]  # socket +x: rear -> entrance
        rel = self._site("peg_tip", data) - entrance
        depth = -jnp.dot(rel, axis)
        off_axis = jnp.linalg.norm(rel + depth * axis)
        return depth, off_axis

    def is_success(self, data: mjx.Data) -> jax.Array:
        depth, off_axis = self.insertion(data)
        cfg = self.config
        return ((depth > cfg.success_depth_m) & (off_axis < cfg.axis_tol_m)).astype(jnp.float32)

    def _both_lifted(self, data: mjx.Data) -> jax.Array:
        z_socket = data.xpos[self._socket.body][2]
        z_peg = data.xpos[self._peg.body][2]
        return (
            (z_socket > self.config.switch_height_m) & (z_peg > self.config.switch_height_m)
        ).astype(jnp.float32)

    def _dropped(self, data: mjx.Data) -> jax.Array:
        h = self.config.drop_height_m
        return (data.xpos[self._socket.body][2] < h) | (data.xpos[self._peg.body][2] < h)

    def reward_terms(
        self, data: mjx.Data, action: jax.Array, last_action: jax.Array
    ) -> dict[str, jax.Array]:
        cfg = self.config
        depth, off_axis = self.insertion(data)
        tip_to_entrance = jnp.linalg.norm(
            self._site("socket_entrance", data) - self._site("peg_tip", data)
        )
        peg_x, socket_x = data.xmat[self._peg.body][:, 0], data.xmat[self._socket.body][:, 0]
        # 0 when the peg points into the socket; atan2 stays exact near 0, where arccos does not.
        angle = jnp.arctan2(jnp.linalg.norm(jnp.cross(peg_x, socket_x)), -jnp.dot(peg_x, socket_x))
        on_axis = (off_axis < cfg.axis_tol_m).astype(jnp.float32)
        near = (tip_to_entrance < cfg.axis_reach_m).astype(jnp.float32)
        held = arm_lib.is_grasped(
            self._left, self._socket, self.mjx_model, data
        ) * arm_lib.is_grasped(self._right, self._peg, self.mjx_model, data)
        return {
            "approach": 1.0 - jnp.tanh(5.0 * tip_to_entrance),
            "alignment": 1.0 - jnp.tanh(angle / cfg.alignment_scale_rad),
            "axis": near * (1.0 - jnp.tanh(off_axis / cfg.axis_scale_m)),
            "insertion": on_axis
            * jnp.clip(
                (depth + cfg.insertion_lead_m) / (cfg.insertion_depth_m + cfg.insertion_lead_m),
                0.0,
                1.0,
            ),
            "hold": held,
            "drop": -self._dropped(data).astype(jnp.float32),
            "success": self.is_success(data),
            "action_rate": -jnp.sum(jnp.square(action - last_action)),
        }

    def _terminated(self, data: mjx.Data, switched: jax.Array) -> jax.Array:
        tilt = []
        for obj in (self._socket, self._peg):
            tilt.append(jnp.arccos(jnp.clip(data.xmat[obj.body][2, 2], -1.0, 1.0)))
        tilted = jnp.max(jnp.stack(tilt)) > self.config.max_tilt_rad
        pos = jnp.stack([data.xpos[self._socket.body], data.xpos[self._peg.body]])
        off_table = jnp.any(jnp.abs(pos[:, :2]) > jnp.array([0.7, 0.5])) | jnp.any(
            pos[:, 2] < -0.05
        )
        unstable = ~(jnp.all(jnp.isfinite(data.qpos)) & jnp.all(jnp.isfinite(data.qvel)))
        after_switch = (switched > 0) & (self._dropped(data) | tilted)
        return (after_switch | off_table | unstable).astype(jnp.float32)


def lifted_states(
    model: mujoco.MjModel,
    left: arm_lib.Arm,
    right: arm_lib.Arm,
    socket: arm_lib.FreeObject,
    peg: arm_lib.FreeObject,
    count: int,
    seed: int,
    lift_height_m: float,
) -> tuple[np.ndarray, np.ndarray]:
    """`count` states `(qpos [count, nq], ctrl [count, nu])` with both objects grasped and lifted.

    Each comes from a scripted grasp-and-lift on native MuJoCo after a random placement of the
    objects on the table; placements whose grasp fails are redrawn.
    """
    # Building the states takes about a second; envs built again in one process reuse them.
    digest = hashlib.sha1(
        b"".join(
            np.ascontiguousarray(a).tobytes()
            for a in (model.body_pos, model.geom_size, model.qpos0)
        )
    ).hexdigest()
    key = (digest, count, seed, lift_height_m)
    if key not in _LIFTED_CACHE:
        _LIFTED_CACHE[key] = _make_lifted_states(
            model, left, right, socket, peg, count, seed, lift_height_m
        )
    return _LIFTED_CACHE[key]


_LIFTED_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _make_lifted_states(model, left, right, socket, peg, count, seed, lift_height_m):
    rng = np.random.default_rng(seed)
    qpos, ctrl = [], []
    attempts = 0
    while len(qpos) < count:
        attempts += 1
        if attempts > 4 * count + 8:
            raise RuntimeError(
                f"scripted grasp succeeded only {len(qpos)} times in {attempts} tries"
            )
        data = mujoco.MjData(model)
        mujoco.mj_resetDataKeyframe(model, data, model.keyframe("home").id)
        for arm, obj, yaw0 in ((left, socket, 0.0), (right, peg, np.pi)):
            r, a, dyaw = rng.uniform(0.27, 0.33), rng.uniform(-0.2, 0.2), rng.uniform(-0.15, 0.15)
            xy = arm.base_pos[:2] + r * (arm.base_rot[:2, :2] @ np.array([np.cos(a), np.sin(a)]))
            yaw = yaw0 + a + dyaw
            adr = obj.qpos_adr
            data.qpos[adr : adr + 3] = [xy[0], xy[1], data.qpos[adr + 2]]
            data.qpos[adr + 3 : adr + 7] = [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        mujoco.mj_forward(model, data)
        ok = True
        for arm, obj, grip in ((left, socket, SOCKET_GRIP_M), (right, peg, PEG_GRIP_M)):
            result = scripted.grasp_and_lift(model, data, arm, obj, lift_height_m, np.asarray(grip))
            ok &= result.lifted
        # Let both settle holding: the first arm's object must still be up after the second lift.
        ok &= (
            data.xpos[socket.body][2] > lift_height_m - 0.05
            and data.xpos[peg.body][2] > lift_height_m - 0.05
        )
        if ok:
            qpos.append(data.qpos.copy())
            ctrl.append(data.ctrl.copy())
    return np.stack(qpos).astype(np.float32), np.stack(ctrl).astype(np.float32)


def domain_randomize(
    model: mjx.Model, rng: jax.Array, config: config_dict.ConfigDict | None = None
):
    """Per-env physics: object masses, friction, actuator gains, joint damping (both arms)."""
    dr = (config or default_config()).dr
    ids = _ids()

    def sample(m: mjx.Model, key: jax.Array) -> dict[str, Any]:
        k_mass, k_fric, k_gain, k_damp = jax.random.split(key, 4)
        return randomize.merge(
            randomize.scale_mass(m, k_mass, ids["object_bodies"], dr.object_mass_scale),
            randomize.scale_friction(m, k_fric, ids["friction_geoms"], dr.friction_scale),
            randomize.scale_position_gains(m, k_gain, ids["actuators"], dr.gain_scale),
            randomize.scale_damping(m, k_damp, ids["dofs"], dr.damping_scale),
        )

    return randomize.batch_model(model, rng, sample)


@functools.lru_cache(maxsize=1)
def _ids() -> dict[str, Any]:
    m = mujoco.MjModel.from_xml_path(str(c.PEG_INSERTION_XML))
    arms = [arm_lib.find_arm(m, p) for p in ("left/", "right/")]
    pads = ("left_pad_top", "left_pad_bottom", "right_pad_top", "right_pad_bottom")
    objects = ("socket_bottom", "socket_top", "socket_left", "socket_right", "socket_end", "peg")
    return {
        "object_bodies": [m.body("socket").id, m.body("peg").id],
        "friction_geoms": [m.geom(g).id for g in objects]
        + [m.geom(p + g).id for p in ("left/", "right/") for g in pads],
        "actuators": [int(a) for arm in arms for a in arm.actuator_ids],
        "dofs": [int(d) for arm in arms for d in arm.dof_adr[:6]],
    }
