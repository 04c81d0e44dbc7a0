"""Files we read cannot run code (issue 28): every loader refuses a crafted pickle, paths inside
files (ONNX metadata, resume configs) lead only to the safetensors reader, the one-time converter
reads legacy files through an allow-list, written files follow the umask, and resume survives
damaged checkpoints."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from onnx import TensorProto, helper
from safetensors.numpy import save

from playground import registry
from playground.files import atomic, legacy_pickle, policy_file
from playground.training import checkpoint

from .conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
TEACHER_V1 = "s2r-playground/ppo-policy/v1"
STUDENT_V1 = "s2r-playground/pixel-student/v1"
OBS = {"state": (3,), "privileged_state": (5,)}


class _RunsCode:
    """Unpickling it creates `marker`: what a crafted file does with any global it names."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _teacher_params(seed: int = 0):
    """(normaliser, policy, value) of a tiny brax PPO network, as the trainer saves them."""
    from brax.training.acme import running_statistics, specs
    from brax.training.agents.ppo import networks as ppo_networks

    nets = ppo_networks.make_ppo_networks(
        OBS,
        2,
        preprocess_observations_fn=running_statistics.normalize,
        policy_hidden_layer_sizes=(4,),
        value_hidden_layer_sizes=(4,),
    )
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    normalizer = running_statistics.init_state(
        {k: specs.Array(v, jnp.float32) for k, v in OBS.items()}
    )
    # Non-trivial statistics, so that a normaliser lost in the round trip would show.
    normalizer = running_statistics.update(
        normalizer, {k: jax.random.normal(k1, (6, *v)) for k, v in OBS.items()}
    )
    return (normalizer, nets.policy_network.init(k1), nets.value_network.init(k2))


NETWORK = {
    "observation_size": OBS,
    "action_size": 2,
    "policy_hidden_layer_sizes": (4,),
    "value_hidden_layer_sizes": (4,),
    "activation": "swish",
    "policy_obs_key": "state",
    "value_obs_key": "privileged_state",
}


def _legacy_teacher(path: Path, extra: dict | None = None) -> Path:
    """A v1 teacher file as the old writer made it: a pickled dict."""
    payload = {
        "format": TEACHER_V1,
        "env_name": "AlohaS2RPick",
        "network": NETWORK,
        "params": jax.tree_util.tree_map(np.asarray, _teacher_params()),
        "extra": {"env_steps": 10, **(extra or {})},
    }
    path.write_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def _evil(tmp_path: Path, name: str = "policy.pkl") -> tuple[Path, Path]:
    """(a real-looking teacher pickle with the payload hidden in `extra`, its marker file)."""
    marker = tmp_path / "ran_code"
    return _legacy_teacher(tmp_path / name, {"note": _RunsCode(marker)}), marker


def _tiny_onnx(inputs: int, actions: int):
    """A valid ONNX policy graph, `action = state @ 0`."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["state", "w"], ["action"])],
        "crafted",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, ["B", inputs])],
        [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["B", actions])],
        [helper.make_tensor("w", TensorProto.FLOAT, [inputs, actions], np.zeros(inputs * actions))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _refused(capsys, main, argv: list[str], path: Path, code: int = 2) -> str:
    """`main(argv)` exits with `code` and one line of error naming `path`, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "Traceback" not in err, err
    return err


# ----- every loader refuses a crafted pickle and runs nothing -----


@pytest.mark.parametrize("name", ["policy.pkl", "student.pkl", "disguised.safetensors", "x.bin"])
def test_python_loaders_refuse_pickles_and_run_nothing(tmp_path, name):
    from playground.deploy import export_cli

    path, marker = _evil(tmp_path, name)
    loaders = [
        policy_file.read_policy,
        policy_file.read_student,
        policy_file.load_policy_fn,
        lambda p: export_cli.load_payload("teacher", p),
        lambda p: export_cli.load_payload("student", p),
    ]
    for load in loaders:
        with pytest.raises(policy_file.LegacyPolicyFileError) as e:
            load(path)
        message = str(e.value)
        assert "\n" not in message and str(path) in message
        assert f"python scripts/convert_policy.py {path}" in message
    assert not marker.exists()


def test_peg_insertion_pick_policy_path_refuses_a_pickle(tmp_path):
    path, marker = _evil(tmp_path)
    with pytest.raises(policy_file.LegacyPolicyFileError, match="convert_policy.py"):
        registry.load(
            "AlohaS2RPegInsertion",
            config_overrides={"phase1": "policy", "pick_policy_path": str(path)},
        )
    assert not marker.exists()


def test_scripts_refuse_a_pickle_with_one_line(tmp_path, capsys):
    from playground.deploy import export_cli
    from playground.training import distill

    path, marker = _evil(tmp_path)
    _refused(capsys, load_script("eval_policy").main, [str(path)], path)
    _refused(capsys, load_script("pick_failures").main, [str(path)], path)
    _refused(capsys, export_cli.main, ["--checkpoint_path", str(path)], path)
    # A run folder from before the safe format: its policy.pkl is named, not "no policy".
    run = tmp_path / "old_run"
    run.mkdir()
    old = _legacy_teacher(run / "policy.pkl", {"note": _RunsCode(marker)})
    _refused(capsys, export_cli.main, ["--checkpoint_path", str(run)], old)
    ship = load_script("ship_policy").main
    _refused(capsys, ship, [str(run), "--name", "x", "--params_dir", str(tmp_path / "p")], old)
    teacher_flag = ["--env-name", "FrankaReachStereo", "--teacher", str(path)]
    _refused(capsys, distill.main, teacher_flag, path)
    assert not marker.exists() and not (tmp_path / "p").exists()


def test_teacher_resume_refuses_a_legacy_best_policy(tmp_path):
    from playground.training import ppo_run

    path, marker = _evil(tmp_path, policy_file.BEST_POLICY_FILE.replace(".safetensors", ".pkl"))
    # Resuming without it would forget the best policy of the run's earlier part.
    with pytest.raises(policy_file.LegacyPolicyFileError, match="best_policy.pkl"):
        ppo_run.best_success(tmp_path / policy_file.BEST_POLICY_FILE)
    assert not marker.exists()


def test_aloha_nets_to_onnx_command_refuses_a_pickle(tmp_path):
    path, marker = _evil(tmp_path)
    out = subprocess.run(
        [sys.executable, "experimental/jax2onnx/aloha_nets_to_onnx.py", "--checkpoint_path", path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = out.stderr.strip().splitlines()
    assert out.returncode == 2 and err and "convert_policy.py" in err[-1], out.stderr
    assert "Traceback" not in out.stderr and not marker.exists()


def test_converter_refuses_globals_outside_its_allow_list(tmp_path, capsys):
    path, marker = _evil(tmp_path)
    err = _refused(capsys, legacy_pickle.main, [str(path)], path)
    assert "refusing to load io.open" in err
    assert not marker.exists() and not path.with_suffix(".safetensors").exists()
    # A bare exploit (not even a policy dict) and a jax array rebuilt through a foreign global.
    bare = tmp_path / "bare.pkl"
    bare.write_bytes(pickle.dumps(_RunsCode(marker)))
    _refused(capsys, legacy_pickle.main, [str(bare)], bare)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="numpy's state"):
        legacy_pickle._numpy_from_jax_reduce(os.getcwd, (), None, {})


# ----- paths inside files lead only to the safetensors reader -----


def test_onnx_metadata_pointing_at_a_pickle_is_refused(tmp_path, capsys):
    from playground.deploy import export, export_cli, sim2sim

    path, marker = _evil(tmp_path)
    crafted = export.save(
        _tiny_onnx(98, 14),
        tmp_path / "crafted.onnx",
        {
            "s2r/format": export_cli.FORMAT,
            "s2r/kind": "teacher",
            "s2r/env_name": "AlohaS2RPegInsertion",
            "s2r/env_config": {"phase1": "policy", "pick_policy_path": str(path)},
        },
    )
    _refused(capsys, sim2sim.main, ["--onnx", str(crafted), "--episodes", "1", "--no-mjx"], path)
    assert not marker.exists()


def test_resume_configs_pointing_at_a_pickle_are_refused(tmp_path, capsys):
    from playground.training import dagger, distill, teacher

    path, marker = _evil(tmp_path)
    ppo_run = tmp_path / "AlohaS2RPegInsertion-crafted"
    ckpt = checkpoint.Checkpointer(ppo_run / checkpoint.CHECKPOINT_DIR)
    config = {
        "env_name": "AlohaS2RPegInsertion",
        "algo": "ppo",
        "env": {"phase1": "policy", "pick_policy_path": str(path)},
    }
    ckpt.save(1000, {"x": np.zeros(1)}, config)
    ckpt.close()
    # Saved run configs are JSON, nothing else.
    assert json.loads((ppo_run / "checkpoints/1000/config/metadata").read_text()) == config
    _refused(capsys, teacher.main, ["--load_checkpoint_path", str(ppo_run)], path)

    dagger_run = tmp_path / "FrankaReachStereo-dagger-crafted"
    ckpt = checkpoint.Checkpointer(dagger_run / checkpoint.CHECKPOINT_DIR)
    config = {
        "env_name": "FrankaReachStereo",
        "env": {},
        "domain_randomization": False,
        "dagger": dagger.default_config().to_dict(),
        "teacher": str(path),
        "encoder": "none",
        "seed": 0,
        "iterations": 2,
        "eval_every": 1,
        "num_eval_envs": 4,
    }
    ckpt.save(20, {"x": np.zeros(1)}, config)
    ckpt.close()
    argv = ["--load-checkpoint-path", str(dagger_run), "--no-progress"]
    _refused(capsys, distill.main, argv, path)
    assert not marker.exists()


# ----- the safetensors files themselves -----


def test_teacher_and_student_round_trip_exactly(tmp_path):
    from brax.training.acme import running_statistics

    params = _teacher_params()
    path = policy_file.save_policy(
        tmp_path / "policy.safetensors",
        env_name="AlohaS2RPick",
        params=params,
        observation_size=OBS,
        action_size=2,
        policy_hidden_layer_sizes=(4,),
        value_hidden_layer_sizes=(4,),
        extra={"env_steps": 10, "config": {"env": {"sizes": (1, 2)}}, "rate": 0.5},
    )
    payload = policy_file.read_policy(path, "AlohaS2RPick")
    expected = jax.tree_util.tree_map(np.asarray, params)
    assert jax.tree.structure(payload["params"]) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(payload["params"]), strict=True):
        assert np.asarray(b).dtype == a.dtype and np.array_equal(np.asarray(b), a)
    normalizer = payload["params"][0]
    assert isinstance(normalizer, running_statistics.RunningStatisticsState)
    assert normalizer.mode is running_statistics.NormalizationMode.WELFORD
    assert payload["network"] == NETWORK and payload["format"] == policy_file.FORMAT
    assert payload["extra"] == {"env_steps": 10, "config": {"env": {"sizes": (1, 2)}}, "rate": 0.5}
    obs = {k: jnp.linspace(-2, 2, v[0]) for k, v in OBS.items()}
    key = jax.random.PRNGKey(0)
    before = policy_file.make_policy_fn({**payload, "params": params})(obs, key)
    after = policy_file.make_policy_fn(payload)(obs, key)
    np.testing.assert_array_equal(np.asarray(before), np.asarray(after))

    student_params = {
        "params": {
            "enc": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4)},
            "head": {"bias": np.float64(1.5) * np.ones(2), "scale": np.asarray(np.float32(2))},
        },
        "stats": {"seen": np.arange(3, dtype=np.uint8), "on": np.array([True, False])},
        "extra_list": [np.zeros((0, 3), np.int32), None, 3],
    }
    spec = {
        "rgb": ((2, 8, 8, 3), "uint8"),
        "depth": ((2, 8, 8), "float32"),
        "proprio": ((4,), "float32"),
    }
    path = policy_file.save_student(
        tmp_path / "student.safetensors",
        env_name="FrankaReachStereo",
        params=student_params,
        network={"action_size": 3, "use_rgb": True, "use_depth": True, "hidden": [16, 16]},
        observation_spec=spec,
    )
    payload = policy_file.read_student(path, "FrankaReachStereo")
    assert jax.tree.structure(payload["params"]) == jax.tree.structure(student_params)
    for a, b in zip(
        jax.tree.leaves(student_params), jax.tree.leaves(payload["params"]), strict=True
    ):
        assert np.asarray(b).dtype == np.asarray(a).dtype and np.array_equal(b, a)
    assert payload["observation_spec"] == spec and list(payload["observation_spec"]) == list(spec)
    assert payload["network"]["hidden"] == (16, 16)


def _crafted(path: Path, body: dict, tensors: dict | None = None, fmt: str = policy_file.FORMAT):
    path.write_bytes(save(tensors or {}, metadata={"format": fmt, "s2r": json.dumps(body)}))
    return path


def test_crafted_safetensors_files_are_refused_clearly(tmp_path):
    net = {**NETWORK, "observation_size": {"state": [3]}}
    good_tree = {"tuple": [{"dict": {}}, {"dict": {}}, {"dict": {}}]}
    cases = {
        "unknown struct": {
            "env_name": "e",
            "network": net,
            "extra": {},
            "params": {
                "tuple": [
                    {"struct": "os.system", "fields": {}, "static": {}},
                    {"dict": {}},
                    {"dict": {}},
                ]
            },
        },
        "no env_name": {"network": net, "extra": {}, "params": good_tree},
        "activation": {
            "env_name": "e",
            "network": {**net, "activation": "initializers"},
            "extra": {},
            "params": good_tree,
        },
        "missing tensor": {
            "env_name": "e",
            "network": net,
            "extra": {},
            "params": {"tuple": [{"array": "params/0"}, {"dict": {}}, {"dict": {}}]},
        },
        "not a node": {"env_name": "e", "network": net, "extra": {}, "params": {"eval": "1"}},
    }
    for name, body in cases.items():
        path = _crafted(tmp_path / f"{name.replace(' ', '_')}.safetensors", body)
        with pytest.raises(policy_file.PolicyFileError, match="is corrupt") as e:
            policy_file.read_policy(path)
        assert "\n" not in str(e.value), name
    # Tensors the tree does not name are not silently carried along.
    hidden = _crafted(
        tmp_path / "hidden.safetensors",
        {"env_name": "e", "network": net, "extra": {}, "params": good_tree},
        {"payload": np.zeros(3, np.uint8)},
    )
    with pytest.raises(policy_file.PolicyFileError, match="not in the tree"):
        policy_file.read_policy(hidden)
    # A safetensors file from elsewhere (a hub model) is not taken for a policy.
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(save({"a": np.zeros(1)}))
    with pytest.raises(policy_file.PolicyFileError, match="has format None"):
        policy_file.read_policy(plain)


def test_converter_keeps_every_array_of_a_legacy_teacher_and_student(tmp_path, capsys):
    src = _legacy_teacher(tmp_path / "best_policy.pkl")
    legacy_pickle.main([str(src)])
    dst = tmp_path / "best_policy.safetensors"
    assert str(dst) in capsys.readouterr().out
    new = policy_file.read_policy(dst, "AlohaS2RPick")
    old = jax.tree_util.tree_map(np.asarray, _teacher_params())
    for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(new["params"]), strict=True):
        assert np.asarray(b).dtype == a.dtype and np.array_equal(np.asarray(b), a)
    assert new["network"] == NETWORK and new["extra"] == {"env_steps": 10}
    # The output is never overwritten by accident.
    _refused(capsys, legacy_pickle.main, [str(src), str(dst)], dst)

    student = tmp_path / "student.pkl"
    params = {"params": {"head": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}}
    student.write_bytes(
        pickle.dumps(
            {
                "format": STUDENT_V1,
                "env_name": "FrankaReachStereo",
                "network": {"action_size": 3, "hidden": (8,)},
                "observation_spec": {"rgb": ((2, 8, 8, 3), "uint8"), "proprio": ((4,), "float32")},
                "params": params,
                "extra": {"iterations": 2},
            }
        )
    )
    out = legacy_pickle.convert(student, tmp_path / "converted.safetensors")
    payload = policy_file.read_student(out, "FrankaReachStereo")
    np.testing.assert_array_equal(
        payload["params"]["params"]["head"]["kernel"], params["params"]["head"]["kernel"]
    )
    assert list(payload["observation_spec"]) == ["rgb", "proprio"]


# ----- written files: umask and durability -----


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_written_files_follow_the_umask(tmp_path, umask):
    from playground.deploy import export
    from playground.training.run_files import write_json

    old = os.umask(umask)
    try:
        written = [
            policy_file.save_policy(
                tmp_path / "policy.safetensors",
                env_name="AlohaS2RPick",
                params=((), (), ()),
                observation_size=OBS,
                action_size=2,
                policy_hidden_layer_sizes=(4,),
                value_hidden_layer_sizes=(4,),
            ),
            policy_file.save_student(
                tmp_path / "student.safetensors",
                env_name="FrankaReachStereo",
                params={},
                network={"action_size": 3},
                observation_spec={},
            ),
            export.save(_tiny_onnx(3, 2), tmp_path / "p.onnx", {"s2r/kind": "teacher"}),
        ]
        write_json(tmp_path / "final.json", {"a": 1})
        written.append(tmp_path / "final.json")
    finally:
        os.umask(old)
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)


def test_atomic_write_syncs_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(
        atomic.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))
    )
    atomic.write_bytes(tmp_path / "f.bin", b"data")
    assert events[:2] == ["fsync", "replace"] and (tmp_path / "f.bin").read_bytes() == b"data"


# ----- resume from damaged checkpoint folders -----


STATE = {"w": np.arange(4096, dtype=np.float32), "b": {"c": np.ones((3, 3))}}


def _two_checkpoints(tmp_path: Path) -> Path:
    ckpt = checkpoint.Checkpointer(tmp_path / "checkpoints")
    ckpt.save(1000, STATE, {"step": 1000})
    ckpt.save(2000, {"w": STATE["w"] + 1, "b": STATE["b"]}, {"step": 2000})
    ckpt.close()
    return tmp_path / "checkpoints"


def _restores_1000_with_a_warning(tmp_path: Path, root: Path) -> None:
    with pytest.warns(checkpoint.CheckpointFallbackWarning) as record:
        state, config, step = checkpoint.restore(tmp_path, STATE)
    assert step == 1000 and config == {"step": 1000}
    np.testing.assert_array_equal(state["w"], STATE["w"])
    message = str(record[0].message)
    assert str(root / "2000") in message and str(root / "1000") in message


def test_resume_falls_back_past_truncated_state_files(tmp_path):
    root = _two_checkpoints(tmp_path)
    for f in (root / "2000" / "state").rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    _restores_1000_with_a_warning(tmp_path, root)
    # The resumed run writes step 2000 again: the damaged folder is moved aside, not in the way.
    ckpt = checkpoint.Checkpointer(root)
    with pytest.warns(checkpoint.CheckpointFallbackWarning, match="moved it to"):
        ckpt.save(2000, STATE, {"step": 2000})
    ckpt.close()
    assert checkpoint.restore(tmp_path, STATE)[2] == 2000
    assert (root / "2000.unusable-1").is_dir()


def test_resume_falls_back_past_a_deleted_state_folder(tmp_path):
    root = _two_checkpoints(tmp_path)
    shutil.rmtree(root / "2000" / "state")
    _restores_1000_with_a_warning(tmp_path, root)


def test_stray_and_half_copied_entries_are_ignored(tmp_path, recwarn):
    root = _two_checkpoints(tmp_path)
    # Half-copied: config present, state/ empty, no commit marker.
    (root / "3000" / "config").mkdir(parents=True)
    (root / "3000" / "config" / "metadata").write_text('{"step": 3000}')
    (root / "3000" / "state").mkdir()
    (root / "4000").write_text("a stray file named like a step")
    (root / "5000.orbax-checkpoint-tmp-17").mkdir()
    config, step, step_dir = checkpoint.read_config(tmp_path)
    assert (config, step, step_dir) == ({"step": 2000}, 2000, root / "2000")
    assert checkpoint.steps_after(root, 2000) == [] and checkpoint.steps_after(root, 1000) == [2000]
    assert checkpoint.restore(tmp_path, STATE)[2] == 2000
    assert not [w for w in recwarn if issubclass(w.category, checkpoint.CheckpointFallbackWarning)]
    with pytest.raises(checkpoint.CheckpointError, match="incomplete"):
        checkpoint.read_config(root / "3000")


def test_all_checkpoints_damaged_is_one_clear_error(tmp_path):
    root = _two_checkpoints(tmp_path)
    for step in ("1000", "2000"):
        shutil.rmtree(root / step / "state")
    with pytest.raises(checkpoint.CheckpointError, match="older checkpoint"):
        checkpoint.restore(tmp_path, STATE)


def test_state_banks_hold_arrays_only_and_fit_their_scene(tmp_path):
    """A state bank (.npz) is read without pickle, and one for another scene, with NaNs or with
    an object array (which would need pickle) is refused with the file's name and the reason."""
    import mujoco

    from playground.envs.aloha import constants as c
    from playground.files import state_bank

    m = mujoco.MjModel.from_xml_path(str(c.PEG_INSERTION_XML))
    good = tmp_path / "bank.npz"
    q, v, u = np.zeros((3, m.nq)), np.zeros((3, m.nv)), np.zeros((3, m.nu))
    state_bank.save(good, q, v, u, {"env_name": "AlohaS2RPegInsertion"})
    bank = state_bank.load(good, m)
    assert bank["qpos"].shape == (3, m.nq) and bank["meta"]["env_name"] == "AlohaS2RPegInsertion"

    wrong = tmp_path / "wrong.npz"
    state_bank.save(wrong, np.zeros((3, m.nq + 1)), v, u, {})
    nan = tmp_path / "nan.npz"
    state_bank.save(nan, np.full((3, m.nq), np.nan), v, u, {})
    objects = tmp_path / "objects.npz"
    np.savez(objects, qpos=np.array([object()], dtype=object), qvel=v, ctrl=u, meta="{}")
    lacking = tmp_path / "lacking.npz"
    np.savez(lacking, qpos=q)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    for path, why in (
        (wrong, "shape"),
        (nan, "non-finite"),
        (objects, "not a readable state bank"),
        (lacking, "lacks qvel, ctrl, meta"),
        (junk, "not a readable state bank"),
        (tmp_path / "missing.npz", "no such state bank"),
    ):
        with pytest.raises(state_bank.StateBankError, match=why) as e:
            state_bank.load(path, m)
        assert path.name in str(e.value)
