"""What :class:`~handprop.integrations.sklearn.HandpropClassifier` builds from its
parameters and the data: checked parameters, the samples' image shape, the network (a
preset CNN, the seed net, a spec, or the dense fallback for non-image features), the
training config, the learning rule, and probabilities from the network's outputs.

Plain functions of plain values, so the estimator class reads as the scikit-learn API.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from math import isqrt, prod
from typing import Any

import numpy as np

from ..core.network import Network
from ..core.ops.losses import log_softmax
from ..core.presets import PRESETS, preset_defaults
from ..core.spec import network_from_spec
from ..rules import parse_rule
from ..rules.base import LearningRule
from ..training.loop import TrainConfig

# Smallest square image side each image preset can take (below it, a shape error):
# small: two 2x2 pools after padded 3x3 convs; lenet: pool, unpadded 5x5 conv, pool.
MIN_SIDE = {"small": 4, "lenet": 12}
SEED_SHAPE = (1, 8, 8)
HIDDEN = 32

Shape = tuple[int, int, int]


def dense_fallback_spec(input_shape: tuple[int, ...], classes: int) -> dict[str, Any]:
    """The network used when the features are not an image: flatten, dense 32 + relu,
    dense ``classes`` (softmax cross-entropy, PyTorch initialisation).

    Parameters
    ----------
    input_shape : tuple of int
        Shape of one sample, e.g. ``(1, 1, n_features)``.
    classes : int
        Number of output units.

    Returns
    -------
    dict
        A spec for :func:`handprop.core.spec.network_from_spec`.
    """
    return {
        "name": "dense",
        "input_shape": list(input_shape),
        "loss": "softmax_ce",
        "init": "torch",
        "layers": [
            {"type": "flatten", "name": "flatten"},
            {"type": "dense", "name": "fc1", "out_features": HIDDEN},
            {"type": "activation", "name": "act1", "activation": "relu"},
            {"type": "dense", "name": "fc2", "out_features": classes},
        ],
    }


# -- parameters ------------------------------------------------------------------------

def check_params(net: Any, rule: Any, scale: Any, engine: Any = "auto") -> None:
    """Refuse parameter values ``fit`` cannot use (scikit-learn checks them at fit time)."""
    from ..training.epoch import ENGINES

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if scale is not None:
        ok = isinstance(scale, int | float | np.number) and not isinstance(scale, bool)
        if not ok or not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"scale must be a positive number or None, got {scale!r}")
    if not (isinstance(net, Mapping) or net in PRESETS):
        raise ValueError(
            f"net must be one of {', '.join(map(repr, PRESETS))} or a network spec "
            f"dict, got {net!r}"
        )
    if not isinstance(rule, str | LearningRule):
        raise ValueError(f"rule must be a rule name or a LearningRule, got {rule!r}")


def is_seed_preset(net: Any) -> bool:
    """The article's binary network (by name or as a ``preset`` spec)?"""
    if isinstance(net, Mapping):
        return net.get("preset") == "seed"
    return net == "seed"


def fresh_rule(rule: str | LearningRule) -> LearningRule:
    """An unbound copy of ``rule`` (the parameter itself is never modified)."""
    return parse_rule(rule) if isinstance(rule, str) else copy.deepcopy(rule)


def train_config(defaults_key: str, params: Mapping[str, Any]) -> TrainConfig:
    """The estimator's hyperparameters, the network's defaults (its preset's) where
    they are None. Momentum defaults only with the network's own optimizer."""
    defaults = preset_defaults(defaults_key)
    optimizer = params["optimizer"] if params["optimizer"] is not None else defaults["optimizer"]
    if params["momentum"] is not None:
        momentum = params["momentum"]
    elif optimizer == defaults["optimizer"]:
        momentum = defaults["momentum"]
    else:
        momentum = None
    batch_size = params["batch_size"]
    return TrainConfig(
        epochs=params["epochs"],
        batch_size=batch_size if batch_size is not None else defaults["batch_size"],
        optimizer=optimizer,
        lr=params["lr"] if params["lr"] is not None else defaults["lr"],
        momentum=momentum,
        shuffle=True,
        seed=params["seed"],
        dtype=params["dtype"],
    ).validate()


# -- input shaping ---------------------------------------------------------------------

def flatten_4d(X: Any) -> tuple[Any, Shape | None]:
    """(n, C, H, W) -> (n, C*H*W) and the image shape; anything else unchanged."""
    if getattr(X, "ndim", None) == 4 and not hasattr(X, "tocsr"):
        X = np.asarray(X)
        return X.reshape(X.shape[0], -1), tuple(int(s) for s in X.shape[1:])
    return X, None


def scaled(X: np.ndarray, scale: float | None) -> np.ndarray:
    return X if scale is None else X / scale


def _given_shape(image_shape: Any, n_features: int) -> Shape:
    """``image_shape`` as (C, H, W), checked against the feature count."""
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"image_shape must be (C, H, W) or (H, W), got {image_shape!r}"
        ) from None
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"image_shape must be (C, H, W) or (H, W) of positive integers, "
            f"got {image_shape!r}"
        )
    if prod(shape) != n_features:
        raise ValueError(
            f"image_shape {shape} holds {prod(shape)} values but X has {n_features} features"
        )
    return shape


def explicit_shape(image_shape: Any, n_features: int, shape_4d: Shape | None) -> Shape | None:
    """The (C, H, W) given by ``image_shape`` or a 4-D X, checked; else None."""
    shape = None if image_shape is None else _given_shape(image_shape, n_features)
    if shape_4d is not None:
        if shape is not None and shape != shape_4d:
            raise ValueError(f"image_shape {shape} does not match 4-D X of shape {shape_4d}")
        shape = shape_4d
    return shape


def square_shape(n_features: int, min_side: int) -> Shape | None:
    """(1, side, side) when the features make a square image at least ``min_side`` wide."""
    side = isqrt(n_features)
    if side * side == n_features and side >= min_side:
        return (1, side, side)
    return None


# -- the network -----------------------------------------------------------------------

def _from_spec(spec: Mapping[str, Any], n_features: int, n_classes: int,
               explicit: Shape | None) -> tuple[Network, str]:
    """A spec dict, with its missing input shape (and a preset's classes) from the data."""
    spec = dict(spec)
    preset = spec.get("preset")
    if preset in ("small", "lenet"):
        shape = explicit or square_shape(n_features, MIN_SIDE[preset])
        if shape is None:
            raise ValueError(
                f"preset {preset!r}: cannot infer an image shape from {n_features} "
                "features; give image_shape"
            )
        spec.setdefault("input_shape", list(shape))
        spec.setdefault("classes", n_classes)
    elif preset is None and "input_shape" not in spec:
        spec["input_shape"] = list(explicit or square_shape(n_features, 1)
                                   or (1, 1, n_features))
    return network_from_spec(spec), preset if preset in PRESETS else "small"


def _from_preset(name: str, n_features: int, n_classes: int,
                 explicit: Shape | None) -> tuple[Network, str]:
    """A preset by name; ``small``/``lenet`` fall back to a dense net for non-images."""
    flat_shape = (1, 1, n_features)
    if name == "seed":
        shape = explicit or square_shape(n_features, 1) or flat_shape
        if shape != SEED_SHAPE:
            raise ValueError(
                f"net='seed' takes 8x8 images (64 features), got samples of shape {shape}"
            )
        return PRESETS["seed"](), "seed"
    shape = explicit or square_shape(n_features, MIN_SIDE[name])
    if shape is None:
        return network_from_spec(dense_fallback_spec(flat_shape, n_classes)), name
    return PRESETS[name](input_shape=shape, classes=n_classes), name


def _check_fits(net: Network, n_features: int, n_classes: int,
                explicit: Shape | None) -> None:
    """The network takes the data's samples and has an output per class (or one)."""
    if prod(net.input_shape) != n_features:
        raise ValueError(
            f"network {net.name!r} takes samples of shape {net.input_shape} "
            f"({prod(net.input_shape)} values) but X has {n_features} features"
        )
    if explicit is not None and net.input_shape != explicit:
        raise ValueError(
            f"network {net.name!r} takes samples of shape {net.input_shape}, "
            f"the data has shape {explicit}"
        )
    outputs = net.output_shape
    if len(outputs) != 1:
        raise ValueError(f"network {net.name!r} must end in a flat output, got {outputs}")
    if outputs[0] == 1 and n_classes > 2:
        raise ValueError(
            f"network {net.name!r} has a single output unit (a binary classifier) but "
            f"y has {n_classes} classes; use net='small' or 'lenet' for multiclass"
        )
    if outputs[0] != 1 and outputs[0] != n_classes:
        raise ValueError(
            f"network {net.name!r} has {outputs[0]} output units but y has "
            f"{n_classes} classes"
        )


def build_network(net: Any, image_shape: Any, n_features: int, n_classes: int,
                  shape_4d: Shape | None) -> tuple[Network, str]:
    """The untrained network for the data, and the preset whose training defaults go
    with it."""
    explicit = explicit_shape(image_shape, n_features, shape_4d)
    if isinstance(net, Mapping):
        network, defaults = _from_spec(net, n_features, n_classes, explicit)
    else:
        network, defaults = _from_preset(net, n_features, n_classes, explicit)
    _check_fits(network, n_features, n_classes, explicit)
    return network, defaults


def probabilities(out: np.ndarray, loss: str) -> np.ndarray:
    """Class probabilities from the network's outputs (see ``predict_proba``)."""
    if out.shape[-1] == 1:
        p = np.clip(out[:, 0], 0.0, 1.0)
        return np.column_stack([1.0 - p, p])
    if loss == "softmax_ce":
        return np.exp(log_softmax(out))  # a max-shifted log-softmax: no overflow
    out = np.clip(out, 0.0, None)
    total = out.sum(axis=1, keepdims=True)
    uniform = np.full_like(out, 1.0 / out.shape[1])
    return np.divide(out, total, out=uniform, where=total > 0)
