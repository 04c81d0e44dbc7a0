"""How often the scripted grasp succeeds in FrankaGrasp or FrankaLift, and how it fails.

    python scripts/scripted_grasp.py --env FrankaGrasp --impl native --domain_randomization
    python scripts/scripted_grasp.py --env FrankaLift --impl jax --starts 32 --seed 8

Runs `playground/envs/franka/scripted.py` (an oracle that reads the simulator state and acts
through the env's own actions) from `--starts` starts for one episode each. The starts use reset
seed `--seed`; domain randomisation, when on, uses seed `--seed + 100`. Prints the success
count and one line per failed start with its kind:
- `never closed`: the fingers never closed (the hand did not get to the box);
- `knocked`: the box moved more than 2 cm on the table before the grasp;
- `missed`: the fingers closed but never held the box;
- `dropped`: the box was held, then lost;
- `held low`: still held at the end, below the success height (FrankaGrasp).
docs/tasks.md has the counts measured with it.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import playground  # noqa: F401  (XLA flags + compilation cache before jax starts)
from playground import cli_checks, registry, runtime
from playground.envs.franka import scripted
from playground.envs.wrappers import BatchEnv

TASKS = ("FrankaGrasp", "FrankaLift")
IMPLS = ("jax", "warp", "native")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = cli_checks.ArgumentParser(
        prog="scripted_grasp.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--env", default="FrankaGrasp", choices=TASKS)
    p.add_argument("--impl", default="native", choices=IMPLS, help="physics implementation")
    p.add_argument(
        "--domain_randomization",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="randomise box size and mass, friction and arm gains per start",
    )
    p.add_argument(
        "--starts", type=cli_checks.positive_int, default=32, help="starts (envs in one batch)"
    )
    p.add_argument("--seed", type=int, default=7, help="reset seed")
    return p.parse_args(argv)


def run(
    name: str, impl: str, domain_randomization: bool, starts: int, seed: int
) -> dict[str, np.ndarray]:
    """Per-start outcome arrays `[starts]`: success and the flags the failure kinds come from."""
    env = registry.load(name, config_overrides={"impl": impl})
    randomizer = None
    if domain_randomization:
        sample = registry.get_domain_randomizer(name, env.config)
        randomizer = functools.partial(
            sample, rng=jax.random.split(jax.random.PRNGKey(seed + 100), starts)
        )
    batch = BatchEnv(env, randomizer)
    lift = name == "FrankaLift"
    lift_to = jnp.array([0.0, 0.0, env.config.get("lift_height_m", 0.0) + 0.06])

    def carry_to(state):
        return state.info["goal"] if lift else state.info["box_start"] + lift_to

    @jax.jit
    def step(state):
        action = jax.vmap(lambda s, t: scripted.grasp_action(env, s, t))(state, carry_to(state))
        state = batch.step(state, action)

        def probe(s):
            box, _ = env.box_pose(s.data)
            closed = s.data.ctrl[env.panda.gripper_actuator] < 0.5 * scripted.cfg_open(env)
            return {
                "closed": closed,
                "held": env.is_grasped(s.data) > 0,
                "moved_m": jnp.linalg.norm(box[:2] - s.info["box_start"][:2]),
            }

        return state, jax.vmap(probe)(state)

    state = jax.jit(batch.reset)(jax.random.split(jax.random.PRNGKey(seed), starts))
    success = np.zeros(starts, bool)
    ever_closed = np.zeros(starts, bool)
    ever_held = np.zeros(starts, bool)
    knocked = np.zeros(starts, bool)
    done = np.zeros(starts, bool)
    for _ in range(env.config.episode_length):
        state, probe = step(state)
        live = ~done
        closed, held = np.asarray(probe["closed"]), np.asarray(probe["held"])
        knocked |= live & ~ever_closed & (np.asarray(probe["moved_m"]) > 0.02)
        ever_closed |= live & closed
        ever_held |= live & held
        ok = np.asarray(state.metrics["success"]) > 0
        # FrankaLift's success ends its episode; FrankaGrasp's counts at the last step.
        success = success | (live & ok) if lift else np.where(live, ok, success)
        done |= np.asarray(state.done) > 0
        if done.all():
            break
    return {
        "success": success,
        "ever_closed": ever_closed,
        "ever_held": ever_held,
        "held_at_end": np.asarray(probe["held"]),
        "knocked": knocked,
    }


def failure_kind(out: dict[str, np.ndarray], i: int) -> str:
    if not out["ever_closed"][i]:
        return "never closed"
    if out["knocked"][i]:
        return "knocked"
    if not out["ever_held"][i]:
        return "missed"
    return "held low" if out["held_at_end"][i] else "dropped"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    out = run(args.env, args.impl, args.domain_randomization, args.starts, args.seed)
    dr = "on" if args.domain_randomization else "off"
    print(
        f"{args.env} impl={args.impl} domain randomisation {dr} seed {args.seed}: "
        f"{int(out['success'].sum())}/{args.starts} succeeded "
        f"({time.perf_counter() - t0:.0f} s with compilation; {runtime.cpu_description()})"
    )
    for i in np.flatnonzero(~out["success"]):
        print(f"  start {i}: {failure_kind(out, int(i))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
