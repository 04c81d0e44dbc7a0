"""Cholesky and triangular solve for small matrices on CPU, without batched LAPACK.

Why: under `vmap`, jaxlib lowers these to one batched LAPACK call that fans the batch out over
XLA's intra-op thread pool and blocks a pool thread until the fan-out finishes; two such calls at
once on a 2-core machine deadlock (see `playground.runtime`). MJX factors small dense matrices
(the mass matrix and the Newton Hessian, n = nv <= 40) every physics step, so we lower both
primitives on CPU to straight-line JAX code unrolled over n, which XLA fuses and vectorises over
the batch. Matrices larger than `MAX_UNROLLED_N` use XLA's own HLO ops (also pool-safe).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MAX_UNROLLED_N = 48


def cholesky_unrolled(a: jax.Array) -> jax.Array:
    """Lower Cholesky factor of `a [..., n, n]` (column by column, n unrolled)."""
    n = a.shape[-1]
    cols = []
    for j in range(n):
        row = jnp.stack([c[..., j] for c in cols], axis=-1) if cols else None  # L[j, :j]
        diag = a[..., j, j] - (jnp.sum(row * row, axis=-1) if cols else 0.0)
        d = jnp.sqrt(diag)
        below = a[..., :, j]
        if cols:
            prev = jnp.stack(cols, axis=-1)  # L[:, :j]
            below = below - jnp.einsum("...ik,...k->...i", prev, row)
        col = jnp.where(jnp.arange(n) > j, below / d[..., None], 0.0)
        col = col.at[..., j].set(d)
        cols.append(col)
    return jnp.stack(cols, axis=-1)


def _substitute(t: jax.Array, b: jax.Array, lower: bool, unit_diagonal: bool) -> jax.Array:
    """Solves t x = b for triangular `t [..., n, n]`, `b [..., n, k]` (rows unrolled)."""
    n = t.shape[-1]
    order = range(n) if lower else range(n - 1, -1, -1)
    rows: dict[int, jax.Array] = {}
    for i in order:
        acc = b[..., i, :]
        for j, x_j in rows.items():
            acc = acc - t[..., i, j][..., None] * x_j
        rows[i] = acc if unit_diagonal else acc / t[..., i, i][..., None]
    return jnp.stack([rows[i] for i in range(n)], axis=-2)


def triangular_solve_unrolled(
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
    chol_small = mlir.lower_fun(cholesky_unrolled, multiple_results=False)
    tri_small = mlir.lower_fun(triangular_solve_unrolled, multiple_results=False)

    def cholesky_rule(ctx, x):
        aval = ctx.avals_in[0]
        small = aval.shape[-1] <= MAX_UNROLLED_N and not jnp.issubdtype(
            aval.dtype, jnp.complexfloating
        )
        return chol_small(ctx, x) if small else chol_hlo(ctx, x)

    def triangular_rule(ctx, a, b, **params):
        aval = ctx.avals_in[0]
        small = aval.shape[-1] <= MAX_UNROLLED_N and not jnp.issubdtype(
            aval.dtype, jnp.complexfloating
        )
        return tri_small(ctx, a, b, **params) if small else tri_hlo(ctx, a, b, **params)

    mlir.register_lowering(chol_p, cholesky_rule, platform="cpu")
    mlir.register_lowering(tri_p, triangular_rule, platform="cpu")
    return True
