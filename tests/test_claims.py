"""Claims: fixed before the run (a config's list), Holm over the confirmatory ones only,
exploratory apart and unadjusted, the design check, the floor with ties, fragile verdicts;
descriptions never get a verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest

from handprop.core.errors import ConfigError
from handprop.studies.claims import (
    Claim,
    ClaimSpec,
    as_record,
    design_check,
    design_text,
    evidence,
    judge,
    parse_claims,
)
from handprop.studies.statistics import holm, paired_comparison


def spec(direction: str = "lower", test: str = "sign", role: str = "confirmatory",
         **kwargs) -> ClaimSpec:
    return ClaimSpec(statement="broken has the lower cost", a="broken", b="original",
                     metric="final_cost", direction=direction, test=test, role=role,
                     **kwargs).check("test")


def claim(shift: float, claim_spec: ClaimSpec | None = None, n: int = 12, seed: int = 0,
          ties: int = 0) -> Claim:
    rng = np.random.default_rng(seed)
    a = rng.normal(1.0, 0.1, n)
    b = a - shift + rng.normal(0, 0.01, n)
    b[:ties] = a[:ties]
    s = claim_spec or spec()
    return Claim(s, paired_comparison(a, b, lower_is_better=True, labels=("broken", "original"),
                                      test=s.test, margin=s.margin))


def test_clear_effects_are_supported_or_contradicted():
    claims = judge([claim(-0.5), claim(0.5, seed=1),
                    Claim(spec(), description="8/10 seeds")])
    assert claims[0].verdict == "supported"  # broken lower in every seed
    assert claims[1].verdict == "contradicted"  # broken higher in every seed
    assert claims[2].verdict == "description (no test)"
    assert claims[0].adjusted_p >= claims[0].comparison.p_value  # Holm never lowers p
    assert claims[0].family == 2
    assert "n = 12, smallest possible" in evidence(claims[0])
    assert as_record(claims[0])["adjusted_p"] == claims[0].adjusted_p


def test_holm_runs_over_the_confirmatory_claims_only():
    confirmatory = [claim(-0.5, seed=s) for s in range(3)]
    exploratory = [claim(-0.5, spec(role="exploratory", direction="differ", test="mean"), seed=9)
                   for _ in range(5)]
    judge(confirmatory + exploratory)
    raw = [c.comparison.p_value for c in confirmatory]
    assert [c.adjusted_p for c in confirmatory] == pytest.approx(holm(raw))
    assert all(c.family == 3 for c in confirmatory)
    for c in exploratory:
        assert math.isnan(c.adjusted_p) and c.verdict.startswith("exploratory: differ")
        assert "unadjusted (exploratory)" in evidence(c)
        assert as_record(c)["adjusted_p"] is None


def test_the_floor_with_ties_makes_a_claim_undecidable():
    """11 seeds, 3 of them tied: the sign test cannot go below 2/2^8 = 0.0078, above Holm's
    first threshold 0.05/12 -- with 11 undecided claims beside it, the verdict says why.
    (Had the others been decided first, Holm's threshold for it would have risen to 0.05.)"""
    claims = [claim(-0.5, n=11, ties=3)] + [claim(0.0, n=11, seed=s) for s in range(1, 12)]
    judge(claims)
    first = claims[0]
    assert first.comparison.min_p == 2 / 2**8
    assert first.verdict.startswith("not decided with 11 seeds (smallest possible p with 3 "
                                    "ties 0.00781 is above Holm's first threshold 0.05/12")
    few = judge([claim(-0.5, n=5)])[0]
    assert few.verdict == "undecidable with 5 seeds (smallest possible p 0.0625)"


def test_a_decision_that_one_seed_undoes_is_fragile():
    """10 of 10 seeds one way decides a lone claim (p = 2/2^10); with one seed reversed the
    sign test's p is 0.021 -- still decided alone, not beside 3 undecided claims (x4)."""
    alone = judge([claim(-0.5, n=10)])[0]
    assert alone.verdict == "supported" and not alone.fragile
    crowded = judge([claim(-0.5, n=10)] + [claim(0.0, n=10, seed=s) for s in range(1, 4)])[0]
    assert crowded.verdict == "supported" and crowded.fragile
    assert crowded.reversed_adjusted_p >= 0.05
    assert "FRAGILE" in evidence(crowded) and as_record(crowded)["fragile"] is True


def test_equivalence_claims():
    tost = spec(direction="equivalent", test="tost", margin=0.5)
    close = judge([claim(0.0, tost, n=12)])[0]
    assert close.verdict == "supported: within +-0.5"
    far = judge([claim(2.0, tost, n=12)])[0]
    assert far.verdict.startswith("not decided") and far.comparison.p_value == 1.0


def test_design_check_before_the_run():
    specs = [spec(), spec(), spec(test="mean"), spec(role="exploratory", direction="differ",
                                                     test="mean")]
    rows = design_check(specs, 11)
    assert len(rows) == 3 and rows[0]["level"] == pytest.approx(0.05 / 3)
    assert rows[0]["floor"] == 2 / 2**11 and rows[0]["decidable"]
    assert 0.5 < rows[0]["detectable"] < 1 and rows[2]["detectable"] > 0
    few = design_check([spec()] * 12, 5)
    assert not few[0]["decidable"] and few[0]["detectable"] is None
    text = "\n".join(design_text(few))
    assert "UNDECIDABLE at this n" in text and "12 confirmatory claims at n = 5" in text


def test_parse_claims_checks_what_a_config_says():
    good = {"statement": "s", "a": "x", "b": "y", "metric": "m", "direction": "lower",
            "test": "sign"}
    (parsed,) = parse_claims([good], "cfg")
    assert parsed.role == "confirmatory" and parsed.margin == 0.0
    bad = [({**good, "test": "t"}, "test must be one of"),
           ({**good, "direction": "equivalent"}, "equivalence claim takes the tost test"),
           ({**good, "direction": "equivalent", "test": "tost"}, "needs a margin"),
           ({**good, "direction": "differ"}, "open question"),
           ({**good, "b": "x"}, "two different arms"),
           ({**good, "colour": "red"}, "unknown key"),
           ({"statement": "s"}, "missing"),
           ({**good, "margin": "wide"}, "margin")]
    for item, message in bad:
        with pytest.raises(ConfigError, match=message):
            parse_claims([item], "cfg")
    with pytest.raises(ConfigError, match="list of tables"):
        parse_claims({"a": 1}, "cfg")
