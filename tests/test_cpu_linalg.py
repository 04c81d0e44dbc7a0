"""CPU Cholesky and triangular solve without batched LAPACK (the hang fix, see runtime.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from playground import cpu_linalg


def _spd(n, batch=8, seed=0):
    a = jax.random.normal(jax.random.PRNGKey(seed), (batch, n, n))
    return a @ jnp.swapaxes(a, -1, -2) + n * jnp.eye(n)


@pytest.mark.parametrize("n", [1, 5, 14, 28, cpu_linalg.MAX_SMALL_N + 4])
def test_cholesky_and_solve_match_numpy_without_lapack(n):
    a = _spd(n)
    b = jax.random.normal(jax.random.PRNGKey(1), (8, n, 3))

    def f(m, r):
        return jnp.linalg.cholesky(m), jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(m), r)

    jitted = jax.jit(jax.vmap(f))
    assert "lapack" not in jitted.lower(a, b).as_text()  # no batched LAPACK custom call
    chol, x = jitted(a, b)
    np.testing.assert_allclose(chol, np.linalg.cholesky(np.asarray(a)), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(
        x, np.linalg.solve(np.asarray(a), np.asarray(b)), rtol=1e-3, atol=1e-3
    )


@pytest.mark.parametrize("lower", [True, False])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("left_side", [True, False])
def test_triangular_solve_all_modes(lower, transpose_a, left_side):
    t = np.asarray(jnp.linalg.cholesky(_spd(6, batch=1)[0]))
    t = t if lower else t.T
    rhs = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (6, 2) if left_side else (2, 6)))
    got = jax.jit(
        lambda a, b: jax.lax.linalg.triangular_solve(
            a, b, left_side=left_side, lower=lower, transpose_a=transpose_a
        )
    )(t, rhs)
    op = t.T if transpose_a else t
    want = np.linalg.solve(op, rhs) if left_side else np.linalg.solve(op.T, rhs.T).T
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    unit = jax.lax.linalg.triangular_solve(
        jnp.asarray(t), jnp.asarray(rhs), left_side=left_side, lower=lower,
        transpose_a=transpose_a, unit_diagonal=True,
    )  # fmt: skip
    t_unit = t.copy()
    np.fill_diagonal(t_unit, 1.0)
    op = t_unit.T if transpose_a else t_unit
    want = np.linalg.solve(op, rhs) if left_side else np.linalg.solve(op.T, rhs.T).T
    np.testing.assert_allclose(unit, want, rtol=1e-4, atol=1e-4)
