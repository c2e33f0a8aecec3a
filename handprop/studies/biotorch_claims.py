"""The numbers of ``handprop biotorch``: per rule over seeds, BioTorch's claims held up
against them, and the seeds stuck at chance.

The unit of replication is the trained network: one number per rule and seed (its test
error at the epoch its validation error picked), intervals over seeds, rules paired by
seed. The claims are fixed in the study's config (``[[biotorch.claims]]``, see
configs/biotorch.toml) and tested with :mod:`.claims`: the confirmatory ones -- what
BioTorch's table states -- form one Holm family; exploratory questions are reported apart,
unadjusted.

The outcomes can be bimodal (a run whose ReLUs died stays at chance: 90% error on ten
classes), so beside the claims comes the two-part view (:func:`stuck_comparisons`): per
rule, how many seeds ended stuck against back-propagation over the same seeds (exact
McNemar test), then the test error of the seeds where both learned.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .biotorch_base import (
    BIOTORCH_LENET,
    STUCK_SHARE,
    BiotorchConfig,
    metric_values,
    reference_column,
    stuck_flags,
)
from .claims import Claim, ClaimSpec, as_record, design_check, judge
from .records import final_alignment
from .statistics import (
    difference_summary,
    mean_interval,
    paired_comparison,
    paired_fractions,
    proportion_interval,
    two_part_interval,
)

SELECTIONS = {"honest": "test_error_pct_selected", "optimistic": "test_error_pct_best",
              "final": "test_error_pct_final"}
# The mean test's level on bimodal differences is simulated to hold from this many seeds
# (statistics.py: 0.123 at n = 5 with 35% of the seeds in a far mode, 0.015 at n = 10).
BIMODAL_MIN_SEEDS = 10


def stuck_range(classes: int) -> tuple[float, float]:
    """The test error (%) a stuck run can have, for the two-part interval when fewer than
    2 seeds are stuck: giving one class to 95% of the images of balanced classes leaves at
    most 1/classes + 5% right; with a margin, 10 points below chance up to 100."""
    return 100 * (1 - 1 / classes) - 10, 100.0


# -- per rule ------------------------------------------------------------------------------

def _per_seed(runs: list[dict], key: str) -> dict[int, float]:
    return {r["seed"]: (math.nan if r.get(key) is None else float(r[key])) for r in runs}


def _mean_ci(per_seed: dict[int, float], stuck: dict[int, bool | None],
             classes: int) -> dict[str, Any]:
    """Mean over seeds with its 95% interval: the two-part interval when a seed is stuck
    (statistics.two_part_interval), else the studentized bootstrap (mean_interval)."""
    seeds = [s for s, v in per_seed.items() if math.isfinite(v)]
    if not seeds:
        return {"mean": None, "ci": None, "ci_method": None, "n": 0}
    values = [per_seed[s] for s in seeds]
    flags = [bool(stuck.get(s)) for s in seeds]
    if any(flags):
        interval = two_part_interval(values, flags, stuck_range=stuck_range(classes),
                                     bounds=(0.0, 100.0))
    else:
        interval = mean_interval(values, bounds=(0.0, 100.0))
    ci = None if math.isnan(interval.low) else [interval.low, interval.high]
    learned = [v for v, f in zip(values, flags, strict=True) if not f]
    return {"mean": float(np.mean(values)), "ci": ci, "ci_method": interval.method,
            "n": len(values), "learned_mean": float(np.mean(learned)) if learned else None}


def _stuck_count(stuck: dict[int, bool | None]) -> dict[str, Any]:
    known = [flag for flag in stuck.values() if flag is not None]
    k, n = sum(known), len(known)
    return {"k": int(k), "n": n, "ci": list(proportion_interval(int(k), n)),
            "per_seed": {s: f for s, f in stuck.items()}}


def summarize(records: dict[str, list[dict]], config: BiotorchConfig) -> dict[str, Any]:
    """Per rule: test error at the validation-picked epoch (honest), at the best test
    epoch (BioTorch's selection, optimistic) and at the last epoch, each per seed and as
    a mean with its 95% interval over seeds; the seeds stuck at chance; BioTorch's number;
    the final alignment; the time."""
    column = reference_column(config)
    summary: dict[str, Any] = {}
    for rule, runs in records.items():
        stuck = stuck_flags(runs)
        classes = next((r["classes"] for r in runs if r.get("classes")), 10)
        row: dict[str, Any] = {"runs": len(runs),
                               "diverged": sum(1 for r in runs if r.get("diverged")),
                               "stuck": _stuck_count(stuck)}
        for name, key in SELECTIONS.items():
            per_seed = _per_seed(runs, key)
            row[name] = {"per_seed": per_seed, **_mean_ci(per_seed, stuck, classes)}
        row["selected_epoch"] = {r["seed"]: r.get("selected_epoch") for r in runs}
        row["biotorch"] = BIOTORCH_LENET.get(column, {}).get(rule) if column else None
        row["alignment"] = final_alignment(runs, "gradient")
        seconds = [s for r in runs for s in (r.get("epoch_seconds") or []) if s is not None]
        row["epoch_seconds_median"] = float(np.median(seconds)) if seconds else None
        row["run_seconds"] = float(sum(seconds))
        row["engines"] = sorted({r.get("engine") for r in runs if r.get("engine")})
        summary[rule] = row
    return summary


# -- the claims ------------------------------------------------------------------------------

def expanded(config: BiotorchConfig, records: dict[str, list[dict]] | None = None
             ) -> tuple[list[ClaimSpec], list[ClaimSpec]]:
    """(the claims the study tests, those it cannot: a rule they compare was not run)."""
    ran = set(config.rules) if records is None else {r for r, rows in records.items() if rows}
    tested = [spec for spec in config.claims if {spec.a, spec.b} <= ran]
    return tested, [spec for spec in config.claims if spec not in tested]


def design(config: BiotorchConfig) -> list[dict[str, Any]]:
    """The design check of the confirmatory claims whose rules the study runs (before
    any run)."""
    return design_check(expanded(config)[0], config.seeds)


def claim_for(spec: ClaimSpec, records: dict[str, list[dict]]) -> Claim:
    """One claim as a paired comparison of test errors over the seeds both rules ran."""
    a, b = (metric_values(records[arm], spec.metric) for arm in (spec.a, spec.b))
    seeds = sorted(set(a) & set(b))
    comparison = paired_comparison([a[s] for s in seeds], [b[s] for s in seeds],
                                   lower_is_better=True, labels=(spec.a, spec.b),
                                   test=spec.test, margin=spec.margin, bounds=(-1.0, 1.0))
    stuck = {arm: stuck_flags(records[arm]) for arm in (spec.a, spec.b)}
    counts = {arm: sum(bool(stuck[arm].get(s)) for s in seeds) for arm in stuck}
    caution = ""
    if spec.test != "sign" and any(counts.values()) and len(seeds) < BIMODAL_MIN_SEEDS:
        caution = (f"with seeds stuck at chance among {len(seeds)}, the mean test's level is "
                   f"not shown to hold (simulated only from {BIMODAL_MIN_SEEDS} seeds on "
                   "such bimodal differences): read the stuck counts first")
    return Claim(spec, comparison, caution, unit="%", label=spec.metric,
                 extra={"seeds": seeds, "stuck": counts})


def evaluate_claims(records: dict[str, list[dict]], config: BiotorchConfig
                    ) -> dict[str, Any]:
    """Every claim of the config whose rules ran, the confirmatory ones Holm-adjusted
    together; the design check; the claims not tested; the two-part view of stuck seeds."""
    tested, untested = expanded(config, records)
    claims = judge([claim_for(spec, records) for spec in tested])
    family = [c for c in claims if c.confirmatory and c.tested]
    return {"claims": [as_record(c) for c in claims], "family": len(family),
            "family_source": "the confirmatory claims of the study's config "
                             "([[biotorch.claims]], role = \"confirmatory\"), fixed before "
                             "the run: what BioTorch's table states",
            "design": design(config),
            "not_tested": [f"{s.statement} ({s.role})" for s in untested],
            "stuck": stuck_comparisons(records),
            "stuck_share": STUCK_SHARE}


def tested_claims(found: dict[str, Any], role: str | None = None) -> list[dict[str, Any]]:
    """Every claim record with a test (of one role), in config order."""
    return [c for c in found["claims"] if "p_value" in c and (role is None or
                                                                c["role"] == role)]


# -- the two-part view: stuck at chance, then the seeds that learned --------------------------

def stuck_comparisons(records: dict[str, list[dict]], baseline: str = "exact"
                      ) -> list[dict[str, Any]]:
    """Per rule against ``baseline`` over the seeds both ran: the seeds stuck under each
    (exact intervals), the exact McNemar test, and the honest test error difference among
    the seeds where both learned (exploratory, unadjusted)."""
    if not records.get(baseline):
        return []
    base = stuck_flags(records[baseline])
    rows = []
    for rule, runs in records.items():
        if rule == baseline or not runs:
            continue
        flags = stuck_flags(runs)
        seeds = [s for s in sorted(set(flags) & set(base))
                 if flags[s] is not None and base[s] is not None]
        if not seeds:
            continue
        fractions = paired_fractions([flags[s] for s in seeds], [base[s] for s in seeds],
                                     labels=(rule, baseline))
        learned = [s for s in seeds if not flags[s] and not base[s]]
        rows.append({"rule": rule, "baseline": baseline, "n": fractions.n,
                     "stuck": fractions.count_a, "stuck_baseline": fractions.count_b,
                     "ci": list(fractions.interval_a),
                     "ci_baseline": list(fractions.interval_b),
                     "only_rule": fractions.only_a, "only_baseline": fractions.only_b,
                     "p_value": fractions.p_value,
                     **_learned_difference(records[rule], records[baseline], learned)})
    return rows


def _learned_difference(runs: list[dict], base: list[dict], seeds: list[int]
                        ) -> dict[str, Any]:
    """Honest test error (pp), rule - baseline, over the seeds where both learned."""
    a = metric_values(runs, "test_error")
    b = metric_values(base, "test_error")
    d = [a[s] - b[s] for s in seeds]
    return {f"learned_{k}": v for k, v in difference_summary(d, bounds=(-1.0, 1.0)).items()}
