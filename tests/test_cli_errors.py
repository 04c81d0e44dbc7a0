"""Bad command-line values fail at once (issue 28): one line naming the flag, exit status 2.

Every case runs a CLI's `main(argv)` in-process with `registry.load` made to fail, so a check
that runs only after an env is built shows up as a failure here, not as a minute of compiling.
Output paths are checked before the run, and the checks leave nothing behind in the temp folder.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from playground import cli_checks, registry

from .conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ["--env_name", "FrankaReach", "--logdir", "{tmp}"]
DAGGER = ["--logdir", "{tmp}"]
EXPORT = ["--checkpoint_path", "{policy}"]
SIM2SIM = ["--onnx", "{tmp}/missing.onnx"]
PRETRAIN = ["--out", "{tmp}/enc"]

# (cli, argv, what the error line must contain: the flag, or the path it names)
CASES = [
    # learning/train_jax_ppo.py
    ("train_jax_ppo", [*TEACHER, "--num_timesteps", "-5"], "--num_timesteps"),
    ("train_jax_ppo", [*TEACHER, "--num_timesteps", "0"], "--num_timesteps"),
    ("train_jax_ppo", [*TEACHER, "--num_envs", "-8"], "--num_envs"),
    ("train_jax_ppo", [*TEACHER, "--num_envs", "0"], "--num_envs"),
    ("train_jax_ppo", [*TEACHER, "--batch_size", "0"], "--batch_size"),
    ("train_jax_ppo", [*TEACHER, "--num_minibatches", "-1"], "--num_minibatches"),
    ("train_jax_ppo", [*TEACHER, "--activation", "nosuch"], "--activation"),
    ("train_jax_ppo", [*TEACHER, "--learning_rate", "nan"], "--learning_rate"),
    ("train_jax_ppo", [*TEACHER, "--discounting", "1.5"], "--discounting"),
    ("train_jax_ppo", [*TEACHER, "--episode_length", "0"], "--episode_length"),
    ("train_jax_ppo", [*TEACHER, "--num_evals", "0"], "--num_evals"),
    ("train_jax_ppo", [*TEACHER, "--num_eval_envs", "0"], "--num_eval_envs"),
    ("train_jax_ppo", [*TEACHER, "--num_videos", "0"], "--num_videos"),
    ("train_jax_ppo", [*TEACHER, "--max_devices_per_host", "0"], "--max_devices_per_host"),
    ("train_jax_ppo", [*TEACHER, "--num_envs", "100"], "num_envs (100)"),
    ("train_jax_ppo", [*TEACHER, "--process_id", "2", "--num_processes", "2"], "--process_id"),
    (
        "train_jax_ppo",
        [*TEACHER, "--algo", "sac", "--min_replay_size", "5000", "--max_replay_size", "100"],
        "max_replay_size",
    ),
    ("train_jax_ppo", [*TEACHER, "--algo", "sac", "--num_timesteps", "1000"], "num_timesteps"),
    ("train_jax_ppo", [*TEACHER, "--logdir", "{file}"], "--logdir"),
    ("train_jax_ppo", [*TEACHER, "--init_policy", "{file}"], "--init_policy"),
    ("train_jax_ppo", [*TEACHER, "--logdir", "{under}"], "--logdir"),
    # experimental/train_dagger.py
    ("train_dagger", [*DAGGER, "--num-envs", "0"], "--num_envs"),
    ("train_dagger", [*DAGGER, "--num_envs", "-3"], "--num_envs"),
    ("train_dagger", [*DAGGER, "--batch-size", "-1"], "--batch_size"),
    ("train_dagger", [*DAGGER, "--iterations", "0"], "--iterations"),
    ("train_dagger", [*DAGGER, "--eval-every", "0"], "--eval_every"),
    ("train_dagger", [*DAGGER, "--num-eval-envs", "0"], "--num_eval_envs"),
    ("train_dagger", [*DAGGER, "--beta-decay", "2"], "--beta_decay"),
    ("train_dagger", [*DAGGER, "--learning-rate", "nan"], "--learning_rate"),
    ("train_dagger", [*DAGGER, "--hidden", "256", "0"], "--hidden"),
    ("train_dagger", [*DAGGER, "--num-videos", "-1"], "--num_videos"),
    ("train_dagger", [*DAGGER, "--updates-per-iteration", "60"], "update_unroll"),
    ("train_dagger", [*DAGGER, "--student", "cnn"], "pixels, latent"),
    ("train_dagger", [*DAGGER, "--rollout", "loop"], "scan, steps"),
    ("train_dagger", [*DAGGER, "--depth-grid", "0"], "--depth_grid"),
    ("train_dagger", [*DAGGER, "--logdir", "{file}"], "--logdir"),
    ("train_dagger", [*DAGGER, "--logdir", "{under}"], "--logdir"),
    # experimental/jax2onnx/aloha_nets_to_onnx.py
    ("export", [*EXPORT, "--parity_envs", "0"], "--parity_envs"),
    ("export", [*EXPORT, "--parity_steps", "-1"], "--parity_steps"),
    ("export", [*EXPORT, "--tol", "-1"], "--tol"),
    ("export", [*EXPORT, "--tol", "nan"], "--tol"),
    ("export", [*EXPORT, "--output_dir", "{file}"], "--output_dir"),
    ("export", [*EXPORT, "--output_dir", "{under}"], "--output_dir"),
    ("export", ["--checkpoint_path", "{tmp}/blocked/policy.safetensors"], "--output_dir"),
    ("export", ["--parity_envs", "4"], "--checkpoint_path"),
    # scripts/sim2sim.py
    ("sim2sim", [*SIM2SIM, "--steps", "-5"], "--steps"),
    ("sim2sim", [*SIM2SIM, "--watchdog_s", "0"], "--watchdog_s"),
    ("sim2sim", [*SIM2SIM, "--watchdog_s", "nan"], "--watchdog_s"),
    ("sim2sim", [*SIM2SIM, "--sensor-noise", "-1"], "--sensor_noise"),
    ("sim2sim", [*SIM2SIM, "--episodes", "0"], "--episodes"),
    ("sim2sim", [*SIM2SIM, "--max-faults", "0"], "--max_faults"),
    ("sim2sim", [*SIM2SIM, "--json", "{under}"], "--json"),
    ("sim2sim", [*SIM2SIM, "--json", "{tmp}"], "--json"),
    # scripts/eval_policy.py
    ("eval_policy", ["{tmp}/missing.safetensors", "--episodes", "0"], "--episodes"),
    ("eval_policy", ["{tmp}/missing.safetensors", "--json", "{under}"], "--json"),
    ("eval_policy", ["{tmp}/missing.safetensors", "--impl", "cuda"], "--impl"),
    ("eval_policy", ["{tmp}/missing.safetensors"], "missing.safetensors"),
    # scripts/pick_failures.py
    ("pick_failures", ["{tmp}/missing.safetensors", "--episodes", "0"], "--episodes"),
    ("pick_failures", ["{tmp}/missing.safetensors"], "missing.safetensors"),
    ("pick_failures", ["{file}"], "plain.txt"),
    # scripts/ship_policy.py
    ("ship_policy", ["{tmp}/norun", "--name", "x", "--params_dir", "{tmp}/p"], "norun"),
    ("ship_policy", ["{tmp}", "--name", "x", "--params_dir", "{under}"], "--params_dir"),
    ("ship_policy", ["{tmp}", "--name", "x", "--wall_seconds", "-1"], "--wall_seconds"),
    (
        "ship_policy",
        ["{tmp}", "--name", "x", "--params_dir", "{tmp}/p", "--eval_json", "{tmp}/no.json"],
        "--eval_json",
    ),
    # scripts/convert_policy.py (its main is playground/files/legacy_pickle.py's)
    ("convert_policy", ["{tmp}/missing.pkl"], "missing.pkl"),
    ("convert_policy", ["{file}", "{under}"], "dst"),
    ("convert_policy", ["{file}", "{tmp}/out.txt"], "out.txt"),
    ("convert_policy", [], "src"),
    # scripts/scripted_grasp.py
    ("scripted_grasp", ["--starts", "0"], "--starts"),
    ("scripted_grasp", ["--env", "Nope"], "--env"),
    ("scripted_grasp", ["--impl", "cuda"], "--impl"),
    # scripts/bench_env.py
    ("bench_env", ["--batch", "1", "0"], "--batch"),
    ("bench_env", ["--steps", "-1"], "--steps"),
    ("bench_env", ["--repeats", "0"], "--repeats"),
    ("bench_env", ["--envs", "FrankaRech"], "--envs"),
    # scripts/bench_render.py
    ("bench_render", ["--repeats", "0"], "--repeats"),
    ("bench_render", ["--res", "0"], "--res"),
    ("bench_render", ["--steps", "-1"], "--steps"),
    ("bench_render", ["--backends", "nosuch"], "--backends"),
    ("bench_render", ["--env", "Nope"], "--env"),
    # scripts/bench_distill.py
    ("bench_distill", ["--iterations", "0"], "--iterations"),
    ("bench_distill", ["--num-eval-envs", "-1"], "--num-eval-envs"),
    ("bench_distill", ["--dagger", "batch_size=0"], "--dagger batch_size"),
    ("bench_distill", ["--dagger", "nosuch=1"], "--dagger nosuch"),
    ("bench_distill", ["--dagger", "freeze_encoder=maybe"], "--dagger freeze_encoder"),
    ("bench_distill", ["--dagger", "updates_per_iteration=60"], "update_unroll"),
    ("bench_distill", ["--env-config", "novalue"], "--env-config"),
    ("bench_distill", ["--env-name", "FrankaReach"], "--env-name"),
    ("bench_distill", ["--teacher", "{tmp}/nope.safetensors"], "--teacher"),
    # scripts/pretrain_nature_cnn.py
    ("pretrain_nature_cnn", [*PRETRAIN, "--epochs", "0"], "--epochs"),
    ("pretrain_nature_cnn", [*PRETRAIN, "--batch-size", "0"], "--batch-size"),
    ("pretrain_nature_cnn", [*PRETRAIN, "--lr", "nan"], "--lr"),
    ("pretrain_nature_cnn", [*PRETRAIN, "--label-smoothing", "1.5"], "--label-smoothing"),
    ("pretrain_nature_cnn", [*PRETRAIN, "--data", "{tmp}/missing.npz"], "--data"),
    ("pretrain_nature_cnn", [*PRETRAIN, "--data", "{file}"], "plain.txt"),
    ("pretrain_nature_cnn", ["--out", "{under}"], "--out"),
    ("pretrain_nature_cnn", ["--out", "{file}"], "--out"),
    # scripts/demo.py
    ("demo", ["--batch", "0"], "--batch"),
    ("demo", ["--teacher_timesteps", "-5"], "--teacher_timesteps"),
    ("demo", ["--episodes", "0"], "--episodes"),
    ("demo", ["--logdir", "{under}"], "--logdir"),
]


@functools.cache
def _main(cli: str):
    if cli == "train_jax_ppo":
        from playground.training import teacher

        return teacher.main
    if cli == "train_dagger":
        from playground.training import distill

        return distill.main
    if cli == "export":
        from playground.deploy import export_cli

        return export_cli.main
    if cli == "sim2sim":
        from playground.deploy import sim2sim

        return sim2sim.main
    if cli == "convert_policy":
        from playground.files import legacy_pickle

        return legacy_pickle.main
    return load_script(cli).main


@pytest.fixture
def places(tmp_path: Path) -> dict[str, str]:
    """The paths a case's argv names; `{under}` lies under a file, so nothing can be made there."""
    (tmp_path / "plain.txt").write_text("not a policy, not a folder")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "policy.safetensors").write_bytes(b"never read: the checks come first")
    # The exporter's default output folder, `<run>/onnx`, taken by a file.
    (tmp_path / "blocked").mkdir()
    (tmp_path / "blocked" / "policy.safetensors").write_bytes(b"never read")
    (tmp_path / "blocked" / "onnx").write_text("a file where the ONNX folder would go")
    return {
        "tmp": str(tmp_path),
        "file": str(tmp_path / "plain.txt"),
        "under": str(tmp_path / "plain.txt" / "sub"),
        "policy": str(tmp_path / "run" / "policy.safetensors"),
    }


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(
    "cli, argv, named",
    CASES,
    ids=[f"{c}:{' '.join(a[-2:]) if a else '(none)'}" for c, a, _ in CASES],
)
def test_bad_value_is_one_line_exit_2(cli, argv, named, places, tmp_path, monkeypatch, capsys):
    main = _main(cli)

    def no_env(*args, **kwargs):
        raise AssertionError(f"{cli} built an env before refusing {argv}")

    monkeypatch.setattr(registry, "load", no_env)
    before = _listing(tmp_path)
    capsys.readouterr()
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(**places) for a in argv])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "error:" in err and named.format(**places) in err, err
    assert _listing(tmp_path) == before, "a check left something behind"
    # Nothing is built before the checks (registry.load above), so even a loaded 2-core
    # machine answers in a fraction of this.
    assert elapsed < 5.0, f"{elapsed:.1f} s"


@pytest.mark.parametrize(
    "script, argv, named",
    [
        (
            "learning/train_jax_ppo.py",
            ["--env_name", "FrankaReach", "--num_timesteps", "-5"],
            "--num_timesteps",
        ),
        ("scripts/convert_policy.py", ["{file}", "{under}"], "dst"),
    ],
)
def test_entry_scripts_answer_the_same(script, argv, named, places):
    """The files users run, not only their mains: one line, status 2, no traceback."""
    out = subprocess.run(
        [sys.executable, script, *(a.format(**places) for a in argv)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    err = out.stderr.strip()
    assert out.returncode == 2 and "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and named in err, err


def test_writable_checks_create_nothing(tmp_path):
    deep = tmp_path / "a" / "b"
    assert cli_checks.check_writable_dir(deep, "--logdir") == deep
    assert cli_checks.check_writable_file(deep / "out.json", "--json") == deep / "out.json"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(cli_checks.UsageError, match="--json .* is a folder"):
        cli_checks.check_writable_file(tmp_path, "--json")
    (tmp_path / "f").write_text("")
    with pytest.raises(cli_checks.UsageError, match="--logdir .* is a file"):
        cli_checks.check_writable_dir(tmp_path / "f", "--logdir")
    with pytest.raises(cli_checks.UsageError, match="is not a folder"):
        cli_checks.check_writable_file(tmp_path / "f" / "x" / "y.json", "--json")
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(cli_checks.UsageError, match="--logdir .* is not writable"):
            cli_checks.check_writable_dir(locked / "runs", "--logdir")
    finally:
        locked.chmod(0o700)


def test_number_checks():
    assert cli_checks.positive_int("3") == 3 and cli_checks.nonnegative_int("0") == 0
    assert cli_checks.probability("1") == 1.0 and cli_checks.nonnegative_float("0") == 0.0
    for check, bad in (
        (cli_checks.positive_int, "0"),
        (cli_checks.positive_int, "1.5"),
        (cli_checks.nonnegative_int, "-1"),
        (cli_checks.positive_float, "inf"),
        (cli_checks.finite_float, "nan"),
        (cli_checks.nonnegative_float, "-0.1"),
        (cli_checks.probability, "1.01"),
        (cli_checks.choice(("relu", "tanh")), "rlu"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=repr(bad).replace(".", r"\.")):
            check(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="did you mean 'relu'"):
        cli_checks.choice(("relu", "tanh"))("rlu")


def test_every_cli_takes_absl_flags_and_the_dashed_aliases():
    """One convention (playground/cli_checks.py): underscores and `--flag` / `--noflag`, with
    the dashed spellings and `--no-flag` accepted as aliases; unknown flags still fail."""
    from playground.deploy import export_cli, sim2sim
    from playground.training import distill, teacher

    t = teacher.build_parser()
    a = t.parse_args(["--num-evals", "3", "--no-domain-randomization", "--use_tb=false"])
    assert (a.num_evals, a.domain_randomization, a.use_tb) == (3, False, False)
    a = t.parse_args(["--num_evals=4", "--domain_randomization", "--noprogress"])
    assert (a.num_evals, a.domain_randomization, a.progress) == (4, True, False)
    d = distill.build_parser()
    a = d.parse_args(["--domain-randomization", "--env-name", "FrankaReachStereo", "--no-tb"])
    assert (a.domain_randomization, a.env_name, a.tb, a.progress) == (
        True,
        "FrankaReachStereo",
        False,
        True,
    )
    a = d.parse_args(["--no-progress", "--nofreeze_encoder"])
    assert (a.progress, a.freeze_encoder) == (False, False)
    s = sim2sim.build_parser()
    a = s.parse_args(["--onnx", "x.onnx", "--sensor-noise", "1", "--no-mjx", "--nolatency"])
    assert (a.sensor_noise, a.mjx, a.latency) == (1.0, False, False)
    e = export_cli.build_parser()
    assert e.parse_args(["--checkpoint-path", "run", "--pick-policy", "p"]).pick_policy == "p"
    for parser, bad in ((t, "--num-evalz"), (s, "--no-such-flag"), (d, "--nodomain")):
        with pytest.raises(SystemExit):
            parser.parse_args([*(["--onnx", "x"] if parser is s else []), bad])
