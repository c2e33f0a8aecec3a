"""Per-channel scale: every channel multiplied by its own learnable factor.

Forward, for x of shape (*rep, N, C, H, W) (or (*rep, N, C) vectors) and s (*rep, C)::

    y[n, c, i, j] = x[n, c, i, j] * s[c]

Backward, with delta = dL/dy (y's shape)::

    dL/dx[n, c, i, j] = delta[n, c, i, j] * s[c]
    dL/ds[c]          = sum over n, i, j of delta[n, c, i, j] * x[n, c, i, j]

x, y, delta (*rep, N, C, H, W) or (*rep, N, C); s, dL/ds (*rep, C). The scale starts at
1 (the identity), as batch norm's gamma does. Replica axes lead every array.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..layers import Layer, register_layer


def _per_channel(scale: np.ndarray, ndim: int) -> np.ndarray:
    """s (*rep, C) shaped to broadcast against x (*rep, N, C, ...) of ``ndim`` axes."""
    trailing = ndim - scale.ndim - 1  # the axes after C (H, W for maps)
    return scale.reshape(*scale.shape[:-1], 1, scale.shape[-1], *([1] * trailing))


def scale_forward(x: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y = x * s[c]; the cache is x (what the scale's gradient needs)."""
    return x * _per_channel(scale, x.ndim), x


def scale_backward(out_grad: np.ndarray, scale: np.ndarray, x: np.ndarray,
                   need_input_grad: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """(dL/dx, dL/ds) from dL/dy: the gradient times s, and delta * x summed over the
    batch and every position of each channel."""
    batch_axis = scale.ndim - 1
    axes = (batch_axis, *range(batch_axis + 2, x.ndim))  # N, then H and W
    scale_grad = (out_grad * x).sum(axis=axes)
    grad_in = out_grad * _per_channel(scale, x.ndim) if need_input_grad else None
    return grad_in, scale_grad


@register_layer
class Scale(Layer):
    """Multiplies each channel by a learnable factor ``scale`` (C,), initially 1."""

    kind = "scale"

    def _output_shape(self, in_shape):
        if len(in_shape) not in (1, 3):
            raise ShapeError(f"layer {self.name} (scale) needs (C, H, W) or (C,) inputs, got "
                             f"shape {in_shape}")
        return in_shape

    def param_shapes(self):
        return {"scale": (self.in_shape[0],)}

    def init_param(self, local: str, rng: np.random.Generator, scheme: str) -> np.ndarray:
        # 1 whatever the scheme, drawing nothing: adding a Scale leaves every other
        # layer's initial weights unchanged.
        return np.ones(self.param_shapes()[local])

    def forward(self, params, x, train=True):
        return scale_forward(x, params["scale"])

    def backward(self, params, cache, out_grad, need_input_grad=True):
        grad_in, scale_grad = scale_backward(out_grad, params["scale"], cache, need_input_grad)
        return grad_in, {"scale": scale_grad}
