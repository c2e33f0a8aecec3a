"""Layers: an op plus its shapes and parameters.

A layer is built once for a per-sample input shape (checking that it fits, and
naming itself and both shapes if it does not), then runs ``forward(params, x) ->
(y, cache)`` and ``backward(params, cache, out_grad) -> (input_grad, param_grads)``.
The maths lives in :mod:`handprop.core.ops`; a learning rule that wants a different
backward pass calls those ops itself (see :mod:`handprop.rules`).

Arrays are ``(*rep, N, *sample_shape)``: optional replica axes, then the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod, sqrt
from typing import Any

import numpy as np

from .errors import ConfigError, ShapeError
from .ops import activations as act_ops
from .ops.conv import _pair, conv2d_backward, conv2d_forward, conv2d_geometry
from .ops.dense import dense_backward, dense_forward, flatten_backward, flatten_forward
from .ops.pool import max_pool2d_backward, max_pool2d_forward, max_pool2d_geometry

Shape = tuple[int, ...]
Params = dict[str, np.ndarray]

INIT_SCHEMES = ("normal", "he", "lecun", "glorot", "torch")


def _positive_int(layer: str, what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"layer {layer}: {what} must be a positive integer, got {value!r}")
    return int(value)


def _int_pair(layer: str, what: str, value: Any, minimum: int = 1) -> tuple[int, int]:
    pair = value if isinstance(value, tuple | list) else (value, value)
    if len(pair) != 2:
        raise ConfigError(f"layer {layer}: {what} must be an int or a pair, got {value!r}")
    for item in pair:
        if isinstance(item, bool) or not isinstance(item, int | np.integer) or item < minimum:
            raise ConfigError(f"layer {layer}: {what} must be >= {minimum}, got {value!r}")
    return _pair(tuple(int(v) for v in pair))


class Layer:
    """Base class. Subclasses set ``kind`` and implement the methods below."""

    kind = "layer"

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
        """Local parameter names (``weight``, ``bias``) and shapes; valid after build."""
        return {}

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

    def spec(self) -> dict[str, Any]:
        """A dict that :func:`handprop.core.spec.layer_from_spec` turns back into this layer."""
        return {"type": self.kind, "name": self.name}

    # -- computation -----------------------------------------------------------------
    def forward(self, params: Params, x: np.ndarray) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def backward(
        self, params: Params, cache: Any, out_grad: np.ndarray, need_input_grad: bool = True
    ) -> tuple[np.ndarray | None, Params]:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k not in ("type",))
        return f"{type(self).__name__}({args})"


class Conv2d(Layer):
    """2-D convolution (cross-correlation), weight ``(out, in/groups, kh, kw)``."""

    kind = "conv2d"

    def __init__(
        self,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        groups: int = 1,
        bias: bool = True,
        in_channels: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        self.out_channels = _positive_int(self.name, "out_channels", out_channels)
        self.kernel_size = _int_pair(self.name, "kernel_size", kernel_size)
        self.stride = _int_pair(self.name, "stride", stride)
        self.padding = _int_pair(self.name, "padding", padding, minimum=0)
        self.groups = _positive_int(self.name, "groups", groups)
        self.bias = bool(bias)
        self.in_channels = in_channels

    def _output_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 3:
            raise ShapeError(
                f"layer {self.name} (conv2d) needs (C, H, W) inputs, got shape {in_shape}"
            )
        channels, height, width = in_shape
        if self.in_channels is not None and self.in_channels != channels:
            raise ShapeError(
                f"layer {self.name} (conv2d) expects {self.in_channels} input channels, "
                f"the layer below gives shape {in_shape}"
            )
        if channels % self.groups or self.out_channels % self.groups:
            raise ShapeError(
                f"layer {self.name} (conv2d): groups={self.groups} must divide input channels "
                f"{channels} (input shape {in_shape}) and output channels {self.out_channels}"
            )
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out_h = (height + 2 * ph - kh) // sh + 1
        out_w = (width + 2 * pw - kw) // sw + 1
        if out_h < 1 or out_w < 1:
            raise ShapeError(
                f"layer {self.name} (conv2d): kernel {kh}x{kw} with padding {ph},{pw} does not "
                f"fit input shape {in_shape}"
            )
        self.in_channels = channels
        self.geometry = conv2d_geometry(
            (channels, height, width), self.kernel_size, self.stride, self.padding, self.groups
        )
        return (self.out_channels, out_h, out_w)

    def param_shapes(self) -> dict[str, Shape]:
        shapes = {
            "weight": (self.out_channels, self.in_shape[0] // self.groups, *self.kernel_size)
        }
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def fan_in(self) -> int:
        return self.in_shape[0] // self.groups * prod(self.kernel_size)

    def fan_out(self) -> int:
        # PyTorch's convention (torch.nn.init): out_channels * kernel area, groups ignored.
        return self.out_channels * prod(self.kernel_size)

    def spec(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "name": self.name,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "groups": self.groups,
            "bias": self.bias,
        }

    def forward(self, params: Params, x: np.ndarray) -> tuple[np.ndarray, Any]:
        return conv2d_forward(x, params["weight"], params.get("bias"), geometry=self.geometry)

    def backward(self, params, cache, out_grad, need_input_grad=True):
        input_grad, weight_grad, bias_grad = conv2d_backward(
            out_grad, params["weight"], cache, self.bias, need_input_grad
        )
        grads = {"weight": weight_grad}
        if self.bias:
            grads["bias"] = bias_grad
        return input_grad, grads


class Dense(Layer):
    """Fully connected layer, weight ``(out, in)`` like PyTorch's ``Linear``."""

    kind = "dense"

    def __init__(
        self,
        out_features: int,
        bias: bool = True,
        in_features: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        self.out_features = _positive_int(self.name, "out_features", out_features)
        self.bias = bool(bias)
        self.in_features = in_features

    def _output_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 1:
            raise ShapeError(
                f"layer {self.name} (dense) needs flat inputs, got shape {in_shape} "
                "(put a flatten layer in front)"
            )
        if self.in_features is not None and self.in_features != in_shape[0]:
            raise ShapeError(
                f"layer {self.name} (dense) expects {self.in_features} inputs, "
                f"the layer below gives shape {in_shape}"
            )
        self.in_features = in_shape[0]
        return (self.out_features,)

    def param_shapes(self) -> dict[str, Shape]:
        shapes = {"weight": (self.out_features, self.in_shape[0])}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def fan_in(self) -> int:
        return self.in_shape[0]

    def fan_out(self) -> int:
        return self.out_features

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "name": self.name, "out_features": self.out_features,
                "bias": self.bias}

    def forward(self, params, x):
        return dense_forward(x, params["weight"], params.get("bias"))

    def backward(self, params, cache, out_grad, need_input_grad=True):
        input_grad, weight_grad, bias_grad = dense_backward(
            out_grad, params["weight"], cache, self.bias, need_input_grad
        )
        grads = {"weight": weight_grad}
        if self.bias:
            grads["bias"] = bias_grad
        return input_grad, grads


class MaxPool2d(Layer):
    """Max-pooling; exact backward routes each window's gradient to one winner."""

    kind = "max_pool2d"

    def __init__(
        self,
        kernel_size: int | tuple[int, int] = 2,
        stride: int | tuple[int, int] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        self.kernel_size = _int_pair(self.name, "kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else _int_pair(self.name, "stride", stride)

    def _output_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) != 3:
            raise ShapeError(
                f"layer {self.name} (max_pool2d) needs (C, H, W) inputs, got shape {in_shape}"
            )
        channels, height, width = in_shape
        kh, kw = self.kernel_size
        if height < kh or width < kw:
            raise ShapeError(
                f"layer {self.name} (max_pool2d): window {kh}x{kw} does not fit input shape "
                f"{in_shape}"
            )
        self.geometry = max_pool2d_geometry((height, width), self.kernel_size, self.stride)
        return (channels, *self.geometry.out_hw)

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "name": self.name, "kernel_size": list(self.kernel_size),
                "stride": list(self.stride)}

    def forward(self, params, x):
        return max_pool2d_forward(x, geometry=self.geometry)

    def backward(self, params, cache, out_grad, need_input_grad=True):
        return max_pool2d_backward(out_grad, cache), {}


class Flatten(Layer):
    """(C, H, W) -> (C*H*W,), row-major."""

    kind = "flatten"

    def _output_shape(self, in_shape: Shape) -> Shape:
        return (prod(in_shape),)

    def forward(self, params, x):
        return flatten_forward(x, len(self.in_shape)), x.shape

    def backward(self, params, cache, out_grad, need_input_grad=True):
        return flatten_backward(out_grad, cache), {}


class Activation(Layer):
    """One element-wise activation for the whole layer."""

    kind = "activation"

    def __init__(self, activation: str, name: str | None = None) -> None:
        super().__init__(name)
        self.activation = act_ops.get_activation(activation)

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "name": self.name, "activation": self.activation.name}

    def forward(self, params, x):
        return act_ops.activation_forward(x, self.activation)

    def backward(self, params, cache, out_grad, need_input_grad=True):
        return act_ops.activation_backward(out_grad, cache, self.activation), {}


class PerChannelActivation(Layer):
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
            act_ops.get_activation(activation)

    def _output_shape(self, in_shape: Shape) -> Shape:
        if len(in_shape) not in (1, 3) or in_shape[0] != len(self.activations):
            raise ShapeError(
                f"layer {self.name} (per_channel_activation) has {len(self.activations)} "
                f"activations but the layer below gives shape {in_shape}"
            )
        self.plan = act_ops.channel_plan(self.activations, len(in_shape))
        return in_shape

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "name": self.name, "activations": list(self.activations)}

    def forward(self, params, x):
        return act_ops.per_channel_forward(x, self.plan)

    def backward(self, params, cache, out_grad, need_input_grad=True):
        return act_ops.per_channel_backward(out_grad, cache, self.plan), {}


LAYER_TYPES: dict[str, type[Layer]] = {
    cls.kind: cls
    for cls in (Conv2d, Dense, MaxPool2d, Flatten, Activation, PerChannelActivation)
}
