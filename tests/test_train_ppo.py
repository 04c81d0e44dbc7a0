"""learning/train_jax_ppo.py: learning on CPU, run outputs, checkpoints, resume, devices, errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from playground import registry
from playground.files import policy_file
from playground.training import checkpoint, teacher
from playground.training.ppo import PPOTrainer
from playground.training.ppo_params import ppo_config
from tests.conftest import REACH_FLAGS, load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "learning" / "train_jax_ppo.py"


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_reach_teacher_learns_on_cpu(reach_run):
    run_dir, summary = reach_run
    assert summary["success_rate"] >= 0.9, summary
    rows = [r for r in _metrics(run_dir) if "eval/success_rate" in r]
    assert [r["step"] for r in rows] == [0, 81920, 163840]
    assert rows[0]["eval/success_rate"] < 0.5 < rows[-1]["eval/success_rate"]
    assert rows[-1]["eval/episode_reward"] > rows[0]["eval/episode_reward"] + 20


def test_run_folder_has_every_output(reach_run):
    run_dir, summary = reach_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env_name"] == "FrankaReach" and config["train"]["num_timesteps"] == 163840
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert (run_dir / "learning_curve.png").stat().st_size > 1000
    assert (run_dir / "rollout.mp4").stat().st_size > 1000
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir()) == [81920, 163840]
    keys = set(_metrics(run_dir)[-1])
    for key in (
        "training/sps",
        "training/total_loss",
        "training/episode_sum_reward",
        "training/episode_reach",
        "eval/episode_success",
        "eval/episode_length",
    ):
        assert key in keys
    # FrankaReach ends episodes only at its 60-step limit, so every training episode lasted 60
    # (a plain mean over updates, some without an ended episode, logged 37.5 and 41.25).
    lengths = [r["training/episode_length"] for r in _metrics(run_dir) if r["step"] > 0]
    assert lengths and all(n == pytest.approx(60.0) for n in lengths), lengths
    # The policy file drives the env on its own (as peg insertion, DAgger and export read it).
    policy, payload = policy_file.load_policy_fn(summary["policy"], "FrankaReach")
    env = registry.load("FrankaReach")
    state = env.reset(jax.random.PRNGKey(3))
    action = policy(state.obs, jax.random.PRNGKey(0))
    assert action.shape == (3,) and payload["extra"]["env_steps"] == 163840
    # best_policy.safetensors: the policy of the best held-out evaluation after training began,
    # the latest on a tie.
    evals = {r["step"]: r["eval/success_rate"] for r in _metrics(run_dir) if r["step"] > 0}
    best = policy_file.read_policy(run_dir / "best_policy.safetensors", "FrankaReach")["extra"]
    top = max(evals.values())
    assert best["held_out_success_rate"] == top
    assert best["env_steps"] == max(s for s, v in evals.items() if v == top)
    assert summary["best_env_steps"] == best["env_steps"]
    assert summary["best_success_rate"] == top


def test_checkpoint_round_trip_is_exact(tmp_path):
    env = registry.load("FrankaReach")
    cfg = ppo_config("FrankaReach")
    trainer = PPOTrainer(env, cfg, seed=5)
    state = trainer.init_state()
    # Perturb every leaf so that a restore from fresh init could not pass by accident.
    state = jax.tree.map(jnp.asarray, state)
    state = jax.tree.map(lambda x: x + jnp.ones_like(x) if x.dtype.kind == "f" else x, state)
    ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints")
    ckpt.save(1234, state, {"env_name": "FrankaReach", "n": 1})
    ckpt.close()
    restored, config, step = checkpoint.restore(tmp_path, trainer.init_state())
    assert step == 1234 and config == {"env_name": "FrankaReach", "n": 1}
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree.structure(state) == jax.tree.structure(jax.tree.map(jnp.asarray, restored))


def test_sigkill_then_resume_loses_nothing_before_the_checkpoint(tmp_path, reach_run):
    """A run killed with SIGKILL after its first checkpoint resumes at that step, same config.

    The resume also extends the run with --num_timesteps (one test, to keep CI's budget): it
    trains whole extra epochs of the same size and records the longer plan."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            *REACH_FLAGS,
            "--logdir",
            str(tmp_path),
            "--norender_final_policy",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 400
        first = None
        while time.time() < deadline and proc.poll() is None:
            found = list(tmp_path.glob("FrankaReach-*/checkpoints/81920/state"))
            if found and (found[0].parent / "_CHECKPOINT_METADATA").exists():
                first = found[0].parent
                break
            time.sleep(0.5)
        assert first is not None, proc.stdout.read().decode() if proc.poll() is not None else ""
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    run_dir = first.parent.parent
    config_before = json.loads((run_dir / "config.json").read_text())
    summary = teacher.main(
        [
            "--load_checkpoint_path",
            str(run_dir),
            "--num_timesteps",
            "200000",  # planned: 163,840
            "--norender_final_policy",
            "--noprogress",
        ]
    )
    assert summary["env_steps"] == 245760  # rounded up to whole 81,920-step epochs
    config_after = json.loads((run_dir / "config.json").read_text())
    assert (config_after["train"]["num_timesteps"], config_after["train"]["num_evals"]) == (
        245760,
        4,
    )
    for changed in ("num_timesteps", "num_evals"):
        config_after["train"][changed] = config_before["train"][changed]
    assert config_after == config_before  # nothing else changed
    # The checkpoints hold the longer plan, so a later resume continues the extended run.
    assert checkpoint.read_config(run_dir)[0]["train"]["num_timesteps"] == 245760
    steps = [r["step"] for r in _metrics(run_dir) if "training/sps" in r]
    assert steps == [81920, 163840, 245760], steps  # nothing retrained from 0
    assert summary["success_rate"] >= 0.5
    # The best policy is chosen over the evaluations of both processes.
    evals = {r["step"]: r["eval/success_rate"] for r in _metrics(run_dir) if r["step"] > 0}
    top = max(evals.values())
    assert summary["best_success_rate"] == top
    assert summary["best_env_steps"] == max(s for s, v in evals.items() if v == top)


def test_resume_and_checkpoint_errors_name_the_file(tmp_path, reach_run, capsys):
    run_dir, _ = reach_run
    with pytest.raises(SystemExit):
        teacher.main(["--load_checkpoint_path", str(tmp_path / "missing")])
    assert str(tmp_path / "missing") in capsys.readouterr().err

    # Every checkpoint corrupt (with one left, resume falls back to it: test_safe_files).
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    latest = broken / "checkpoints" / "163840" / "state"
    for f in (broken / "checkpoints").rglob("state/**/*"):
        if f.is_file():
            f.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit):
        teacher.main(["--load_checkpoint_path", str(broken), "--noprogress"])
    err = capsys.readouterr().err
    assert str(latest) in err and "corrupt" in err and "older checkpoint(s) failed too" in err

    with pytest.raises(SystemExit):
        teacher.main(["--load_checkpoint_path", str(run_dir / "checkpoints" / "81920")])
    assert "not the run's latest checkpoint" in capsys.readouterr().err

    with pytest.raises(SystemExit):
        teacher.main(["--load_checkpoint_path", str(run_dir), "--learning_rate", "0.1"])
    assert "--learning_rate" in capsys.readouterr().err

    with pytest.raises(SystemExit):  # extending must extend
        teacher.main(["--load_checkpoint_path", str(run_dir), "--num_timesteps", "163840"])
    assert "must exceed the run's planned 163,840" in capsys.readouterr().err


def test_unknown_flags_and_env_names_are_clear_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        teacher.main(["--env_name", "FrankaReach", "--num_timestep", "5"])
    assert e.value.code == 2 and "unrecognized arguments: --num_timestep" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        teacher.main(["--env_name", "FrankaRech", "--logdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "FrankaReach" in err and "AlohaS2RPick" in err
    with pytest.raises(SystemExit):
        teacher.main(["--env_name", "FrankaReach", "--num_envs", "100", "--logdir", str(tmp_path)])
    assert "batch_size * num_minibatches" in capsys.readouterr().err
    help_text = teacher.build_parser().format_help()
    for flag in (
        "--env_name",
        "--num_timesteps",
        "--domain_randomization",
        "--load_checkpoint_path",
        "--use_tb",
        "--use_wandb",
        "--render_final_policy",
        "--suffix",
        "--play_only",
    ):
        assert flag in help_text


# About 110 s of cold compilation in a subprocess: `slow`, to keep CI under its 20 minutes.
@pytest.mark.slow
def test_two_devices_train_with_the_same_metrics(tmp_path, reach_run):
    """Data-parallel over 2 host devices: the batch splits evenly and the run logs the same keys."""
    flags = [
        "--env_name",
        "FrankaReach",
        "--num_timesteps",
        "5120",
        "--num_evals",
        "2",
        "--num_minibatches",
        "4",
        "--num_updates_per_batch",
        "1",
        "--noprogress",
        "--norender_final_policy",
        "--domain_randomization",
        "--logdir",
        str(tmp_path),
    ]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "on 2 device(s)" in out.stdout + out.stderr
    run_dir = next(tmp_path.glob("FrankaReach-*"))
    two = _metrics(run_dir)[-1]
    one = _metrics(reach_run[0])[-1]
    assert set(two) == set(one)
    assert all(np.isfinite(v) for v in two.values())
    assert json.loads((run_dir / "final.json").read_text())["device"] == "cpu x2"


@pytest.mark.slow
def test_sac_flag_trains_and_evaluates(tmp_path, capsys):
    """--algo sac: brax SAC in the same run folder; resuming is refused with the reason."""
    flags = [
        "--env_name",
        "FrankaReach",
        "--algo",
        "sac",
        "--num_timesteps",
        "4096",
        "--num_evals",
        "2",
        "--num_envs",
        "64",
        "--min_replay_size",
        "1024",
        "--grad_updates_per_step",
        "1",
        "--noprogress",
        "--norender_final_policy",
    ]
    summary = teacher.main([*flags, "--logdir", str(tmp_path)])
    run_dir = Path(summary["run_dir"])
    assert summary["algo"] == "sac" and 0.0 <= summary["success_rate"] <= 1.0
    assert Path(summary["checkpoint"]).is_dir()
    assert any("eval/episode_reward" in r for r in _metrics(run_dir))
    with pytest.raises(SystemExit):
        teacher.main(["--load_checkpoint_path", str(run_dir), "--noprogress"])
    assert "SAC runs cannot be resumed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        teacher.main(
            ["--env_name", "FrankaReach", "--grad_updates_per_step", "2", "--logdir", str(tmp_path)]
        )


def test_play_only_evaluates_without_training(reach_run):
    run_dir, summary = reach_run
    before = (run_dir / "metrics.jsonl").read_text()
    played = teacher.main(
        [
            "--load_checkpoint_path",
            str(run_dir),
            "--play_only",
            "--norender_final_policy",
            "--noprogress",
        ]
    )
    assert played["env_steps"] == summary["env_steps"] == 163840
    assert played["success_rate"] == pytest.approx(summary["success_rate"])
    assert (run_dir / "metrics.jsonl").read_text() == before
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir()) == [81920, 163840]


def test_init_policy_starts_a_new_run_from_a_teacher_file(tmp_path, reach_run, capsys):
    """Fine-tuning: the new run's first evaluation is the teacher's, not a fresh network's."""
    run_dir, summary = reach_run
    params_dir = tmp_path / "params"
    ship = load_script("ship_policy")
    ship.main(
        [str(run_dir), "--name", "reach", "--params_dir", str(params_dir), "--wall_seconds", "30"]
    )
    teacher_file = params_dir / "reach" / policy_file.POLICY_FILE
    flags = [
        "--env_name",
        "FrankaReach",
        "--num_envs",
        "128",
        "--batch_size",
        "64",
        "--num_minibatches",
        "2",
        "--num_timesteps",
        "2000",
        "--num_evals",
        "2",
        "--norender_final_policy",
        "--noprogress",
        "--logdir",
        str(tmp_path),
    ]
    tuned = teacher.main([*flags, "--init_policy", str(teacher_file), "--learning_rate", "1e-4"])
    tuned_dir = Path(tuned["run_dir"])
    first = _metrics(tuned_dir)[0]
    assert first["step"] == 0
    # The same params, normaliser and evaluation seeds as the reach run's final evaluation.
    assert first["eval/success_rate"] == pytest.approx(summary["success_rate"])
    config = json.loads((tuned_dir / "config.json").read_text())
    assert config["init_policy"] == str(teacher_file)
    # Shipped in place of the policy it started from, its card keeps that policy's provenance.
    before = json.loads((params_dir / "reach.json").read_text())
    digest = hashlib.sha256(teacher_file.read_bytes()).hexdigest()
    ship.main(
        [str(tuned_dir), "--name", "reach", "--params_dir", str(params_dir), "--wall_seconds", "5"]
    )
    card = json.loads((params_dir / "reach.json").read_text())
    started = card["started_from"]
    assert started["sha256"] == digest and started["commands"] == before["commands"]
    assert card["commands"][: len(before["commands"])] == before["commands"]
    assert len(card["commands"]) == len(before["commands"]) + 1  # the fine-tune's own
    assert card["total_env_steps"] == before["env_steps"] + card["env_steps"]
    assert card["total_wall_seconds"] == 35

    pick = ROOT / "params" / "aloha_s2r_pick_native" / "policy.safetensors"
    with pytest.raises(SystemExit):
        teacher.main([*flags, "--init_policy", str(pick)])
    err = capsys.readouterr().err
    assert str(pick) in err and "'AlohaS2RPick', not 'FrankaReach'" in err
    with pytest.raises(SystemExit):
        teacher.main([*flags, "--init_policy", str(teacher_file), "--activation", "tanh"])
    err = capsys.readouterr().err
    assert str(teacher_file) in err and "activation" in err
    with pytest.raises(SystemExit):
        teacher.main(["--load_checkpoint_path", str(run_dir), "--init_policy", str(teacher_file)])
    assert "give one of them" in capsys.readouterr().err
