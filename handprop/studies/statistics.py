"""Paired statistics over seeds for the study reports (seeded, so every output is deterministic).

The unit of replication is the trained network: one value per seed and rule, and two rules
are compared over the seeds both ran, paired by seed.

* :func:`mean_interval` -- interval for a mean (default: studentized bootstrap, see below);
* :func:`paired_comparison` -- everything a report states about "A vs B" over paired seeds:
  mean difference with its interval, an exact sign-flip permutation p-value with the smallest
  p that n allows, wins/losses/ties with a Clopper-Pearson interval for the fraction of seeds
  A wins, the standardized effect dz, and the seeds a paired t-test would need;
* :func:`holm` -- Holm step-down adjustment across the claims of one report;
* :func:`verdict` -- "supported", "contradicted" or "not resolved with n seeds (...)";
* :func:`format_p` -- a p-value with n and the smallest p that n allows;
* :func:`coverage` -- simulated coverage of :func:`mean_interval` (how the table was made).

Choice of interval
------------------
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
bootstrap-t, so :func:`_bootstrap_t` writes it out; the t and BCa intervals come from scipy.
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
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import stats

Method = Literal["bootstrap-t", "t", "BCa"]
METHODS: tuple[Method, ...] = ("bootstrap-t", "t", "BCa")
MANY_SEEDS = 10_000  # beyond this, "seeds needed" is reported as "more than"
RESAMPLES = 9999  # bootstrap resamples; (RESAMPLES + 1) * 0.025 is a whole number
SIGN_FLIPS = 99999  # Monte Carlo sign flips; exact enumeration while 2^n <= SIGN_FLIPS (n <= 16)
SEED = 0
MIN_BOOTSTRAP_T = 5  # fewer values: t-interval instead
# Resamples whose standard error is below this fraction of the sample's make t* explode;
# when more than a tail's worth of them do, the bootstrap-t quantile is theirs, not the data's.
FLAT_RESAMPLE = 0.2


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
    interval is cut to it, which never loses coverage since the true mean lies inside."""
    interval = _mean_interval(values, level, method, resamples, seed)
    if bounds is None or math.isnan(interval.low):
        return interval
    low, high = (float(np.clip(v, *bounds)) for v in (interval.low, interval.high))
    return Interval(low, high, interval.method, interval.n, interval.dropped, level)


def _mean_interval(values: Sequence[float] | np.ndarray, level: float, method: Method,
                   resamples: int, seed: int) -> Interval:
    if method not in METHODS:
        raise ValueError(f"unknown interval method {method!r}, expected one of {METHODS}")
    x = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(x)
    x, dropped = x[keep], int((~keep).sum())
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
        means, variances = _resampled_moments(x, resamples, seed)
        flat = _flat_fraction(x, variances)
        if flat > (1 - level) / 2:
            return result(*_t_interval(x, level), f"t (bootstrap-t unstable: {flat:.0%} of "
                          "resamples have almost no spread, e.g. many tied values)")
        return result(*_bootstrap_t(x, level, means, variances), method)
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
    """Each resample's mean minus the sample mean, and its variance (ddof 1)."""
    n = x.size
    centered = x - x.mean()
    counts = _resample_counts(n, resamples, seed)
    means = counts @ centered / n
    variances = np.maximum(counts @ centered**2 - n * means**2, 0.0) / (n - 1)
    return means, variances


def _flat_fraction(x: np.ndarray, variances: np.ndarray) -> float:
    """The fraction of resamples (their ``variances``) whose standard error is below
    FLAT_RESAMPLE times the sample's: there t* = (mean* - mean) / se* is huge or infinite
    whatever the data say."""
    return float(np.mean(variances < (FLAT_RESAMPLE**2) * x.var(ddof=1)))


def _bootstrap_t(x: np.ndarray, level: float, means: np.ndarray,
                 variances: np.ndarray) -> tuple[float, float]:
    """Studentized bootstrap interval of the mean: the t-interval with the quantiles of
    t* = (mean* - mean) / se* over resamples (their :func:`_resampled_moments`) in place
    of Student's t quantiles."""
    n = x.size
    se = x.std(ddof=1) / math.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = means / np.sqrt(variances / n)  # +-inf for a resample without spread
    t = t[~np.isnan(t)]
    tail = (1 - level) / 2
    t_low, t_high = np.quantile(t, [tail, 1 - tail], method="inverted_cdf")
    return x.mean() - t_high * se, x.mean() - t_low * se


def sign_flip_test(differences: np.ndarray, *, resamples: int = SIGN_FLIPS,
                   seed: int = SEED) -> tuple[float, float, str]:
    """Two-sided paired permutation test of "mean difference = 0" by flipping the signs of the
    differences (``scipy.stats.permutation_test``, ``permutation_type="samples"``): exact over
    all 2^n flips while 2^n <= ``resamples``, seeded Monte Carlo beyond.

    Returns ``(p, smallest possible p, test name)``; exact, the smallest p is 2 / 2^n."""
    d = np.asarray(differences, dtype=np.float64)
    n = d.size
    if n == 0:
        return math.nan, math.nan, "sign-flip test (no pairs)"
    exact = 2.0**n <= resamples
    min_p = min(1.0, 2.0 / 2.0**n if exact else max(2.0 / 2.0**n, 2.0 / (resamples + 1)))
    name = "exact sign-flip test" if exact else f"sign-flip test ({resamples} random flips)"
    if n == 1 or np.all(d == 0):
        return 1.0, min_p, name  # both flips of one difference are as extreme as it is
    res = stats.permutation_test((d,), np.mean, permutation_type="samples", vectorized=True,
                                 n_resamples=resamples, alternative="two-sided",
                                 rng=np.random.default_rng(seed))
    return float(res.pvalue), min_p, name


def seeds_needed(dz: float, *, power: float = 0.8, alpha: float = 0.05) -> int | None:
    """Seeds a two-sided paired t-test at ``alpha`` needs to detect the standardized effect
    ``dz`` with the given power (noncentral t, ``scipy.stats.nct``), and at least the n at
    which the exact sign-flip test can reach p < alpha at all (2 / 2^n < alpha: 6 at 0.05).
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


def _t_test_power(df: int, nc: float, alpha: float) -> float:
    """P(|T| > t crit) for T noncentral t with ``df`` and ``nc`` >= 0. scipy's far lower tail
    (``nct.cdf(-crit)`` at a large nc) can come back NaN; it is below the central
    ``t.cdf(-crit) = alpha / 2`` and taken as 0 then."""
    crit = stats.t.ppf(1 - alpha / 2, df)
    lower = stats.nct.cdf(-crit, df, nc)
    return float(stats.nct.sf(crit, df, nc) + (0.0 if math.isnan(lower) else lower))


def power_at(dz: float, n: int, *, alpha: float = 0.05) -> float:
    """Power of a two-sided paired t-test at ``alpha`` with ``n`` seeds to detect the
    standardized effect ``dz`` (noncentral t, ``scipy.stats.nct``); NaN when undefined.
    (The exact sign-flip test the reports use has at most this power; with
    2 / 2^n >= alpha it has none.)"""
    if n < 2 or dz is None or math.isnan(dz):
        return math.nan
    if 2.0 / 2.0**n >= alpha:
        return 0.0
    if math.isinf(dz):
        return 1.0
    return _t_test_power(n - 1, abs(dz) * math.sqrt(n), alpha)


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
    interval: Interval  # interval of the mean difference a - b
    p_value: float  # two-sided, from ``test``
    min_p: float  # smallest p the test can give with n pairs
    test: str
    wins: int  # seeds where A is better than B
    losses: int  # seeds where B is better than A
    ties: int
    win_fraction: float  # wins / n (a tie is not a win)
    win_interval: tuple[float, float]  # Clopper-Pearson interval of win_fraction
    dz: float  # mean difference / standard deviation of the differences
    seeds_needed_80: int | None  # paired t-test, 80% power, alpha 0.05, effect dz

    @property
    def better(self) -> str | None:
        """Label of the rule with the better mean, None when the means are equal (or n = 0)."""
        if not self.mean_diff or math.isnan(self.mean_diff):
            return None
        a_better = (self.mean_diff < 0) == self.lower_is_better
        return self.labels[0] if a_better else self.labels[1]


def paired_comparison(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                      lower_is_better: bool, labels: tuple[str, str] = ("A", "B"),
                      level: float = 0.95, seed: int = SEED) -> PairedComparison:
    """Compare rule A with rule B, ``a[i]`` and ``b[i]`` being the metric of the networks
    trained from seed i. Pairs with a non-finite member are dropped (counted in ``dropped``)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} and {b.size}")
    if labels[0] == labels[1]:
        raise ValueError(f"the two labels must differ, got {labels}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d, n = a - b, int(keep.sum())
    p, min_p, test = sign_flip_test(d, seed=seed)
    wins = int(np.sum(d < 0 if lower_is_better else d > 0))
    ties = int(np.sum(d == 0))
    dz = _standardized_effect(d)
    nan = math.nan
    return PairedComparison(
        labels=labels, lower_is_better=lower_is_better, n=n, dropped=int((~keep).sum()),
        mean_a=float(a.mean()) if n else nan, mean_b=float(b.mean()) if n else nan,
        mean_diff=float(d.mean()) if n else nan, interval=mean_interval(d, level, seed=seed),
        p_value=p, min_p=min_p, test=test, wins=wins, losses=n - wins - ties, ties=ties,
        win_fraction=wins / n if n else nan, win_interval=_win_interval(wins, n, level), dz=dz,
        seeds_needed_80=seeds_needed(dz))


def _standardized_effect(d: np.ndarray) -> float:
    """dz = mean(d) / sd(d): 0 when every difference is 0, +-inf when all are equal and
    nonzero, NaN with fewer than 2 differences."""
    if d.size < 2:
        return math.nan
    if np.all(d == d[0]):
        return 0.0 if d[0] == 0 else math.copysign(math.inf, d[0])
    return float(d.mean() / d.std(ddof=1))


def _win_interval(wins: int, n: int, level: float) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of the fraction wins / n, via ``scipy.stats.binomtest``."""
    if n == 0:
        return math.nan, math.nan
    ci = stats.binomtest(wins, n).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values for the claims of one report, in the input order.

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


def verdict(comparison: PairedComparison, adjusted_p: float, claimed_better: str,
            alpha: float = 0.05, claims: int = 1) -> str:
    """Verdict on the claim "``claimed_better`` (one of ``comparison.labels``) is better".

    "supported" / "contradicted" only when the Holm-adjusted p is below ``alpha``, the sign of
    the mean difference saying which; otherwise "not resolved with n seeds (...)", with the
    seeds a paired t-test would need for 80% power at the observed dz. With ``claims`` > 1
    tested claims in the report, that figure is for the level ``alpha / claims`` (Bonferroni,
    which Holm never needs more than), so a rerun with that many seeds would likely resolve
    the claim after the correction too."""
    if claimed_better not in comparison.labels:
        raise ValueError(f"claimed_better must be one of {comparison.labels}, "
                         f"got {claimed_better!r}")
    better = comparison.better
    if better is not None and adjusted_p < alpha:
        return "supported" if better == claimed_better else "contradicted"
    n = comparison.n
    head = f"not resolved with {n} seed{'' if n == 1 else 's'}"
    if n == 0:
        return f"{head} (no finite pairs)"
    if better is None:
        return f"{head} (no effect observed)"
    level = alpha / max(int(claims), 1)
    k = seeds_needed(comparison.dz, alpha=level)
    where = "" if claims <= 1 else f", at the corrected level {alpha:g}/{claims}"
    if k is None:
        return f"{head} (too few seeds to estimate the effect)"
    if k > MANY_SEEDS:
        return (f"{head} (the observed effect is so small that a paired test would need "
                f"more than {MANY_SEEDS:,} seeds at 80% power{where})")
    return (f"{head} (a paired test would need about {k} seeds at 80% power for the observed "
            f"effect{where})")


def format_p(p: float, n: int, min_p: float, adjusted: float | None = None) -> str:
    """``"p = 0.0312 (n = 10, smallest possible 0.00195)"``; with ``adjusted`` the Holm-adjusted
    p follows the raw one."""
    if math.isnan(p):
        return f"p not computable (n = {n})"
    held = "" if adjusted is None else f", Holm-adjusted {adjusted:.3g}"
    return f"p = {p:.3g}{held} (n = {n}, smallest possible {min_p:.3g})"


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
