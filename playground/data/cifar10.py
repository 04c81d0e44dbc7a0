"""CIFAR-10 loading from the standard python archive, its extracted folder, or an `.npz` subset.

Accepted paths (detected from what the path is):
- `cifar-10-python.tar.gz` (any `.tar.gz`/`.tgz`/`.tar` in that layout): batches are read straight
  from the tar, no extraction;
- the extracted `cifar-10-batches-py/` folder, or a folder that holds it (or the archive);
- an `.npz` with `x_train`, `y_train`, `x_test`, `y_test`, images channel-first uint8
  `[N, 3, 32, 32]` (as `../shared/data/cifar10_subset.npz`, a real subset of CIFAR-10).

Images come back NHWC uint8 `[N, 32, 32, 3]`, labels int32, with a description naming the data
and its size, so that results are reported against the data they came from.

The python batches are pickles. They are read with an unpickler that only builds numpy arrays,
so a tampered archive cannot run code on load.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
FULL_SIZES = (50000, 10000)
ACCEPTED = (
    f"the archive {ARCHIVE_NAME} (.tar.gz/.tgz/.tar), its extracted folder {FOLDER_NAME}/ "
    "(or a folder holding either), or an .npz with x_train/y_train/x_test/y_test "
    "(uint8 images [N, 3, 32, 32])"
)

Cifar10 = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]

# The classes a CIFAR-10 batch pickle needs: numpy arrays, their dtypes, and the reconstructors
# that older (numpy.core) and newer (numpy._core) numpy write; `_codecs.encode` is how Python 3
# writes bytes at pickle protocols below 3 (it only turns a string into bytes).
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not a numpy array)")
        return super().find_class(module, name)


def _images_nhwc(data: np.ndarray, where: str) -> np.ndarray:
    """Channel-first rows ([N, 3072] or [N, 3, 32, 32]) to NHWC uint8."""
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise ValueError(f"{where}: images must be uint8, got {data.dtype}.")
    if data.ndim == 2 and data.shape[1] == 3 * 32 * 32:
        data = data.reshape(-1, 3, 32, 32)
    if data.ndim != 4 or data.shape[1:] != (3, 32, 32):
        raise ValueError(f"{where}: expected images [N, 3072] or [N, 3, 32, 32], got {data.shape}.")
    return np.ascontiguousarray(data.transpose(0, 2, 3, 1))


def _labels(labels, n: int, where: str) -> np.ndarray:
    labels = np.asarray(labels).astype(np.int64)
    if labels.shape != (n,):
        raise ValueError(f"{where}: expected {n} labels, got shape {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{where}: labels must be 0..9, got {labels.min()}..{labels.max()}.")
    return labels.astype(np.int32)


def _read_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # pickle raises many types on damaged input
        raise ValueError(
            f"{where} is not a readable CIFAR-10 batch ({type(e).__name__}: {e})."
        ) from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{where}: expected a dict with b'data' and b'labels', got {keys}.")
    x = _images_nhwc(batch[b"data"], where)
    return x, _labels(batch[b"labels"], len(x), where)


def _concat(batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def _from_tar(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable tar archive ({type(e).__name__}: {e}).") from e
    with tar:
        # Match on the file name so archives repacked under another top folder still load.
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH) if n not in members]
        if missing:
            raise ValueError(
                f"{path} lacks the CIFAR-10 batches {missing} (expected {FOLDER_NAME}/"
                f"data_batch_1..5 and {FOLDER_NAME}/{TEST_BATCH})."
            )

        def read(name: str) -> tuple[np.ndarray, np.ndarray]:
            try:
                raw = tar.extractfile(members[name]).read()
            except (tarfile.TarError, OSError, EOFError) as e:
                raise ValueError(f"{path}: cannot read {members[name].name} ({e}).") from e
            return _read_batch(raw, f"{path}:{members[name].name}")

        x_train, y_train = _concat([read(n) for n in TRAIN_BATCHES])
        x_test, y_test = read(TEST_BATCH)
    return x_train, y_train, x_test, y_test


def _from_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        file = folder / name
        if not file.is_file():
            raise FileNotFoundError(f"CIFAR-10 batch {file} is missing.")
        return _read_batch(file.read_bytes(), str(file))

    x_train, y_train = _concat([read(n) for n in TRAIN_BATCHES])
    x_test, y_test = read(TEST_BATCH)
    return x_train, y_train, x_test, y_test


def _from_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as data:
            files = sorted(data.files)
            arrays = {k: data[k] for k in keys if k in files}
    except Exception as e:  # zipfile and numpy raise many types on a damaged file
        raise ValueError(f"{path} is not a readable .npz ({type(e).__name__}: {e}).") from e
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ValueError(f"{path} lacks the arrays {missing} (has {files}).")
    x_train = _images_nhwc(arrays["x_train"], f"{path}:x_train")
    x_test = _images_nhwc(arrays["x_test"], f"{path}:x_test")
    y_train = _labels(arrays["y_train"], len(x_train), f"{path}:y_train")
    y_test = _labels(arrays["y_test"], len(x_test), f"{path}:y_test")
    return x_train, y_train, x_test, y_test


def _is_tar_name(path: Path) -> bool:
    return path.name.endswith((".tar.gz", ".tgz", ".tar"))


def load_cifar10(path: str | Path) -> Cifar10:
    """(x_train, y_train, x_test, y_test, description) from any source the module doc lists."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"No CIFAR-10 data at {path}. Accepted: {ACCEPTED}.")
    if path.is_dir():
        if (path / "data_batch_1").is_file():
            source, arrays = f"{path.name}/", _from_folder(path)
        elif (path / FOLDER_NAME).is_dir():
            source, arrays = f"{FOLDER_NAME}/", _from_folder(path / FOLDER_NAME)
        elif (path / ARCHIVE_NAME).is_file():
            source, arrays = ARCHIVE_NAME, _from_tar(path / ARCHIVE_NAME)
        else:
            raise ValueError(
                f"{path} is a folder without CIFAR-10 batches (no data_batch_1, {FOLDER_NAME}/ "
                f"or {ARCHIVE_NAME}). Accepted: {ACCEPTED}."
            )
    elif path.suffix == ".npz":
        source, arrays = path.name, _from_npz(path)
    elif _is_tar_name(path):
        source, arrays = path.name, _from_tar(path)
    else:
        raise ValueError(f"{path} is not a CIFAR-10 source. Accepted: {ACCEPTED}.")
    x_train, y_train, x_test, y_test = arrays
    sizes = (len(x_train), len(x_test))
    # Only the full 50k/10k split is called plain "CIFAR-10"; anything smaller is named a subset.
    name = "CIFAR-10" if sizes == FULL_SIZES else "CIFAR-10 subset"
    description = f"{name} ({source}): {sizes[0]} train / {sizes[1]} test images"
    return x_train, y_train, x_test, y_test, description


def is_full(x_train: np.ndarray, x_test: np.ndarray) -> bool:
    """Whether the arrays are the whole CIFAR-10 split (50000 train / 10000 test)."""
    return (len(x_train), len(x_test)) == FULL_SIZES
