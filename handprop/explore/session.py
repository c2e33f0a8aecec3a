"""The explorer's state: the article's network trained one image at a time, under a
chosen learning rule, and optionally a second rule from the same initial weights.

    session = Session(Settings(rule="broken-text"))
    session.step(10)                 # ten online-SGD steps of every run
    session.update(lines={"conv2": {"d": "red"}})    # a new rule: back to the seed's weights
    views.snapshot(session)          # everything the page shows, JSON-ready (views.py)

A *run* is one network, one rule, one optimizer (the article's momentum), stepping
through the training images in their fixed order (the article's protocol, no shuffle).
Every run of a session starts from the same initial weights (the seed's draw) and steps
together, so their curves are comparable step by step. Any change to what a run is
(seed, data, network, rule, lines, transform, the compared rule) starts every run again
from the seed's initial weights; the learning rate and momentum apply from the next step.

Nothing here is thread-safe: :mod:`.api` holds one lock around every call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..core.article import ARTICLE
from ..core.errors import ConfigError
from ..core.network import Network
from ..core.ops.losses import get_loss
from ..core.presets import seed_as_run, seed_net
from ..rules import RULES, LearningRule, make_rule
from ..rules.seed import BrokenText
from ..studies.alignment import alignment_pass, weight_names
from ..training.data import TINY_IMAGES, TINY_LABELS, Dataset, load_digits, load_tiny
from ..training.epoch import NumpyEpoch
from ..training.optim import Momentum

DATASETS = ("tiny", "digits")
COLORS = {"exact": "blue", "green": "green", "red": "red"}  # a rule's line -> the article's colour
LINE_OF = {color: line for line, color in COLORS.items()}
CHANNELS = "abcdefghijklmnop"
MAX_POINTS = 2000  # a curve keeps at most this many points (then every other one)
PROBE_SIZE = 64  # training images the angle curve is measured on
TEXT_RULE = "broken-text"  # the article's text's per-channel rule: what the line toggles edit
LOSS = get_loss("l2", "sum")


@dataclass(frozen=True)
class Settings:
    """What the page chose. ``lines`` ({conv layer: {channel letter: colour}}) makes the
    rule the text's per-channel rule (broken-text) with those lines; ``transform`` is the
    map transform of rule A (None: the rule's own default); ``compare`` names rule B."""

    dataset: str = "tiny"
    seed: int = 0
    as_run: bool = False
    rule: str = "exact"
    lines: Mapping[str, Mapping[str, str]] | None = None
    transform: str | None = None
    compare: str | None = None
    lr: float = ARTICLE.lr
    momentum: float = ARTICLE.momentum
    image: int = 1  # a 1: with seed 0 its conv2 d is not saturated, so its line matters

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "seed": self.seed, "as_run": self.as_run,
                "rule": self.rule, "lines": _plain(self.lines), "transform": self.transform,
                "compare": self.compare, "lr": self.lr, "momentum": self.momentum,
                "image": self.image}


RESETTING = ("dataset", "seed", "as_run", "rule", "lines", "transform", "compare")


def _plain(lines: Mapping[str, Mapping[str, str]] | None) -> dict | None:
    return None if lines is None else {k: dict(v) for k, v in lines.items()}


# -- images --------------------------------------------------------------------------

@dataclass(frozen=True)
class Catalogue:
    """Every image the page can show: the four built-in images, then the 360 digits of
    the task (0s and 1s, scikit-learn's order). pixels (K, 8, 8) raw 0..16; labels (K,)."""

    pixels: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    index_of: dict[bytes, int] = field(repr=False)

    def find(self, images: np.ndarray) -> list[int]:
        """The catalogue index of each image (N, 1, 8, 8), matched by its pixels."""
        return [self.index_of[image[0].tobytes()] for image in images]


def catalogue() -> Catalogue:
    """The built-in images and the digits of 0 and 1 (scikit-learn's bundled data)."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    keep = np.flatnonzero(np.isin(digits.target, ARTICLE.classes))
    pixels = np.concatenate([TINY_IMAGES, digits.images[keep]]).astype(np.float64)
    labels = np.concatenate([TINY_LABELS, digits.target[keep]]).astype(np.int64)
    names = tuple([f"built-in image {i + 1} (a {label})" for i, label in enumerate(TINY_LABELS)]
                  + [f"digit {k} (scikit-learn #{i}, a {digits.target[i]})"
                     for k, i in enumerate(keep)])
    index_of: dict[bytes, int] = {}
    for i in range(len(pixels) - 1, -1, -1):  # the first of equal images wins
        index_of[pixels[i].tobytes()] = i
    pixels.setflags(write=False)
    return Catalogue(pixels, labels, names, index_of)


def load_dataset(name: str, seed: int) -> Dataset:
    """``tiny``: the four built-in images, trained and tested on (the article's
    interactive version); ``digits``: the article's 350 / 10 split of the 0s and 1s."""
    if name == "tiny":
        return load_tiny()
    if name == "digits":
        return load_digits(seed=seed)
    raise ConfigError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


# -- rules ---------------------------------------------------------------------------

def build_network(as_run: bool) -> Network:
    """The article's network as its text describes it, or as its code ran it."""
    return seed_as_run() if as_run else seed_net()


def rule_lines(rule: LearningRule) -> dict[str, list[str]] | None:
    """{conv layer: the colour of each channel's line} for the article's line rules,
    None for a rule without lines."""
    if not hasattr(rule, "channel_lines"):
        return None
    return {layer: [COLORS[line] for line in lines]
            for layer, lines in rule.channel_lines().items()}


def conv_channels(net: Network) -> dict[str, int]:
    """{conv layer that the line rules can change: its channel count}."""
    probe = BrokenText()
    probe.bind(net)
    return {layer: len(lines) for layer, lines in probe.channel_lines().items()}


def build_rule(net: Network, name: str, seed: int,
               lines: Mapping[str, Mapping[str, str]] | None = None,
               transform: str | None = None) -> LearningRule:
    """Rule ``name`` bound to ``net`` (random feedback drawn from ``seed``), or, with
    ``lines``, the text's per-channel rule with those lines."""
    if lines is not None:
        table = {layer: tuple(LINE_OF[colors[c]] for c in sorted(colors))
                 for layer, colors in lines.items()}
        return make_rule(BrokenText(lines=table), net, seed, transform)
    if name not in RULES:
        raise ConfigError(f"unknown rule {name!r}; choose from {', '.join(RULES)}")
    return make_rule(name, net, seed, transform)


def edited_lines(net: Network, current: LearningRule,
                 changes: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """The lines after ``changes``, starting from ``current``'s own (all blue for a rule
    without lines): {conv layer: {channel letter: colour}}."""
    counts = conv_channels(net)
    start = rule_lines(current) or {}
    lines = {layer: {CHANNELS[c]: (start.get(layer) or ["blue"] * count)[c]
                     for c in range(count)} for layer, count in counts.items()}
    for layer, colors in changes.items():
        if layer not in lines:
            raise ConfigError(f"lines: {layer!r} is not a conv layer with lines "
                              f"(choose from {', '.join(lines)})")
        for channel, color in colors.items():
            if channel not in lines[layer]:
                raise ConfigError(f"lines: layer {layer} has no channel {channel!r} "
                                  f"(it has {', '.join(lines[layer])})")
            if color not in LINE_OF:
                raise ConfigError(f"lines: colour {color!r} for {layer} {channel} is not one "
                                  f"of {', '.join(LINE_OF)}")
            lines[layer][channel] = color
    return lines


# -- a run ---------------------------------------------------------------------------

class Curve:
    """Points recorded every ``every`` steps: the training-set cost and the angle of each
    weight layer's update to the exact gradient. At :data:`MAX_POINTS` every other point
    is dropped and ``every`` doubles, so a long run keeps a bounded, evenly spaced curve."""

    def __init__(self, layers: list[str]) -> None:
        self.every, self.thinned = 1, 0
        self.steps: list[int] = []
        self.cost: list[float | None] = []
        self.angles: dict[str, list[float | None]] = {name: [] for name in layers}

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def add(self, step: int, cost: float, angles: dict[str, float | None]) -> None:
        if len(self.steps) >= MAX_POINTS:
            self.every *= 2
            self.thinned += 1
            keep = slice(0, None, 2)
            self.steps, self.cost = self.steps[keep], self.cost[keep]
            self.angles = {k: v[keep] for k, v in self.angles.items()}
            if not self.due(step):
                return
        self.steps.append(step)
        self.cost.append(finite_or_none(cost))
        for name, values in self.angles.items():
            values.append(angles.get(name))

    def since(self, count: int) -> dict[str, Any]:
        """The points from index ``count`` on (0: all of them)."""
        part = slice(count, None)
        return {"every": self.every, "start": count, "steps": self.steps[part],
                "cost": self.cost[part],
                "angles": {k: v[part] for k, v in self.angles.items()}}


def finite_or_none(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


class Run:
    """One network under one rule, stepping through the training images in order."""

    def __init__(self, label: str, settings: Settings, data: Dataset, rule_name: str,
                 lines: Mapping[str, Mapping[str, str]] | None, transform: str | None,
                 initial: np.ndarray) -> None:
        self.label, self.data = label, data
        self.net = build_network(settings.as_run).init(settings.seed)
        self.net.flat[...] = initial
        self.rule = build_rule(self.net, rule_name, settings.seed, lines, transform)
        self.rule_key = TEXT_RULE if lines is not None else rule_name  # its registry name
        self.custom_lines = lines is not None
        self.optimizer = Momentum(settings.lr, settings.momentum)
        self.engine = NumpyEpoch(self.net, self.rule, self.optimizer, LOSS, batch_size=1)
        self.targets = data.y_train[:, None].astype(np.float64)
        self.probe = (data.x_train[:PROBE_SIZE], self.targets[:PROBE_SIZE])
        self.steps, self.diverged_at = 0, None
        self.curve = Curve([name.removesuffix(".weight") for name in weight_names(self.net)])
        self.cost, self.angles = self.measure()
        self.measured_at = 0
        self.curve.add(0, self.cost, self.angles)

    def set_rates(self, lr: float, momentum: float) -> None:
        self.optimizer.lr, self.optimizer.momentum = lr, momentum

    def measure(self) -> tuple[float, dict[str, float | None]]:
        """The training-set cost now, and each weight layer's update angle to the exact
        gradient on the probe (the first training images), in degrees."""
        out = self.net.predict(self.data.x_train)
        cost = float(LOSS(out, self.targets)[0])
        with np.errstate(all="ignore"):
            gradient, _ = alignment_pass(self.net, self.rule, *self.probe, LOSS)
        angles = {name.removesuffix(".weight"): finite_or_none(metrics["angle_deg"])
                  for name, metrics in gradient.items()}
        return cost, angles

    def step(self) -> None:
        """One online-SGD step on the next training image (the article's protocol)."""
        if self.diverged_at is not None:
            return
        i = self.steps % len(self.data.x_train)
        with np.errstate(all="ignore"):
            value = self.engine.step(self.data.x_train[i : i + 1], self.targets[i : i + 1],
                                     None)
        self.steps += 1
        finite = np.isfinite(value).all() and np.isfinite(self.net.flat).all()
        if not finite:
            self.diverged_at = self.steps
        if not finite or self.curve.due(self.steps):
            self.settle()
            self.curve.add(self.steps, self.cost, self.angles)

    def settle(self) -> None:
        """Measure the current weights (cost, angles) unless they already are."""
        if self.measured_at != self.steps:
            self.cost, self.angles = self.measure()
            self.measured_at = self.steps

    def predictions(self, images: Catalogue) -> list[dict[str, Any]]:
        """The test images: catalogue index, truth, raw output, rounded prediction."""
        raw = self.net.predict(self.data.x_test)[:, 0]
        return [{"image": index, "truth": int(truth), "raw": finite_or_none(value),
                 "predicted": int(value >= 0.5) if np.isfinite(value) else None}
                for index, truth, value in zip(images.find(self.data.x_test),
                                               self.data.y_test, raw, strict=True)]


# -- the session ---------------------------------------------------------------------

class Session:
    """Run A (the chosen rule) and, when comparing, run B, from the same initial weights.

    ``generation`` counts the restarts: a page holding points of an older generation
    must take the whole curve again.
    """

    def __init__(self, settings: Settings | None = None, images: Catalogue | None = None
                 ) -> None:
        self.images = images or catalogue()
        self.generation = 0
        self.settings = Settings()
        self.runs: list[Run] = []
        self.steps = 0
        self._restart(settings or Settings())

    def _restart(self, settings: Settings) -> None:
        """Build every run from the seed's initial weights; the old ones stay if this fails."""
        check_image(settings.image, self.images)
        data = load_dataset(settings.dataset, settings.seed)
        initial = build_network(settings.as_run).init(settings.seed).flat.copy()
        runs = [Run("A", settings, data, settings.rule, settings.lines, settings.transform,
                    initial)]
        if settings.compare is not None:
            runs.append(Run("B", settings, data, settings.compare, None, None, initial))
        self.settings, self.runs = settings, runs
        self.generation += 1
        self.steps = 0

    def reset(self, seed: int | None = None) -> None:
        """Back to the initial weights of ``seed`` (default: the current one)."""
        self._restart(self.settings if seed is None else replace(self.settings, seed=seed))

    def update(self, **changes: Any) -> None:
        """Apply validated changes (see :class:`Settings`; ``lines`` as a partial
        {layer: {channel: colour}} edit of the current lines)."""
        # A new rule starts with its own lines and transform unless told otherwise.
        if "lines" in changes:
            edit = changes.pop("lines")
            if changes.get("rule", TEXT_RULE) != TEXT_RULE:
                raise ConfigError(f"lines are the text's per-channel rule ({TEXT_RULE}); "
                                  f"they cannot go with rule {changes['rule']!r}")
            if self.settings.rule != TEXT_RULE:
                changes.setdefault("transform", None)
            changes["rule"] = TEXT_RULE
            changes["lines"] = edited_lines(self.runs[0].net, self.runs[0].rule, edit)
        elif "rule" in changes:
            changes["lines"] = None
            changes.setdefault("transform", None)
        settings = replace(self.settings, **changes)
        if any(getattr(settings, k) != getattr(self.settings, k) for k in RESETTING):
            self._restart(settings)
            return
        check_image(settings.image, self.images)
        self.settings = settings
        for run in self.runs:
            run.set_rates(settings.lr, settings.momentum)

    def step(self, count: int) -> None:
        """``count`` steps of every run (a diverged run stays where it stopped)."""
        for _ in range(count):
            for run in self.runs:
                run.step()
            self.steps += 1
        for run in self.runs:
            run.settle()


def check_image(index: int, images: Catalogue) -> int:
    if not 0 <= index < len(images.pixels):
        raise ConfigError(f"image must be in 0..{len(images.pixels) - 1}, got {index}")
    return index
