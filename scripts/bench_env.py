"""Env stepping benchmark: jit time, env steps/s and physics steps/s per env and batch size.

    python scripts/bench_env.py                          # every env, batches 1 64 256
    python scripts/bench_env.py --envs AlohaS2RPick --batch 128 --steps 20 --repeats 5
    python scripts/bench_env.py --envs AlohaS2RPick --batch 128 --impls jax native
    python scripts/bench_env.py --envs AlohaS2RPick --batch 128 --impls native --rollout

Each batch size times a jitted `lax.scan` of `--steps` batched env steps with random actions (the
raw env, no auto-reset), `--repeats` times after one warm-up call, and reports the median.
jit time = trace + compile + first run of reset, and of the scan. Physics steps/s = env steps/s
x n_substeps. Ratios between rows of one run mean something on any machine; absolute numbers
only on the machine that printed them (the table header says which device).
Set S2R_NO_XLA_FLAGS=1 to measure without the project's CPU XLA flags. `native` (MuJoCo C, see
playground/physics/native.py) uses S2R_NATIVE_THREADS threads, by default the CPUs this process
may run on; the table's impl column says how many. `--rollout` adds a row for bare
`mujoco.rollout` on as many threads: the C engine stepping the same states with no JAX around it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import playground  # noqa: F401  (sets XLA flags before jax starts)
from playground import cli_checks, physics, registry, runtime
from playground.physics import native


def make_rollout(env, batch: int, steps: int):
    """`rollout(state, key)`: `steps` batched env steps with uniform random actions (not jitted)."""

    def rollout(state, key):
        def body(s, k):
            a = jax.random.uniform(k, (batch, env.action_size), minval=-1.0, maxval=1.0)
            return jax.vmap(env.step)(s, a), None

        state, _ = jax.lax.scan(body, state, jax.random.split(key, steps))
        return state

    return rollout


def bench(env_name: str, batch: int, steps: int, repeats: int, impl: str) -> dict:
    env = registry.load(env_name, config_overrides={"impl": impl})
    reset = jax.jit(jax.vmap(env.reset))
    rollout = jax.jit(make_rollout(env, batch, steps))
    keys = jax.random.split(jax.random.PRNGKey(0), batch)
    t0 = time.perf_counter()
    state = jax.block_until_ready(reset(keys))
    jit_reset = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = jax.block_until_ready(rollout(state, jax.random.PRNGKey(1)))
    jit_step = time.perf_counter() - t0
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        state = jax.block_until_ready(rollout(state, jax.random.PRNGKey(2 + i)))
        times.append(time.perf_counter() - t0)
    dt = statistics.median(times)
    finite = bool(jnp.all(jnp.isfinite(state.data.qpos)))
    return {
        "env": env_name,
        "impl": impl,
        "batch": batch,
        "jit_reset_s": jit_reset,
        "jit_step_s": jit_step,
        "env_steps_s": batch * steps / dt,
        "physics_steps_s": batch * steps * env.n_substeps / dt,
        "finite": finite,
    }


def main(argv: list[str] | None = None) -> None:
    parser = cli_checks.ArgumentParser(
        prog="bench_env.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    positive = cli_checks.positive_int
    parser.add_argument(
        "--envs",
        nargs="+",
        type=cli_checks.choice(registry.ALL_ENVS),
        default=list(registry.ALL_ENVS),
        help="env names",
    )
    parser.add_argument(
        "--batch", nargs="+", type=positive, default=[1, 64, 256], help="batch sizes"
    )
    parser.add_argument("--steps", type=positive, default=20, help="env steps per timed call")
    parser.add_argument("--repeats", type=positive, default=5, help="timed calls (median reported)")
    parser.add_argument(
        "--impls",
        "--impl",
        nargs="+",
        default=["jax"],
        choices=physics.IMPLS,
        help="physics implementations to compare (each row is one env, impl and batch)",
    )
    parser.add_argument(
        "--rollout",
        action="store_true",
        help="add a row per env and batch for bare mujoco.rollout (the C engine's own limit)",
    )
    args = parser.parse_args(argv)
    for impl in args.impls:
        try:
            physics.check_impl(impl)  # fail fast, saying why, before any env compiles
        except ValueError as e:
            cli_checks.exit_usage(parser, e)
    dev = jax.devices()[0]
    print(
        f"device: {dev.platform} ({dev.device_kind}), {os.cpu_count()} CPU cores "
        f"({native.default_nthread()} for native physics), "
        f"{platform.machine()}, {runtime.cpu_description()}; jax {jax.__version__}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )
    header = (
        "| env | impl | batch | jit reset (s) | jit step scan (s) | env steps/s | physics steps/s |"
    )
    print(header)
    print("|" + "---|" * 7)
    for name in args.envs:
        for batch in args.batch:
            for impl in args.impls:
                r = bench(name, batch, args.steps, args.repeats, impl)
                _print_row(r)
            if args.rollout:
                _print_row(bench_rollout(name, batch, args.steps, args.repeats))


def bench_rollout(env_name: str, batch: int, steps: int, repeats: int) -> dict:
    """The C engine's own limit: `mujoco.rollout` of the env's model from its reset states,
    `steps x n_substeps` physics steps with the reset's targets held, on the native threads."""
    import mujoco
    from mujoco import rollout as mj_rollout

    env = registry.load(env_name, config_overrides={"impl": "native"})
    model = env.mj_model
    state = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.PRNGKey(0), batch))
    data = mujoco.MjData(model)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    initial = np.empty((batch, mujoco.mj_stateSize(model, spec)))
    for i in range(batch):
        data.qpos[:] = np.asarray(state.data.qpos[i])
        data.qvel[:] = np.asarray(state.data.qvel[i])
        mujoco.mj_forward(model, data)
        mujoco.mj_getState(model, data, initial[i], spec)
    nstep = steps * env.n_substeps
    control = np.repeat(np.asarray(state.data.ctrl)[:, None, :], nstep, axis=1)
    nthread = native.default_nthread()
    datas = [mujoco.MjData(model) for _ in range(nthread)]
    times = []
    with mj_rollout.Rollout(nthread=nthread) as runner:
        for _ in range(repeats + 1):  # the first call is the warm-up
            t0 = time.perf_counter()
            qstate, _ = runner.rollout(model, datas, initial, control)
            times.append(time.perf_counter() - t0)
    dt = statistics.median(times[1:])
    return {
        "env": env_name,
        "impl": f"mujoco.rollout ({nthread} threads)",
        "batch": batch,
        "jit_reset_s": float("nan"),
        "jit_step_s": float("nan"),
        "env_steps_s": batch * steps / dt,
        "physics_steps_s": batch * nstep / dt,
        "finite": bool(np.all(np.isfinite(qstate))),
    }


def _print_row(r: dict) -> None:
    flag = "" if r["finite"] else " (NaN!)"
    impl = r["impl"]
    if impl == "native":
        impl += f" ({native.default_nthread()} threads)"
    jit = [f"{r[k]:.1f}" if r[k] == r[k] else "-" for k in ("jit_reset_s", "jit_step_s")]
    print(
        f"| {r['env']} | {impl} | {r['batch']} | {jit[0]} | {jit[1]} | "
        f"{r['env_steps_s']:,.0f}{flag} | {r['physics_steps_s']:,.0f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
