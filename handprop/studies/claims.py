"""Claims held up against the data: one paired test over seeds each, Holm across a report.

A study's report lists claims (the article's, or the literature's). A claim with a test
compares two rules over the seeds both trained (the trained network is the unit), with
:func:`handprop.studies.statistics.paired_comparison`; its verdict follows the
Holm-adjusted p of all the tested claims of the same report:

* ``supported`` / ``contradicted`` -- adjusted p < alpha, the direction saying which;
* otherwise ``not resolved with n seeds (...)``, with the seeds a paired test would need.

A claim may also be a question nobody claimed (``claimed_better=None``: "do A and B
differ?"), and a *description* has no test at all (e.g. "k of n seeds got 10/10"): it is
reported as what was seen, never with a verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .statistics import PairedComparison, format_p, holm, power_at, seeds_needed, verdict

ALPHA = 0.05


@dataclass
class Claim:
    """One line of a report's claims table.

    statement : the claim, as its source states it
    comparison : the paired test over seeds (None for a description)
    claimed_better : the label the claim says is better; None for an open question
    description : what was seen, for claims without a test (and extra context otherwise)
    unit : how to print the compared metric's differences (e.g. "", "%")
    """

    statement: str
    comparison: PairedComparison | None = None
    claimed_better: str | None = None
    description: str = ""
    unit: str = ""
    adjusted_p: float = math.nan
    verdict: str = "description (no test)"
    tests: int = 1  # tested claims in the report (set by judge): power is at alpha / tests
    extra: dict[str, Any] = field(default_factory=dict)


def judge(claims: list[Claim], alpha: float = ALPHA) -> list[Claim]:
    """Holm-adjust the p-values of the tested claims (one family: the report) and set
    every tested claim's verdict. Returns ``claims``."""
    tested = [claim for claim in claims if claim.comparison is not None]
    for claim, adjusted in zip(tested, holm([c.comparison.p_value for c in tested]),
                               strict=True):
        claim.adjusted_p, claim.tests = adjusted, len(tested)
        claim.verdict = _verdict(claim, alpha, len(tested))
    return claims


def _verdict(claim: Claim, alpha: float, claims: int) -> str:
    comparison, adjusted = claim.comparison, claim.adjusted_p
    if claim.claimed_better is not None:
        return verdict(comparison, adjusted, claim.claimed_better, alpha, claims)
    better = comparison.better
    if better is not None and adjusted < alpha:
        return f"they differ: {better} is better"
    # "not resolved ..." with the seeds needed, worded as for a claim
    return verdict(comparison, 1.0, better or comparison.labels[0], alpha, claims)


def _number(value: float, unit: str = "") -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if unit == "%":
        return f"{100 * value:+.1f} pp"
    if unit == "deg":
        return f"{value:+.1f} deg"
    return f"{value:+.4g}"


def evidence(claim: Claim) -> str:
    """The numbers behind a verdict: effect size, interval, wins, p (with n and the
    smallest possible p), Holm-adjusted p and the power n gives for the effect seen."""
    c = claim.comparison
    if c is None:
        return claim.description
    a, b = c.labels
    low, high = c.interval.low, c.interval.high
    parts = [f"{a} - {b}: mean {_number(c.mean_diff, claim.unit)} "
             f"[95% CI {_number(low, claim.unit)}, {_number(high, claim.unit)}]",
             f"{a} better in {c.wins}/{c.n} seeds (ties {c.ties}; 95% CI of the fraction "
             f"{c.win_interval[0]:.2f}-{c.win_interval[1]:.2f})",
             f"dz {c.dz:+.2f}" if math.isfinite(c.dz) else "dz n/a",
             format_p(c.p_value, c.n, c.min_p, claim.adjusted_p),
             f"power at n = {c.n} for this effect{_level_text(claim)}: {_power_text(claim)}"]
    if c.dropped:
        parts.append(f"{c.dropped} pair(s) dropped (diverged)")
    if claim.description:
        parts.append(claim.description)
    return "; ".join(parts)


def _power(claim: Claim) -> float:
    """Power of a paired t-test at the claim's n for its observed effect, at the level
    the verdicts' seed counts use: alpha / (tested claims in the report)."""
    return power_at(claim.comparison.dz, claim.comparison.n, alpha=ALPHA / claim.tests)


def _level_text(claim: Claim) -> str:
    return "" if claim.tests <= 1 else f" at level {ALPHA:g}/{claim.tests}"


def _power_text(claim: Claim) -> str:
    power = _power(claim)
    return "n/a" if math.isnan(power) else f"{power:.2f}"


def as_record(claim: Claim) -> dict[str, Any]:
    """A claim as JSON-able data (for summary.json)."""
    c = claim.comparison
    out: dict[str, Any] = {"statement": claim.statement, "verdict": claim.verdict,
                           "evidence": evidence(claim), **claim.extra}
    if c is None:
        return out
    out.update({"labels": list(c.labels), "claimed_better": claim.claimed_better, "n": c.n,
                "dropped": c.dropped, "mean_a": c.mean_a, "mean_b": c.mean_b,
                "mean_diff": c.mean_diff, "ci": [c.interval.low, c.interval.high],
                "ci_method": c.interval.method, "p_value": c.p_value, "min_p": c.min_p,
                "adjusted_p": claim.adjusted_p, "test": c.test, "wins": c.wins,
                "losses": c.losses, "ties": c.ties, "win_fraction": c.win_fraction,
                "win_ci": list(c.win_interval), "dz": c.dz,
                "power": _power(claim), "power_alpha": ALPHA / claim.tests,
                "seeds_needed_80": seeds_needed(c.dz, alpha=ALPHA / claim.tests)})
    return out
