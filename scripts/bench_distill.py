"""Our DAgger against brax's behaviour cloning (`brax.training.agents.bc`) on the same budget.

    python scripts/bench_distill.py --teacher logs/FrankaReach-<ts>/policy.safetensors

Both distil the same teacher into a pixel student on the same vision task, with the same number
of parallel envs, env steps (iterations x envs x unroll), gradient samples (updates x batch) and
beta schedule (beta_decay ** iteration). Both students are then evaluated on the same held-out
starts as the teacher, and a table is printed.

What differs is each method's own design: ours aggregates every labelled sample in a replay
buffer and samples minibatches from all of it, starts its RGB encoder from the CIFAR-pretrained
NatureCNN and adds the object-pose head; brax's fits each iteration's fresh rollout only, with a
randomly initialised NatureCNN-shaped CNN (flattened, not pooled, as ours) and an observation
normaliser on the proprioception. Brax runs its epochs inside `lax.scan`, which XLA on a CPU
executes slowly for convolutions (see playground/training/dagger.py), so its wall time on a CPU
says little; compare success.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import playground  # noqa: F401  (XLA flags, compilation cache, headless rendering)
from playground import cli_checks, registry
from playground.envs.base import State
from playground.envs.wrappers import Wrapper, wrap_for_brax_training
from playground.files import policy_file
from playground.training import dagger, distill
from playground.training.evaluate import HELD_OUT_SEED_OFFSET, make_evaluator
from playground.training.ppo import bind_randomizer
from playground.training.run_files import parse_overrides, tuples


def to_brax(obs: dict) -> dict:
    """Our camera observations renamed as brax's vision networks read them: one float image
    `pixels/view_<i>` [..., H, W, 3] in [0, 1] per camera, plus `proprio` and the teacher's
    `state` (any leading batch axes are kept)."""
    out = {"proprio": obs["proprio"], "state": obs["state"]}
    for i in range(obs["rgb"].shape[-4]):
        out[f"pixels/view_{i}"] = obs["rgb"][..., i, :, :, :].astype(jnp.float32) / 255.0
    return out


class PixelsAsBrax(Wrapper):
    """The batched training env with `to_brax` observations. It sits outside the batch wrapper
    (which steps the unwrapped env) and keeps our observations in `info` for the inner step."""

    @staticmethod
    def _outer(state: State) -> State:
        return state.replace(obs=to_brax(state.obs), info={**state.info, "raw_obs": state.obs})

    def reset(self, rng: jax.Array) -> State:
        return self._outer(self.env.reset(rng))

    def step(self, state: State, action: jax.Array) -> State:
        info = {k: v for k, v in state.info.items() if k != "raw_obs"}
        inner = state.replace(obs=state.info["raw_obs"], info=info)
        return self._outer(self.env.step(inner, action))


def brax_bc_student(env, teacher, cfg, args, randomizer):
    """Trains brax's BC student; returns (make_policy, params, wall seconds)."""
    from brax.training import distribution, networks
    from brax.training.agents.bc import networks as bc_networks
    from brax.training.agents.bc import train as bc_train

    def network_factory(obs_size, action_size, preprocess_observations_fn):
        dist = distribution.NormalTanhDistribution(event_size=action_size)
        policy = networks.make_policy_network_vision(
            observation_size={k: v for k, v in obs_size.items() if k != "state"},
            output_size=dist.param_size,
            preprocess_observations_fn=preprocess_observations_fn,
            hidden_layer_sizes=tuple(cfg.hidden),
            state_obs_key="proprio",
            cnn_global_pool="none",
        )
        return bc_networks.BCNetworks(policy_network=policy, parametric_action_distribution=dist)

    def teacher_fn(obs, key):
        keys = jax.random.split(jax.random.PRNGKey(0), obs["state"].shape[0])
        action = jax.vmap(teacher)(obs, keys)
        # brax's BC loss compares tanh(loc): hand it the teacher's pre-squash mean.
        return action, {"loc": jnp.arctanh(jnp.clip(action, -1 + 1e-6, 1 - 1e-6))}

    samples = cfg.num_envs * cfg.unroll_length
    randomizer = bind_randomizer(randomizer, jax.random.PRNGKey(args.seed), cfg.num_envs)
    wrapped = PixelsAsBrax(wrap_for_brax_training(env, cfg.episode_length, 1, randomizer))
    t0 = time.perf_counter()
    make_policy, params, _ = bc_train.train(
        demo_length=cfg.unroll_length,
        teacher_inference_fn=teacher_fn,
        epochs=max(1, round(cfg.updates_per_iteration * cfg.batch_size / samples)),
        env=wrapped,
        num_envs=cfg.num_envs,
        batch_size=cfg.batch_size,
        network_factory=network_factory,
        seed=args.seed,
        learning_rate=cfg.learning_rate,
        dagger_steps=args.iterations,
        dagger_beta_fn=lambda step: jnp.asarray(cfg.beta_decay, jnp.float32) ** step,
        augment_pixels=cfg.augment_shift_px > 0,
    )
    return make_policy, params, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = cli_checks.ArgumentParser(prog="bench_distill.py", description=__doc__.split("\n\n")[0])
    # The Franka reach student, whose teacher trains in minutes on a CPU (the Aloha student's
    # composite teacher is not a single policy file brax's BC could take).
    p.add_argument("--env-name", default="FrankaReachStereo")
    p.add_argument(
        "--teacher", default=None, help="default: newest logs/<twin>-*/policy.safetensors"
    )
    p.add_argument("--logdir", default="logs")
    p.add_argument("--iterations", type=cli_checks.positive_int, default=20)
    p.add_argument("--num-eval-envs", type=cli_checks.positive_int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--domain-randomization", action="store_true")
    p.add_argument("--env-config", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--dagger", action="append", default=[], metavar="KEY=VALUE", help="DAgger config field"
    )
    args = p.parse_args(argv)

    # Every check before the env is built: a bad value would otherwise fail after it compiled.
    try:
        distill.check_vision_env(args.env_name, "--env-name")
        overrides = parse_overrides(args.env_config, "--env-config")
        cfg = distill.dagger_config(args.dagger)
        teacher_path = args.teacher or distill.find_teacher(
            args.logdir, registry.get_env_class(args.env_name).TEACHER_ENV
        )
        if not Path(teacher_path).is_file():
            raise cli_checks.UsageError(f"--teacher {teacher_path} does not exist.")
    except (ValueError, KeyError, FileNotFoundError, policy_file.PolicyFileError) as e:
        cli_checks.exit_usage(p, e)
    if args.domain_randomization:
        overrides["vision.visual_dr.enabled"] = True
    env = registry.load(args.env_name, config_overrides=tuples(overrides) or None)
    randomizer = (
        registry.get_domain_randomizer(args.env_name, env.config)
        if args.domain_randomization
        else None
    )
    try:
        teacher = distill.load_teacher(teacher_path, env)
    except (FileNotFoundError, policy_file.PolicyFileError) as e:
        cli_checks.exit_usage(p, e)
    eval_key = jax.random.PRNGKey(args.seed + HELD_OUT_SEED_OFFSET)

    def success(eval_env, make_policy, params) -> float:
        evaluate = make_evaluator(
            eval_env,
            make_policy,
            args.num_eval_envs,
            cfg.episode_length,
            1,
            bind_randomizer(randomizer, eval_key, args.num_eval_envs),
        )
        return float(evaluate(params, eval_key)["eval/success_rate"])

    rows = []
    teacher_success = success(
        env, lambda _, deterministic=True: lambda o, k: (teacher(o, k), {}), None
    )
    rows.append(("teacher (state)", teacher_success, float("nan")))

    student = distill.make_student(env, cfg)
    k_init, k_run = jax.random.split(jax.random.PRNGKey(args.seed))
    params, _ = distill.init_student_params(student, env, k_init, str(distill.DEFAULT_ENCODER))
    train_dr = bind_randomizer(randomizer, jax.random.PRNGKey(args.seed), cfg.num_envs)
    loop = dagger.Dagger(env, teacher, student, cfg, type(env).POSE_BODY, train_dr)
    t0 = time.perf_counter()
    state = loop.init(k_run, params)
    for _ in range(args.iterations):
        state, metrics = loop.iterate(state)
    jax.block_until_ready(metrics)
    ours_seconds = time.perf_counter() - t0

    def make_ours(p, deterministic=True):
        return lambda obs, rng: (student.apply(p, {k: obs[k] for k in loop.keys})[0], {})

    rows.append(("ours: DAgger", success(env, make_ours, state.params), ours_seconds))

    make_bc, bc_params, bc_seconds = brax_bc_student(env, teacher, cfg, args, randomizer)

    def make_brax(p, deterministic=True):
        policy = make_bc(p)
        return lambda obs, rng: policy(to_brax(obs), rng)

    rows.append(("brax.training.agents.bc", success(env, make_brax, bc_params), bc_seconds))

    steps = args.iterations * cfg.num_envs * cfg.unroll_length
    print(
        f"\n{args.env_name}, teacher {teacher_path}\n{args.iterations} iterations x "
        f"{cfg.num_envs} envs x {cfg.unroll_length} steps = {steps:,} env steps; "
        f"{cfg.updates_per_iteration} x {cfg.batch_size} gradient samples per iteration; "
        f"{args.num_eval_envs} held-out episodes; device {jax.devices()[0].platform}\n"
    )
    print(f"| {'student':<26} | success | wall s (incl. compile) |")
    print(f"|{'-' * 28}|---------|-----------------------|")
    for name, rate, seconds in rows:
        wall = "" if np.isnan(seconds) else f"{seconds:.0f}"
        print(f"| {name:<26} | {rate:>6.0%}  | {wall:>21} |")


if __name__ == "__main__":
    main()
