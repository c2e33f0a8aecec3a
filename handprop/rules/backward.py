"""What a learning rule changes in the backward pass, as data, and the NumPy interpreter.

A rule describes its backward pass with a :class:`BackwardDescription`, layer by layer
(layers it does not name are exact):

* ``weights`` -- {weight layer index: :class:`WeightGrads`}: the layer forms its gradients
  from its *local* gradients (``layer.weight_grad``, ``layer.bias_grad`` and
  ``layer.input_grad(out_grad, B, cache)``) instead of its own backward pass:

  - which matrix B the input gradient goes back through (:class:`Feedback`: W, sign(W),
    a fixed or redrawn or learning matrix the rule keeps, times a constant);
  - the weight gradient of ``rot180(delta)`` instead of delta (the article's broken code);
  - ``rot180`` of what it sends down (the article's conv -> conv gradient);
  - or, instead of any B, the output error projected through the rule's matrix (BioTorch's
    direct feedback alignment).

  For a conv layer that borrows its kernel (the as-run layer) the local gradients are a
  convolution's with the layer's own W: what the article's code computed.
* ``pools`` -- {max-pool index: :class:`PoolRouting`}: per channel, which *line* carries the
  gradient back (``exact``: U, the routed gradient; ``green``: T(U); ``red``:
  T(mask) * up(G)), whether every tied maximum receives it, and the map transform T.
* ``inject`` -- layers whose output gradient is the output error ``e @ B_l`` (direct
  feedback alignment), ``B_l`` the rule's matrix for that layer (K x D).
* ``no_input_grad`` -- layers that send nothing down (DFA's hidden layers fed directly).

Every matrix a description refers to is the rule's own: ``rule.feedback_array(index)``,
read when it is used (a rule may redraw it in ``begin_step`` or let it learn).

Both engines read the same description: :func:`backward_step` is the NumPy engine's
(:meth:`LearningRule.layer_backward` calls it), and the compiled engine turns a
description into its tables (:mod:`handprop.training.compiled.plan`). A rule that says
what it does this way runs on both, computing the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.network import Step
from ..core.ops.conv import Conv2d, Conv2dCache, conv2d_geometry, conv2d_input_grad
from ..core.ops.pool import max_pool2d_routing, max_pool2d_scatter, max_pool2d_upsample

BASES = ("weight", "sign", "none", "custom")
LINES = ("exact", "green", "red")
TRANSFORMS = ("rot180", "transpose")


def rot180(maps: np.ndarray) -> np.ndarray:
    """Rotate every (H, W) map by 180 degrees: (..., H, W) -> (..., H, W)."""
    return maps[..., ::-1, ::-1]


def transpose_maps(maps: np.ndarray) -> np.ndarray:
    """Transpose every (H, W) map: (..., H, W) -> (..., W, H)."""
    return maps.swapaxes(-1, -2)


def map_transform(name: str):
    """The map transform called ``name`` (``rot180`` or ``transpose``)."""
    if name == "rot180":
        return rot180
    if name == "transpose":
        return transpose_maps
    raise ConfigError(f"unknown map transform {name!r}; choose from {', '.join(TRANSFORMS)}")


@dataclass(frozen=True)
class Learning:
    """After each training step the feedback matrix M takes the weight's local gradient g,
    with its own decay: ``M <- M - lr * (g + weight_decay * M)`` (Kolen-Pollack)."""

    lr: float
    weight_decay: float


@dataclass(frozen=True)
class Feedback:
    """B, the matrix a weight layer sends its input gradient back through::

        B = scale * M * base(W)        (each factor only where it is given)

    base : ``weight`` (W), ``sign`` (sign(W)), ``none`` (B is M alone) or ``custom`` (the
        rule computes B in Python, ``feedback_matrix``: the NumPy engine only)
    scale : a constant factor (1.0: none)
    array : whether M, the rule's matrix for the layer (``rule.feedback_array(index)``,
        W's shape with the replica axes first), is a factor
    redrawn : the rule redraws M in ``begin_step``, before every training step
    learning : M learns after every training step (see :class:`Learning`)
    """

    base: str = "weight"
    scale: float = 1.0
    array: bool = False
    redrawn: bool = False
    learning: Learning | None = None

    def __post_init__(self) -> None:
        if self.base not in BASES:
            raise ConfigError(f"feedback base must be one of {', '.join(BASES)}, got {self.base!r}")
        if (self.base == "none" or self.redrawn or self.learning) and not self.array:
            raise ConfigError("feedback without a matrix of the rule's cannot be 'none', "
                              "redrawn or learning")

    @property
    def is_weight(self) -> bool:
        """Whether B is W itself (exact back-propagation's)."""
        return self.base == "weight" and self.scale == 1.0 and not self.array

    def matrix(self, weight: np.ndarray, array: np.ndarray | None = None) -> np.ndarray:
        """B for the current W (and the rule's M): ``scale * (M * base(W))``, the order in
        which the compiled engine forms it too."""
        if self.base == "custom":
            raise ConfigError("this feedback is computed by the rule's feedback_matrix")
        if self.is_weight:
            return weight
        result = {"weight": weight, "none": None}.get(self.base)
        if self.base == "sign":
            result = np.sign(weight)
        if self.array:
            result = array if result is None else array * result
        if self.scale != 1.0:
            result = self.scale * result
        return result


@dataclass(frozen=True)
class WeightGrads:
    """How one weight layer forms its gradients from its local gradients (see the module
    notes): through ``feedback``; ``rotate_delta``: the weight gradient of rot180(delta);
    ``rotate_sent``: rot180 of the input gradient it sends down; ``projected``: the input
    gradient is the output error projected through the rule's matrix (dense: ``e @ B``,
    B (K, in); conv: the input gradient of a convolution with B (K, C_in, kh, kw) of e
    spread over every output position) instead of anything sent through B."""

    feedback: Feedback = field(default_factory=Feedback)
    rotate_delta: bool = False
    rotate_sent: bool = False
    projected: bool = False


@dataclass(frozen=True)
class PoolRouting:
    """How one max-pool layer sends its gradient back (see the module notes): one line
    per channel, ``ties``: to every tied maximum (the article's code) instead of the first,
    ``transform``: T of the green and red lines."""

    lines: tuple[str, ...]
    ties: bool = False
    transform: str = "rot180"

    def __post_init__(self) -> None:
        if set(self.lines) - set(LINES) or self.transform not in TRANSFORMS:
            raise ConfigError(f"pool routing: lines from {', '.join(LINES)} and a transform "
                              f"from {', '.join(TRANSFORMS)}, got {self.lines}, {self.transform}")

    @cached_property
    def masks(self) -> dict[str, np.ndarray]:
        """{line: (C, 1, 1) bool mask of its channels}, lines that occur only."""
        chosen = np.array(self.lines)
        return {line: (chosen == line).reshape(-1, 1, 1) for line in LINES
                if (chosen == line).any()}


@dataclass(frozen=True)
class BackwardDescription:
    """A rule's backward pass, layer by layer (see the module notes)."""

    weights: Mapping[int, WeightGrads] = field(default_factory=dict)
    pools: Mapping[int, PoolRouting] = field(default_factory=dict)
    inject: frozenset[int] = frozenset()
    no_input_grad: frozenset[int] = frozenset()

    @property
    def exact(self) -> bool:
        return not (self.weights or self.pools or self.inject or self.no_input_grad)


# -- the NumPy interpreter ----------------------------------------------------------------


def backward_step(rule: Any, description: BackwardDescription, step: Step
                  ) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """One layer's backward pass under ``description`` (``rule`` holds the matrices)."""
    index, out_grad = step.index, step.out_grad
    if index in description.inject:
        out_grad = injected_error(rule.net, step.output_error, rule.feedback_array(index),
                                  index)
    if out_grad is None:  # between DFA's injection points nothing flows
        return None, {}
    need = step.need_input_grad and index not in description.no_input_grad
    routing = description.pools.get(index)
    if routing is not None:
        return routed_upstream(out_grad, step.cache, routing), {}
    weights = description.weights.get(index)
    if weights is not None:
        return _local_grads(rule, weights, step, out_grad, need)
    if out_grad is step.out_grad and need == step.need_input_grad:
        return step.exact()
    return step.layer.backward(step.params, step.cache, out_grad, need)


def _local_grads(rule: Any, how: WeightGrads, step: Step, out_grad: np.ndarray, need: bool
                 ) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    layer, cache, index = step.layer, step.cache, step.index
    grads = {"weight": layer.weight_grad(rot180(out_grad) if how.rotate_delta else out_grad,
                                         cache)}
    if layer.bias:
        grads["bias"] = layer.bias_grad(out_grad)
    sent = None
    if need and how.projected:
        sent = projected_error(rule.net, layer, step.output_error, rule.feedback_array(index))
    elif need:
        feedback = rule.feedback_matrix(index, step.params["weight"])
        sent = layer.input_grad(out_grad, feedback, cache)
        if how.rotate_sent:
            sent = rot180(sent)
    if how.feedback.learning is not None:
        rule.learn(index, grads["weight"])  # after B has sent the gradient down
    return sent, grads


def routed_upstream(out_grad: np.ndarray, cache: Any, routing: PoolRouting) -> np.ndarray:
    """What a max-pool sends back, channel by channel along its line: U (``exact``),
    T(U) (``green``) or T(mask) * up(G) (``red``)."""
    masks = routing.masks
    transform = map_transform(routing.transform)
    weights = max_pool2d_routing(cache, routing.ties)
    grad = out_grad.reshape(*out_grad.shape[:-2], -1, 1)
    upstream = max_pool2d_scatter(weights * grad, cache)  # U
    values = {"exact": lambda: upstream, "green": lambda: transform(upstream),
              "red": lambda: (transform(max_pool2d_scatter(weights, cache))
                              * max_pool2d_upsample(out_grad, cache))}
    if len(masks) == 1:
        return values[next(iter(masks))]()
    result = np.zeros_like(upstream)
    for line, mask in masks.items():
        np.copyto(result, values[line](), where=mask)
    return result


def injected_error(net: Any, error: np.ndarray, matrix: np.ndarray, index: int) -> np.ndarray:
    """DFA: the gradient at layer ``index``'s output, ``e @ B`` (B: (*rep, K, D))."""
    rep = net.rep_shape
    batch = error.shape[len(rep)]
    flat = error.reshape(*rep, batch, -1) @ matrix
    return flat.reshape(*rep, batch, *net.shapes[index + 1])


def projected_error(net: Any, layer: Any, error: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """BioTorch's DFA: a weight layer's input gradient is the output error projected,
    ``e @ B`` (dense, B (K, in)) or the input gradient of a convolution with B
    (K, C_in, kh, kw) of ``e`` spread over every output position (conv)."""
    rep = net.rep_shape
    error = error.reshape(*rep, -1, matrix.shape[len(rep)])
    if not isinstance(layer, Conv2d):
        return error @ matrix
    geometry = conv2d_geometry(layer.in_shape, layer.kernel_size, layer.stride,
                               layer.padding, 1)
    spread = np.broadcast_to(error[..., None, None], (*error.shape, *geometry.out_hw))
    fake = Conv2dCache(None, geometry, (*error.shape[:-1], *layer.in_shape))
    return conv2d_input_grad(np.ascontiguousarray(spread), matrix, fake)
