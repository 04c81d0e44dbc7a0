"""experimental/train_dagger.py: a pixel student learns from the CPU-trained reach teacher; run
outputs, resume, and clear errors for a missing or mismatched teacher."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from playground.files import policy_file
from playground.training import checkpoint, distill
from tests.conftest import TINY_STEPS

# The learning test: FrankaReachStereo through both stereo cameras at 48x48, the command of
# docs/distillation.md.
# It takes about 5 minutes on 2 cores, which the 20-minute CI budget cannot hold next to the rest,
# so it is `slow`; CI runs the same CLI on a tiny budget (`tiny_dagger_run`) for outputs and resume.
ENV_FLAGS = [
    "--env-name",
    "FrankaReachStereo",
    "--env-config",
    "vision.width=48",
    "--env-config",
    "vision.height=48",
]
ITERATIONS = 20


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_student_reaches_80_percent_of_the_teacher(reach_run, tmp_path):
    _, teacher_summary = reach_run
    summary = distill.main(
        [
            *ENV_FLAGS,
            "--teacher",
            teacher_summary["policy"],
            "--iterations",
            str(ITERATIONS),
            "--num-eval-envs",
            "32",
            "--no-progress",
            "--logdir",
            str(tmp_path),
        ]
    )
    assert summary["teacher_success_rate"] >= 0.9, summary
    assert summary["student_success_rate"] >= 0.8 * summary["teacher_success_rate"], summary
    rows = [r for r in _metrics(Path(summary["run_dir"])) if "eval/success_rate" in r]
    assert (
        len(rows) == 2 and rows[0]["eval/teacher_success_rate"] == summary["teacher_success_rate"]
    )


def test_run_folder_has_every_output(tiny_dagger_run):
    run_dir, summary = tiny_dagger_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env_name"] == "FrankaReachStereo" and config["env"]["vision"]["width"] == 32
    assert config["dagger"]["num_envs"] == 4 and config["teacher"] == summary["teacher"]
    # --domain-randomization: per-env physics and the visual randomisation of the task.
    assert config["domain_randomization"] and config["env"]["vision"]["visual_dr"]["enabled"]
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert (run_dir / "camera_views.mp4").stat().st_size > 1000
    assert 0.0 <= summary["student_success_rate"] <= 1.0
    rows = _metrics(run_dir)
    assert len(rows) == 2 and rows[0]["dagger/beta"] == 1.0 and rows[1]["dagger/beta"] < 1.0
    for key in (
        "dagger/action_mse",
        "dagger/pose_loss",
        "eval/success_rate",
        "eval/teacher_success_rate",
    ):
        assert key in rows[-1]
    # The buffer aggregates across iterations (true DAgger).
    assert [r["dagger/buffer_fill"] for r in rows] == [TINY_STEPS, 2 * TINY_STEPS]
    # The student file rebuilds the network on its own (as the ONNX exporter reads it).
    payload = policy_file.read_student(summary["student"], "FrankaReachStereo")
    spec = payload["observation_spec"]
    assert spec["rgb"] == ((2, 32, 32, 3), "uint8") and spec["proprio"] == ((24,), "float32")
    obs = {k: np.zeros(shape, dtype) for k, (shape, dtype) in spec.items()}
    action = np.asarray(policy_file.make_student_fn(payload)(obs, jax.random.PRNGKey(0)))
    assert action.shape == (3,) and np.all(np.abs(action) <= 1)


# Slow: a resumed run compiles its loop and evaluation again (about 3 minutes on 2 cores, see
# docs/results.md, "Test suite"). CI keeps the teacher's resume (test_train_ppo.py); the student's
# is also in the slow latent and Aloha runs below.
@pytest.mark.slow
def test_resume_continues_from_the_checkpoint(tiny_dagger_run):
    run_dir, _ = tiny_dagger_run
    config, step, _ = checkpoint.read_config(run_dir)
    assert step == 2 * TINY_STEPS and config["iterations"] == 2
    resumed = distill.main(
        ["--load-checkpoint-path", str(run_dir), "--iterations", "3", "--no-progress"]
    )
    assert resumed["iterations"] == 3 and resumed["run_dir"] == str(run_dir)
    rows = _metrics(run_dir)
    assert len(rows) == 3 and rows[-1]["dagger/beta"] < rows[-2]["dagger/beta"]
    # The restored buffer kept every sample: one more iteration's worth was added to it.
    assert rows[-1]["dagger/buffer_fill"] == 3 * TINY_STEPS
    assert checkpoint.read_config(run_dir)[1] == 3 * TINY_STEPS


def test_missing_teacher_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        distill.main([*ENV_FLAGS, "--teacher", str(tmp_path / "nope.safetensors")])
    assert "nope.safetensors' does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        distill.main([*ENV_FLAGS, "--logdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "No teacher found" in err and "train_jax_ppo.py --env_name FrankaReach" in err


def test_mismatched_or_corrupt_teacher_is_a_clear_error(tmp_path, capsys):
    lift = tmp_path / "lift.safetensors"
    policy_file.save_policy(
        lift,
        env_name="FrankaLift",
        params=((), (), ()),
        observation_size={"state": (60,), "privileged_state": (70,)},
        action_size=7,
        policy_hidden_layer_sizes=(8,),
        value_hidden_layer_sizes=(8,),
    )
    with pytest.raises(SystemExit):
        distill.main([*ENV_FLAGS, "--teacher", str(lift)])
    err = capsys.readouterr().err
    assert "trained on 'FrankaLift'" in err and "distils a 'FrankaReach' teacher" in err
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(lift.read_bytes()[:-3])
    with pytest.raises(SystemExit):
        distill.main([*ENV_FLAGS, "--teacher", str(corrupt)])
    assert "corrupt.safetensors' is corrupt" in capsys.readouterr().err


def test_bad_task_and_resume_flags_are_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        distill.main(["--env-name", "FrankaReach", "--teacher", "x.safetensors"])
    assert "has no cameras" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        distill.main(["--env-name", "FrankaRech"])
    assert "Did you mean 'FrankaReach'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        distill.main(["--load-checkpoint-path", str(tmp_path), "--batch-size", "4"])
    assert "--batch_size" in capsys.readouterr().err


def test_default_command_distils_the_aloha_student_from_the_shipped_teachers(tmp_path):
    """`train_dagger.py --domain-randomization`, as Playground's users type it: the whole Aloha
    task from the table, the composite of the shipped teachers, randomisation on."""
    from playground.training import run_config

    args = distill.build_parser().parse_args(["--domain-randomization", "--logdir", str(tmp_path)])
    config = distill.make_run_config(args)
    assert config["env_name"] == "AlohaS2RPegInsertionDistill"
    shipped = run_config.SHIPPED_TEACHERS
    assert config["teacher"] == str(shipped["AlohaS2RPegInsertion"])
    assert config["pick_teacher"] == str(shipped["AlohaS2RPick"])
    assert config["env"]["phase1"] == "agent" and config["env"]["episode_length"] == 160
    assert config["dagger"]["episode_length"] == 160 and config["dagger"]["student"] == "latent"
    assert config["domain_randomization"] and config["env"]["vision"]["visual_dr"]["enabled"]
    # The insertion alone (both objects held) has one teacher.
    args = distill.build_parser().parse_args(["--env_config", "phase1=lifted"])
    assert distill.make_run_config(args)["pick_teacher"] == ""


def test_wrong_teacher_files_for_the_aloha_student_are_clear_errors(tmp_path, capsys):
    from playground.training import run_config

    pick = str(run_config.SHIPPED_TEACHERS["AlohaS2RPick"])
    insert = str(run_config.SHIPPED_TEACHERS["AlohaS2RPegInsertion"])
    # The two teachers swapped.
    with pytest.raises(SystemExit):
        distill.main(["--teacher", pick, "--logdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "--teacher" in err and "trained on 'AlohaS2RPick'" in err
    assert "distils a 'AlohaS2RPegInsertion' teacher" in err
    with pytest.raises(SystemExit):
        distill.main(["--pick_teacher", insert, "--logdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "--pick_teacher" in err and "distils a 'AlohaS2RPick' teacher" in err
    # A student file given as a teacher says what it is.
    student = tmp_path / "student.safetensors"
    policy_file.save_student(
        student,
        env_name="AlohaS2RPegInsertionDistill",
        params={"params": {"w": np.zeros(2, np.float32)}},
        network={"action_size": 14},
        observation_spec={"proprio": ((65,), "float32")},
    )
    with pytest.raises(SystemExit):
        distill.main(["--teacher", str(student), "--logdir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "student.safetensors" in err and "(a pixel student)" in err
    assert "(a teacher policy)" in err
    # A task without a pick phase takes no pick teacher.
    with pytest.raises(SystemExit):
        distill.main([*ENV_FLAGS, "--pick_teacher", pick, "--logdir", str(tmp_path)])
    assert "--pick_teacher: FrankaReachStereo" in capsys.readouterr().err


def test_run_exports_one_onnx_per_checkpoint_as_playground_lays_them_out(tiny_dagger_run, tmp_path):
    """`aloha_nets_to_onnx.py --checkpoint_path <distill run>`: `<run name>/<env steps>.onnx`
    for the student of every checkpoint, each through the parity gate."""
    from playground.deploy import export_cli

    run_dir, _ = tiny_dagger_run
    students = sorted((run_dir / policy_file.STUDENT_CHECKPOINTS_DIR).glob("*.safetensors"))
    steps = sorted(int(p.stem) for p in students)
    assert steps[:2] == [TINY_STEPS, 2 * TINY_STEPS]
    results = export_cli.main(["--checkpoint_path", str(run_dir), "--output_dir", str(tmp_path)])
    written = sorted(int(Path(r["onnx"]).stem) for r in results)
    assert written == steps
    assert all(Path(r["onnx"]).parent == tmp_path / run_dir.name for r in results)
    assert all(r["parity_max_abs_diff"] <= 1e-5 for r in results)
    # Without --output_dir the layout is Playground's, under experimental/jax2onnx/.
    (source,) = [s for s in export_cli.find_sources(run_dir) if s.path == students[0]]
    assert source.onnx == export_cli.ONNX_POLICIES / run_dir.name / f"{steps[0]}.onnx"


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


# `rollout="steps"` is not the default, and its two compilations take about a minute of CI.
@pytest.mark.slow
def test_rollout_in_steps_collects_what_the_scan_collects(reach_run):
    """The per-step rollout (`rollout="steps"`) writes the buffer the one-scan rollout writes."""
    from playground import registry
    from playground.training import dagger, dagger_run

    env = registry.load(
        "FrankaReachStereo", config_overrides={"vision.width": 32, "vision.height": 32}
    )
    teacher = dagger_run.load_teacher(reach_run[1]["policy"], env)
    buffers = {}
    for rollout in ("scan", "steps"):
        cfg = dagger.default_config()
        cfg.update(
            student="latent",
            features=16,
            hidden=(16,),
            num_envs=4,
            unroll_length=3,
            buffer_size=32,
            rollout=rollout,
        )
        student = dagger_run.make_student(env, cfg)
        params, _ = dagger_run.init_student_params(
            student, env, jax.random.PRNGKey(0), str(distill.DEFAULT_ENCODER)
        )
        loop = dagger.Dagger(env, teacher, student, cfg, type(env).POSE_BODY)
        assert loop.rollout == rollout
        state, metrics = loop.collect(loop.init(jax.random.PRNGKey(1), params))
        assert int(state.iteration) == 1 and float(metrics["buffer_fill"]) == 12
        buffers[rollout] = jax.tree.map(np.asarray, state.buffer)
    assert set(buffers["steps"]) == {"rgb_latent", "proprio", "action", "pose"}
    for key, value in buffers["scan"].items():
        np.testing.assert_allclose(buffers["steps"][key], value, rtol=1e-4, atol=1e-5)
    assert np.any(buffers["steps"]["rgb_latent"][:12]) and not np.any(buffers["steps"]["pose"][12:])


# About 100 s (its own compilations and the export) that the 20-minute CI budget cannot hold;
# the latent student's parts are tested in CI by test_student_dagger.py.
@pytest.mark.slow
def test_latent_student_run_writes_resumes_and_exports(tiny_latent_run, tmp_path):
    from playground.deploy import export_cli

    run_dir, summary = tiny_latent_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dagger"]["student"] == "latent"
    payload = policy_file.read_student(summary["student"], "FrankaReachStereo")
    assert payload["network"]["kind"] == "latent"
    assert "Dense_0" not in payload["params"]["params"]["rgb_encoder"]
    spec = payload["observation_spec"]
    obs = {k: np.zeros(shape, dtype) for k, (shape, dtype) in spec.items()}
    action = np.asarray(policy_file.make_student_fn(payload)(obs, jax.random.PRNGKey(0)))
    assert action.shape == (3,) and np.all(np.abs(action) <= 1)
    resumed = distill.main(
        ["--load-checkpoint-path", str(run_dir), "--iterations", "3", "--no-progress"]
    )
    assert resumed["iterations"] == 3
    assert _metrics(run_dir)[-1]["dagger/buffer_fill"] == 3 * TINY_STEPS
    # The exporter's parity gate (1e-5 on recorded observations) passes for this kind too.
    (result,) = export_cli.main(
        ["--checkpoint_path", resumed["student"], "--output_dir", str(tmp_path)]
    )
    assert Path(result["onnx"]).is_file() and result["parity_max_abs_diff"] <= 1e-5


@pytest.mark.slow
def test_tiny_aloha_run_writes_a_student_resumes_and_exports(tmp_path):
    """The default command on a tiny budget: the whole Aloha task from the shipped teachers, a
    student per checkpoint, a resume, and the Playground export layout."""
    from playground.deploy import export_cli

    flags = [
        "--domain-randomization",
        "--env_config",
        "impl=native",
        "--iterations",
        "2",
        "--eval_every",
        "1",
        "--num_eval_envs",
        "4",
        "--num_envs",
        "4",
        "--unroll_length",
        "5",
        "--updates_per_iteration",
        "4",
        "--update_unroll",
        "2",
        "--batch_size",
        "16",
        "--num_videos",
        "0",
        "--no-progress",
        "--logdir",
        str(tmp_path / "runs"),
    ]
    summary = distill.main(flags)
    assert summary["env_name"] == "AlohaS2RPegInsertionDistill"
    assert summary["teacher_success_rate"] >= 0.75, summary  # the composite teacher, 4 starts
    run_dir = Path(summary["run_dir"])
    payload = policy_file.read_student(summary["student"], "AlohaS2RPegInsertionDistill")
    spec = payload["observation_spec"]
    assert spec["rgb"][0] == (2, 32, 32, 3) and spec["depth"][0] == (2, 32, 32)
    assert spec["proprio"][0] == (65,)
    resumed = distill.main(
        ["--load-checkpoint-path", str(run_dir), "--iterations", "3", "--no-progress"]
    )
    assert resumed["iterations"] == 3
    results = export_cli.main(
        ["--checkpoint_path", str(run_dir), "--output_dir", str(tmp_path / "onnx")]
    )
    assert sorted(Path(r["onnx"]).name for r in results) == ["20.onnx", "40.onnx", "60.onnx"]
    assert all(r["parity_max_abs_diff"] <= 1e-5 for r in results)
