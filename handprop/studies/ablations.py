"""Why the as-run network fails: ablations the reproduce study runs itself.

The author's code trains a network whose layer 2 applies conv1's second kernel to every
map (seed-spec section 2): W2a..W2d never act, yet the code sends the gradient back to
layer 1 through them. On the author's protocol (dense 20/36, lr 0.09, alpha 0.0009;
100 epochs by default), for every seed of the study, four runs from the same weights and
data:

* ``code`` -- the code's rule as it ran (``seed-original``): the baseline;
* ``exact-gradient`` -- the exact gradient of the same as-run network (``exact``);
* ``conv-lr-0.1`` -- the code's rule with both conv layers' gradients times 0.1 (under
  the article's momentum, exactly a conv learning rate of 0.1 x lr);
* ``frozen-conv`` -- the code's rule with the conv kernels frozen (gradients times 0).

Each run's record carries the share of its test images given one class (stuck at chance
when at least :data:`~.reproduce_base.STUCK_SHARE`) and three numbers on the mechanism,
measured on the first 64 training images: the norm of conv1's ReLU kernel (W1a) before
and after, the largest ReLU-channel feature, and the fraction of layer-3 pre-activations
with |z| > 3 (where arctan saturates). The scaled rules have no compiled kernels: they run
on the NumPy engine, hence the shorter default length.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..rules.base import LearningRule
from .reproduce_base import ABLATIONS, Records, ReproduceConfig, is_stuck, per_seed, record_path
from .runner import Job
from .statistics import paired_fractions, proportion_interval

# ablation -> (rule, factor on both conv layers' gradients; None: unchanged)
SETUPS = {"code": ("seed-original", None), "exact-gradient": ("exact", None),
          "conv-lr-0.1": ("seed-original", 0.1), "frozen-conv": ("seed-original", 0.0)}
CONV_LAYERS = ("conv1", "conv2")
SATURATED = 3.0  # |z| above which arctan's slope is below 0.1
DIAGNOSTIC_IMAGES = 64


class GradientScaled(LearningRule):
    """``inner`` with the parameter gradients of some layers multiplied by a factor
    (``scales``: layer name -> factor). With (momentum) SGD a factor s is exactly a
    learning rate of s x lr for those layers; 0 freezes them."""

    name = "gradient-scaled"

    def __init__(self, inner: LearningRule, scales: Mapping[str, float]) -> None:
        super().__init__()
        self.inner, self.scales = inner, dict(scales)

    def bind(self, net: Any, seed: int | Sequence[int] | None = None,
             blocks: Sequence[str] | None = None) -> None:
        super().bind(net, seed, blocks)
        self.inner.bind(net, seed, blocks)

    def begin_step(self, active: np.ndarray | None = None) -> None:
        self.inner.begin_step(active)

    def layer_backward(self, step):
        grad_in, grads = self.inner.layer_backward(step)
        factor = self.scales.get(step.layer.name)
        if factor is not None:
            grads = {name: grad * factor for name, grad in grads.items()}
        return grad_in, grads

    def feedback(self) -> dict[str, np.ndarray]:
        return self.inner.feedback()

    def describe(self) -> str:
        scaled = ", ".join(f"{layer} x{factor:g}" for layer, factor in self.scales.items())
        return f"{self.inner.describe()} (gradients of {scaled})"


def rule_for(ablation: str) -> str | LearningRule:
    """The rule (a name, or a scaled rule) of one ablation."""
    from ..rules import parse_rule

    rule, factor = SETUPS[ablation]
    if factor is None:
        return rule
    return GradientScaled(parse_rule(rule), {layer: factor for layer in CONV_LAYERS})


def ablation_jobs(config: ReproduceConfig, out: Path, job) -> list[Job]:
    """One job per ablation (its seeds' article runs in lockstep), built by ``job(...)``,
    the study's job maker; none without the as-run variant or with ablation_epochs 0."""
    if not config.ablation_epochs or "as-run" not in config.variant:
        return []
    runs = [{"protocol": "article", "seed": seed} for seed in config.seed_list]
    return [job(ablation, runs) for ablation in config.ablations]


def diagnostics(net: Any, x: np.ndarray, initial_w1a: np.ndarray) -> list[dict[str, float]]:
    """Per replica: |W1a| before and after, the largest ReLU-channel (act1, channel a)
    feature and the fraction of fc3 pre-activations with |z| > SATURATED, on ``x``
    (*rep, N, ...)."""
    outputs = dict(net.trace(x[:, :DIAGNOSTIC_IMAGES]))
    relu = outputs["act1"][:, :, 0]
    z3 = outputs["fc3"]
    final_w1a = net.params["conv1.weight"][:, 0]
    return [{"w1a_norm_initial": float(np.linalg.norm(initial_w1a[r])),
             "w1a_norm_final": float(np.linalg.norm(final_w1a[r])),
             "relu_feature_max": float(np.abs(relu[r]).max()),
             "fc3_saturated": float(np.mean(np.abs(z3[r]) > SATURATED))}
            for r in range(net.flat.shape[0])]


def summarize_ablations(records: Records, config: ReproduceConfig) -> dict[str, Any]:
    """Per ablation: seeds stuck (with an exact interval), compared with the baseline
    over the same seeds (exact McNemar test), and the mechanism numbers of its stuck and
    its learning seeds (:func:`mechanism`)."""
    out: dict[str, Any] = {}
    base = _stuck_by_seed(records, "code")
    for ablation in config.ablations:
        stuck = _stuck_by_seed(records, ablation)
        if not stuck:
            continue
        k, n = sum(stuck.values()), len(stuck)
        row: dict[str, Any] = {"rule": SETUPS[ablation][0], "factor": SETUPS[ablation][1],
                               "stuck": k, "n": n, "stuck_ci": list(proportion_interval(k, n))}
        seeds = sorted(set(stuck) & set(base))
        if ablation != "code" and seeds:
            compared = paired_fractions([stuck[s] for s in seeds], [base[s] for s in seeds],
                                        labels=(ablation, "code"))
            row.update({"vs_code_only_this": compared.only_a,
                        "vs_code_only_code": compared.only_b, "vs_code_p": compared.p_value})
        row["mechanism"] = mechanism(records.get(("ablation", ablation, SETUPS[ablation][0],
                                                  "article"), []))
        out[ablation] = row
    return out


def mechanism(rows: list[dict]) -> dict[str, Any]:
    """For the stuck and the learning runs apart: how many, the median of |W1a| after
    training over before, how many have a dead ReLU channel (no positive feature on the
    diagnostic images), and the median fraction of saturated fc3 pre-activations."""
    out: dict[str, Any] = {}
    for part, want in (("stuck", True), ("learned", False)):
        found = [r["diagnostics"] for r in rows if r.get("diagnostics") and is_stuck(r) is want]
        growth = [d["w1a_norm_final"] / d["w1a_norm_initial"] for d in found
                  if len(_finite([d["w1a_norm_final"], d["w1a_norm_initial"]])) == 2
                  and d["w1a_norm_initial"] > 0]
        relu = _finite([d["relu_feature_max"] for d in found])
        saturated = _finite([d["fc3_saturated"] for d in found])
        out[part] = {"runs": len(found),
                     "w1a_growth": float(np.median(growth)) if growth else None,
                     "relu_dead": sum(1 for v in relu if v == 0),
                     "relu_max": float(np.median(relu)) if relu else None,
                     "fc3_saturated": float(np.median(saturated)) if saturated else None}
    return out


def _finite(values: list) -> list[float]:
    """The values that are finite numbers (a record keeps NaN and inf as null)."""
    return [v for v in values if v is not None and np.isfinite(v)]


def _stuck_by_seed(records: Records, ablation: str) -> dict[int, bool]:
    rows = records.get(("ablation", ablation, SETUPS[ablation][0], "article"), [])
    flags = per_seed(rows, lambda r: None if is_stuck(r) is None else float(is_stuck(r)))
    return {seed: bool(v) for seed, v in flags.items() if np.isfinite(v)}


__all__ = ["ABLATIONS", "GradientScaled", "ablation_jobs", "diagnostics", "record_path",
           "rule_for", "summarize_ablations"]
