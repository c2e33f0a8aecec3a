"""2-D batch normalisation (``torch.nn.BatchNorm2d``): per channel, over (N, H, W).

Train mode, for channel c over its m = N*H*W entries in the batch::

    mu_c  = mean(x[:, c])
    var_c = mean((x[:, c] - mu_c)**2)                 (biased: what normalises)
    xhat  = (x - mu_c) / sqrt(var_c + eps)
    y     = gamma_c * xhat + beta_c

and the running statistics (layer *state*, not trained) move towards the batch's,
PyTorch's update with the unbiased variance::

    running_mean = (1 - momentum) * running_mean + momentum * mu
    running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)

Eval mode uses ``running_mean``/``running_var`` in place of ``mu``/``var`` and changes
no state: a fixed per-channel affine map.

Backward, with ``delta = dL/dy`` and sums/means over (N, H, W) per channel::

    dL/dgamma = sum(delta * xhat)          dL/dbeta = sum(delta)
    train:  dL/dx = gamma / sqrt(var + eps) * (delta - mean(delta) - xhat * mean(delta * xhat))
    eval:   dL/dx = gamma / sqrt(running_var + eps) * delta

In train mode mu and var depend on every entry of the channel: the two mean terms are
the gradient that flows through them (the full batch-statistics backward).

Shapes: ``x``, ``y``, ``delta`` (*rep, N, C, H, W); ``gamma``, ``beta`` and the running
statistics (*rep, C). Statistics are taken per replica, never across the replica axes,
so a replica computes (and its running statistics hold) exactly what a network alone
would. ``affine=False`` drops gamma and beta (gamma = 1, beta = 0).
"""

from __future__ import annotations

from numbers import Real
from typing import Any, NamedTuple

import numpy as np

from ..errors import ConfigError, ShapeError
from ..layers import Layer, register_layer

CHANNEL_STATS_AXES = (-4, -2, -1)  # N, H, W: everything of a replica but the channel


class BatchNorm2dCache(NamedTuple):
    """What the backward pass needs.

    xhat : ndarray (*rep, N, C, H, W), the normalised input
    inv_std : ndarray (*rep, 1, C, 1, 1), 1 / sqrt(var + eps) (batch or running var)
    train : bool, whether the statistics were the batch's
    """

    xhat: np.ndarray
    inv_std: np.ndarray
    train: bool


def _per_channel(values: np.ndarray) -> np.ndarray:
    """(*rep, C) -> (*rep, 1, C, 1, 1), to broadcast against (*rep, N, C, H, W)."""
    return values[..., None, :, None, None]


def batch_norm2d_forward(
    x: np.ndarray,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    train: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, BatchNorm2dCache]:
    """Normalise each channel; in train mode also update the running statistics in place.

    Parameters
    ----------
    x : ndarray, shape (*rep, N, C, H, W)
    weight, bias : ndarray, shape (*rep, C), or None (no affine map)
    running_mean, running_var : ndarray, shape (*rep, C), changed in place when ``train``
    train : bool, batch statistics (True) or the running ones (False)
    momentum, eps : float

    Returns
    -------
    y : ndarray, shape of ``x``
    cache : BatchNorm2dCache
    """
    if x.ndim < 4 or running_mean.shape != (*x.shape[:-4], x.shape[-3]):
        raise ShapeError(f"batch_norm2d: input {x.shape} does not fit running statistics "
                         f"{running_mean.shape} (want (*rep, N, C, H, W) and (*rep, C))")
    if train:
        count = x.shape[-4] * x.shape[-2] * x.shape[-1]
        if count < 2:
            raise ShapeError(f"batch_norm2d: train mode needs more than one value per channel, "
                             f"got input shape {x.shape}")
        mean = x.mean(axis=CHANNEL_STATS_AXES, keepdims=True)
        centered = x - mean
        var = (centered * centered).mean(axis=CHANNEL_STATS_AXES, keepdims=True)
        inv_std = 1.0 / np.sqrt(var + eps)
        xhat = centered * inv_std
        batch_mean, batch_var = mean[..., 0, :, 0, 0], var[..., 0, :, 0, 0]
        running_mean *= 1 - momentum
        running_mean += momentum * batch_mean
        running_var *= 1 - momentum
        running_var += momentum * batch_var * (count / (count - 1))
    else:
        inv_std = _per_channel(1.0 / np.sqrt(running_var + eps))
        xhat = (x - _per_channel(running_mean)) * inv_std
    y = xhat if weight is None else xhat * _per_channel(weight)
    if bias is not None:
        y = y + _per_channel(bias)
    return y, BatchNorm2dCache(xhat, inv_std, train)


def batch_norm2d_param_grads(out_grad: np.ndarray, cache: BatchNorm2dCache
                             ) -> tuple[np.ndarray, np.ndarray]:
    """dL/dgamma = sum(delta * xhat) and dL/dbeta = sum(delta) per channel.

    out_grad (*rep, N, C, H, W) -> two arrays (*rep, C)
    """
    return ((out_grad * cache.xhat).sum(axis=CHANNEL_STATS_AXES),
            out_grad.sum(axis=CHANNEL_STATS_AXES))


def batch_norm2d_input_grad(out_grad: np.ndarray, weight: np.ndarray | None,
                            cache: BatchNorm2dCache,
                            param_grads: tuple[np.ndarray, np.ndarray] | None = None
                            ) -> np.ndarray:
    """dL/dx, through the batch statistics in train mode, a per-channel scale in eval mode.

    Parameters
    ----------
    out_grad : ndarray, shape (*rep, N, C, H, W)
    weight : ndarray (*rep, C), or None (affine=False)
    cache : BatchNorm2dCache from the forward pass
    param_grads : what :func:`batch_norm2d_param_grads` gave, if already computed (the
        train-mode gradient reuses both sums)

    Returns
    -------
    ndarray, shape (*rep, N, C, H, W)
    """
    scale = cache.inv_std if weight is None else cache.inv_std * _per_channel(weight)
    if not cache.train:  # fixed statistics: a per-channel affine map
        return out_grad * scale
    weight_grad, bias_grad = param_grads or batch_norm2d_param_grads(out_grad, cache)
    xhat = cache.xhat
    count = xhat.shape[-4] * xhat.shape[-2] * xhat.shape[-1]
    mean_grad = _per_channel(bias_grad) / count  # mean(delta)
    mean_grad_xhat = _per_channel(weight_grad) / count  # mean(delta * xhat)
    return scale * (out_grad - mean_grad - xhat * mean_grad_xhat)


def _number(layer: str, what: str, value: Any, low: float, high: float | None) -> float:
    """``value`` as a float in [low, high] (``low`` excluded when 0), or a ConfigError."""
    ok = isinstance(value, Real) and not isinstance(value, bool)
    ok = ok and (value > low if low == 0 else value >= low)
    ok = ok and (high is None or value <= high)
    if not ok:
        bounds = f"in [{low:g}, {high:g}]" if high is not None else f"> {low:g}"
        raise ConfigError(f"layer {layer}: {what} must be a number {bounds}, got {value!r}")
    return float(value)


@register_layer
class BatchNorm2d(Layer):
    """Batch normalisation over (N, H, W) per channel, with running statistics as state
    and (``affine``) a trained per-channel scale ``weight`` and shift ``bias``."""

    kind = "batch_norm2d"
    batch_coupled = True  # train mode: each output depends on the whole batch

    def __init__(self, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 num_features: int | None = None, name: str | None = None) -> None:
        super().__init__(name)
        self.eps = _number(self.name, "eps", eps, 0.0, None)
        self.momentum = _number(self.name, "momentum", momentum, 0.0, 1.0)
        if not isinstance(affine, bool):
            raise ConfigError(f"layer {self.name}: affine must be true or false, got {affine!r}")
        self.affine = affine
        self.num_features = num_features

    def _output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError(
                f"layer {self.name} (batch_norm2d) needs (C, H, W) inputs, got shape {in_shape}"
            )
        if self.num_features is not None and self.num_features != in_shape[0]:
            raise ShapeError(
                f"layer {self.name} (batch_norm2d) expects {self.num_features} channels, "
                f"the layer below gives shape {in_shape}"
            )
        self.num_features = in_shape[0]
        return in_shape

    def param_shapes(self):
        channels = (self.in_shape[0],)
        return {"weight": channels, "bias": channels} if self.affine else {}

    def state_shapes(self):
        channels = (self.in_shape[0],)
        return {"running_mean": channels, "running_var": channels}

    def init_state(self, local: str) -> np.ndarray:
        fill = {"running_mean": 0.0, "running_var": 1.0}
        if local not in fill:
            return super().init_state(local)
        return np.full(self.state_shapes()[local], fill[local])

    def init_param(self, local: str, rng: np.random.Generator, scheme: str) -> np.ndarray:
        # gamma = 1, beta = 0 whatever the scheme (PyTorch's reset_parameters); draws nothing,
        # so adding a batch norm leaves every other layer's initial weights unchanged.
        return np.full(self.param_shapes()[local], 1.0 if local == "weight" else 0.0)

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "name": self.name, "eps": self.eps,
                "momentum": self.momentum, "affine": self.affine}

    def workspace(self, need_input_grad=True, itemsize=8):
        """Kept: the output and the normalised input (xhat); work: the gradients and
        the centred gradient."""
        size = int(np.prod(self.out_shape))
        return 2 * size, 3 * size

    def forward(self, params, x, train=True):
        return batch_norm2d_forward(x, params.get("weight"), params.get("bias"),
                                    params["running_mean"], params["running_var"], train,
                                    self.momentum, self.eps)

    def backward(self, params, cache, out_grad, need_input_grad=True):
        sums = batch_norm2d_param_grads(out_grad, cache)
        grads = dict(zip(("weight", "bias"), sums, strict=True)) if self.affine else {}
        if not need_input_grad:
            return None, grads
        return batch_norm2d_input_grad(out_grad, params.get("weight"), cache, sums), grads
