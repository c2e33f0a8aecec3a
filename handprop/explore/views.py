"""What the page draws for one image, computed by handprop and made JSON-ready.

* :func:`forward_view` -- per conv channel its pre-activation Z, activation f(Z),
  pooled map and kernel; per dense layer its pre-activation and activation; the output
  and the cost of this image.
* :func:`backward_view` -- the chosen rule's backward pass beside the exact one, on the
  same forward pass: per conv block the gradient G arriving at the pooled maps, the
  routed max-pool gradient U, delta = U * f'(Z), and the weight update -lr * dL/dW; per
  dense block the gradient at the activation's output, delta and the update. Each
  quantity carries the angle between the rule's and the exact one (per channel for
  maps), and each block the angle of its weight update.
* :func:`snapshot` -- everything the page shows about a session.

Arrays travel as ``{"shape": [...], "data": [flat, row-major]}`` rounded to 6
significant digits of the array's largest entry (a heatmap needs no more); scalars
(costs, outputs, angles) travel at full precision. NaN and inf travel as null.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.layers import ActivationLayer, WeightLayer
from ..core.network import Network, Step
from ..core.ops import Conv2d, MaxPool2d
from ..core.ops.asrun import AsRunConv2d, shared_kernel
from ..rules import RULES, LearningRule
from ..rules.base import block_names
from ..rules.feedback import DirectFeedbackAlignment
from ..studies.alignment import compare_arrays
from .session import CHANNELS, LOSS, Catalogue, Run, Session, finite_or_none, rule_lines

DIGITS = 6


def encode(array: np.ndarray | None, digits: int = DIGITS) -> dict[str, Any] | None:
    """``{"shape", "data"}`` of ``array`` rounded to ``digits`` significant digits of
    its largest entry (None stays None)."""
    if array is None:
        return None
    values = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(values)
    top = float(np.abs(values[finite]).max()) if finite.any() else 0.0
    if top > 0:
        values = np.round(values, min(digits - 1 - int(np.floor(np.log10(top))), 300))
    data = values.ravel().tolist()
    if not finite.all():
        data = [v if f else None for v, f in zip(data, finite.ravel().tolist(), strict=True)]
    return {"shape": list(values.shape), "data": data}


@dataclass(frozen=True)
class Block:
    """A weight layer and the activation and max-pool of its block (layer indices)."""

    name: str
    conv: bool  # a conv layer (maps), else dense (vectors)
    weight: int
    activation: int | None
    pool: int | None


def blocks(net: Network) -> list[Block]:
    """The network's weight blocks, input to output."""
    owners = block_names(net)
    found = []
    for i, layer in enumerate(net.layers):
        if not isinstance(layer, WeightLayer):
            continue
        members = [j for j, owner in enumerate(owners) if owner == layer.name and j > i]
        act = next((j for j in members if isinstance(net.layers[j], ActivationLayer)), None)
        pool = next((j for j in members if isinstance(net.layers[j], MaxPool2d)), None)
        found.append(Block(layer.name, isinstance(layer, Conv2d), i, act, pool))
    return found


def activation_names(layer: Any, count: int) -> list[str]:
    """The activation of each channel (or of the whole layer, repeated)."""
    if hasattr(layer, "activations"):
        return list(layer.activations)
    return [layer.activation.name] * count


def _conv_forward(net: Network, block: Block, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    layer = net.layers[block.weight]
    pre = outputs[layer.name][0]
    count, per_group = pre.shape[0], layer.in_shape[0] // layer.groups
    group_size = count // layer.groups
    inputs = [list(range((o // group_size) * per_group, (o // group_size + 1) * per_group))
              for o in range(count)]
    used = used_from = None
    if isinstance(layer, AsRunConv2d):  # the article's code: another layer's kernel acts
        used = shared_kernel(net.params[f"{layer.source}.weight"], layer.source_channel, count)
        used_from = f"{layer.source} {CHANNELS[layer.source_channel]}"
    return {"name": layer.name, "kind": "conv", "channels": list(CHANNELS[:count]),
            "activations": activation_names(net.layers[block.activation], count),
            "inputs": inputs, "pre": encode(pre),
            "act": encode(outputs[net.layers[block.activation].name][0]),
            "pool": encode(outputs[net.layers[block.pool].name][0]) if block.pool else None,
            "kernels": encode(net.params[f"{layer.name}.weight"]),
            "used": encode(used), "used_from": used_from}


def forward_view(net: Network, x: np.ndarray, label: int) -> dict[str, Any]:
    """Every forward quantity of one image ``x`` (1, 1, H, W) with label ``label``."""
    outputs = {name: value for name, value in net.trace(x)}
    shown = []
    for block in blocks(net):
        if block.conv and block.activation is not None:
            shown.append(_conv_forward(net, block, outputs))
            continue
        act = net.layers[block.activation] if block.activation is not None else None
        pre = outputs[block.name][0]
        shown.append({"name": block.name, "kind": "dense",
                      "activation": activation_names(act, 1)[0] if act else "identity",
                      "pre": encode(pre),
                      "act": encode(outputs[act.name][0]) if act else encode(pre),
                      "weight": encode(net.params[f"{block.name}.weight"])})
    out = net.layers[-1].name
    output = outputs[out][0]
    cost = LOSS(outputs[out], np.array([[float(label)]]))[0]
    return {"input": encode(x[0, 0]), "label": int(label), "blocks": shown,
            "output": finite_or_none(output.ravel()[0]), "cost": finite_or_none(cost)}


class _Recorder(LearningRule):
    """Runs ``inner`` and keeps, per layer, the gradient that arrived at its output and
    the one it sent down."""

    def __init__(self, inner: LearningRule) -> None:
        super().__init__()
        self.inner = inner
        self.incoming: dict[int, np.ndarray | None] = {}
        self.sent: dict[int, np.ndarray | None] = {}

    def layer_backward(self, step: Step):
        self.incoming[step.index] = step.out_grad
        grad_in, grads = self.inner.layer_backward(step)
        self.sent[step.index] = grad_in
        return grad_in, grads


def _angles(rule: np.ndarray | None, exact: np.ndarray | None, channels: int | None
            ) -> list[float | None] | float | None:
    """The angle (degrees) of ``rule`` to ``exact``: one per channel (first axis) when
    ``channels`` is given, else one for the whole arrays; None where undefined (nothing
    flows, or an exact gradient of 0)."""
    if rule is None or exact is None:
        return None if channels is None else [None] * channels
    with np.errstate(all="ignore"):
        if channels is None:
            return finite_or_none(compare_arrays(rule, exact)["angle_deg"])
        return [finite_or_none(a) for a in compare_arrays(rule, exact, rep_ndim=1)["angle_deg"]]


def _quantity(key: str, label: str, rule: np.ndarray | None, exact: np.ndarray | None,
              channels: int | None, batch: bool = True) -> dict[str, Any]:
    """One backward quantity, rule beside exact (``batch``: drop the batch axis)."""
    if batch:
        rule, exact = (None if a is None else a[0] for a in (rule, exact))
    return {"key": key, "label": label, "rule": encode(rule), "exact": encode(exact),
            "angles": _angles(rule, exact, channels)}


def backward_view(net: Network, rule: LearningRule, x: np.ndarray, label: int, lr: float
                  ) -> dict[str, Any]:
    """The rule's backward pass beside the exact one for one image (see the module notes)."""
    out, tape = net.forward(x)
    _, out_grad = LOSS(out, np.array([[float(label)]]))
    exact, changed = _Recorder(LearningRule()), _Recorder(rule)
    with np.errstate(all="ignore"):
        exact_grads = net.backward(tape, out_grad, exact)
        rule_grads = net.backward(tape, out_grad, changed)
    shown = []
    for block in blocks(net):
        weight = f"{block.name}.weight"
        # conv: one angle per channel; dense: one per quantity
        channels = net.shapes[block.weight + 1][0] if block.conv else None
        quantities = []
        if block.pool is not None:
            quantities += [
                _quantity("G", "G: gradient at the pooled maps", changed.incoming[block.pool],
                          exact.incoming[block.pool], channels),
                _quantity("U", "U: routed through the max-pool",
                          _arriving(net, rule, changed, block.activation),
                          exact.incoming[block.activation], channels)]
        elif block.activation is not None:
            quantities.append(_quantity(
                "G", "G: gradient at the activation's output",
                _arriving(net, rule, changed, block.activation),
                exact.incoming[block.activation], channels))
        if block.activation is not None:
            quantities.append(_quantity("delta", "delta = U * f'(Z)" if block.pool is not None
                                        else "delta = G * f'(z)", changed.sent[block.activation],
                                        exact.sent[block.activation], channels))
        quantities.append(_quantity("update", "update -lr * dL/dW", -lr * rule_grads[weight],
                                    -lr * exact_grads[weight], channels, batch=False))
        with np.errstate(all="ignore"):
            metrics = compare_arrays(rule_grads[weight], exact_grads[weight])
        shown.append({"name": block.name, "kind": "conv" if block.conv else "dense",
                      "quantities": quantities,
                      "angle": finite_or_none(metrics["angle_deg"]),
                      "sign_agreement": finite_or_none(metrics["sign_agreement"])})
    return {"blocks": shown}


def _arriving(net: Network, rule: LearningRule, recorded: _Recorder, index: int
              ) -> np.ndarray | None:
    """What the rule feeds activation ``index``: what arrived from above, or for direct
    feedback alignment the output error e projected by the layer's B (what it uses)."""
    if isinstance(rule, DirectFeedbackAlignment) and index in rule.matrices:
        last = max(b.weight for b in blocks(net))
        error = recorded.incoming[last].reshape(1, rule.output_size)
        return (error @ rule.matrices[index]).reshape(1, *net.shapes[index + 1])
    return recorded.incoming[index]


def rule_info(run: Run) -> dict[str, Any]:
    """The rule of a run: its name, summary, family, lines and map transform."""
    rule = run.rule
    info = RULES.get(run.rule_key)
    summary = info.summary if info else ""
    if run.custom_lines:  # the registry's summary describes the article's own layout
        summary = ("the article's text's per-channel rule with the lines chosen per channel: "
                   "the pool step changes, then the exact weight and input gradients")
    return {"name": run.rule_key, "describe": rule.describe(), "custom_lines": run.custom_lines,
            "summary": summary, "family": info.family if info else "",
            "lines": rule_lines(rule), "transform": getattr(rule, "transform_name", None),
            "ties": getattr(rule, "ties", None)}


def run_summary(run: Run, images: Catalogue, since: dict[str, Any] | None,
                generation: int) -> dict[str, Any]:
    """A run's cost, angles, test predictions and its curve (only the points the page
    lacks when ``since`` = {"id", "count"} matches this curve)."""
    curve = run.curve
    curve_id = f"{generation}.{curve.thinned}"
    count = 0
    if since and since.get("id") == curve_id and 0 <= since.get("count", -1) <= len(curve.steps):
        count = since["count"]
    return {"label": run.label, "rule": rule_info(run), "step": run.steps, "cost": run.cost,
            "angles": run.angles, "diverged_at": run.diverged_at,
            "predictions": run.predictions(images),
            "curve": {"id": curve_id, **curve.since(count)}}


def view(session: Session, image: int | None = None) -> dict[str, Any]:
    """The forward and backward views of run A on one image (default: the chosen one)."""
    run = session.runs[0]
    index = session.settings.image if image is None else image
    x = session.images.pixels[index][None, None]
    label = int(session.images.labels[index])
    return {"image": index, "name": session.images.names[index], "label": label,
            "forward": forward_view(run.net, x, label),
            "backward": backward_view(run.net, run.rule, x, label, session.settings.lr)}


def snapshot(session: Session, since: list[dict[str, Any]] | None = None,
             with_view: bool = True) -> dict[str, Any]:
    """Everything the page shows: settings, each run's summary, run A's views (unless
    ``with_view`` is False: a page showing only curves)."""
    since = since or []
    train = len(session.runs[0].data.x_train)
    state = {"generation": session.generation, "step": session.steps,
             "epoch": session.steps / train, "train_size": train,
             "settings": session.settings.to_json(),
             "runs": [run_summary(run, session.images, since[i] if i < len(since) else None,
                                  session.generation)
                      for i, run in enumerate(session.runs)]}
    if with_view:
        state["view"] = view(session)
    return state
