"""The article's claims (seed-spec section 5), held up against the runs.

Each experiment's claims are asked of three *pairings* of an "original" and a "broken"
net, when the study ran both:

* ``code`` -- ``seed-original`` vs ``seed-broken`` on the corrected network (the code's
  backward passes on the network the text describes);
* ``as-run`` -- the same two rules on the network the author's code ran (its figures);
* ``text`` -- ``exact`` vs ``broken-text`` (the broken net as the text describes it).

A comparative claim ("the broken net has the lower cost around epoch 250") is a paired
test over seeds; a claim about single runs ("both nets get 100% of the test images") is
reported as a description (how many seeds did, with an interval for the fraction) and
gets no verdict. Not claimed by the article, but the question it cannot answer with 10
images: do the nets differ in held-out accuracy? -- one paired test per pairing and
experiment, on one held-out accuracy per seed. All tests of the report form one Holm
family (:func:`handprop.studies.claims.judge`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.article import ARTICLE
from .claims import Claim, as_record, judge
from .reproduce_base import Records, ReproduceConfig, final_cost, per_seed
from .statistics import paired_comparison


@dataclass(frozen=True)
class Pairing:
    """An original and a broken net trained on one variant of the network."""

    key: str
    variant: str
    original: str
    broken: str
    title: str


PAIRINGS = (
    Pairing("code", "corrected", "seed-original", "seed-broken",
            "the code's rules (seed-original vs seed-broken), corrected network"),
    Pairing("as-run", "as-run", "seed-original", "seed-broken",
            "the code's rules on the network the code ran (the article's figures)"),
    Pairing("text", "corrected", "exact", "broken-text",
            "the text's nets (exact vs broken-text), corrected network"),
)


def pairings(config: ReproduceConfig) -> list[Pairing]:
    """The pairings the study's variants and rules allow."""
    return [p for p in PAIRINGS if p.variant in config.variant
            and {p.original, p.broken} <= set(config.rules_of(p.variant))]


def _values(records: Records, pairing: Pairing, experiment: str, net: str,
            protocol: str, value) -> dict[int, float]:
    rule = pairing.broken if net == "broken" else pairing.original
    found = records.get((pairing.variant, experiment, rule, protocol), [])
    if protocol == "heldout" and not found:
        found = records.get((pairing.variant, experiment, rule, "fold"), [])
    return per_seed(found, value)


def _paired(records, pairing, experiment, protocol, value, lower_is_better):
    """broken vs original over the seeds both have, paired."""
    broken = _values(records, pairing, experiment, "broken", protocol, value)
    original = _values(records, pairing, experiment, "original", protocol, value)
    seeds = sorted(set(broken) & set(original))
    return paired_comparison([broken[s] for s in seeds], [original[s] for s in seeds],
                             lower_is_better=lower_is_better, labels=("broken", "original"))


def _cost_at(epoch: int | None):
    def value(record: dict) -> float | None:
        if epoch is None:
            return final_cost(record)
        cost = record["cost"]
        return cost[epoch - 1] if len(cost) >= epoch else None
    return value


def cost_claim(records, pairing, experiment, epoch: int | None, broken_lower: bool,
               epochs: int) -> Claim:
    """"The broken net has the lower (higher) cost at ``epoch`` (None: the end)"."""
    when = f"epoch {epoch}" if epoch else "the end of training"
    statement = f"broken net has the {'lower' if broken_lower else 'higher'} cost at {when}"
    if epoch is not None and epoch > epochs:
        return Claim(statement, description=f"not tested: the runs have {epochs} epochs")
    comparison = _paired(records, pairing, experiment, "article", _cost_at(epoch), True)
    return Claim(statement, comparison, "broken" if broken_lower else "original")


def all_correct_description(records, pairing, experiment, net: str) -> Claim:
    """"The <net> net gets all 10 test images right": a statement about single runs."""
    from scipy import stats

    accuracies = _values(records, pairing, experiment, net, "article",
                         lambda r: r["test_accuracy"])
    finite = [v for v in accuracies.values() if math.isfinite(v)]
    hits = sum(1 for v in finite if v == 1.0)
    text = f"{hits} of {len(finite)} seeds got all 10 right"
    if finite:
        ci = stats.binomtest(hits, len(finite)).proportion_ci(method="exact")
        text += f" (95% CI of the fraction {ci.low:.2f}-{ci.high:.2f})"
    return Claim(f"{net} net gets all 10 test images right", description=text,
                 extra={"net": net, "seeds_all_correct": hits, "seeds": len(finite)})


def accuracy_claim(records, pairing, experiment) -> Claim:
    """"The broken net is right on the test images where the original gets some wrong"
    (experiment 2): the broken net is more accurate on the 10 images."""
    comparison = _paired(records, pairing, experiment, "article",
                         lambda r: r["test_accuracy"], False)
    return Claim("broken net more accurate on the 10 test images (100% vs some wrong)",
                 comparison, "broken", unit="%")


def heldout_question(records, pairing, experiment) -> Claim:
    comparison = _paired(records, pairing, experiment, "heldout",
                         lambda r: r["test_accuracy"], False)
    return Claim("(not claimed) do the nets differ in held-out accuracy (one 72-image "
                 "held-out set per seed)?", comparison, None, unit="%")


def _experiment_claims(records, pairing, experiment, epochs: int) -> list[Claim]:
    """The article's claims for one experiment, matched on its dense widths."""
    name, fc = experiment.name, tuple(experiment.fc)
    both = [all_correct_description(records, pairing, name, net)
            for net in ("broken", "original")]
    if fc == (18, 20):
        claims = [*both, cost_claim(records, pairing, name, 250, True, epochs)]
    elif fc == (48, 56):
        claims = [cost_claim(records, pairing, name, None, False, epochs), *both,
                  accuracy_claim(records, pairing, name)]
    elif fc == ARTICLE.fc:  # the widths the article did not record: our default
        claims = [*both, cost_claim(records, pairing, name, None, False, epochs)]
    else:
        claims = [cost_claim(records, pairing, name, None, False, epochs)]
    if records.get((pairing.variant, name, pairing.broken, "heldout")) or records.get(
            (pairing.variant, name, pairing.broken, "fold")):
        claims.append(heldout_question(records, pairing, name))
    return claims


def evaluate_claims(records: Records, config: ReproduceConfig) -> dict[str, Any]:
    """{pairing: {"title", "experiments": {name: [claim records]}}}, every test of the
    report Holm-adjusted together."""
    built: list[tuple[Pairing, str, Claim]] = []
    for pairing in pairings(config):
        for experiment in config.experiments:
            for claim in _experiment_claims(records, pairing, experiment, config.epochs):
                built.append((pairing, experiment.name, claim))
    judge([claim for _, _, claim in built])
    out: dict[str, Any] = {}
    for pairing, experiment, claim in built:
        slot = out.setdefault(pairing.key, {"title": pairing.title, "variant": pairing.variant,
                                            "original": pairing.original,
                                            "broken": pairing.broken, "experiments": {}})
        slot["experiments"].setdefault(experiment, []).append(
            {**as_record(claim), "pairing": pairing.key, "experiment": experiment})
    out["_tests"] = sum(1 for _, _, c in built if c.comparison is not None)
    return out


def tested_claims(findings: dict[str, Any]) -> list[dict[str, Any]]:
    """Every claim record with a test, in report order."""
    return [claim for key, pairing in findings.items() if not key.startswith("_")
            for claims in pairing["experiments"].values() for claim in claims
            if "p_value" in claim]


def smallest_n(findings: dict[str, Any]) -> int | None:
    ns = [c["n"] for c in tested_claims(findings)]
    return min(ns) if ns else None


def median_power(findings: dict[str, Any]) -> float | None:
    powers = [c["power"] for c in tested_claims(findings)
              if c.get("power") is not None and math.isfinite(c["power"])]
    return float(np.median(powers)) if powers else None
