"""Paired statistics over seeds, in plain NumPy (deterministic: every resampling is seeded).

* :func:`bootstrap_ci` -- percentile bootstrap interval of a mean;
* :func:`sign_flip_test` -- paired permutation test of "mean difference = 0" (exact
  enumeration of all 2^n sign flips up to n = 16, Monte Carlo beyond);
* :func:`mcnemar_test` -- exact McNemar test for paired right/wrong outcomes (two rules
  predicting the same held-out images);
* :func:`paired_summary` -- all of the above for two paired samples.
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np


def bootstrap_ci(values: np.ndarray, level: float = 0.95, resamples: int = 10000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(values)`` (NaN values dropped)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (math.nan, math.nan)
    if values.size == 1 or np.all(values == values[0]):
        return (float(values[0]), float(values[0])) if values.size else (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def sign_flip_test(differences: np.ndarray, resamples: int = 20000, seed: int = 0) -> float:
    """Two-sided p-value of a paired permutation (sign-flip) test of mean difference 0."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0 or np.all(d == 0):
        return 1.0
    observed = abs(d.mean())
    if d.size <= 16:
        signs = np.array(list(product((1.0, -1.0), repeat=d.size)))
    else:
        rng = np.random.default_rng(seed)
        signs = rng.choice((1.0, -1.0), size=(resamples, d.size))
    null = np.abs((signs * d).mean(axis=1))
    return float(np.mean(null >= observed - 1e-12))


def mcnemar_test(right_a: np.ndarray, right_b: np.ndarray) -> dict[str, float]:
    """Exact McNemar test: do two classifiers err on the same items equally often?

    right_a, right_b : boolean arrays over the same items.
    Returns counts ``a_only`` (A right, B wrong), ``b_only`` and the two-sided p-value.
    """
    right_a, right_b = np.asarray(right_a, bool), np.asarray(right_b, bool)
    a_only = int(np.sum(right_a & ~right_b))
    b_only = int(np.sum(~right_a & right_b))
    n = a_only + b_only
    if n == 0:
        return {"a_only": 0, "b_only": 0, "p_value": 1.0}
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return {"a_only": a_only, "b_only": b_only, "p_value": min(1.0, 2 * tail)}


def paired_summary(a: np.ndarray, b: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Compare paired samples ``a`` and ``b`` (same seeds): means, mean difference a - b
    with a 95% bootstrap interval, the sign-flip p-value, and how often a < b / a > b.
    Pairs with a non-finite member are dropped (their count is ``dropped``)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    diff = a[keep] - b[keep]
    low, high = bootstrap_ci(diff, seed=seed)
    return {
        "n": int(keep.sum()),
        "dropped": int((~keep).sum()),
        "mean_a": float(a[keep].mean()) if keep.any() else math.nan,
        "mean_b": float(b[keep].mean()) if keep.any() else math.nan,
        "mean_diff": float(diff.mean()) if diff.size else math.nan,
        "ci_low": low,
        "ci_high": high,
        "p_value": sign_flip_test(diff, seed=seed),
        "a_lower": int(np.sum(diff < 0)),
        "a_higher": int(np.sum(diff > 0)),
    }
