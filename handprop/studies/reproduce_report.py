"""The reproduce study's outputs: PNG figures, report.md and the terminal summary (the
skeleton in :mod:`.study` writes them). The numbers come from :func:`.reproduce.summarize`,
:mod:`.reproduce_claims` and :mod:`.sensitivity`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .records import alignment_epochs, alignment_matrices, cost_matrix
from .reproduce_base import Records, ReproduceConfig, per_seed
from .reproduce_claims import median_power, smallest_n, tested_claims
from .sensitivity import PERTURBATIONS, THRESHOLDS, median


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}g}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _deg(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1f}"


def _with_ci(stat: dict[str, Any], as_pct: bool = False) -> str:
    """mean [low, high] (n)."""
    show = _pct if as_pct else _fmt
    if stat["mean"] is None:
        return "n/a"
    low, high = stat["ci"] if stat["ci"] else (None, None)
    return f"{show(stat['mean'])} [{show(low)}, {show(high)}] (n={stat['n']})"


# -- figures ---------------------------------------------------------------------------

def write_figures(out: Path, config: ReproduceConfig, records: Records) -> list[Path]:
    from ..pictures.plots import alignment_grid, curves, grouped_points

    figures = []
    for variant in config.variant:
        for experiment in config.experiments:
            series = {rule: cost_matrix(records.get((variant, experiment.name, rule,
                                                      "article"), []))
                      for rule in config.rules_of(variant)}
            figures.append(curves(out / f"cost_{variant}_{experiment.name}.png", series,
                                  f"{experiment.name}, {variant} network: cost per epoch (mean "
                                  "over seeds, 95% t band)", "total cost over the epoch (log)",
                                  log=True))
    figures += _alignment_figures(out, config, records, alignment_grid)
    figures += _accuracy_figures(out, config, records, grouped_points)
    figures += _sensitivity_figure(out, config, records, curves)
    return figures


def _alignment_figures(out, config, records, alignment_grid) -> list[Path]:
    figures = []
    variant = config.variant[0]
    for experiment in config.experiments:
        for section, what in (("gradient", "update"), ("signal", "hidden-layer signal")):
            runs = {rule: records.get((variant, experiment.name, rule, "article"), [])
                    for rule in config.rules_of(variant) if rule != "exact"}
            align = {rule: alignment_matrices(rows, section) for rule, rows in runs.items()}
            layers = sorted({layer for per in align.values() for layer in per})
            epochs = alignment_epochs([r for rows in runs.values() for r in rows])
            if layers:
                figures.append(alignment_grid(
                    out / f"alignment_{section}_{experiment.name}.png", layers, align,
                    f"{experiment.name}: angle between each rule's {what} and the exact one",
                    epochs=epochs))
    return figures


def _accuracy_figures(out, config, records, grouped_points) -> list[Path]:
    from .statistics import mean_interval

    figures = []
    groups = [e.name for e in config.experiments]
    for protocol, label in (("article", "the article's 10 held-out images"),
                            ("heldout", "one 72-image held-out set per seed")):
        for variant in config.variant:
            values = {}
            for experiment in config.experiments:
                for rule in config.rules_of(variant):
                    found = (records.get((variant, experiment.name, rule, protocol), [])
                             or (records.get((variant, experiment.name, rule, "fold"), [])
                                 if protocol == "heldout" else []))
                    accuracy = [v for v in per_seed(found, lambda r: r["test_accuracy"]).values()
                                if math.isfinite(v)]
                    if accuracy:
                        interval = mean_interval(accuracy, bounds=(0.0, 1.0))
                        values[(experiment.name, rule)] = (float(np.mean(accuracy)),
                                                           interval.low, interval.high)
            if values:
                figures.append(grouped_points(
                    out / f"accuracy_{protocol}_{variant}.png", groups,
                    config.rules_of(variant), values,
                    f"{variant} network: accuracy on {label} (mean over seeds, 95% CI)",
                    "accuracy", (0, 1.05)))
    return figures


def _sensitivity_figure(out, config, records, curves) -> list[Path]:
    series = {}
    for experiment in config.experiments:
        for kind in PERTURBATIONS:
            rows = [r for rule in ("seed-original", "seed-broken") for r in records.get(
                ("sensitivity", experiment.name, rule, "sensitivity"), [])
                if r["perturbation"] == kind]
            if rows:
                width = max(len(r["relative_distance"]) for r in rows)
                matrix = np.full((len(rows), width), np.nan)
                for i, row in enumerate(rows):
                    values = [np.nan if v is None else v for v in row["relative_distance"]]
                    matrix[i, : len(values)] = values
                series[f"{experiment.name}, {kind}"] = np.maximum(matrix, 1e-18)
    if not series:
        return []
    return [curves(out / "sensitivity.png", series, "one initial weight moved: relative weight "
                   "distance to the unmoved run", "|w' - w| / |w| (log)", log=True)]


# -- report.md -------------------------------------------------------------------------

def markdown(config: ReproduceConfig, summary: dict[str, Any], findings: dict[str, Any],
             meta: dict[str, Any], figures: list[Path]) -> str:
    lines = ["# handprop reproduce: the article's original vs broken back-propagation", ""]
    if meta.get("interrupted"):
        lines += [f"**Interrupted** ({meta.get('stopped_by') or 'interrupt'}): this report "
                  "covers the runs that finished.", ""]
    lines += _method(config, {**meta, "engines": findings.get("engines")})
    lines += _claims_section(config, findings["claims"])
    lines += _tables(config, summary)
    lines += _sensitivity_section(findings.get("sensitivity", {}), config)
    lines += ["## Figures", ""] + [f"![{path.stem}]({path.name})" for path in figures]
    lines += ["", "Cost curves: broken net red, original blue (as in the article), exact "
              "black; lines are means over seeds, bands 95% t-intervals of the mean per "
              "epoch.", ""]
    return "\n".join(lines)


def _method(config: ReproduceConfig, meta: dict[str, Any]) -> list[str]:
    held = (f"{config.folds}-fold cross-validation per seed (the seed's accuracy is the mean "
            "over its folds)" if config.folds else
            "a stratified 80/20 split drawn with the seed (288 training images, 72 held out)"
            if config.heldout else "none")
    return [
        f"Seeds {config.first_seed}..{config.first_seed + config.seeds - 1} ({config.seeds}), "
        "paired: for a seed, every rule starts from the same weights and sees the same data "
        "in the same order. **The unit of replication is the trained network**: every "
        "interval and test below is computed over seeds, one number per seed.",
        f"Protocol (the article's): online SGD, {config.epochs} epochs, lr {config.lr}, "
        f"alpha {config.momentum} (v <- alpha v + lr g; w <- w - v), standard-normal "
        "weights, raw pixels (0..16).",
        "",
        f"* Networks: {', '.join(config.variant)} (*corrected* is the network the article's "
        "text describes; *as-run* is the one its code ran: layer 2 applies conv1's second "
        "kernel to all four maps, and the code still updates W2 and sends the gradient "
        "down through it; the article's figures come from it).",
        f"* Rules: {', '.join(config.rules)} on the corrected network; "
        f"{', '.join(config.as_run_rules)} on the as-run network. broken-text uses "
        f"T = {config.transform}.",
        "* **test10**: the article's run (shuffle the 360 images of 0 and 1 with the seed, "
        "hold out the first 10, train on 350). Ten images cannot tell two nets apart.",
        f"* **held-out**: {held}; one held-out accuracy per seed.",
        "* Intervals: 95%, studentized bootstrap over seeds (coverage simulated in the tests), "
        "or the t-interval where many tied values make the bootstrap-t unstable (ten seeds "
        "at 100% and one lower), cut to the values an accuracy or a cost can take. "
        "Tests: exact sign-flip permutation test of the paired differences over seeds; every "
        "p-value shows n and the smallest p n allows; Holm-adjusted across all the tests of "
        "this report. A verdict is *supported*/*contradicted* only when the adjusted p < "
        "0.05; otherwise *not resolved*, with the seeds a paired test would need at 80% power "
        "for the effect seen, at the level 0.05 / (number of tests) (Holm never asks for "
        "less). Claims about single runs are described, never judged.",
        f"* Engine: {', '.join(meta.get('engines') or ['see the records'])}; time "
        f"{meta['seconds']:.1f} s "
        f"({meta['finished_jobs'] - meta['skipped_jobs']} jobs run now, "
        f"{meta['skipped_jobs']} reused), backend `{meta['backend']}`.",
        "",
    ]


def _claims_section(config: ReproduceConfig, claims: dict[str, Any]) -> list[str]:
    tests = claims.get("_tests", 0)
    lines = ["## The article's claims against the data", ""]
    power = median_power(claims)
    lines += [f"{tests} tests in one Holm family; the smallest n is {smallest_n(claims)}. "
              f"Median power of the paired t-test at these n for the effects observed, at the "
              f"level 0.05/{tests} the verdicts' seed counts use: "
              f"{_fmt(power, 2)} (power is for the observed effect sizes, which are noisy "
              "at this n).", ""]
    experiments = {e.name: e for e in config.experiments}
    for key, pairing in claims.items():
        if key.startswith("_"):
            continue
        lines += [f"### {pairing['title']}", ""]
        for name, items in pairing["experiments"].items():
            experiment = experiments[name]
            lines += [f"**{name}** (dense {experiment.fc[0]}/{experiment.fc[1]}). The article: "
                      f"*{experiment.claim or 'no claim recorded'}*.", "",
                      "| claim | what the data say | verdict |", "|---|---|---|"]
            lines += [f"| {_cell(c['statement'])} | {_cell(c['evidence'])} | "
                      f"{_cell(c['verdict'])} |" for c in items]
            lines.append("")
    return lines


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _tables(config: ReproduceConfig, summary: dict[str, Any]) -> list[str]:
    lines = ["## Per rule (mean over seeds, 95% CI)", ""]
    for variant, experiments in summary.items():
        for name, data in experiments.items():
            lines += [f"**{name}, {variant} network**", "",
                      "| rule | runs | diverged | final cost | test10 accuracy | seeds at "
                      "10/10 | held-out accuracy |", "|---|---|---|---|---|---|---|"]
            for rule, row in data["rules"].items():
                lines.append(
                    f"| {rule} | {row['runs']} | {row['diverged']} | "
                    f"{_with_ci(row['final_cost'])} | {_with_ci(row['test10_accuracy'], True)} "
                    f"| {row['test10_all_correct']} | "
                    f"{_with_ci(row['heldout_accuracy'], True)} |")
            lines.append("")
            lines += _alignment_rows(data["rules"])
    return lines


def _alignment_rows(rows: dict[str, Any]) -> list[str]:
    table = [(rule, layer, m.get("angle_deg_final_mean"), m.get("angle_deg_final_undefined"))
             for rule, row in rows.items()
             for layer, m in {**row["alignment"], **row["signal_alignment"]}.items()]
    if not table:
        return []
    lines = ["Angle to the exact gradient at the last epoch (mean over seeds; weight arrays "
             "are the update, activation layers the hidden-layer signal):", "",
             "| rule | where | angle (deg) | runs where undefined |", "|---|---|---|---|"]
    lines += [f"| {rule} | {layer} | {_deg(angle)} | {undefined} |"
              for rule, layer, angle, undefined in table]
    return lines + [""]


def _sensitivity_section(sensitivity: dict[str, Any], config: ReproduceConfig) -> list[str]:
    if not sensitivity:
        return []
    lines = ["## What a single run can show (chaos)", "",
             f"For the first {config.sensitivity} seed(s) of every experiment, seed-original "
             "and seed-broken were trained again with ONE initial weight moved by one ulp and "
             "by 1e-8 (everything else identical). Description of these runs, not inference.",
             "", "| experiment | rule | moved by | first epoch with \\|w'-w\\|/\\|w\\| > "
             f"{THRESHOLDS[0]:g} (median) | ... > {THRESHOLDS[1]:g} | final \\|w'-w\\|/\\|w\\| "
             "(median) | final cost changed by, \\|c'-c\\|/max(c, c') (median) |",
             "|---|---|---|---|---|---|---|"]
    flips_verdict = flips_rank = pairs_verdict = pairs_rank = 0
    for name, data in sensitivity.items():
        for rule, per_kind in data["parting"].items():
            for kind, row in per_kind.items():
                first = [median(row["first_epoch_over"][str(t)]) for t in THRESHOLDS]
                lines.append(f"| {name} | {rule} | {kind} | {_fmt(first[0])} | "
                             f"{_fmt(first[1])} | {_fmt(median(row['final_relative_distance']))} "
                             f"| {_pct(median(row['final_cost_change']))} |")
        flips_verdict += data["verdict_flips"]["flipped"]
        pairs_verdict += data["verdict_flips"]["pairs"]
        flips_rank += data["ranking_flips"]["flipped"]
        pairs_rank += data["ranking_flips"]["pairs"]
    lines += ["", f"The 10-image verdict (all right or not) changed in {flips_verdict} of "
              f"{pairs_verdict} perturbed runs; which net ended with the lower cost changed in "
              f"{flips_rank} of {pairs_rank} seed-and-perturbation pairs.", "",
              _conclusion(flips_verdict, pairs_verdict, flips_rank, pairs_rank), ""]
    return lines


def _conclusion(flips_verdict: int, pairs_verdict: int, flips_rank: int,
                pairs_rank: int) -> str:
    """What a single run can and cannot show, from the counts above."""
    parts = ["A single run at lr 0.09 is one draw from a chaotic process: moving one "
             "weight by an amount far below anything a reader can see gives, after 500 "
             "epochs, a different network."]
    if pairs_rank and flips_rank:
        parts.append(f"Which of the two nets ends with the lower cost changed with that "
                     f"nudge in {flips_rank} of {pairs_rank} cases, so one run per net cannot "
                     "establish that one has the lower cost; only the paired tests over seeds "
                     "above can.")
    elif pairs_rank:
        parts.append("Here the cost ranking survived the nudges; with so few cases this "
                     "does not show that it is stable.")
    if pairs_verdict and flips_verdict:
        parts.append(f"Whether a run gets all 10 test images right changed in {flips_verdict} "
                     f"of {pairs_verdict} nudged runs: a 10-image verdict from one run is not "
                     "a property of the net.")
    return " ".join(parts)


# -- the terminal ------------------------------------------------------------------------

def terminal_summary(config: ReproduceConfig, summary: dict[str, Any],
                     findings: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = []
    for variant, experiments in summary.items():
        for name, data in experiments.items():
            lines.append(f"{name} (dense {data['fc'][0]}/{data['fc'][1]}), {variant} network")
            lines.append(f"  {'rule':<17}{'runs':>5}{'div':>5}{'final cost':>12}"
                         f"{'test10':>9}{'all-10':>8}{'held-out':>10}")
            for rule, row in data["rules"].items():
                lines.append(
                    f"  {rule:<17}{row['runs']:>5}{row['diverged']:>5}"
                    f"{_fmt(row['final_cost']['mean']):>12}"
                    f"{_pct(row['test10_accuracy']['mean']):>9}{row['test10_all_correct']:>8}"
                    f"{_pct(row['heldout_accuracy']['mean']):>10}")
    for claim in tested_claims(findings["claims"]):
        lines.append(f"{claim['pairing']}, {claim['experiment']}: {claim['statement']} -> "
                     f"{claim['verdict']}")
    lines.append(f"time: {meta['seconds']:.1f}s ({meta['finished_jobs']}/{meta['jobs']} jobs "
                 f"finished, {meta['skipped_jobs']} reused)")
    return "\n".join(lines)
