"""Learning rules: what the backward pass computes.

``exact`` is back-propagation. Every other rule changes what some layers send back or
how they form their weight gradient, without touching the ops (see ``base.py``), and
says what it changes as data (a :class:`BackwardDescription`, see ``backward.py``) that
both training engines run. :class:`FeedbackRule` is the base of the "B instead of W"
rules (``feedback.py``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence

from ..core.errors import ConfigError
from .backward import BackwardDescription, Feedback, Learning, PoolRouting, WeightGrads
from .base import Exact, LearningRule, RuleSet, block_names, weight_layer_indices
from .feedback import FeedbackRule
from .registry import FAMILIES, RULES, RuleInfo, register_rule, rules_in

for _module in pkgutil.iter_modules(__path__):  # every rule file registers its rules
    importlib.import_module(f"{__name__}.{_module.name}")


def _single(name: str) -> LearningRule:
    if name not in RULES:
        raise ConfigError(f"unknown rule {name!r}; choose from {', '.join(RULES)}")
    return RULES[name].factory()


def parse_rule(spec: str) -> LearningRule:
    """``"fa"`` (one rule for every layer) or ``"conv1=seed-broken,fc3=fa,*=exact"``."""
    spec = spec.strip()
    if "=" not in spec:
        return _single(spec)
    by_block: dict[str, LearningRule] = {}
    default: LearningRule | None = None
    for part in spec.split(","):
        block, sep, name = part.partition("=")
        block, name = block.strip(), name.strip()
        if not sep or not block or not name:
            raise ConfigError(f"rule spec {spec!r}: expected LAYER=RULE pairs, got {part!r}")
        if block == "*":
            default = _single(name)
        else:
            by_block[block] = _single(name)
    return RuleSet(by_block, default)


def with_transform(rule: LearningRule, transform: str) -> LearningRule:
    """Set the map transform (``transpose`` or ``rot180``) of every part of ``rule`` that
    has one (the article's green and red lines); refuse a rule without any."""
    parts = [rule, rule.default, *rule.by_block.values()] if isinstance(rule, RuleSet) else [rule]
    changed = [part for part in parts if hasattr(part, "set_transform")]
    if not changed:
        raise ConfigError(f"rule {rule.describe()} has no map transform to set "
                          "(only the article's green/red-line rules do)")
    for part in changed:
        part.set_transform(transform)
    return rule


def make_rule(spec: str | LearningRule, net, seed: int | Sequence[int] | None = None,
              transform: str | None = None) -> LearningRule:
    """Parse ``spec`` and bind the rule to ``net`` (drawing any random feedback from
    ``seed``); ``transform`` sets the article's map transform (see :func:`with_transform`)."""
    if not isinstance(spec, str | LearningRule):
        raise ConfigError(f"a rule must be a rule name or a LearningRule, got {spec!r}")
    rule = parse_rule(spec) if isinstance(spec, str) else spec
    if transform is not None:
        with_transform(rule, transform)
    rule.bind(net, seed)
    return rule


__all__ = ["FAMILIES", "RULES", "BackwardDescription", "Exact", "Feedback", "FeedbackRule",
           "Learning", "LearningRule", "PoolRouting", "RuleInfo", "RuleSet", "WeightGrads",
           "block_names", "make_rule", "parse_rule", "register_rule", "rules_in",
           "weight_layer_indices", "with_transform"]
