"""The registry of learning rules: every rule registers where it is defined.

    @register_rule("fa", "feedback alignment: fixed random B instead of W", family="random")
    class FeedbackAlignment(LearningRule): ...

    register_rule("broken-upstream-t", "... with T=transpose",
                  factory=lambda: BrokenUpstream("transpose"), family="article")

``handprop rules``, the studies' configs and ``--rule`` read :data:`RULES`; nothing else
lists rule names. A rule's *family* groups rules for comparisons with the literature:
``backprop``, ``article`` (the seed article's variants), ``random-feedback`` (FA, DFA)
and ``sign-symmetry`` (uSF, frSF, brSF).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ..core.errors import ConfigError

FAMILIES = ("backprop", "article", "random-feedback", "sign-symmetry")


class RuleInfo(NamedTuple):
    """A registered rule: its one-line summary, how to make one, and its family."""

    summary: str
    factory: Callable[[], Any]
    family: str


RULES: dict[str, RuleInfo] = {}


def register_rule(name: str, summary: str, family: str,
                  factory: Callable[[], Any] | None = None) -> Callable:
    """Register a rule class (as a decorator) or a ``factory`` (a variant) under ``name``."""
    if family not in FAMILIES:
        raise ConfigError(f"rule {name}: family must be one of {', '.join(FAMILIES)}")

    def decorate(target: Callable[[], Any]) -> Callable[[], Any]:
        if name in RULES:
            raise ConfigError(f"two rules claim the name {name!r}")
        RULES[name] = RuleInfo(summary, target, family)
        return target

    if factory is not None:
        return decorate(factory)
    return decorate


def rules_in(family: str) -> list[str]:
    """The registered rules of one family, in registration order."""
    return [name for name, info in RULES.items() if info.family == family]
