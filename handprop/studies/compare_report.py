"""The compare study's findings and outputs: the literature held up against the data
(Lillicrap et al. 2016; BioTorch), figures, report.md and the terminal table (the
skeleton in :mod:`.study` writes them)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .records import alignment_matrices, cost_matrix

if TYPE_CHECKING:
    from .compare import CompareConfig

# BioTorch (Sanfiz & Akrout 2021), LeNet on MNIST, top-1 error %.
BIOTORCH_LENET_MNIST = {"exact": 0.91, "usf": 0.94, "brsf": 0.91, "frsf": 0.97, "fa": 1.70,
                        "dfa": 1.61}


def _within_90(records: list[dict]) -> dict[str, dict[str, Any]]:
    """Per layer: the mean angle curve, the first epoch from which it stays below 90."""
    out = {}
    for layer, matrix in alignment_matrices(records).items():
        mean = np.nanmean(matrix, axis=0)
        below = mean < 90
        stays = next((e for e in range(len(mean)) if below[e:].all()), None)
        out[layer] = {"initial": float(mean[0]), "epoch1": float(mean[min(1, len(mean) - 1)]),
                      "final": float(mean[-1]), "below_90_from_epoch": stays,
                      "max_after_epoch1": float(np.max(mean[1:])) if len(mean) > 1 else None}
    return out


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def _deg(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1f}"


def literature(summary: dict[str, Any], records: dict[str, list[dict]]) -> dict[str, Any]:
    """The data held up against Lillicrap et al. (FA within 90 degrees) and BioTorch."""
    result: dict[str, Any] = {}
    if records.get("fa"):
        layers = _within_90(records["fa"])
        hidden = dict(list(layers.items())[:-1])  # the output layer's update is exact in FA
        early = {layer: v["below_90_from_epoch"] is not None and v["below_90_from_epoch"] <= 1
                 for layer, v in hidden.items()}
        held = [layer for layer, ok in early.items() if ok]
        missed = [layer for layer, ok in early.items() if not ok]
        verdict = ("consistent for every hidden layer" if not missed else
                   f"consistent for {', '.join(held) or 'no layer'}; not for {', '.join(missed)}")
        result["lillicrap"] = {
            "claim": "feedback alignment's hidden-layer updates come within 90 degrees of the "
                     "back-propagation updates early in training and stay there",
            "layers": hidden,
            "verdict": verdict,
        }
    errors = {rule: row["test_error_mean"] for rule, row in summary.items()}
    if errors.get("exact") is not None:
        base = errors["exact"]
        gaps = {rule: (None if e is None else e - base) for rule, e in errors.items()}
        sign = [gaps[r] for r in ("usf", "brsf", "frsf") if gaps.get(r) is not None]
        behind = [gaps[r] for r in ("fa", "dfa") if gaps.get(r) is not None]
        verdict = "not enough rules to compare"
        if sign and behind:
            verdict = ("consistent: every sign-symmetry rule is closer to exact than FA and DFA"
                       if max(sign) < min(behind) else
                       "not consistent: some sign-symmetry rule is not closer to exact than "
                       "FA/DFA")
        result["biotorch"] = {
            "claim": "sign symmetry close to back-propagation, FA and DFA behind (BioTorch, "
                     "LeNet on MNIST, top-1 error %: " + ", ".join(
                         f"{k} {v}" for k, v in BIOTORCH_LENET_MNIST.items()) + ")",
            "gap_to_exact": gaps,
            "verdict": verdict,
        }
    return result


def write_figures(out: Path, config: CompareConfig, records: dict[str, list[dict]],
                  summary: dict[str, Any]) -> list[Path]:
    """Test error per rule, cost curves, and the alignment grids (update to the exact
    gradient; feedback B to forward W)."""
    from ..pictures.plots import alignment_grid, curves, grouped_points

    figures = []
    values = {("test error", rule): (row["test_error_mean"], *row["test_error_ci"])
              for rule, row in summary.items() if row["test_error_mean"] is not None}
    figures.append(grouped_points(out / "test_error.png", ["test error"], config.rules, values,
                                  f"test error per rule ({config.seeds} seeds, mean and 95% CI)",
                                  "test error (fraction)"))
    figures.append(curves(out / "cost.png", {rule: cost_matrix(records[rule])
                                             for rule in config.rules},
                          "training cost per epoch (mean, 95% band)", "cost", log=True))
    align = {rule: alignment_matrices(records[rule]) for rule in config.rules if rule != "exact"}
    layers = list(dict.fromkeys(layer for per in align.values() for layer in per))
    if layers:
        figures.append(alignment_grid(out / "alignment_gradient.png", layers, align,
                                      "angle between each rule's update and the exact gradient"))
    weights = {rule: alignment_matrices(records[rule], "weights") for rule in config.rules}
    weights = {rule: m for rule, m in weights.items() if m}
    wlayers = list(dict.fromkeys(layer for per in weights.values() for layer in per))
    if wlayers:
        figures.append(alignment_grid(out / "alignment_weights.png", wlayers, weights,
                                      "angle between feedback B and forward weights W",
                                      "angle(B, W) (degrees)"))
    return figures


def terminal_table(summary: dict[str, Any], lit: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [f"{'rule':<14}{'runs':>5}{'div':>5}{'test error %':>14}{'95% CI':>18}"
             f"{'angle first layer':>19}{'angle last hidden':>19}"]
    for rule, row in summary.items():
        angles = [v.get("angle_deg_final_mean") for v in row["alignment"].values()]
        first = angles[0] if angles else None
        last_hidden = angles[-2] if len(angles) > 1 else None
        low, high = row["test_error_ci"]
        lines.append(f"{rule:<14}{row['runs']:>5}{row['diverged']:>5}"
                     f"{_pct(row['test_error_mean']):>14}"
                     f"{'[' + _pct(low) + ', ' + _pct(high) + ']':>18}"
                     f"{_deg(first):>19}{_deg(last_hidden):>19}")
    for key, item in lit.items():
        lines.append(f"{key}: {item['verdict']}")
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
        f"Seeds {config.first_seed}..{config.first_seed + config.seeds - 1}, paired: for a "
        "seed, every rule starts from the same weights and sees the same split and order. "
        "Intervals are 95% bootstrap intervals over seeds; `vs exact` is the paired mean "
        "difference in test error with an exact sign-flip permutation test (with n seeds "
        "the smallest two-sided p it can give is 2 / 2^n: 0.0625 for 5 seeds).",
        f"Alignment is measured before training and after every epoch on a fixed probe batch "
        f"(the first {config.probe} training images of each run).",
        f"Time: {meta['seconds']:.1f} s ({meta['skipped_jobs']} of {meta['jobs']} jobs reused).",
        "",
        "## Test error", "",
        "| rule | runs | diverged | test error % (mean) | 95% CI | vs exact (pp) | p | final "
        "train cost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rule, row in summary.items():
        low, high = row["test_error_ci"]
        versus = row.get("vs_exact")
        diff = (f"{100 * versus['mean_diff']:+.2f} [{100 * versus['ci_low']:+.2f}, "
                f"{100 * versus['ci_high']:+.2f}]") if versus and versus["n"] else ""
        p = f"{versus['p_value']:.3g}" if versus and versus["n"] else ""
        cost = "n/a" if row["final_cost_mean"] is None else f"{row['final_cost_mean']:.4g}"
        lines.append(f"| {rule} | {row['runs']} | {row['diverged']} | "
                     f"{_pct(row['test_error_mean'])} | [{_pct(low)}, {_pct(high)}] | {diff} | "
                     f"{p} | {cost} |")
    return lines


def _alignment_section(summary: dict[str, Any]) -> list[str]:
    lines = ["", "## Alignment at the last epoch (mean over seeds)", "",
             "Angle between the rule's update and the exact gradient (0 = same direction, "
             "90 = orthogonal), and for rules with a feedback matrix B in place of W: "
             "angle(B, W), |B| / |W| and the fraction of entries where sign(B) = sign(W).", "",
             "| rule | layer | update angle | same-sign entries | angle(B, W) | norm ratio "
             "\\|B\\| / \\|W\\| | sign concordance |", "|---|---|---|---|---|---|---|"]
    for rule, row in summary.items():
        for layer, metrics in row["alignment"].items():
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
    lines = ["", "## Against the literature", ""]
    if "lillicrap" in lit:
        item = lit["lillicrap"]
        lines += [f"**Lillicrap et al. 2016**: {item['claim']}.", "",
                  "| layer | angle before training | after epoch 1 | last epoch | below 90 "
                  "from epoch | max after epoch 1 |", "|---|---|---|---|---|---|"]
        for layer, v in item["layers"].items():
            lines.append(f"| {layer} | {_deg(v['initial'])} | {_deg(v['epoch1'])} | "
                         f"{_deg(v['final'])} | {v['below_90_from_epoch']} | "
                         f"{_deg(v['max_after_epoch1'])} |")
        lines += ["", f"Verdict: {item['verdict']}.", ""]
    if "biotorch" in lit:
        item = lit["biotorch"]
        lines += [f"**BioTorch**: {item['claim']}.", "",
                  "| rule | BioTorch LeNet/MNIST error % | here: test error % | here: gap to "
                  "exact (pp) |", "|---|---|---|---|"]
        for rule, gap in item["gap_to_exact"].items():
            ours = summary[rule]["test_error_mean"]
            lines.append(f"| {rule} | {BIOTORCH_LENET_MNIST.get(rule, '')} | {_pct(ours)} | "
                         f"{'' if gap is None else f'{100 * gap:+.2f}'} |")
        lines += ["", f"Verdict (qualitative, ordering of the gaps): {item['verdict']}.", ""]
    return lines


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
