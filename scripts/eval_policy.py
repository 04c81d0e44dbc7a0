"""Success rate of a teacher or student policy file on fresh held-out starts, with a 95% interval.

    python scripts/eval_policy.py params/aloha_s2r_pick_native/policy.safetensors --episodes 512
    python scripts/eval_policy.py params/aloha_s2r_student_native/student.safetensors --seed 7

    python scripts/eval_policy.py params/aloha_s2r_peg_insertion_native/policy.safetensors \
        --pick_policy params/aloha_s2r_pick_native/policy.safetensors --episodes 1024

The env, its config (physics impl included) and domain randomisation come from the policy file's
run config unless flags override them (`--env_config KEY=VALUE`, repeatable). With
`--pick_policy`, an AlohaS2RPegInsertion teacher is evaluated on the whole task from the table:
that AlohaS2RPick policy lifts both objects (each arm in its own frame), then the insertion
policy takes over (`phase1="policy"`, `episode_length` 160); "lifted" counts the episodes where
both objects were picked. A student file (experimental/train_dagger.py) is evaluated together
with its teacher (the files its run config names; the composite one for the whole Aloha task) on
the same starts and randomised models, and the student's success is also given as a share of
the teacher's. Starts and randomised models are drawn from `--seed`, far
from the seeds the trainer uses (its training envs and its own held-out evaluation), so the figure
is independent of any choice made on the trainer's evaluations.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from playground import cli_checks, registry  # noqa: E402
from playground.deploy.export_cli import load_env  # noqa: E402
from playground.envs.aloha import composite, peg_insertion  # noqa: E402
from playground.files import atomic, policy_file  # noqa: E402
from playground.training import evaluate, run_files  # noqa: E402
from playground.training.ppo import bind_randomizer  # noqa: E402

# Not a trainer seed: training draws from seed and seed + 7, its evaluation from seed + 1,000,003.
DEFAULT_SEED = 20_261_122


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% score interval of a binomial rate (sane at 0% and 100%, unlike p +- 2 sigma)."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def is_student(payload: dict[str, Any]) -> bool:
    return payload.get("format") == policy_file.STUDENT_FORMAT


def teacher_of(payload: dict[str, Any]) -> dict[str, Any]:
    """A student's teacher, as its run config names it (`teacher`, and `pick_teacher` for the
    whole Aloha task), as a payload `policy_of` takes."""
    config = payload["extra"].get("config", {})
    return {"teacher_of": payload, "teacher": config["teacher"], "pick": config.get("pick_teacher")}


def policy_of(payload: dict[str, Any], env) -> Callable[[Any, Any], Any]:
    """The deterministic policy `fn(obs, key)` for one observation of a teacher file, a student
    file, or a student's teacher (`teacher_of`)."""
    if "teacher_of" in payload:
        from playground.training.dagger_run import load_teacher

        return load_teacher(payload["teacher"], env, payload["pick"] or "")
    if is_student(payload):
        return policy_file.make_student_fn(payload)
    return policy_file.make_policy_fn(payload)


def run_episodes(
    payload: dict[str, Any],
    episodes: int,
    seed: int,
    make_record: Callable[[Any], Callable[[Any], Any]],
    impl: str | None = None,
    domain_randomization: bool | None = None,
    env_overrides: dict[str, Any] | None = None,
) -> tuple[Any, bool, Callable[[], Any]]:
    """(env, domain_randomization, run) for `payload`'s run. `run() -> (metrics, recorded)` plays
    `episodes` deterministic episodes (one per env, in one batch) from the starts and randomised
    models of `seed`, recording `make_record(env)(state)` after every step."""
    source = payload.get("teacher_of", payload)
    run_config = source["extra"].get("config", {})
    name = source["env_name"]
    saved_env = dict(run_config.get("env", {}))
    if impl is not None:
        saved_env["impl"] = impl
    env = load_env(name, saved_env, env_overrides)
    if domain_randomization is None:
        domain_randomization = bool(run_config.get("domain_randomization", False))
    randomizer = None
    k_model, k_starts = jax.random.split(jax.random.PRNGKey(seed))
    if domain_randomization:
        randomizer = bind_randomizer(
            registry.get_domain_randomizer(name, env.config), k_model, episodes
        )
    one = policy_of(payload, env)

    def policy(obs, key):
        # One observation at a time: the composite teacher indexes its arms.
        n = jax.tree_util.tree_leaves(obs)[0].shape[0]
        return jax.vmap(one)(obs, jax.random.split(key, n))

    evaluator = evaluate.make_evaluator(
        env,
        lambda params, deterministic: lambda obs, key: (policy(obs, key), {}),
        episodes,
        env.config.episode_length,
        randomization_fn=randomizer,
        record=make_record(env),
    )
    return env, domain_randomization, lambda: evaluator(None, k_starts)


def evaluate_policy(
    payload: dict[str, Any],
    episodes: int,
    seed: int = DEFAULT_SEED,
    impl: str | None = None,
    domain_randomization: bool | None = None,
    env_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Runs `episodes` deterministic episodes (one per env, in one batch)."""
    env, domain_randomization, run = run_episodes(
        payload,
        episodes,
        seed,
        lambda env: (
            lambda state: (
                state.metrics["success"],
                state.done,
                state.info.get("has_switched", state.done),
            )
        ),
        impl,
        domain_randomization,
        env_overrides,
    )
    name = payload.get("teacher_of", payload)["env_name"]
    t0 = time.perf_counter()
    metrics, (success, done, switched) = run()
    metrics = {k: float(v) for k, v in metrics.items()}
    successes = round(metrics["eval/success_rate"] * episodes)
    # A failure either never reached the goal or lost it (a dropped object) before the end.
    # Steps after an episode's end belong to the auto-reset next episode: not counted.
    success, done = np.asarray(success), np.asarray(done)
    in_episode = (np.cumsum(done, axis=0) - done) == 0
    reached = int(np.sum(np.any((success > 0) & in_episode, axis=0)))
    low, high = wilson_interval(successes, episodes)
    extra = {}
    if env.config.get("phase1", "lifted") != "lifted":
        extra["lifted_both"] = int(np.sum(np.any((np.asarray(switched) > 0) & in_episode, axis=0)))
    return {
        "env_name": name,
        "impl": env.config.impl,
        "domain_randomization": domain_randomization,
        "episodes": episodes,
        "seed": seed,
        "successes": successes,
        "success_rate": successes / episodes,
        "success_95ci": [low, high],
        "reached_goal_at_some_step": reached,
        "episode_reward": metrics["eval/episode_reward"],
        "env_overrides": dict(env_overrides or {}),
        **extra,
        "seconds": time.perf_counter() - t0,
    }


def summary_line(result: dict[str, Any], who: str = "") -> str:
    low, high = result["success_95ci"]
    dr = result["domain_randomization"]
    return (
        f"{who}{result['env_name']} ({result['impl']}, DR {'on' if dr else 'off'}): "
        f"{result['successes']}/{result['episodes']} = {result['success_rate']:.1%} success "
        f"(95% CI {low:.1%} to {high:.1%}); {result['reached_goal_at_some_step']} reached the goal "
        f"at some step; "
        + (f"{result['lifted_both']} lifted both objects; " if "lifted_both" in result else "")
        + f"mean return {result['episode_reward']:.1f}; "
        f"{result['seconds']:.0f} s with compilation"
    )


def main(argv: list[str] | None = None) -> int:
    p = cli_checks.ArgumentParser(
        prog="eval_policy.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "policy",
        type=Path,
        help="a teacher policy file (policy.safetensors) or a student file (student.safetensors)",
    )
    p.add_argument("--episodes", type=cli_checks.positive_int, default=256)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--impl", choices=("jax", "warp", "native"), default=None)
    cli_checks.add_bool(
        p, "domain_randomization", None, "randomise physics (default: as the policy was trained)"
    )
    p.add_argument(
        "--env_config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the env config the policy was trained with (repeatable)",
    )
    p.add_argument(
        "--pick_policy",
        type=Path,
        default=None,
        help="AlohaS2RPick policy: evaluate an insertion teacher on the whole task",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = p.parse_args(argv)
    try:
        if args.json:
            # Checked now: the result is written only after every episode has run.
            cli_checks.check_writable_file(args.json, "--json")
        overrides = run_files.parse_overrides(args.env_config, "--env_config")
        if args.pick_policy is not None:
            _, payload = composite.read(args.pick_policy, args.policy)
            overrides = {
                "phase1": "policy",
                "pick_policy_path": str(args.pick_policy),
                "episode_length": peg_insertion.WHOLE_TASK_EPISODE_LENGTH,
                **overrides,
            }
        else:
            payload = policy_file.read_any(args.policy)
    except (
        FileNotFoundError,
        policy_file.PolicyFileError,
        cli_checks.UsageError,
        ValueError,
    ) as e:
        p.exit(2, f"eval_policy.py: error: {e}\n")
    args_eval = (args.episodes, args.seed, args.impl, args.domain_randomization, overrides)
    try:
        result = evaluate_policy(payload, *args_eval)
        print(summary_line(result, "student: " if is_student(payload) else ""))
        if is_student(payload):
            teacher = evaluate_policy(teacher_of(payload), *args_eval)
            print(summary_line(teacher, "teacher: "))
            result["teacher"] = teacher
            if teacher["success_rate"] > 0:
                result["student_to_teacher"] = result["success_rate"] / teacher["success_rate"]
                print(f"student / teacher success: {result['student_to_teacher']:.1%}")
    except (cli_checks.UsageError, FileNotFoundError, policy_file.PolicyFileError) as e:
        # A config key the task lacks, a student's teacher gone or wrong; bugs keep tracebacks.
        cli_checks.exit_usage(p, e)
    result["command"] = " ".join(["python scripts/eval_policy.py", *(argv or sys.argv[1:])])
    if args.json:
        atomic.write_text(args.json, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
