"""Claims: verdicts follow the Holm-adjusted test, descriptions never get a verdict."""

from __future__ import annotations

import numpy as np

from handprop.studies.claims import Claim, as_record, evidence, judge
from handprop.studies.statistics import paired_comparison


def _comparison(shift: float, n: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.normal(1.0, 0.1, n)
    return paired_comparison(a + shift, a + rng.normal(0, 0.01, n), lower_is_better=True,
                             labels=("broken", "original"))


def test_clear_effects_are_supported_or_contradicted():
    claims = judge([
        Claim("broken has the lower cost", _comparison(-0.5), claimed_better="broken"),
        Claim("broken has the higher cost", _comparison(-0.5, seed=1),
              claimed_better="original"),
        Claim("k of n seeds at 10/10", description="8/10 seeds"),
    ])
    assert claims[0].verdict == "supported"
    assert claims[1].verdict == "contradicted"
    assert claims[2].verdict == "description (no test)"
    assert claims[0].adjusted_p >= claims[0].comparison.p_value  # Holm never lowers p
    assert "n = 12, smallest possible" in evidence(claims[0])
    assert as_record(claims[0])["adjusted_p"] == claims[0].adjusted_p


def test_no_effect_is_not_resolved_and_says_how_many_seeds():
    claim = judge([Claim("broken has the lower cost", _comparison(-0.003, n=6),
                         claimed_better="broken")])[0]
    assert claim.verdict.startswith("not resolved with 6 seeds")
    assert "seeds at 80% power" in claim.verdict


def test_holm_counts_every_tested_claim():
    """With 5 seeds no single test can reach p < 0.05 (smallest 0.0625): nothing is
    resolved, however large the effect."""
    claims = judge([Claim("x", _comparison(-1.0, n=5), claimed_better="broken")])
    assert claims[0].verdict.startswith("not resolved with 5 seeds")
    assert claims[0].comparison.min_p == 0.0625


def test_an_open_question_reports_which_is_better_when_resolved():
    claim = judge([Claim("do they differ?", _comparison(0.4))])[0]
    assert claim.verdict == "they differ: original is better"
