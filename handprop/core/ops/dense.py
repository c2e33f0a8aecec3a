"""Fully connected layer and flatten.

Dense forward ``out = x @ W.T + b`` with ``W`` of shape (out, in) like PyTorch.
Backward with ``delta = dL/dout``:

* ``dL/dW = delta.T @ x`` (summed over the batch),
* ``dL/dx = delta @ W``,
* ``dL/db = sum over the batch of delta``.

Leading replica axes are allowed: ``x`` (*rep, N, in), ``W`` (*rep, out, in).
"""

from __future__ import annotations

from math import prod

import numpy as np

from ..errors import ShapeError
from ..layers import Layer, WeightLayer, positive_int, register_layer


def dense_forward(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Affine map.

    Parameters
    ----------
    x : ndarray, shape (*rep, N, in)
    weight : ndarray, shape (*rep, out, in)
    bias : ndarray, shape (*rep, out), optional

    Returns
    -------
    out : ndarray, shape (*rep, N, out)
    cache : ndarray
        The input ``x`` (all the weight gradient needs).
    """
    fits = x.ndim == weight.ndim and x.shape[-1] == weight.shape[-1]
    if not fits or x.shape[:-2] != weight.shape[:-2]:
        raise ShapeError(f"dense: input {x.shape} does not fit weight {weight.shape}")
    # ndarray.dot (2-D, no replicas) has less per-call overhead than the matmul ufunc,
    # and the same BLAS call: the same numbers.
    out = x.dot(weight.T) if x.ndim == 2 else x @ weight.swapaxes(-1, -2)
    if bias is not None:
        out += bias[..., None, :]
    return out, x


def dense_input_grad(out_grad: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """dL/dx = out_grad @ weight: (*rep, N, out), (*rep, out, in) -> (*rep, N, in).

    ``weight`` is an argument so that a learning rule can send the gradient back
    through another matrix (feedback alignment, sign symmetry).
    """
    if out_grad.ndim == weight.ndim == 2:  # ndarray.dot: see dense_forward
        return out_grad.dot(weight)
    return out_grad @ weight


def dense_weight_grad(out_grad: np.ndarray, x: np.ndarray) -> np.ndarray:
    """dL/dW = out_grad.T @ x: (*rep, N, out), (*rep, N, in) -> (*rep, out, in)."""
    if out_grad.shape[-2] == 1:  # one sample: an outer product, cheaper without matmul
        if out_grad.ndim > 2:  # per replica: einsum's loop beats broadcasting here
            return np.einsum("...o,...i->...oi", out_grad[..., 0, :], x[..., 0, :])
        return out_grad.swapaxes(-1, -2) * x
    if out_grad.ndim == x.ndim == 2:  # ndarray.dot: see dense_forward
        return out_grad.T.dot(x)
    return out_grad.swapaxes(-1, -2) @ x


def dense_bias_grad(out_grad: np.ndarray) -> np.ndarray:
    """dL/db = out_grad summed over the batch: (*rep, N, out) -> (*rep, out)."""
    return out_grad.sum(axis=-2)


def dense_backward(
    out_grad: np.ndarray,
    weight: np.ndarray,
    x: np.ndarray,
    has_bias: bool = False,
    need_input_grad: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Exact backward pass of :func:`dense_forward`.

    Returns
    -------
    input_grad : (*rep, N, in) or None; weight_grad : (*rep, out, in);
    bias_grad : (*rep, out) or None
    """
    input_grad = dense_input_grad(out_grad, weight) if need_input_grad else None
    bias_grad = dense_bias_grad(out_grad) if has_bias else None
    return input_grad, dense_weight_grad(out_grad, x), bias_grad


def flatten_forward(x: np.ndarray, sample_ndim: int) -> np.ndarray:
    """Flatten the last ``sample_ndim`` axes (row-major): (*lead, C, H, W) -> (*lead, C*H*W).

    Row-major over (C, H, W) is the article's order: channel a first, each map row by row.
    """
    lead = x.shape[: x.ndim - sample_ndim]
    return x.reshape(*lead, -1)


def flatten_backward(out_grad: np.ndarray, in_shape: tuple[int, ...]) -> np.ndarray:
    """The gradient reshaped back to the input's shape."""
    return out_grad.reshape(in_shape)


@register_layer
class Dense(WeightLayer):
    """Fully connected layer, weight ``(out, in)`` like PyTorch's ``Linear``."""

    kind = "dense"

    def __init__(self, out_features: int, bias: bool = True, in_features: int | None = None,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.out_features = positive_int(self.name, "out_features", out_features)
        self.bias = bool(bias)
        self.in_features = in_features

    def _output_shape(self, in_shape):
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

    def param_shapes(self):
        shapes = {"weight": (self.out_features, self.in_shape[0])}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def fan_in(self) -> int:
        return self.in_shape[0]

    def fan_out(self) -> int:
        return self.out_features

    def spec(self):
        return {"type": self.kind, "name": self.name, "out_features": self.out_features,
                "bias": self.bias}

    def forward(self, params, x, train=True):
        return dense_forward(x, params["weight"], params.get("bias"))

    def input_grad(self, out_grad, weight, cache):
        return dense_input_grad(out_grad, weight)

    def weight_grad(self, out_grad, cache):
        return dense_weight_grad(out_grad, cache)

    def bias_grad(self, out_grad):
        return dense_bias_grad(out_grad)


@register_layer
class Flatten(Layer):
    """(C, H, W) -> (C*H*W,), row-major."""

    kind = "flatten"

    def _output_shape(self, in_shape):
        return (prod(in_shape),)

    def workspace(self, need_input_grad=True, itemsize=8):
        return 0, 0  # views of its input and of its output gradient

    def forward(self, params, x, train=True):
        return flatten_forward(x, len(self.in_shape)), x.shape

    def backward(self, params, cache, out_grad, need_input_grad=True):
        return flatten_backward(out_grad, cache), {}
