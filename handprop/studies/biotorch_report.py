"""The report, terminal table and figures of ``handprop biotorch`` (the skeleton in
:mod:`.study` writes them; the numbers are :mod:`.biotorch_claims`').

``report.md`` opens with one screen: BioTorch's claims -> verdict -> effect with its
interval -> n and the seeds stuck at chance, then what matters in plain words and the
table of test errors beside BioTorch's single-seed numbers. The design check, every
claim's evidence, the stuck seeds, every seed's number, the alignment, the protocol and
the time follow.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .biotorch_base import BIOTORCH_SOURCE, PROTOCOL, BiotorchConfig, reference_column
from .biotorch_claims import tested_claims
from .claims import design_text
from .records import alignment_epochs, alignment_matrices


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _pp(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:+.2f} pp"


def _ci(block: dict[str, Any]) -> str:
    mean = _num(block["mean"])
    return mean if not block["ci"] else f"{mean} [{_num(block['ci'][0])}, {_num(block['ci'][1])}]"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def _count(k: int, n: int) -> str:
    return f"{k}/{n}"


# -- figures ---------------------------------------------------------------------------------

def _finish(plt: Any, fig: Any, path: Path, title: str) -> Path:
    from ..core.io import save_figure
    from ..pictures.plots import fitted

    fig.suptitle(fitted(title, fig.get_figwidth()), fontsize=10)
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
    from ..pictures.plots import CHANCE, color, pyplot

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
            ax.scatter([i + 0.38], [row["biotorch"]], marker="D", color="#D55E00", s=22,
                       label="BioTorch (1 seed, optimistic)" if i == 0 else None)
    chance = _chance(records)
    if chance is not None:
        ax.axhline(chance, label="chance", **CHANCE)
    ax.set_xticks(range(len(summary)), list(summary), fontsize=8)
    ax.set_ylabel("test error (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _finish(plt, fig, path, f"Test error per rule, {config.seeds} seeds, "
                                   f"{config.epochs} epochs")


def curve_figure(path: Path, records: dict[str, list[dict]]) -> Path:
    """One panel per rule (one scale): every seed's test error (solid) and validation
    error (dashed) per epoch, a dot at the epoch validation picked, chance dashed."""
    from matplotlib.ticker import MaxNLocator

    from ..pictures.plots import CHANCE, color, pyplot

    plt = pyplot()
    cols = min(len(records), 4) or 1
    rows = -(-len(records) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False,
                             sharey=True)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(records):]:
        ax.axis("off")
    chance = _chance(records)
    for ax, (i, (rule, runs)) in zip(flat, enumerate(records.items()), strict=False):
        for run in runs:
            test = [np.nan if v is None else v for v in run["test_error_pct"]]
            val = [np.nan if v is None else v for v in run["val_error_pct"]]
            epochs = np.arange(1, len(test) + 1)
            ax.plot(epochs, test, color=color(rule, i), lw=1)
            ax.plot(epochs, val, color=color(rule, i), lw=0.8, ls="--", alpha=0.6)
            if run.get("selected_epoch"):
                ax.plot(run["selected_epoch"], run["test_error_pct_selected"], "o",
                        color=color(rule, i), ms=3)
        if chance is not None:
            ax.axhline(chance, **CHANCE)
        ax.set_ylim(0, 100)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{rule} ({len(runs)} seeds)", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("error (%)", fontsize=8)
        ax.grid(alpha=0.3)
    return _finish(plt, fig, path, "Test (solid) and validation (dashed) error per epoch, "
                                   "one line per seed; dot: the validation-picked epoch; "
                                   "chance dashed grey")


def write_figures(out: Path, config: BiotorchConfig, records: dict[str, list[dict]],
                  summary: dict[str, Any]) -> list[Path]:
    """Test error per rule (every seed), the learning curves (every seed), and the angle
    of each rule's update to the exact gradient per layer (median and quartiles)."""
    from ..pictures.plots import alignment_grid

    figures = [error_figure(out / "test_error.png", config, records, summary),
               curve_figure(out / "curves.png", records)]
    align = {rule: alignment_matrices(runs, "gradient") for rule, runs in records.items()
             if rule != "exact"}
    align = {rule: m for rule, m in align.items() if m}
    layers = list(dict.fromkeys(layer for per in align.values() for layer in per))
    if layers:
        figures.append(alignment_grid(
            out / "alignment.png", layers, align, "angle between each rule's update and the "
            "exact gradient (median over seeds, quartiles)",
            epochs=alignment_epochs([r for runs in records.values() for r in runs])))
    return figures


# -- report.md ---------------------------------------------------------------------------------

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


def _short_verdict(claim: dict[str, Any]) -> str:
    return claim["verdict"] + (" (fragile: one reversed seed undoes it)"
                               if claim.get("fragile") else "")


def _stuck_cell(claim: dict[str, Any]) -> str:
    stuck = claim.get("stuck", {})
    return f"{claim['n']} / " + ", ".join(f"{arm} {k}" for arm, k in stuck.items())


def _summary(config: BiotorchConfig, summary: dict[str, Any], found: dict[str, Any],
             meta: dict[str, Any]) -> list[str]:
    lines = ["## Summary", "", profile_line(config, meta), "",
             f"BioTorch's claims, fixed before the run ({found['family']} confirmatory tests, "
             "Holm-adjusted together). Stuck: seeds whose net gives one class to at least "
             f"{found['stuck_share']:.0%} of the validation images at the picked epoch.", "",
             "| claim | verdict | effect [95% CI] | n / stuck |", "|---|---|---|---|"]
    for c in tested_claims(found, "confirmatory"):
        lines.append(f"| {_cell(c['statement'])} | {_cell(_short_verdict(c))} | "
                     f"{_cell(c['effect'])} | {_stuck_cell(c)} |")
    if found["not_tested"]:
        lines += ["", f"Not tested (a rule they compare was not run): "
                      f"{'; '.join(found['not_tested'])}."]
    lines += ["", "What matters:", ""]
    lines += [f"* {text}" for text in key_findings(config, summary, found)]
    return lines + [""] + rule_table(summary) + [""]


def key_findings(config: BiotorchConfig, summary: dict[str, Any],
                 found: dict[str, Any]) -> list[str]:
    """The few things to take away, in plain words."""
    out = [_claims_sentence(config, tested_claims(found, "confirmatory"))]
    ranked = sorted((row["honest"]["mean"], rule) for rule, row in summary.items()
                    if row["honest"]["mean"] is not None)

    def learned(rule: str) -> str:
        value = summary[rule]["honest"].get("learned_mean")
        return "" if not summary[rule]["stuck"]["k"] or value is None else \
            f" ({value:.1f}% over the seeds that learned)"

    if ranked:
        out.append("Mean test error over seeds, lowest first: " + ", ".join(
            f"{rule} {value:.1f}%{learned(rule)}" for value, rule in ranked) + (
            "" if reference_column(config) is None else
            "; BioTorch's single runs: " + ", ".join(
                f"{rule} {row['biotorch']:g}%" for rule, row in summary.items()
                if row["biotorch"] is not None)) + ".")
    out.append(_stuck_sentence(summary))
    gap = _selection_gap(summary)
    if gap:
        out.append(gap)
    return out


def _claims_sentence(config: BiotorchConfig, confirmatory: list[dict[str, Any]]) -> str:
    """Which of BioTorch's claims the seeds decided (with the effect, and whether one
    seed carries it), and which they did not, grouped by why."""
    decided = [c for c in confirmatory if c["verdict"].startswith(("supported",
                                                                   "contradicted"))]
    text = (f"{len(decided)} of {len(confirmatory)} of BioTorch's claims decided with "
            f"{config.seeds} seeds" + ("." if not decided else ": " + "; ".join(
                f"{c['statement']}: **{c['verdict']}** ({c['effect']})" for c in decided)
                + "."))
    fragile = [c for c in decided if c.get("fragile")]
    if fragile:
        text += (f" {len(fragile)} of them fragile: with the one seed reversed that most "
                 "supports it, the adjusted p would be " + ", ".join(
                     f"{c['reversed_adjusted_p']:.2g}" for c in fragile) +
                 " -- a verdict that one seed carries; more seeds would make it firm.")
    reasons: dict[str, list[str]] = {}
    for c in confirmatory:
        if c not in decided:
            reasons.setdefault(c["verdict"], []).append(c["statement"])
    for verdict, statements in reasons.items():
        text += f" {verdict[0].upper()}{verdict[1:]}: {'; '.join(statements)}."
    return text


def _stuck_sentence(summary: dict[str, Any]) -> str:
    stuck = {rule: row["stuck"] for rule, row in summary.items() if row["stuck"]["k"]}
    if not stuck:
        highest = max((row["stuck"]["ci"][1] for row in summary.values()
                       if row["stuck"]["n"]), default=math.nan)
        return ("No seed ended stuck at chance (with these seeds a rule could still leave up "
                f"to {100 * highest:.0f}% of its seeds stuck: the exact interval of 0 of n).")
    return ("Stuck at chance (one class for nearly every image): " + ", ".join(
        f"{rule} {s['k']} of {s['n']} seeds (seed "
        f"{', '.join(str(seed) for seed, flag in s['per_seed'].items() if flag)}; 95% CI "
        f"{100 * s['ci'][0]:.0f}-{100 * s['ci'][1]:.0f}%)" for rule, s in stuck.items()) +
            ". Their means get the two-part interval; the stuck section compares the "
            "fractions with back-propagation's, then the seeds that learned.")


def _selection_gap(summary: dict[str, Any]) -> str:
    gaps = [row["honest"]["per_seed"][s] - row["optimistic"]["per_seed"][s]
            for row in summary.values() for s in row["honest"]["per_seed"]
            if math.isfinite(row["honest"]["per_seed"][s])
            and math.isfinite(row["optimistic"]["per_seed"].get(s, math.nan))]
    if not gaps:
        return ""
    return (f"Picking each run's epoch on the test images (BioTorch's selection) reports "
            f"{np.mean(gaps):.2f} pp less error than picking it on the validation images "
            f"(mean over {len(gaps)} runs; at most {np.max(gaps):.2f} pp): "
            "the optimistic column.")


def rule_table(summary: dict[str, Any]) -> list[str]:
    lines = ["| rule | test error %, validation-picked epoch: mean [95% CI] | seeds | stuck "
             "| BioTorch (1 seed) | best test epoch (optimistic) | last epoch |",
             "|---|---|---|---|---|---|---|"]
    for rule, row in summary.items():
        diverged = f" ({row['diverged']} diverged)" if row["diverged"] else ""
        lines.append(f"| {rule} | {_ci(row['honest'])} | {row['honest']['n']}{diverged} | "
                     f"{_count(row['stuck']['k'], row['stuck']['n'])} | "
                     f"{_num(row['biotorch'])} | {_ci(row['optimistic'])} | "
                     f"{_ci(row['final'])} |")
    return lines


def _design_section(found: dict[str, Any]) -> list[str]:
    lines = ["## The design, fixed before the run", "",
             f"The Holm family: {found['family_source']} ({found['family']} tests). "
             "Exploratory questions are reported apart, unadjusted. What each confirmatory "
             "claim could reach with these seeds, said before any training (ties can only "
             "raise the smallest p: the claims below give it with the ties seen):", "", "```"]
    return lines + design_text(found["design"]) + ["```", ""]


def _claims_section(found: dict[str, Any]) -> list[str]:
    lines = ["## The claims in detail", "",
             "Tests: *mean* -- the studentized bootstrap and the t-test of the paired "
             "differences both reject (a claim about BioTorch's numbers, estimates of each "
             "rule's expected error); *tost* -- equivalence within the stated margin (two "
             "one-sided mean tests); *sign* -- most seeds go one way. A decided verdict that "
             "one reversed seed would undo is marked fragile.", "",
             "| role | claim | verdict | the numbers |", "|---|---|---|---|"]
    for c in tested_claims(found):
        source = f" (source: {c['source']})" if c.get("source") else ""
        lines.append(f"| {c['role']} | {_cell(c['statement'] + source)} | "
                     f"{_cell(_short_verdict(c))} | {_cell(c['evidence'])} |")
    return lines + [""]


def _stuck_section(found: dict[str, Any]) -> list[str]:
    lines = ["## Stuck at chance, then the seeds that learned", "",
             f"A run is **stuck at chance** when, at the epoch its validation error picked, "
             f"its net gives one class to at least {found['stuck_share']:.0%} of the "
             "validation images (its test error is then near 90% on ten classes). Each rule "
             "against back-propagation over the same seeds: the exact McNemar test counts "
             "the seeds stuck under one rule only; then the test error difference among the "
             "seeds where both learned (exploratory, unadjusted).", ""]
    if not found["stuck"]:
        return lines + ["(back-propagation was not run: nothing to pair with)", ""]
    lines += ["| rule | seeds | stuck: rule | stuck: exact | only rule / only exact | "
              "McNemar p | both learned: rule - exact [95% CI] |", "|---|---|---|---|---|---|---|"]
    for row in found["stuck"]:
        ci = row.get("learned_ci")
        learned = (f"{row['learned_n']} seeds: {_pp(row['learned_diff'])}"
                   + (f" [{_pp(ci[0])}, {_pp(ci[1])}]" if ci else "")
                   if row["learned_n"] else "none")
        lines.append(f"| {row['rule']} | {row['n']} | {_count(row['stuck'], row['n'])} | "
                     f"{_count(row['stuck_baseline'], row['n'])} | {row['only_rule']} / "
                     f"{row['only_baseline']} | {row['p_value']:.3g} | {learned} |")
    return lines + [""]


def _per_seed_lines(summary: dict[str, Any]) -> list[str]:
    seeds = sorted({s for row in summary.values() for s in row["honest"]["per_seed"]})
    lines = ["## Every seed", "", "Test error % at the validation-picked epoch (the epoch; "
             "S: stuck at chance):", "",
             "| rule | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---" * (len(seeds) + 1) + "|"]
    for rule, row in summary.items():
        cells = [f"{_num(row['honest']['per_seed'].get(s))} (ep "
                 f"{row['selected_epoch'].get(s) or '-'})"
                 f"{' S' if row['stuck']['per_seed'].get(s) else ''}" for s in seeds]
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    return lines + [""]


def _alignment_lines(summary: dict[str, Any]) -> list[str]:
    """The angle of each rule's update to the exact gradient after the last epoch; layers
    every rule trains exactly (angle 0, e.g. the output layer) are left out, with a note."""
    from ..pictures.plots import EXACT_DEGREES

    def angle(row: dict[str, Any], layer: str) -> float | None:
        return row["alignment"].get(layer, {}).get("angle_deg_final_mean")

    rows = {rule: row for rule, row in summary.items() if row["alignment"]}
    layers = list(dict.fromkeys(layer for row in rows.values() for layer in row["alignment"]))
    exact = [layer for layer in layers if all(
        (a := angle(row, layer)) is not None and abs(a) < 100 * EXACT_DEGREES
        for row in rows.values())]
    shown = [layer for layer in layers if layer not in exact]
    lines = ["## Alignment", "", "Angle (degrees) between each rule's weight update and the "
             "exact gradient after the last epoch, mean over seeds (per epoch: the figure; "
             "90 = no better than a random direction):", ""]
    if not shown:
        return lines + ["(no rule other than exact)", ""]
    lines += ["| rule | " + " | ".join(shown) + " |", "|---" * (len(shown) + 1) + "|"]
    lines += [f"| {rule} | " + " | ".join(_num(angle(row, layer), 1) for layer in shown) + " |"
              for rule, row in rows.items()]
    if exact:
        lines += ["", f"({', '.join(exact)}: angle 0 under every rule -- each trains it with "
                      "the exact gradient -- left out.)"]
    return lines + [""]


def _protocol_lines(config: BiotorchConfig) -> list[str]:
    return [
        "## Protocol", "",
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
        "the run's result, read on the test images. **The unit of replication is the "
        "trained network**: one number per rule and seed, rules paired by seed.",
        "",
        "Choices where BioTorch is silent or differs: the initial learning rate of its "
        "MNIST runs is not stated (these are its CIFAR-10 LeNet SGD settings); "
        "`dfa-biotorch` is its DFA (the error replaces each layer's input gradient, after "
        "pooling), but its DFA layers' biases start at 1 and here at 0; handprop's momentum "
        "is v <- 0.9 v + lr g, w <- w - v, PyTorch's before a learning-rate drop; the last, "
        "short batch of an epoch is kept (BioTorch drops it); kp's feedback weights learn "
        "by plain SGD with kp's learning rate and the weight decay (kp is not in BioTorch).",
        "",
        "Intervals: 95% over seeds -- the studentized bootstrap for a rule's mean, the "
        "two-part interval (the stuck fraction's Wilson interval and each part's mean) for "
        "a rule with a seed stuck at chance; for a paired difference, the union of the "
        "bootstrap-t and t intervals that goes with the mean test.", ""]


def _time_lines(summary: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    seconds = [row["epoch_seconds_median"] for row in summary.values()
               if row["epoch_seconds_median"]]
    engines = sorted({e for row in summary.values() for e in row["engines"]})
    total = sum(row["run_seconds"] for row in summary.values())
    return ["## Time", "", f"This invocation: {meta.get('seconds', 0):.0f} s for "
            f"{meta.get('jobs')} runs ({meta.get('skipped_jobs', 0)} already done). In the "
            f"records: {total:.0f} s of epochs (training and evaluation, summed over runs); "
            f"median epoch {_num(float(np.median(seconds)) if seconds else None, 1)} s; "
            f"engine: {', '.join(engines) or '-'}.", ""]


def markdown(config: BiotorchConfig, summary: dict[str, Any], found: dict[str, Any],
             meta: dict[str, Any], figures: list[Path]) -> str:
    """The text of ``report.md``: one screen of summary, then the details."""
    column = reference_column(config)
    title = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST-format files"}.get(column,
                                                                              config.data)
    out = [f"# BioTorch's LeNet table with seeds: {title}", ""]
    if meta.get("interrupted"):
        out += [f"**Incomplete**: {meta['finished_jobs']} of {meta['jobs']} runs finished "
                f"({meta.get('stopped_by')}); the numbers cover those.", ""]
    out += _summary(config, summary, found, meta)
    out += ["---", ""] + _design_section(found) + _claims_section(found)
    out += _stuck_section(found) + _per_seed_lines(summary) + _alignment_lines(summary)
    out += _protocol_lines(config) + _time_lines(summary, meta)
    out += ["## Figures", ""] + [f"![{f.stem}]({f.name})" for f in figures]
    return "\n".join(out) + "\n"


def terminal_table(config: BiotorchConfig, summary: dict[str, Any], found: dict[str, Any],
                   meta: dict[str, Any]) -> str:
    lines = [profile_line(config, meta).replace("**", ""), "",
             f"{'rule':<14}{'test error % [95% CI]':<26}{'seeds':>6}{'stuck':>7}"
             f"{'BioTorch':>10}"]
    for rule, row in summary.items():
        lines.append(f"{rule:<14}{_ci(row['honest']):<26}{row['honest']['n']:>6}"
                     f"{_count(row['stuck']['k'], row['stuck']['n']):>7}"
                     f"{_num(row['biotorch']):>10}")
    lines.append("")
    for c in tested_claims(found):
        role = "" if c["role"] == "confirmatory" else " [exploratory]"
        lines.append(f"{c['statement']}{role} -> {_short_verdict(c)}")
    return "\n".join(lines)
