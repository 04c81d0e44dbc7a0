"""Delta end-effector control for the Panda: damped least-squares inverse kinematics in JAX.

A policy's action moves a Cartesian goal for the tool-centre point (and hand orientation); each
control step, one damped least-squares step from the *measured* joint angles towards that goal
gives the joint position targets of the arm's servos (a resolved-rate servo, as a robot's
Cartesian controller runs). Because the error is re-measured every step, drift from gravity or
linearisation is corrected instead of accumulated; the goal may lead the measured pose by at most
`max_lead_m`, so a blocked arm cannot wind it up. All of it is jit- and vmap-able and runs inside
the env step.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np
from mujoco import mjx


def rotation_error(current: jax.Array, desired: jax.Array) -> jax.Array:
    """Axis-angle vector `[3]` turning rotation matrix `current` towards `desired` (small angles).

    0.5 * sum_i cross(current_i, desired_i) over the columns: exact in direction, sin(angle) in
    magnitude, so it is smooth and needs no quaternion sign handling.
    """
    return 0.5 * jnp.sum(jnp.cross(current.T, desired.T), axis=0)


def rotation_vector(current: jax.Array, desired: jax.Array) -> jax.Array:
    """Axis-angle vector `[3]` (world frame) of the rotation taking `current` to `desired`.

    Exact at every angle, where `rotation_error` saturates at sin(angle): a planner that compares
    two candidate orientations, or predicts how far a joint will turn, needs the true angle (past
    90 degrees the small-angle error shrinks again and the comparison flips back and forth).
    """
    r = desired @ current.T
    angle = jnp.arccos(jnp.clip((jnp.trace(r) - 1.0) / 2.0, -1.0, 1.0))
    w = jnp.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    w_norm = jnp.linalg.norm(w)
    # Near half a turn the skew part vanishes; then r + I = 2 axis axis^T gives the axis.
    b = 0.5 * (r + jnp.eye(3))
    k = jnp.argmax(jnp.diag(b))
    v = b[:, k] / jnp.sqrt(jnp.maximum(b[k, k], 1e-12))
    v = jnp.where(jnp.dot(v, w) < 0.0, -v, v)
    axis = jnp.where(w_norm > 1e-6, w / jnp.maximum(w_norm, 1e-12), v)
    return angle * axis


def _clip_norm(v: jax.Array, max_norm: float) -> jax.Array:
    norm = jnp.sqrt(jnp.sum(jnp.square(v)) + 1e-12)
    return v * jnp.minimum(1.0, max_norm / norm)


def axis_angle_to_matrix(v: jax.Array) -> jax.Array:
    """Rotation matrix of the axis-angle vector `v` `[3]` (Rodrigues), safe at zero."""
    angle = jnp.sqrt(jnp.sum(jnp.square(v)) + 1e-12)
    k = v / angle
    kx = jnp.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return jnp.eye(3) + jnp.sin(angle) * kx + (1.0 - jnp.cos(angle)) * kx @ kx


@dataclasses.dataclass(frozen=True)
class DifferentialIK:
    """One damped least-squares step for a site on a serial arm.

    `dofs` and `qpos_adr` select the arm joints (hinges, so the two coincide in meaning);
    `rot_weight` trades metres against radians in the 6-D error.
    """

    site_id: int
    body_id: int
    dofs: np.ndarray  # [n]
    qpos_adr: np.ndarray  # [n]
    q_lo: np.ndarray  # [n]
    q_hi: np.ndarray  # [n]
    damping: float = 1e-2
    rot_weight: float = 0.3
    # One step corrects at most this much: linearisation holds, and an unreachable target pulls
    # the arm towards it instead of throwing it against its limits.
    max_step_m: float = 0.1
    max_step_rad: float = 0.5
    q_rest: np.ndarray | None = None  # [n]; None: no posture term
    posture_gain: float = 0.1

    def jacobians(self, model: mjx.Model, data: mjx.Data) -> tuple[jax.Array, jax.Array]:
        """Positional and rotational Jacobians of the site, `[3, n]` each."""
        jacp, jacr = mjx.jac(model, data, data.site_xpos[self.site_id], self.body_id)
        return jacp[self.dofs].T, jacr[self.dofs].T

    def solve(
        self,
        model: mjx.Model,
        data: mjx.Data,
        pos_error: jax.Array,
        rot_error: jax.Array | None = None,
    ) -> jax.Array:
        """Joint targets `[n]` that move the site by `pos_error` (and turn it by `rot_error`)."""
        jacp, jacr = self.jacobians(model, data)
        pos_error = _clip_norm(pos_error, self.max_step_m)
        if rot_error is not None:
            rot_error = _clip_norm(rot_error, self.max_step_rad)
        if rot_error is None:
            jac, err = jacp, pos_error
        else:
            w = self.rot_weight
            jac = jnp.concatenate([jacp, w * jacr])
            err = jnp.concatenate([pos_error, w * rot_error])
        lhs = jac @ jac.T + self.damping * jnp.eye(jac.shape[0])
        # Cholesky, not LU: lhs is symmetric positive definite, and the project's CPU lowering of
        # Cholesky is the one that cannot deadlock under vmap (playground/cpu_linalg.py).
        factor = jax.scipy.linalg.cho_factor(lhs)
        dq = jac.T @ jax.scipy.linalg.cho_solve(factor, err)
        q = data.qpos[self.qpos_adr]
        if self.q_rest is not None:
            # Posture in the null space of the task: a redundant arm drifts towards its rest
            # pose instead of folding into its joint limits, where it loses reach.
            pinv_jac = jac.T @ jax.scipy.linalg.cho_solve(factor, jac)
            null = jnp.eye(len(q)) - pinv_jac
            dq = dq + null @ (self.posture_gain * (jnp.asarray(self.q_rest) - q))
        return jnp.clip(q + dq, self.q_lo, self.q_hi)

    def converge(
        self,
        model: mjx.Model,
        data: mjx.Data,
        pos: jax.Array,
        rot: jax.Array | None = None,
        iterations: int = 50,
    ) -> tuple[jax.Array, jax.Array]:
        """Iterated IK on kinematics only: (joint angles `[n]`, final position error in m).

        For placing the arm at a pose (scripted starts, tests); within joint limits, and for an
        unreachable target it stops at the nearest pose the damped steps find.
        """

        # No posture term: with damping it leaks into the task, and here precision matters.
        exact = dataclasses.replace(self, q_rest=None)

        def body(_, d):
            d = mjx.com_pos(model, mjx.kinematics(model, d))
            site_rot = d.site_xmat[self.site_id].reshape(3, 3)
            rot_err = None if rot is None else rotation_error(site_rot, rot)
            q = exact.solve(model, d, pos - d.site_xpos[self.site_id], rot_err)
            return d.replace(qpos=d.qpos.at[self.qpos_adr].set(q))

        data = mjx.kinematics(model, jax.lax.fori_loop(0, iterations, body, data))
        return data.qpos[self.qpos_adr], jnp.linalg.norm(pos - data.site_xpos[self.site_id])
