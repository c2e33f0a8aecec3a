"""Learning rules: what the backward pass computes, layer by layer.

A *rule* is asked, for every layer from the last to the first, for the gradient that
layer sends down and the gradients of its parameters. It is handed one
:class:`~handprop.core.network.Step` (the layer, its parameters, its cache, the
gradient at its output, whether it must send one down, and the network's output
error).

A rule says what it changes as data: :meth:`LearningRule.backward_description` returns a
:class:`~handprop.rules.backward.BackwardDescription` (which matrix each weight layer
sends the gradient through, how each max-pool routes it per channel, rotations, where
direct feedback alignment injects the error). :meth:`LearningRule.layer_backward` runs
that description on the layer's local gradients (``layer.input_grad(out_grad, B,
cache)``, ``layer.weight_grad``, ``layer.bias_grad``) and the ops in
:mod:`handprop.core.ops`, and the compiled engine compiles the same description; the
base class describes nothing, which is exact back-propagation. No op or layer code is
edited to change a backward pass. A rule may still override ``layer_backward`` with any
Python: it then runs on the NumPy engine only. Rules register where they are defined
(:mod:`.registry`).

Rules are assigned per *block*: a weight layer (conv2d or dense) together with the
layers after it up to the next weight layer (its activation, pool, flatten). So
``RuleSet({"conv2": SeedBroken()}, default=Exact())`` changes the backward pass of
conv2, act2 and pool2 and leaves every other block exact. Rules that act per channel
take their channel choice as a constructor argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.layers import WeightLayer
from ..core.network import Step
from .backward import BackwardDescription, backward_step
from .registry import register_rule


def weight_layer_indices(net: Any) -> list[int]:
    """Indices of the layers that have a weight matrix (conv2d, dense, ...)."""
    return [i for i, layer in enumerate(net.layers) if isinstance(layer, WeightLayer)]


def block_names(net: Any) -> list[str | None]:
    """For every layer, the name of the weight layer whose block it belongs to."""
    names: list[str | None] = []
    current = None
    for layer in net.layers:
        if isinstance(layer, WeightLayer):
            current = layer.name
        names.append(current)
    return names


def replica_seeds(net: Any, seed: int | Sequence[int] | None) -> list[int]:
    """The seed of every replica of ``net`` (one seed when it has no replicas)."""
    if seed is None:
        if net.replica_seeds is not None:
            return list(net.replica_seeds)
        return [0]
    if isinstance(seed, int | np.integer):
        return [int(seed)]
    return [int(s) for s in seed]


@register_rule("exact", "true back-propagation", family="backprop")
class LearningRule:
    """Exact back-propagation; subclasses change what some layers compute.

    Lifecycle: ``bind(net, seed, blocks)`` once (draw random feedback etc.), then for
    every training step ``begin_step(active)`` and one backward pass through
    :meth:`layer_backward`.

    A subclass says what it changes by overriding :meth:`backward_description` (and
    :meth:`feedback_array` for the matrices the description refers to).
    """

    name = "exact"

    def __init__(self) -> None:
        self.net: Any = None
        self.blocks: list[str] = []
        self._description: BackwardDescription | None = None

    def bind(self, net: Any, seed: int | Sequence[int] | None = None,
             blocks: Sequence[str] | None = None) -> None:
        """Attach to ``net``; ``blocks`` are the weight layers this rule is responsible for."""
        self.net = net
        self.blocks = list(blocks) if blocks is not None else [
            net.layers[i].name for i in weight_layer_indices(net)
        ]
        self._description = None  # described again, after the subclass's bind

    def backward_description(self) -> BackwardDescription:
        """What this rule changes in the backward pass, by layer index (after bind); see
        :mod:`handprop.rules.backward`. The base class changes nothing."""
        return BackwardDescription()

    def description(self) -> BackwardDescription:
        """:meth:`backward_description`, computed once per bind."""
        if self._description is None:
            self._description = self.backward_description()
        return self._description

    def feedback_array(self, index: int) -> np.ndarray | None:
        """The matrix this rule keeps for layer ``index`` that its description refers to
        (FA's B, frSF's magnitudes, DFA's B_l), replica axes first; None if it keeps none."""
        return None

    def feedback_matrix(self, index: int, weight: np.ndarray) -> np.ndarray:
        """B, the matrix weight layer ``index`` sends its input gradient through, for its
        current ``weight``: what the description's :class:`~.backward.Feedback` says."""
        how = self.description().weights.get(index)
        if how is None:
            return weight
        return how.feedback.matrix(weight, self.feedback_array(index))

    def begin_step(self, active: np.ndarray | None = None) -> None:
        """Called before every training step (e.g. to refresh sign-symmetric feedback).

        ``active`` (R,) bool: the replicas that take this step (None: all of them).
        """

    def layer_backward(self, step: Step) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """The gradient ``step.layer`` sends down and its parameter gradients: the
        description run on the layer's local gradients."""
        description = self._description or self.description()
        return backward_step(self, description, step)

    def feedback(self) -> dict[str, np.ndarray]:
        """The matrices used in place of weights in the backward pass, by parameter name
        (``{"fc4.weight": B}``); empty for rules that send gradients through W."""
        return {}

    def state(self) -> dict[str, Any]:
        """Everything needed to resume this rule (arrays and JSON-able values)."""
        return {}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned."""

    def describe(self) -> str:
        return self.name


Exact = LearningRule


class RuleSet(LearningRule):
    """Different rules for different blocks: ``RuleSet({"conv2": rule}, default=Exact())``."""

    name = "ruleset"

    def __init__(self, by_block: Mapping[str, LearningRule],
                 default: LearningRule | None = None) -> None:
        super().__init__()
        self.by_block = dict(by_block)
        self.default = default or LearningRule()

    def bind(self, net, seed=None, blocks=None) -> None:
        super().bind(net, seed, blocks)
        known = {net.layers[i].name for i in weight_layer_indices(net)}
        unknown = sorted(set(self.by_block) - known)
        if unknown:
            raise ConfigError(
                f"rule given for {', '.join(unknown)}, which is not a weight layer of "
                f"network {net.name!r} (weight layers: {', '.join(sorted(known))})"
            )
        owners: dict[int, list[str]] = {}
        rules = {id(self.default): self.default}
        for block in known:
            rule = self.by_block.get(block, self.default)
            rules[id(rule)] = rule
            owners.setdefault(id(rule), []).append(block)
        for key, rule in rules.items():
            rule.bind(net, seed, owners.get(key, []))
        blocks_of = block_names(net)
        self._by_index = [self.by_block.get(b, self.default) if b else self.default
                          for b in blocks_of]
        self._rules = list(rules.values())

    def begin_step(self, active=None) -> None:
        for rule in self._rules:
            rule.begin_step(active)

    def layer_backward(self, step: Step):
        return self._by_index[step.index].layer_backward(step)

    def feedback(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for rule in self._rules:
            out.update(rule.feedback())
        return out

    def state(self) -> dict[str, Any]:
        return {f"{i}.{key}": value for i, rule in enumerate(self._rules)
                for key, value in rule.state().items()}

    def load_state(self, state) -> None:
        for i, rule in enumerate(self._rules):
            prefix = f"{i}."
            rule.load_state({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def describe(self) -> str:
        parts = [f"{block}={rule.describe()}" for block, rule in self.by_block.items()]
        return ",".join(parts + [f"*={self.default.describe()}"])
