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
