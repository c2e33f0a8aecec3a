"""Losses, each returning its value and its gradient with respect to the prediction.

Predictions are ``(*rep, N, K)``; the value is reduced over the batch and the classes,
keeping replica axes: shape ``(*rep,)`` (a 0-d array without replicas).

==================  =================================================  =========================
loss                value                                              gradient
==================  =================================================  =========================
l2 (the article's)  0.5 * sum((p - y)**2)                               p - y
bce                 -sum(y log p + (1-y) log(1-p)), logs >= -100        (p - y) / max(p(1-p), 1e-12)
softmax_ce          -sum_k y_k log softmax(z)_k  (from logits z)         softmax(z) - y
==================  =================================================  =========================

``reduction="mean"`` divides value and gradient by the batch size N. The clamps in
``bce`` are PyTorch's (``BCELoss``), so that saturated probabilities give a large
finite loss instead of ``inf``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import ConfigError, ShapeError

LossFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _scale(reduction: str, batch: int) -> float:
    if reduction == "sum":
        return 1.0
    if reduction == "mean":
        return 1.0 / batch
    raise ConfigError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def _check_same_shape(name: str, pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape:
        raise ShapeError(f"{name}: prediction {pred.shape} and target {target.shape} differ")


def l2_loss(
    pred: np.ndarray, target: np.ndarray, reduction: str = "sum"
) -> tuple[np.ndarray, np.ndarray]:
    """The article's cost ``0.5 * sum((pred - target)**2)`` and its gradient ``pred - target``.

    pred, target : (*rep, N, K) -> value (*rep,), grad (*rep, N, K)
    """
    _check_same_shape("l2 loss", pred, target)
    scale = _scale(reduction, pred.shape[-2])
    diff = pred - target
    value = 0.5 * scale * (diff * diff).sum(axis=(-2, -1))
    return value, diff * scale if scale != 1.0 else diff


# PyTorch clamps with the float32 constant 1e-12 (= 9.99999996e-13) even in float64.
_BCE_EPS = float(np.float32(1e-12))


def bce_loss(
    prob: np.ndarray, target: np.ndarray, reduction: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Binary cross-entropy on probabilities (e.g. after a sigmoid).

    prob, target : (*rep, N, K), target in [0, 1] -> value (*rep,), grad (*rep, N, K)
    """
    _check_same_shape("bce loss", prob, target)
    scale = _scale(reduction, prob.shape[-2])
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(prob), -100.0)
        log_q = np.maximum(np.log1p(-prob), -100.0)
    value = -scale * (target * log_p + (1 - target) * log_q).sum(axis=(-2, -1))
    grad = scale * (prob - target) / np.maximum(prob * (1 - prob), _BCE_EPS)
    return value, grad


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Stable ``log softmax`` over the last axis (shift by the max before ``exp``)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def one_hot(labels: np.ndarray, classes: int, dtype: type = np.float64) -> np.ndarray:
    """Integer labels (...,) -> one-hot (..., classes)."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ShapeError(f"labels must be in [0, {classes}), got {labels.min()}..{labels.max()}")
    return (labels[..., None] == np.arange(classes)).astype(dtype)


def softmax_cross_entropy(
    logits: np.ndarray, target: np.ndarray, reduction: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Cross-entropy of ``softmax(logits)`` against integer labels or class probabilities.

    logits : (*rep, N, K); target : (*rep, N) integer labels or (*rep, N, K) probabilities
    -> value (*rep,), grad (*rep, N, K) = (softmax(logits) - target) * scale
    """
    if target.shape == logits.shape[:-1]:
        target = one_hot(target, logits.shape[-1], logits.dtype)
    _check_same_shape("softmax cross-entropy", logits, target)
    scale = _scale(reduction, logits.shape[-2])
    log_prob = log_softmax(logits)
    value = -scale * (target * log_prob).sum(axis=(-2, -1))
    grad = np.exp(log_prob) - target
    return value, grad * scale if scale != 1.0 else grad


LOSSES: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "l2": l2_loss,
    "bce": bce_loss,
    "softmax_ce": softmax_cross_entropy,
}


def get_loss(name: str, reduction: str | None = None) -> LossFn:
    """The loss ``name`` as ``fn(pred, target) -> (value, grad)``."""
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    fn = LOSSES[name]
    if reduction is None:
        return fn
    _scale(reduction, 1)
    return lambda pred, target: fn(pred, target, reduction)
