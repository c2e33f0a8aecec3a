"""The article's claims (seed-spec section 5), held up against the runs.

The claims are fixed in the study's config (``[[reproduce.claims]]``, see
configs/reproduce.toml), each asked of some *pairings* of an "original" and a "broken"
net, when the study ran both:

* ``code`` -- ``seed-original`` vs ``seed-broken`` on the corrected network (the code's
  backward passes on the network the text describes);
* ``as-run`` -- the same two rules on the network the author's code ran;
* ``text`` -- ``exact`` vs ``broken-text`` (the broken net as the text describes it).

Confirmatory claims (the article's comparative claims, made from single runs: tested as
"most seeds go one way", the sign test) form one Holm family; exploratory questions
(held-out accuracy, equivalence on the as-run network) are reported apart, unadjusted
(:mod:`.claims`).

Beside the claims, the two-part view of the bimodal outcomes (:func:`stuck_comparisons`):
per pairing and experiment, how many seeds of each net ended stuck at chance (exact
McNemar test over the paired seeds), and the held-out accuracy of the seeds where both
nets learned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .claims import Claim, as_record, design_check, judge
from .reproduce_base import (
    Records,
    ReproduceClaim,
    ReproduceConfig,
    is_stuck,
    metric_info,
    metric_value,
    per_seed,
)
from .statistics import difference_summary, paired_comparison, paired_fractions


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
            "the code's rules on the network the code ran"),
    Pairing("text", "corrected", "exact", "broken-text",
            "the text's nets (exact vs broken-text), corrected network"),
)
BY_KEY = {p.key: p for p in PAIRINGS}


def pairings(config: ReproduceConfig) -> list[Pairing]:
    """The pairings the study's variants and rules allow."""
    return [p for p in PAIRINGS if p.variant in config.variant
            and {p.original, p.broken} <= set(config.rules_of(p.variant))]


def _runs(records: Records, pairing: Pairing, experiment: str, net: str,
          protocol: str) -> list[dict]:
    rule = pairing.broken if net == "broken" else pairing.original
    found = records.get((pairing.variant, experiment, rule, protocol), [])
    if protocol == "heldout" and not found:
        found = records.get((pairing.variant, experiment, rule, "fold"), [])
    return found


def expanded(config: ReproduceConfig) -> list[tuple[ReproduceClaim, Pairing]]:
    """Every (claim, pairing) the study can test, in config order."""
    available = {p.key for p in pairings(config)}
    names = {e.name for e in config.experiments}
    return [(spec, BY_KEY[key]) for spec in config.claims if spec.experiment in names
            for key in spec.pairings if key in available]


def design(config: ReproduceConfig) -> list[dict[str, Any]]:
    """The design check of the claims the study will test (before any run)."""
    specs = [spec for spec, _ in expanded(config)]
    rows = design_check(specs, config.seeds)
    for row, (spec, pairing) in zip(rows, [(s, p) for s, p in expanded(config)
                                           if s.role == "confirmatory"], strict=True):
        row["statement"] = f"{pairing.key}, {spec.experiment}: {spec.statement}"
    return rows


def claim_for(records: Records, spec: ReproduceClaim, pairing: Pairing, epochs: int) -> Claim:
    """One claim of one pairing as a paired comparison (broken vs original) over seeds."""
    protocol, unit, lower_is_better, _ = metric_info(spec.metric)
    label = f"{pairing.key}, {spec.experiment}"
    if spec.metric.startswith("cost@") and int(spec.metric[5:]) > epochs:
        return Claim(spec, description=f"not tested: the runs have {epochs} epochs",
                     unit=unit, label=label)
    value = metric_value(spec.metric)
    runs = {net: per_seed(_runs(records, pairing, spec.experiment, net, protocol), value)
            for net in ("broken", "original")}
    seeds = sorted(set(runs["broken"]) & set(runs["original"]))
    bounds = (-1.0, 1.0) if unit == "%" else None
    comparison = paired_comparison([runs["broken"][s] for s in seeds],
                                   [runs["original"][s] for s in seeds],
                                   lower_is_better=lower_is_better,
                                   labels=("broken", "original"), test=spec.test,
                                   margin=spec.margin, bounds=bounds)
    return Claim(spec, comparison, unit=unit, label=label,
                 extra={"pairing": pairing.key, "experiment": spec.experiment,
                        "seeds": seeds})


def evaluate_claims(records: Records, config: ReproduceConfig) -> dict[str, Any]:
    """Every claim of the config, tested on the pairings that ran: the confirmatory ones
    Holm-adjusted together; plus the family's definition and source."""
    claims = [claim_for(records, spec, pairing, config.epochs)
              for spec, pairing in expanded(config)]
    judge(claims)
    family = [c for c in claims if c.confirmatory and c.tested]
    return {"claims": [as_record(c) for c in claims], "family": len(family),
            "family_source": "the confirmatory claims of the study's config "
                             "([[reproduce.claims]], role = \"confirmatory\"), fixed before "
                             "the run: the article's comparative claims, per pairing",
            "design": design(config)}


def tested_claims(findings: dict[str, Any], role: str | None = None) -> list[dict[str, Any]]:
    """Every claim record with a test (of one role), in report order."""
    return [c for c in findings["claims"] if "p_value" in c and (role is None or
                                                                   c["role"] == role)]


# -- the two-part view: stuck at chance, then the seeds that learned ----------------------

def stuck_comparisons(records: Records, config: ReproduceConfig) -> list[dict[str, Any]]:
    """Per pairing, experiment and protocol (article, held-out): how many seeds of each
    net ended stuck (each with an exact interval), the exact McNemar test over the paired
    seeds, and -- held-out only -- the accuracy difference among the seeds where both
    learned."""
    rows = []
    for pairing in pairings(config):
        for experiment in config.experiments:
            for protocol in ("article", "heldout"):
                row = _stuck_row(records, pairing, experiment.name, protocol)
                if row:
                    rows.append(row)
    return rows


def _stuck_row(records: Records, pairing: Pairing, experiment: str,
               protocol: str) -> dict[str, Any] | None:
    def flags(net: str) -> dict[int, float]:
        return per_seed(_runs(records, pairing, experiment, net, protocol),
                        lambda r: None if is_stuck(r) is None else float(is_stuck(r)))

    broken, original = flags("broken"), flags("original")
    seeds = [s for s in sorted(set(broken) & set(original))
             if math.isfinite(broken[s]) and math.isfinite(original[s])]
    if not seeds:
        return None
    a = [broken[s] >= 0.5 for s in seeds]
    b = [original[s] >= 0.5 for s in seeds]
    fractions = paired_fractions(a, b, labels=("broken", "original"))
    row = {"pairing": pairing.key, "experiment": experiment, "protocol": protocol,
           "n": fractions.n, "stuck_broken": fractions.count_a,
           "stuck_original": fractions.count_b, "ci_broken": list(fractions.interval_a),
           "ci_original": list(fractions.interval_b), "only_broken": fractions.only_a,
           "only_original": fractions.only_b, "p_value": fractions.p_value}
    if protocol == "heldout":
        row.update(_learned_difference(records, pairing, experiment,
                                       [s for s, x, y in zip(seeds, a, b, strict=True)
                                        if not x and not y]))
    return row


def _learned_difference(records: Records, pairing: Pairing, experiment: str,
                        seeds: list[int]) -> dict[str, Any]:
    """Held-out accuracy, broken - original, over the seeds where both learned."""
    accuracy = {net: per_seed(_runs(records, pairing, experiment, net, "heldout"),
                              lambda r: r["test_accuracy"]) for net in ("broken", "original")}
    d = [accuracy["broken"][s] - accuracy["original"][s] for s in seeds]
    return {f"learned_{k}": v for k, v in difference_summary(d, bounds=(-1.0, 1.0)).items()}
