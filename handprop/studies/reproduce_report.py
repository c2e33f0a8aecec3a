"""The reproduce study's findings and outputs: the article's claims judged, PNG figures,
report.md and the terminal summary (the skeleton in :mod:`.study` writes them).

Each of the article's claims (seed-spec section 5) is put next to what the runs say,
with paired statistics over seeds: the mean difference (broken minus original) with a
95% bootstrap interval and a sign-flip permutation test, and for the pooled held-out
images an exact McNemar test.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.article import ARTICLE
from .records import alignment_matrices, cost_matrix
from .stats import bootstrap_ci, mcnemar_test, paired_summary

if TYPE_CHECKING:
    from .reproduce import Experiment, Records, ReproduceConfig

BROKEN, ORIGINAL = "seed-broken", "seed-original"


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}g}"


def _deg(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _by_run(records: list[dict]) -> dict[int, dict]:
    return {r["run"]: r for r in records}


def _paired_costs(records, experiment: str, epoch: int | None):
    """Cost of broken and original at ``epoch`` (1-based; None = last), paired by seed."""
    broken = _by_run(records.get((experiment, BROKEN, "article"), []))
    original = _by_run(records.get((experiment, ORIGINAL, "article"), []))
    runs = sorted(set(broken) & set(original))

    def cost(record):
        values = record["cost"]
        if not values:
            return math.nan
        value = values[-1] if epoch is None else (values[epoch - 1] if epoch <= len(values)
                                                  else None)
        return math.nan if value is None else value

    return (np.array([cost(broken[r]) for r in runs]),
            np.array([cost(original[r]) for r in runs]))


def _test_accuracies(records, experiment: str, rule: str) -> np.ndarray:
    return np.array([r["test_accuracy"] if r["test_accuracy"] is not None else math.nan
                     for r in records.get((experiment, rule, "article"), [])])


def _heldout(records, experiment: str, rule: str) -> dict[int, bool]:
    """Held-out (cross-validation) correctness by image index."""
    out: dict[int, bool] = {}
    for record in records.get((experiment, rule, "cv"), []):
        if record["test_correct"] is None:
            continue
        for index, correct in zip(record["test_index"], record["test_correct"], strict=True):
            out[index] = bool(correct)
    return out


def _cost_claim(records, experiment, epoch, direction) -> dict[str, Any]:
    when = f"epoch {epoch}" if epoch else "the last epoch"
    statement = f"broken net has the {direction} cost at {when}"
    runs = records.get((experiment, BROKEN, "article"), [])
    epochs = runs[0]["config"]["epochs"] if runs else 0
    if epoch is not None and epoch > epochs:
        return {"statement": statement, "data": "",
                "verdict": f"not tested: the runs have {epochs} epochs"}
    broken, original = _paired_costs(records, experiment, epoch)
    stats = paired_summary(broken, original)
    lower = stats["ci_high"] < 0 and stats["p_value"] < 0.05
    higher = stats["ci_low"] > 0 and stats["p_value"] < 0.05
    claimed = lower if direction == "lower" else higher
    opposite = higher if direction == "lower" else lower
    verdict = "supported" if claimed else ("contradicted" if opposite else "not supported (no "
                                           "clear difference)")
    data = (f"broken - original cost at {when}: mean {_fmt(stats['mean_diff'])} "
            f"[95% CI {_fmt(stats['ci_low'])}, {_fmt(stats['ci_high'])}], sign-flip p = "
            f"{_fmt(stats['p_value'], 2)}; broken lower in {stats['a_lower']}/{stats['n']} seeds "
            f"(means: broken {_fmt(stats['mean_a'])}, original {_fmt(stats['mean_b'])})")
    return {"statement": statement, "data": data, "verdict": verdict, "stats": stats}


def _accuracy_claim(records, experiment, rule, expect_all_correct: bool) -> dict[str, Any]:
    accuracy = _test_accuracies(records, experiment, rule)
    finite = accuracy[np.isfinite(accuracy)]
    all_correct = int(np.sum(finite == 1.0))
    low, high = bootstrap_ci(finite)
    heldout = _heldout(records, experiment, rule)
    held = np.mean(list(heldout.values())) if heldout else None
    name = "broken" if rule == BROKEN else "original"
    if expect_all_correct:
        statement = f"{name} net gets 100% of the 10 test images"
        verdict = ("supported" if finite.size and all_correct == finite.size else
                   f"partly: {all_correct}/{finite.size} seeds at 100%")
    else:
        statement = f"{name} net gets some of the 10 test images wrong"
        wrong = int(np.sum(finite < 1.0))
        verdict = (f"supported in {wrong}/{finite.size} seeds" if wrong else
                   f"not supported: 100% in all {finite.size} seeds")
    data = (f"10-image accuracy mean {_pct(float(finite.mean()) if finite.size else None)} "
            f"[95% CI {_pct(low)}, {_pct(high)}], 100% in {all_correct}/{finite.size} seeds; "
            f"held-out CV accuracy {_pct(held)} over {len(heldout)} images")
    return {"statement": statement, "data": data, "verdict": verdict}


def _heldout_comparison(records, experiment) -> dict[str, Any] | None:
    broken, original = _heldout(records, experiment, BROKEN), _heldout(records, experiment,
                                                                        ORIGINAL)
    common = sorted(set(broken) & set(original))
    if not common:
        return None
    test = mcnemar_test([broken[i] for i in common], [original[i] for i in common])
    return {"images": len(common), "broken_accuracy": float(np.mean([broken[i] for i in common])),
            "original_accuracy": float(np.mean([original[i] for i in common])), **test}


def evaluate_claims(records: Records, config: ReproduceConfig
                    ) -> dict[str, list[dict[str, Any]]]:
    """The article's claims, by experiment (matched on the dense widths)."""
    claims: dict[str, list[dict[str, Any]]] = {}
    for experiment in config.experiments:
        name, fc = experiment.name, tuple(experiment.fc)
        items: list[dict[str, Any]] = []
        if BROKEN not in config.rules or ORIGINAL not in config.rules:
            claims[name] = [{"statement": experiment.claim or "the article's claims",
                             "data": "", "verdict": f"not tested: needs the rules {BROKEN} and "
                                                    f"{ORIGINAL}"}]
            continue
        if fc == (18, 20):
            items.append(_accuracy_claim(records, name, BROKEN, True))
            items.append(_accuracy_claim(records, name, ORIGINAL, True))
            items.append(_cost_claim(records, name, 250, "lower"))
        elif fc == (48, 56):
            items.append(_cost_claim(records, name, None, "higher"))
            items.append(_accuracy_claim(records, name, BROKEN, True))
            items.append(_cost_claim(records, name, None, "higher") | {
                "statement": "original net has the lower cost (same comparison)"})
            items.append(_accuracy_claim(records, name, ORIGINAL, False))
        elif fc == ARTICLE.fc:  # the widths the article did not record: our default
            items.append(_accuracy_claim(records, name, BROKEN, True))
            items.append(_accuracy_claim(records, name, ORIGINAL, True))
            items.append(_cost_claim(records, name, None, "higher"))
        if items:
            comparison = _heldout_comparison(records, name)
            if comparison:
                items.append({
                    "statement": "(not claimed) do broken and original differ on held-out images?",
                    "data": (f"CV over {comparison['images']} images: broken "
                             f"{_pct(comparison['broken_accuracy'])}, original "
                             f"{_pct(comparison['original_accuracy'])}; only broken right on "
                             f"{comparison['a_only']}, only original right on "
                             f"{comparison['b_only']}, McNemar p = "
                             f"{_fmt(comparison['p_value'], 2)}"),
                    "verdict": "differ" if comparison["p_value"] < 0.05 else "no clear difference",
                    "stats": comparison,
                })
        claims[name] = items
    return claims


def write_figures(out: Path, config: ReproduceConfig, records: Records) -> list[Path]:
    from ..pictures.plots import alignment_grid, curves, grouped_points

    figures = []
    groups = [e.name for e in config.experiments]
    for experiment in config.experiments:
        series = {rule: cost_matrix(records.get((experiment.name, rule, "article"), []))
                  for rule in config.rules}
        figures.append(curves(out / f"cost_{experiment.name}.png", series,
                              f"{experiment.name}: cost per epoch (mean, 95% band over seeds)",
                              "total cost over the epoch (log)", log=True))
        align = {rule: alignment_matrices(records.get((experiment.name, rule, "article"), []))
                 for rule in config.rules if rule != "exact"}
        layers = sorted({layer for per_layer in align.values() for layer in per_layer},
                        key=lambda s: (s[0] != "c", s))
        if layers:
            figures.append(alignment_grid(
                out / f"alignment_{experiment.name}.png", layers, align,
                f"{experiment.name}: angle between each rule's gradient and the exact one"))
    values: dict[tuple[str, str], tuple[float, float, float] | None] = {}
    held: dict[tuple[str, str], tuple[float, float, float] | None] = {}
    for experiment in config.experiments:
        for rule in config.rules:
            accuracy = _test_accuracies(records, experiment.name, rule)
            finite = accuracy[np.isfinite(accuracy)]
            if finite.size:
                values[(experiment.name, rule)] = (float(finite.mean()), *bootstrap_ci(finite))
            correct = np.array(list(_heldout(records, experiment.name, rule).values()), float)
            if correct.size:
                held[(experiment.name, rule)] = (float(correct.mean()), *bootstrap_ci(correct))
    figures.append(grouped_points(out / "accuracy_test10.png", groups, config.rules, values,
                                  "accuracy on the article's 10 held-out images (mean, 95% CI)",
                                  "accuracy", (0, 1.05)))
    if held:
        figures.append(grouped_points(out / "accuracy_heldout_cv.png", groups, config.rules, held,
                                      f"held-out accuracy, {config.folds}-fold CV over 360 images",
                                      "accuracy", (0, 1.05)))
    return figures


def terminal_summary(summary: dict[str, Any], claims: dict[str, list], meta: dict) -> str:
    lines = []
    for experiment, data in summary.items():
        lines.append(f"{experiment} (dense {data['fc'][0]}/{data['fc'][1]})")
        lines.append(f"  {'rule':<17}{'runs':>5}{'div':>5}{'final cost':>12}{'test10':>9}"
                     f"{'all-10':>8}{'CV acc':>9}")
        for rule, row in data["rules"].items():
            lines.append(
                f"  {rule:<17}{row['runs']:>5}{row['diverged']:>5}"
                f"{_fmt(row['final_cost_mean']):>12}{_pct(row['test_accuracy_mean']):>9}"
                f"{row['test_all_correct']:>8}{_pct(row['heldout_accuracy_mean']):>9}")
        for claim in claims.get(experiment, []):
            lines.append(f"  claim: {claim['statement']} -> {claim['verdict']}")
    lines.append(f"time: {meta['seconds']:.1f}s ({meta['finished_jobs']}/{meta['jobs']} jobs "
                 f"finished, {meta['skipped_jobs']} reused)")
    return "\n".join(lines)


def _introduction(config: ReproduceConfig, meta: dict[str, Any]) -> list[str]:
    """The report's opening: the protocol, the two accuracy measures, alignment, time."""
    lines = ["# handprop reproduce: the article's original vs broken back-propagation", ""]
    if meta.get("interrupted"):
        why = meta.get("stopped_by")
        why = f" ({why})" if why and why != "interrupt" else ""
        lines += [f"**Interrupted**{why}: this report covers the runs that finished.", ""]
    lines += [
        f"Rules: {', '.join(config.rules)}. Seeds: {config.seeds} "
        f"({config.first_seed}..{config.first_seed + config.seeds - 1}), paired: for a given "
        "seed every rule starts from the same weights and sees the same data in the same order.",
        f"Protocol (the article's): online SGD, {config.epochs} epochs, lr {config.lr}, "
        f"alpha {config.momentum} (v <- alpha v + lr g; w <- w - v), standard-normal weights, "
        "raw pixels (0..16).",
        "",
        "Accuracy is reported two ways:",
        "",
        "* **test10** -- the article's protocol: shuffle the 360 images of 0 and 1 with the "
        "seed, hold out the first 10, train on 350; accuracy on those 10 images. Ten images "
        "cannot tell two nets apart.",
    ]
    if config.folds:
        lines.append(
            f"* **CV** -- the held-out protocol: stratified {config.folds}-fold cross-validation "
            f"over all 360 images (train on {360 - 360 // config.folds}, test on "
            f"{360 // config.folds}; every image is held out exactly once per rule), same "
            "training protocol. Rules are compared on the same images with an exact McNemar "
            "test.")
    return lines + [
        "",
        "Alignment: after every epoch (and before the first) the rule's gradient and the exact "
        f"gradient are computed on the same fixed probe batch (the first {config.probe} "
        "training images of the run) and compared per weight array (angle; 0 degrees = "
        "identical direction). `exact` is exact by definition and is not measured.",
        "",
        f"Time: {meta['seconds']:.1f} s for {meta['finished_jobs'] - meta['skipped_jobs']} jobs "
        f"run now ({meta['skipped_jobs']} reused from an earlier run), backend "
        f"`{meta['backend']}`.",
        "",
        "## The article's claims against the data",
        "",
    ]


def _experiment_section(experiment: Experiment, rules: dict[str, Any],
                        items: list[dict]) -> list[str]:
    """One experiment: its claims beside the data, its rules' numbers, their alignment."""
    lines = [f"### {experiment.name} (dense {experiment.fc[0]}/{experiment.fc[1]})", ""]
    if experiment.claim:
        lines += [f"The article: *{experiment.claim}*.", ""]
    if items:
        lines += ["| claim | what the data say | verdict |", "|---|---|---|"]
        lines += [f"| {c['statement']} | {c['data']} | {c['verdict']} |" for c in items]
        lines.append("")
    lines += ["| rule | runs | diverged | final cost (mean) | final cost (median) | test10 "
              "mean | seeds at 10/10 | CV accuracy |",
              "|---|---|---|---|---|---|---|---|"]
    for rule, row in rules.items():
        lines.append(
            f"| {rule} | {row['runs']} | {row['diverged']} | {_fmt(row['final_cost_mean'])} | "
            f"{_fmt(row['final_cost_median'])} | {_pct(row['test_accuracy_mean'])} | "
            f"{row['test_all_correct']} | {_pct(row['heldout_accuracy_mean'])} |")
    lines.append("")
    align_rows = [(rule, layer, m) for rule, row in rules.items()
                  for layer, m in row["alignment"].items()]
    if align_rows:
        lines += ["Alignment with the exact gradient at the last epoch (mean over seeds):", "",
                  "| rule | layer | angle (deg) | cosine | same sign |",
                  "|---|---|---|---|---|"]
        lines += [f"| {rule} | {layer} | {_deg(m.get('angle_deg_final_mean'))} | "
                  f"{_fmt(m.get('cosine_final_mean'))} | "
                  f"{_pct(m.get('sign_agreement_final_mean'))} |"
                  for rule, layer, m in align_rows]
        lines.append("")
    return lines


def markdown(config: ReproduceConfig, summary: dict[str, Any], claims: dict[str, list],
             meta: dict[str, Any], figures: list[Path]) -> str:
    """The text of ``report.md``."""
    lines = _introduction(config, meta)
    for experiment in config.experiments:
        lines += _experiment_section(experiment, summary[experiment.name]["rules"],
                                     claims.get(experiment.name, []))
    lines += ["## Figures", ""]
    lines += [f"![{path.stem}]({path.name})" for path in figures]
    lines += ["", "Cost curves: broken net red, original blue (as in the article), exact black; "
              "lines are means over seeds, bands 95% bootstrap intervals of the mean.", ""]
    return "\n".join(lines)
