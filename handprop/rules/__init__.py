"""Learning rules: what the backward pass computes.

``exact`` is back-propagation. Every other rule changes what some layers send back or
how they form their weight gradient, without touching the ops (see ``base.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..core.errors import ConfigError
from .base import Exact, LearningRule, RuleSet, block_names, weight_layer_indices
from .feedback import (
    BatchRandomSignSymmetry,
    DirectFeedbackAlignment,
    FeedbackAlignment,
    FixedRandomSignSymmetry,
    UniformSignSymmetry,
)
from .seed import BrokenMask, BrokenUpstream, SeedBroken, SeedOriginal

# name -> (one-line description, factory)
RULES: dict[str, tuple[str, Callable[[], LearningRule]]] = {
    "exact": ("true back-propagation", Exact),
    "seed-original": ("the article's original net as its code computes it", SeedOriginal),
    "seed-broken": ("the article's broken back-prop net as its code computes it", SeedBroken),
    "broken-upstream": ("the article's green line as its text says: T(U) * D, T=rot180",
                        BrokenUpstream),
    "broken-upstream-t": ("broken-upstream with T=transpose",
                          lambda: BrokenUpstream("transpose")),
    "broken-mask": ("the article's red line as its text says: (T(mask) * up(G)) * D",
                    BrokenMask),
    "broken-mask-t": ("broken-mask with T=transpose", lambda: BrokenMask("transpose")),
    "fa": ("feedback alignment: fixed random B instead of W (Lillicrap et al. 2016)",
           FeedbackAlignment),
    "usf": ("uniform sign symmetry: B = s * sign(W) (Liao et al. 2016, Xiao et al. 2018)",
            UniformSignSymmetry),
    "frsf": ("fixed random-magnitude sign symmetry: B = |M| * sign(W), M fixed",
             FixedRandomSignSymmetry),
    "brsf": ("batchwise random-magnitude sign symmetry: M redrawn every batch",
             BatchRandomSignSymmetry),
    "dfa": ("direct feedback alignment: output error to every hidden layer (Nokland 2016)",
            DirectFeedbackAlignment),
}


def _single(name: str) -> LearningRule:
    if name not in RULES:
        raise ConfigError(f"unknown rule {name!r}; choose from {', '.join(RULES)}")
    return RULES[name][1]()


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


def make_rule(spec: str | LearningRule, net, seed: int | Sequence[int] | None = None
              ) -> LearningRule:
    """Parse ``spec`` and bind the rule to ``net`` (drawing any random feedback from ``seed``)."""
    rule = parse_rule(spec) if isinstance(spec, str) else spec
    rule.bind(net, seed)
    return rule


__all__ = ["RULES", "Exact", "LearningRule", "RuleSet", "block_names", "make_rule",
           "parse_rule", "weight_layer_indices"]
