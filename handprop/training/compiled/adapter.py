"""Everything the compiled engine reads from learning rules, in one place.

The rules are being refactored (registries, per-layer step objects); their class names,
constructor arguments and the attributes read here are what this engine relies on.
Keeping every such read in this module keeps that dependency in one place: a change
to a rule's internals means a change here and nowhere else in the engine.

A rule is matched by its exact class (``type(rule) is ...``), never by ``isinstance``:
a user's subclass may override what the backward pass computes, and the compiled
engine must then refuse (the NumPy engine runs it) rather than compute the parent's
rule silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...rules.base import LearningRule
from ...rules.feedback import (
    BatchRandomSignSymmetry,
    DirectFeedbackAlignment,
    FeedbackAlignment,
    FixedRandomSignSymmetry,
    UniformSignSymmetry,
)
from ...rules.seed import BrokenMask, BrokenText, BrokenUpstream, SeedBroken, SeedOriginal

# Per-channel pool backward modes (see kernels_pool).
ROUTE, GREEN, RED = 0, 1, 2
# Map transforms of the article's rules.
ROT180, TRANSPOSE = 0, 1
# Where a weight layer's input gradient goes back through.
FB_WEIGHT, FB_MATRIX, FB_SIGN_SCALE, FB_SIGN_MAGNITUDE = 0, 1, 2, 3


class UnsupportedError(Exception):
    """The compiled engine cannot run this configuration (the message says why)."""


@dataclass
class PoolRule:
    """How one max-pool layer routes its gradient back."""

    ties: bool = False
    modes: list[int] | None = None  # per channel; None: every channel ROUTE
    transform: int = ROT180


@dataclass
class RulePlan:
    """What a rule changes, per layer index (layers not named are exact)."""

    name: str
    pools: dict[int, PoolRule] = field(default_factory=dict)
    rotate_weight_grad: set[int] = field(default_factory=set)  # conv: dW of rot180(delta)
    rotate_input_grad: set[int] = field(default_factory=set)  # conv: rot180(dx)
    feedback: dict[int, int] = field(default_factory=dict)  # weight layer -> FB_* kind
    sign_scale: dict[int, float] = field(default_factory=dict)  # usf scales
    inject: set[int] = field(default_factory=set)  # dfa: layers whose output grad is e @ B
    no_input_grad: set[int] = field(default_factory=set)  # dfa: hidden layers fed directly
    redraws: bool = False  # brsf: magnitudes redrawn before every step
    # conv layers whose gradients the rule computes with the conv's own formulas and
    # weight (what an as-run layer then trains, instead of its true gradient)
    conv_formulas: set[int] = field(default_factory=set)


def rule_plan(rule: LearningRule | None, net: Any) -> RulePlan:
    """Read a bound rule's configuration; raise :class:`UnsupportedError` for anything else."""
    if rule is None or type(rule) is LearningRule:
        return RulePlan("exact")
    kind = type(rule)
    if getattr(rule, "net", None) is not net:
        raise UnsupportedError(f"rule {rule.name!r} is not bound to this network")
    if kind is SeedOriginal:
        return _seed_original(rule)
    if kind in (SeedBroken, BrokenUpstream, BrokenMask, BrokenText):
        return _map_transform(rule, net)
    if kind in (FeedbackAlignment, UniformSignSymmetry, FixedRandomSignSymmetry,
                BatchRandomSignSymmetry):
        return _feedback(rule)
    if kind is DirectFeedbackAlignment:
        return RulePlan("dfa", inject=set(rule.matrices), no_input_grad=set(rule.no_input_grad))
    raise UnsupportedError(f"rule {getattr(rule, 'name', kind.__name__)!r} "
                      f"({kind.__name__}) has no compiled form")


def _seed_original(rule: SeedOriginal) -> RulePlan:
    plan = RulePlan(rule.name)
    for pool in rule.pool_index:
        plan.pools[pool] = PoolRule(ties=True)
    plan.rotate_input_grad = set(rule.conv_index & rule.conv_below)
    plan.conv_formulas = set(rule.conv_index)
    return plan


LINE_MODES = {"exact": ROUTE, "green": GREEN, "red": RED}


def _map_transform(rule: Any, net: Any) -> RulePlan:
    """The article's line rules: each pooled conv channel's line (exact, green, red)."""
    transform = {"rot180": ROT180, "transpose": TRANSPOSE}[rule.transform_name]
    plan = RulePlan(rule.name)
    seed_broken = type(rule) is SeedBroken
    lines = rule.channel_lines()
    for pool, conv in rule.pool_index.items():
        modes = [LINE_MODES[line] for line in lines[net.layers[conv].name]]
        plan.pools[pool] = PoolRule(ties=rule.ties, modes=modes, transform=transform)
    if seed_broken:
        plan.rotate_weight_grad = set(rule.conv_index)
        plan.rotate_input_grad = set(rule.conv_index & rule.conv_below)
        plan.conv_formulas = set(rule.conv_index)
    return plan


def _feedback(rule: Any) -> RulePlan:
    kind = {FeedbackAlignment: FB_MATRIX, UniformSignSymmetry: FB_SIGN_SCALE,
            FixedRandomSignSymmetry: FB_SIGN_MAGNITUDE,
            BatchRandomSignSymmetry: FB_SIGN_MAGNITUDE}[type(rule)]
    plan = RulePlan(rule.name, redraws=type(rule) is BatchRandomSignSymmetry)
    plan.feedback = {i: kind for i in rule.owned}
    plan.conv_formulas = set(rule.owned)
    if kind == FB_SIGN_SCALE:
        plan.sign_scale = {i: float(rule.scales[i]) for i in rule.owned}
    return plan


def feedback_arrays(rule: LearningRule | None) -> dict[int, np.ndarray]:
    """The rule's current fixed arrays, by layer index: FA's B, frSF/brSF's magnitudes
    (shape (*rep, *weight shape)), DFA's B_l by injection layer (shape (*rep, K, D))."""
    kind = type(rule)
    if kind is FeedbackAlignment or kind is DirectFeedbackAlignment:
        return dict(rule.matrices)
    if kind in (FixedRandomSignSymmetry, BatchRandomSignSymmetry):
        return dict(rule.magnitudes)
    return {}


def redraw(rule: LearningRule, active: np.ndarray | None) -> dict[int, np.ndarray]:
    """brSF: the rule's own redraw for one step (so draws match the NumPy engine bit for
    bit), and the magnitudes it drew, by layer index."""
    rule.begin_step(active)
    return rule.magnitudes


def save_rule_state(rule: LearningRule | None) -> dict[str, Any] | None:
    """A copy of the rule's state (to rewind brSF's generators after an early stop)."""
    if rule is None or type(rule) is not BatchRandomSignSymmetry:
        return None
    import copy

    return copy.deepcopy(rule.state())


def load_rule_state(rule: LearningRule | None, state: dict[str, Any] | None) -> None:
    if state is not None:
        rule.load_state(state)
