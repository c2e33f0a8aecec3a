"""The reproduce study's outputs: PNG figures, report.md and the terminal summary (the
skeleton in :mod:`.study` writes them). The numbers come from :func:`.reproduce.summarize`,
:mod:`.reproduce_claims`, :mod:`.ablations` and :mod:`.sensitivity`.

The report opens with one screen: the confirmatory claims (verdict, effect with its
interval, n and stuck seeds) and the findings that matter, in plain words. Everything
else follows, compact.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..pictures.plots import EXACT_DEGREES
from .ablations import SETUPS
from .claims import design_text
from .records import alignment_epochs, alignment_matrices, cost_matrix
from .reproduce_base import STUCK_SHARE, Records, ReproduceConfig
from .reproduce_claims import tested_claims
from .sensitivity import LABELS, THRESHOLDS, median
from .statistics import proportion_interval

CHANCE_COST = 43.75  # the cost of predicting 0.5 for each of the article's 350 images


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}g}"


def _pct(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}%"


def _deg(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1f}"


def _ci(pair: list[float] | None, show=_fmt) -> str:
    return "n/a" if not pair else f"[{show(pair[0])}, {show(pair[1])}]"


def _count(k: int, n: int) -> str:
    """``"3/11 (95% CI 6-61%)"``: k of n with its exact interval."""
    low, high = proportion_interval(k, n)
    return f"{k}/{n} ({_pct(low)}-{_pct(high)})" if n else "n/a"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


# -- figures ---------------------------------------------------------------------------

def write_figures(out: Path, config: ReproduceConfig, records: Records,
                  summary: dict[str, Any]) -> list[Path]:
    from ..pictures.plots import seed_traces

    figures = []
    for variant in config.variant:
        for experiment in config.experiments:
            panels = {rule: cost_matrix(records.get((variant, experiment.name, rule,
                                                     "article"), []))
                      for rule in config.rules_of(variant)}
            figures.append(seed_traces(
                out / f"cost_{variant}_{experiment.name}.png", panels,
                f"{experiment.name}, {variant} network: training cost per epoch, every seed",
                "cost (sum over 350 images)", chance=(CHANCE_COST, "predicting 0.5")))
    figures += _accuracy_figures(out, config, summary)
    figures += _alignment_figures(out, config, records)
    figures += _ablation_figure(out, config, records)
    figures += _sensitivity_figure(out, config, records)
    return figures


def _accuracy_figures(out: Path, config: ReproduceConfig, summary: dict[str, Any]
                      ) -> list[Path]:
    from ..pictures.plots import seed_points

    figures = []
    groups = [e.name for e in config.experiments]
    for metric, label in (("test10_accuracy", "the article's 10 test images"),
                          ("heldout_accuracy", "72 held-out images per seed")):
        for variant in config.variant:
            values = {}
            for name, data in summary.get(variant, {}).items():
                for rule, row in data["rules"].items():
                    stat = row[metric]
                    seeds = [v for v in stat["per_seed"].values() if math.isfinite(v)]
                    if seeds and stat["ci"]:
                        values[(name, rule)] = (np.array(seeds), (stat["mean"], *stat["ci"]))
            if values:
                protocol = "article" if metric.startswith("test10") else "heldout"
                figures.append(seed_points(
                    out / f"accuracy_{protocol}_{variant}.png", groups,
                    config.rules_of(variant), values,
                    f"{variant} network: accuracy on {label} (dots: seeds; bar: mean, 95% CI)",
                    "accuracy (%)", ylim=(0.0, 1.05), chance=(0.5, "chance")))
    return figures


def _alignment_figures(out: Path, config: ReproduceConfig, records: Records) -> list[Path]:
    """Per experiment one grid: each weight array's update and each hidden layer's signal,
    as angles to the exact ones."""
    from ..pictures.plots import alignment_grid

    figures = []
    variant = config.variant[0]
    for experiment in config.experiments:
        runs = {rule: records.get((variant, experiment.name, rule, "article"), [])
                for rule in config.rules_of(variant) if rule != "exact"}
        align: dict[str, dict] = {rule: {} for rule in runs}
        for section, prefix in (("gradient", "update "), ("signal", "signal to ")):
            for rule, rows in runs.items():
                align[rule].update({prefix + layer.removesuffix(".weight"): matrix
                                    for layer, matrix in
                                    alignment_matrices(rows, section).items()})
        layers = list(dict.fromkeys(layer for per in align.values() for layer in per))
        epochs = alignment_epochs([r for rows in runs.values() for r in rows])
        if layers:
            figures.append(alignment_grid(
                out / f"alignment_{experiment.name}.png", layers, align,
                f"{experiment.name}: angle of each rule's update and hidden-layer signal to the "
                "exact ones (median, quartiles)", epochs=epochs))
    return figures


def _ablation_figure(out: Path, config: ReproduceConfig, records: Records) -> list[Path]:
    from ..pictures.plots import seed_traces

    panels = {name: cost_matrix(records.get(("ablation", name, SETUPS[name][0], "article"),
                                            []))
              for name in config.ablations}
    if not any(m.size for m in panels.values()):
        return []
    fc = config.ablation_fc
    return [seed_traces(out / "ablations.png", panels,
                        f"as-run network, dense {fc[0]}/{fc[1]}: cost per epoch under each "
                        "ablation, every seed", "cost (sum over 350 images)",
                        chance=(CHANCE_COST, "predicting 0.5"))]


def _sensitivity_figure(out: Path, config: ReproduceConfig, records: Records) -> list[Path]:
    from ..pictures.plots import separation

    figures = []
    for experiment in config.sensitivity_list:
        runs = {}
        for rule in ("seed-original", "seed-broken"):
            rows = records.get(("sensitivity", experiment.name, rule, "sensitivity"), [])
            runs[rule] = [{"kind": r["perturbation"], "steps": _nan(r.get("step_distance")),
                           "switches": _switches_before_parting(r),
                           "epochs": _nan(r["relative_distance"])} for r in rows]
        if any(runs.values()):
            figures.append(separation(out / f"sensitivity_{experiment.name}.png", runs,
                                      f"{experiment.name}: one initial weight moved by one ulp "
                                      "or 1e-8, distance to the unmoved run (dots: switches "
                                      "before the runs part)"))
    return figures


def _switches_before_parting(record: dict) -> list[int]:
    """The steps with a switch, up to the one where the tracked distance passed PARTED
    (after it, every step switches: the runs are apart)."""
    parted = (record.get("parting") or {}).get("parted_step") or len(record.get("step_relu") or [])
    return [i + 1 for i, (a, b) in enumerate(zip(record.get("step_routing") or [],
                                                  record.get("step_relu") or [], strict=True))
            if a + b and i < parted]


def _nan(values: list | None) -> list[float]:
    return [math.nan if v is None else v for v in values or []]


# -- report.md ---------------------------------------------------------------------------

def markdown(config: ReproduceConfig, summary: dict[str, Any], findings: dict[str, Any],
             meta: dict[str, Any], figures: list[Path]) -> str:
    lines = ["# handprop reproduce: the article's original vs broken back-propagation", ""]
    if meta.get("interrupted"):
        lines += [f"**Interrupted** ({meta.get('stopped_by') or 'interrupt'}): this report "
                  "covers the runs that finished.", ""]
    lines += _summary(config, summary, findings)
    lines += _design_section(findings["claims"])
    lines += _claims_section(findings["claims"])
    lines += _stuck_section(config, summary, findings.get("stuck", []))
    lines += _as_run_section(config, summary, findings.get("ablations", {}),
                             findings.get("mechanism", {}))
    lines += _tables(summary)
    lines += _sensitivity_section(findings.get("sensitivity", {}), config)
    lines += ["## Figures", ""] + [f"![{path.stem}]({path.name})" for path in figures]
    lines += ["", "Cost figures: one thin line per seed, the median thick, the cost of "
              "predicting 0.5 dashed. Accuracy figures: one dot per seed, the mean with its "
              "95% interval as a bar, chance (50%) dashed. Alignment: median over seeds and "
              "the quartiles, 90 degrees dashed.", ""]
    lines += _method(config, {**meta, "engines": findings.get("engines")})
    return "\n".join(lines)


def _stuck_counts(findings: dict[str, Any], pairing: str, experiment: str) -> str:
    for row in findings.get("stuck", []):
        if (row["pairing"], row["experiment"], row["protocol"]) == (pairing, experiment,
                                                                    "article"):
            return (f"{row['n']} / {row['stuck_broken']} broken, "
                    f"{row['stuck_original']} original")
    return "n/a"


def _summary(config: ReproduceConfig, summary: dict[str, Any], findings: dict[str, Any]
             ) -> list[str]:
    claims = findings["claims"]
    lines = ["## Summary", "",
             f"The article's claims, fixed before the run ({claims['family']} confirmatory "
             "tests, Holm-adjusted together; tested as \"most seeds go one way\", the exact "
             "sign test). Stuck: seeds whose trained net gives one class to (nearly) every "
             "training image.", "",
             "| pairing, experiment: claim | verdict | effect [95% CI] | n / stuck |",
             "|---|---|---|---|"]
    for c in tested_claims(claims, "confirmatory"):
        lines.append(f"| {_cell(c['label'])}: {_cell(c['statement'])} | "
                     f"{_cell(_short_verdict(c))} | {_cell(c['effect'])} | "
                     f"{_stuck_counts(findings, c['pairing'], c['experiment'])} |")
    lines += ["", "What matters:", ""]
    lines += [f"* {text}" for text in _key_findings(config, summary, findings)]
    return lines + [""]


def _short_verdict(claim: dict[str, Any]) -> str:
    verdict = claim["verdict"]
    if claim.get("fragile"):
        verdict += " (fragile: one reversed seed undoes it)"
    return verdict


def _key_findings(config: ReproduceConfig, summary: dict[str, Any],
                  findings: dict[str, Any]) -> list[str]:
    out = []
    as_run = _as_run_counts(summary)
    if as_run:
        stuck, n, lucky = as_run
        ablations = findings.get("ablations", {})
        parts = [f"{ablations[name]['stuck']}/{ablations[name]['n']} with {name}"
                 for name in ("exact-gradient", "conv-lr-0.1", "frozen-conv")
                 if name in ablations]
        base = ablations.get("code")
        out.append(
            "**The network the author's code ran mostly does not learn.** "
            f"{_count(stuck, n)} of its article runs (both of the code's rules, "
            f"{len(config.experiments)} widths, {config.epochs} epochs) end stuck at chance; "
            f"{_count(lucky, n)} get 9 or 10 of the 10 test images right, as the article "
            "reports (all but one right): its result is plausible only as a lucky draw."
            + (f" On the author's protocol (dense {config.ablation_fc[0]}/"
               f"{config.ablation_fc[1]}, {config.ablation_epochs} epochs) {base['stuck']}/"
               f"{base['n']} seeds end stuck with the code's rule, " + ", ".join(parts)
               + " (the ablations below)." if base else ""))
    decided = [c for c in tested_claims(findings["claims"], "confirmatory")
               if c["verdict"] in ("supported", "contradicted")]
    undecidable = [c for c in tested_claims(findings["claims"], "confirmatory")
                   if c["verdict"].startswith("undecidable") or "above Holm" in c["verdict"]]
    out.append(f"{len(decided)} of {findings['claims']['family']} confirmatory claims decided"
               + (": " + "; ".join(f"{c['label']} -- {c['statement']}: **{c['verdict']}**"
                                   for c in decided) if decided else "")
               + (f"; {len(undecidable)} could not be decided at all with these seeds and ties"
                  " (their smallest possible p is above the threshold Holm applies)."
                  if undecidable else "."))
    chaos = _label_totals(findings.get("sensitivity", {}))
    if chaos:
        out.append("One initial weight moved by one ulp or 1e-8: " + ", ".join(
            f"{count} run{'s' if count != 1 else ''} {label}" for label, count in chaos.items()
            if count) + " (step by step over the first epochs; the section below).")
    return out


def _as_run_counts(summary: dict[str, Any]) -> tuple[int, int, int] | None:
    stuck = n = lucky = 0
    for data in summary.get("as-run", {}).values():
        for row in data["rules"].values():
            stat = row["test10_accuracy"]
            n += stat["n"]
            stuck += stat["stuck"]
            lucky += sum(1 for v in stat["per_seed"].values() if v >= 0.9)
    return (stuck, n, lucky) if n else None


def _label_totals(sensitivity: dict[str, Any]) -> dict[str, int]:
    totals = dict.fromkeys(LABELS, 0)
    for data in sensitivity.values():
        for per_kind in data["parting"].values():
            for row in per_kind.values():
                for label, count in row.get("labels", {}).items():
                    totals[label] = totals.get(label, 0) + count
    return {k: v for k, v in totals.items() if v}


def _design_section(claims: dict[str, Any]) -> list[str]:
    lines = ["## The design, fixed before the run", "",
             f"The Holm family: {claims['family_source']} ({claims['family']} tests). "
             "Exploratory questions are reported apart, unadjusted. What each confirmatory "
             "claim could reach with these seeds, said before any training (ties can only "
             "raise the smallest p: the claims table gives it with the ties seen):", "",
             "```"]
    lines += design_text(claims["design"])
    return lines + ["```", ""]


def _claims_section(claims: dict[str, Any]) -> list[str]:
    lines = ["## The claims in detail", "",
             "Confirmatory (Holm-adjusted over the family):", "",
             "| pairing, experiment | claim | verdict | the numbers |", "|---|---|---|---|"]
    lines += [f"| {_cell(c['label'])} | {_cell(c['statement'])} | {_cell(_short_verdict(c))} "
              f"| {_cell(c['evidence'])} |" for c in claims["claims"]
              if c["role"] == "confirmatory"]
    lines += ["", "Exploratory (not claimed by the article; unadjusted p):", "",
              "| pairing, experiment | question | answer | the numbers |", "|---|---|---|---|"]
    lines += [f"| {_cell(c['label'])} | {_cell(c['statement'])} | {_cell(c['verdict'])} | "
              f"{_cell(c['evidence'])} |" for c in claims["claims"]
              if c["role"] == "exploratory"]
    return lines + [""]


def _stuck_section(config: ReproduceConfig, summary: dict[str, Any],
                   rows: list[dict[str, Any]]) -> list[str]:
    lines = ["## Stuck at chance, then the seeds that learned", "",
             f"The outcomes are bimodal. A run is **stuck at chance** when its trained net "
             f"gives one class to at least {STUCK_SHARE:.0%} of its training images. Each "
             "comparison below is "
             "over the same seeds: the exact McNemar test counts the seeds stuck under one "
             "net only; then, held-out accuracy among the seeds where both nets learned "
             "(exploratory, unadjusted).", "",
             "| pairing, experiment | runs | stuck: broken | stuck: original | only broken / "
             "only original | McNemar p | both learned: held-out broken - original |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        learned = ""
        if row["protocol"] == "heldout":
            learned = (f"{row['learned_n']} seed{'' if row['learned_n'] == 1 else 's'}: "
                       f"{_pct(row.get('learned_diff'), 1)} {_ci(row.get('learned_ci'), _pp)}"
                       if row.get("learned_n") else "none")
        lines.append(f"| {row['pairing']}, {row['experiment']} | {row['protocol']} | "
                     f"{_count(row['stuck_broken'], row['n'])} | "
                     f"{_count(row['stuck_original'], row['n'])} | {row['only_broken']} / "
                     f"{row['only_original']} | {_fmt(row['p_value'])} | {learned} |")
    return lines + [""]


def _pp(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:+.1f} pp"


def _as_run_section(config: ReproduceConfig, summary: dict[str, Any],
                    ablations: dict[str, Any], mechanism: dict[str, Any]) -> list[str]:
    counts = _as_run_counts(summary)
    if counts is None:
        return []
    stuck, n, lucky = counts
    lines = ["## The network the author's code ran", "",
             "The published code's layer 2 applies conv1's second kernel W1b to all four "
             "maps, so W2a..W2d never act; yet the code updates them and sends the gradient "
             "back to layer 1 through them (seed-spec section 2). The article's figures come "
             "from a run of that code. Here it learns in a minority of seeds:", "",
             f"* {_count(stuck, n)} of the as-run article runs end stuck at chance "
             "(cost near 44, the cost of predicting 0.5; or near 88, the wrong class with "
             f"certainty); {_count(lucky, n)} get 9 or 10 of the 10 test images right. The "
             "article's \"every test image right except one\" is one such draw.", ""]
    if not ablations:
        return lines
    fc = config.ablation_fc
    lines += [f"Ablations run by this study on the author's protocol (dense {fc[0]}/{fc[1]}, "
              f"{config.ablation_epochs} epochs, lr {config.lr}, alpha {config.momentum}, the "
              "article's split), the same seeds and weights for each:", "",
              "| ablation | rule | stuck (95% CI) | vs the code's rule: stuck only here / only "
              "there (McNemar p) |", "|---|---|---|---|"]
    for name, row in ablations.items():
        versus = ("baseline" if name == "code" else
                  f"{row.get('vs_code_only_this', 'n/a')} / {row.get('vs_code_only_code', 'n/a')} "
                  f"({_fmt(row.get('vs_code_p'))})")
        factor = "" if row["factor"] is None else f" x{row['factor']:g} on conv gradients"
        lines.append(f"| {name} | {row['rule']}{factor} | {_count(row['stuck'], row['n'])} | "
                     f"{versus} |")
    lines += ["", _ablation_sentence(ablations)]
    rows = {f"ablation {name}": row["mechanism"] for name, row in ablations.items()}
    rows.update({f"{key}, {config.epochs} epochs": row for key, row in mechanism.items()})
    lines += ["", "What the trained nets look like (on 64 training images; stuck and learning "
              r"runs apart): the growth of conv1's ReLU kernel \|W1a\| (after / before, "
              "median), the runs whose ReLU channel is dead (no positive feature), and the "
              r"median share of fc3 pre-activations with \|z\| > 3 (arctan saturated):", "",
              r"| runs | stuck: runs | \|W1a\| growth | dead ReLU | fc3 saturated | learned: "
              r"runs | \|W1a\| growth | dead ReLU | fc3 saturated |", "|---" * 9 + "|"]
    for key, row in rows.items():
        cells = [f"{part['runs']} | {_fmt(part['w1a_growth'])} | {part['relu_dead']} | "
                 f"{_pct(part['fc3_saturated'])}" for part in (row["stuck"], row["learned"])]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += ["", "Replay the author's own protocol, with its seed handling (np.random.seed(S), "
              "sklearn's shuffle, then W1a..W5 in the code's order): `handprop reproduce "
              "--config handprop/studies/configs/reproduce-author.toml`.", ""]
    return lines


def _ablation_sentence(ablations: dict[str, Any]) -> str:
    """The ablations from fewest seeds stuck to most, against the code's rule."""
    base = ablations.get("code")
    ranked = sorted((row["stuck"] / row["n"], name) for name, row in ablations.items()
                    if name != "code")
    if base is None or not ranked:
        return ""
    parts = [f"{name} {ablations[name]['stuck']}/{ablations[name]['n']} (McNemar p "
             f"{_fmt(ablations[name].get('vs_code_p'))})" for _, name in ranked]
    return (f"Seeds stuck, fewest first: {', '.join(parts)}; the code's rule "
            f"{base['stuck']}/{base['n']}. Exploratory comparisons over {base['n']} seeds, "
            "unadjusted.")


def _tables(summary: dict[str, Any]) -> list[str]:
    lines = ["## Per rule", "",
             "Per seed values are in summary.json. Means over all seeds carry the two-part "
             "interval (stuck fraction and the two parts, see statistics.py); \"learned\" "
             "is the mean over seeds not stuck, with a bootstrap-t interval.", ""]
    for variant, experiments in summary.items():
        for name, data in experiments.items():
            lines += [f"**{name}, {variant} network** (dense {data['fc'][0]}/{data['fc'][1]})",
                      "", "| rule | stuck | final cost: all seeds | learned | test10: 10/10 | "
                      "held-out: stuck | all seeds | learned |", "|---" * 8 + "|"]
            for rule, row in data["rules"].items():
                cost, test10, held = (row[k] for k in ("final_cost", "test10_accuracy",
                                                        "heldout_accuracy"))
                lines.append(
                    f"| {rule} | {cost['stuck']}/{cost['n']} | {_fmt(cost['mean'])} "
                    f"{_ci(cost['ci'])} | {_fmt(cost['learned_mean'])} "
                    f"{_ci(cost['learned_ci'])} | {row['test10_all_correct']}/{test10['n']} | "
                    f"{held['stuck']}/{held['n']} | {_pct(held['mean'], 1)} "
                    f"{_ci(held['ci'], _pct)} | {_pct(held['learned_mean'], 1)} "
                    f"{_ci(held['learned_ci'], _pct)} |")
            diverged = sum(row["diverged"] for row in data["rules"].values())
            if diverged:
                lines.append(f"\n{diverged} article run(s) diverged (cost NaN or infinite): "
                             "their values are left out.")
            lines.append("")
            lines += _alignment_rows(data["rules"])
    return lines


def _alignment_rows(rows: dict[str, Any]) -> list[str]:
    table, zero = [], []
    for rule, row in rows.items():
        for layer, m in {**row["alignment"], **row["signal_alignment"]}.items():
            angle = m.get("angle_deg_final_mean")
            if angle is not None and math.isfinite(angle) and abs(angle) < EXACT_DEGREES:
                zero.append(f"{rule} {layer}")
            else:
                table.append((rule, layer, angle, m.get("angle_deg_final_undefined")))
    if not table:
        return []
    lines = ["Angle to the exact gradient after the last epoch (mean over seeds, degrees; "
             "weight arrays: the update, activations: the hidden-layer signal). Rows where "
             f"every seed's angle is 0 (the rule is exact there) are left out: "
             f"{len(zero)} of them.", "",
             "| rule | " + " | ".join(sorted({layer for _, layer, _, _ in table})) + " |"]
    layers = sorted({layer for _, layer, _, _ in table})
    lines.append("|---|" + "---|" * len(layers))
    for rule in dict.fromkeys(r for r, _, _, _ in table):
        cells = {layer: angle for r, layer, angle, _ in table if r == rule}
        lines.append(f"| {rule} | " + " | ".join(_deg(cells.get(layer, 0.0)) if layer in cells
                                                 else "0" for layer in layers) + " |")
    return lines + [""]


def _sensitivity_section(sensitivity: dict[str, Any], config: ReproduceConfig) -> list[str]:
    if not sensitivity:
        return []
    lines = ["## What a single run can show: chaos or a discontinuity?", "",
             f"For the first {config.sensitivity} seed(s), on "
             f"{', '.join(sensitivity)}, seed-original and seed-broken were trained again with "
             "ONE initial weight moved by one ulp and by 1e-8 (everything else identical). The "
             f"first {config.track_epochs} epoch(s) were followed step by step: the distance "
             "after every step, and at every step the *switches* between the moved and the "
             "unmoved run (max-pool windows routed differently, ReLU pre-activations of "
             "different sign). A *discontinuity* is growth carried by switches (at least half "
             f"of the decades gained before the distance passes 1e-3, or a jump of 3 decades "
             "at a switch); *growth without switches* is the difference amplified step after "
             "step by the dynamics themselves (chaos). Description of these runs, not "
             "inference.", "",
             "| experiment | rule | moved by | what the tracked steps show | parted at step "
             "(median) | decades per step (median) | share of growth at switches (median) | "
             f"first epoch \\|w'-w\\|/\\|w\\| > {THRESHOLDS[1]:g} (median) | final distance "
             "(median) |", "|---|---|---|---|---|---|---|---|---|"]
    flips = {"verdict": [0, 0], "rank": [0, 0]}
    for name, data in sensitivity.items():
        for rule, per_kind in data["parting"].items():
            for kind, row in per_kind.items():
                shown = "; ".join(f"{count} {label}" for label, count in row["labels"].items()
                                  if count)
                lines.append(f"| {name} | {rule} | {kind} | {shown} | "
                             f"{_fmt(median(row['parted_step']))} | "
                             f"{_fmt(median(row['decades_per_step']), 2)} | "
                             f"{_pct(median(row['share_at_switches']))} | "
                             f"{_fmt(median(row['first_epoch_over'][str(THRESHOLDS[1])]))} | "
                             f"{_fmt(median(row['final_relative_distance']))} |")
        for key, field in (("verdict", "verdict_flips"), ("rank", "ranking_flips")):
            flips[key][0] += data[field]["flipped"]
            flips[key][1] += data[field]["pairs"]
    lines += ["", f"The 10-image verdict (all right or not) changed in {flips['verdict'][0]} of "
              f"{flips['verdict'][1]} moved runs; which net ended with the lower cost changed "
              f"in {flips['rank'][0]} of {flips['rank'][1]} seed-and-nudge pairs. A single "
              "run, like each of the article's, is one draw: only paired tests over seeds can "
              "say which net has the lower cost.", ""]
    return lines


def _method(config: ReproduceConfig, meta: dict[str, Any]) -> list[str]:
    held = (f"{config.folds}-fold cross-validation per seed (the seed's accuracy is the mean "
            "over its folds)" if config.folds else
            "a stratified 80/20 split drawn with the seed (288 training images, 72 held out)"
            if config.heldout else "none")
    return [
        "## Method", "",
        f"Seeds {config.first_seed}..{config.first_seed + config.seeds - 1} ({config.seeds}), "
        f"paired ({config.seeding} seeding): for a seed, every rule starts from the same "
        "weights and sees the same data in the same order. **The unit of replication is the "
        "trained network**: every interval and test is over seeds, one number per seed.",
        f"Protocol (the article's): online SGD, {config.epochs} epochs, lr {config.lr}, "
        f"alpha {config.momentum} (v <- alpha v + lr g; w <- w - v), standard-normal "
        "weights, raw pixels (0..16).", "",
        f"* Networks: {', '.join(config.variant)} (*corrected*: the network the article's "
        "text describes; *as-run*: the one its code ran). Rules: "
        f"{', '.join(config.rules)} on the corrected network; {', '.join(config.as_run_rules)} "
        f"on the as-run network. broken-text uses T = {config.transform}.",
        "* **test10**: the article's run (shuffle the 360 images of 0 and 1 with the seed, "
        "hold out the first 10, train on 350). Ten images cannot tell two nets apart.",
        f"* **held-out**: {held}; one held-out accuracy per seed.",
        "* Tests (statistics.py, each level simulated on data shaped like these): *sign* -- "
        "the exact sign test, \"most seeds go one way\", ties dropped (its smallest p is "
        "2/2^(n - ties)); *mean* -- the bootstrap-t and the t-test must both reject; *tost* "
        "-- equivalence within a stated margin. Confirmatory claims are Holm-adjusted "
        "together; a verdict is supported/contradicted only at adjusted p < 0.05, and one "
        "that a single reversed seed would undo is marked fragile. Instead of post-hoc "
        "power: the smallest effect the test detects at 80% power at its level, and the "
        "seeds the effect's interval would need.",
        f"* Engine: {', '.join(meta.get('engines') or ['see the records'])}; time "
        f"{meta['seconds']:.1f} s ({meta['finished_jobs'] - meta['skipped_jobs']} jobs run "
        f"now, {meta['skipped_jobs']} reused), backend `{meta['backend']}`.", ""]


# -- the terminal ------------------------------------------------------------------------

def terminal_summary(config: ReproduceConfig, summary: dict[str, Any],
                     findings: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = []
    for variant, experiments in summary.items():
        for name, data in experiments.items():
            lines.append(f"{name} (dense {data['fc'][0]}/{data['fc'][1]}), {variant} network")
            lines.append(f"  {'rule':<17}{'runs':>5}{'div':>5}{'stuck':>7}{'final cost':>12}"
                         f"{'test10':>9}{'all-10':>8}{'held-out':>10}")
            for rule, row in data["rules"].items():
                lines.append(
                    f"  {rule:<17}{row['runs']:>5}{row['diverged']:>5}"
                    f"{row['final_cost']['stuck']:>7}{_fmt(row['final_cost']['mean']):>12}"
                    f"{_pct(row['test10_accuracy']['mean'], 1):>9}"
                    f"{row['test10_all_correct']:>8}{_pct(row['heldout_accuracy']['mean'], 1):>10}")
    for claim in tested_claims(findings["claims"]):
        lines.append(f"{claim['label']}: {claim['statement']} -> {claim['verdict']}")
    for name, row in findings.get("ablations", {}).items():
        lines.append(f"ablation {name}: {row['stuck']}/{row['n']} seeds stuck")
    lines.append(f"time: {meta['seconds']:.1f}s ({meta['finished_jobs']}/{meta['jobs']} jobs "
                 f"finished, {meta['skipped_jobs']} reused)")
    return "\n".join(lines)

