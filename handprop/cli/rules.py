"""``handprop rules``: the learning rules and how to mix them per layer."""

from __future__ import annotations

import argparse

from .common import command


@command("rules", "list the learning rules", order=70)
def cmd_rules(args: argparse.Namespace) -> int:
    from ..rules import FAMILIES, rules_in
    from ..rules.registry import RULES

    for family in FAMILIES:
        for name in rules_in(family):
            print(f"{name:<20} {RULES[name].summary}")
    print("\nper layer: --rule 'conv2=seed-broken,fc3=fa,*=exact'")
    return 0
