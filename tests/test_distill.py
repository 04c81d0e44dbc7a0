"""experimental/train_dagger.py: a pixel student learns from the CPU-trained reach teacher; run
outputs, resume, and clear errors for a missing or mismatched teacher."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import jax
import numpy as np
import pytest

from playground import registry
from playground.training import checkpoint, distill, policy_file

# A small pixel task: FrankaReachStereo through both stereo cameras at 48x48.
ENV_FLAGS = [
    "--env-name",
    "FrankaReachStereo",
    "--env-config",
    "vision.width=48",
    "--env-config",
    "vision.height=48",
]
ITERATIONS = 20
STEPS_PER_ITERATION = 32 * 20  # the default num_envs x unroll_length
DAGGER_FLAGS = [
    "--iterations",
    str(ITERATIONS),
    "--eval-every",
    "10",
    "--num-eval-envs",
    "32",
    "--no-progress",
    "--num-videos",
    "1",
]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def dagger_run(reach_run, tmp_path_factory) -> tuple[Path, dict]:
    _, teacher_summary = reach_run
    logdir = tmp_path_factory.mktemp("dagger")
    summary = distill.main(
        [*ENV_FLAGS, "--teacher", teacher_summary["policy"], *DAGGER_FLAGS, "--logdir", str(logdir)]
    )
    return Path(summary["run_dir"]), summary


def test_student_reaches_80_percent_of_the_teacher(dagger_run):
    run_dir, summary = dagger_run
    assert summary["teacher_success_rate"] >= 0.9, summary
    assert summary["student_success_rate"] >= 0.8 * summary["teacher_success_rate"], summary
    rows = [r for r in _metrics(run_dir) if "eval/success_rate" in r]
    assert (
        len(rows) == 2 and rows[0]["eval/teacher_success_rate"] == summary["teacher_success_rate"]
    )


def test_run_folder_has_every_output(dagger_run):
    run_dir, summary = dagger_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env_name"] == "FrankaReachStereo" and config["env"]["vision"]["width"] == 48
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert (run_dir / "camera_views.mp4").stat().st_size > 1000
    rows = _metrics(run_dir)
    assert len(rows) == ITERATIONS
    betas = [r["dagger/beta"] for r in rows]
    assert betas[0] == 1.0 and all(b > a for a, b in zip(betas[1:], betas, strict=False))
    for key in ("dagger/action_mse", "dagger/pose_loss", "dagger/buffer_fill"):
        assert key in rows[-1]
    # The buffer aggregates across iterations (true DAgger), up to its size.
    assert rows[-1]["dagger/buffer_fill"] > rows[0]["dagger/buffer_fill"]
    # The student file drives the env on its own (as the ONNX exporter reads it).
    payload = policy_file.read_student(summary["student"], "FrankaReachStereo")
    policy = policy_file.make_student_fn(payload)
    env = registry.load(
        "FrankaReachStereo", config_overrides={"vision.width": 48, "vision.height": 48}
    )
    obs = env.reset(jax.random.PRNGKey(0)).obs
    action = np.asarray(policy(obs, jax.random.PRNGKey(0)))
    assert action.shape == (3,) and np.all(np.abs(action) <= 1)


def test_resume_continues_from_the_checkpoint(dagger_run):
    run_dir, summary = dagger_run
    # The last checkpoint holds the whole loop state, the buffer included.
    config, step, _ = checkpoint.read_config(run_dir)
    assert step == ITERATIONS * STEPS_PER_ITERATION and config["iterations"] == ITERATIONS
    resumed = distill.main(
        [
            "--load-checkpoint-path",
            str(run_dir),
            "--iterations",
            str(ITERATIONS + 1),
            "--no-progress",
            "--num-videos",
            "0",
        ]
    )
    assert resumed["iterations"] == ITERATIONS + 1 and resumed["run_dir"] == str(run_dir)
    rows = _metrics(run_dir)
    assert len(rows) == ITERATIONS + 1 and rows[-1]["dagger/beta"] < rows[-2]["dagger/beta"]
    # The restored buffer kept every sample: one more iteration's worth was added to it.
    assert rows[-1]["dagger/buffer_fill"] == (ITERATIONS + 1) * STEPS_PER_ITERATION


def test_missing_teacher_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        distill.main([*ENV_FLAGS, "--teacher", str(tmp_path / "nope.pkl")])
    assert "nope.pkl' does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        distill.main([*ENV_FLAGS, "--logdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "No teacher found" in err and "train_jax_ppo.py --env_name FrankaReach" in err


def test_mismatched_or_corrupt_teacher_is_a_clear_error(tmp_path, capsys):
    lift = tmp_path / "lift.pkl"
    policy_file.save_policy(
        lift,
        env_name="FrankaLift",
        params=(),
        observation_size={"state": (60,), "privileged_state": (70,)},
        action_size=7,
        policy_hidden_layer_sizes=(8,),
        value_hidden_layer_sizes=(8,),
    )
    with pytest.raises(SystemExit):
        distill.main([*ENV_FLAGS, "--teacher", str(lift)])
    err = capsys.readouterr().err
    assert "trained on 'FrankaLift'" in err and "distils a 'FrankaReach' teacher" in err
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(pickle.dumps({"format": "something else"})[:-3])
    with pytest.raises(SystemExit):
        distill.main([*ENV_FLAGS, "--teacher", str(corrupt)])
    assert "corrupt.pkl' is corrupt" in capsys.readouterr().err


def test_bad_task_and_resume_flags_are_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        distill.main(["--env-name", "FrankaReach", "--teacher", "x.pkl"])
    assert "has no cameras" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        distill.main(["--env-name", "FrankaRech"])
    assert "Did you mean 'FrankaReach'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        distill.main(["--load-checkpoint-path", str(tmp_path), "--batch-size", "4"])
    assert "--batch-size" in capsys.readouterr().err


def test_camera_grid_puts_cameras_side_by_side_and_depth_below():
    from playground.training.video import camera_grid

    rgb = np.zeros((3, 2, 4, 5, 3), np.uint8)
    rgb[:, 1] = 200  # the second camera is bright
    depth = np.zeros((3, 2, 4, 5), np.float32)
    depth[:, 0, :2] = 0.5  # the first camera's top half is near
    grid = camera_grid(rgb, depth, scale=2)
    assert grid.shape == (3, 16, 20, 3) and grid.dtype == np.uint8
    assert np.all(grid[:, :8, :10] == 0) and np.all(grid[:, :8, 10:] == 200)
    assert np.all(grid[:, 8:12, :10] > 0) and np.all(grid[:, 12:, :] == 0)  # no return is black
    assert camera_grid(rgb, None, scale=1).shape == (3, 4, 10, 3)
