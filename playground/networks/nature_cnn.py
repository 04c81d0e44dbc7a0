"""The NatureCNN pixel encoder (Mnih et al., 2015), a CIFAR-10 classifier around it, and loading.

Pixel students start from an encoder pretrained on CIFAR-10 images rather than from scratch.
`scripts/pretrain_nature_cnn.py` trains `CifarClassifier` and writes its params (orbax, folder
`<out>/`) plus a JSON card (`<out>.json`); `load_pretrained` reads both back and hands out only the
encoder's params, in the `{"params": ...}` form that `NatureCNN.apply` takes. A student that has
a `NatureCNN` submodule named, say, `encoder` copies them in with
`variables["params"]["encoder"] = enc["params"]`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

NUM_CLASSES = 10
CIFAR_SHAPE = (32, 32, 3)


class NatureCNN(nn.Module):
    """Images `[..., H, W, C]` in [0, 1] to features `[..., features]` (ReLU-ed).

    With `dense=False` only the convolutions run and their feature map comes out flattened,
    `[..., (H/8) * (W/8) * 64]` (SAME padding): the frozen part of a latent student."""

    features: int = 512
    dense: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        lead = x.shape[:-3]
        x = x.reshape((-1, *x.shape[-3:])).astype(jnp.float32)
        # Centre the pixels so the first layer's ReLUs start on both sides of zero.
        x = x - 0.5
        # SAME padding keeps 32x32 inputs alive through the 8x8/4 stem (32 -> 8 -> 4 -> 4);
        # VALID would shrink them to nothing by the third conv.
        x = nn.relu(nn.Conv(32, (8, 8), strides=(4, 4), padding="SAME")(x))
        x = nn.relu(nn.Conv(64, (4, 4), strides=(2, 2), padding="SAME")(x))
        x = nn.relu(nn.Conv(64, (3, 3), strides=(1, 1), padding="SAME")(x))
        x = x.reshape((x.shape[0], -1))
        if self.dense:
            x = nn.relu(nn.Dense(self.features)(x))
        return x.reshape((*lead, x.shape[-1]))


class CifarClassifier(nn.Module):
    """`NatureCNN` (submodule `encoder`) plus a linear head: images to 10 class logits."""

    features: int = 512
    num_classes: int = NUM_CLASSES

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = NatureCNN(features=self.features, name="encoder")(x)
        return nn.Dense(self.num_classes, name="head")(h)


def encoder_params(classifier_params: Mapping[str, Any]) -> dict[str, Any]:
    """The encoder's variables `{"params": ...}` from a classifier's (with or without "params")."""
    inner = classifier_params.get("params", classifier_params)
    if "encoder" not in inner:
        raise KeyError(
            f"No 'encoder' in the classifier params (top-level keys: {sorted(inner)}); expected "
            "the params of playground.networks.nature_cnn.CifarClassifier."
        )
    return {"params": inner["encoder"]}


def card_path(path: str | Path) -> Path:
    """The JSON card beside a params folder: `<out>.json` for `<out>/`."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _params_dir(path: str | Path) -> Path:
    # Accept the card's path too: users point at whichever of the pair they see first.
    path = Path(path).expanduser().resolve()
    return path.with_suffix("") if path.suffix == ".json" else path


def read_card(path: str | Path) -> dict[str, Any]:
    """The JSON card of the params folder `path` (clear errors when missing or unreadable)."""
    card_file = card_path(_params_dir(path))
    if not card_file.is_file():
        raise FileNotFoundError(
            f"Pretrained-encoder card {card_file} does not exist; it is written next to the params "
            "folder by scripts/pretrain_nature_cnn.py."
        )
    try:
        card = json.loads(card_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"Pretrained-encoder card {card_file} is unreadable: {e}") from e
    if not isinstance(card, dict):
        raise ValueError(f"Pretrained-encoder card {card_file} is not a JSON object.")
    return card


def load_classifier(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(CifarClassifier variables, card) from a folder written by scripts/pretrain_nature_cnn.py."""
    import orbax.checkpoint as ocp

    params_dir = _params_dir(path)
    if not params_dir.is_dir():
        raise FileNotFoundError(
            f"Pretrained-encoder params {params_dir} do not exist (expected the orbax folder "
            "written by scripts/pretrain_nature_cnn.py --out)."
        )
    card = read_card(params_dir)
    features = int(card.get("features", 512))
    shape = tuple(card.get("input_shape", CIFAR_SHAPE))
    model = CifarClassifier(features=features)
    # Restoring against the expected shapes makes a checkpoint of another network fail here,
    # with the file named, rather than later inside a student's apply.
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, *shape)))
    try:
        params = ocp.StandardCheckpointer().restore(params_dir, abstract)
    except Exception as e:  # orbax raises many exception types for damaged or foreign folders
        raise ValueError(
            f"Pretrained-encoder params {params_dir} could not be restored "
            f"({type(e).__name__}: {e}). The folder may be corrupt or hold another network; "
            "re-run scripts/pretrain_nature_cnn.py to rewrite it."
        ) from e
    # Orbax hands back the stored shapes even when they differ from the target's, so compare.
    expected = jax.tree.map(lambda a: (a.shape, jnp.dtype(a.dtype)), abstract)
    got = jax.tree.map(lambda a: (a.shape, jnp.dtype(a.dtype)), params)
    if got != expected:
        raise ValueError(
            f"Pretrained-encoder params {params_dir} do not match the card {card_path(params_dir)} "
            f"(features={features}, input_shape={list(shape)}): stored {got}, expected {expected}."
        )
    return params, card


def load_pretrained(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(NatureCNN variables `{"params": ...}`, card dict) from a pretraining output folder."""
    params, card = load_classifier(path)
    return encoder_params(params), card
