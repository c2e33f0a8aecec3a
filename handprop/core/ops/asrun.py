"""The article's layer 2 as its code ran: one borrowed kernel for every output channel.

The author's code computes layer 2 with conv1's second kernel ``W1b`` for all four
maps (seed-spec section 2, "known defect"): its own kernels ``W2a..W2d`` never act in the
forward pass, yet the code still updates them and sends the gradient down through them.
This op is that forward pass. For output channel o of group g::

    out[n, o, y, x] = bias[o] + sum_{c in g, i, j} K[c, i, j] * xpad[n, c, y*s + i, x*s + j]

with ``K = source[source_channel]``, borrowed from another conv layer (the lender), so
the forward pass is :func:`conv2d_forward` with the effective weight
``W_eff[o] = K`` for every o (shape (O, C/groups, kh, kw)).

The layer's *exact* backward is the true gradient of that forward pass: the input
gradient goes through ``W_eff``; the lender's kernel receives
``dL/dK = sum_o dL/dW_eff[o]``; the layer's own weight ``W`` gets 0 (it does not act).
Its local gradients ``input_grad(out_grad, weight, cache)`` and ``weight_grad`` are a
convolution's, so the article's rules (``seed-original``, ``seed-broken``), which call
them with the layer's own ``W``, compute what the author's code computed: W updated as
if it acted, and the gradient sent down through it.

Arrays may carry leading replica axes like every op.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..layers import register_layer
from .conv import Conv2d, conv2d_forward, conv2d_input_grad, conv2d_weight_grad


def shared_kernel(source: np.ndarray, channel: int, out_channels: int) -> np.ndarray:
    """``W_eff``: kernel ``channel`` of ``source`` (*rep, S, C/g, kh, kw) repeated for
    every output channel -> (*rep, out_channels, C/g, kh, kw) (a read-only view)."""
    kernel = source[..., channel : channel + 1, :, :, :]
    return np.broadcast_to(kernel, (*kernel.shape[:-4], out_channels, *kernel.shape[-3:]))


@register_layer
class AsRunConv2d(Conv2d):
    """A conv layer whose forward pass uses another conv layer's kernel for every output
    channel (``source`` layer name, ``source_channel``), as the article's code ran
    layer 2 (see the module notes). Its own ``weight`` is kept, trained by the article's
    rules, and never used in the forward pass."""

    kind = "as_run_conv2d"

    def __init__(self, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 groups: int = 1, bias: bool = True, in_channels: int | None = None,
                 name: str | None = None, source: str = "conv1", source_channel: int = 1
                 ) -> None:
        super().__init__(out_channels, kernel_size, stride, padding, groups, bias,
                         in_channels, name)
        self.source, self.source_channel = str(source), int(source_channel)

    def borrowed(self) -> dict[str, str]:
        return {"source": f"{self.source}.weight"}

    def spec(self):
        return {**super().spec(), "source": self.source, "source_channel": self.source_channel}

    def effective_weight(self, params) -> np.ndarray:
        """``W_eff`` (*rep, O, C/groups, kh, kw): the borrowed kernel on every channel."""
        source, own = params["source"], params["weight"]
        if source.shape[-3:] != own.shape[-3:] or not 0 <= self.source_channel < source.shape[-4]:
            raise ShapeError(
                f"layer {self.name} ({self.kind}): kernel {self.source_channel} of "
                f"{self.source}.weight {source.shape} cannot stand in for its weight {own.shape}"
            )
        return shared_kernel(source, self.source_channel, self.out_channels)

    def forward(self, params, x, train=True):
        return conv2d_forward(x, self.effective_weight(params), params.get("bias"),
                              geometry=self.geometry)

    def backward(self, params, cache, out_grad, need_input_grad=True):
        """The true gradient of the forward pass (see the module notes)."""
        weight_eff = self.effective_weight(params)
        grad_in = (conv2d_input_grad(out_grad, weight_eff, cache) if need_input_grad
                   else None)
        per_output = conv2d_weight_grad(out_grad, cache)  # dL/dW_eff
        source = np.zeros(params["source"].shape, per_output.dtype)
        source[..., self.source_channel, :, :, :] = per_output.sum(axis=-4)
        grads = {"weight": np.zeros_like(params["weight"]), "source": source}
        if self.bias:
            grads["bias"] = self.bias_grad(out_grad)
        return grad_in, grads
