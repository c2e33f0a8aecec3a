"""Tests of handprop.studies.statistics: interval coverage by simulation, exact sign-flip
p-values against hand enumeration, Holm, verdicts, NaN and degenerate inputs, determinism."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
from scipy import stats

from handprop.studies.statistics import (
    SIGN_FLIPS,
    coverage,
    format_p,
    holm,
    mean_interval,
    paired_comparison,
    power_at,
    seeds_needed,
    sign_flip_test,
    verdict,
)

SAMPLERS = {  # name: (sampler, true mean)
    "normal": (lambda rng, n: rng.normal(0.0, 1.0, n), 0.0),
    "gamma(shape 2)": (lambda rng, n: rng.gamma(2.0, 1.0, n), 2.0),
    "exponential": (lambda rng, n: rng.exponential(1.0, n), 1.0),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_default_interval_covers_at_n10(name):
    """Nominal 95%, n = 10, 2000 trials (standard error about 0.005): at least 93%, and not
    bought with absurd width (at most 97.5%)."""
    sampler, mean = SAMPLERS[name]
    covered = coverage("bootstrap-t", sampler, mean, 10, trials=2000, seed=12345)
    assert 0.93 <= covered <= 0.975, (name, covered)


def hand_sign_flip_p(d: list[int]) -> float:
    """Two-sided p by enumerating all 2^n sign flips: P(|sum of flipped| >= |sum observed|)."""
    observed = abs(sum(d))
    flips = list(product((1, -1), repeat=len(d)))
    return sum(abs(sum(s * x for s, x in zip(signs, d, strict=True))) >= observed
               for signs in flips) / len(flips)


@pytest.mark.parametrize("d", [[1, 2, 3, 4, 5], [1, 2, 3, -4, 5, 6, 7], [3, -1, 2],
                               [2, -2, 1, 0, 5, -1, 4, 3], [-1, 1], [5, 5, -5, 5]])
def test_sign_flip_matches_enumeration(d):
    p, min_p, name = sign_flip_test(np.array(d, dtype=float))
    assert p == pytest.approx(hand_sign_flip_p(d), abs=1e-12)
    assert min_p == 2 / 2 ** len(d) and name == "exact sign-flip test"


def test_sign_flip_known_values():
    assert sign_flip_test(np.array([1.0, 2, 3, 4, 5]))[:2] == (0.0625, 0.0625)
    assert sign_flip_test(np.array([1.0, 2, 3, -4, 5, 6, 7]))[0] == 14 / 128
    assert sign_flip_test(np.array([0.7]))[:2] == (1.0, 1.0)
    p, min_p, name = sign_flip_test(np.arange(1.0, 21.0))  # 2^20 flips: Monte Carlo
    assert min_p == 2 / (SIGN_FLIPS + 1) and p == min_p and "random flips" in name
    assert all(math.isnan(v) for v in sign_flip_test(np.array([]))[:2])


def test_holm_worked_example():
    # m = 4, sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(0.06, 1*0.04)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1, monotone
    assert holm([0.2]) == [0.2] and holm([]) == []
    adjusted = holm([0.01, math.nan])  # an untestable claim still counts
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])


def test_seeds_needed_matches_power_tables():
    """Paired t-test, two-sided alpha 0.05, 80% power (the usual G*Power table values)."""
    assert [seeds_needed(dz) for dz in (0.2, 0.5, 0.8, 1.0)] == [199, 34, 15, 10]
    assert seeds_needed(-0.5) == 34
    assert seeds_needed(3.0) == 6 and seeds_needed(math.inf) == 6  # sign-flip floor 2/2^6
    assert seeds_needed(0.0) is None and seeds_needed(math.nan) is None


def test_paired_comparison_fields():
    a = np.array([0.10, 0.12, 0.08, 0.15, 0.11, 0.09, 0.13, 0.10, 0.14, 0.12])
    b = a + np.array([0.02, 0.01, 0.03, 0.02, 0.00, 0.01, 0.02, -0.01, 0.02, 0.01])
    c = paired_comparison(a, b, lower_is_better=True, labels=("new", "old"))
    d = a - b
    assert (c.n, c.dropped, c.wins, c.losses, c.ties) == (10, 0, 8, 1, 1)
    assert c.mean_diff == pytest.approx(d.mean()) and c.mean_a == pytest.approx(a.mean())
    assert c.interval.low < c.mean_diff < c.interval.high < 0
    assert c.interval.method == "bootstrap-t" and c.interval.n == 10
    assert c.dz == pytest.approx(d.mean() / d.std(ddof=1))
    assert c.win_fraction == 0.8
    ci = stats.binomtest(8, 10).proportion_ci(method="exact")
    assert c.win_interval == pytest.approx((ci.low, ci.high))
    assert c.min_p == 2 / 2**10 and c.better == "new"
    flipped = paired_comparison(a, b, lower_is_better=False, labels=("new", "old"))
    assert (flipped.wins, flipped.losses, flipped.better) == (1, 8, "old")


def test_verdicts():
    a = np.array([1.0, 1.2, 0.9, 1.4, 1.1, 1.3, 1.0, 1.2])
    c = paired_comparison(a, a + 0.5 + 0.01 * np.arange(8), lower_is_better=True,
                          labels=("fa", "exact"))
    assert verdict(c, c.p_value, "fa") == "supported"
    assert verdict(c, c.p_value, "exact") == "contradicted"
    k = seeds_needed(c.dz)
    assert verdict(c, 0.2, "fa") == (f"not resolved with 8 seeds (a paired test would need "
                                     f"about {k} seeds at 80% power for the observed effect)")
    weak = paired_comparison([1.0, 2.0, 3.0, 4.0, 5.0], [1.5, 1.0, 3.5, 3.0, 5.2],
                             lower_is_better=True)
    k = seeds_needed(weak.dz)
    assert k > 5 and verdict(weak, holm([weak.p_value, 0.01])[0], "B").endswith(
        f"would need about {k} seeds at 80% power for the observed effect)")
    # with several claims the figure is for the corrected level, so it only grows
    corrected = seeds_needed(weak.dz, alpha=0.05 / 20)
    assert corrected > k and verdict(weak, 0.5, "B", claims=20).endswith(
        f"about {corrected} seeds at 80% power for the observed effect, at the corrected "
        "level 0.05/20)")
    with pytest.raises(ValueError, match="claimed_better"):
        verdict(c, 0.01, "usf")


def test_nan_pairs_are_dropped_and_counted():
    a = [1.0, math.nan, 2.0, 3.0, math.inf, 4.0, 5.0, 6.0]
    b = [0.5, 1.0, 1.0, 2.5, 1.0, 3.0, -math.inf, 5.5]
    c = paired_comparison(a, b, lower_is_better=True)
    clean = paired_comparison([1.0, 2.0, 3.0, 4.0, 6.0], [0.5, 1.0, 2.5, 3.0, 5.5],
                              lower_is_better=True)
    assert c.dropped == 3 and c.n == 5
    assert c == paired_comparison(a, b, lower_is_better=True)
    assert {**vars(c), "dropped": 0} == vars(clean)
    assert mean_interval([1.0, math.nan, 2.0, 4.0]).dropped == 1


def test_all_pairs_dropped():
    c = paired_comparison([math.nan, 1.0], [1.0, math.nan], lower_is_better=True)
    assert (c.n, c.dropped, c.wins, c.ties) == (0, 2, 0, 0)
    assert math.isnan(c.p_value) and math.isnan(c.mean_diff) and math.isnan(c.interval.low)
    assert c.seeds_needed_80 is None and c.better is None
    assert verdict(c, holm([c.p_value])[0], "A") == "not resolved with 0 seeds (no finite pairs)"
    assert format_p(c.p_value, c.n, c.min_p) == "p not computable (n = 0)"


def test_degenerate_differences():
    same = paired_comparison([0.9] * 8, [0.4] * 8, lower_is_better=False)  # all equal
    assert (same.interval.low, same.interval.high) == (0.5, 0.5)
    assert "all values equal" in same.interval.method
    assert same.dz == math.inf and same.seeds_needed_80 == 6 and same.wins == 8
    assert same.p_value == 2 / 2**8 and verdict(same, same.p_value, "A") == "supported"
    zero = paired_comparison([0.3] * 6, [0.3] * 6, lower_is_better=True)  # all zero
    assert (zero.p_value, zero.dz, zero.ties, zero.seeds_needed_80) == (1.0, 0.0, 6, None)
    assert verdict(zero, 1.0, "A") == "not resolved with 6 seeds (no effect observed)"
    one = paired_comparison([0.2], [0.3], lower_is_better=True)  # n < 2
    assert (one.p_value, one.min_p) == (1.0, 1.0) and math.isnan(one.dz)
    assert math.isnan(one.interval.low) and one.win_fraction == 1.0
    assert verdict(one, 1.0, "A") == (
        "not resolved with 1 seed (too few seeds to estimate the effect)")


def test_mean_interval_methods():
    x = np.array([2.1, 3.5, 1.2, 4.4, 2.9, 3.1, 2.2, 5.0, 1.8, 2.6])
    t = mean_interval(x, method="t")
    ci = stats.ttest_1samp(x, 0.0).confidence_interval()
    assert (t.low, t.high) == pytest.approx((ci.low, ci.high))
    bca = mean_interval(x, method="BCa")
    assert bca.low < x.mean() < bca.high and bca.method == "BCa"
    small = mean_interval(x[:4])
    assert small.method.startswith("t (") and (small.low, small.high) == pytest.approx(
        tuple(stats.ttest_1samp(x[:4], 0.0).confidence_interval()))
    big = np.random.default_rng(3).normal(0.0, 1.0, 400)  # large n: bootstrap-t ~ t
    boot, t = mean_interval(big), mean_interval(big, method="t")
    assert boot.low == pytest.approx(t.low, abs=0.02) and boot.high == pytest.approx(
        t.high, abs=0.02)
    with pytest.raises(ValueError, match="unknown interval method"):
        mean_interval(x, method="percentile")  # type: ignore[arg-type]


def test_bootstrap_t_falls_back_when_resamples_have_no_spread():
    # ten seeds at 100% and two lower: 11% of resamples draw only the 100%s, whose t* is
    # infinite, so the bootstrap-t bound would be -inf; the t-interval is used and named
    accuracy = [1.0] * 10 + [0.4, 0.6]
    unstable = mean_interval(accuracy)
    assert unstable.method.startswith("t (bootstrap-t unstable: ")
    ci = stats.ttest_1samp(accuracy, 0.0).confidence_interval()
    assert (unstable.low, unstable.high) == pytest.approx((ci.low, ci.high))
    assert math.isfinite(unstable.low) and unstable.high > 1.0
    # cut to what an accuracy can be: the true mean lies inside, so no coverage is lost
    bounded = mean_interval(accuracy, bounds=(0.0, 1.0))
    assert (bounded.low, bounded.high) == pytest.approx((ci.low, 1.0))
    # bimodal costs (two stuck runs): near-flat resamples, not only exactly flat ones
    cost = [0.001, 47.0, 45.1, 0.001, 0.5, 0.49, 0.001, 0.008, 0.002, 0.001, 0.001, 0.48]
    assert mean_interval(cost).method.startswith("t (bootstrap-t unstable")
    assert mean_interval(cost, bounds=(0.0, math.inf)).low == 0.0
    # nets that learned and three stuck at chance: the bootstrap-t lower bound was -0.29
    held_out = [0.986, 0.5, 0.944, 0.972, 0.972, 0.972, 0.5, 1.0, 0.944, 1.0, 0.5]
    assert mean_interval(held_out, bounds=(0.0, 1.0)).low > 0.6
    # ordinary data keep the bootstrap-t
    x = np.random.default_rng(5).exponential(1.0, 10)
    assert mean_interval(x).method == "bootstrap-t"


def test_bad_pairs_rejected():
    with pytest.raises(ValueError, match="differ in length"):
        paired_comparison([1.0, 2.0], [1.0], lower_is_better=True)
    with pytest.raises(ValueError, match="labels must differ"):
        paired_comparison([1.0, 2.0], [1.0, 3.0], lower_is_better=True, labels=("x", "x"))


def test_format_p():
    assert format_p(0.0625, 5, 0.0625) == "p = 0.0625 (n = 5, smallest possible 0.0625)"
    assert format_p(0.03125, 10, 2 / 2**10, adjusted=0.09375) == (
        "p = 0.0312, Holm-adjusted 0.0938 (n = 10, smallest possible 0.00195)")


def test_deterministic():
    rng = np.random.default_rng(11)
    a, b = rng.gamma(2.0, 1.0, 12), rng.gamma(2.0, 1.0, 12)
    first = paired_comparison(a, b, lower_is_better=True)
    assert first == paired_comparison(a.copy(), b.copy(), lower_is_better=True)
    assert mean_interval(a, method="BCa") == mean_interval(a, method="BCa")
    c = paired_comparison(np.arange(20.0), np.arange(20.0)[::-1], lower_is_better=True)
    assert c == paired_comparison(np.arange(20.0), np.arange(20.0)[::-1], lower_is_better=True)


def test_power_at_matches_seeds_needed():
    """The power at the seeds seeds_needed asks for reaches 80%, one seed fewer does not
    (above the sign-flip floor), and no power is claimed where the exact test cannot
    reach p < 0.05."""

    for dz in (0.5, 0.8, 1.2):
        n = seeds_needed(dz)
        assert power_at(dz, n) >= 0.8
        if n - 1 > 5:
            assert power_at(dz, n - 1) < 0.8
    assert power_at(2.0, 5) == 0.0
    assert math.isnan(power_at(float("nan"), 10))


def test_power_where_scipys_lower_tail_is_nan():
    # scipy's nct.cdf(-crit) comes back NaN for these (large nc, small alpha); power is the
    # upper tail then, and seeds_needed must still end
    for dz in (2.02, -2.35, 6.01):
        power = power_at(dz, 10, alpha=0.05 / 21)
        assert 0.9 < power <= 1.0
        assert seeds_needed(dz, alpha=0.05 / 21) <= 10
