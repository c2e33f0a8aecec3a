"""How the statistics of :mod:`.statistics` behave on data shaped like the studies': the
simulated level of every test and coverage of every interval.

The studies' outcomes are bimodal: some seeds learn, others stay stuck at chance (the
network gives one class to every image), and many values are tied. The shapes here copy
what the ``reproduce`` runs show (per seed, one arm):

* **cost**: final training cost of a 350-image run; learners' costs are gamma(0.5,
  scale 6) (mostly near 0, a tail to ~30), stuck seeds sit at 43-52 (predicting about
  0.5) or, one in ten, at 84-88 (predicting the wrong constant);
* **held-out**: accuracy on 72 balanced images; learners 1 - gamma(1, 0.05), in steps of
  1/72, at least 0.55; stuck seeds 0.5 give or take 2/72;
* **test10**: accuracy on the article's 10 images; learners 1.0 / 0.9 / 0.8 / 0.7 with
  probabilities 0.7 / 0.2 / 0.07 / 0.03; a stuck seed scores the share of the class it
  predicts among the 10 (binomial(10, 0.5) / 10).

Nulls for the tests (paired differences for which the tested hypothesis holds):
continuous skew (gamma(2), exponential, lognormal(0.5), centred), a skewed bimodal
difference (35% of seeds at -45, the rest at +24.2, mean 0, noise sd 2) and the difference
of two cost arms each 35% stuck; for TOST the same shapes moved to the margin (both
orientations); for the sign test, medians at 0 with 20% ties.

Every function draws from ``numpy.random.default_rng(seed)`` and runs the statistics'
own batched code (``mean_test_p``, ``two_part_rows``, ``mean_difference_rows``) on
(trials, n) arrays. ``python -m handprop.studies.simulation [trials]`` prints the tables of
the :mod:`.statistics` docstring.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .reproduce_base import metric_bounds, stuck_ranges
from .statistics import mean_difference_rows, mean_test_p, sign_test, tost_p, two_part_rows

Draw = Callable[[np.random.Generator, tuple[int, int]], np.ndarray]


# -- one arm: bimodal outcomes ---------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    """A bimodal outcome: ``draw(rng, size, stuck)`` gives values for the stuck flags;
    the true mean of an arm with a fraction ``stuck`` of stuck seeds is
    ``(1 - stuck) * learned_mean + stuck * stuck_mean``."""

    name: str
    stuck: float
    learned: Draw
    stuck_values: Draw
    learned_mean: float
    stuck_mean: float
    stuck_range: tuple[float, float]
    bounds: tuple[float, float]

    @property
    def mean(self) -> float:
        return (1 - self.stuck) * self.learned_mean + self.stuck * self.stuck_mean

    def sample(self, rng: np.random.Generator, trials: int, n: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """(values, stuck flags), each (trials, n)."""
        flags = rng.random((trials, n)) < self.stuck
        values = np.where(flags, self.stuck_values(rng, (trials, n)),
                          self.learned(rng, (trials, n)))
        return values, flags


def _stuck_cost(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    wrong = rng.random(size) < 0.1
    return np.where(wrong, rng.uniform(84, 88, size), rng.uniform(43, 52, size))


def _held_out_learned(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    return np.round(np.clip(1 - rng.gamma(1.0, 0.05, size), 0.55, 1.0) * 72) / 72


def _held_out_stuck(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    return 0.5 + rng.choice(np.array([-2, -1, 0, 0, 0, 0, 1, 2]) / 72, size)


TEST10_SCORES, TEST10_WEIGHTS = np.array([1.0, 0.9, 0.8, 0.7]), np.array([0.7, 0.2, 0.07, 0.03])


def _test10_learned(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    return rng.choice(TEST10_SCORES, size, p=TEST10_WEIGHTS)


def _test10_stuck(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    return rng.binomial(10, 0.5, size) / 10


def _held_out_learned_mean() -> float:
    """E[round(clip(1 - G, 0.55, 1) * 72) / 72] for G ~ gamma(1, 0.05), by quadrature over
    the 72 steps."""
    from scipy import stats

    steps = np.arange(40, 73)  # 0.55 * 72 = 39.6: the lowest step is 40/72
    upper = np.clip((steps + 0.5) / 72, None, 1.0)
    lower = np.where(steps == 40, -np.inf, (steps - 0.5) / 72)
    weight = stats.expon.cdf(1 - lower, scale=0.05) - stats.expon.cdf(1 - upper, scale=0.05)
    return float(np.sum(weight * steps / 72))


def shapes() -> list[Shape]:
    """The five arm shapes of the coverage tables (issue 17's list), with the stuck ranges
    and bounds the reproduce study gives the two-part interval."""
    ranges, images = stuck_ranges(350), 350
    cost = {"learned": lambda rng, size: rng.gamma(0.5, 6.0, size), "learned_mean": 3.0,
            "stuck_values": _stuck_cost, "stuck_mean": 0.9 * 47.5 + 0.1 * 86.0,
            "stuck_range": ranges["final_cost"], "bounds": metric_bounds("final_cost", images)}
    held = {"learned": _held_out_learned, "learned_mean": _held_out_learned_mean(),
            "stuck_values": _held_out_stuck, "stuck_mean": 0.5,
            "stuck_range": ranges["heldout_accuracy"], "bounds": (0.0, 1.0)}
    test10 = {"learned": _test10_learned,
              "learned_mean": float(TEST10_SCORES @ TEST10_WEIGHTS),
              "stuck_values": _test10_stuck, "stuck_mean": 0.5,
              "stuck_range": ranges["test10_accuracy"], "bounds": (0.0, 1.0)}
    return [Shape("cost, 20% stuck", 0.2, **cost), Shape("cost, 35% stuck", 0.35, **cost),
            Shape("held-out, 20% stuck", 0.2, **held), Shape("held-out, 35% stuck", 0.35, **held),
            Shape("test10, 30% stuck", 0.3, **test10)]


def two_part_coverage(shape: Shape, n: int, trials: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """(coverage, median width) of :func:`~.statistics.two_part_interval` on ``shape``."""
    values, flags = shape.sample(np.random.default_rng(seed), trials, n)
    low, high = two_part_rows(values, flags, shape.stuck_range, shape.bounds, level)
    return float(np.mean((low <= shape.mean) & (shape.mean <= high))), float(
        np.median(high - low))


def difference_coverage(a: Shape, b: Shape, n: int, trials: int = 2000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float]:
    """(coverage, median width) of :func:`~.statistics.mean_difference_interval` for the
    mean of A - B, the two arms drawn independently for each seed."""
    rng = np.random.default_rng(seed)
    d = a.sample(rng, trials, n)[0] - b.sample(rng, trials, n)[0]
    low, high = mean_difference_rows(d, level)
    truth = a.mean - b.mean
    return float(np.mean((low <= truth) & (truth <= high))), float(np.median(high - low))


# -- paired differences: nulls for the tests -------------------------------------------

def _bimodal(rng: np.random.Generator, size: tuple[int, int], rare: float = 0.35,
             far: float = 45.0) -> np.ndarray:
    """A fraction ``rare`` of seeds at -far, the rest at +far * rare / (1 - rare): mean 0."""
    flags = rng.random(size) < rare
    return np.where(flags, -far, far * rare / (1 - rare)) + rng.normal(0.0, 2.0, size)


def _cost_arms(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    arm = shapes()[1]
    return arm.sample(rng, *size)[0] - arm.sample(rng, *size)[0]


NULLS: dict[str, Draw] = {  # mean 0 and skewed (or bimodal)
    "normal": lambda rng, size: rng.normal(0.0, 1.0, size),
    "gamma(2)": lambda rng, size: rng.gamma(2.0, 1.0, size) - 2.0,
    "exponential": lambda rng, size: rng.exponential(1.0, size) - 1.0,
    "lognormal(0.5)": lambda rng, size: rng.lognormal(0.0, 0.5, size) - math.exp(0.125),
    "bimodal 35% at -45": _bimodal,
    "two cost arms, 35% stuck": _cost_arms,
}
# Not a null any test can hold at n <= 11: 31% of 11-seed samples hold no seed of the rare
# mode and look like a clean shift (the review's example). Reported, never asserted.
RARE_NULL: Draw = lambda rng, size: _bimodal(rng, size, rare=0.1, far=45.0)  # noqa: E731
SIGN_NULLS: dict[str, Draw] = {  # P(d > 0) = P(d < 0), with ties
    "lognormal(1) - median, 20% ties": lambda rng, size: np.where(
        rng.random(size) < 0.2, 0.0, rng.lognormal(0.0, 1.0, size) - 1.0),
    "bimodal -45 / +5 with 20% ties": lambda rng, size: np.where(
        rng.random(size) < 0.2, 0.0, np.where(rng.random(size) < 0.5, -45.0, 5.0)),
}


def _sd(draw: Draw) -> float:
    """The standard deviation of a null (from 200,000 draws, seeded)."""
    return float(draw(np.random.default_rng(99), (200_000, 1)).std())


def mean_test_level(draw: Draw, n: int, alpha: float = 0.05, trials: int = 2000,
                    seed: int = 0) -> float:
    """Rejection rate of :func:`~.statistics.mean_test` at ``alpha`` under ``draw``."""
    return mean_test_levels(draw, n, (alpha,), trials, seed)[0]


def mean_test_levels(draw: Draw, n: int, alphas: tuple[float, ...], trials: int = 2000,
                     seed: int = 0) -> list[float]:
    """Rejection rates of :func:`~.statistics.mean_test` at several levels (one set of
    samples)."""
    p = mean_test_p(draw(np.random.default_rng(seed), (trials, n)))
    return [float(np.mean(p <= alpha)) for alpha in alphas]


def tost_level(draw: Draw, n: int, margin_sd: float = 0.5, alpha: float = 0.05,
               trials: int = 2000, seed: int = 0) -> float:
    """Rejection rate of :func:`~.statistics.equivalence_test` when the true mean sits on
    the margin (``margin_sd`` sds of ``draw`` from 0), half the samples at +margin and half
    mirrored at -margin (skew in both directions)."""
    margin = margin_sd * _sd(draw)
    d = draw(np.random.default_rng(seed), (trials, n))
    d[trials // 2:] *= -1
    d += np.where(np.arange(trials) < trials // 2, margin, -margin)[:, None]
    return float(np.mean(tost_p(d, margin) <= alpha))


def sign_test_level(draw: Draw, n: int, alpha: float = 0.05, trials: int = 2000,
                    seed: int = 0) -> float:
    """Rejection rate of :func:`~.statistics.sign_test` at ``alpha`` under ``draw``."""
    d = draw(np.random.default_rng(seed), (trials, n))
    return float(np.mean([sign_test(row).p <= alpha for row in d]))


def monte_carlo_bound(alpha: float, trials: int) -> float:
    """alpha + 2 Monte Carlo standard errors: a simulated level above it is too high."""
    return alpha + 2 * math.sqrt(alpha * (1 - alpha) / trials)


# -- the tables --------------------------------------------------------------------------

def t_coverage(shape: Shape, n: int, trials: int = 2000, seed: int = 0) -> float:
    """For contrast: the coverage of the plain t-interval (cut to the bounds) on ``shape``."""
    from scipy import stats

    values, _ = shape.sample(np.random.default_rng(seed), trials, n)
    ci = stats.ttest_1samp(values, 0.0, axis=1).confidence_interval()
    low, high = np.clip(ci.low, *shape.bounds), np.clip(ci.high, *shape.bounds)
    return float(np.mean((low <= shape.mean) & (shape.mean <= high)))


def tables(trials: int = 4000, sizes: tuple[int, ...] = (5, 10, 11, 30)) -> str:
    """The simulation tables of the :mod:`.statistics` docstring."""
    return level_table(trials, sizes) + "\n\n" + coverage_table(trials, sizes)


def level_table(trials: int = 4000, sizes: tuple[int, ...] = (5, 10, 11, 30)) -> str:
    """Rejection rates of the tests under their nulls."""
    lines = [f"Levels at alpha = 0.05 (mean: and 0.01) ({trials} samples each; a level above "
             f"{monte_carlo_bound(0.05, trials):.3f} / {monte_carlo_bound(0.01, trials):.4f} "
             "is too high)::", "", f"    {'test and null':<40}" + "".join(
                 f"{f'n = {n}':>14}" for n in sizes)]
    for name, draw in [*NULLS.items(), ("rare: 10% at -45 (review)", RARE_NULL)]:
        cells = ["{:.3f}/{:.3f}".format(*mean_test_levels(draw, n, (0.05, 0.01), trials))
                 for n in sizes]
        lines.append(f"    {'mean, ' + name:<40}" + "".join(f"{c:>14}" for c in cells))
    for name, draw in list(NULLS.items())[:4]:
        cells = [f"{tost_level(draw, n, 0.5, 0.05, trials):.3f}" for n in sizes]
        lines.append(f"    {'tost (margin 0.5 sd), ' + name:<40}" + "".join(
            f"{c:>14}" for c in cells))
    for name, draw in SIGN_NULLS.items():
        cells = [f"{sign_test_level(draw, n, 0.05, trials):.3f}" for n in sizes]
        lines.append(f"    {'sign, ' + name:<40}" + "".join(f"{c:>14}" for c in cells))
    return "\n".join(lines)


def coverage_table(trials: int = 4000, sizes: tuple[int, ...] = (5, 10, 11, 30)) -> str:
    """Coverage (and median width) of the intervals on the mixture shapes."""
    lines = [f"Coverage of nominal 95% intervals ({trials} samples each; median width in "
             "brackets; the plain t-interval for contrast)::", "",
             f"    {'interval and shape':<40}" + "".join(f"{f'n = {n}':>16}" for n in sizes)]
    for shape in shapes():
        cells = [two_part_coverage(shape, n, trials) for n in sizes]
        lines.append(f"    {'two-part, ' + shape.name:<40}" + "".join(
            f"{f'{c:.3f} ({w:.3g})':>16}" for c, w in cells))
        lines.append(f"    {'  t-interval, ' + shape.name:<40}" + "".join(
            f"{t_coverage(shape, n, trials):>16.3f}" for n in sizes))
    arms = shapes()
    for a, b in ((arms[0], arms[1]), (arms[2], arms[3]), (arms[4], arms[4])):
        cells = [difference_coverage(a, b, n, trials) for n in sizes]
        label = f"difference, {a.name.split(',')[0]} {a.stuck:.0%} - {b.stuck:.0%} stuck"
        lines.append(f"    {label:<40}" + "".join(f"{f'{c:.3f} ({w:.3g})':>16}"
                                                    for c, w in cells))
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - prints the docstring's tables
    print(tables(int(sys.argv[1]) if len(sys.argv) > 1 else 4000))
