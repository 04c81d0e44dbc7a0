"""Copies a finished teacher or student run's policy into params/ with a JSON card.

    python scripts/ship_policy.py RUN_DIR --name aloha_s2r_pick_native \
        --wall_seconds 4500 --wall_note "one process, 2 cores" --eval_json eval.json
    python scripts/ship_policy.py DAGGER_RUN_DIR --name aloha_s2r_student_native \
        --onnx experimental/jax2onnx/onnx_policies/<run>/<env steps>.onnx --eval_json eval.json

The card holds what a user needs to trust and reproduce the params: the command, the machine and
library versions, env steps, the held-out success rate and the learning curve, all read from the
run folder (config.json, final.json, metrics.jsonl). The wall time comes from the caller because a
resumed run spans several processes and only the caller timed all of them; the summed epoch times
from metrics.jsonl are in the card beside it as a cross-check. `--policy best` ships the run's
best_policy.safetensors (the best of the trainer's held-out evaluations, whose seeds differ from
those of scripts/eval_policy.py) instead of the final policy.safetensors. The file is validated by
the safetensors reader before it is copied (a legacy .pkl is refused).

A student run (experimental/train_dagger.py) ships its final `student.safetensors` (or, with
`--policy best`, the `students/<env steps>.safetensors` of its best held-out evaluation) as
`params/<name>/student.safetensors`; its card adds the teachers (paths and SHA-256), the gradient
samples, the steady iteration time and the teacher's success beside the student's at each
evaluation. `--onnx` ships the student's ONNX export beside it (`student.onnx`), after checking
that the file was exported from this very student (its `s2r/source_sha256`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from playground import cli_checks, runtime  # noqa: E402
from playground.files import atomic, policy_file  # noqa: E402


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise cli_checks.UsageError(
            f"{path} is missing: is {path.parent} a finished teacher run folder?"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise cli_checks.UsageError(f"{path} is not valid JSON: {e}") from None


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise cli_checks.UsageError(f"{path} is missing: the run logged no evaluation.")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("jax", "brax", "mujoco", "mujoco-mjx", "flax", "optax"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _card_head(
    config: dict[str, Any], final: dict[str, Any], extra_commands: list[str]
) -> dict[str, Any]:
    """What every card starts with: the task, physics, randomisation, commands and machine."""
    return {
        "env_name": final["env_name"],
        "impl": config.get("env", {}).get("impl", "jax"),
        "domain_randomization": config.get("domain_randomization", False),
        "commands": ["python " + config["command"], *extra_commands],
        "machine": {
            "device": final["device"],
            "cpu": runtime.cpu_description(),
            "cpus_available": len(os.sched_getaffinity(0)),
            "versions": _versions(),
        },
    }


def _read_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(config.json, final.json, metrics.jsonl rows) of a finished run folder."""
    config = _read_json(run_dir / "config.json")
    final = _read_json(run_dir / "final.json")
    return config, final, _read_metrics(run_dir / "metrics.jsonl")


def _curve(rows: list[dict[str, Any]], **more: str) -> list[dict[str, Any]]:
    """The learning curve: env steps and success at each evaluation, plus `more` (card key ->
    metrics key)."""
    return [
        {
            "env_steps": r["step"],
            "success_rate": r["eval/success_rate"],
            **{k: r[m] for k, m in more.items()},
        }
        for r in rows
        if "eval/success_rate" in r
    ]


def make_card(
    run_dir: Path, wall_seconds: float | None, wall_note: str, extra_commands: list[str]
) -> dict[str, Any]:
    config, final, rows = _read_run(run_dir)
    epochs = [r["training/epoch_seconds"] for r in rows if "training/epoch_seconds" in r]
    curve = _curve(rows, episode_reward="eval/episode_reward")
    env_cfg = config.get("env", {})
    return {
        **_card_head(config, final, extra_commands),
        "env_steps": final["env_steps"],
        "wall_seconds": wall_seconds,
        "wall_note": wall_note,
        "epoch_seconds_sum": float(sum(epochs)),
        "epoch_seconds": epochs,
        "success_rate": final["success_rate"],
        "success_of": (
            f"deterministic policy, {final['eval_episodes']} held-out episodes "
            f"(eval seed {final['eval_seed']}); success = the task's success at the last step"
        ),
        "episode_reward": final["episode_reward"],
        "ppo": {k: v for k, v in config.items() if k not in ("env", "command")},
        "env_config": env_cfg,
        "learning_curve": curve,
    }


def started_from(config: dict[str, Any]) -> dict[str, Any] | None:
    """What a fine-tuned run (`--init_policy`) started from: the file's path and SHA-256, and,
    where it is a shipped policy with its card beside it, that card's commands, env steps, wall
    time and success."""
    init = config.get("init_policy")
    if not init:
        return None
    path = Path(init)
    if not path.is_file():
        raise cli_checks.UsageError(
            f"the run started from {init} (--init_policy), which no longer exists; its "
            "provenance cannot be recorded."
        )
    out: dict[str, Any] = {
        "policy": init,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    card_file = path.parent.with_suffix(".json")
    if card_file.is_file():
        card = _read_json(card_file)
        out["card"] = str(
            card_file.relative_to(REPO) if card_file.is_relative_to(REPO) else card_file
        )
        for key in ("commands", "env_steps", "wall_seconds", "success_rate", "selected"):
            if key in card:
                out[key] = card[key]
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_student_run(run_dir: Path) -> bool:
    return (run_dir / policy_file.STUDENT_FILE).is_file() and not (
        run_dir / policy_file.POLICY_FILE
    ).is_file()


def make_student_card(
    run_dir: Path, wall_seconds: float | None, wall_note: str, extra_commands: list[str]
) -> dict[str, Any]:
    config, final, rows = _read_run(run_dir)
    dagger = config["dagger"]
    curve = _curve(rows, teacher_success_rate="eval/teacher_success_rate")

    def shown(path: Path) -> str:  # relative to the repository: the card reads the same anywhere
        return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)

    teachers = {}
    for key in ("teacher", "pick_teacher"):
        if config.get(key):
            path = Path(config[key])
            teachers[key] = {
                "policy": shown(path),
                "sha256": _sha256(path) if path.is_file() else None,
            }
    env_cfg = config.get("env", {})
    return {
        "kind": "student",
        **_card_head(config, final, extra_commands),
        "teachers": teachers,
        "iterations": final["iterations"],
        "env_steps": final["env_steps"],
        # Each iteration's optax steps on minibatches from the aggregated buffer.
        "gradient_samples": final["iterations"]
        * dagger["updates_per_iteration"]
        * dagger["batch_size"],
        "wall_seconds": wall_seconds,
        "wall_note": wall_note,
        "train_seconds": final["wall_seconds"],
        "steady_iteration_seconds": final.get("steady_iteration_seconds"),
        "success_rate": final["student_success_rate"],
        "teacher_success_rate": final["teacher_success_rate"],
        "success_of": (
            f"deterministic student and teacher, the same {final['eval_episodes']} held-out "
            f"episodes (eval seed {final['eval_seed']}); success = the task's success at the "
            "last step"
        ),
        "dagger": dagger,
        "encoder": shown(Path(config["encoder"])) if config.get("encoder") else None,
        "env_config": env_cfg,
        "learning_curve": curve,
    }


def check_onnx(onnx_path: Path, student: Path) -> None:
    """UsageError unless `onnx_path` is an export of `student` (aloha_nets_to_onnx.py)."""
    import onnx

    if not onnx_path.is_file():
        raise cli_checks.UsageError(f"--onnx {onnx_path} does not exist.")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure: not an ONNX file
        raise cli_checks.UsageError(f"--onnx {onnx_path} is not an ONNX model: {e}") from None
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("s2r/source_sha256") != _sha256(student):
        raise cli_checks.UsageError(
            f"--onnx {onnx_path} was not exported from {student} (its s2r/source_sha256 "
            "differs): export this student with experimental/jax2onnx/aloha_nets_to_onnx.py."
        )


def main(argv: list[str] | None = None) -> int:
    p = cli_checks.ArgumentParser(
        prog="ship_policy.py",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("run_dir", type=Path, help="a finished teacher or student run folder")
    p.add_argument(
        "--name",
        required=True,
        help="params/<name>/policy.safetensors (student.safetensors) and params/<name>.json",
    )
    p.add_argument(
        "--onnx",
        type=Path,
        default=None,
        help="a student run: the student's ONNX export, shipped beside it as student.onnx",
    )
    p.add_argument("--params_dir", type=Path, default=REPO / "params")
    p.add_argument(
        "--wall_seconds",
        type=cli_checks.positive_float,
        default=None,
        help="measured by the caller",
    )
    p.add_argument("--wall_note", default="", help="how the wall time was measured")
    p.add_argument(
        "--eval_json",
        action="append",
        default=[],
        type=Path,
        help="results of scripts/eval_policy.py --json on this policy, added to the card",
    )
    p.add_argument("--note", default="", help="what a user should know about these params")
    p.add_argument(
        "--policy",
        choices=("final", "best"),
        default="final",
        help="the run's final policy.safetensors, or best_policy.safetensors (best held-out "
        "evaluation); for a student run, the final student.safetensors or the checkpoint "
        "student (students/) of the best held-out evaluation",
    )
    p.add_argument(
        "--extra_command",
        action="append",
        default=[],
        help="further commands of the run (a resume), in order",
    )
    args = p.parse_args(argv)
    try:
        return _ship(args)
    except (FileNotFoundError, policy_file.PolicyFileError, cli_checks.UsageError) as e:
        cli_checks.exit_usage(p, e)


def _ship(args: argparse.Namespace) -> int:
    if not args.run_dir.is_dir():
        raise cli_checks.UsageError(f"run_dir {args.run_dir} is not a folder (a teacher run).")
    for path in args.eval_json:
        if not path.is_file():
            raise cli_checks.UsageError(f"--eval_json {path} does not exist.")
    # Both outputs are checked before either is written, so a failure leaves no half shipment.
    cli_checks.check_writable_dir(args.params_dir / args.name, "--params_dir/--name")
    cli_checks.check_writable_file(args.params_dir / f"{args.name}.json", "--params_dir/--name")
    if is_student_run(args.run_dir):
        return _ship_student(args)
    if args.onnx is not None:
        raise cli_checks.UsageError("--onnx ships a student's export; this is a teacher run.")
    name = policy_file.BEST_POLICY_FILE if args.policy == "best" else policy_file.POLICY_FILE
    src = args.run_dir / name
    if not src.is_file() and src.with_suffix(".pkl").is_file():
        src = src.with_suffix(".pkl")  # refused below, with the conversion command
    payload = policy_file.read_policy(src)  # validates the file before it is shipped
    card = make_card(args.run_dir, args.wall_seconds, args.wall_note, args.extra_command)
    card["selected"] = args.policy
    if args.policy == "best":
        card["run_env_steps"] = card["env_steps"]
        card["env_steps"] = payload["extra"]["env_steps"]
        card["success_rate"] = payload["extra"]["held_out_success_rate"]
        card["success_of"] += (
            "; the best of the run's held-out evaluations (latest on a tie), "
            f"reached after {card['env_steps']:,} of its {card['run_env_steps']:,} env steps"
        )
    started = started_from(_read_json(args.run_dir / "config.json"))
    if started:
        # A fine-tune: its policy is the sum of both runs, and the file it started from may be
        # the one this shipment replaces, so the card keeps that run's provenance.
        card["started_from"] = started
        card["commands"] = [*started.get("commands", []), *card["commands"]]
        card["total_env_steps"] = started.get("env_steps", 0) + card["env_steps"]
        if args.wall_seconds is not None and started.get("wall_seconds") is not None:
            card["total_wall_seconds"] = started["wall_seconds"] + args.wall_seconds
    card["independent_evaluations"] = [_read_json(path) for path in args.eval_json]
    card["note"] = args.note
    if payload["env_name"] != card["env_name"]:
        raise cli_checks.UsageError(
            f"{src} is a {payload['env_name']} policy, the run is {card['env_name']}"
        )
    out_dir = args.params_dir / args.name
    out_dir.mkdir(parents=True, exist_ok=True)
    shipped = atomic.write_bytes(out_dir / policy_file.POLICY_FILE, src.read_bytes()).resolve()
    # Relative to the repository when shipped into it, so the card reads the same on any clone.
    card["policy"] = str(shipped.relative_to(REPO) if shipped.is_relative_to(REPO) else shipped)
    card_path = args.params_dir / f"{args.name}.json"
    atomic.write_text(card_path, json.dumps(card, indent=2) + "\n")
    print(
        f"{card['env_name']}: {card['success_rate']:.0%} held-out success after "
        f"{card['env_steps']:,} env steps -> {shipped}, card {card_path}"
    )
    return 0


def best_student(run_dir: Path, curve: list[dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
    """The checkpoint student with the best held-out evaluation (the latest on a tie)."""
    row = max(reversed(curve), key=lambda r: r["success_rate"])
    path = run_dir / policy_file.STUDENT_CHECKPOINTS_DIR / f"{row['env_steps']}{policy_file.SUFFIX}"
    if not path.is_file():
        raise cli_checks.UsageError(
            f"{path} is missing: --policy best ships a checkpoint's student file, which runs "
            "before students/ was written do not have."
        )
    return path, row


def _ship_student(args: argparse.Namespace) -> int:
    card = make_student_card(args.run_dir, args.wall_seconds, args.wall_note, args.extra_command)
    card["selected"] = args.policy
    src = args.run_dir / policy_file.STUDENT_FILE
    if args.policy == "best":
        src, row = best_student(args.run_dir, card["learning_curve"])
        card["run_env_steps"] = card["env_steps"]
        card["env_steps"] = row["env_steps"]
        d = card["dagger"]
        card["iterations"] = row["env_steps"] // (d["num_envs"] * d["unroll_length"])
        card["gradient_samples"] = card["iterations"] * d["updates_per_iteration"] * d["batch_size"]
        card["success_rate"] = row["success_rate"]
        card["teacher_success_rate"] = row["teacher_success_rate"]
        card["success_of"] += (
            "; the best of the run's held-out evaluations (latest on a tie), "
            f"reached after {card['env_steps']:,} of its {card['run_env_steps']:,} env steps"
        )
    payload = policy_file.read_student(src)  # validates the file before it is shipped
    if args.onnx is not None:
        check_onnx(args.onnx, src)
    if payload["env_name"] != card["env_name"]:
        raise cli_checks.UsageError(
            f"{src} is a {payload['env_name']} student, the run is {card['env_name']}"
        )
    card["independent_evaluations"] = [_read_json(path) for path in args.eval_json]
    card["note"] = args.note
    out_dir = args.params_dir / args.name
    out_dir.mkdir(parents=True, exist_ok=True)

    def shown(path: Path) -> str:
        path = path.resolve()
        return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)

    shipped = atomic.write_bytes(out_dir / policy_file.STUDENT_FILE, src.read_bytes())
    card["policy"] = shown(shipped)
    if args.onnx is not None:
        card["onnx"] = shown(atomic.write_bytes(out_dir / "student.onnx", args.onnx.read_bytes()))
    card_path = args.params_dir / f"{args.name}.json"
    atomic.write_text(card_path, json.dumps(card, indent=2) + "\n")
    print(
        f"{card['env_name']} student: {card['success_rate']:.0%} held-out success (teacher "
        f"{card['teacher_success_rate']:.0%}) after {card['env_steps']:,} env steps -> "
        f"{shipped}, card {card_path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
