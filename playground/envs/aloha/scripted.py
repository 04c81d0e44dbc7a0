"""A scripted top-down grasp for a ViperX arm, on native MuJoCo (numpy, not jitted).

Used to prove that the tasks are feasible as defined (tests drive it) and to build the lifted
starting states of AlohaS2RPegInsertion when no pick policy is given. Inverse kinematics is damped
least squares on the pinch site's position and orientation; the arm's position servos then track
the joint targets, so the script exercises the same actuators a policy does.
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

from playground.envs.aloha import arm as arm_lib
from playground.envs.aloha import constants as c


def top_down_rotation(yaw: float) -> np.ndarray:
    """Gripper frame pointing down (x = -z world) with the finger axis (y) at `yaw` + 90 deg."""
    x = np.array([0.0, 0.0, -1.0])
    y = np.array([-np.sin(yaw), np.cos(yaw), 0.0])
    return np.stack([x, y, np.cross(x, y)], axis=1)


def solve_ik(
    model: mujoco.MjModel,
    data: mujoco.MjData,
    arm: arm_lib.Arm,
    pos: np.ndarray,
    rot: np.ndarray | None = None,
    iterations: int = 100,
    damping: float = 1e-3,
) -> tuple[np.ndarray, float]:
    """Arm joint angles `[6]` that put the pinch site at `pos` (and `rot`), within joint limits.

    Works on a scratch copy of `data`; returns (angles, final position error in m).
    """
    scratch = mujoco.MjData(model)
    scratch.qpos[:] = data.qpos
    adr = arm.qpos_adr[:6]
    dofs = arm.dof_adr[:6]
    lo = model.jnt_range[[model.dof_jntid[d] for d in dofs], 0]
    hi = model.jnt_range[[model.dof_jntid[d] for d in dofs], 1]
    jacp = np.zeros((3, model.nv))
    jacr = np.zeros((3, model.nv))
    err_pos = np.inf
    for _ in range(iterations):
        mujoco.mj_kinematics(model, scratch)
        mujoco.mj_comPos(model, scratch)
        site_pos = scratch.site_xpos[arm.pinch_site]
        site_rot = scratch.site_xmat[arm.pinch_site].reshape(3, 3)
        e_pos = pos - site_pos
        err_pos = float(np.linalg.norm(e_pos))
        mujoco.mj_jacSite(model, scratch, jacp, jacr, arm.pinch_site)
        if rot is None:
            err, jac = e_pos, jacp[:, dofs]
        else:
            # Rotation error as an axis-angle vector: 0.5 * sum(cross(actual_i, desired_i)).
            e_rot = 0.5 * sum(np.cross(site_rot[:, i], rot[:, i]) for i in range(3))
            err = np.concatenate([e_pos, 0.3 * e_rot])
            jac = np.concatenate([jacp[:, dofs], 0.3 * jacr[:, dofs]])
        if np.linalg.norm(err) < 1e-5:
            break
        dq = jac.T @ np.linalg.solve(jac @ jac.T + damping * np.eye(len(err)), err)
        scratch.qpos[adr] = np.clip(scratch.qpos[adr] + dq, lo, hi)
    return scratch.qpos[adr].copy(), err_pos


@dataclasses.dataclass
class GraspResult:
    data: mujoco.MjData
    object_heights_m: list[float]  # object z after each phase
    lifted: bool


def grasp_and_lift(
    model: mujoco.MjModel,
    data: mujoco.MjData,
    arm: arm_lib.Arm,
    obj: arm_lib.FreeObject,
    lift_to_m: float = 0.15,
    grip_offset_m: np.ndarray | None = None,
    steps_per_phase: int = 200,
) -> GraspResult:
    """Approach from above, descend, close, lift, with the arm's position servos (native MuJoCo).

    `grip_offset_m` is where to grasp, in the object's frame (default: its centre). Steps are
    physics steps of `model.opt.timestep`. `data` is advanced in place and returned.
    """
    grip_offset = np.zeros(3) if grip_offset_m is None else np.asarray(grip_offset_m)
    obj_rot = data.xmat[obj.body].reshape(3, 3)
    grip_point = data.xpos[obj.body] + obj_rot @ grip_offset
    yaw = np.arctan2(obj_rot[1, 0], obj_rot[0, 0])
    rot = top_down_rotation(yaw)
    heights = []
    gripper = arm.actuator_ids[6]
    # The pad tips reach PAD_TIP_BELOW_PINCH_M below the pinch point: stay that far above the table.
    grasp_z = max(grip_point[2], c.PAD_TIP_BELOW_PINCH_M + 0.008)
    grasp = np.array([grip_point[0], grip_point[1], grasp_z])
    plan = [
        (grasp + [0, 0, 0.10], c.GRIPPER_OPEN_M),
        (grasp, c.GRIPPER_OPEN_M),
        (grasp, c.GRIPPER_CLOSED_M),
        (np.array([grasp[0], grasp[1], lift_to_m]), c.GRIPPER_CLOSED_M),
    ]
    correction = np.zeros(6)
    q_adr = arm.qpos_adr[:6]
    for target, grip in plan:
        q, _ = solve_ik(model, data, arm, target, rot)
        start = data.qpos[q_adr].copy()
        for i in range(steps_per_phase):
            # Ramp the targets so the servos move smoothly rather than jump.
            alpha = min(1.0, (i + 1) / (0.6 * steps_per_phase))
            goal = start + alpha * (q - start)
            if i % 10 == 9:
                # Integral action: the identified servos sag under gravity and joint friction.
                correction = np.clip(correction + 0.5 * (goal - data.qpos[q_adr]), -0.15, 0.15)
            data.ctrl[arm.actuator_ids[:6]] = goal + correction
            data.ctrl[gripper] = grip
            mujoco.mj_step(model, data)
        heights.append(float(data.xpos[obj.body][2]))
    rest = float(model.geom_size[obj.geom][2])
    return GraspResult(data, heights, lifted=heights[-1] > rest + 0.08)


def set_box_half_size(model: mujoco.MjModel, geom: int, half_size: float) -> None:
    """Resizes a cube geom in a native model, with the bounds MuJoCo's collision culling reads."""
    model.geom_size[geom] = half_size
    model.geom_rbound[geom] = half_size * np.sqrt(3.0)
    model.geom_aabb[geom] = [0, 0, 0, half_size, half_size, half_size]


def _frame(pos: np.ndarray, rot: np.ndarray) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3], t[:3, 3] = rot, pos
    return t


def _turn_onto(rot: np.ndarray, x_to: np.ndarray) -> np.ndarray:
    """`rot` turned by the smallest rotation that takes its x axis onto `x_to` (keeps the roll)."""
    x = rot[:, 0]
    axis = np.cross(x, x_to)
    s, cos = np.linalg.norm(axis), float(np.dot(x, x_to))
    if s < 1e-9:
        return rot.copy()
    quat = np.zeros(4)
    mujoco.mju_axisAngle2Quat(quat, axis / s, np.arctan2(s, cos))
    turn = np.zeros(9)
    mujoco.mju_quat2Mat(turn, quat)
    return turn.reshape(3, 3) @ rot


def inserted_state(
    model: mujoco.MjModel,
    qpos: np.ndarray,
    ctrl: np.ndarray,
    left: arm_lib.Arm,
    right: arm_lib.Arm,
    socket: arm_lib.FreeObject,
    peg: arm_lib.FreeObject,
    socket_pos: np.ndarray,
    depth_m: float,
    peg_tip_m: float,
    entrance_m: float,
    settle_steps: int = 40,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(qpos, qvel, ctrl) with both objects held as in `qpos` and the peg `depth_m` inside the
    socket, or None where the arms cannot reach it.

    A start for an insertion curriculum: from a state where both arms hold their objects, the
    socket is carried to `socket_pos` with its opening turned to face +x (towards the right arm),
    the peg onto the socket's axis with its tip `depth_m` past the entrance; inverse kinematics
    moves each arm so that its grasp is unchanged, the servo targets keep each joint's offset
    from its target (the sag under load), then native physics runs `settle_steps` steps. The
    peg's tip and the socket's entrance lie `peg_tip_m` and `entrance_m` along their x axes.
    """
    data = mujoco.MjData(model)
    data.qpos[:], data.ctrl[:] = qpos, ctrl
    mujoco.mj_forward(model, data)
    socket_rot = _turn_onto(data.xmat[socket.body].reshape(3, 3), np.array([1.0, 0.0, 0.0]))
    axis = socket_rot[:, 0]  # rear -> entrance
    peg_rot = _turn_onto(data.xmat[peg.body].reshape(3, 3), -axis)
    entrance = socket_pos + entrance_m * axis
    peg_pos = entrance - depth_m * axis - peg_tip_m * peg_rot[:, 0]
    new_qpos, new_ctrl = data.qpos.copy(), data.ctrl.copy()
    for arm, obj, pos, rot in (
        (left, socket, socket_pos, socket_rot),
        (right, peg, peg_pos, peg_rot),
    ):
        pinch = _frame(data.site_xpos[arm.pinch_site], data.site_xmat[arm.pinch_site].reshape(3, 3))
        held = np.linalg.inv(pinch) @ _frame(data.xpos[obj.body], data.xmat[obj.body].reshape(3, 3))
        goal = _frame(pos, rot) @ np.linalg.inv(held)
        q, err = solve_ik(model, data, arm, goal[:3, 3], goal[:3, :3], iterations=300)
        if err > 1e-3:
            return None
        adr = arm.qpos_adr[:6]
        new_ctrl[arm.actuator_ids[:6]] = q + (data.ctrl[arm.actuator_ids[:6]] - data.qpos[adr])
        new_qpos[adr] = q
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, rot.reshape(-1))
        new_qpos[obj.qpos_adr : obj.qpos_adr + 7] = np.concatenate([pos, quat])
    out = mujoco.MjData(model)
    out.qpos[:], out.ctrl[:] = new_qpos, new_ctrl
    for _ in range(settle_steps):
        mujoco.mj_step(model, out)
    return out.qpos.copy(), out.qvel.copy(), out.ctrl.copy()
