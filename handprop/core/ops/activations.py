"""Element-wise activations, each next to its derivative, and the per-channel layer.

Backward of any element-wise ``y = f(z)`` is ``dL/dz = dL/dy * f'(z)``; the table
below gives each ``f'`` in terms of ``z`` and ``y`` (whichever is cheaper):

=============  ==============================  =====================================
name           f(z)                            f'(z)
=============  ==============================  =====================================
identity       z                               1
relu           max(z, 0)                       1 if z > 0 else 0 (0 at z = 0, as PyTorch)
leaky_relu:a   z if z > 0 else a*z             1 if z > 0 else a   (a defaults to 0.01)
tanh           tanh(z)                         1 - y**2
arctan         arctan(z)                       1 / (1 + z**2)
sigmoid        1 / (1 + exp(-z)), stable       y * (1 - y)
=============  ==============================  =====================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..errors import ConfigError, ShapeError
from ..layers import ActivationLayer, register_layer


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # 1 / (1 + exp(-z)) = exp(-log(1 + exp(-z))); logaddexp never overflows and keeps
    # full relative precision in both tails.
    return np.exp(-np.logaddexp(0.0, -z))


@dataclass(frozen=True)
class ActivationFn:
    """An element-wise function and its derivative ``derivative(z, y) = f'(z)``."""

    name: str
    forward: Callable[[np.ndarray], np.ndarray]
    derivative: Callable[[np.ndarray, np.ndarray], np.ndarray]

    def __reduce__(self):
        return (get_activation, (self.name,))  # pickled by name (its functions are lambdas)


def _leaky_relu(slope: float) -> ActivationFn:
    return ActivationFn(
        f"leaky_relu:{slope:g}",
        lambda z: np.where(z > 0, z, slope * z),
        lambda z, y: np.where(z > 0, 1.0, slope).astype(z.dtype),
    )


_ACTIVATIONS: dict[str, ActivationFn] = {
    "identity": ActivationFn("identity", lambda z: z, lambda z, y: np.ones_like(z)),
    "relu": ActivationFn(
        "relu", lambda z: np.maximum(z, 0), lambda z, y: (z > 0).astype(z.dtype)
    ),
    "tanh": ActivationFn("tanh", np.tanh, lambda z, y: 1 - y * y),
    "arctan": ActivationFn("arctan", np.arctan, lambda z, y: 1 / (1 + z * z)),
    "sigmoid": ActivationFn("sigmoid", _sigmoid, lambda z, y: y * (1 - y)),
}

ACTIVATION_NAMES = (*_ACTIVATIONS, "leaky_relu")


def get_activation(name: str) -> ActivationFn:
    """Look up an activation by name; ``leaky_relu`` takes ``leaky_relu:SLOPE``."""
    if not isinstance(name, str):
        raise ConfigError(f"an activation is named by a string (one of "
                          f"{', '.join(ACTIVATION_NAMES)}), got {name!r}")
    if name in _ACTIVATIONS:
        return _ACTIVATIONS[name]
    if name == "leaky_relu" or name.startswith("leaky_relu:"):
        text = name.partition(":")[2] or "0.01"
        try:
            slope = float(text)
        except ValueError:
            raise ConfigError(f"leaky_relu slope must be a number, got {text!r}") from None
        return _leaky_relu(slope)
    raise ConfigError(
        f"unknown activation {name!r}; choose from {', '.join(ACTIVATION_NAMES)}"
    )


def activation_forward(
    z: np.ndarray, activation: ActivationFn
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """``y = f(z)``; the cache is ``(z, y)``. Any shape."""
    y = activation.forward(z)
    return y, (z, y)


def activation_backward(
    out_grad: np.ndarray, cache: tuple[np.ndarray, np.ndarray], activation: ActivationFn
) -> np.ndarray:
    """``dL/dz = dL/dy * f'(z)``. Any shape."""
    z, y = cache
    return out_grad * activation.derivative(z, y)


class ChannelPlan(NamedTuple):
    """Which activation each channel uses: the first one, then the others with masks.

    first : ActivationFn applied everywhere first
    others : ((ActivationFn, mask), ...) where ``mask`` is a boolean array that broadcasts
        against (*lead, C, H, W) (shape (C, 1, 1)) or (*lead, C) (shape (C,))
    """

    first: ActivationFn
    others: tuple[tuple[ActivationFn, np.ndarray], ...]


def channel_plan(names: Sequence[str], sample_ndim: int) -> ChannelPlan:
    """Plan a per-channel activation for samples of ``sample_ndim`` axes (1 or 3)."""
    acts = [get_activation(name) for name in names]
    distinct = list(dict.fromkeys(act.name for act in acts))
    by_name = {act.name: act for act in acts}
    tail = (1,) * (sample_ndim - 1)
    others = []
    for name in distinct[1:]:
        mask = np.array([act.name == name for act in acts]).reshape(len(acts), *tail)
        others.append((by_name[name], mask))
    return ChannelPlan(by_name[distinct[0]], tuple(others))


def per_channel_forward(
    z: np.ndarray, plan: ChannelPlan
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """A different activation on each channel (see :func:`channel_plan`).

    Every distinct activation is evaluated on the whole array and kept where its
    channel mask says: a few whole-array calls instead of a loop over channels.

    Parameters
    ----------
    z : ndarray, shape (*lead, C, H, W) or (*lead, C)

    Returns
    -------
    y : ndarray, same shape as z
    cache : (z, y)
    """
    y = plan.first.forward(z)
    if plan.others:
        y = np.array(y, copy=True) if y is z else y
        for activation, mask in plan.others:
            np.copyto(y, activation.forward(z), where=mask)
    return y, (z, y)


def per_channel_backward(
    out_grad: np.ndarray, cache: tuple[np.ndarray, np.ndarray], plan: ChannelPlan
) -> np.ndarray:
    """``dL/dz = dL/dy * f_c'(z)`` with each channel's own derivative."""
    z, y = cache
    derivative = plan.first.derivative(z, y)
    for activation, mask in plan.others:
        np.copyto(derivative, activation.derivative(z, y), where=mask)
    return out_grad * derivative


@register_layer
class Activation(ActivationLayer):
    """One element-wise activation for the whole layer."""

    kind = "activation"

    def __init__(self, activation: str, name: str | None = None) -> None:
        super().__init__(name)
        self.activation = get_activation(activation)

    def spec(self):
        return {"type": self.kind, "name": self.name, "activation": self.activation.name}

    def forward(self, params, x, train=True):
        return activation_forward(x, self.activation)

    def backward(self, params, cache, out_grad, need_input_grad=True):
        return activation_backward(out_grad, cache, self.activation), {}


@register_layer
class PerChannelActivation(ActivationLayer):
    """A different activation on each channel (the article: relu/arctan, then
    arctan/relu/arctan/tanh). Channels are axis -3 of maps, axis -1 of vectors."""

    kind = "per_channel_activation"

    def __init__(self, activations: Sequence[str], name: str | None = None) -> None:
        super().__init__(name)
        if isinstance(activations, str) or not activations:
            raise ConfigError(
                f"layer {self.name}: activations must be a non-empty list of names, "
                f"got {activations!r}"
            )
        self.activations = tuple(activations)
        for activation in self.activations:
            get_activation(activation)

    def _output_shape(self, in_shape):
        if len(in_shape) not in (1, 3) or in_shape[0] != len(self.activations):
            raise ShapeError(
                f"layer {self.name} (per_channel_activation) has {len(self.activations)} "
                f"activations but the layer below gives shape {in_shape}"
            )
        self.plan = channel_plan(self.activations, len(in_shape))
        return in_shape

    def spec(self):
        return {"type": self.kind, "name": self.name, "activations": list(self.activations)}

    def forward(self, params, x, train=True):
        return per_channel_forward(x, self.plan)

    def backward(self, params, cache, out_grad, need_input_grad=True):
        return per_channel_backward(out_grad, cache, self.plan), {}
