"""Statistics over seeds for the study reports (seeded: every output is deterministic).

The unit of replication is the trained network: one value per seed and arm; two arms
(rules) are compared over the seeds both ran, paired by seed. What is here, and which
question each piece answers:

* one mean: :func:`mean_interval` (studentized bootstrap) for outcomes without a stuck
  mode, :func:`two_part_interval` for bimodal ones (seeds stuck at chance beside seeds
  that learned); a fraction of seeds: :func:`proportion_interval` (Clopper-Pearson);
* paired differences, one test per kind of claim (:data:`TESTS`, :func:`run_test`):

  - ``mean`` (:func:`mean_test`): "A's mean differs from B's". The studentized bootstrap
    and Student's t-test must both reject (p is the larger of the two): valid for skewed
    differences, where the sign-flip test (exact only for symmetric differences) and the
    t-test alone are not (tables below);
  - ``sign`` (:func:`sign_test`): "most seeds go one way" -- the exact binomial test of
    wins against losses, ties dropped; no assumption on the shape;
  - ``tost`` (:func:`equivalence_test`): "A is within +-margin of B" -- two one-sided
    mean tests;

  each gives a :class:`TestResult`: its p and its *floor*, the smallest p it can give with
  these n and ties (:func:`floor_p`);
* :func:`paired_comparison` -- everything a report states about "A vs B" over paired seeds
  (mean difference and its interval, the test, wins/losses/ties, dz);
  :func:`paired_fractions` -- how often a property (e.g. stuck) holds under A and under B
  over the same seeds (exact McNemar test);
* design: :func:`smallest_detectable` (the effect n seeds detect with 80% power at a
  level), :func:`seeds_needed`, :func:`seeds_range` (the seeds an effect's interval
  allows), :func:`power_at` (for planning, never for reading an observed effect);
* a family of claims: :func:`holm`; :func:`reversed_p` (the p with one seed reversed:
  is a verdict resting on a single seed?).

Every test's level and every interval's coverage is simulated on data shaped like the
studies' in :mod:`.simulation` (``python -m handprop.studies.simulation`` prints the
tables; ``tests/test_statistics.py`` asserts them).

Levels of the tests at alpha = 0.05 (mean test: / 0.01), 4000 samples each, seed 0;
a level above 0.057 (0.05 + 2 Monte Carlo SE) or 0.0131 (at 0.01) is too high::

    test, null                                n = 5      n = 10      n = 11      n = 30
    mean, normal                        0.030/0.003 0.041/0.008 0.035/0.006 0.053/0.010
    mean, gamma(2)                      0.050/0.011 0.042/0.011 0.043/0.009 0.036/0.009
    mean, exponential                   0.063/0.015 0.047/0.018 0.048/0.015 0.042/0.010
    mean, lognormal(0.5)                0.047/0.008 0.050/0.014 0.047/0.011 0.045/0.011
    mean, bimodal 35% at -45            0.123/0.105 0.015/0.015 0.009/0.009 0.019/0.001
    mean, 2 cost arms, 35% stuck        0.005/0.001 0.042/0.001 0.043/0.003 0.043/0.007
    mean, rare, 10% at -45              0.476/0.210 0.343/0.336 0.309/0.306 0.044/0.040
    tost (0.5 sd), normal                     0.002       0.003       0.003       0.024
    tost (0.5 sd), gamma(2)                   0.010       0.030       0.034       0.026
    tost (0.5 sd), exponential                0.030       0.043       0.044       0.034
    tost (0.5 sd), lognormal(0.5)             0.009       0.036       0.038       0.037
    sign, lognormal(1) - median               0.000       0.024       0.018       0.028
    sign, -45 / +5, 20% ties                  0.000       0.021       0.023       0.030

The mean test holds its level at alpha 0.05 on every null from n = 10 (the largest,
0.050, within the Monte Carlo error); at alpha 0.01 strongly skewed differences
(exponential) run high, 0.018 / 0.015 at n = 10 / 11 (the t-test alone: about 0.037).
For contrast, on the same kind of samples (scratch runs, 4000 each) the exact sign-flip
test rejected exponential differences with mean 0 at 0.05 in 0.086 of samples at
n = 10 and the t-test alone in 0.091 (lognormal(0.5): 0.076 and 0.079): both answer
"symmetric about 0" more than "mean 0". At n = 5 the bimodal null runs high (0.123).
No test holds the review's null (10% of seeds at -45, the rest at +5; mean 0) at
n <= 11: 31% of 11-seed samples hold no seed of the rare mode and look like a clean
shift. That is why the article's claims (about single runs) are tested as "most seeds go
one way" (the sign test, exact under any shape) and the stuck fraction is compared on its
own (paired_fractions). TOST holds its level at the margin (each one-sided test at
alpha / 2; at alpha the one-sided tests reached 0.06-0.08 on skewed data).

Coverage of nominal 95% intervals, 4000 samples each, seed 0 (median width in
brackets; the plain t-interval, cut to the bounds, for contrast)::

    interval and shape                          n = 5        n = 10        n = 11        n = 30
    two-part, cost, 20% stuck            0.992 (48.2)  0.991 (29.3)  0.991 (27.2)  0.992 (16.9)
      t-interval, cost, 20% stuck               0.714       0.892       0.912       0.928
    two-part, cost, 35% stuck            0.996 (46.4)    0.995 (28)  0.994 (26.8)  0.980 (21.5)
      t-interval, cost, 35% stuck               0.877       0.920       0.933       0.943
    two-part, held-out, 20% stuck       0.991 (0.358) 0.992 (0.259) 0.989 (0.247) 0.992 (0.156)
      t-interval, held-out, 20% stuck           0.748       0.892       0.910       0.941
    two-part, held-out, 35% stuck       0.996 (0.361) 0.989 (0.269)  0.987 (0.26) 0.981 (0.172)
      t-interval, held-out, 35% stuck           0.875       0.922       0.928       0.945
    two-part, test10, 30% stuck         0.996 (0.575) 0.995 (0.387) 0.994 (0.366) 0.991 (0.224)
      t-interval, test10, 30% stuck             0.852       0.921       0.920       0.942
    difference, cost 20%-35% stuck        0.945 (75.6)  0.963 (48.3)  0.959 (44.9)  0.955 (24.1)
    difference, held-out 20%-35% stuck  0.943 (0.672) 0.963 (0.453) 0.956 (0.417) 0.960 (0.216)
    difference, test10 30%-30% stuck    0.986 (0.862) 0.958 (0.517) 0.959 (0.481) 0.957 (0.253)

The two-part interval covers the bimodal shapes at every n, at 0.98-0.996 (conservative:
p's interval and the parts' errors are combined at p's ends), where the plain t-interval
misses the true mean whenever the sample holds no stuck seed (11% of 10-seed samples at
20% stuck): 0.89-0.92 at n = 10-11, 0.71-0.88 at n = 5. At n = 5 the two-part interval
still covers, at a width of a quarter to a half of the range. The interval of a paired
mean difference (bootstrap-t and t, union) covers differences of such arms at 0.94-0.99.


Choice of the bootstrap interval (one mean, no stuck mode)
---------------------------------------------------------
Measured coverage of nominal 95% intervals for a mean, ``coverage(method, sampler, mean, n,
trials=2000, seed=12345)`` (Monte Carlo standard error about 0.005 near 0.95). Skewed data:
gamma with shape 2 (skewness 1.41), exponential (skewness 2), lognormal with sigma 0.5
(skewness 1.75) and lognormal with sigma 1 (skewness 6.2, a deliberately harsh case)::

    method       n   normal  gamma(2)  exponential  lognormal(0.5)  lognormal(1)
    bootstrap-t   5  0.955   0.935     0.934        0.941           0.902
    bootstrap-t  10  0.945   0.948     0.948        0.936           0.902
    bootstrap-t  20  0.958   0.951     0.944        0.951           0.920
    t             5  0.951   0.921     0.883        0.921           0.821
    t            10  0.945   0.930     0.905        0.926           0.840
    t            20  0.958   0.937     0.926        0.937           0.872
    BCa           5  0.831   0.822     0.805        0.811           0.742
    BCa          10  0.893   0.892     0.882        0.872           0.829
    BCa          20  0.938   0.929     0.910        0.922           0.875

The percentile bootstrap of the old ``stats.py`` (``scipy.stats.bootstrap``, same samples)
covered 0.833 / 0.897 / 0.943 on normal data at n = 5 / 10 / 20 and 0.815 / 0.889 / 0.922 on
gamma(2). Two more candidates, tried on the same samples and not kept: the "expanded" BCa
(Hesterberg 2015: BCa at the level whose normal quantile is sqrt(n/(n-1)) t_{n-1}) covered
0.922 / 0.940 / 0.957 normal, 0.901 / 0.937 / 0.946 gamma(2), 0.884 / 0.928 / 0.933
exponential; Johnson's (1978) skewness-corrected t covered 0.952 / 0.946 / 0.957 normal,
0.922 / 0.931 / 0.938 gamma(2), 0.886 / 0.909 / 0.927 exponential. BCa is too narrow at small
n (resampled means spread sqrt((n-1)/n) standard errors, and normal rather than t quantiles). The
t-interval is exact for normal data but sits on the 0.93 edge for gamma(2) at n = 10 and misses
it for exponential data. The studentized bootstrap ("bootstrap-t": the t-interval with the
quantiles of t* = (mean* - mean) / se* over resamples, Efron & Tibshirani 1993, ch. 12)
corrects for skewness; it is the only candidate reaching 0.93 on every distribution but
lognormal(1) at n = 5, 10 and 20, so it is the default. Its price is width: the median width
(from 300 samples each) relative to the t-interval is 1.26 / 1.04 / 1.01 on normal
data and 1.49 / 1.19 / 1.12 on exponential data at n = 5 / 10 / 20, and at n = 5 it is
occasionally very wide (99th percentile 6.3 times the t-interval on normal data). scipy has no
bootstrap-t, so :func:`_bootstrap_t_rows` writes it out; the t and BCa intervals come from scipy.
Below 5 values the bootstrap-t breaks down (resamples without spread: 11% of them at n = 3), so
:func:`mean_interval` uses the t-interval there and says so in ``Interval.method`` (t coverage
at n = 3 / 4: 0.955 / 0.955 normal, 0.930 / 0.926 gamma(2), 0.883 / 0.881 exponential).

It breaks down too on data with many ties or a few far-off values, which the studies produce
(nets that learned at 95-100% and a few stuck at 50%; costs near 0 and a few stuck at 46): the
resamples that miss the odd values have (almost) no spread, their t* is huge or infinite, and
once they are more than a tail's worth the interval's bound is theirs (measured on such data:
[-inf, 1.01] for a mean accuracy of 0.92, [-0.29, 0.96] for one of 0.85, [-0.9, 727] for a
mean cost of 7.8). So when more than 2.5% of the resamples have a standard error below
``FLAT_RESAMPLE`` (0.2) times the sample's, the t-interval is used instead, named in
``Interval.method``; for data like these no interval here has a simulated coverage to quote.
On the table's distributions the switch is rare. Same samples, with the switch::

    bootstrap-t   5  0.957   0.933     0.908        0.936           0.861
    bootstrap-t  10  0.945   0.948     0.946        0.936           0.896
    bootstrap-t  20  0.958   0.951     0.944        0.951           0.921

(n = 10 and 20 as without it, within the Monte Carlo error; at n = 5 exponential and
lognormal(1) lose 0.026 and 0.041.) ``bounds`` cuts an interval to the values a mean can take
(an accuracy's [0, 1]), which cannot lose coverage.
"""


from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from scipy import optimize, stats

Method = Literal["bootstrap-t", "t", "BCa"]
METHODS: tuple[Method, ...] = ("bootstrap-t", "t", "BCa")
# The tests a claim can name: what each answers is in the module docstring.
TESTS = ("mean", "sign", "tost")
MANY_SEEDS = 10_000  # beyond this, "seeds needed" is reported as "more than"
RESAMPLES = 9999  # bootstrap resamples; (RESAMPLES + 1) * 0.025 is a whole number
SIGN_FLIPS = 99999  # Monte Carlo sign flips; exact enumeration while 2^n <= SIGN_FLIPS (n <= 16)
SEED = 0
MIN_BOOTSTRAP_T = 5  # fewer values: t-interval instead
# Resamples whose standard error is below this fraction of the sample's make t* explode;
# when more than a tail's worth of them do, the bootstrap-t quantile is theirs, not the data's.
FLAT_RESAMPLE = 0.2
_CHUNK = 256  # samples per block in the batched bootstrap (bounds its memory)


# -- intervals for one mean -----------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    """Interval for a mean: ``low``/``high`` (NaN when n < 2), the method used, and the count
    of values used (``n``) and of non-finite values dropped (``dropped``)."""

    low: float
    high: float
    method: str
    n: int
    dropped: int = 0
    level: float = 0.95


def mean_interval(values: Sequence[float] | np.ndarray, level: float = 0.95,
                  method: Method = "bootstrap-t", *, resamples: int = RESAMPLES,
                  seed: int = SEED, bounds: tuple[float, float] | None = None) -> Interval:
    """Interval of ``mean(values)`` at confidence ``level``; non-finite values are dropped.

    All values equal gives the zero-width interval [value, value] (no spread to estimate).
    ``bounds``: the range the mean can take (an accuracy's [0, 1], a cost's [0, inf]); the
    interval is cut to it, which never loses coverage since the true mean lies inside.
    For outcomes with a stuck mode use :func:`two_part_interval` (see the module docstring)."""
    return _cut(_mean_interval(values, level, method, resamples, seed), bounds)


def _cut(interval: Interval, bounds: tuple[float, float] | None) -> Interval:
    if bounds is None or math.isnan(interval.low):
        return interval
    low, high = (float(np.clip(v, *bounds)) for v in (interval.low, interval.high))
    return Interval(low, high, interval.method, interval.n, interval.dropped, interval.level)


def _finite(values: Sequence[float] | np.ndarray) -> tuple[np.ndarray, int]:
    x = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(x)
    return x[keep], int((~keep).sum())


def _mean_interval(values: Sequence[float] | np.ndarray, level: float, method: Method,
                   resamples: int, seed: int) -> Interval:
    if method not in METHODS:
        raise ValueError(f"unknown interval method {method!r}, expected one of {METHODS}")
    x, dropped = _finite(values)
    n = x.size

    def result(low: float, high: float, name: str) -> Interval:
        return Interval(float(low), float(high), name, n, dropped, level)

    if n < 2:
        return result(math.nan, math.nan, f"{method} (n < 2: no interval)")
    if np.all(x == x[0]):
        return result(x[0], x[0], f"{method} (all values equal: no spread)")
    if method == "bootstrap-t" and n < MIN_BOOTSTRAP_T:
        method_used = f"t (bootstrap-t needs at least {MIN_BOOTSTRAP_T} values)"
        return result(*_t_interval(x, level), method_used)
    if method == "bootstrap-t":
        low, high, flat = (float(v[0]) for v in _bootstrap_t_rows(x[None], level, resamples,
                                                                   seed))
        if flat > (1 - level) / 2:
            return result(*_t_interval(x, level), f"t (bootstrap-t unstable: {flat:.0%} of "
                          "resamples have almost no spread, e.g. many tied values)")
        return result(low, high, method)
    if method == "t":
        return result(*_t_interval(x, level), method)
    res = stats.bootstrap((x,), np.mean, confidence_level=level, method="BCa",
                          n_resamples=resamples, rng=np.random.default_rng(seed))
    return result(res.confidence_interval.low, res.confidence_interval.high, method)


def _t_interval(x: np.ndarray, level: float) -> tuple[float, float]:
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence_level=level)
    return float(ci.low), float(ci.high)


@lru_cache(maxsize=8)
def _resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """How often each of n values appears in each of ``resamples`` seeded resamples."""
    picks = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    rows = np.repeat(np.arange(resamples), n)
    counts = np.bincount(rows * n + picks.ravel(), minlength=resamples * n)
    counts = counts.reshape(resamples, n).astype(np.float64)
    counts.flags.writeable = False
    return counts


def _resampled_moments(x: np.ndarray, resamples: int,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each resample's mean minus the sample mean, and its variance (ddof 1). ``x`` is one
    sample (n,) or a batch of samples (T, n); the results are (B,) or (T, B)."""
    n = x.shape[-1]
    centered = x - x.mean(axis=-1, keepdims=True)
    counts = _resample_counts(n, resamples, seed)
    means = centered @ counts.T / n
    variances = np.maximum((centered**2) @ counts.T - n * means**2, 0.0) / (n - 1)
    return means, variances


def _resampled_t(means: np.ndarray, variances: np.ndarray, n: int) -> np.ndarray:
    """t* = (mean* - mean) / se* of every resample: +-inf for a resample without spread,
    NaN for one without spread or shift (dropped by the callers)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return means / np.sqrt(variances / n)


def _bootstrap_t_rows(x: np.ndarray, level: float, resamples: int = RESAMPLES,
                      seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Studentized bootstrap interval of the mean of every row of ``x`` (T, n) with spread:
    the t-interval with the quantiles of t* = (mean* - mean) / se* over resamples in place
    of Student's t quantiles (Efron & Tibshirani 1993, ch. 12). Returns (low, high, flat):
    flat is the fraction of resamples whose standard error is below FLAT_RESAMPLE times the
    sample's -- there t* is huge or infinite whatever the data say, and once more than a
    tail's worth of them do, the bound is theirs, not the data's."""
    n = x.shape[1]
    means, variances = _resampled_moments(x, resamples, seed)
    flat = np.mean(variances < FLAT_RESAMPLE**2 * x.var(axis=1, ddof=1)[:, None], axis=1)
    t = _resampled_t(means, variances, n)
    tail = (1 - level) / 2
    t_low, t_high = np.nanquantile(t, [tail, 1 - tail], axis=1, method="inverted_cdf")
    mean, se = x.mean(axis=1), x.std(axis=1, ddof=1) / math.sqrt(n)
    return mean - t_high * se, mean - t_low * se, flat


def proportion_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of the fraction k / n (``scipy.stats.binomtest``);
    NaN when n = 0."""
    if n == 0:
        return math.nan, math.nan
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def two_part_interval(values: Sequence[float] | np.ndarray, stuck: Sequence[bool] | np.ndarray,
                      *, stuck_range: tuple[float, float], bounds: tuple[float, float],
                      level: float = 0.95) -> Interval:
    """Interval of the mean of a bimodal outcome: seeds stuck at chance (``stuck``) beside
    seeds that learned (:func:`two_part_rows`; non-finite values are dropped)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    flags = np.asarray(stuck, dtype=bool).ravel()
    if x.shape != flags.shape:
        raise ValueError(f"{x.size} values but {flags.size} stuck flags")
    keep = np.isfinite(x)
    x, flags, dropped = x[keep], flags[keep], int((~keep).sum())
    n, k = x.size, int(flags.sum())
    name = f"two-part (stuck {k}/{n}: Wilson interval of the fraction, z for each part)"
    if n == 0:
        return Interval(math.nan, math.nan, name, 0, dropped, level)
    low, high = two_part_rows(x[None], flags[None], stuck_range, bounds, level)
    return Interval(float(low[0]), float(high[0]), name, n, dropped, level)


def two_part_rows(x: np.ndarray, stuck: np.ndarray, stuck_range: tuple[float, float],
                  bounds: tuple[float, float], level: float = 0.95
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The two-part interval of every row of ``x`` (T, n) with its ``stuck`` flags (T, n).

    The mean is (1 - p) m_learned + p m_stuck. p gets its Wilson interval at ``level``;
    each part's mean gets +- z * its standard error, or, with fewer than 2 seeds in the
    part, the whole range the part can take (``stuck_range`` for the stuck part, ``bounds``
    for the other). The interval runs from the lowest to the highest mean these allow at
    the two ends of p's interval (the two parts' errors added in quadrature), cut to
    ``bounds``. Seeing no stuck seed does not exclude them: the upper end of p stays near
    3.8 / (n + 3.8) and the interval reaches towards the stuck range accordingly."""
    n = x.shape[1]
    k = stuck.sum(axis=1)
    z = stats.norm.ppf(0.5 + level / 2)
    center, half = (k + z * z / 2) / (n + z * z), z / (n + z * z) * np.sqrt(
        k * (n - k) / n + z * z / 4)
    low_s, high_s, err_s = _part_rows(x, stuck, stuck_range, level)
    low_l, high_l, err_l = _part_rows(x, ~stuck, bounds, level)
    ends = []
    for p in (np.clip(center - half, 0, 1), np.clip(center + half, 0, 1)):
        q = 1 - p
        spread = np.hypot(_weigh(q, err_l), _weigh(p, err_s))
        ends += [_weigh(q, low_l) + _weigh(p, low_s) - spread,
                 _weigh(q, high_l) + _weigh(p, high_s) + spread]
    return (np.clip(np.min(ends, axis=0), *bounds), np.clip(np.max(ends, axis=0), *bounds))


def _weigh(weight: np.ndarray, value: np.ndarray) -> np.ndarray:
    """weight * value, 0 where the weight is 0 (an infinite bound of a part with no
    weight does not count)."""
    with np.errstate(invalid="ignore"):
        return np.where(weight > 0, weight * value, 0.0)


def _part_rows(x: np.ndarray, member: np.ndarray, whole: tuple[float, float],
               level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low mean, high mean, z * standard error) of one part of each row: its mean and
    error with 2 or more members, else every mean in ``whole`` (error 0)."""
    count = member.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(member, x, 0.0).sum(axis=1) / count
        squares = np.where(member, (x - mean[:, None]) ** 2, 0.0).sum(axis=1)
        error = stats.norm.ppf(0.5 + level / 2) * np.sqrt(
            squares / np.maximum(count - 1, 1) / count)
    enough = count >= 2
    return (np.where(enough, mean, whole[0]), np.where(enough, mean, whole[1]),
            np.where(enough, error, 0.0))


def _t_quantile(level: float, df: int) -> float:
    return float(stats.t.ppf(0.5 + level / 2, df))


# -- tests of paired differences --------------------------------------------------------

@dataclass(frozen=True)
class TestResult:
    """A test's p-value, the smallest p it can give with these n and ties (``floor``), its
    name and the hypothesis it tests."""

    __test__ = False  # not a pytest class

    p: float
    floor: float
    name: str
    question: str


def mean_test_p(x: np.ndarray, shift: float = 0.0, alternative: str = "two-sided", *,
                resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """The mean test's p for every row of ``x`` (T, n): H0 "the mean is ``shift``".

    Both the studentized bootstrap (t* of resamples, equal-tailed; each tail's p is
    (count + 1) / (resamples + 1)) and Student's t-test (``scipy.stats.ttest_1samp``) must
    reject: p = max of the two. Rows without spread (all values equal) cannot be
    studentized: the sign test of their values against ``shift`` stands in. This is the
    procedure the simulations check, batched (``mean_test`` calls it with one row)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    n = x.shape[1]
    p = np.ones(x.shape[0])
    if n < 2:
        return p
    flat = np.all(x == x[:, :1], axis=1)
    spread = ~flat
    if spread.any():
        p_t = stats.ttest_1samp(x[spread], shift, axis=1, alternative=alternative).pvalue
        p_boot = np.concatenate([_bootstrap_p(x[spread][i:i + _CHUNK], shift, alternative,
                                              resamples, seed)
                                 for i in range(0, int(spread.sum()), _CHUNK)])
        p[spread] = np.maximum(p_t, p_boot)
    for row in np.flatnonzero(flat):
        p[row] = _constant_p(x[row, 0] - shift, n, alternative)
    return p


def _bootstrap_p(x: np.ndarray, shift: float, alternative: str, resamples: int,
                 seed: int) -> np.ndarray:
    """Studentized-bootstrap p of H0 "mean = shift" for rows with spread."""
    n = x.shape[1]
    means, variances = _resampled_moments(x, resamples, seed)
    t_star = _resampled_t(means, variances, n)
    t_obs = (x.mean(axis=1) - shift) / (x.std(axis=1, ddof=1) / math.sqrt(n))
    defined = ~np.isnan(t_star)
    total = defined.sum(axis=1) + 1
    below = ((t_star <= t_obs[:, None]) & defined).sum(axis=1) + 1
    above = ((t_star >= t_obs[:, None]) & defined).sum(axis=1) + 1
    if alternative == "less":
        return below / total
    if alternative == "greater":
        return above / total
    return np.minimum(1.0, 2 * np.minimum(below, above) / total)


def _constant_p(offset: float, n: int, alternative: str) -> float:
    """Sign test of n equal values ``offset`` away from the hypothesised mean."""
    if offset == 0:
        return 1.0
    one_side = 0.5**n
    if alternative == "two-sided":
        return min(1.0, 2 * one_side)
    return one_side if (offset > 0) == (alternative == "greater") else 1.0


def mean_test(differences: Sequence[float] | np.ndarray, *, resamples: int = RESAMPLES,
              seed: int = SEED) -> TestResult:
    """Two-sided test of "the mean of the paired differences is 0", valid for skewed
    differences (its level is simulated on skewed and bimodal nulls; see the module
    docstring): :func:`mean_test_p`. Its floor is 2 / (resamples + 1)."""
    d, _ = _finite(differences)
    floor = floor_p("mean", d.size)
    name = "mean test (bootstrap-t and t-test both reject)"
    if d.size < 2:
        return TestResult(1.0, floor, name, "mean difference = 0")
    p = float(mean_test_p(d[None], resamples=resamples, seed=seed)[0])
    return TestResult(p, floor, name, "mean difference = 0")


def sign_test(differences: Sequence[float] | np.ndarray) -> TestResult:
    """Exact two-sided sign test (``scipy.stats.binomtest``): are positive and negative
    differences equally likely? Zero differences (ties) are dropped, so the floor is
    2 / 2^(n - ties). No assumption on the shape: it asks "do most seeds go one way"."""
    d, _ = _finite(differences)
    positive, negative = int((d > 0).sum()), int((d < 0).sum())
    untied = positive + negative
    floor = floor_p("sign", d.size, d.size - untied)
    name = f"exact sign test ({d.size - untied} tie{'' if d.size - untied == 1 else 's'} dropped)"
    p = 1.0 if untied == 0 else float(stats.binomtest(positive, untied).pvalue)
    return TestResult(p, floor, name, "P(difference > 0) = P(difference < 0)")


def equivalence_test(differences: Sequence[float] | np.ndarray, margin: float, *,
                     resamples: int = RESAMPLES, seed: int = SEED) -> TestResult:
    """TOST: is the mean difference within +-``margin``? Two one-sided tests, of
    "mean <= -margin" and "mean >= +margin", each the mean test (:func:`mean_test_p`) at
    alpha / 2 -- p < alpha exactly when the mean test's 95% interval lies inside the
    margin (:func:`tost_p`). alpha / 2 rather than the textbook alpha: a one-sided
    bootstrap-t or t-test at alpha exceeds its level on skewed differences (simulated
    0.06-0.08 at alpha 0.05; module docstring)."""
    if not margin > 0:
        raise ValueError(f"an equivalence margin must be > 0, got {margin}")
    d, _ = _finite(differences)
    name = f"TOST at +-{margin:g} (two one-sided mean tests, each at alpha/2)"
    question = f"|mean difference| >= {margin:g}"
    p = 1.0 if d.size < 2 else float(tost_p(d[None], margin, resamples=resamples,
                                            seed=seed)[0])
    return TestResult(p, floor_p("tost", d.size), name, question)


def tost_p(x: np.ndarray, margin: float, *, resamples: int = RESAMPLES,
           seed: int = SEED) -> np.ndarray:
    """:func:`equivalence_test`'s p for every row of ``x`` (T, n), batched: the larger of
    the two-sided mean-test p against -margin and against +margin, and 1 when the mean
    lies outside the margin."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    kwargs = {"resamples": resamples, "seed": seed}
    p = np.maximum(mean_test_p(x, -margin, **kwargs), mean_test_p(x, margin, **kwargs))
    inside = np.abs(x.mean(axis=1)) < margin
    return np.where(inside, p, 1.0)


def run_test(test: str, differences: Sequence[float] | np.ndarray,
             margin: float = 0.0) -> TestResult:
    """The test a claim names (one of :data:`TESTS`)."""
    if test == "mean":
        return mean_test(differences)
    if test == "sign":
        return sign_test(differences)
    if test == "tost":
        return equivalence_test(differences, margin)
    raise ValueError(f"unknown test {test!r}, expected one of {TESTS}")


def sign_flip_test(differences: np.ndarray, *, resamples: int = SIGN_FLIPS,
                   seed: int = SEED) -> tuple[float, float, str]:
    """Two-sided paired permutation test by flipping the signs of the differences
    (``scipy.stats.permutation_test``, ``permutation_type="samples"``): exact over all
    2^n flips while 2^n <= ``resamples``, seeded Monte Carlo beyond. It is exact for "the
    differences are symmetric about 0", not for "the mean difference is 0" on skewed data
    (see the module docstring); the reports use :func:`mean_test` and :func:`sign_test`.

    Returns ``(p, smallest possible p, test name)``; exact, the smallest p is
    2 / 2^(n - zeros): a zero difference looks the same flipped."""
    d = np.asarray(differences, dtype=np.float64)
    n = d.size
    if n == 0:
        return math.nan, math.nan, "sign-flip test (no pairs)"
    exact = 2.0**n <= resamples
    nonzero = int(np.count_nonzero(d))
    min_p = min(1.0, 2.0 / 2.0**nonzero)
    if not exact:
        min_p = max(min_p, 2.0 / (resamples + 1))
    name = "exact sign-flip test" if exact else f"sign-flip test ({resamples} random flips)"
    if n == 1 or nonzero == 0:
        return 1.0, min_p, name  # both flips of one difference are as extreme as it is
    res = stats.permutation_test((d,), np.mean, permutation_type="samples", vectorized=True,
                                 n_resamples=resamples, alternative="two-sided",
                                 rng=np.random.default_rng(seed))
    return float(res.pvalue), min_p, name


def mean_difference_interval(differences: Sequence[float] | np.ndarray, level: float = 0.95,
                             *, bounds: tuple[float, float] | None = None) -> Interval:
    """The interval that goes with :func:`mean_test`: the union of the bootstrap-t
    interval (:func:`mean_interval`, with its t fallback) and the t-interval, cut to
    ``bounds``. 0 lies outside it when both tests reject."""
    d, dropped = _finite(differences)
    boot = _mean_interval(d, level, "bootstrap-t", RESAMPLES, SEED)
    if d.size < 2 or np.all(d == d[0]):
        return _cut(boot, bounds)
    low, high = (float(v[0]) for v in mean_difference_rows(d[None], level))
    method = "t" if boot.method.startswith("t") else "bootstrap-t and t (union)"
    return _cut(Interval(low, high, method, d.size, dropped, level), bounds)


def difference_summary(differences: Sequence[float] | np.ndarray, *,
                       bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    """A description of paired differences for a report: ``{"n", "diff", "ci"}`` -- how
    many (non-finite ones dropped), their mean (None without any) and the 95% interval
    of :func:`mean_difference_interval` (None with fewer than 2), cut to ``bounds``."""
    d, _ = _finite(differences)
    if d.size < 2:
        return {"n": int(d.size), "diff": float(d.mean()) if d.size else None, "ci": None}
    interval = mean_difference_interval(d, bounds=bounds)
    return {"n": int(d.size), "diff": float(d.mean()), "ci": [interval.low, interval.high]}


def mean_difference_rows(x: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mean_difference_interval` of every row of ``x`` (T, n), batched (what the
    simulations check): the union of the bootstrap-t interval (the t-interval where the
    bootstrap-t is unstable) and the t-interval; [v, v] for a row of equal values v."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    n = x.shape[1]
    mean = x.mean(axis=1)
    low, high = mean.copy(), mean.copy()
    spread = ~np.all(x == x[:, :1], axis=1)
    if n < 2 or not spread.any():
        return low, high
    rows = x[spread]
    half = _t_quantile(level, n - 1) * rows.std(axis=1, ddof=1) / math.sqrt(n)
    t_low, t_high = rows.mean(axis=1) - half, rows.mean(axis=1) + half
    if n < MIN_BOOTSTRAP_T:
        low[spread], high[spread] = t_low, t_high
        return low, high
    parts = [_bootstrap_t_rows(rows[i:i + _CHUNK], level) for i in range(0, len(rows), _CHUNK)]
    b_low, b_high, flat = (np.concatenate(v) for v in zip(*parts, strict=True))
    unstable = flat > (1 - level) / 2
    b_low, b_high = np.where(unstable, t_low, b_low), np.where(unstable, t_high, b_high)
    low[spread], high[spread] = np.minimum(b_low, t_low), np.maximum(b_high, t_high)
    return low, high


# -- design: what n seeds can decide --------------------------------------------------

def floor_p(test: str, n: int, ties: int = 0) -> float:
    """The smallest p ``test`` can give with n pairs, ``ties`` of them zero differences:
    sign 2 / 2^(n - ties); mean and tost 2 / (resamples + 1) (the bootstrap's
    resolution; with fewer than 2 pairs, 1)."""
    if test == "sign":
        return min(1.0, 2.0 * 0.5 ** (n - ties))
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}, expected one of {TESTS}")
    if n < 2:
        return 1.0
    return 2.0 / (RESAMPLES + 1)


def smallest_detectable(test: str, n: int, alpha: float, power: float = 0.8) -> float | None:
    """The smallest effect ``test`` detects with probability ``power`` at level ``alpha``
    with n seeds; None when no effect can be detected (the floor is above alpha).

    * ``mean``: the standardized mean difference dz = mean / sd of the differences
      (two-sided paired t-test, noncentral t, ``scipy.stats.nct``);
    * ``sign``: the fraction of seeds that go one way (exact binomial test);
    * ``tost``: the margin in sd units that the test shows equivalence within when the
      true difference is 0 (two one-sided t-tests, each at alpha / 2)."""
    if floor_p(test, n) >= alpha or n < 2:
        return None
    if test == "mean":
        return float(optimize.brentq(lambda dz: power_at(dz, n, alpha=alpha) - power,
                                     1e-9, 1e3))
    if test == "sign":
        return _sign_test_detectable(n, alpha, power)
    critical = stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(1 - (1 - power) / 2, n - 1)
    return float(critical / math.sqrt(n))


def _sign_test_detectable(n: int, alpha: float, power: float) -> float | None:
    """The smallest fraction q of seeds going one way with P(exact sign test rejects)
    >= power (the rejection region: the counts whose two-sided p <= alpha)."""
    counts = np.arange(n + 1)
    region = np.array([stats.binomtest(int(k), n).pvalue <= alpha for k in counts])
    upper = region & (counts > n / 2)
    if not upper.any():
        return None

    def reject(q: float) -> float:
        return float(stats.binom.pmf(counts[region], n, q).sum()) - power

    if reject(1.0 - 1e-12) < 0:
        return None
    return float(optimize.brentq(reject, 0.5, 1.0 - 1e-12))


def seeds_needed(dz: float, *, power: float = 0.8, alpha: float = 0.05) -> int | None:
    """Seeds a two-sided paired t-test at ``alpha`` needs to detect the standardized effect
    ``dz`` with the given power (noncentral t, ``scipy.stats.nct``), and at least the n at
    which the exact sign test can reach p < alpha at all (2 / 2^n < alpha: 6 at 0.05).
    None when there is no effect (dz 0 or NaN)."""
    if not dz or math.isnan(dz):
        return None
    floor = math.floor(math.log2(2 / alpha)) + 1
    if math.isinf(dz):
        return floor
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n = max(2, math.floor((z / abs(dz)) ** 2))  # normal approximation, a lower bound
    if n > 10**6:
        return n + 1  # t and normal agree there
    while True:
        df, nc = n - 1, abs(dz) * math.sqrt(n)
        if _t_test_power(df, nc, alpha) >= power:
            return max(n, floor)
        n += 1


def sign_seeds_needed(fraction: float, *, power: float = 0.8, alpha: float = 0.05
                      ) -> int | None:
    """Untied seeds the exact two-sided sign test at ``alpha`` needs to detect that a
    ``fraction`` of seeds go one way, with the given power (binomial, exact); None for
    0.5 (no effect) or beyond MANY_SEEDS."""
    if math.isnan(fraction) or fraction == 0.5:
        return None
    q = max(fraction, 1 - fraction)
    z = stats.norm.ppf(1 - alpha / 2) * 0.5 + stats.norm.ppf(power) * math.sqrt(q * (1 - q))
    start = max(math.floor(math.log2(2 / alpha)) + 1, math.floor(0.8 * (z / (q - 0.5)) ** 2))
    for n in range(start, MANY_SEEDS + 1):
        counts = np.arange(n // 2, n + 1)
        rejecting = counts[2 * stats.binom.sf(counts - 1, n, 0.5) <= alpha]
        if rejecting.size:
            k = int(rejecting[0])
            if stats.binom.sf(k - 1, n, q) + stats.binom.cdf(n - k, n, q) >= power:
                return n
    return None


def seeds_range(interval: tuple[float, float], sd: float, *, power: float = 0.8,
                alpha: float = 0.05) -> tuple[int | None, int | None]:
    """The seeds a paired test would need for the effects an interval of the mean
    difference allows (in sd units of the differences): (fewest, most); most is None
    ("no finite number") when the interval reaches 0."""
    low, high = interval
    if not (sd > 0) or math.isnan(low) or math.isnan(high):
        return None, None
    ends = sorted((abs(low) / sd, abs(high) / sd))
    fewest = seeds_needed(ends[1], power=power, alpha=alpha)
    most = None if low <= 0 <= high else seeds_needed(ends[0], power=power, alpha=alpha)
    return fewest, most


def _t_test_power(df: int, nc: float, alpha: float) -> float:
    """P(|T| > t crit) for T noncentral t with ``df`` and ``nc`` >= 0. scipy's far lower tail
    (``nct.cdf(-crit)`` at a large nc) can come back NaN; it is below the central
    ``t.cdf(-crit) = alpha / 2`` and taken as 0 then."""
    crit = stats.t.ppf(1 - alpha / 2, df)
    lower = stats.nct.cdf(-crit, df, nc)
    return float(stats.nct.sf(crit, df, nc) + (0.0 if math.isnan(lower) else lower))


def power_at(dz: float, n: int, *, alpha: float = 0.05) -> float:
    """Power of a two-sided paired t-test at ``alpha`` with ``n`` seeds to detect the
    standardized effect ``dz`` (noncentral t); NaN when undefined. For designing a study
    (a planned effect), never for reading one: power at an observed effect is only a
    transform of its p."""
    if n < 2 or dz is None or math.isnan(dz):
        return math.nan
    if math.isinf(dz):
        return 1.0
    return _t_test_power(n - 1, abs(dz) * math.sqrt(n), alpha)


# -- a paired comparison ----------------------------------------------------------------

@dataclass(frozen=True)
class PairedComparison:
    """Rule A vs rule B over paired seeds (see :func:`paired_comparison`)."""

    labels: tuple[str, str]
    lower_is_better: bool
    n: int  # pairs used
    dropped: int  # pairs dropped because a value was NaN or infinite (e.g. a diverged run)
    mean_a: float
    mean_b: float
    mean_diff: float  # mean of a - b
    interval: Interval  # interval of the mean difference a - b (mean_difference_interval)
    test: TestResult  # the claim's test of the differences
    wins: int  # seeds where A is better than B
    losses: int  # seeds where B is better than A
    ties: int
    win_fraction: float  # wins / (wins + losses): the fraction of untied seeds A wins
    win_interval: tuple[float, float]  # Clopper-Pearson interval of win_fraction
    dz: float  # mean difference / standard deviation of the differences
    margin: float = 0.0  # the equivalence margin of a TOST claim (0: none)
    differences: tuple[float, ...] = field(default=(), repr=False)  # a - b per used seed

    @property
    def p_value(self) -> float:
        return self.test.p

    @property
    def min_p(self) -> float:
        return self.test.floor

    @property
    def better(self) -> str | None:
        """Label of the rule with the better mean, None when the means are equal (or n = 0)."""
        if not self.mean_diff or math.isnan(self.mean_diff):
            return None
        a_better = (self.mean_diff < 0) == self.lower_is_better
        return self.labels[0] if a_better else self.labels[1]

    @property
    def most(self) -> str | None:
        """Label of the rule better in more seeds, None on a draw."""
        if self.wins == self.losses:
            return None
        return self.labels[0] if self.wins > self.losses else self.labels[1]


def paired_comparison(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                      lower_is_better: bool, labels: tuple[str, str] = ("A", "B"),
                      test: str = "mean", margin: float = 0.0, level: float = 0.95,
                      bounds: tuple[float, float] | None = None) -> PairedComparison:
    """Compare rule A with rule B, ``a[i]`` and ``b[i]`` being the metric of the networks
    trained from seed i, with ``test`` (one of :data:`TESTS`; ``tost`` needs ``margin``).
    Pairs with a non-finite member are dropped (counted in ``dropped``). ``bounds``: the
    range of a difference (e.g. (-1, 1) for accuracies), to cut its interval to."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} and {b.size}")
    if labels[0] == labels[1]:
        raise ValueError(f"the two labels must differ, got {labels}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d, n = a - b, int(keep.sum())
    wins = int(np.sum(d < 0 if lower_is_better else d > 0))
    ties = int(np.sum(d == 0))
    nan = math.nan
    return PairedComparison(
        labels=labels, lower_is_better=lower_is_better, n=n, dropped=int((~keep).sum()),
        mean_a=float(a.mean()) if n else nan, mean_b=float(b.mean()) if n else nan,
        mean_diff=float(d.mean()) if n else nan,
        interval=mean_difference_interval(d, level, bounds=bounds),
        test=run_test(test, d, margin), wins=wins, losses=n - wins - ties, ties=ties,
        win_fraction=wins / (n - ties) if n > ties else nan,
        win_interval=proportion_interval(wins, n - ties, level), dz=_standardized_effect(d),
        margin=margin, differences=tuple(float(v) for v in d))


def _standardized_effect(d: np.ndarray) -> float:
    """dz = mean(d) / sd(d): 0 when every difference is 0, +-inf when all are equal and
    nonzero, NaN with fewer than 2 differences."""
    if d.size < 2:
        return math.nan
    if np.all(d == d[0]):
        return 0.0 if d[0] == 0 else math.copysign(math.inf, d[0])
    return float(d.mean() / d.std(ddof=1))


def reversed_p(comparison: PairedComparison, test: str) -> float:
    """The largest p ``test`` gives when the difference of one seed is reversed (its sign
    flipped), over the seeds: a decided verdict whose adjusted p crosses alpha with it
    rests on a single seed."""
    d = np.asarray(comparison.differences, dtype=np.float64)
    if d.size < 2:
        return math.nan
    variants = np.tile(d, (d.size, 1))
    variants[np.arange(d.size), np.arange(d.size)] *= -1
    if test == "sign":
        return max(sign_test(row).p for row in variants)
    if test == "mean":
        return float(mean_test_p(variants).max())
    if test == "tost":
        return float(tost_p(variants, comparison.margin).max())
    raise ValueError(f"unknown test {test!r}, expected one of {TESTS}")


@dataclass(frozen=True)
class PairedFractions:
    """Two fractions of the same seeds (e.g. stuck at chance under rule A and rule B)."""

    labels: tuple[str, str]
    n: int
    count_a: int
    count_b: int
    interval_a: tuple[float, float]
    interval_b: tuple[float, float]
    only_a: int  # seeds where A has the property and B does not
    only_b: int
    p_value: float  # exact McNemar test: a sign test of only_a against only_b


def paired_fractions(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray,
                     labels: tuple[str, str] = ("A", "B"), level: float = 0.95
                     ) -> PairedFractions:
    """Compare how often a property holds (per seed) under A and under B on the same seeds:
    each fraction with its exact interval, and the exact McNemar test (only the seeds where
    the two differ count; ``scipy.stats.binomtest``)."""
    a, b = np.asarray(a, dtype=bool).ravel(), np.asarray(b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired flags differ in length: {a.size} and {b.size}")
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    discordant = only_a + only_b
    p = 1.0 if discordant == 0 else float(stats.binomtest(only_a, discordant).pvalue)
    return PairedFractions(labels, a.size, int(a.sum()), int(b.sum()),
                           proportion_interval(int(a.sum()), a.size, level),
                           proportion_interval(int(b.sum()), b.size, level),
                           only_a, only_b, p)


# -- one family of claims ---------------------------------------------------------------

def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values for one family of claims, in the input order.

    With m claims and p sorted ascending, the i-th smallest (i = 1..m) becomes
    max over j <= i of min(1, (m - j + 1) * p_(j)). A NaN p (an untestable claim) still counts
    as a claim, is treated as p = 1, and stays NaN in the output."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(np.where(np.isnan(p), 1.0, p), kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        raw = 1.0 if np.isnan(p[i]) else p[i]
        running = max(running, min(1.0, (m - rank) * raw))
        adjusted[i] = running
    return [math.nan if np.isnan(raw) else float(adj) for raw, adj in zip(p, adjusted, strict=True)]


def format_p(p: float, n: int, floor: float, adjusted: float | None = None) -> str:
    """``"p = 0.0312 (n = 10, smallest possible 0.00195)"``; with ``adjusted`` the
    Holm-adjusted p follows the raw one."""
    if math.isnan(p):
        return f"p not computable (n = {n})"
    held = "" if adjusted is None else f", Holm-adjusted {adjusted:.3g}"
    return f"p = {p:.3g}{held} (n = {n}, smallest possible {floor:.3g})"


def coverage(method: Method, sampler: Callable[[np.random.Generator, int], np.ndarray],
             true_mean: float, n: int, *, trials: int = 2000, seed: int = 0,
             level: float = 0.95) -> float:
    """Fraction of ``trials`` samples of size n (``sampler(rng, n)``, rng seeded by ``seed``)
    whose ``mean_interval`` at ``level`` contains ``true_mean``."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(trials):
        interval = mean_interval(sampler(rng, n), level, method)
        hits += interval.low <= true_mean <= interval.high
    return hits / trials
