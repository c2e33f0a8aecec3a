"""The article's rules: what its code computes, and what its text describes.

Per conv channel with pre-activation Z, activation derivative D = f'(Z), G the
gradient arriving at the pooled output, ``mask`` the max-pool routing mask, ``up(G)``
G spread over its window, and U = mask * up(G) (what reaches the activation):

* ``seed-original`` -- the article's "original net" as its code runs: exact, except that
  max-pool routes to *every* tied maximum and the gradient a conv layer sends to a conv
  layer below is rotated 180 degrees in each map.
* ``seed-broken`` -- the "broken back-prop net" as its code runs: green channels use
  delta_a = rot180(U) * D, red channels delta_a = (rot180(mask) * up(G)) * D (layer-1
  channels and layer-2 a, b, c green; layer-2 d red), the weight gradient of
  rot180(delta_a), and rot180 of the exact input gradient of delta_a sent down.
* ``broken-upstream`` / ``broken-mask`` -- the green and red lines as the article's
  *text* describes them, on top of exact back-propagation, for any conv layer followed
  by a max-pool: delta = T(U) * D or delta = (T(mask) * up(G)) * D, then the exact
  weight and input gradients of that delta. T is ``rot180`` (what the code does) or
  ``transpose`` (what the text says; square maps only).

In a block ``conv -> activation -> max-pool`` the pool's backward produces U and the
activation's multiplies by D, so these rules change the pool step (U -> T(U), or the
mask) and the conv step (rotated weight gradient, rotated input gradient); the
activation step stays exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.layers import WeightLayer
from ..core.network import Step
from ..core.ops.conv import Conv2d
from ..core.ops.pool import (
    MaxPool2d,
    max_pool2d_backward,
    max_pool2d_routing,
    max_pool2d_scatter,
    max_pool2d_upsample,
)
from .base import LearningRule, block_names
from .registry import register_rule

TRANSFORMS = ("rot180", "transpose")


def rot180(maps: np.ndarray) -> np.ndarray:
    """Rotate every (H, W) map by 180 degrees: (..., H, W) -> (..., H, W)."""
    return maps[..., ::-1, ::-1]


def transpose_maps(maps: np.ndarray) -> np.ndarray:
    """Transpose every (H, W) map: (..., H, W) -> (..., W, H)."""
    return maps.swapaxes(-1, -2)


def _transform(name: str):
    if name == "rot180":
        return rot180
    if name == "transpose":
        return transpose_maps
    raise ConfigError(f"unknown map transform {name!r}; choose from {', '.join(TRANSFORMS)}")


class _ConvBlocks(LearningRule):
    """Shared bookkeeping: for each conv block this rule owns, where its pool is."""

    def bind(self, net, seed=None, blocks=None) -> None:
        super().bind(net, seed, blocks)
        owners = block_names(net)
        self.conv_index: set[int] = set()
        self.pool_index: dict[int, int] = {}  # pool layer index -> its conv layer index
        self.conv_below: set[int] = set()  # conv layers whose input comes from a conv layer
        seen_conv = False
        for i, layer in enumerate(net.layers):
            if isinstance(layer, WeightLayer):  # is the layer below this one a conv?
                if isinstance(layer, Conv2d) and seen_conv:
                    self.conv_below.add(i)
                seen_conv = isinstance(layer, Conv2d)
            if owners[i] not in self.blocks:
                continue
            if isinstance(layer, Conv2d):
                self.conv_index.add(i)
            elif isinstance(layer, MaxPool2d):
                conv = net.layer_index(owners[i])
                if isinstance(net.layers[conv], Conv2d) and conv not in self.pool_index.values():
                    self.pool_index[i] = conv


@register_rule("seed-original", "the article's original net as its code computes it",
               family="article")
class SeedOriginal(_ConvBlocks):
    """The article's "original net" as its code computes it (see module docstring)."""

    name = "seed-original"

    def layer_backward(self, step: Step):
        index = step.index
        if index in self.pool_index:
            return max_pool2d_backward(step.out_grad, step.cache, ties=True), {}
        if index in self.conv_index and index in self.conv_below and step.need_input_grad:
            grad_in, grads = step.exact()
            return rot180(grad_in), grads
        return step.exact()


class _MapTransformRule(_ConvBlocks):
    """Replace U, per channel, by T(U) ("green") or T(mask) * up(G) ("red")."""

    def __init__(self, transform: str = "rot180",
                 channels: Mapping[str, Sequence[int]] | None = None) -> None:
        super().__init__()
        self.transform_name = transform
        self.transform = _transform(transform)
        self.channels = {k: tuple(v) for k, v in (channels or {}).items()}

    def bind(self, net, seed=None, blocks=None) -> None:
        super().bind(net, seed, blocks)
        without_pool = sorted(self.conv_index - set(self.pool_index.values()))
        if without_pool:
            raise ConfigError(
                f"rule {self.name}: conv layer {net.layers[without_pool[0]].name} is not "
                "followed by a max-pool in its block, so it has no routed gradient U to change"
            )
        conv_names = {net.layers[i].name for i in self.conv_index}
        unknown = sorted(set(self.channels) - conv_names)
        if unknown:
            raise ConfigError(
                f"rule {self.name}: channels given for {', '.join(unknown)}, which is not a "
                f"conv layer this rule applies to ({', '.join(sorted(conv_names))})"
            )
        self._channel_masks: dict[int, np.ndarray | None] = {}
        for pool, conv in self.pool_index.items():
            channels, height, width = net.shapes[pool]
            if self.transform_name == "transpose" and height != width:
                raise ConfigError(
                    f"rule {self.name}: 'transpose' needs square maps, but layer "
                    f"{net.layers[pool].name} receives {height}x{width} maps"
                )
            chosen = self.channels.get(net.layers[conv].name)
            if chosen is None:
                self._channel_masks[pool] = None
                continue
            bad = [c for c in chosen if not 0 <= c < channels]
            if bad:
                raise ConfigError(
                    f"rule {self.name}: channel(s) {bad} out of range for layer "
                    f"{net.layers[conv].name} with {channels} channels"
                )
            mask = np.zeros((channels, 1, 1), dtype=bool)
            mask[list(chosen)] = True
            self._channel_masks[pool] = mask

    def changed_upstream(self, out_grad: np.ndarray, cache: Any, ties: bool,
                         red: np.ndarray | bool) -> np.ndarray:
        """T(U) on green channels, T(mask) * up(G) on red ones (``red`` broadcasts over C)."""
        if red is False:
            return self.transform(max_pool2d_backward(out_grad, cache, ties))
        # U = mask * up(G) and mask itself, from one routing table
        routing = max_pool2d_routing(cache, ties)
        grad = out_grad.reshape(*out_grad.shape[:-2], -1, 1)
        green = self.transform(max_pool2d_scatter(routing * grad, cache))
        mask = self.transform(max_pool2d_scatter(routing, cache))
        red_value = mask * max_pool2d_upsample(out_grad, cache)
        if red is True:
            return red_value
        return np.where(red, red_value, green)

    def describe(self) -> str:
        extra = f"[{self.transform_name}]" if self.transform_name != "rot180" else ""
        return self.name + extra


class _TextRule(_MapTransformRule):
    """The article's text, on top of exact back-propagation (exact single-winner mask)."""

    red_line = False  # the green line changes U, the red one the mask

    def layer_backward(self, step: Step):
        if step.index not in self.pool_index:
            return step.exact()
        out_grad, cache = step.out_grad, step.cache
        changed = self.changed_upstream(out_grad, cache, ties=False, red=self.red_line)
        selected = self._channel_masks[step.index]
        if selected is not None:
            changed = np.where(selected, changed, max_pool2d_backward(out_grad, cache))
        return changed, {}


@register_rule("broken-upstream", "the article's green line as its text says: T(U) * D, "
               "T=rot180", family="article")
class BrokenUpstream(_TextRule):
    """The article's green line as its text says: delta = T(U) * D, then exact gradients.

    ``channels``: {conv layer name: channel indices} to change (default: all channels).
    """

    name = "broken-upstream"


@register_rule("broken-mask", "the article's red line as its text says: (T(mask) * up(G)) * D",
               family="article")
class BrokenMask(_TextRule):
    """The article's red line as its text says: delta = (T(mask) * up(G)) * D, then exact."""

    name = "broken-mask"
    red_line = True


@register_rule("seed-broken", "the article's broken back-prop net as its code computes it",
               family="article")
class SeedBroken(_MapTransformRule):
    """The article's "broken back-prop net" as its code computes it.

    ``red``: {conv layer name: channels on the red line}; every other channel of the
    rule's conv blocks is green. Default: the last channel of the network's second conv
    layer (the article's layer-2 channel d: ``{"conv2": [3]}`` on the seed net); none
    when the network has a single conv layer.
    """

    name = "seed-broken"

    def __init__(self, red: Mapping[str, Sequence[int]] | None = None,
                 transform: str = "rot180") -> None:
        super().__init__(transform, red)
        self.default_red = red is None

    def bind(self, net, seed=None, blocks=None) -> None:
        if self.default_red:
            convs = [layer for layer in net.layers if isinstance(layer, Conv2d)]
            owned = blocks is None or (len(convs) > 1 and convs[1].name in blocks)
            self.channels = ({convs[1].name: (convs[1].out_channels - 1,)}
                             if len(convs) > 1 and owned else {})
        super().bind(net, seed, blocks)

    def layer_backward(self, step: Step):
        index, layer, out_grad, cache = step.index, step.layer, step.out_grad, step.cache
        if index in self.pool_index:
            red = self._channel_masks[index]
            changed = self.changed_upstream(out_grad, cache, ties=True,
                                            red=False if red is None else red)
            return changed, {}
        if index not in self.conv_index:
            return step.exact()
        # The code's weight gradient is that of rot180(delta_a); what it sends down is
        # rot180 of the exact input gradient of delta_a.
        grads = {"weight": layer.weight_grad(rot180(out_grad), cache)}
        if layer.bias:
            grads["bias"] = layer.bias_grad(out_grad)
        grad_in = None
        if step.need_input_grad:
            grad_in = layer.input_grad(out_grad, step.params["weight"], cache)
            if index in self.conv_below:
                grad_in = rot180(grad_in)
        return grad_in, grads


register_rule("broken-upstream-t", "broken-upstream with T=transpose", family="article",
              factory=lambda: BrokenUpstream("transpose"))
register_rule("broken-mask-t", "broken-mask with T=transpose", family="article",
              factory=lambda: BrokenMask("transpose"))
