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
* ``broken-text`` -- the broken net as the article's *text* describes it, on top of
  exact back-propagation (single-winner routing): green (delta = T(U) * D) on layer 1
  and layer-2 channels a, b, c, red (delta = (T(mask) * up(G)) * D) on channel d, then
  the exact weight and input gradients of that delta. T is ``transpose`` (what the
  text says; square maps only) or ``rot180`` (what the code does).
* ``broken-upstream`` / ``broken-mask`` -- one of the two lines on every channel (or
  on chosen channels) of any conv layer followed by a max-pool.

Every rule here is a table of *lines* per conv channel: ``exact`` (the article's blue,
U), ``green`` (T(U)) or ``red`` (T(mask) * up(G)), so lines mix freely inside one layer.

In a block ``conv -> activation -> max-pool`` the pool's backward produces U and the
activation's multiplies by D, so these rules change the pool step (U -> T(U), or the
mask) and the conv step (rotated weight gradient, rotated input gradient); the
activation step stays exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..core.errors import ConfigError
from ..core.layers import WeightLayer
from ..core.ops.conv import Conv2d
from ..core.ops.pool import MaxPool2d
from .backward import (
    LINES,
    BackwardDescription,
    PoolRouting,
    WeightGrads,
    map_transform,
)
from .base import LearningRule, block_names
from .registry import register_rule


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

    def backward_description(self) -> BackwardDescription:
        # Pools route to every tied maximum; convs use their local gradients through
        # their own W (an as-run layer's own kernels), rotated when sent to a conv below.
        net = self.net
        pools = {pool: PoolRouting(("exact",) * net.shapes[pool][0], ties=True)
                 for pool in self.pool_index}
        weights = {conv: WeightGrads(rotate_sent=conv in self.conv_below)
                   for conv in sorted(self.conv_index)}
        return BackwardDescription(weights=weights, pools=pools)


class _LineRule(_ConvBlocks):
    """Replace U, channel by channel, by the channel's line: ``exact`` (U), ``green``
    (T(U)) or ``red`` (T(mask) * up(G)).

    ``lines``: {conv layer name: one line name per channel}; layers not named get
    :meth:`default_lines`. ``ties``: route to every tied maximum (the article's code)
    instead of the single winner.
    """

    ties = False
    default_transform = "rot180"

    def __init__(self, transform: str | None = None,
                 lines: Mapping[str, Sequence[str]] | None = None) -> None:
        super().__init__()
        self.set_transform(transform or self.default_transform)
        self.lines = {k: tuple(v) for k, v in (lines or {}).items()}

    def set_transform(self, name: str) -> None:
        """``rot180`` (what the article's code does) or ``transpose`` (what its text says)."""
        self.transform = map_transform(name)
        self.transform_name = name
        self._description = None

    def default_lines(self, conv: Conv2d) -> tuple[str, ...]:
        """The lines of a conv layer the constructor did not name."""
        return ("green",) * conv.out_channels

    def bind(self, net, seed=None, blocks=None) -> None:
        super().bind(net, seed, blocks)
        without_pool = sorted(self.conv_index - set(self.pool_index.values()))
        if without_pool:
            raise ConfigError(
                f"rule {self.name}: conv layer {net.layers[without_pool[0]].name} is not "
                "followed by a max-pool in its block, so it has no routed gradient U to change"
            )
        conv_names = {net.layers[i].name for i in self.conv_index}
        unknown = sorted(set(self.lines) - conv_names)
        if unknown:
            raise ConfigError(
                f"rule {self.name}: lines given for {', '.join(unknown)}, which is not a "
                f"conv layer this rule applies to ({', '.join(sorted(conv_names)) or 'none'})"
            )
        self._lines = {pool: self._checked_lines(net, pool, conv)
                       for pool, conv in self.pool_index.items()}

    def _checked_lines(self, net, pool: int, conv: int) -> tuple[str, ...]:
        """The line of each channel of one pooled conv layer."""
        channels, height, width = net.shapes[pool]
        layer = net.layers[conv]
        lines = self.lines.get(layer.name) or self.default_lines(layer)
        if len(lines) != channels or set(lines) - set(LINES):
            raise ConfigError(f"rule {self.name}: layer {layer.name} needs one line per "
                              f"channel ({channels}) from {', '.join(LINES)}, got {list(lines)}")
        if self.transform_name == "transpose" and height != width and set(lines) - {"exact"}:
            raise ConfigError(f"rule {self.name}: 'transpose' needs square maps, but layer "
                              f"{net.layers[pool].name} receives {height}x{width} maps")
        return tuple(lines)

    def backward_description(self) -> BackwardDescription:
        pools = {pool: PoolRouting(lines, self.ties, self.transform_name)
                 for pool, lines in self._lines.items()}
        return BackwardDescription(pools=pools)

    def channel_lines(self) -> dict[str, list[str]]:
        """{conv layer name: the line of each channel} (after bind)."""
        return {self.net.layers[self.pool_index[pool]].name: list(routing.lines)
                for pool, routing in self.description().pools.items()}

    def describe(self) -> str:
        if self.transform_name == self.default_transform:
            return self.name
        return f"{self.name}[{self.transform_name}]"


class _TextRule(_LineRule):
    """The article's text, on top of exact back-propagation: only the pool step changes."""


class _OneLine(_TextRule):
    """One line on every channel, or on ``channels`` ({conv name: indices}; the other
    channels of those layers stay exact)."""

    line = "green"

    def __init__(self, transform: str | None = None,
                 channels: Mapping[str, Sequence[int]] | None = None) -> None:
        super().__init__(transform)
        self.channels = {k: tuple(v) for k, v in (channels or {}).items()}

    def bind(self, net, seed=None, blocks=None) -> None:
        self.lines = {}
        for name, chosen in self.channels.items():
            layer = net.layer(name)
            count = getattr(layer, "out_channels", 0)
            bad = [c for c in chosen if not 0 <= c < count]
            if bad:
                raise ConfigError(f"rule {self.name}: channel(s) {bad} out of range for layer "
                                  f"{name} with {count} channels")
            self.lines[name] = tuple(self.line if c in chosen else "exact"
                                     for c in range(count))
        super().bind(net, seed, blocks)

    def default_lines(self, conv: Conv2d) -> tuple[str, ...]:
        return (self.line,) * conv.out_channels


@register_rule("broken-upstream", "the article's green line on every channel: T(U) * D, "
               "T=rot180", family="article")
class BrokenUpstream(_OneLine):
    """The article's green line as its text says: delta = T(U) * D, then exact gradients.

    ``channels``: {conv layer name: channel indices} to change (default: all channels).
    """

    name = "broken-upstream"


@register_rule("broken-mask", "the article's red line on every channel: (T(mask) * up(G)) * D",
               family="article")
class BrokenMask(_OneLine):
    """The article's red line as its text says: delta = (T(mask) * up(G)) * D, then exact."""

    name = "broken-mask"
    line = "red"


def _red_last_channel_of_second_conv(rule: _LineRule, conv: Conv2d) -> tuple[str, ...]:
    """The article's layout: green everywhere, red on the second conv layer's last
    channel (the seed net's layer-2 channel d)."""
    convs = [layer for layer in rule.net.layers if isinstance(layer, Conv2d)]
    lines = ["green"] * conv.out_channels
    if len(convs) > 1 and conv is convs[1]:
        lines[-1] = "red"
    return tuple(lines)


@register_rule("broken-text", "the article's broken net as its text describes it: green on "
               "layer 1 and layer-2 a, b, c, red on d, T=transpose", family="article")
class BrokenText(_TextRule):
    """The broken net as the article's text describes it (see the module notes).

    ``lines``: {conv layer name: a line per channel} overrides the article's layout;
    ``transform``: ``transpose`` (the text, default) or ``rot180`` (the code).
    """

    name = "broken-text"
    default_transform = "transpose"

    def default_lines(self, conv: Conv2d) -> tuple[str, ...]:
        return _red_last_channel_of_second_conv(self, conv)


@register_rule("seed-broken", "the article's broken back-prop net as its code computes it",
               family="article")
class SeedBroken(_LineRule):
    """The article's "broken back-prop net" as its code computes it.

    ``red``: {conv layer name: channels on the red line}; every other channel of the
    rule's conv blocks is green. Default: the last channel of the network's second conv
    layer (the article's layer-2 channel d: ``{"conv2": [3]}`` on the seed net).
    """

    name = "seed-broken"
    ties = True  # the code marks every tied maximum

    def __init__(self, red: Mapping[str, Sequence[int]] | None = None,
                 transform: str | None = None) -> None:
        super().__init__(transform)
        self.red = None if red is None else {k: tuple(v) for k, v in red.items()}

    def default_lines(self, conv: Conv2d) -> tuple[str, ...]:
        if self.red is None:
            return _red_last_channel_of_second_conv(self, conv)
        red = self.red.get(conv.name, ())
        return tuple("red" if c in red else "green" for c in range(conv.out_channels))

    def bind(self, net, seed=None, blocks=None) -> None:
        super().bind(net, seed, blocks)
        unknown = sorted(set(self.red or {}) - {net.layers[i].name for i in self.conv_index})
        if unknown:
            raise ConfigError(f"rule {self.name}: red channels given for "
                              f"{', '.join(unknown)}, which is not a conv layer it applies to")

    def backward_description(self) -> BackwardDescription:
        # The code's weight gradient is that of rot180(delta_a); what it sends down is
        # rot180 of the exact input gradient of delta_a (to a conv layer below).
        weights = {conv: WeightGrads(rotate_delta=True, rotate_sent=conv in self.conv_below)
                   for conv in sorted(self.conv_index)}
        return BackwardDescription(weights=weights, pools=super().backward_description().pools)


register_rule("broken-upstream-t", "broken-upstream with T=transpose", family="article",
              factory=lambda: BrokenUpstream("transpose"))
register_rule("broken-mask-t", "broken-mask with T=transpose", family="article",
              factory=lambda: BrokenMask("transpose"))
