"""Pretrains the NatureCNN pixel encoder as a CIFAR-10 classifier and ships its params with a card.

    python scripts/pretrain_nature_cnn.py                      # the CIFAR-10 subset in ../shared
    python scripts/pretrain_nature_cnn.py --data ~/cifar-10-python.tar.gz --epochs 60

Writes `<out>/` (orbax params of `CifarClassifier`; `playground.networks.nature_cnn.load_pretrained`
returns the encoder part) and `<out>.json`, a card with the data, command, versions, wall time and
the test accuracy on the test images it was evaluated on. The params are written to a temporary
folder and renamed into place when complete, so an interrupted run never leaves half a checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

import playground  # noqa: F401  (XLA flags + compilation cache before jax starts)
from playground import cli_checks
from playground.data.cifar10 import is_full, load_cifar10
from playground.files import atomic
from playground.networks.nature_cnn import CIFAR_SHAPE, CifarClassifier, card_path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "../shared/data/cifar10_subset.npz"
DEFAULT_OUT = REPO / "params" / "nature_cnn_cifar10"


@dataclasses.dataclass
class TrainResult:
    params: dict[str, Any]
    test_accuracy: float
    history: list[dict[str, float]]
    wall_s: float


def augment(key: jax.Array, images: jax.Array) -> jax.Array:
    """Random 32x32 crops of the 4-px zero-padded images, and random horizontal flips."""
    n, h, w, _ = images.shape
    k_crop, k_flip = jax.random.split(key)
    padded = jnp.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    offsets = jax.random.randint(k_crop, (n, 2), 0, 9)

    def crop(img: jax.Array, off: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

    crops = jax.vmap(crop)(padded, offsets)
    flip = jax.random.bernoulli(k_flip, 0.5, (n, 1, 1, 1))
    return jnp.where(flip, crops[:, :, ::-1], crops)


def _to_unit(images: jax.Array) -> jax.Array:
    return images.astype(jnp.float32) / 255.0


@functools.cache
def _predictor(features: int) -> Callable[[Any, jax.Array], jax.Array]:
    # Cached so per-epoch evaluation compiles once, not once per call.
    model = CifarClassifier(features=features)
    return jax.jit(lambda p, xb: jnp.argmax(model.apply(p, _to_unit(xb)), -1))


def evaluate(
    params: dict[str, Any],
    x: np.ndarray,
    y: np.ndarray,
    features: int = 512,
    batch_size: int = 1024,
) -> float:
    """Top-1 accuracy of `CifarClassifier` on uint8 NHWC images (no augmentation)."""
    predict = _predictor(features)
    correct = 0
    for start in range(0, len(x), batch_size):
        pred = predict(params, jnp.asarray(x[start : start + batch_size]))
        correct += int(np.sum(np.asarray(pred) == y[start : start + batch_size]))
    return correct / len(x)


def train(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 1.0,
    label_smoothing: float = 0.1,
    seed: int = 0,
    features: int = 512,
    log: Callable[[str], None] | None = print,
) -> TrainResult:
    """Trains `CifarClassifier` (AdamW, warmup + cosine, crop/flip augmentation) on uint8 NHWC."""
    t0 = time.perf_counter()
    n = len(x_train)
    steps = n // batch_size
    if steps == 0:
        raise ValueError(f"batch size {batch_size} is larger than the {n} training images")
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    model = CifarClassifier(features=features)
    key, init_key = jax.random.split(jax.random.PRNGKey(seed))
    params = model.init(init_key, jnp.zeros((1, *x_train.shape[1:])))
    total = steps * epochs
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps=min(steps, total // 10 + 1), decay_steps=total, end_value=lr * 0.01
    )
    tx = optax.adamw(schedule, weight_decay=weight_decay)
    opt_state = tx.init(params)
    xs, ys = jnp.asarray(x_train), jnp.asarray(y_train)

    def loss_fn(p, images, labels):
        logits = model.apply(p, images)
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        return loss, jnp.mean(jnp.argmax(logits, -1) == labels)

    # A Python loop over a jitted step, not a `lax.scan` over the epoch: on XLA:CPU the convs
    # inside a while-loop body ran about 10x slower (measured: 10 s against 1 s per subset epoch).
    # The images are arguments, not closed-over constants, so the full 150 MB set is not baked
    # into the compiled program.
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, o, xs, ys, idx, k):
        images = _to_unit(augment(k, xs[idx]))
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, images, ys[idx])
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss, acc

    def epoch_fn(p, o, k):
        k_perm, k_aug = jax.random.split(k)
        order = jax.random.permutation(k_perm, n)[: steps * batch_size]
        order = order.reshape(steps, batch_size)
        losses, accs = [], []
        for i, k_step in enumerate(jax.random.split(k_aug, steps)):
            p, o, loss, acc = step(p, o, xs, ys, order[i], k_step)
            losses.append(loss)
            accs.append(acc)
        return p, o, jnp.mean(jnp.stack(losses)), jnp.mean(jnp.stack(accs))

    history = []
    for epoch in range(1, epochs + 1):
        key, k = jax.random.split(key)
        params, opt_state, loss, acc = epoch_fn(params, opt_state, k)
        test_acc = evaluate(params, x_test, y_test, features)
        history.append(
            {"epoch": epoch, "loss": float(loss), "train_acc": float(acc), "test_acc": test_acc}
        )
        if log:
            log(
                f"epoch {epoch:3d}/{epochs}  loss {float(loss):.4f}  "
                f"train acc (augmented) {float(acc):.4f}  test acc {test_acc:.4f}  "
                f"[{time.perf_counter() - t0:.0f} s]"
            )
    return TrainResult(params, history[-1]["test_acc"], history, time.perf_counter() - t0)


def save_params(params: dict[str, Any], out: Path) -> None:
    """Writes orbax params to `out/` via a temporary folder renamed into place when complete."""
    import orbax.checkpoint as ocp

    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    for stale in (tmp, old):
        if stale.exists():
            shutil.rmtree(stale)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp, jax.tree.map(np.asarray, params))
    checkpointer.wait_until_finished()
    checkpointer.close()
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)


def write_card(card: dict[str, Any], out: Path) -> Path:
    return atomic.write_text(card_path(out.resolve()), json.dumps(card, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = cli_checks.ArgumentParser(
        prog="pretrain_nature_cnn.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="cifar-10-python.tar.gz, its extracted cifar-10-batches-py/ folder, or an .npz "
        "subset (default: the CIFAR-10 subset in ../shared/data)",
    )
    # Defaults picked on a 1000-image validation split held out of the subset's training images
    # (never the test images): with 5k images the net overfits, so strong decoupled weight decay
    # and label smoothing win; 100 epochs take about 2 minutes on 2 CPU cores.
    parser.add_argument("--epochs", type=cli_checks.positive_int, default=100)
    parser.add_argument("--batch-size", type=cli_checks.positive_int, default=128)
    parser.add_argument(
        "--lr", type=cli_checks.positive_float, default=2e-3, help="peak learning rate (AdamW)"
    )
    parser.add_argument(
        "--weight-decay",
        type=cli_checks.nonnegative_float,
        default=1.0,
        help="AdamW decoupled weight decay",
    )
    parser.add_argument("--label-smoothing", type=cli_checks.probability, default=0.1)
    parser.add_argument(
        "--features", type=cli_checks.positive_int, default=512, help="NatureCNN feature size"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="params folder; the card is <out>.json"
    )
    args = parser.parse_args(argv)
    out = args.out.expanduser().resolve()
    try:
        # The params and the card are written only after training, minutes later.
        if out.exists() and not out.is_dir():
            raise cli_checks.UsageError(f"--out {out} is a file, not a params folder.")
        # An existing folder is replaced by a rename in its parent, so the parent must be writable.
        cli_checks.check_writable_dir(out.parent if out.exists() else out, "--out")
        if not Path(args.data).expanduser().exists():
            raise cli_checks.UsageError(f"--data {args.data} does not exist.")
        # The loader's errors name the file and what is wrong with it.
        x_train, y_train, x_test, y_test, description = load_cifar10(args.data)
        if x_train.shape[1:] != CIFAR_SHAPE:
            raise cli_checks.UsageError(
                f"--data {args.data}: expected {CIFAR_SHAPE} images, got {x_train.shape[1:]}"
            )
        if args.batch_size > len(x_train):
            raise cli_checks.UsageError(
                f"--batch-size {args.batch_size} is larger than the {len(x_train)} training "
                f"images of --data {args.data}."
            )
    except (FileNotFoundError, ValueError) as e:
        cli_checks.exit_usage(parser, e)
    print(f"data: {description}")
    result = train(
        x_train,
        y_train,
        x_test,
        y_test,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        seed=args.seed,
        features=args.features,
    )
    full = is_full(x_train, x_test)
    print(
        f"final test accuracy {result.test_accuracy:.4f} on the {len(x_test)} test images of "
        f"{description} (chance 0.10); {result.wall_s:.0f} s"
    )
    if full:
        note = "Trained and evaluated on the full CIFAR-10 split."
    else:
        note = (
            f"Trained only on a subset of CIFAR-10 ({len(x_train)} of 50000 training images); "
            f"the test accuracy is on {len(x_test)} of the 10000 test images. Re-run with "
            "--data pointing at the full cifar-10-python.tar.gz for the full-data encoder."
        )
    save_params(result.params, out)
    card = {
        "model": "playground.networks.nature_cnn.CifarClassifier (encoder: NatureCNN)",
        "features": args.features,
        "input_shape": list(CIFAR_SHAPE),
        "data": description,
        "data_path": str(Path(args.data).expanduser().resolve()),
        "full_cifar10": full,
        "train_images": len(x_train),
        "test_images": len(x_test),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "label_smoothing": args.label_smoothing,
        "seed": args.seed,
        "augmentation": "random 32x32 crop of 4-px zero padding, horizontal flip",
        "test_accuracy": result.test_accuracy,
        "test_accuracy_of": "the final epoch's params (no epoch chosen on the test images)",
        "final_train_loss": result.history[-1]["loss"],
        "history": result.history,
        "wall_time_s": round(result.wall_s, 1),
        "command": shlex.join(sys.orig_argv if argv is None else [sys.executable, __file__, *argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "device": f"{jax.devices()[0].platform} ({os.cpu_count()} cores, {platform.machine()})",
        "versions": {
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "orbax-checkpoint": importlib.metadata.version("orbax-checkpoint"),
            "python": platform.python_version(),
        },
        "note": note,
    }
    print(f"wrote {out}/ and {write_card(card, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
