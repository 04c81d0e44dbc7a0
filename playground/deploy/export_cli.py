"""The command line of experimental/jax2onnx/aloha_nets_to_onnx.py: policy files to ONNX.

    python experimental/jax2onnx/aloha_nets_to_onnx.py --checkpoint_path logs/FrankaReach-<ts>
    python experimental/jax2onnx/aloha_nets_to_onnx.py \
        --checkpoint_path logs/AlohaS2RPegInsertionDistill-dagger-<ts>
    python experimental/jax2onnx/aloha_nets_to_onnx.py --checkpoint_path RUN/student.safetensors

    python experimental/jax2onnx/aloha_nets_to_onnx.py \
        --checkpoint_path params/aloha_s2r_peg_insertion_native/policy.safetensors \
        --pick_policy params/aloha_s2r_pick_native/policy.safetensors

`--checkpoint_path` is a run folder or one policy file; legacy `.pkl` files are refused (convert
them with scripts/convert_policy.py).
- A teacher run (learning/train_jax_ppo.py): its `policy.safetensors` becomes
  `<run>/onnx/teacher.onnx`.
- A student run (experimental/train_dagger.py), as Playground lays it out: the student at every
  checkpoint of the run (`students/<env steps>.safetensors`; a run without them gives its final
  `student.safetensors`) becomes `experimental/jax2onnx/onnx_policies/<run name>/<env
  steps>.onnx`.
- One file: `<its folder>/onnx/<teacher|student>.onnx`.
`--output_dir` replaces the folder (for a student run, `onnx_policies/`). With `--pick_policy`, an
AlohaS2RPegInsertion teacher is exported together with that AlohaS2RPick policy as the composite
teacher of the whole bimanual task (`composite.onnx`: the pick policy per arm, then the insertion
policy; playground/envs/aloha/composite.py), for the env's `phase1="agent"` mode.

Before a file is written, the policy drives its own env for a few steps and the ONNX actions on
those recorded observations must match JAX's to `--tol` (1e-5); otherwise the export fails and
nothing is written (a student run's checkpoints are all checked on one recording, made with its
final student). Metadata in the file: format, kind, task, inputs (names, shapes, dtypes, and for
a camera input what it holds: units, range, invalid pixels), action range and the env's action
scaling, control rate, the env config, the SHA-256 of the source file, and the parity result.
A student's graph applies the depth camera's range cut itself (`export.student_forward`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from playground import cli_checks, registry
from playground.deploy import export
from playground.envs.aloha import composite, peg_insertion
from playground.files import policy_file

FORMAT = "s2r-playground/onnx-policy/v1"
SOURCES = {"teacher": policy_file.POLICY_FILE, "student": policy_file.STUDENT_FILE}
LEGACY_SOURCES = ("policy.pkl", "student.pkl")


ONNX_POLICIES = Path(__file__).resolve().parents[2] / "experimental" / "jax2onnx" / "onnx_policies"


@dataclasses.dataclass(frozen=True)
class Source:
    """One file to export: its kind, where it is, and the ONNX file it becomes."""

    kind: str
    path: Path
    onnx: Path


def _student_steps(path: Path) -> int:
    """Env steps of a student file: its checkpoint's name, else what the run recorded."""
    if path.stem.isdigit():
        return int(path.stem)
    extra = policy_file.read_student(path).get("extra", {})
    if "env_steps" in extra:
        return int(extra["env_steps"])
    dagger = extra.get("config", {}).get("dagger", {})
    return (
        int(extra.get("iterations", 0))
        * int(dagger.get("num_envs", 0))
        * int(dagger.get("unroll_length", 0))
    )


def find_sources(path: str | Path, output_dir: str | Path | None = None) -> list[Source]:
    """The files to export and where each goes (see the module doc); an error says what was
    expected."""
    path = Path(path).expanduser().resolve()
    out = Path(output_dir).expanduser().resolve() if output_dir else None
    if path.is_file():
        # By its name, so that a bad output folder is reported before the file is read: a
        # student is `student*` or a checkpoint's `<env steps>.safetensors` (students/).
        student = path.name.startswith("student") or path.stem.isdigit()
        kind = "student" if student else "teacher"
        return [Source(kind, path, (out or path.parent / "onnx") / f"{kind}.onnx")]
    if not path.is_dir():
        raise FileNotFoundError(f"--checkpoint_path {path} does not exist.")
    found = []
    students = sorted(
        (path / policy_file.STUDENT_CHECKPOINTS_DIR).glob(f"*{policy_file.SUFFIX}"),
        key=lambda p: int(p.stem) if p.stem.isdigit() else -1,
    )
    students = [p for p in students if p.stem.isdigit()]
    if not students and (path / SOURCES["student"]).is_file():
        students = [path / SOURCES["student"]]
    for student in students:
        folder = (out or ONNX_POLICIES) / path.name
        found.append(Source("student", student, folder / f"{_student_steps(student)}.onnx"))
    if (path / SOURCES["teacher"]).is_file():
        found.append(
            Source("teacher", path / SOURCES["teacher"], (out or path / "onnx") / "teacher.onnx")
        )
    if not found:
        for name in LEGACY_SOURCES:  # a run from before the safe format: say how to convert
            if (path / name).is_file():
                raise policy_file.legacy_error(path / name)
        raise FileNotFoundError(
            f"No policy in {path}: expected {SOURCES['teacher']} (learning/train_jax_ppo.py), or "
            f"{policy_file.STUDENT_CHECKPOINTS_DIR}/ or {SOURCES['student']} "
            "(experimental/train_dagger.py)."
        )
    return found


def load_payload(kind: str, path: Path) -> dict[str, Any]:
    """The teacher or student file at `path` (safetensors only: a pickle is refused)."""
    return policy_file.read_student(path) if kind == "student" else policy_file.read_policy(path)


def load_env(
    name: str, saved_config: dict[str, Any] | None, overrides: dict[str, Any] | None = None
):
    """Task `name` with a config saved as JSON (a run's, an ONNX file's) over its defaults, then
    `overrides` (dotted keys; an unknown key is an error listing the valid ones).

    A policy file the config names (AlohaS2RPegInsertion's `pick_policy_path`) is read by the
    safetensors reader like any other, so a config cannot lead to a pickle being loaded."""
    config = registry.get_default_config(name)
    if saved_config:
        config.update(policy_file.tuples(saved_config))
    return registry.load(name, config=config, config_overrides=overrides or None)


def env_of(payload: dict[str, Any]):
    """The env the policy was trained on, with the run's env config when the file has it; for
    the composite teacher, the insertion task from the table (`phase1="agent"`)."""
    if payload.get("composite"):
        saved = dict(payload["insert"].get("extra", {}).get("config", {}).get("env") or {})
        saved.update(
            phase1="agent",
            pick_policy_path="",
            switch_states_path="",
            episode_length=peg_insertion.WHOLE_TASK_EPISODE_LENGTH,
        )
        return load_env(payload["env_name"], saved)
    saved = payload.get("extra", {}).get("config", {}).get("env")
    return load_env(payload["env_name"], saved)


def policy_fn_of(payload: dict[str, Any]):
    """`fn(obs, rng) -> action` of a teacher, student or composite payload."""
    if payload.get("composite"):
        return composite.CompositeTeacher(payload["pick"], payload["insert"])
    if "observation_spec" in payload:
        return policy_file.make_student_fn(payload)
    return policy_file.make_policy_fn(payload)


def record_observations(
    env, payload: dict[str, Any], num_envs: int, steps: int, seed: int
) -> dict[str, np.ndarray]:
    """The policy's inputs `[num_envs * (steps + 1), ...]` along its own rollouts in `env`."""
    specs = export.input_specs(payload)
    policy = policy_fn_of(payload)

    def rollout(key):
        state = env.reset(key)

        def step(state, k):
            state = env.step(state, policy(state.obs, k))
            return state, {n: state.obs[n] for n in specs}

        _, seen = jax.lax.scan(step, state, jax.random.split(key, steps))
        return seen, {n: state.obs[n] for n in specs}

    keys = jax.random.split(jax.random.PRNGKey(seed), num_envs)
    seen, first = jax.jit(jax.vmap(rollout))(keys)
    return {
        n: np.concatenate([np.asarray(first[n]), np.asarray(seen[n]).reshape(-1, *specs[n][0])])
        for n in specs
    }


def metadata(
    kind: str, source: Path, payload: dict[str, Any], env, parity: float, samples: int
) -> dict[str, Any]:
    config = env.config.to_dict()
    inputs = {
        name: {"shape": ["B", *shape], "dtype": dtype}
        for name, (shape, dtype) in export.input_specs(payload).items()
    }
    vision = config.get("vision") or {}
    cameras = list(vision.get("cameras", ()))
    if "rgb" in inputs:
        inputs["rgb"]["holds"] = (
            f"RGB 0-255 as the camera gives it, cameras {cameras} in this order; the graph "
            "scales it"
        )
    if "depth" in inputs:
        cut = export.depth_max_m(payload)
        inputs["depth"]["holds"] = (
            f"linear z-depth in metres, cameras {cameras} in this order, 0 = no return"
            + (f"; the graph sets depth beyond {cut} m to 0 (the camera's range cut)" * bool(cut))
        )
    if "proprio" in inputs:
        inputs["proprio"]["holds"] = (
            "the entries of the task's `state` observation the robot measures itself "
            f"(indices {list(map(int, type(env).PROPRIO))}; playground/deploy/obs_builder.py)"
            if hasattr(type(env), "PROPRIO")
            else "the robot's own measurements (playground/deploy/obs_builder.py)"
        )
    return {
        "s2r/format": FORMAT,
        "s2r/kind": kind,
        "s2r/env_name": payload["env_name"],
        "s2r/inputs": inputs,
        "s2r/output": {"name": export.ACTION_OUTPUT, "shape": ["B", env.action_size]},
        "s2r/action": {
            "range": [-1.0, 1.0],
            "scaling": {k: v for k, v in config.items() if "action" in k},
        },
        "s2r/control_hz": 1.0 / env.ctrl_dt,
        "s2r/env_config": config,
        "s2r/source": str(source),
        "s2r/source_sha256": export.file_sha256(source),
        "s2r/parity": {"max_abs_diff": parity, "samples": samples, "tol": export.PARITY_TOL},
    }


def export_one(
    source: Source,
    num_envs: int,
    steps: int,
    tol: float,
    pick_policy: Path | None = None,
    observations: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Exports `source` after the parity check; `observations` (recorded in the policy's env)
    are recorded now when not given. The result holds them for the next checkpoint of a run."""
    kind = source.kind
    payload = load_payload(kind, source.path)
    extra = {}
    target = source.onnx
    if pick_policy is not None:
        if kind != "teacher":
            raise policy_file.PolicyFileError(
                f"--pick_policy goes with an {composite.INSERT_ENV} teacher, not a {kind} file."
            )
        pick, payload = composite.read(pick_policy, source.path)
        payload = export.composite_payload(pick, payload)
        kind = "composite"
        target = target.with_name("composite.onnx")
        extra = {
            "s2r/pick_source": str(pick_policy),
            "s2r/pick_source_sha256": export.file_sha256(pick_policy),
        }
        # Long enough to pass the switch, so the recorded observations hold both phases.
        steps = max(steps, 60)
    env = env_of(payload)
    model = export.to_onnx(payload, model_name=f"{payload['env_name']}_{kind}")
    if observations is None:
        observations = record_observations(env, payload, num_envs, steps, seed=0)
    samples = len(next(iter(observations.values())))
    parity = export.check_parity(model, payload, observations, tol)
    path = export.save(
        model, target, {**metadata(kind, source.path, payload, env, parity, samples), **extra}
    )
    return {
        "kind": kind,
        "onnx": str(path),
        "parity_max_abs_diff": parity,
        "samples": samples,
        "observations": observations,
    }


def build_parser() -> argparse.ArgumentParser:
    p = cli_checks.ArgumentParser(
        prog="aloha_nets_to_onnx.py",
        description="Export trained teacher and student policies to ONNX (jax2onnx).",
        allow_abbrev=False,
    )
    p.add_argument("--checkpoint_path", required=True, dest="path")
    p.add_argument(
        "--output_dir",
        default=None,
        help="default: <run>/onnx, or experimental/jax2onnx/onnx_policies for a student run",
    )
    p.add_argument(
        "--pick_policy",
        default=None,
        help="an AlohaS2RPick policy file: export the AlohaS2RPegInsertion teacher with it as "
        "the composite teacher of the whole task (composite.onnx)",
    )
    p.add_argument(
        "--parity_envs",
        type=cli_checks.positive_int,
        default=4,
        help="envs recorded for the parity check",
    )
    p.add_argument(
        "--parity_steps", type=cli_checks.positive_int, default=16, help="steps recorded per env"
    )
    p.add_argument(
        "--tol",
        type=cli_checks.nonnegative_float,
        default=export.PARITY_TOL,
        help="parity tolerance",
    )
    return p


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        sources = find_sources(args.path, args.output_dir)
        # Before the parity rollouts, which take a minute, and before the first file is written.
        for folder in sorted({s.onnx.parent for s in sources}):
            flag = "--output_dir" if args.output_dir else "the default --output_dir"
            cli_checks.check_writable_dir(folder, flag)
        pick = Path(args.pick_policy) if args.pick_policy else None
        results, recorded = [], None
        # A run's checkpoints share one recording, made with its newest student (first here).
        students = [s for s in sources if s.kind == "student"][::-1]
        for source in [*students, *(s for s in sources if s.kind != "student")]:
            reuse = recorded if source.kind == "student" else None
            result = export_one(source, args.parity_envs, args.parity_steps, args.tol, pick, reuse)
            if source.kind == "student":
                recorded = result["observations"]
            del result["observations"]
            print(
                f"{result['kind']}: {result['onnx']} (ONNX vs JAX max abs diff "
                f"{result['parity_max_abs_diff']:.2g} on {result['samples']} recorded observations)"
            )
            results.append(result)
        return results
    except (FileNotFoundError, export.ParityError, cli_checks.UsageError) as e:
        cli_checks.exit_usage(parser, e)


def cli() -> int:
    """The `s2r-export-onnx` console command."""
    main()
    return 0


if __name__ == "__main__":
    main(sys.argv[1:])
