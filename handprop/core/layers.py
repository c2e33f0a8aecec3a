"""Layers: an op with its shapes and parameters, and the protocol every layer keeps.

A layer is built once for a per-sample input shape (checking that it fits, and naming
itself and both shapes if it does not), then runs::

    forward(params, x, train=True) -> (y, cache)
    backward(params, cache, out_grad, need_input_grad=True) -> (input_grad, param_grads)

``params`` holds the layer's own arrays by local name (``weight``, ``bias``, and state
such as batch norm's ``running_mean``). Arrays are ``(*rep, N, *sample_shape)``:
optional replica axes, then the batch.

**Weight layers** (:class:`WeightLayer`: conv2d, dense and every future op with a weight
matrix) give their three local gradients separately::

    input_grad(out_grad, weight, cache)   # sent down through `weight` (a rule may pass B)
    weight_grad(out_grad, cache)
    bias_grad(out_grad)

and their ``backward`` is written once, here. A learning rule changes what a weight
layer sends down by calling ``layer.input_grad(out_grad, B, cache)``; it never edits
an op.

**Registration.** Each layer class lives in its op's module (``handprop/core/ops/``),
next to the maths, and registers itself with :func:`register_layer`; network specs
(TOML) find layers by ``kind`` in :data:`LAYERS`. A new op is one new file there.
"""

from __future__ import annotations

from math import prod, sqrt
from typing import Any, ClassVar

import numpy as np

from .errors import ConfigError

Shape = tuple[int, ...]
Params = dict[str, np.ndarray]

INIT_SCHEMES = ("normal", "he", "lecun", "glorot", "torch")

LAYERS: dict[str, type[Layer]] = {}
"""Every registered layer class by ``kind`` (complete once :mod:`handprop.core.ops` is
imported, which imports every op module: :func:`handprop.core.ops.layer_types`)."""


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Class decorator: make a layer findable by its ``kind`` (e.g. in network specs)."""
    if cls.kind in LAYERS and LAYERS[cls.kind] is not cls:
        raise ConfigError(f"two layer classes claim the kind {cls.kind!r}")
    LAYERS[cls.kind] = cls
    return cls


def pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``3 -> (3, 3)``; ``(2, 3) -> (2, 3)``."""
    if isinstance(value, tuple | list):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def positive_int(layer: str, what: str, value: Any) -> int:
    """``value`` as an int >= 1, or a ConfigError naming the layer and the argument."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"layer {layer}: {what} must be a positive integer, got {value!r}")
    return int(value)


def int_pair(layer: str, what: str, value: Any, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints, each >= ``minimum``, as a pair."""
    items = value if isinstance(value, tuple | list) else (value, value)
    if len(items) != 2:
        raise ConfigError(f"layer {layer}: {what} must be an int or a pair, got {value!r}")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | np.integer) or item < minimum:
            raise ConfigError(f"layer {layer}: {what} must be >= {minimum}, got {value!r}")
    return pair(tuple(int(v) for v in items))


class Layer:
    """Base class. Subclasses set ``kind`` and implement ``forward``/``backward``; those
    with parameters also ``param_shapes`` (trainable) and ``state_shapes`` (not)."""

    kind: ClassVar[str] = "layer"
    batch_coupled: ClassVar[bool] = False
    """Whether, in train mode, one sample's output depends on the other samples of its
    batch (batch statistics): such a batch must not be computed in parts."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.kind
        self.in_shape: Shape = ()
        self.out_shape: Shape = ()

    # -- structure -------------------------------------------------------------------
    def build(self, in_shape: Shape) -> Shape:
        """Check ``in_shape`` (per sample) and return the per-sample output shape."""
        self.in_shape = tuple(in_shape)
        self.out_shape = self._output_shape(self.in_shape)
        return self.out_shape

    def _output_shape(self, in_shape: Shape) -> Shape:
        return in_shape

    def param_shapes(self) -> dict[str, Shape]:
        """Trainable parameters by local name, with shapes; valid after build."""
        return {}

    def state_shapes(self) -> dict[str, Shape]:
        """Arrays the layer keeps that are not trained (e.g. running statistics)."""
        return {}

    def borrowed(self) -> dict[str, str]:
        """Parameters of *other* layers this layer reads, ``{local: "layer.param"}``.

        They appear in its ``params`` under the local name; gradients it returns for
        them are added to the owner's. (The article's as-run network borrows a kernel.)
        """
        return {}

    def init_state(self, local: str) -> np.ndarray:
        """The starting value of one state array (see :meth:`state_shapes`)."""
        raise NotImplementedError(f"layer {self.name} has no state {local!r}")

    def fan_in(self) -> int:
        return 1

    def fan_out(self) -> int:
        return 1

    def init_param(self, local: str, rng: np.random.Generator, scheme: str) -> np.ndarray:
        """Draw one parameter array with ``scheme`` (see ``INIT_SCHEMES``)."""
        shape = self.param_shapes()[local]
        fan_in, fan_out = self.fan_in(), self.fan_out()
        if scheme == "torch":  # PyTorch's default for both weight and bias
            bound = 1 / sqrt(fan_in)
            return rng.uniform(-bound, bound, size=shape)
        if local == "bias":
            return np.zeros(shape)
        if scheme == "normal":  # the article: standard normal
            return rng.standard_normal(shape)
        if scheme == "he":
            return rng.standard_normal(shape) * sqrt(2 / fan_in)
        if scheme == "lecun":
            return rng.standard_normal(shape) * sqrt(1 / fan_in)
        if scheme == "glorot":
            bound = sqrt(6 / (fan_in + fan_out))
            return rng.uniform(-bound, bound, size=shape)
        raise ConfigError(f"unknown init scheme {scheme!r}; choose from {', '.join(INIT_SCHEMES)}")

    def workspace(self, need_input_grad: bool = True, itemsize: int = 8) -> tuple[int, int]:
        """Memory per sample, in values of ``itemsize`` bytes, for the estimate of
        :mod:`.limits`: ``(kept, work)``. ``kept``: what the forward pass keeps until the
        backward pass (the output and the cache); ``work``: what the backward pass needs
        on top while it runs (the gradients in and out, and its own temporaries; int64
        indices and float64 sums count ``8 // itemsize`` values each). Valid after build;
        a layer with big temporaries (im2col) says so next to its forward pass."""
        out = prod(self.out_shape)
        return out, out + (prod(self.in_shape) if need_input_grad else 0)

    def spec(self) -> dict[str, Any]:
        """A dict that :func:`handprop.core.spec.layer_from_spec` turns back into this layer."""
        return {"type": self.kind, "name": self.name}

    # -- computation -----------------------------------------------------------------
    def forward(self, params: Params, x: np.ndarray, train: bool = True
                ) -> tuple[np.ndarray, Any]:
        """``train=False`` is evaluation (e.g. batch norm uses its running statistics)."""
        raise NotImplementedError

    def backward(
        self, params: Params, cache: Any, out_grad: np.ndarray, need_input_grad: bool = True
    ) -> tuple[np.ndarray | None, Params]:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k not in ("type",))
        return f"{type(self).__name__}({args})"


class WeightLayer(Layer):
    """A layer with a weight matrix (and optionally a bias): its backward is the three
    local gradients (see the module notes). Subclasses set ``self.bias`` (bool)."""

    bias: bool = False

    def input_grad(self, out_grad: np.ndarray, weight: np.ndarray, cache: Any) -> np.ndarray:
        """dL/dx sent down through ``weight`` (the forward weight, or a rule's B)."""
        raise NotImplementedError

    def weight_grad(self, out_grad: np.ndarray, cache: Any) -> np.ndarray:
        """dL/dW from dL/dout and the forward pass's cache."""
        raise NotImplementedError

    def bias_grad(self, out_grad: np.ndarray) -> np.ndarray:
        """dL/db from dL/dout."""
        raise NotImplementedError

    def param_grads(self, out_grad: np.ndarray, cache: Any) -> Params:
        """``{"weight": ..., "bias": ...}`` (bias only if the layer has one)."""
        grads = {"weight": self.weight_grad(out_grad, cache)}
        if self.bias:
            grads["bias"] = self.bias_grad(out_grad)
        return grads

    def backward(self, params, cache, out_grad, need_input_grad=True):
        grad_in = self.input_grad(out_grad, params["weight"], cache) if need_input_grad else None
        return grad_in, self.param_grads(out_grad, cache)


class ActivationLayer(Layer):
    """An element-wise nonlinearity (one function, or one per channel): where direct
    feedback alignment injects its error, and what the article's ``D = f'(Z)`` is."""
