"""Why an AlohaS2RPick policy fails: each failed episode sorted by the block's state at its end.

    python scripts/pick_failures.py params/aloha_s2r_pick_native/policy.safetensors --episodes 256

Runs the same deterministic episodes as `scripts/eval_policy.py` (same `--seed`, same starts and
randomised models) and prints, for the failures, how many ended
- near the target but tilted: within `success.pos_tol_m` of it, more than `success.tilt_tol_rad`
  from level (a block that pivoted in the fingers);
- away from the target after reaching it at some step (dropped, slipped or carried off);
- without ever reaching it;
- by termination (the block left the table or the physics diverged).
The end state is read one control step before the episode's last, because the auto-reset replaces
the last step's physics state with the next episode's start.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from playground import cli_checks  # noqa: E402
from playground.files import policy_file  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_policy import DEFAULT_SEED, run_episodes  # noqa: E402


def classify(payload: dict, episodes: int, seed: int = DEFAULT_SEED) -> dict[str, int]:
    """Counts of successes and of each kind of failure over `episodes` episodes."""
    if payload["env_name"] != "AlohaS2RPick":
        raise ValueError(f"pick_failures reads AlohaS2RPick policies, not {payload['env_name']}")

    def make_record(env):
        block = env.block.body

        def record(state):
            data = state.data
            dist = jnp.linalg.norm(data.xpos[:, block] - state.info["target_pos"], axis=-1)
            return dict(
                dist=dist,
                tilt=jax.vmap(env.block_tilt)(data),
                success=state.metrics["success"],
                done=state.done,
                truncation=state.info["truncation"],
            )

        return record

    env, _, run = run_episodes(payload, episodes, seed, make_record)
    _, rec = run()
    tol = env.config.success
    return count_outcomes(jax.tree.map(np.asarray, rec), tol.pos_tol_m, tol.tilt_tol_rad)


def count_outcomes(rec: dict[str, np.ndarray], pos_tol: float, tilt_tol: float) -> dict[str, int]:
    """Sorts recorded episodes (`dist`, `tilt`, `success`, `done`, `truncation`, each
    [steps, episodes], one row per control step) into success and the kinds of failure."""
    episodes = rec["done"].shape[1]
    cols = np.arange(episodes)
    end = np.argmax(rec["done"] > 0, axis=0)  # every episode ends within episode_length
    before = np.maximum(end - 1, 0)
    success = rec["success"][end, cols] > 0
    terminated = (rec["done"][end, cols] > 0) & (rec["truncation"][end, cols] == 0)
    near = rec["dist"][before, cols] < pos_tol
    tilted = rec["tilt"][before, cols] >= tilt_tol
    steps = np.arange(rec["done"].shape[0])[:, None]
    reached = ((rec["success"] > 0) & (steps < end[None, :])).any(axis=0) | success
    fail = ~success
    return {
        "episodes": episodes,
        "successes": int(success.sum()),
        "near_target_but_tilted": int((fail & ~terminated & near & tilted).sum()),
        "near_target_level": int((fail & ~terminated & near & ~tilted).sum()),
        "away_after_reaching": int((fail & ~terminated & ~near & reached).sum()),
        "never_reached": int((fail & ~terminated & ~near & ~reached).sum()),
        "terminated": int((fail & terminated).sum()),
    }


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = cli_checks.ArgumentParser(
        prog="pick_failures.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("policy", help="policy file (policy.safetensors)")
    parser.add_argument("--episodes", type=cli_checks.positive_int, default=256)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    try:
        payload = policy_file.read_policy(args.policy, "AlohaS2RPick")
    except (FileNotFoundError, policy_file.PolicyFileError) as e:
        parser.exit(2, f"pick_failures.py: error: {e}\n")
    counts = classify(payload, args.episodes, args.seed)
    width = max(len(k) for k in counts)
    for key, value in counts.items():
        print(f"{key:<{width}}  {value}")
    return counts


if __name__ == "__main__":
    main()
