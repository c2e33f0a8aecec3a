"""How close is a learning rule to back-propagation? Alignment diagnostics.

* gradient alignment: per weight array, the cosine (and angle) between the rule's update
  and the exact gradient computed on the same forward pass, and the fraction of entries
  with the same sign (counted where at least one of the two is nonzero);
* signal alignment: per hidden activation, the angle between the signal the rule sends
  into that hidden layer (the gradient the activation sends down) and the exact one (what
  Lillicrap et al. 2016 measured: the hidden-layer signal, not the weight update);
* weight alignment (rules with feedback matrices B): the angle between B and W, the norm
  ratio |B| / |W|, and the fraction of entries where sign(B) == sign(W).

Measuring runs the forward pass in training mode on a probe batch; any state it would
change (batch norm's running statistics) is put back, so probing never alters training.

All functions keep replica axes: with R replicas every number is an array of shape (R,).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.layers import ActivationLayer, WeightLayer
from ..core.network import Network, Step
from ..rules.base import LearningRule, block_names

METRICS = ("cosine", "angle_deg", "sign_agreement")


def _rows(array: np.ndarray, rep_ndim: int) -> np.ndarray:
    return array.reshape(*array.shape[:rep_ndim], -1)


def compare_arrays(a: np.ndarray, b: np.ndarray, rep_ndim: int = 0) -> dict[str, np.ndarray]:
    """Cosine, angle (degrees) and sign agreement of ``a`` and ``b``, per replica.

    Sign agreement is the fraction of entries with the same sign among those where at
    least one of the two is nonzero (two zeros say nothing). Undefined values (a zero
    array's cosine, agreement with no nonzero entry) are NaN.
    """
    a = _rows(np.asarray(a, dtype=np.float64), rep_ndim)
    b = _rows(np.asarray(b, dtype=np.float64), rep_ndim)
    norm = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    nonzero = (a != 0) | (b != 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norm > 0, (a * b).sum(axis=-1) / norm, np.nan)
        same = ((np.sign(a) == np.sign(b)) & nonzero).sum(axis=-1) / nonzero.sum(axis=-1)
    angle = np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))
    return {"cosine": cosine, "angle_deg": angle, "sign_agreement": same}


class _Recording(LearningRule):
    """Runs ``inner`` and keeps what chosen layers send down."""

    def __init__(self, inner: LearningRule, indices: set[int]) -> None:
        super().__init__()
        self.inner, self.indices, self.sent = inner, indices, {}

    def layer_backward(self, step: Step):
        grad_in, grads = self.inner.layer_backward(step)
        if step.index in self.indices:
            self.sent[step.index] = grad_in
        return grad_in, grads


def hidden_activations(net: Network) -> list[int]:
    """Indices of the activation layers of every block but the output layer's."""
    owners = block_names(net)
    last = owners[-1]
    return [i for i, layer in enumerate(net.layers)
            if isinstance(layer, ActivationLayer) and owners[i] not in (None, last)]


def alignment_pass(net: Network, rule: LearningRule, x: np.ndarray, targets: np.ndarray,
                   loss_fn: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
                   ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """Rule vs exact on the same forward pass of batch ``x`` (*rep, N, *input_shape):
    ``(gradient, signal)``, each ``{name: {metric: (*rep,)}}``: per weight array, and per
    hidden activation layer the signal it sends down, delta = (what reached its output) x
    f'(z) -- the same f' for both, so this is the angle of the hidden-layer signal however
    the rule delivered it (through B, injected directly, or transformed)."""
    saved = net.buffer_flat.copy()
    try:
        out, tape = net.forward(x)
    finally:
        net.buffer_flat[...] = saved  # probing must not move running statistics
    _, out_grad = loss_fn(out, targets)
    hidden = set(hidden_activations(net))
    exact, changed = _Recording(LearningRule(), hidden), _Recording(rule, hidden)
    exact_grads = net.backward(tape, out_grad, exact)
    rule_grads = net.backward(tape, out_grad, changed)
    rep_ndim = len(net.rep_shape)
    gradient = {name: compare_arrays(rule_grads[name], exact_grads[name], rep_ndim)
                for name in weight_names(net)}
    signal = {net.layers[i].name: compare_arrays(changed.sent[i], exact.sent[i], rep_ndim)
              for i in sorted(hidden) if changed.sent.get(i) is not None}
    return gradient, signal


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
    gradient, _ = alignment_pass(net, rule, x, targets, loss_fn)
    return {name: gradient[name] for name in params or gradient}


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
    """The weight matrices' parameter names (conv, dense, ...), in network order."""
    return [f"{layer.name}.weight" for layer in net.layers if isinstance(layer, WeightLayer)]


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
        self.signal: dict[str, dict[str, list[np.ndarray]]] = {}
        self.weights: dict[str, dict[str, list[np.ndarray]]] = {}

    def record(self, net: Network) -> None:
        if self.rule is None:
            return
        with np.errstate(all="ignore"):
            gradient, signal = alignment_pass(net, self.rule, self.x, self.targets,
                                              self.loss_fn)
            _append(self.gradient, gradient)
            _append(self.signal, signal)
            if self.weight_metrics:
                _append(self.weights, weight_alignment(net, self.rule))

    @staticmethod
    def _column(store: dict[str, dict[str, list[np.ndarray]]], replica: int) -> dict[str, Any]:
        return {name: {metric: [float(v[replica]) for v in values]
                       for metric, values in metrics.items()}
                for name, metrics in store.items()}

    def as_lists(self, replica: int = 0) -> dict[str, Any]:
        return {"gradient": self._column(self.gradient, replica),
                "signal": self._column(self.signal, replica),
                "weights": self._column(self.weights, replica)}


def _append(store: dict[str, dict[str, list[np.ndarray]]],
            rows: dict[str, dict[str, np.ndarray]]) -> None:
    for name, metrics in rows.items():
        slot = store.setdefault(name, {m: [] for m in metrics})
        for metric, value in metrics.items():
            slot[metric].append(np.atleast_1d(value))
