"""A state bank for the insertion teacher with part of its starts already inside the socket.

    python scripts/insertion_curriculum.py \
        --bank params/aloha_s2r_peg_insertion_native/switch_states.npz --inserted 1024 \
        --out params/aloha_s2r_peg_insertion_native/curriculum_states.npz

Writes every state of `--bank` (where the pick teacher had just lifted both objects) and
`--inserted` more: each from one of the bank's states, carried by inverse kinematics with both
grasps unchanged to where the peg is `--depth_m` (uniform in the range) inside the socket, then
settled on native MuJoCo (`playground/envs/aloha/scripted.py`, `inserted_state`). Train with
`--env_config switch_states_path=<out>`: an episode that starts inside learns what pushing deeper
is worth, which a policy that only ever reaches the rim never sees (docs/results.md, "Aloha
insertion and the whole task"). Evaluate on pick-teacher grasps only (the held-out switch bank).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from playground import cli_checks, registry  # noqa: E402
from playground.envs.aloha import scripted  # noqa: E402
from playground.files import state_bank  # noqa: E402

ENV = "AlohaS2RPegInsertion"


def inserted_states(
    bank: dict[str, np.ndarray],
    count: int,
    seed: int,
    depth_m: tuple[float, float],
    spread_m: float,
) -> tuple[dict[str, np.ndarray], int]:
    """({"qpos", "qvel", "ctrl"} of `count` inserted starts, tries), from the bank's states."""
    env = registry.load(ENV)
    m = env.mj_model
    left, right = env.arms
    socket, peg = env.objects
    peg_tip_m = float(m.site("peg_tip").pos[0])
    entrance_m = float(m.site("socket_entrance").pos[0])
    target = np.asarray(env.config.socket_target_m)
    rng = np.random.default_rng(seed)
    rows, tries = [], 0
    while len(rows) < count:
        tries += 1
        if tries > 4 * count + 8:
            raise RuntimeError(f"only {len(rows)} of {count} inserted states in {tries} tries")
        i = int(rng.integers(len(bank["qpos"])))
        out = scripted.inserted_state(
            m,
            bank["qpos"][i],
            bank["ctrl"][i],
            left,
            right,
            socket,
            peg,
            target + rng.uniform(-spread_m, spread_m, 3),
            float(rng.uniform(*depth_m)),
            peg_tip_m,
            entrance_m,
        )
        if out is not None and np.all(np.isfinite(np.concatenate(out))):
            rows.append(out)
    qpos, qvel, ctrl = (np.stack(a) for a in zip(*rows, strict=True))
    return {"qpos": qpos, "qvel": qvel, "ctrl": ctrl}, tries


def build_parser() -> argparse.ArgumentParser:
    p = cli_checks.ArgumentParser(prog="insertion_curriculum.py", description=__doc__)
    p.add_argument("--bank", required=True, help="a switch-state bank (.npz) to start from")
    p.add_argument("--inserted", type=cli_checks.positive_int, default=1024)
    p.add_argument(
        "--depth_m",
        type=float,
        nargs=2,
        default=(0.0, 0.025),
        metavar=("LOW", "HIGH"),
        help="how far the peg tip starts past the entrance (m, uniform; default 0 0.025)",
    )
    p.add_argument(
        "--spread_m",
        type=float,
        default=0.03,
        help="+- around the socket's target position where the pair is placed (default 0.03)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="where to write the .npz state bank")
    return p


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = build_parser()
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        low, high = args.depth_m
        if not 0.0 <= low <= high <= 0.05:
            raise cli_checks.UsageError(
                f"--depth_m needs 0 <= LOW <= HIGH <= 0.05, got {low} {high}"
            )
        if not 0.0 <= args.spread_m <= 0.1:
            raise cli_checks.UsageError(f"--spread_m must be in [0, 0.1], got {args.spread_m}")
        cli_checks.check_writable_file(args.out, "--out")
        bank = state_bank.load(args.bank, registry.load(ENV).mj_model)
        states, tries = inserted_states(bank, args.inserted, args.seed, (low, high), args.spread_m)
    except (FileNotFoundError, cli_checks.UsageError) as e:
        cli_checks.exit_usage(parser, e)
    merged = {k: np.concatenate([bank[k], states[k]]) for k in state_bank.KEYS}
    stats = {"bank_states": len(bank["qpos"]), "inserted": args.inserted, "tries": tries}
    meta = {
        "env_name": ENV,
        "source_bank": str(args.bank),
        "source_meta": bank["meta"],
        "command": " ".join(["scripts/insertion_curriculum.py", *(argv or sys.argv[1:])]),
        **stats,
    }
    state_bank.save(args.out, merged["qpos"], merged["qvel"], merged["ctrl"], meta)
    stats["seconds"] = round(time.perf_counter() - t0, 1)
    print(
        f"{stats['bank_states']} bank states and {args.inserted} inserted ones ({tries} tries); "
        f"wrote {args.out} in {stats['seconds']} s"
    )
    return stats


if __name__ == "__main__":
    main()
