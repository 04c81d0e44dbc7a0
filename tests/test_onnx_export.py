"""ONNX export (experimental/jax2onnx/aloha_nets_to_onnx.py) and OnnxPolicy: parity with JAX for
both network types on recorded env observations, metadata, and clear errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from playground.deploy import export, export_cli
from playground.deploy.onnx_policy import OnnxPolicy, OnnxPolicyError


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_onnx_matches_jax_on_recorded_observations(exported, kind):
    path, payload, observations = exported[kind]
    policy = OnnxPolicy(path)
    ours = policy(observations)
    reference = export.jax_actions(payload, observations)
    assert ours.shape == reference.shape == (4 * 17, 3)
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)
    # Real observations, not constants: the actions vary along the rollouts.
    assert np.ptp(reference, axis=0).max() > 1e-3
    # One observation without the batch axis gives one action.
    single = {k: v[0] for k, v in observations.items()}
    np.testing.assert_allclose(policy(single), reference[0], atol=1e-5, rtol=0)
    assert policy.last_latency_s > 0


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_metadata_describes_the_policy(exported, kind):
    path, payload, _ = exported[kind]
    meta = OnnxPolicy(path).metadata
    assert meta["s2r/format"] == export_cli.FORMAT and meta["s2r/kind"] == kind
    assert meta["s2r/env_name"] == payload["env_name"]
    assert meta["s2r/control_hz"] == pytest.approx(20.0)
    assert meta["s2r/action"]["range"] == [-1.0, 1.0]
    assert meta["s2r/action"]["scaling"]["action_scale"] == pytest.approx(0.04)
    assert meta["s2r/source_sha256"] == export.file_sha256(meta["s2r/source"])
    assert meta["s2r/parity"]["max_abs_diff"] <= 1e-5
    inputs = {name: spec["shape"] for name, spec in meta["s2r/inputs"].items()}
    want = (
        {"state": ["B", 33]}
        if kind == "teacher"
        else {"rgb": ["B", 2, 32, 32, 3], "proprio": ["B", 24]}
    )
    assert inputs == want
    # One self-contained file: no external weight sidecar next to it.
    model = onnx.load(path, load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def test_parity_failure_stops_the_export(exported, tmp_path):
    path, payload, observations = exported["student"]
    model = onnx.load(path)
    weight = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    values = onnx.numpy_helper.to_array(weight) + np.float32(0.01)
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    with pytest.raises(export.ParityError, match="the export is not written"):
        export.check_parity(model, payload, observations)


def test_bad_files_and_inputs_are_clear_errors(exported, tmp_path, capsys):
    path, _, observations = exported["teacher"]
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        OnnxPolicy(tmp_path / "nope.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx model")
    with pytest.raises(OnnxPolicyError, match="corrupt.onnx.*cannot be loaded"):
        OnnxPolicy(corrupt)
    policy = OnnxPolicy(path)
    state = observations["state"]
    with pytest.raises(OnnxPolicyError, match="Missing input"):
        policy({"proprio": state})
    with pytest.raises(OnnxPolicyError, match="dtype float64"):
        policy({"state": state.astype(np.float64)})
    with pytest.raises(OnnxPolicyError, match=r"shape \(4, 32\)"):
        policy({"state": state[:4, :32]})
    bad = state.copy()
    bad[0, 0] = np.nan
    with pytest.raises(OnnxPolicyError, match="non-finite"):
        policy({"state": bad})
    student_policy = OnnxPolicy(exported["student"][0])
    images = exported["student"][2]
    with pytest.raises(OnnxPolicyError, match="'rgb' has dtype float32"):
        student_policy({**images, "rgb": images["rgb"].astype(np.float32)})
    with pytest.raises(SystemExit):
        export_cli.main(["--checkpoint_path", str(tmp_path)])
    assert "No policy in" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_cli.main(["--checkpoint_path", str(corrupt)])
    assert "corrupt" in capsys.readouterr().err


def test_export_prints_our_line_not_library_noise(tiny_dagger_run, tmp_path, capsys, caplog):
    """Exporting the conv student used to log six onnx_ir 'value type ... is not known'
    warnings: the console shows the result line only."""
    import logging

    source = tiny_dagger_run[0] / "student.safetensors"
    with caplog.at_level(logging.WARNING):
        export_cli.main(["--checkpoint_path", str(source), "--output_dir", str(tmp_path)])
    assert not [r for r in caplog.records if r.name.startswith("onnx_ir")], caplog.records
    out = capsys.readouterr()
    assert out.out.startswith("student: ") and "onnx_ir" not in out.err
