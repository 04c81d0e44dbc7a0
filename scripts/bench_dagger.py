"""Where a DAgger iteration's time goes, for today's loop and the task's own, side by side.

    python scripts/bench_dagger.py                       # AlohaS2RPegInsertionDistill, native
    python scripts/bench_dagger.py --env-name FrankaGraspStereo --impl jax

For each loop (a row set): the loop's real settings, built as experimental/train_dagger.py builds
them, then
- the whole iteration as the run's `steady_iteration_seconds` counts it (median of
  `--iterations` after one warm-up), split into collection and updates, giving **collected env
  steps/s** (env steps per iteration / iteration seconds) and **gradient samples/s** (updates x
  batch / update seconds);
- the collection's parts, each a jitted call on one step's batch, timed alone and multiplied by
  the steps per iteration: the env step's physics (with the episode and auto-reset wrappers),
  its rendering (cameras and depth noise), the teacher's labels, the student's action (its
  encoder included) and the buffer write. Alone, they add up to less than the collection when
  it runs them fused, or more when XLA runs them in a loop (`rollout="scan"`).

"today" is `dagger.default_config()` (the pixel student: the loop before the latent student);
"task" is `dagger.task_config(env)`, what a run uses, with any `--dagger KEY=VALUE` set.
Without `--teacher` the task's shipped teacher is used where there is one, else a teacher
network of the right shape with random weights: its labels are meaningless, its cost is not.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

import playground  # noqa: F401  (XLA flags, compilation cache, headless rendering)
from playground import cli_checks, registry
from playground.networks.student import Student
from playground.training import dagger, dagger_run, distill, ppo, ppo_params
from playground.training.run_config import DEFAULT_ENCODER, SHIPPED_TEACHERS
from playground.training.run_files import parse_overrides, tuples

ROOT = Path(__file__).resolve().parents[1]


def random_teacher(env) -> Callable[[dict, jax.Array], jax.Array]:
    """The twin task's default teacher network with random weights (for timing only)."""
    from brax.training.acme import running_statistics
    from brax.training.agents.ppo import networks as ppo_networks

    twin = type(env).TEACHER_ENV
    net = ppo_params.ppo_config(twin).network
    obs = jax.eval_shape(env.reset, jax.random.PRNGKey(0)).obs
    sizes = {k: obs[k].shape for k in ("state", "privileged_state") if k in obs}
    if net.value_obs_key not in sizes:
        net = net.copy_and_resolve_references()
        net.value_obs_key = "state"
    networks = ppo.make_networks(sizes, env.action_size, net)
    spec = {k: jax.ShapeDtypeStruct(v, jnp.float32) for k, v in sizes.items()}
    params = (
        running_statistics.init_state(spec),
        networks.policy_network.init(jax.random.PRNGKey(1)),
    )
    inference = ppo_networks.make_inference_fn(networks)(params, deterministic=True)
    return lambda o, k: inference({key: o[key] for key in sizes}, k)[0]


def timed(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of `fn()` (blocked on), after one untimed call that compiles it."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def parts(loop: dagger.Dagger, state: dagger.DaggerState, repeats: int) -> dict[str, float]:
    """Seconds per iteration of each part of the collection, each timed alone."""
    cfg, env = loop.config, loop.env
    steps = cfg.unroll_length
    env_state = state.env_state
    obs = env_state.obs
    keys = jax.random.split(jax.random.PRNGKey(2), cfg.num_envs)
    action = jnp.zeros((cfg.num_envs, env.action_size))
    step = jax.jit(loop.wrapped.step)
    render = jax.jit(jax.vmap(lambda st, k: env._observe_pixels(st, st.info, k)))
    teacher = jax.jit(jax.vmap(loop.teacher))
    seen = {k: obs[k] for k in loop.keys}

    @jax.jit
    def act(params, seen):
        inputs = loop.student.apply(params, seen, method=Student.encode)
        return inputs, loop.student.apply(params, inputs, method=Student.head)[0]

    inputs, _ = act(state.params, seen)
    sample = {**inputs, "action": action, "pose": jnp.zeros((cfg.num_envs, 7))}

    # Donated, as in the loop: the write is in place, not a copy of the whole buffer.
    @functools.partial(jax.jit, donate_argnums=0)
    def write(buffer, count):
        idx = (count + jnp.arange(cfg.num_envs)) % cfg.buffer_size
        return {k: buffer[k].at[idx].set(sample[k].astype(buffer[k].dtype)) for k in buffer}

    holder = [jax.tree.map(jnp.copy, state.buffer)]

    def write_once():
        holder[0] = write(holder[0], state.buffer_count)
        return holder[0]

    env_step = timed(lambda: step(env_state, action), repeats)
    rendering = timed(lambda: render(env_state, keys), repeats)
    return {
        "physics": steps * max(env_step - rendering, 0.0),
        "rendering": steps * rendering,
        "teacher labels": steps * timed(lambda: teacher(obs, keys), repeats),
        "student action": steps * timed(lambda: act(state.params, seen), repeats),
        "buffer write": steps * timed(write_once, repeats),
    }


def whole(loop: dagger.Dagger, state, iterations: int) -> tuple[dict[str, float], Any]:
    """Median seconds of the collection, the updates and the iteration, after a warm-up."""
    cfg = loop.config
    collect, update = [], []
    for i in range(iterations + 1):
        t0 = time.perf_counter()
        state, metrics = loop.collect(state)
        jax.block_until_ready(state.buffer_count)
        t1 = time.perf_counter()
        for _ in range(cfg.updates_per_iteration // cfg.update_unroll):
            state, m = loop._update(state)
        jax.block_until_ready(m)
        t2 = time.perf_counter()
        if i > 0:  # the first compiles
            collect.append(t1 - t0)
            update.append(t2 - t1)
    c, u = statistics.median(collect), statistics.median(update)
    return {"collection": c, "updates": u, "iteration": c + u}, state


def bench(name: str, env, teacher, cfg, randomizer, args) -> dict[str, Any]:
    student = dagger_run.make_student(env, cfg)
    k_init, k_run = jax.random.split(jax.random.PRNGKey(args.seed))
    params, _ = dagger_run.init_student_params(student, env, k_init, str(DEFAULT_ENCODER))
    loop = dagger_run.make_loop(
        env, teacher, student, cfg, randomizer, jax.random.PRNGKey(args.seed)
    )
    state = loop.init(k_run, params)
    times, state = whole(loop, state, args.iterations)
    split = parts(loop, state, args.repeats)
    steps = cfg.num_envs * cfg.unroll_length
    samples = cfg.updates_per_iteration * cfg.batch_size
    return {
        "name": name,
        "settings": (
            f"{cfg.student} student, rollout {loop.rollout}, {cfg.num_envs} envs x "
            f"{cfg.unroll_length} steps, {cfg.updates_per_iteration} updates x {cfg.batch_size} "
            f"({samples / steps:.1f} gradient samples per env step)"
        ),
        **times,
        **split,
        "env_steps_per_s": steps / times["iteration"],
        "gradient_samples_per_s": samples / times["updates"],
        "student_params": sum(x.size for x in jax.tree.leaves(params)),
    }


def main(argv: list[str] | None = None) -> None:
    p = cli_checks.ArgumentParser(prog="bench_dagger.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--env-name", default="AlohaS2RPegInsertionDistill")
    p.add_argument("--impl", default="native", help="physics: jax, warp or native")
    p.add_argument("--teacher", default=None, help="teacher policy file (default: see above)")
    p.add_argument("--iterations", type=cli_checks.positive_int, default=3)
    p.add_argument("--repeats", type=cli_checks.positive_int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-today", action="store_true", help="only the task's own loop")
    p.add_argument("--env-config", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--dagger",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the task's loop config (e.g. rollout=steps, student=latent)",
    )
    args = p.parse_args(argv)
    try:
        distill.check_vision_env(args.env_name, "--env-name")
        overrides = parse_overrides(args.env_config, "--env-config")
        task = distill.dagger_config(args.dagger, args.env_name)
    except (ValueError, KeyError) as e:
        cli_checks.exit_usage(p, e)
    overrides["impl"] = args.impl
    overrides["vision.visual_dr.enabled"] = True
    env = registry.load(args.env_name, config_overrides=tuples(overrides))
    randomizer = registry.get_domain_randomizer(args.env_name, env.config)
    twin = type(env).TEACHER_ENV
    path = args.teacher or SHIPPED_TEACHERS.get(twin)
    # The whole Aloha task from the table: the composite teacher, as a run uses.
    pick = SHIPPED_TEACHERS.get(getattr(type(env), "PICK_TEACHER_ENV", ""))
    pick = pick if path and pick and "pick_state" in env.observation_size else ""
    teacher = dagger_run.load_teacher(path, env, pick) if path else random_teacher(env)
    source = str(path) if path else f"random weights of the {twin} network"
    if pick:
        source = f"composite (pick {pick}, then {source})"

    today = dagger.default_config()
    loops = [] if args.no_today else [("today", today)]
    loops.append(("task", task))
    rows = [bench(name, env, teacher, cfg, randomizer, args) for name, cfg in loops]

    print(
        f"\n{args.env_name}, impl {args.impl}, domain randomisation on; teacher {source}; "
        f"device {jax.devices()[0].platform}, {jax.device_count()} device(s)"
    )
    for r in rows:
        print(f"- {r['name']}: {r['settings']}; {r['student_params']:,} student params")
    names = [r["name"] for r in rows]
    print(f"\n| seconds per iteration | {' | '.join(names)} |")
    print(f"|---|{'---|' * len(rows)}")
    for key in (
        "physics",
        "rendering",
        "teacher labels",
        "student action",
        "buffer write",
        "collection",
        "updates",
        "iteration",
    ):
        label = f"**{key}**" if key in ("collection", "iteration") else key
        print(f"| {label} | {' | '.join(f'{r[key]:.3f}' for r in rows)} |")
    for key, label in (
        ("env_steps_per_s", "collected env steps/s"),
        ("gradient_samples_per_s", "gradient samples/s"),
    ):
        print(f"| **{label}** | {' | '.join(f'{r[key]:,.0f}' for r in rows)} |")
    if len(rows) == 2:
        a, b = rows
        steps = b["env_steps_per_s"] / a["env_steps_per_s"]
        grads = b["gradient_samples_per_s"] / a["gradient_samples_per_s"]
        print(f"\nratio task / today: env steps/s x{steps:.1f}, gradient samples/s x{grads:.1f}")


if __name__ == "__main__":
    main()
