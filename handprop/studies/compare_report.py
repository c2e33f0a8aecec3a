"""The compare study's findings and outputs: the literature held up against the data
(Lillicrap et al. 2016; BioTorch), figures, report.md and the terminal table (the
skeleton in :mod:`.study` writes them)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .claims import Claim, as_record, judge
from .compare_base import CompareConfig, errors_by_seed
from .records import alignment_epochs, alignment_matrices, cost_matrix

# BioTorch (Sanfiz & Akrout 2021), LeNet on MNIST, top-1 error %.
BIOTORCH_LENET_MNIST = {"exact": 0.91, "usf": 0.94, "brsf": 0.91, "frsf": 0.97, "fa": 1.70,
                        "dfa": 1.61}


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def _deg(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1f}"


def _per_seed_metric(records: list[dict], section: str, layer: str, reduce
                     ) -> dict[int, float]:
    """{seed: reduce(the layer's angles after training started)} over the runs' logs."""
    out = {}
    for record in records:
        values = ((record.get("alignment") or {}).get(section) or {}).get(layer, {}).get(
            "angle_deg", [])
        later = [v for v in values[1:] if v is not None]  # entry 0: before training
        out[record["seed"]] = reduce(later) if later and not record["diverged"] else math.nan
    return out


def _paired_errors(records: dict[str, list[dict]], a: str, b: str):
    from .statistics import paired_comparison

    first, second = errors_by_seed(records[a]), errors_by_seed(records[b])
    seeds = sorted(set(first) & set(second))
    return paired_comparison([first[s] for s in seeds], [second[s] for s in seeds],
                             lower_is_better=True, labels=(a, b))


def biotorch_claims(records: dict[str, list[dict]]) -> list[Claim]:
    """BioTorch: sign symmetry close to back-propagation, FA and DFA behind -- as paired
    tests of test error over seeds, for the rules of those families that ran."""
    from ..rules import rules_in

    sign = [r for r in rules_in("sign-symmetry") if records.get(r)]
    random = [r for r in rules_in("random-feedback") if records.get(r)]
    claims: list[Claim] = []
    if records.get("exact"):
        claims += [Claim(f"exact back-propagation has a lower test error than {r}",
                         _paired_errors(records, "exact", r), "exact", unit="%",
                         extra={"source": "biotorch"}) for r in random]
        claims += [Claim(f"(close to back-propagation) do {r} and exact differ in test error?",
                         _paired_errors(records, r, "exact"), None, unit="%",
                         extra={"source": "biotorch"}) for r in sign]
    claims += [Claim(f"{s} (sign symmetry) has a lower test error than {r}",
                     _paired_errors(records, s, r), s, unit="%", extra={"source": "biotorch"})
               for s in sign for r in random]
    return claims


def lillicrap_claims(records: list[dict]) -> list[Claim]:
    """Lillicrap et al. 2016: FA's hidden-layer signal comes within 90 degrees of
    back-propagation's early and stays there. Per seed and hidden layer, the largest angle
    measured after training started, tested against 90 degrees over seeds; on the signal
    (what the paper measured) and on the weight update."""
    from .statistics import paired_comparison

    claims = []
    sections = (("signal", "hidden-layer signal (what Lillicrap et al. measured)"),
                ("gradient", "weight update"))
    for section, what in sections:
        layers = [layer for layer in alignment_matrices(records, section)]
        if section == "gradient":
            layers = layers[:-1]  # the output layer's update is exact under FA
        for layer in layers:
            worst = _per_seed_metric(records, section, layer, max)
            seeds = sorted(worst)
            comparison = paired_comparison([worst[s] for s in seeds], [90.0] * len(seeds),
                                           lower_is_better=True,
                                           labels=(f"fa {layer}", "90 degrees"))
            claims.append(Claim(f"FA's {what} at {layer} stays within 90 degrees of "
                                "back-propagation's after training starts (largest angle "
                                "per seed)", comparison, f"fa {layer}", unit="deg",
                                extra={"source": "lillicrap", "section": section,
                                       "layer": layer}))
    return claims


def literature(summary: dict[str, Any], records: dict[str, list[dict]]) -> dict[str, Any]:
    """The literature's claims as paired tests over seeds, Holm-adjusted together."""
    claims = biotorch_claims(records)
    if records.get("fa"):
        claims += lillicrap_claims(records["fa"])
    judge(claims)
    return {"claims": [as_record(c) for c in claims],
            "tests": sum(1 for c in claims if c.comparison is not None),
            "biotorch_lenet_mnist_error_pct": BIOTORCH_LENET_MNIST}


def write_figures(out: Path, config: CompareConfig, records: dict[str, list[dict]],
                  summary: dict[str, Any]) -> list[Path]:
    """Test error per rule, cost curves, and the alignment grids (update and hidden-layer
    signal to the exact gradient; feedback B to forward W)."""
    from ..pictures.plots import alignment_grid, curves, grouped_points

    figures = []
    values = {("test error", rule): (row["test_error_mean"], *row["test_error_ci"])
              for rule, row in summary.items() if row["test_error_mean"] is not None}
    figures.append(grouped_points(out / "test_error.png", ["test error"], config.rules, values,
                                  f"test error per rule ({config.seeds} seeds, mean and 95% CI "
                                  "over seeds)", "test error (fraction)"))
    figures.append(curves(out / "cost.png", {rule: cost_matrix(records[rule])
                                             for rule in config.rules},
                          "training cost per epoch (mean over seeds, 95% t band)", "cost",
                          log=True))
    epochs = alignment_epochs([r for rows in records.values() for r in rows])
    for section, title, ylabel in (
            ("gradient", "angle between each rule's update and the exact gradient", None),
            ("signal", "angle between the signal each rule sends to a hidden layer and the "
                       "exact one", None),
            ("weights", "angle between feedback B and forward weights W",
             "angle(B, W) (degrees)")):
        align = {rule: alignment_matrices(records[rule], section) for rule in config.rules
                 if rule != "exact"}
        align = {rule: m for rule, m in align.items() if m}
        layers = list(dict.fromkeys(layer for per in align.values() for layer in per))
        if layers:
            figures.append(alignment_grid(out / f"alignment_{section}.png", layers, align, title,
                                          **({"ylabel": ylabel} if ylabel else {}),
                                          epochs=epochs))
    return figures


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
        lines.append(f"{claim['statement']} -> {claim['verdict']}")
    lines.append(f"time: {meta['seconds']:.1f}s")
    return "\n".join(lines)


def _test_error_section(config: CompareConfig, summary: dict[str, Any],
                        meta: dict[str, Any]) -> list[str]:
    """The report's opening (the protocol) and its test-error table."""
    lines = [
        "# handprop compare: learning rules against exact back-propagation", "",
        f"Network `{meta['net']}` on `{config.data}` ({meta['train_images']} training images, "
        f"{meta['test_images']} held-out test images per seed), softmax cross-entropy, "
        f"minibatches of {config.batch_size}, {config.optimizer} (lr {config.lr}"
        f"{'' if config.optimizer in ('adam', 'sgd') else f', momentum {config.momentum}'}), "
        f"{config.epochs} epochs, reshuffled every epoch.",
        f"Seeds {config.first_seed}..{config.first_seed + config.seeds - 1} "
        f"({config.seeds}), paired: for a seed, every rule starts from the same weights and "
        "sees the same split and order. **The unit of replication is the trained network**: "
        "one test error per seed and rule; intervals are 95% studentized-bootstrap intervals "
        "over seeds (t-intervals where many tied values make the bootstrap-t unstable; each "
        "interval's method is in summary.json); tests are exact sign-flip permutation "
        "tests of paired differences over seeds, every p with its n and the smallest p n "
        "allows, Holm-adjusted across all the tests of this report.",
        f"Alignment is measured before training, every {config.align_every} epochs and after "
        f"the last, on a fixed probe batch (the first {config.probe} training images of each "
        "run).",
        f"Time: {meta['seconds']:.1f} s ({meta['skipped_jobs']} of {meta['jobs']} jobs reused).",
        "",
        "## Test error", "",
        "| rule | runs | diverged | test error % (mean over seeds) | 95% CI | final train "
        "cost |", "|---|---|---|---|---|---|",
    ]
    for rule, row in summary.items():
        low, high = row["test_error_ci"] or (None, None)
        cost = "n/a" if row["final_cost_mean"] is None else f"{row['final_cost_mean']:.4g}"
        lines.append(f"| {rule} | {row['runs']} | {row['diverged']} | "
                     f"{_pct(row['test_error_mean'])} | [{_pct(low)}, {_pct(high)}] | "
                     f"{cost} |")
    return lines


def _alignment_section(summary: dict[str, Any]) -> list[str]:
    lines = ["", "## Alignment at the last measurement (mean over seeds)", "",
             "Angle between the rule's update and the exact gradient (0 = same direction, "
             "90 = orthogonal) per weight array, and between the signal it sends to each "
             "hidden layer and the exact one; for rules with a feedback matrix B in place of "
             "W: angle(B, W), |B| / |W| and the fraction of entries where sign(B) = sign(W).",
             "", "| rule | where | angle | same-sign entries | angle(B, W) | norm ratio "
             "\\|B\\| / \\|W\\| | sign concordance |", "|---|---|---|---|---|---|---|"]
    for rule, row in summary.items():
        for layer, metrics in {**row["alignment"], **row["signal_alignment"]}.items():
            weight = row["weight_alignment"].get(layer, {})
            ratio = weight.get("norm_ratio_final_mean")
            concord = weight.get("sign_concordance_final_mean")
            lines.append(
                f"| {rule} | {layer} | {_deg(metrics.get('angle_deg_final_mean'))} | "
                f"{_pct(metrics.get('sign_agreement_final_mean'))}% | "
                f"{_deg(weight.get('angle_deg_final_mean'))} | "
                f"{'n/a' if ratio is None else f'{ratio:.3g}'} | "
                f"{'n/a' if concord is None else f'{100 * concord:.1f}%'} |")
    return lines


def _literature_section(summary: dict[str, Any], lit: dict[str, Any]) -> list[str]:
    lines = ["", "## Against the literature", "",
             f"{lit['tests']} tests, Holm-adjusted together. A verdict is *supported* or "
             "*contradicted* only when the adjusted p < 0.05; otherwise *not resolved*, with "
             "the seeds a paired test would need at 80% power for the effect seen, at the level "
             f"0.05/{lit['tests']} (Holm never asks for less).", ""]
    lines += ["**BioTorch** (Sanfiz & Akrout 2021, LeNet on MNIST, top-1 error %: " +
              ", ".join(f"{k} {v}" for k, v in lit["biotorch_lenet_mnist_error_pct"].items()) +
              "): sign symmetry stays close to back-propagation; FA and DFA fall behind. "
              "Here: `dfa` injects the output error at each hidden activation's output, "
              "*before* pooling; `dfa-biotorch` replaces each weight layer's input gradient, "
              "*after* pooling, as BioTorch does (docs/rules.md).", ""]
    lines += _claims_table([c for c in lit["claims"] if c.get("source") == "biotorch"])
    lines += ["", "**Lillicrap et al. 2016**: feedback alignment's hidden-layer *signal* "
              "comes within 90 degrees of back-propagation's early in training and stays "
              "there (the paper states it for the signal, delta h; the update of each weight "
              "array is tested too).", ""]
    lines += _claims_table([c for c in lit["claims"] if c.get("source") == "lillicrap"])
    return lines + [""]


def _claims_table(claims: list[dict[str, Any]]) -> list[str]:
    if not claims:
        return ["(not run: the rules it needs are not in this study)"]
    return ["| claim | what the data say | verdict |", "|---|---|---|"] + [
        f"| {c['statement']} | {c['evidence'].replace('|', '/')} | {c['verdict']} |"
        for c in claims]


def markdown(config: CompareConfig, summary: dict[str, Any], lit: dict[str, Any],
             meta: dict[str, Any], figures: list[Path]) -> str:
    """The text of ``report.md``."""
    lines = []
    if meta.get("interrupted"):
        why = meta.get("stopped_by")
        why = f" ({why})" if why and why != "interrupt" else ""
        lines += [f"**Interrupted**{why}: this report covers the runs that finished.", ""]
    lines += (_test_error_section(config, summary, meta) + _alignment_section(summary)
              + _literature_section(summary, lit))
    lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    return "\n".join(lines)
