"""CIFAR-10 loading, NatureCNN pretraining, and the shipped pretrained-encoder params.

The loader is checked on tiny archives built here in the standard CIFAR-10 python format; training
and the shipped card are checked on the real CIFAR-10 subset in ../shared/data (skipped without it).
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
import tarfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import playground  # noqa: F401  (XLA flags + compilation cache before jax starts)
from playground.data.cifar10 import load_cifar10
from playground.networks.nature_cnn import (
    CifarClassifier,
    NatureCNN,
    encoder_params,
    load_classifier,
    load_pretrained,
)

from .conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "params" / "nature_cnn_cifar10"
BATCH_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _script():
    return load_script("pretrain_nature_cnn")


@pytest.fixture(scope="module")
def script():
    return _script()


@pytest.fixture(scope="module")
def subset(script):
    if not Path(script.DEFAULT_DATA).is_file():
        pytest.skip(f"the CIFAR-10 subset {script.DEFAULT_DATA.resolve()} is not on this machine")
    return load_cifar10(script.DEFAULT_DATA)


def _batches(n: int = 3) -> dict[str, dict[bytes, object]]:
    """Six batches shaped like the real pickles: bytes keys, channel-first [n, 3072] uint8 rows."""
    rng = np.random.default_rng(0)
    return {
        name: {
            b"batch_label": f"batch {b}".encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{b}_{i}.png".encode() for i in range(n)],
        }
        for b, name in enumerate(BATCH_NAMES)
    }


def _write_archive(tmp: Path, batches, protocol: int = 2) -> Path:
    path = tmp / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, batch in batches.items():
            raw = pickle.dumps(batch, protocol=protocol)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def _check(loaded, batches, n: int = 3) -> None:
    x_train, y_train, x_test, y_test, description = loaded
    assert x_train.shape == (5 * n, 32, 32, 3) and x_test.shape == (n, 32, 32, 3)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.int32 and y_test.dtype == np.int32
    assert y_train.tolist() == sum((batches[b][b"labels"] for b in BATCH_NAMES[:5]), [])
    assert y_test.tolist() == batches["test_batch"][b"labels"]
    # CIFAR rows are 1024 red, then 1024 green, then 1024 blue values, each row-major.
    row = batches["data_batch_2"][b"data"][1]
    image = x_train[n + 1]
    for r, c in ((0, 0), (5, 17), (31, 30)):
        assert image[r, c].tolist() == [row[ch * 1024 + r * 32 + c] for ch in range(3)]
    assert "CIFAR-10 subset" in description
    assert f"{5 * n} train / {n} test images" in description


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_loader_reads_standard_archive(tmp_path, protocol):
    batches = _batches()
    archive = _write_archive(tmp_path, batches, protocol)
    loaded = load_cifar10(archive)
    _check(loaded, batches)
    assert "cifar-10-python.tar.gz" in loaded[4]
    # A folder holding the archive works too.
    _check(load_cifar10(tmp_path), batches)


def test_loader_reads_extracted_folder_and_npz(tmp_path):
    batches = _batches()
    folder = tmp_path / "x" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    _check(load_cifar10(tmp_path / "x" / "cifar-10-batches-py"), batches)
    _check(load_cifar10(tmp_path / "x"), batches)

    def stack(names):
        return np.concatenate([batches[b][b"data"] for b in names]).reshape(-1, 3, 32, 32)

    npz = tmp_path / "small.npz"
    np.savez(
        npz,
        x_train=stack(BATCH_NAMES[:5]),
        y_train=np.array(sum((batches[b][b"labels"] for b in BATCH_NAMES[:5]), []), np.uint8),
        x_test=stack(["test_batch"]),
        y_test=np.array(batches["test_batch"][b"labels"], np.uint8),
    )
    loaded = load_cifar10(npz)
    _check(loaded, batches)
    assert loaded[4].startswith("CIFAR-10 subset (small.npz)")


def test_loader_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="Accepted: the archive cifar-10-python"):
        load_cifar10(tmp_path / "missing.tar.gz")
    other = tmp_path / "images.txt"
    other.write_text("not cifar")
    with pytest.raises(ValueError, match=r"images\.txt is not a CIFAR-10 source\. Accepted"):
        load_cifar10(other)
    with pytest.raises(ValueError, match="folder without CIFAR-10 batches"):
        load_cifar10(tmp_path)
    batches = _batches()
    del batches["data_batch_3"]
    (tmp_path / "short").mkdir()
    with pytest.raises(ValueError, match=r"lacks the CIFAR-10 batches \['data_batch_3'\]"):
        load_cifar10(_write_archive(tmp_path / "short", batches))
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=r"broken\.npz is not a readable \.npz"):
        load_cifar10(broken)


def test_loader_refuses_pickles_that_are_not_arrays(tmp_path):
    batches = _batches()
    batches["test_batch"][b"labels"] = io.BytesIO(b"")  # any class outside numpy
    (tmp_path / "evil").mkdir()
    with pytest.raises(ValueError, match=r"test_batch is not a readable CIFAR-10 batch.*refusing"):
        load_cifar10(_write_archive(tmp_path / "evil", batches))


def test_nature_cnn_shapes_and_encoder_params():
    model = CifarClassifier(features=64)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    enc = encoder_params(variables)
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 3, 32, 32, 3))
    features = NatureCNN(features=64).apply(enc, x)
    assert features.shape == (2, 3, 64)
    assert model.apply(variables, x).shape == (2, 3, 10)
    # The classifier's logits are its head applied to exactly these encoder features.
    head = variables["params"]["head"]
    logits = features @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(logits, model.apply(variables, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(KeyError, match="No 'encoder'"):
        encoder_params({"params": {"Dense_0": {}}})


def test_pretraining_on_subset_beats_chance(script, subset):
    x_train, y_train, x_test, y_test, _ = subset
    result = script.train(x_train, y_train, x_test, y_test, epochs=2, log=None)
    # Chance is 0.10; two epochs reached 0.36 to 0.38 (seeds 0..4, measured on 2 CPU cores).
    assert result.test_accuracy >= 0.25, result.history
    assert len(result.history) == 2


def test_shipped_params_load_and_name_their_data():
    if not SHIPPED.is_dir():
        pytest.fail(f"{SHIPPED} is missing: run scripts/pretrain_nature_cnn.py to ship it")
    enc, card = load_pretrained(SHIPPED)
    assert NatureCNN(features=card["features"]).apply(enc, jnp.zeros((1, 32, 32, 3))).shape == (
        1,
        card["features"],
    )
    if card["full_cifar10"]:
        assert card["data"].startswith("CIFAR-10 (") and card["train_images"] == 50000
    else:
        assert card["data"].startswith("CIFAR-10 subset (")
        assert "subset" in card["note"] and f"{card['train_images']} of 50000" in card["note"]
    assert "pretrain_nature_cnn.py" in card["command"]
    # The card can be passed instead of the folder.
    enc_from_card, _ = load_pretrained(SHIPPED.with_name(SHIPPED.name + ".json"))
    jax.tree.map(np.testing.assert_array_equal, enc, enc_from_card)


def test_shipped_card_accuracy_matches_reevaluation(script, subset):
    params, card = load_classifier(SHIPPED)
    x_train, _, x_test, y_test, description = subset
    if card["data"] != description:
        pytest.skip(f"shipped params saw {card['data']!r}, not {description!r}")
    assert (card["train_images"], card["test_images"]) == (len(x_train), len(x_test))
    accuracy = script.evaluate(params, x_test, y_test, card["features"])
    assert accuracy == pytest.approx(card["test_accuracy"], abs=1e-6)
    assert accuracy > 0.4  # chance is 0.10


def test_save_then_load_round_trip_and_errors_name_the_file(script, tmp_path):
    variables = CifarClassifier(features=32).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    out = tmp_path / "enc"
    script.save_params(variables, out)
    script.save_params(variables, out)  # replacing an existing folder is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc"]  # no temporary folders left
    card = {"features": 32, "input_shape": [32, 32, 3], "data": "test"}
    script.write_card(card, out)
    restored, read = load_classifier(out)
    assert read == card
    jax.tree.map(np.testing.assert_array_equal, variables, restored)

    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        load_pretrained(tmp_path / "nowhere")
    # Missing card.
    shutil.copytree(out, tmp_path / "nocard")
    with pytest.raises(FileNotFoundError, match=r"nocard\.json does not exist"):
        load_pretrained(tmp_path / "nocard")
    # Corrupt card.
    (tmp_path / "enc.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"enc\.json is unreadable"):
        load_pretrained(out)
    # A card that disagrees with the params (another network).
    script.write_card({**card, "features": 64}, out)
    with pytest.raises(ValueError, match=f"{out} do not match the card"):
        load_pretrained(out)
    # Corrupt params: every stored array file truncated.
    script.write_card(card, out)
    for f in out.rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(b"\0" * 8)
    with pytest.raises(ValueError, match=f"{out} could not be restored"):
        load_pretrained(out)
    json.loads(script.card_path(out).read_text())  # the card itself is untouched
