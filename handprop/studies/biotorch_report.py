"""The statistics, report and figures of ``handprop biotorch`` (:mod:`.biotorch`).

The unit of replication is the trained network: one number per rule and seed (its
test error at the epoch its validation error picked), intervals over seeds, rules paired
by seed. Confirmatory claims come from the config, fixed before the run, and form the
Holm family; every other rule-vs-exact comparison is exploratory and unadjusted.

Marked ``STATS-LOCAL``: small statistics this study needs that
:mod:`.statistics` does not have yet (TOST equivalence, the tie-corrected floor of the
sign-flip test, the smallest detectable effect); they move there when the statistics
rewrite (issue 17) provides them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from .biotorch import (
    BIOTORCH_LENET,
    BIOTORCH_SOURCE,
    PROTOCOL,
    BiotorchConfig,
    active_claims,
    parse_claim,
)
from .records import final_alignment
from .statistics import holm, mean_interval, paired_comparison, power_at

ALPHA = 0.05
POWER = 0.8


# -- STATS-LOCAL: to be replaced by issue 17's statistics once merged ---------------------

def tost_paired(differences: np.ndarray, margin: float) -> float:
    """STATS-LOCAL. Two one-sided paired t-tests (TOST) of |mean difference| < margin
    (``scipy.stats.ttest_1samp``): the larger of the two one-sided p-values; NaN with
    fewer than 2 differences or none of them spread."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2 or np.all(d == d[0]):
        return 0.0 if d.size >= 2 and abs(d[0]) < margin else math.nan
    above = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    below = stats.ttest_1samp(d, margin, alternative="less").pvalue
    return float(max(above, below))


def t_interval(differences: np.ndarray, level: float) -> tuple[float, float]:
    """STATS-LOCAL. The t-interval of a mean (TOST at alpha is the 1 - 2 alpha interval
    inside the margins)."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        return math.nan, math.nan
    sem = stats.sem(d)
    if sem == 0:
        return float(d.mean()), float(d.mean())
    low, high = stats.t.interval(level, d.size - 1, loc=d.mean(), scale=sem)
    return float(low), float(high)


def sign_flip_floor(differences: np.ndarray) -> float:
    """STATS-LOCAL. The smallest two-sided p the exact sign-flip test can give: a zero
    difference flips to itself, so only 2^(n - ties) sign patterns differ: 2 / 2^(n - ties)."""
    d = np.asarray(differences, dtype=np.float64)
    untied = int(np.sum(d != 0))
    return min(1.0, 2.0 / 2.0**untied)


def smallest_detectable_dz(n: int, alpha: float, power: float = POWER) -> float:
    """STATS-LOCAL. The standardized effect (mean / sd of the differences) a two-sided
    paired t-test at ``alpha`` detects with ``power`` at n seeds (scipy's noncentral t via
    :func:`.statistics.power_at`); inf when n cannot reach it."""
    if n < 2 or power_at(50.0, n, alpha=alpha) < power:
        return math.inf
    return float(_bisect(lambda dz: power_at(dz, n, alpha=alpha) - power, 1e-6, 50.0))


def _bisect(f: Any, low: float, high: float) -> float:
    from scipy.optimize import brentq

    return brentq(f, low, high, xtol=1e-6)


# -- per rule ------------------------------------------------------------------------

def _values(runs: list[dict], key: str) -> dict[int, float]:
    return {r["seed"]: (math.nan if r.get(key) is None else float(r[key])) for r in runs}


def _mean_ci(values: list[float]) -> dict[str, Any]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": None, "ci": None, "ci_method": None, "n": 0}
    interval = mean_interval(finite, bounds=(0.0, 100.0))
    ci = None if math.isnan(interval.low) else [interval.low, interval.high]
    return {"mean": float(np.mean(finite)), "ci": ci, "ci_method": interval.method,
            "n": len(finite)}


def reference_column(config: BiotorchConfig) -> str | None:
    """BioTorch's column to quote: Fashion-MNIST for its files, MNIST for IDX folders
    (users' MNIST files), None for anything else."""
    if config.data.startswith("fashion-mnist"):
        return "fashion-mnist"
    return "mnist" if config.data.startswith("idx:") else None


def summarize(records: dict[str, list[dict]], config: BiotorchConfig) -> dict[str, Any]:
    """Per rule: test error at the validation-picked epoch (honest), at the best test
    epoch (BioTorch's selection, optimistic) and at the last epoch, each per seed and as
    a mean with its 95% interval over seeds; BioTorch's number; the final alignment."""
    column = reference_column(config)
    summary: dict[str, Any] = {}
    for rule, runs in records.items():
        row: dict[str, Any] = {"runs": len(runs),
                               "diverged": sum(1 for r in runs if r.get("diverged"))}
        for name, key in (("honest", "test_error_pct_selected"),
                          ("optimistic", "test_error_pct_best"),
                          ("final", "test_error_pct_final")):
            per_seed = _values(runs, key)
            row[name] = {"per_seed": per_seed, **_mean_ci(list(per_seed.values()))}
        row["selected_epoch"] = {r["seed"]: r.get("selected_epoch") for r in runs}
        row["biotorch"] = BIOTORCH_LENET.get(column, {}).get(rule) if column else None
        row["alignment"] = final_alignment(runs, "gradient")
        row["epoch_seconds_median"] = _median_epoch_seconds(runs)
        row["run_seconds"] = float(sum(s for r in runs for s in (r.get("epoch_seconds") or [])
                                       if s is not None))
        row["engines"] = sorted({r.get("engine") for r in runs if r.get("engine")})
        summary[rule] = row
    return summary


def _median_epoch_seconds(runs: list[dict]) -> float | None:
    seconds = [s for r in runs for s in (r.get("epoch_seconds") or []) if s is not None]
    return float(np.median(seconds)) if seconds else None


# -- claims ----------------------------------------------------------------------------

def _paired(records: dict[str, list[dict]], a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    """Honest test errors of rules a and b on the seeds both finished, paired by seed."""
    va = _values(records.get(a, []), "test_error_pct_selected")
    vb = _values(records.get(b, []), "test_error_pct_selected")
    seeds = sorted(s for s in set(va) & set(vb)
                   if math.isfinite(va[s]) and math.isfinite(vb[s]))
    return np.array([va[s] for s in seeds]), np.array([vb[s] for s in seeds])


def test_claim(records: dict[str, list[dict]], text: str, rules: list[str],
               margin: float) -> dict[str, Any]:
    """One claim's test: "A > B" by the exact sign-flip test of the paired mean
    difference (two-sided; its direction read from the mean), "A ~ B" by TOST within
    +-margin (paired t)."""
    a, form, b = parse_claim(text, rules)
    va, vb = _paired(records, a, b)
    d = va - vb
    row: dict[str, Any] = {"claim": text, "a": a, "b": b, "form": form, "n": int(d.size),
                           "mean_diff_pp": float(d.mean()) if d.size else None,
                           "sd_diff_pp": float(d.std(ddof=1)) if d.size > 1 else None,
                           "a_higher": int(np.sum(d > 0)), "b_higher": int(np.sum(d < 0)),
                           "ties": int(np.sum(d == 0))}
    if form == ">":
        comparison = paired_comparison(va, vb, lower_is_better=True, labels=(a, b))
        row.update(test="exact sign-flip test (two-sided)", p=comparison.p_value,
                   floor=sign_flip_floor(d),
                   ci=[comparison.interval.low, comparison.interval.high],
                   ci_level=0.95, ci_method=comparison.interval.method)
    else:
        row.update(test=f"TOST, paired t, margin +-{margin:g} pp", p=tost_paired(d, margin),
                   floor=0.0 if d.size >= 2 else math.nan,
                   ci=list(t_interval(d, 1 - 2 * ALPHA)), ci_level=1 - 2 * ALPHA,
                   ci_method="t", margin=margin)
    return row


def design_notice(config: BiotorchConfig) -> list[str]:
    """Before training: what the chosen seeds can decide. The exact sign-flip test's
    smallest p is 2 / 2^n (fewer with ties), against Holm's thresholds alpha / k to alpha;
    TOST (a t-test) can be decided from 2 seeds, its power set by the spread."""
    kept, _ = active_claims(config)
    k, n = len(kept), config.seeds
    lines = []
    for text in kept:
        if text.split()[1] == "~":
            continue
        floor = 2.0 / 2.0**n
        first = math.ceil(math.log2(2 / ALPHA))
        every = math.ceil(math.log2(2 * k / ALPHA))
        if floor >= ALPHA / k:
            lines.append(f"design check: {text!r} (exact sign-flip test) can reach p = "
                         f"{floor:.3g} at best with {n} seeds: "
                         + ("it cannot be decided" if floor >= ALPHA else
                            "decided only if the other claims are")
                         + f" ({first} seeds reach 0.05, {every} reach 0.05/{k})")
    return lines


def _verdict(row: dict[str, Any], adjusted: float) -> str:
    n = row["n"]
    if math.isnan(adjusted) or adjusted >= ALPHA:
        return f"not resolved with {n} seed{'s' if n != 1 else ''}"
    if row["form"] == "~":
        return f"supported: within +-{row['margin']:g} pp"
    return "supported" if row["mean_diff_pp"] > 0 else "contradicted"


def _design(row: dict[str, Any], family: int) -> dict[str, Any]:
    """Can the claim be decided at this n? The test's smallest p against Holm's smallest
    and largest thresholds, and the smallest effect a paired t-test at alpha / family
    detects with 80% power, in pp (from the differences' sd)."""
    floor, n = row["floor"], row["n"]
    if math.isnan(floor) or floor >= ALPHA:
        decidable = "no: its smallest p is not below 0.05 at this n"
    elif floor > ALPHA / family:
        decidable = "only if the other claims are decided first (smallest p above 0.05/k)"
    else:
        decidable = "yes"
    dz = smallest_detectable_dz(n, ALPHA / family)
    sd = row.get("sd_diff_pp")
    effect = dz * sd if sd is not None and math.isfinite(dz) else None
    return {"decidable": decidable, "smallest_detectable_dz": dz,
            "smallest_detectable_pp": effect}


def claims(records: dict[str, list[dict]], config: BiotorchConfig) -> dict[str, Any]:
    """The confirmatory family (config.confirmatory, Holm-adjusted together) and the
    exploratory comparisons of every other rule with exact (unadjusted)."""
    kept, dropped = active_claims(config)
    family = [test_claim(records, text, config.rules, config.margin) for text in kept]
    adjusted = holm([row["p"] for row in family]) if family else []
    for row, adj in zip(family, adjusted, strict=True):
        row.update(adjusted_p=adj, verdict=_verdict(row, adj), **_design(row, len(family)))
    stated = {(row["a"], row["b"]) for row in family}
    exploratory = []
    if "exact" in config.rules:
        for rule in config.rules:
            if rule == "exact" or (rule, "exact") in stated:
                continue
            for form in (">", "~"):
                row = test_claim(records, f"{rule} {form} exact", config.rules, config.margin)
                row["verdict"] = ("p < 0.05 (unadjusted)" if row["p"] < ALPHA
                                  else "p >= 0.05 (unadjusted)")
                exploratory.append(row)
    return {"alpha": ALPHA, "source": "the study's config, fixed before the run",
            "confirmatory": family, "dropped": dropped, "exploratory": exploratory,
            "margin_pp": config.margin, "exact_layers": exact_layers(records)}


# -- figures ---------------------------------------------------------------------------

def _grid(plt: Any, panels: int, width: float = 3.6, height: float = 2.8) -> tuple[Any, list]:
    cols = min(panels, 4) or 1
    rows = -(-panels // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[panels:]:
        ax.axis("off")
    return fig, flat[:panels]


def _finish(plt: Any, fig: Any, path: Path, title: str) -> Path:
    from ..core.io import save_figure

    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    saved = save_figure(fig, path, dpi=100)
    plt.close(fig)
    return saved


def _chance(records: dict[str, list[dict]]) -> float | None:
    """The error of guessing (%), from the number of classes the records name."""
    classes = {r.get("classes") for runs in records.values() for r in runs} - {None}
    return 100 * (1 - 1 / classes.pop()) if len(classes) == 1 else None


def error_figure(path: Path, config: BiotorchConfig, records: dict[str, list[dict]],
                 summary: dict[str, Any]) -> Path:
    """Every seed's honest test error (dots), its mean and 95% interval (bar), the
    optimistic selection (grey rings) and BioTorch's single number (red diamond)."""
    from ..pictures.plots import color, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(summary) + 2.5, 3.6))
    for i, (rule, row) in enumerate(summary.items()):
        honest = [v for v in row["honest"]["per_seed"].values() if math.isfinite(v)]
        optimistic = [v for v in row["optimistic"]["per_seed"].values() if math.isfinite(v)]
        jitter = np.linspace(-0.12, 0.12, len(honest)) if len(honest) > 1 else [0.0]
        ax.scatter(i - 0.15 + np.asarray(jitter[:len(honest)]), honest, s=14,
                   color=color(rule, i), zorder=3, label="seed (validation-picked epoch)"
                   if i == 0 else None)
        ax.scatter(np.full(len(optimistic), i + 0.22), optimistic, s=14, facecolors="none",
                   edgecolors="grey", label="seed, best test epoch (optimistic)"
                   if i == 0 else None)
        if row["honest"]["ci"]:
            low, high = row["honest"]["ci"]
            ax.errorbar(i, row["honest"]["mean"], yerr=[[row["honest"]["mean"] - low],
                        [high - row["honest"]["mean"]]], fmt="_", color="black", capsize=4,
                        label="mean, 95% CI over seeds" if i == 0 else None)
        if row["biotorch"] is not None:
            ax.scatter([i + 0.38], [row["biotorch"]], marker="D", color="tab:red", s=22,
                       label="BioTorch (1 seed, optimistic)" if i == 0 else None)
    chance = _chance(records)
    if chance is not None:
        ax.axhline(chance, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xticks(range(len(summary)), list(summary), fontsize=8)
    ax.set_ylabel("test error (%)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _finish(plt, fig, path, f"Test error per rule, {config.seeds} seeds, "
                                   f"{config.epochs} epochs")


def curve_figure(path: Path, config: BiotorchConfig, records: dict[str, list[dict]]) -> Path:
    """One panel per rule: every seed's test error (solid) and validation error (dashed)
    per epoch, a dot at the epoch validation picked."""
    from ..pictures.plots import color, pyplot

    plt = pyplot()
    fig, axes = _grid(plt, len(records))
    for ax, (i, (rule, runs)) in zip(axes, enumerate(records.items()), strict=True):
        for run in runs:
            test = [np.nan if v is None else v for v in run["test_error_pct"]]
            val = [np.nan if v is None else v for v in run["val_error_pct"]]
            epochs = np.arange(1, len(test) + 1)
            ax.plot(epochs, test, color=color(rule, i), lw=1)
            ax.plot(epochs, val, color=color(rule, i), lw=0.8, ls="--", alpha=0.6)
            if run.get("selected_epoch"):
                ax.plot(run["selected_epoch"], run["test_error_pct_selected"], "o",
                        color=color(rule, i), ms=3)
        chance = _chance(records)
        if chance is not None:
            ax.axhline(chance, color="grey", lw=0.8, ls="--")
        ax.set_title(rule, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("error (%)", fontsize=8)
        ax.grid(alpha=0.3)
    return _finish(plt, fig, path, "Test (solid) and validation (dashed) error per epoch, "
                                   "one line per seed; dot: the validation-picked epoch")


def exact_layers(records: dict[str, list[dict]]) -> list[str]:
    """Weight arrays whose update is the exact gradient under every rule (angle 0, up to
    rounding, at every measurement: e.g. the output layer, which all these rules train
    exactly)."""
    angles: dict[str, list[float]] = {}
    for runs in records.values():
        for run in runs:
            for layer, metrics in ((run.get("alignment") or {}).get("gradient") or {}).items():
                angles.setdefault(layer, []).extend(
                    v for v in metrics.get("angle_deg", []) if v is not None)
    # (measured in float32, an exact update's angle comes out at most a few hundredths)
    return [layer for layer, values in angles.items() if values and max(values) < 0.1]


def alignment_figure(path: Path, records: dict[str, list[dict]]) -> Path | None:
    """One panel per weight array: every seed's angle between the rule's update and the
    exact gradient per epoch, one colour per rule."""
    from ..pictures.plots import color, pyplot

    exact = set(exact_layers(records))
    layers = [layer for layer in dict.fromkeys(
        layer for runs in records.values() for r in runs
        for layer in ((r.get("alignment") or {}).get("gradient") or {})) if layer not in exact]
    if not layers:
        return None
    plt = pyplot()
    fig, axes = _grid(plt, len(layers))
    for ax, layer in zip(axes, layers, strict=True):
        for i, (rule, runs) in enumerate(records.items()):
            for k, run in enumerate(runs):
                angles = ((run.get("alignment") or {}).get("gradient") or {}).get(layer)
                if not angles:
                    continue
                ys = [np.nan if v is None else v for v in angles["angle_deg"]]
                ax.plot(run["alignment_epochs"][:len(ys)], ys, color=color(rule, i), lw=0.9,
                        label=rule if k == 0 else None)
        ax.axhline(90, color="grey", lw=0.8, ls="--")
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("angle to exact gradient (deg)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _finish(plt, fig, path, "Angle between each rule's update and the exact gradient, "
                                   "one line per seed")


def write_figures(out: Path, config: BiotorchConfig, records: dict[str, list[dict]],
                  summary: dict[str, Any]) -> list[Path]:
    figures = [error_figure(out / "test_error.png", config, records, summary),
               curve_figure(out / "curves.png", config, records),
               alignment_figure(out / "alignment.png", records)]
    return [f for f in figures if f is not None]


# -- the report ------------------------------------------------------------------------

def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.2g}" if value >= 0.001 else f"{value:.1e}"


def _ci(block: dict[str, Any]) -> str:
    mean = _num(block["mean"])
    return mean if not block["ci"] else f"{mean} [{_num(block['ci'][0])}, {_num(block['ci'][1])}]"


def profile_line(config: BiotorchConfig, meta: dict[str, Any]) -> str:
    images = meta.get("images", {})
    full = (config.epochs >= 100 and config.train_images == 0 and config.seeds >= 5)
    text = (f"{config.seeds} seed{'s' if config.seeds != 1 else ''} x {config.epochs} epochs, "
            f"{images.get('train', '?')} training / {images.get('validation', '?')} validation "
            f"/ {images.get('test', '?')} test images, {config.dtype}, batch "
            f"{config.batch_size}, schedule {config.schedule}")
    if full:
        return f"Profile: {text} -- BioTorch's protocol, with seeds."
    return (f"Profile: {text}. **A reduced run**: BioTorch trains 100 epochs on all the "
            "training images, so its errors are lower than these; compare rules with each "
            "other here, and with BioTorch only through the full protocol.")


def summary_table(summary: dict[str, Any]) -> list[str]:
    lines = ["| rule | test error %, validation-picked epoch: mean [95% CI] | seeds | "
             "BioTorch (1 seed) | best test epoch (optimistic) | last epoch |",
             "|---|---|---|---|---|---|"]
    for rule, row in summary.items():
        diverged = f" ({row['diverged']} diverged)" if row["diverged"] else ""
        lines.append(f"| {rule} | {_ci(row['honest'])} | {row['honest']['n']}{diverged} | "
                     f"{_num(row['biotorch'])} | {_ci(row['optimistic'])} | "
                     f"{_ci(row['final'])} |")
    return lines


def claims_table(rows: list[dict[str, Any]], adjusted: bool = True) -> list[str]:
    head = "| claim | n | mean difference, pp [CI] | test | p |"
    head += " Holm-adjusted p | verdict |" if adjusted else " verdict |"
    lines = [head, "|---" * (7 if adjusted else 6) + "|"]
    for row in rows:
        ci = row.get("ci") or [math.nan, math.nan]
        level = f"{100 * row['ci_level']:.0f}%"
        cells = [row["claim"], str(row["n"]),
                 f"{_num(row['mean_diff_pp'])} [{_num(ci[0])}, {_num(ci[1])}] ({level})",
                 row["test"], _p(row["p"])]
        if adjusted:
            cells.append(_p(row["adjusted_p"]))
        cells.append(row["verdict"])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def findings_lines(summary: dict[str, Any], findings: dict[str, Any]) -> list[str]:
    """The two or three things to take away, in plain words."""
    lines = []
    gaps = [row["honest"]["per_seed"][s] - row["optimistic"]["per_seed"][s]
            for row in summary.values() for s in row["honest"]["per_seed"]
            if math.isfinite(row["honest"]["per_seed"][s])
            and math.isfinite(row["optimistic"]["per_seed"].get(s, math.nan))]
    if gaps:
        lines.append(f"- **Selection.** Picking each run's epoch on the test images "
                     f"(BioTorch's selection) reports {np.mean(gaps):.2f} pp less error than "
                     f"picking it on held-out validation images (mean over {len(gaps)} "
                     f"runs; at most {np.max(gaps):.2f} pp).")
    ranked = sorted((row["honest"]["mean"], rule) for rule, row in summary.items()
                    if row["honest"]["mean"] is not None)
    if ranked:
        lines.append(f"- Lowest mean test error: {ranked[0][1]} ({ranked[0][0]:.2f}%); "
                     f"highest: {ranked[-1][1]} ({ranked[-1][0]:.2f}%).")
    blocked = [row["claim"] for row in findings["confirmatory"]
               if row.get("decidable", "").startswith("no")]
    if blocked:
        lines.append(f"- With these seeds {', '.join(blocked)} cannot be decided at all: the "
                     "test's smallest p is not below 0.05 (see the design check).")
    decided = [row for row in findings["confirmatory"] if not row["verdict"].startswith("not")]
    lines.append(f"- {len(decided)} of {len(findings['confirmatory'])} confirmatory claims "
                 "decided at alpha 0.05 after Holm's correction"
                 + (": " + "; ".join(f"{r['claim']}: {r['verdict']}" for r in decided)
                    if decided else "."))
    return lines


def _design_lines(findings: dict[str, Any]) -> list[str]:
    family = findings["confirmatory"]
    lines = ["| claim | n | smallest p the test can give | decidable at this n | smallest "
             "effect detectable (80% power, paired t at 0.05/k), pp |", "|---|---|---|---|---|"]
    for row in family:
        effect = row.get("smallest_detectable_pp")
        dz = row.get("smallest_detectable_dz", math.inf)
        size = (f"{effect:.2f} (dz {dz:.2f})" if effect is not None
                else "none at this n" if not math.isfinite(dz) else f"dz {dz:.2f}")
        floor = "any (a t-test)" if row["form"] == "~" else _p(row["floor"])
        if row["form"] == "~":
            size = "(equivalence: the 90% interval against the margin)"
        lines.append(f"| {row['claim']} | {row['n']} | {floor} | "
                     f"{row.get('decidable', '-')} | {size} |")
    return lines


def _per_seed_lines(summary: dict[str, Any]) -> list[str]:
    seeds = sorted({s for row in summary.values() for s in row["honest"]["per_seed"]})
    lines = ["| rule | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---" * (len(seeds) + 1) + "|"]
    for rule, row in summary.items():
        cells = [f"{_num(row['honest']['per_seed'].get(s))} (ep "
                 f"{row['selected_epoch'].get(s) or '-'})" for s in seeds]
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return lines


def _alignment_lines(summary: dict[str, Any], exact: list[str]) -> list[str]:
    layers = [layer for layer in dict.fromkeys(
        layer for row in summary.values() for layer in row["alignment"]) if layer not in exact]
    if not layers:
        return ["(no rule other than exact)"]
    lines = ["| rule | " + " | ".join(layers) + " |", "|---" * (len(layers) + 1) + "|"]
    for rule, row in summary.items():
        if row["alignment"]:
            lines.append(f"| {rule} | " + " | ".join(
                _num(row["alignment"].get(layer, {}).get("angle_deg_final_mean"), 1)
                for layer in layers) + " |")
    return lines


def _protocol_lines(config: BiotorchConfig) -> list[str]:
    return [
        f"BioTorch ({BIOTORCH_SOURCE}): {PROTOCOL}.",
        "",
        "Here, for every seed: the same network (`lenet-biotorch`, Glorot-uniform weights, "
        "zero biases, as BioTorch's `init: xavier`), the same preprocessing (bilinear resize "
        f"to {config.resize}x{config.resize} rounded to 8 bits as PIL does, then (x/255 - "
        f"{config.pixel_mean}) / {config.pixel_std}), SGD with momentum {config.momentum}, "
        f"weight decay {config.weight_decay}, batch {config.batch_size}, schedule "
        f"`{config.schedule}`; initial learning rates {', '.join(config.learning_rates)}. "
        f"{config.validation_images} validation images are drawn (stratified) from the "
        "training images with each seed; the epoch with the lowest validation error is "
        "the run's result, read on the test images.",
        "",
        "Choices where BioTorch is silent or differs: the initial learning rate of its "
        "MNIST runs is not stated (these are its CIFAR-10 LeNet SGD settings); "
        "`dfa-biotorch` is its DFA (the error replaces each layer's input gradient, after "
        "pooling), but its DFA layers' biases start at 1 and here at 0; handprop's momentum "
        "is v <- 0.9 v + lr g, w <- w - v, PyTorch's before a learning-rate drop; the last, "
        "short batch of an epoch is kept (BioTorch drops it); kp's feedback weights learn "
        "by plain SGD with kp's learning rate and the weight decay (kp is not in BioTorch).",
    ]


def markdown(config: BiotorchConfig, summary: dict[str, Any], findings: dict[str, Any],
             meta: dict[str, Any], figures: list[Path]) -> str:
    column = reference_column(config)
    title = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST-format files"}.get(column,
                                                                              config.data)
    out = [f"# BioTorch's LeNet table with seeds: {title}", "", profile_line(config, meta), ""]
    if meta.get("interrupted"):
        out += [f"**Incomplete**: {meta['finished_jobs']} of {meta['jobs']} runs finished "
                f"({meta.get('stopped_by')}); the numbers cover those.", ""]
    out += summary_table(summary) + [""]
    out += [f"**Claims fixed before the run** ({len(findings['confirmatory'])}, Holm-adjusted "
            f"together; from {findings['source']}):", ""]
    out += claims_table(findings["confirmatory"]) + [""]
    if findings["dropped"]:
        out += [f"(Not tested, a rule they name was not run: {'; '.join(findings['dropped'])}.)",
                ""]
    out += findings_lines(summary, findings)
    out += ["", "---", "", "## Protocol", ""] + _protocol_lines(config)
    out += ["", "## Design check", "", "Whether each claim can be decided with these seeds "
            "(k = the claims in the family):", ""] + _design_lines(findings)
    out += ["", "## Exploratory (every rule against exact; unadjusted, not claims)", ""]
    out += claims_table(findings["exploratory"], adjusted=False)
    out += ["", "## Every seed (test error %, validation-picked epoch)", ""]
    out += _per_seed_lines(summary)
    out += ["", "## Alignment", "", "Angle (degrees) between each rule's weight update and "
            "the exact gradient after the last epoch, mean over seeds (per-epoch curves in "
            "the figure):", ""] + _alignment_lines(summary, findings["exact_layers"])
    if findings["exact_layers"]:
        out += ["", f"({', '.join(findings['exact_layers'])}: angle 0 under every rule at "
                "every measurement -- each rule trains it with the exact gradient -- so it is "
                "left out.)"]
    seconds = [row["epoch_seconds_median"] for row in summary.values()
               if row["epoch_seconds_median"]]
    engines = sorted({e for row in summary.values() for e in row["engines"]})
    total = sum(row["run_seconds"] for row in summary.values())
    out += ["", "## Time", "", f"This invocation: {meta.get('seconds', 0):.0f} s for "
            f"{meta.get('jobs')} runs ({meta.get('skipped_jobs', 0)} already done). In the "
            f"records: {total:.0f} s of epochs (training and evaluation, summed over runs); "
            f"median epoch {_num(float(np.median(seconds)) if seconds else None, 1)} s; "
            f"engine: {', '.join(engines) or '-'}.", ""]
    out += [f"![{f.stem}]({f.name})" for f in figures]
    return "\n".join(out) + "\n"


def terminal_table(config: BiotorchConfig, summary: dict[str, Any], findings: dict[str, Any],
                   meta: dict[str, Any]) -> str:
    lines = [profile_line(config, meta).replace("**", ""), "",
             f"{'rule':<14}{'test error % [95% CI]':<26}{'seeds':>6}{'BioTorch':>10}"]
    for rule, row in summary.items():
        lines.append(f"{rule:<14}{_ci(row['honest']):<26}{row['honest']['n']:>6}"
                     f"{_num(row['biotorch']):>10}")
    lines.append("")
    for row in findings["confirmatory"]:
        lines.append(f"{row['claim']:<22} {row['verdict']} (adjusted p {_p(row['adjusted_p'])})")
    return "\n".join(lines)
