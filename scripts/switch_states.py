"""States where a pick policy has just lifted both objects: starts for the insertion teacher.

    python scripts/switch_states.py --pick_policy params/aloha_s2r_pick_native/policy.safetensors \
        --episodes 2048 --seed 3 --out params/aloha_s2r_peg_insertion_native/switch_states.npz

Runs AlohaS2RPegInsertion with `phase1="policy"` (objects on the table, the pick policy driving
each arm; physics randomised unless `--nodomain_randomization`) and keeps each episode's state at
the step where both objects first rose above `switch_height_m`, as `.npz` (`playground/files/
state_bank.py`). Train with `--env_config switch_states_path=<out>`. Episodes that never lift
both objects within `--max_steps` are left out and counted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from playground import cli_checks, registry  # noqa: E402
from playground.envs.wrappers import wrap_for_brax_training  # noqa: E402
from playground.files import policy_file, state_bank  # noqa: E402
from playground.training.ppo import bind_randomizer  # noqa: E402

ENV = "AlohaS2RPegInsertion"


def collect(
    pick_policy: str,
    episodes: int,
    seed: int,
    max_steps: int = 80,
    impl: str = "native",
    domain_randomization: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """({"qpos", "qvel", "ctrl"} of the switch states, stats), one row per episode that lifted."""
    env = registry.load(
        ENV,
        config_overrides={
            "phase1": "policy",
            "pick_policy_path": str(pick_policy),
            "impl": impl,
            "episode_length": max_steps + 1,
        },
    )
    k_model, k_starts = jax.random.split(jax.random.PRNGKey(seed))
    randomizer = None
    if domain_randomization:
        randomizer = bind_randomizer(
            registry.get_domain_randomizer(ENV, env.config), k_model, episodes
        )
    wrapped = wrap_for_brax_training(env, max_steps + 1, 1, randomizer)
    reset = jax.jit(wrapped.reset)
    step = jax.jit(wrapped.step)
    state = reset(jax.random.split(k_starts, episodes))
    idle = jnp.zeros((episodes, env.action_size))  # ignored before the switch
    nq, nv, nu = env.mj_model.nq, env.mj_model.nv, env.mj_model.nu
    out = {
        "qpos": np.zeros((episodes, nq), np.float32),
        "qvel": np.zeros((episodes, nv), np.float32),
        "ctrl": np.zeros((episodes, nu), np.float32),
    }
    switched_at = np.full(episodes, -1)
    ended = np.zeros(episodes, bool)
    for t in range(max_steps):
        state = step(state, idle)
        switched = np.asarray(state.info["has_switched"]) > 0
        done = np.asarray(state.done) > 0
        new = switched & (switched_at < 0) & ~ended
        if new.any():
            for k in out:
                out[k][new] = np.asarray(getattr(state.data, k))[new]
            switched_at[new] = t + 1
        ended |= done & (switched_at < 0)
        if np.all((switched_at >= 0) | ended):
            break
    keep = switched_at >= 0
    steps = switched_at[keep]
    stats = {
        "episodes": episodes,
        "switched": int(keep.sum()),
        "median_switch_step": float(np.median(steps)) if keep.any() else float("nan"),
        "p99_switch_step": float(np.percentile(steps, 99)) if keep.any() else float("nan"),
    }
    return {k: v[keep] for k, v in out.items()}, stats


def build_parser() -> argparse.ArgumentParser:
    p = cli_checks.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pick_policy", required=True, help="AlohaS2RPick .safetensors policy file")
    p.add_argument("--episodes", type=cli_checks.positive_int, default=2048)
    p.add_argument("--seed", type=int, default=3, help="starts and randomised models (default 3)")
    p.add_argument("--max_steps", type=cli_checks.positive_int, default=80)
    p.add_argument("--impl", choices=("native", "jax"), default="native")
    cli_checks.add_bool(
        p, "domain_randomization", True, "randomise physics per episode as in training (default)"
    )
    p.add_argument("--out", required=True, help="where to write the .npz state bank")
    return p


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = build_parser()
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        cli_checks.check_writable_file(args.out, "--out")
        policy_file.read_policy(args.pick_policy, env_name="AlohaS2RPick")
        states, stats = collect(
            args.pick_policy,
            args.episodes,
            args.seed,
            args.max_steps,
            args.impl,
            args.domain_randomization,
        )
    except (FileNotFoundError, policy_file.PolicyFileError, cli_checks.UsageError) as e:
        cli_checks.exit_usage(parser, e)
    if stats["switched"] == 0:
        raise SystemExit(f"the pick policy lifted both objects in none of {args.episodes} episodes")
    meta = {
        "env_name": ENV,
        "pick_policy": str(args.pick_policy),
        "command": " ".join(["scripts/switch_states.py", *(argv or sys.argv[1:])]),
        **stats,
    }
    state_bank.save(args.out, states["qpos"], states["qvel"], states["ctrl"], meta)
    stats["seconds"] = round(time.perf_counter() - t0, 1)
    print(
        f"{stats['switched']}/{args.episodes} episodes lifted both objects (median step "
        f"{stats['median_switch_step']:.0f}, p99 {stats['p99_switch_step']:.0f}); wrote "
        f"{args.out} in {stats['seconds']} s"
    )
    return stats


if __name__ == "__main__":
    main()
