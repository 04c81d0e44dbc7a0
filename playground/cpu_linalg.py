"""Cholesky and triangular solve for small matrices on CPU, without batched LAPACK.

Why: under `vmap`, jaxlib lowers these to one batched LAPACK call that fans the batch out over
XLA's intra-op thread pool and blocks a pool thread until the fan-out finishes; two such calls at
once on a 2-core machine deadlock (see `playground.runtime`). MJX factors small dense matrices
(the mass matrix and the Newton Hessian, n = nv <= 40) every physics step, so we lower both
primitives on CPU to a short JAX loop over the n columns (rows for the solve), vectorised over
the batch. Matrices larger than `MAX_SMALL_N` use XLA's own HLO ops (also pool-safe).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MAX_SMALL_N = 48


def cholesky_small(a: jax.Array) -> jax.Array:
    """Lower Cholesky factor of `a [..., n, n]`, one column per loop iteration."""
    n = a.shape[-1]
    idx = jnp.arange(n)

    def column(j, lower):
        row = jnp.where(idx < j, jnp.take(lower, j, axis=-2), 0.0)  # L[j, :j]
        diag = jnp.take(jnp.take(a, j, axis=-1), j, axis=-1) - jnp.sum(row * row, axis=-1)
        d = jnp.sqrt(diag)
        below = jnp.take(a, j, axis=-1) - jnp.einsum("...ik,...k->...i", lower, row)
        col = jnp.where(idx > j, below / d[..., None], 0.0)
        col = jnp.where(idx == j, d[..., None], col)
        return jnp.where(idx == j, col[..., :, None], lower)

    return jax.lax.fori_loop(0, n, column, jnp.zeros_like(a))


def _substitute(t: jax.Array, b: jax.Array, lower: bool, unit_diagonal: bool) -> jax.Array:
    """Solves t x = b for triangular `t [..., n, n]`, `b [..., n, k]`, one row per iteration."""
    n = t.shape[-1]
    idx = jnp.arange(n)

    def row(k, x):
        i = k if lower else n - 1 - k
        t_row = jnp.take(t, i, axis=-2)
        # Rows not solved yet are still zero, so the sum covers exactly the solved ones.
        acc = jnp.take(b, i, axis=-2) - jnp.einsum("...j,...jk->...k", t_row, x)
        x_i = acc if unit_diagonal else acc / jnp.take(t_row, i, axis=-1)[..., None]
        return jnp.where((idx == i)[:, None], x_i[..., None, :], x)

    return jax.lax.fori_loop(0, n, row, jnp.zeros(b.shape, b.dtype))


def triangular_solve_small(
    a, b, *, left_side, lower, transpose_a, conjugate_a, unit_diagonal
) -> jax.Array:
    """Same contract as `lax.linalg.triangular_solve` for real matrices."""
    if conjugate_a and jnp.iscomplexobj(a):
        a = jnp.conj(a)
    if transpose_a:
        a, lower = jnp.swapaxes(a, -1, -2), not lower
    if left_side:
        return _substitute(a, b, lower, unit_diagonal)
    # x a = b  <=>  a^T x^T = b^T
    xt = _substitute(jnp.swapaxes(a, -1, -2), jnp.swapaxes(b, -1, -2), not lower, unit_diagonal)
    return jnp.swapaxes(xt, -1, -2)


def register_cpu_lowerings() -> bool:
    """Installs the CPU lowerings. Returns False (changing nothing) if jax lacks the hooks."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.lax import linalg
    except ImportError:
        return False
    chol_p = getattr(linalg, "cholesky_p", None)
    chol_hlo = getattr(linalg, "_cholesky_lowering", None)
    tri_p = getattr(linalg, "triangular_solve_p", None)
    tri_hlo = getattr(linalg, "_triangular_solve_lowering", None)
    if None in (chol_p, chol_hlo, tri_p, tri_hlo):
        return False
    chol_small = mlir.lower_fun(cholesky_small, multiple_results=False)
    tri_small = mlir.lower_fun(triangular_solve_small, multiple_results=False)

    def cholesky_rule(ctx, x):
        aval = ctx.avals_in[0]
        small = aval.shape[-1] <= MAX_SMALL_N and not jnp.issubdtype(
            aval.dtype, jnp.complexfloating
        )
        return chol_small(ctx, x) if small else chol_hlo(ctx, x)

    def triangular_rule(ctx, a, b, **params):
        aval = ctx.avals_in[0]
        small = aval.shape[-1] <= MAX_SMALL_N and not jnp.issubdtype(
            aval.dtype, jnp.complexfloating
        )
        return tri_small(ctx, a, b, **params) if small else tri_hlo(ctx, a, b, **params)

    mlir.register_lowering(chol_p, cholesky_rule, platform="cpu")
    mlir.register_lowering(tri_p, triangular_rule, platform="cpu")
    return True
