"""How close is a learning rule to back-propagation? Alignment diagnostics.

* gradient alignment: per parameter array, the cosine (and angle) between the rule's
  gradient and the exact gradient computed on the same forward pass, and the fraction
  of entries with the same sign;
* weight alignment (rules with feedback matrices B): the angle between B and W, the norm
  ratio |B| / |W|, and the fraction of entries where sign(B) == sign(W).

All functions keep replica axes: with R replicas every number is an array of shape (R,).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.network import Network
from ..rules.base import LearningRule

METRICS = ("cosine", "angle_deg", "sign_agreement")


def _rows(array: np.ndarray, rep_ndim: int) -> np.ndarray:
    return array.reshape(*array.shape[:rep_ndim], -1)


def compare_arrays(a: np.ndarray, b: np.ndarray, rep_ndim: int = 0) -> dict[str, np.ndarray]:
    """Cosine, angle (degrees) and sign agreement of ``a`` and ``b``, per replica.

    The cosine of a zero array is undefined and reported as NaN.
    """
    a = _rows(np.asarray(a, dtype=np.float64), rep_ndim)
    b = _rows(np.asarray(b, dtype=np.float64), rep_ndim)
    norm = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norm > 0, (a * b).sum(axis=-1) / norm, np.nan)
    angle = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    same_sign = (np.sign(a) == np.sign(b)).mean(axis=-1)
    return {"cosine": cosine, "angle_deg": angle, "sign_agreement": same_sign}


def gradient_alignment(
    net: Network,
    rule: LearningRule,
    x: np.ndarray,
    targets: np.ndarray,
    loss_fn: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    params: list[str] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Rule gradient vs exact gradient on the same batch, per weight array.

    x : (*rep, N, *input_shape); targets: what ``loss_fn`` compares the output with.
    Returns ``{param: {"cosine": (*rep,), "angle_deg": ..., "sign_agreement": ...}}``.
    """
    # Train mode (the gradients training uses), but a probe must not move the network's
    # state: batch norm's running statistics are put back as they were.
    state = net.buffer_flat.copy()
    out, tape = net.forward(x)
    net.buffer_flat[...] = state
    _, out_grad = loss_fn(out, targets)
    exact = net.backward(tape, out_grad)
    changed = net.backward(tape, out_grad, rule)
    names = params or weight_names(net)
    rep_ndim = len(net.rep_shape)
    return {name: compare_arrays(changed[name], exact[name], rep_ndim) for name in names}


def weight_alignment(net: Network, rule: LearningRule) -> dict[str, dict[str, np.ndarray]]:
    """B vs W for every feedback matrix the rule uses in place of a weight.

    Returns ``{param: {"angle_deg", "norm_ratio", "sign_concordance"}}`` (per replica).
    """
    rep_ndim = len(net.rep_shape)
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, feedback in rule.feedback().items():
        weight = net.params[name]
        if feedback.shape != weight.shape:
            continue
        metrics = compare_arrays(feedback, weight, rep_ndim)
        ratio = np.linalg.norm(_rows(feedback, rep_ndim), axis=-1) / np.maximum(
            np.linalg.norm(_rows(weight, rep_ndim), axis=-1), 1e-300
        )
        out[name] = {"angle_deg": metrics["angle_deg"], "norm_ratio": ratio,
                     "sign_concordance": metrics["sign_agreement"]}
    return out


def weight_names(net: Network) -> list[str]:
    """The weight (not bias) parameter names, in network order."""
    return [name for name in net.params if name.endswith(".weight")]


class AlignmentLog:
    """Collects alignment metrics once per epoch on a fixed probe batch.

    ``log.record(net)`` appends one row per metric; ``log.as_lists(replica)`` gives
    ``{param: {metric: [per epoch]}}`` for one replica, JSON-ready.
    """

    def __init__(self, rule: LearningRule | None, x_probe: np.ndarray, targets: np.ndarray,
                 loss_fn, weight_metrics: bool = True) -> None:
        self.rule = rule
        self.x = x_probe
        self.targets = targets
        self.loss_fn = loss_fn
        self.weight_metrics = weight_metrics
        self.gradient: dict[str, dict[str, list[np.ndarray]]] = {}
        self.weights: dict[str, dict[str, list[np.ndarray]]] = {}

    def record(self, net: Network) -> None:
        if self.rule is None:
            return
        with np.errstate(all="ignore"):
            grads = gradient_alignment(net, self.rule, self.x, self.targets, self.loss_fn)
            for name, metrics in grads.items():
                slot = self.gradient.setdefault(name, {m: [] for m in metrics})
                for metric, value in metrics.items():
                    slot[metric].append(np.atleast_1d(value))
            if self.weight_metrics:
                for name, metrics in weight_alignment(net, self.rule).items():
                    slot = self.weights.setdefault(name, {m: [] for m in metrics})
                    for metric, value in metrics.items():
                        slot[metric].append(np.atleast_1d(value))

    @staticmethod
    def _column(store: dict[str, dict[str, list[np.ndarray]]], replica: int) -> dict[str, Any]:
        return {name: {metric: [float(v[replica]) for v in values]
                       for metric, values in metrics.items()}
                for name, metrics in store.items()}

    def as_lists(self, replica: int = 0) -> dict[str, Any]:
        return {"gradient": self._column(self.gradient, replica),
                "weights": self._column(self.weights, replica)}
