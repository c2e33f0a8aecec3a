"""Claims fixed before the run, held up against the seeds.

A study's config lists its claims (:class:`ClaimSpec`): what is compared (``metric``), the
two arms (``a`` against ``b``), the direction claimed, the test that matches the claim,
a margin for equivalence, and the claim's *role*:

* **confirmatory** claims form the family: their p-values are Holm-adjusted together, and
  only they get a verdict -- ``supported`` / ``contradicted`` when the adjusted p < alpha,
  else ``not decided``, said with what the design allowed (an *undecidable* claim could not
  reach p < alpha / m at this n);
* **exploratory** questions are reported apart, labelled, with unadjusted p-values.

The tests (:data:`handprop.studies.statistics.TESTS`) answer different questions:
``sign`` "most seeds go one way" (the natural reading of a claim made from single runs),
``mean`` "the mean differs" (a claim about averages), ``tost`` "within +-margin".

:func:`design_check` says before any training what each confirmatory claim can reach at
the chosen n (the smallest attainable p; the smallest effect detectable with 80% power at
the corrected level alpha / m); :func:`judge` gives the verdicts after it, with the floor
recomputed for the observed ties and a flag on any decided verdict that one reversed seed
would undo.

A *description* (``Claim`` without a comparison, e.g. "k of n seeds got 10/10") is reported
as what was seen, never judged.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ConfigError
from ..core.schema import check_type
from .statistics import (
    TESTS,
    PairedComparison,
    floor_p,
    format_p,
    holm,
    proportion_interval,
    reversed_p,
    seeds_range,
    sign_seeds_needed,
    smallest_detectable,
)

ALPHA = 0.05
ROLES = ("confirmatory", "exploratory")
# "lower"/"higher": A's metric is lower/higher than B's; "equivalent": within +-margin;
# "differ": an open question (no side claimed).
DIRECTIONS = ("lower", "higher", "equivalent", "differ")
POWER = 0.8


@dataclass(frozen=True)
class ClaimSpec:
    """One claim as a study's config states it, before any run. A study may subclass it to
    add where the claim applies (an experiment, a layer); :func:`parse_claims` reads the
    subclass's fields from TOML."""

    statement: str
    a: str  # the arm the claim is about (a rule, or a study's label such as "broken")
    b: str  # what it is compared with (an arm, or a study's constant such as "90")
    metric: str  # what is compared per seed (each study names its metrics)
    direction: str  # one of DIRECTIONS
    test: str  # one of statistics.TESTS
    margin: float = 0.0  # the equivalence margin of a "tost" claim, in the metric's units
    role: str = "confirmatory"  # one of ROLES
    source: str = ""  # where the claim comes from (the article, a paper and its table)

    def check(self, where: str) -> ClaimSpec:
        """Refuse a claim whose parts do not fit together (``where`` names it)."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            check_type(getattr(self, f.name), hints[f.name], f"{where}: {f.name}")
        for name, allowed in (("direction", DIRECTIONS), ("test", TESTS), ("role", ROLES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{where}: {name} must be one of {', '.join(allowed)}, got "
                                  f"{getattr(self, name)!r}")
        if (self.test == "tost") != (self.direction == "equivalent"):
            raise ConfigError(f"{where}: an equivalence claim takes the tost test, and tost "
                              f"only an equivalence claim (direction {self.direction!r}, "
                              f"test {self.test!r})")
        if self.test == "tost" and not (math.isfinite(self.margin) and self.margin > 0):
            raise ConfigError(f"{where}: a tost claim needs a margin > 0, got {self.margin}")
        if self.direction == "differ" and self.role == "confirmatory":
            raise ConfigError(f"{where}: an open question (direction differ) is exploratory")
        if self.a == self.b:
            raise ConfigError(f"{where}: a claim compares two different arms, got {self.a!r}")
        return self


def parse_claims(items: Any, source: str, kind: type[ClaimSpec] = ClaimSpec
                 ) -> list[ClaimSpec]:
    """The ``[[<study>.claims]]`` tables of a config as ``kind`` instances, checked."""
    if not isinstance(items, list):
        raise ConfigError(f"{source}: claims must be a list of tables, got {items!r}")
    names = {f.name for f in dataclasses.fields(kind)}
    claims = []
    for i, item in enumerate(items, start=1):
        where = f"{source}: claim {i}"
        if isinstance(item, ClaimSpec):
            claims.append(item.check(where))
            continue
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a table, got {item!r}")
        unknown = sorted(set(item) - names)
        missing = sorted(f.name for f in dataclasses.fields(kind) if f.name not in item
                         and f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING)
        if unknown or missing:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown) or '-'}; "
                              f"missing {', '.join(missing) or '-'}")
        values = {k: list(v) if isinstance(v, list) else v for k, v in item.items()}
        if isinstance(values.get("margin"), int) and not isinstance(values["margin"], bool):
            values["margin"] = float(values["margin"])
        claims.append(kind(**values).check(where))
    return claims


@dataclass
class Claim:
    """A claim evaluated on the runs: its spec, the paired comparison over seeds (None
    for a description or a claim that could not be tested), how to print the metric's
    differences (``unit``: "", "%" or "deg") and, after :func:`judge`, its verdict."""

    spec: ClaimSpec
    comparison: PairedComparison | None = None
    description: str = ""
    unit: str = ""
    label: str = ""  # where it applies, for the report ("code, fc18-20")
    family: int = 0  # confirmatory claims tested in the report (set by judge)
    adjusted_p: float = math.nan
    verdict: str = "description (no test)"
    fragile: bool = False  # decided, and one reversed seed would undo it
    reversed_adjusted_p: float = math.nan
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def confirmatory(self) -> bool:
        return self.spec.role == "confirmatory"

    @property
    def tested(self) -> bool:
        return self.comparison is not None


def judge(claims: list[Claim], alpha: float = ALPHA) -> list[Claim]:
    """Holm-adjust the confirmatory claims' p-values (one family), give every tested claim
    its verdict and flag the fragile ones. Exploratory claims keep their raw p."""
    family = [c for c in claims if c.tested and c.confirmatory]
    raw = [c.comparison.p_value for c in family]
    for i, (claim, adjusted) in enumerate(zip(family, holm(raw), strict=True)):
        claim.family, claim.adjusted_p = len(family), adjusted
        claim.verdict = _verdict(claim, alpha)
        if adjusted < alpha:
            others = raw[:i] + [reversed_p(claim.comparison, claim.spec.test)] + raw[i + 1:]
            claim.reversed_adjusted_p = holm(others)[i]
            claim.fragile = not claim.reversed_adjusted_p < alpha
    for claim in claims:
        if claim.tested and not claim.confirmatory:
            claim.family = len(family)
            claim.verdict = "exploratory: " + _outcome(claim, claim.comparison.p_value, alpha)
    return claims


def _verdict(claim: Claim, alpha: float) -> str:
    c = claim.comparison
    if claim.adjusted_p < alpha:
        return _outcome(claim, claim.adjusted_p, alpha)
    seeds = f"{c.n} seed{'' if c.n == 1 else 's'}"
    ties = (f" with {c.ties} tie{'' if c.ties == 1 else 's'}"
            if claim.spec.test == "sign" and c.ties else "")
    if c.min_p >= alpha:
        return f"undecidable with {seeds} (smallest possible p{ties} {c.min_p:.3g})"
    if c.min_p > alpha / claim.family:
        return (f"not decided with {seeds} (smallest possible p{ties} {c.min_p:.3g} is above "
                f"Holm's first threshold {alpha:g}/{claim.family})")
    return f"not decided with {seeds}"


def _outcome(claim: Claim, p: float, alpha: float) -> str:
    """What the test says at ``p``: the claim supported or contradicted, an equivalence or
    a difference shown, or nothing decided."""
    c, spec = claim.comparison, claim.spec
    if spec.direction == "equivalent":
        margin = _number(spec.margin, claim.unit, signed=False)
        return f"supported: within +-{margin}" if p < alpha else "equivalence not shown"
    side = c.most if spec.test == "sign" else c.better
    if p >= alpha or side is None:
        return "no difference shown" if spec.direction == "differ" else "not decided"
    if spec.direction == "differ":
        return f"differ: {side} {'better in most seeds' if spec.test == 'sign' else 'better'}"
    claimed = spec.a if (spec.direction == "lower") == c.lower_is_better else spec.b
    return "supported" if side == claimed else "contradicted"


# -- what a design can decide ------------------------------------------------------------

def design_check(specs: list[ClaimSpec], n: int, alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Before any run: for each confirmatory claim at n seeds, the smallest p its test can
    give (no ties yet), the smallest effect it detects with 80% power at the corrected level
    alpha / m (m confirmatory claims; Holm never asks for less), and whether it can be
    decided at all (its floor below alpha / m)."""
    family = [s for s in specs if s.role == "confirmatory"]
    level = alpha / max(len(family), 1)
    rows = []
    for spec in family:
        floor = floor_p(spec.test, n)
        detectable = smallest_detectable(spec.test, n, level, POWER)
        rows.append({"statement": spec.statement, "test": spec.test, "n": n,
                     "floor": floor, "level": level, "detectable": detectable,
                     "decidable": floor < level, "effect": effect_scale(spec.test)})
    return rows


def effect_scale(test: str) -> str:
    """The scale of :func:`smallest_detectable` for a test."""
    return {"mean": "dz (mean difference / sd of the differences)",
            "sign": "fraction of seeds going one way",
            "tost": "margin / sd of the differences, at a true difference of 0"}[test]


def design_text(rows: list[dict[str, Any]]) -> list[str]:
    """The design check as lines of text (the terminal and the report)."""
    if not rows:
        return ["no confirmatory claims"]
    level = rows[0]["level"]
    lines = [f"{len(rows)} confirmatory claims at n = {rows[0]['n']} seeds; corrected level "
             f"{ALPHA:g}/{len(rows)} = {level:.3g}:"]
    for row in rows:
        detect = ("nothing (floor above the level)" if row["detectable"] is None
                  else f"{row['detectable']:.2f} ({row['effect']})")
        mark = "" if row["decidable"] else "  UNDECIDABLE at this n"
        lines.append(f"  [{row['test']}] {row['statement']}: smallest p {row['floor']:.3g}; "
                     f"detects {detect}{mark}")
    return lines


# -- printing ------------------------------------------------------------------------------

def _number(value: float, unit: str = "", signed: bool = True) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    sign = "+" if signed else ""
    if unit == "%":
        return f"{100 * value:{sign}.1f} pp"
    if unit == "deg":
        return f"{value:{sign}.1f} deg"
    return f"{value:{sign}.4g}"


def effect(claim: Claim) -> str:
    """The effect behind a verdict, with its interval, in the test's own terms: the
    fraction of seeds that go the claimed way (sign), the mean difference (mean), or the
    mean difference and the margin (tost)."""
    c = claim.comparison
    if c is None:
        return claim.description
    a, b = claim.spec.a, claim.spec.b
    if claim.spec.test == "sign":
        return _sign_effect(claim)
    text = (f"{a} - {b}: {_number(c.mean_diff, claim.unit)} [95% CI "
            f"{_number(c.interval.low, claim.unit)}, {_number(c.interval.high, claim.unit)}]")
    if claim.spec.test == "tost":
        text += f"; margin +-{_number(claim.spec.margin, claim.unit, signed=False)}"
    return text


def _sign_effect(claim: Claim) -> str:
    """``"broken higher in 9/11 seeds (1 tied; 90% of the untied, 95% CI 55-100%)"``: the
    seeds that go the claimed way (the first arm's way for an open question)."""
    c, spec = claim.comparison, claim.spec
    if spec.direction in ("lower", "higher"):
        word = spec.direction
        toward = c.wins if (word == "lower") == c.lower_is_better else c.losses
        if _is_number(spec.b):  # against a constant: "fa below 90 in 9/10 seeds"
            word = f"{'below' if word == 'lower' else 'above'} {spec.b}"
    else:
        word, toward = "better", c.wins
    untied = c.n - c.ties
    low, high = proportion_interval(toward, untied)
    share = toward / untied if untied else math.nan
    return (f"{spec.a} {word} in {toward}/{c.n} seeds ({c.ties} tied; {_fraction(share)} of "
            f"the untied, 95% CI {_fraction(low)}-{_fraction(high)})")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _fraction(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.0f}%"


def evidence(claim: Claim) -> str:
    """Everything behind a verdict: the effect, the other view of it (wins or mean), p with
    n and floor (ties counted), Holm's adjusted p, the smallest effect this n detects, the
    seeds the effect's interval allows, and a fragility warning."""
    c = claim.comparison
    if c is None:
        return claim.description
    parts = [effect(claim)]
    if claim.spec.test == "sign":
        parts.append(f"mean {claim.spec.a} - {claim.spec.b} {_number(c.mean_diff, claim.unit)} "
                     f"[{_number(c.interval.low, claim.unit)}, "
                     f"{_number(c.interval.high, claim.unit)}]")
    else:
        parts.append(f"{claim.spec.a} better in {c.wins}/{c.n} seeds ({c.ties} tied)")
    adjusted = claim.adjusted_p if claim.confirmatory else None
    parts.append(f"{c.test.name}: " + format_p(c.p_value, c.n, c.min_p, adjusted)
                 + ("" if claim.confirmatory else ", unadjusted (exploratory)"))
    parts.append(_detectable_text(claim))
    if claim.fragile:
        parts.append(f"FRAGILE: with one seed reversed the adjusted p would be "
                     f"{claim.reversed_adjusted_p:.3g}")
    if c.dropped:
        parts.append(f"{c.dropped} pair(s) dropped (diverged)")
    if claim.description:
        parts.append(claim.description)
    return "; ".join(parts)


def _level(claim: Claim) -> float:
    return ALPHA / max(claim.family, 1) if claim.confirmatory else ALPHA


def detectable(claim: Claim) -> float | None:
    """The smallest effect the claim's test detects with 80% power at its level (alpha / m
    for a confirmatory claim, alpha otherwise), on the test's scale; for mean and tost in
    the metric's units (the standardized effect times the sd of the differences seen)."""
    c = claim.comparison
    value = smallest_detectable(claim.spec.test, c.n - c.ties if claim.spec.test == "sign"
                                else c.n, _level(claim), POWER)
    if value is None or claim.spec.test == "sign":
        return value
    sd = _sd(c)
    return None if sd is None else value * sd


def _sd(c: PairedComparison) -> float | None:
    if c.n < 2 or not math.isfinite(c.dz) or c.dz == 0:
        return None
    return abs(c.mean_diff / c.dz)


def _detectable_text(claim: Claim) -> str:
    value = detectable(claim)
    test = claim.spec.test
    if value is None:
        return f"no effect is detectable with {claim.comparison.n} seeds at this level"
    if test == "sign":
        text = f"detectable at 80% power: {100 * value:.0f}% of seeds one way"
    elif test == "mean":
        text = f"detectable at 80% power: a mean difference of {_number(value, claim.unit, False)}"
    else:
        return (f"at this spread, equivalence is shown at 80% power within "
                f"+-{_number(value, claim.unit, False)}")
    fewest, most = _seeds(claim)
    if fewest is not None:
        what = "untied seeds" if test == "sign" else "seeds"
        text += (f"; the effects the 95% CI allows need {fewest} to "
                 f"{'no finite number of' if most is None else most} {what}")
    return text


def _seeds(claim: Claim) -> tuple[int | None, int | None]:
    """The seeds a test like the claim's would need (80% power, its level) for the effects
    the effect's 95% interval allows: (fewest, most); most None: no finite number."""
    c = claim.comparison
    if claim.spec.test == "sign":
        low, high = c.win_interval
        if math.isnan(low):
            return None, None
        ends = sorted((low, high), key=lambda q: -abs(q - 0.5))
        fewest = sign_seeds_needed(ends[0], power=POWER, alpha=_level(claim))
        most = (None if low <= 0.5 <= high else
                sign_seeds_needed(ends[1], power=POWER, alpha=_level(claim)))
        return fewest, most
    sd = _sd(c)
    if sd is None:
        return None, None
    return seeds_range((c.interval.low, c.interval.high), sd, power=POWER,
                       alpha=_level(claim))


def as_record(claim: Claim) -> dict[str, Any]:
    """A claim as JSON-able data (for summary.json)."""
    spec = dataclasses.asdict(claim.spec)
    out: dict[str, Any] = {**spec, "label": claim.label, "verdict": claim.verdict,
                           "effect": effect(claim), "evidence": evidence(claim),
                           **claim.extra}
    c = claim.comparison
    if c is None:
        return out
    fewest, most = _seeds(claim)
    out.update({"labels": list(c.labels), "n": c.n, "dropped": c.dropped, "mean_a": c.mean_a,
                "mean_b": c.mean_b, "mean_diff": c.mean_diff,
                "ci": [c.interval.low, c.interval.high], "ci_method": c.interval.method,
                "p_value": c.p_value, "min_p": c.min_p, "test_name": c.test.name,
                "adjusted_p": claim.adjusted_p if claim.confirmatory else None,
                "family": claim.family, "wins": c.wins, "losses": c.losses, "ties": c.ties,
                "win_fraction": c.win_fraction, "win_ci": list(c.win_interval), "dz": c.dz,
                "detectable": detectable(claim), "seeds_needed_range": [fewest, most],
                "fragile": claim.fragile,
                "reversed_adjusted_p": (claim.reversed_adjusted_p
                                        if math.isfinite(claim.reversed_adjusted_p) else None),
                "differences": list(c.differences)})
    return out
