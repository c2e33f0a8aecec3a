"""The compare study's findings and outputs: the literature's claims held up against the
seeds (Lillicrap et al. 2016; BioTorch), a budget check, figures, report.md and the
terminal table (the skeleton in :mod:`.study` writes them).

The claims come from the study's config (``[[compare.claims]]``): the confirmatory ones
are what the literature states -- BioTorch's benchmark (exact back-propagation ahead of
FA and DFA; the sign-symmetry rules close to it, tested as equivalence within +-1 pp) and
Lillicrap et al.'s "the hidden-layer signal stays within 90 degrees", a per-seed
criterion -- Holm-adjusted together; the rest is exploratory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..pictures.plots import EXACT_DEGREES
from .claims import Claim, as_record, design_check, design_text, judge
from .compare_base import (
    ANGLE_METRICS,
    CompareClaim,
    CompareConfig,
    error_curve,
    metric_values,
)
from .records import alignment_epochs, alignment_matrices, cost_matrix
from .statistics import mean_difference_interval, paired_comparison

# BioTorch's benchmark (Sanfiz & Akrout 2021), quoted from the file and commit below:
# LeNet on MNIST, top-1 error % (SGD with momentum 0.9, weight decay 1e-3, 32x32 inputs,
# batches of 64, 100 epochs; the best-validation model scored on that validation set).
BIOTORCH_SOURCE = ("jsalbert/biotorch, Benchmarks.md at commit "
                   "536ea216ddac4056a6b2187314b1fe56349ce87b, table \"MNIST & Fashion-MNIST\", "
                   "column MNIST (LeNet MNIST)")
BIOTORCH_LENET_MNIST = {"exact": 0.91, "fa": 1.7, "usf": 0.94, "brsf": 0.91, "frsf": 0.97,
                        "dfa": 1.61}
BIOTORCH_LENET_FASHION_MNIST = {"exact": 9.2, "fa": 13.06, "usf": 9.69, "brsf": 10.02,
                                "frsf": 9.61, "dfa": 12.81}


def _pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}"


def _deg(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1f}"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


# -- the claims ------------------------------------------------------------------------

def _layers(spec: CompareClaim, records: list[dict]) -> list[str]:
    """The layers an angle claim is asked of: its own list, or every layer the rule's
    records measured (for updates, all but the output layer's, exact under FA and DFA)."""
    if spec.layers:
        return list(spec.layers)
    layers = list(alignment_matrices(records, ANGLE_METRICS[spec.metric]))
    return layers[:-1] if spec.metric == "max_update_angle" else layers


def expanded(config: CompareConfig, records: dict[str, list[dict]] | None = None,
             net: Any = None) -> list[tuple[CompareClaim, str]]:
    """Every (claim, layer) the study tests ("" for test error claims) whose rules ran;
    before the run (no records), every claim whose rules are in the config, with the
    layers of ``net``."""
    ran = set(config.rules) if records is None else {r for r, rows in records.items() if rows}
    out = []
    for spec in config.claims:
        if spec.a not in ran or (spec.metric not in ANGLE_METRICS and spec.b not in ran):
            continue
        if spec.metric in ANGLE_METRICS:
            layers = (_layers(spec, records[spec.a]) if records is not None
                      else spec.layers or _net_layers(spec, net))
            out += [(spec, layer) for layer in layers]
        else:
            out.append((spec, ""))
    return out


def _net_layers(spec: CompareClaim, net: Any) -> list[str]:
    """What :func:`_layers` will find in the records, read from the network: its hidden
    activations (signal), or its weight arrays but the last (update)."""
    from .alignment import hidden_activations, weight_names

    if net is None:
        return ["(each layer)"]
    if spec.metric == "max_signal_angle":
        return [net.layers[i].name for i in hidden_activations(net)]
    return weight_names(net)[:-1]


def claim_for(spec: CompareClaim, layer: str, records: dict[str, list[dict]],
              metric: str | None = None) -> Claim:
    """One claim as a paired comparison over seeds (an angle claim against its constant)."""
    metric = metric or spec.metric
    a = _values(records[spec.a], metric, layer)
    if spec.metric in ANGLE_METRICS:
        b = dict.fromkeys(a, float(spec.b))
        unit, bounds = "deg", None
    else:
        b = _values(records[spec.b], metric, layer)
        unit, bounds = "%", (-1.0, 1.0)
    seeds = sorted(set(a) & set(b))
    comparison = paired_comparison([a[s] for s in seeds], [b[s] for s in seeds],
                                   lower_is_better=True, labels=(spec.a, spec.b),
                                   test=spec.test, margin=spec.margin, bounds=bounds)
    description = _per_seed_criterion(spec, a) if spec.metric in ANGLE_METRICS else ""
    return Claim(spec, comparison, description, unit=unit, label=layer or spec.metric,
                 extra={"layer": layer, "seeds": seeds})


def _values(records: list[dict], metric: str, layer: str) -> dict[int, float]:
    if metric.startswith("test_error@"):
        return error_curve(records, int(metric.partition("@")[2]))
    return metric_values(records, metric, layer)


def _per_seed_criterion(spec: CompareClaim, angles: dict[int, float]) -> str:
    """"held in 9 of 10 seeds; broken by seed 3 (94.2 deg)": the claim seed by seed."""
    limit = float(spec.b)
    finite = {s: v for s, v in angles.items() if math.isfinite(v)}
    broken = {s: v for s, v in finite.items() if v >= limit}
    text = f"held in {len(finite) - len(broken)} of {len(finite)} seeds (largest angle < {limit:g})"
    if broken:
        text += "; broken by " + ", ".join(f"seed {s} ({v:.1f} deg)"
                                           for s, v in sorted(broken.items()))
    return text


def literature(config: CompareConfig, records: dict[str, list[dict]], net: Any = None
               ) -> dict[str, Any]:
    """The config's claims as paired tests over seeds (confirmatory: one Holm family), the
    design check, the quoted BioTorch numbers and the budget check."""
    claims = judge([claim_for(spec, layer, records) for spec, layer in expanded(config, records)])
    family = [c for c in claims if c.confirmatory and c.tested]
    return {"claims": [as_record(c) for c in claims], "family": len(family),
            "family_source": "the confirmatory claims of the study's config "
                             "([[compare.claims]], role = \"confirmatory\"), fixed before the "
                             "run",
            "design": design(config, net),
            "biotorch": {"source": BIOTORCH_SOURCE, "lenet_mnist_error_pct": BIOTORCH_LENET_MNIST,
                         "lenet_fashion_mnist_error_pct": BIOTORCH_LENET_FASHION_MNIST},
            "budget": budget_check(config, records, claims)}


def design(config: CompareConfig, net: Any = None) -> list[dict[str, Any]]:
    """The design check of the confirmatory claims (before any run; ``net``: the
    network, for the layers an angle claim is asked of)."""
    pairs = expanded(config, net=net)
    rows = design_check([spec for spec, _ in pairs], config.seeds)
    confirmatory = [(s, layer) for s, layer in pairs if s.role == "confirmatory"]
    for row, (spec, layer) in zip(rows, confirmatory, strict=True):
        row["statement"] = spec.statement + (f" ({layer})" if layer else "")
    return rows


def budget_check(config: CompareConfig, records: dict[str, list[dict]],
                 claims: list[Claim]) -> dict[str, Any]:
    """Half the training budget against all of it, from the same runs (the test error is
    measured along the way): per rule the paired change of test error, and the verdicts of
    the test-error claims had the study stopped at half its epochs."""
    half = config.epochs // 2
    rows = {}
    for rule, runs in records.items():
        at_half, at_end = error_curve(runs, half), error_curve(runs, config.epochs)
        seeds = [s for s in at_half if math.isfinite(at_half[s])
                 and math.isfinite(at_end.get(s, math.nan))]
        if len(seeds) < 2:
            continue
        d = np.array([at_end[s] - at_half[s] for s in seeds])
        interval = mean_difference_interval(d, bounds=(-1.0, 1.0))
        rows[rule] = {"half": float(np.mean([at_half[s] for s in seeds])),
                      "full": float(np.mean([at_end[s] for s in seeds])),
                      "change": float(d.mean()), "ci": [interval.low, interval.high],
                      "n": len(seeds)}
    earlier = judge([claim_for(c.spec, c.extra.get("layer", ""), records,
                               f"test_error@{half}" if c.spec.metric == "test_error" else None)
                     for c in claims if c.tested])
    changed = [{"statement": c.spec.statement + (f" ({c.label})" if c.extra.get("layer") else ""),
                "at_half": e.verdict, "at_end": c.verdict}
               for c, e in zip([c for c in claims if c.tested], earlier, strict=True)
               if e.verdict != c.verdict and c.spec.metric == "test_error"]
    return {"half_epoch": half, "epochs": config.epochs, "rules": rows, "changed": changed}


# -- figures ------------------------------------------------------------------------------

def write_figures(out: Path, config: CompareConfig, records: dict[str, list[dict]],
                  summary: dict[str, Any], train_images: int | None = None,
                  classes: int | None = None) -> list[Path]:
    """Test error per rule (every seed), cost curves, and one alignment grid per measure
    (update and hidden-layer signal to the exact gradient; feedback B to forward W)."""
    from ..pictures.plots import alignment_grid, median_curves, seed_points

    values = {("test error", rule): (np.array([v for v in row["test_error_per_seed"].values()
                                                if math.isfinite(v)]),
                                      (row["test_error_mean"], *row["test_error_ci"]))
              for rule, row in summary.items() if row["test_error_mean"] is not None}
    figures = [seed_points(out / "test_error.png", ["test error"], config.rules, values,
                           f"test error per rule, {config.seeds} seeds (dots: seeds; bar: mean, "
                           "95% CI)", "test error (%; chance is 90%)")]
    chance = None
    if train_images and classes:  # softmax cross-entropy of 1/classes, per batch mean
        chance = (-(-train_images // config.batch_size) * math.log(classes),
                  f"predicting 1/{classes} for every class")
    figures.append(median_curves(out / "cost.png", {rule: cost_matrix(records[rule])
                                                    for rule in config.rules},
                                 "training cost per epoch (median over seeds, quartiles)",
                                 "sum of the batches' mean loss (log)", log=True,
                                 chance=chance))
    epochs = alignment_epochs([r for rows in records.values() for r in rows])
    for section, title, ylabel in (
            ("gradient", "angle between each rule's update and the exact gradient", None),
            ("signal", "angle between the signal each rule sends to a hidden layer and the "
                       "exact one", None),
            ("weights", "angle between feedback B and forward weights W", "angle(B, W) (deg)")):
        align = {rule: alignment_matrices(records[rule], section) for rule in config.rules
                 if rule != "exact"}
        align = {rule: m for rule, m in align.items() if m}
        layers = list(dict.fromkeys(layer for per in align.values() for layer in per))
        if layers:
            figures.append(alignment_grid(out / f"alignment_{section}.png", layers, align, title,
                                          **({"ylabel": ylabel} if ylabel else {}),
                                          epochs=epochs))
    return figures


# -- report.md and the terminal ----------------------------------------------------------

def terminal_table(summary: dict[str, Any], lit: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [f"{'rule':<14}{'runs':>5}{'div':>5}{'test error %':>14}{'95% CI':>18}"
             f"{'angle first layer':>19}{'angle last hidden':>19}"]
    for rule, row in summary.items():
        angles = [v.get("angle_deg_final_mean") for v in row["alignment"].values()]
        first = angles[0] if angles else None
        last_hidden = angles[-2] if len(angles) > 1 else None
        low, high = row["test_error_ci"] or (None, None)
        lines.append(f"{rule:<14}{row['runs']:>5}{row['diverged']:>5}"
                     f"{_pct(row['test_error_mean']):>14}"
                     f"{'[' + _pct(low) + ', ' + _pct(high) + ']':>18}"
                     f"{_deg(first):>19}{_deg(last_hidden):>19}")
    for claim in lit["claims"]:
        where = f" ({claim['label']})" if claim.get("layer") else ""
        lines.append(f"{claim['statement']}{where} -> {claim['verdict']}")
    lines.append(f"time: {meta['seconds']:.1f}s")
    return "\n".join(lines)


def markdown(config: CompareConfig, summary: dict[str, Any], lit: dict[str, Any],
             meta: dict[str, Any], figures: list[Path]) -> str:
    """The text of ``report.md``: one screen of summary, then the details."""
    lines = ["# handprop compare: learning rules against exact back-propagation", ""]
    if meta.get("interrupted"):
        why = meta.get("stopped_by")
        why = f" ({why})" if why and why != "interrupt" else ""
        lines += [f"**Interrupted**{why}: this report covers the runs that finished.", ""]
    lines += _summary(config, summary, lit)
    lines += _literature_section(lit)
    lines += _budget_section(lit["budget"])
    lines += _test_error_section(summary)
    lines += _alignment_section(summary)
    lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures]
    lines += ["", "Test error: one dot per seed, the mean with its 95% interval as a bar. "
              "Curves: the median over seeds and the quartiles. Angles: 90 degrees (no better "
              "than a random direction) dashed.", ""]
    lines += _method(config, meta)
    return "\n".join(lines)


def _summary(config: CompareConfig, summary: dict[str, Any], lit: dict[str, Any]) -> list[str]:
    lines = ["## Summary", "",
             f"{config.seeds} paired seeds, {config.epochs} epochs. The literature's claims "
             f"({lit['family']} confirmatory tests, Holm-adjusted together):", "",
             "| claim | verdict | effect [95% CI] | n |", "|---|---|---|---|"]
    for c in lit["claims"]:
        if c["role"] != "confirmatory" or "p_value" not in c:
            continue
        where = f" ({c['label']})" if c.get("layer") else ""
        fragile = " (fragile: one reversed seed undoes it)" if c.get("fragile") else ""
        effect = c["effect"] + (f"; {c['evidence'].split('; ')[-1]}"
                                if c.get("layer") and "held in" in c["evidence"] else "")
        lines.append(f"| {_cell(c['statement'] + where)} | {_cell(c['verdict'] + fragile)} | "
                     f"{_cell(effect)} | {c['n']} |")
    best = sorted((row["test_error_mean"], rule) for rule, row in summary.items()
                  if row["test_error_mean"] is not None)
    lines += ["", "Test error, mean over seeds (lowest first): " + ", ".join(
        f"{rule} {_pct(value, 1)}%" for value, rule in best) + ".", ""]
    budget = lit["budget"]
    if budget["rules"]:
        lines += [f"Budget: from epoch {budget['half_epoch']} to {budget['epochs']} the mean "
                  "test error changed by " + ", ".join(
                      f"{rule} {_pct(row['change'], 1)} pp" for rule, row in
                      budget["rules"].items()) + (
                      "; no verdict on test error changes." if not budget["changed"] else
                      f"; {len(budget['changed'])} verdict(s) on test error change (below)."),
                  ""]
    return lines


def _literature_section(lit: dict[str, Any]) -> list[str]:
    bio = lit["biotorch"]
    lines = ["## Against the literature", "",
             f"The Holm family: {lit['family_source']} ({lit['family']} tests). Exploratory "
             "questions are reported apart, unadjusted. Before any training, the design "
             "check said:", "", "```"]
    lines += design_text(lit["design"]) + ["```", ""]
    lines += ["**BioTorch** (Sanfiz & Akrout 2021), quoted from " + bio["source"] + ": top-1 "
              "error % of LeNet on MNIST " + ", ".join(
                  f"{k} {v}" for k, v in bio["lenet_mnist_error_pct"].items()) +
              " (100 epochs, SGD; the model with the best validation accuracy, scored on that "
              "validation set). Sign symmetry stays close to back-propagation; FA and DFA fall "
              "behind. Here: `dfa` injects the output error at each hidden activation's "
              "output, *before* pooling; `dfa-biotorch` replaces each weight layer's input "
              "gradient, *after* pooling, as BioTorch does (docs/rules.md).", "",
              "**Lillicrap et al. 2016** (Nature Communications 7:13276): feedback "
              "alignment's hidden-layer *signal* comes within 90 degrees of back-propagation's "
              "early in training and stays there -- a statement about every trained network, "
              "so it is checked seed by seed (the largest angle after training started) and "
              "tested as \"most seeds stay within 90 degrees\" (the sign test). The weight "
              "updates' angles are exploratory: the paper states nothing about them.", "",
              "| role | claim | verdict | the numbers |", "|---|---|---|---|"]
    for c in lit["claims"]:
        where = f" ({c['label']})" if c.get("layer") else ""
        lines.append(f"| {c['role']} | {_cell(c['statement'] + where)} | {_cell(c['verdict'])} "
                     f"| {_cell(c['evidence'])} |")
    return lines + [""]


def _budget_section(budget: dict[str, Any]) -> list[str]:
    if not budget["rules"]:
        return []
    lines = [f"## Budget check: epoch {budget['half_epoch']} against {budget['epochs']}", "",
             "The test error is measured along the way, so the same runs show what half the "
             "budget would have given (paired per seed; `--epochs 100` checks 50 against 100, "
             "BioTorch's length).", "",
             f"| rule | test error at epoch {budget['half_epoch']} | at {budget['epochs']} | "
             "change (95% CI) |", "|---|---|---|---|"]
    for rule, row in budget["rules"].items():
        low, high = row["ci"]
        lines.append(f"| {rule} | {_pct(row['half'])}% | {_pct(row['full'])}% | "
                     f"{_pct(row['change'])} pp [{_pct(low)}, {_pct(high)}] |")
    if budget["changed"]:
        lines += ["", "Verdicts on test error that differ at half the budget:", ""]
        lines += [f"* {c['statement']}: {c['at_half']} at epoch {budget['half_epoch']}, "
                  f"{c['at_end']} at {budget['epochs']}" for c in budget["changed"]]
    else:
        lines += ["", "No verdict on test error differs at half the budget."]
    return lines + [""]


def _test_error_section(summary: dict[str, Any]) -> list[str]:
    lines = ["## Test error per rule", "",
             "| rule | runs | diverged | test error % (mean over seeds) | 95% CI | final train "
             "cost |", "|---|---|---|---|---|---|"]
    for rule, row in summary.items():
        low, high = row["test_error_ci"] or (None, None)
        cost = "n/a" if row["final_cost_mean"] is None else f"{row['final_cost_mean']:.4g}"
        lines.append(f"| {rule} | {row['runs']} | {row['diverged']} | "
                     f"{_pct(row['test_error_mean'])} | [{_pct(low)}, {_pct(high)}] | "
                     f"{cost} |")
    return lines + [""]


def _alignment_section(summary: dict[str, Any]) -> list[str]:
    lines = ["## Alignment at the last measurement (mean over seeds)", "",
             "Angle (degrees) between each rule's update and the exact gradient per weight "
             "array, and between the signal it sends to each hidden layer and the exact one "
             "(0 = same direction, 90 = orthogonal); for rules with a feedback matrix B: "
             "angle(B, W), \\|B\\| / \\|W\\| and sign concordance. Rows where a rule is exact "
             "(angle 0 in every seed) are left out.", "",
             "| rule | where | angle | same-sign entries | angle(B, W) | \\|B\\| / \\|W\\| | "
             "sign concordance |", "|---|---|---|---|---|---|---|"]
    dropped = 0
    for rule, row in summary.items():
        for layer, metrics in {**row["alignment"], **row["signal_alignment"]}.items():
            angle = metrics.get("angle_deg_final_mean")
            if angle is not None and abs(angle) < EXACT_DEGREES:
                dropped += 1
                continue
            weight = row["weight_alignment"].get(layer, {})
            ratio = weight.get("norm_ratio_final_mean")
            concord = weight.get("sign_concordance_final_mean")
            lines.append(
                f"| {rule} | {layer} | {_deg(angle)} | "
                f"{_pct(metrics.get('sign_agreement_final_mean'), 1)}% | "
                f"{_deg(weight.get('angle_deg_final_mean'))} | "
                f"{'n/a' if ratio is None else f'{ratio:.3g}'} | "
                f"{'n/a' if concord is None else f'{100 * concord:.1f}%'} |")
    return lines + ["", f"({dropped} rows at 0 degrees left out.)", ""]


def _method(config: CompareConfig, meta: dict[str, Any]) -> list[str]:
    return [
        "## Method", "",
        f"Network `{meta['net']}` on `{config.data}` ({meta['train_images']} training images, "
        f"{meta['test_images']} held-out test images per seed), softmax cross-entropy, "
        f"minibatches of {config.batch_size}, {config.optimizer} (lr {config.lr}"
        f"{'' if config.optimizer in ('adam', 'sgd') else f', momentum {config.momentum}'}), "
        f"{config.epochs} epochs, reshuffled every epoch. Seeds {config.first_seed}.."
        f"{config.first_seed + config.seeds - 1} ({config.seeds}), paired: for a seed, every "
        "rule starts from the same weights and sees the same split and order. **The unit of "
        "replication is the trained network**: one test error per seed and rule.",
        "Intervals: 95% over seeds (studentized bootstrap for one rule's mean; for a paired "
        "difference, the union of the bootstrap-t and t intervals that goes with the mean "
        "test). Tests (statistics.py, their levels simulated): *mean* -- bootstrap-t and "
        "t-test both reject; *sign* -- exact sign test, ties dropped; *tost* -- equivalence "
        "within the stated margin. A verdict is supported/contradicted only at Holm-adjusted "
        "p < 0.05 over the confirmatory family; one that a single reversed seed would undo "
        "is marked fragile.",
        f"Alignment is measured before training, every {config.align_every} epochs and after "
        f"the last, on a fixed probe batch (the first {config.probe} training images of each "
        "run); the test error at the same epochs.",
        f"Time: {meta['seconds']:.1f} s ({meta['skipped_jobs']} of {meta['jobs']} jobs "
        "reused).", ""]
