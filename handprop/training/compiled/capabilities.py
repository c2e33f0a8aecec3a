"""What the compiled engine supports, said once.

* :data:`OP_SPECS` -- {layer class: :class:`OpSpec`}, registered (:func:`register_op`) by
  the kernel module that compiles the op: its code in the op table, how the plan
  describes a layer of it, and what its kernels allow (:data:`FEATURES`).
* :data:`LAYOUTS` -- the ways arrays are laid out for the kernels (:class:`Layout`,
  :func:`register_layout`): what they need of every op, their dtypes, and the work each
  is expected to be fastest at (``auto``'s choice).
* :func:`rule_refusal` -- whether a rule's backward description
  (:mod:`handprop.rules.backward`) is something the kernels compute; :data:`LOSSES`,
  :data:`OPTIMIZERS`: the losses and optimizers they compute.

Derived from these and from nothing else: the refusal (:class:`UnsupportedError`, naming
the first thing the engine cannot run, found by :func:`~.plan.survey`), the layout
choice (:func:`choose_layout`), the zero-fill where no gradient flows (each op's
parameter range, from the plan), the README's list (:func:`support_text`) and the
coverage tests (``tests/test_compiled_coverage.py``).

Importing this module imports neither Numba nor the kernels; :func:`op_specs` loads the
kernel modules (which register their ops) when a plan is built.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.layers import Layer, WeightLayer
from ...core.ops import (
    Activation,
    AvgPool2d,
    Conv2d,
    Dense,
    Flatten,
    MaxPool2d,
    PerChannelActivation,
)
from ...rules.base import LearningRule
from ..optim import Adam, Momentum, Nesterov, Optimizer


class UnsupportedError(Exception):
    """The compiled engine cannot run this configuration (the message says why)."""


# What an op's kernels allow, by the layouts that need it.
WIDTH8 = "width-8"  # its kernels run on eight lanes (written against the slot API)
SAMPLE_ORDER = "sample-order"  # a batch's samples can take the lanes: every sum over the
# batch adds one sample's terms at a time, and no sample depends on another
FEATURES = {WIDTH8: "whose kernels run on eight lanes at once",
            SAMPLE_ORDER: "whose sums over a batch add one sample's terms at a time (so a "
                          "batch's samples can take the lanes)"}

LOSSES = {"l2": 0, "bce": 1, "softmax_ce": 2}
OPTIMIZERS: dict[type, tuple[int, str]] = {Optimizer: (0, "sgd"), Momentum: (1, "momentum"),
                                           Nesterov: (2, "nesterov"), Adam: (3, "adam")}


@dataclass(frozen=True)
class OpSpec:
    """The compiled form of one layer class (matched exactly: a subclass may compute
    something else, and is refused).

    code : the op's code in the op table's ``kind`` column (the kernels' dispatch)
    describe : ``describe(builder, row, layer, index)`` fills the layer's row of the op
        table through the plan builder (:class:`~.plan.PlanBuilder`)
    features : ``features(layer, how)`` -> the :data:`FEATURES` this layer has (``how``:
        the rule's :class:`~handprop.rules.backward.WeightGrads` for it, or None)
    summary : what of the layer is compiled (the README's list)
    """

    layer: type[Layer]
    code: int
    describe: Callable[..., None]
    features: Callable[[Any, Any], frozenset[str]]
    summary: str


OP_SPECS: dict[type, OpSpec] = {}


def register_op(spec: OpSpec) -> OpSpec:
    """Make ``spec.layer`` compilable (called where the op's kernels are defined)."""
    if spec.layer in OP_SPECS and OP_SPECS[spec.layer] is not spec:
        raise UnsupportedError(f"two compiled forms for {spec.layer.__name__}")
    OP_SPECS[spec.layer] = spec
    return spec


def op_specs() -> dict[type, OpSpec]:
    """:data:`OP_SPECS`, after loading every kernel module (which imports Numba)."""
    from .cache import load_kernels

    load_kernels()
    return OP_SPECS


def every_feature(layer: Any, how: Any) -> frozenset[str]:
    """An op whose kernels run in every layout."""
    return frozenset(FEATURES)


# -- layouts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """What a run asks of an engine: replicas, batch size, dtype and the multiply-adds
    of one sample's forward pass (conv and dense layers)."""

    replicas: int
    batch_size: int
    dtype: str
    macs_per_sample: int

    @classmethod
    def of(cls, net: Any, batch_size: int) -> Workload:
        replicas = net.rep_shape[0] if net.rep_shape else 1
        return cls(replicas, batch_size, np.dtype(net.dtype).name, macs_per_sample(net))


@dataclass(frozen=True)
class Layout:
    """One way of laying out a run's arrays for the kernels.

    name, summary : for messages and the README
    order : layouts are tried in this order (lowest first); the first that fits the work
        and runs every op, the rule and the dtype is chosen
    dtypes : the dtypes it runs
    needs : :data:`FEATURES` every op must have
    kinds : the layer kinds it runs (None: every compiled kind that has ``needs``), for a
        layout whose kernels cover some ops only
    fits : ``fits(workload)``: the work it is made for (expected fastest among the
        compiled layouts that can run it)
    beats_numpy : ``beats_numpy(workload)``: whether ``auto`` expects it to beat the NumPy
        engine (else ``auto`` trains with NumPy)
    arena_batch : ``arena_batch(batch_size)``: samples per row of its arenas
    runner : ``"module:Class"`` (in this package) that runs an epoch in this layout
    refuses_rule : ``refuses_rule(description)``: why it cannot compute a rule's backward
        description (:mod:`handprop.rules.backward`), or None
    refuses_net : ``refuses_net(net, description)``: why it cannot run this network (its
        shapes, or where a rule reads it), beyond the kinds of its layers; or None
    workspace : ``workspace(plan, net, replicas, samples)`` (or ``"module:function"`` in
        this package, imported when called): the values (floats) it allocates beyond the
        network, optimizer and data for a plan built for its ``arena_batch`` (the memory
        budget's estimate, :mod:`handprop.training.memory`); None: the plan's arenas,
        once per replica
    """

    name: str
    summary: str
    order: int
    dtypes: tuple[str, ...]
    needs: frozenset[str]
    fits: Callable[[Workload], bool]
    beats_numpy: Callable[[Workload], bool]
    arena_batch: Callable[[int], int]
    runner: str
    refuses_rule: Callable[[Any], str | None] = lambda description: None
    refuses_net: Callable[[Any, Any], str | None] = lambda net, description: None
    kinds: frozenset[str] | None = None
    workspace: Callable[[Any, Any, int, int], int] | str | None = None

    def values_needed(self, plan: Any, net: Any, replicas: int, samples: int) -> int:
        """Floats this layout allocates for a run (see ``workspace``)."""
        if isinstance(self.workspace, str):
            return _imported(self.workspace)(plan, net, replicas, samples)
        if self.workspace is not None:
            return self.workspace(plan, net, replicas, samples)
        return replicas * (2 * plan.arena + net.num_params + plan.fixed + plan.drawn)

    def runs(self, kind: str, have: frozenset[str]) -> bool:
        """Whether it runs a layer of ``kind`` with the features ``have``."""
        return (self.kinds is None or kind in self.kinds) and self.needs <= have

    def refusal(self, survey: Any, dtype: str) -> str | None:
        """Why this layout cannot run the surveyed configuration in ``dtype`` (the first
        reason: the dtype, a layer, the network, the rule), or None."""
        if dtype not in self.dtypes:
            return f"{dtype} is not run in it"
        for layer, have in zip(survey.net.layers, survey.features, strict=True):
            if not self.runs(layer.kind, have):
                return f"layer {layer.name!r} ({type(layer).__name__}) is not run in it"
        reason = self.refuses_net(survey.net, survey.description)
        if reason:
            return reason
        reason = self.refuses_rule(survey.description)
        if reason:
            rule = survey.rule
            return f"rule {getattr(rule, 'name', '?')!r} ({type(rule).__name__}): {reason}"
        return None


def _imported(target: str) -> Any:
    """``"module:name"`` of this package, imported."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


LAYOUTS: dict[str, Layout] = {}


def register_layout(layout: Layout) -> Layout:
    if layout.name in LAYOUTS:
        raise UnsupportedError(f"two layouts claim the name {layout.name!r}")
    LAYOUTS[layout.name] = layout
    return layout


# Above this many multiply-adds per step (batch x conv/dense work per sample), NumPy's
# BLAS-backed path beats the compiled per-replica and lane loops. Measured here (2
# cores; handprop bench and compare): seed net batch 1 (3.2k per step) 15-22x faster
# compiled; seed batch 32 (103k) 3.5-4.2x faster compiled (samples in lanes); small_cnn
# batch 32 (889k) at 10 replicas 1.6x faster in NumPy (lanes of replicas); LeNet batch
# 64 float32 (27M) 3-4x faster in NumPy. Such work in batches of BATCHED_FROM or more
# runs in the batched layout instead.
COMPILED_MAX_MACS = 300_000
# From this many replicas on the lanes run them: the same bits as per replica, and
# faster from three on (measured here, seed net, us per replica-step: R = 2: 10.3 in
# lanes, 8.6 per replica; R = 3: 7.0 / 8.6; R = 4: 5.8 / 8.7; R = 24: 3.0 / 8.9).
LANES_FROM = 3
LANES = 8
# From this batch size on, work above COMPILED_MAX_MACS runs in the batched layout: its
# GEMMs over half a batch beat NumPy's engine. Measured here (one epoch, the batched
# layout on one thread against the NumPy engine with its BLAS threads; time ratio
# NumPy / batched): compare's CNN batch 16 (444k MACs per step) 1.40x, R = 10 1.08x;
# batch 32 1.18x, R = 10 1.26x; small_cnn 14x14 batch 16 1.54x; LeNet batch 16 float32
# 1.26x, batch 64 float64 1.73x.
BATCHED_FROM = 16


def _small_steps(work: Workload) -> bool:
    """Explicit loops win on small work per step, where NumPy's cost is its per-call
    overhead; BLAS wins on wide layers and big convolutions."""
    return work.batch_size * work.macs_per_sample <= COMPILED_MAX_MACS


def _big_batches(work: Workload) -> bool:
    """Big work per step in batches big enough to split in two halves of GEMMs."""
    return work.batch_size >= BATCHED_FROM and not _small_steps(work)


def _fixed_feedback_only(description: Any) -> str | None:
    """The per-replica and lane kernels form B from W and a fixed or redrawn M: not a
    learning M, nor the output error projected to a layer's input."""
    for how in description.weights.values():
        if how.projected:
            return "the output error projected to a weight layer's input"
        if how.feedback.learning is not None:
            return "a feedback matrix that learns"
    return None


def _batched_rule_refusal(description: Any) -> str | None:
    """The batched kernels route a max-pool's gradient to its first winner, and send a
    weight layer's input gradient through B (any Feedback but a redrawn M that learns)
    or the projected error; the article's rotations and pool lines are not theirs."""
    for routing in description.pools.values():
        if routing.ties or set(routing.lines) != {"exact"}:
            return "max-pool lines other than the first winner's"
    for how in description.weights.values():
        if how.rotate_delta or how.rotate_sent:
            return "the article's rotated maps"
        if how.feedback.learning is not None and how.feedback.redrawn:
            return "a redrawn feedback matrix that learns"
    return None


def _batched_net_refusal(net: Any, description: Any) -> str | None:
    """Maps (C, H, W) or flat vectors; a flat output; DFA's output error read from a
    dense last weight layer."""
    if any(len(shape) not in (1, 3) for shape in net.shapes):
        return "shapes other than (C, H, W) maps and flat vectors"
    if len(net.output_shape) != 1:
        return "an output of maps (it takes flat outputs: end with flatten or dense)"
    weights = [layer for layer in net.layers if isinstance(layer, WeightLayer)]
    projected = any(how.projected for how in description.weights.values())
    if (description.inject or projected) and not isinstance(weights[-1], Dense):
        return "the output error of a conv layer (DFA reads it from a dense last layer)"
    return None


register_layout(Layout(
    "batched", f"batches of {BATCHED_FROM} or more with big work per step: NHWC maps, each "
    "convolution a GEMM over half a batch, the halves side by side", 5,
    ("float32", "float64"), frozenset(), fits=_big_batches, beats_numpy=_big_batches,
    arena_batch=lambda batch: -(-batch // 2), runner="batched_engine:BatchedRunner",
    refuses_rule=_batched_rule_refusal, refuses_net=_batched_net_refusal,
    kinds=frozenset(kind.kind for kind in (Conv2d, MaxPool2d, AvgPool2d, Activation,
                                           PerChannelActivation, Flatten, Dense)),
    workspace="batched_plan:values_needed"))
register_layout(Layout(
    "batch-lanes", "one network's batches of a multiple of 8, eight samples per block", 10,
    ("float64",), frozenset({WIDTH8, SAMPLE_ORDER}),
    fits=lambda work: work.replicas == 1 and work.batch_size % LANES == 0,
    beats_numpy=_small_steps, arena_batch=lambda batch: 1,
    runner="engine:BatchLaneRunner", refuses_rule=_fixed_feedback_only))
register_layout(Layout(
    "lanes", f"R >= {LANES_FROM} replicas, eight per block", 20,
    ("float64",), frozenset({WIDTH8}), fits=lambda work: work.replicas >= LANES_FROM,
    beats_numpy=_small_steps, arena_batch=lambda batch: batch,
    runner="engine:LaneRunner", refuses_rule=_fixed_feedback_only,
    workspace=lambda plan, net, replicas, samples: _lane_values(plan, net, replicas,
                                                                samples)))
register_layout(Layout(
    "per-replica", "each replica on its own (a network online, or anything else)", 90,
    ("float32", "float64"), frozenset(), fits=lambda work: True, beats_numpy=_small_steps,
    arena_batch=lambda batch: batch, runner="engine:ReplicaRunner",
    refuses_rule=_fixed_feedback_only))


def _lane_values(plan: Any, net: Any, replicas: int, samples: int) -> int:
    """The lanes' floats: the per-replica arrays for blocks of eight replicas (the last
    block padded), plus the data, parameters and optimizer state copied into the blocks
    for the epoch."""
    slots = LANES * -(-replicas // LANES)
    copies = 3 * net.num_params + samples * (math.prod(net.input_shape)
                                             + math.prod(net.output_shape))
    return slots * (2 * plan.arena + net.num_params + plan.fixed + plan.drawn + copies)


def runnable_layouts(survey: Any, dtype: str, name: str | None = None
                     ) -> tuple[list[Layout], list[str]]:
    """(the layouts, by ``order``, that run the dtype, every layer of the surveyed network
    (:func:`~.plan.survey`), the network and the rule's description; why each other one
    cannot), among those called ``name`` if given."""
    able, refused = [], []
    for layout in sorted(LAYOUTS.values(), key=lambda lay: lay.order):
        if name is not None and layout.name != name:
            continue
        reason = layout.refusal(survey, dtype)
        if reason is None:
            able.append(layout)
        else:
            refused.append(f"{layout.name}: {reason}")
    return able, refused


def choose_layout(work: Workload, survey: Any, name: str | None = None) -> Layout:
    """The first layout (by ``order``) that fits the work among those that run it
    (:func:`runnable_layouts`), else the first of those: ``fits`` says where a layout is
    expected to be the fastest, not what it can compute. ``name``: that layout, if it
    runs the work (tests and benchmarks)."""
    able, refused = runnable_layouts(survey, work.dtype, name)
    if not able:
        if not refused:
            raise UnsupportedError(f"no compiled layout is called {name!r} (the layouts: "
                                   f"{', '.join(LAYOUTS)})")
        raise UnsupportedError("no compiled layout runs this (" + "; ".join(refused) + ")")
    return next((layout for layout in able if layout.fits(work)), able[0])


def passed_over(work: Workload, survey: Any) -> str | None:
    """Why the layouts made for this work (those that fit it and expect to beat NumPy on
    it) cannot run the surveyed configuration; None if one can, or none is made for it."""
    reasons = []
    for layout in sorted(LAYOUTS.values(), key=lambda lay: lay.order):
        if work.dtype in layout.dtypes and layout.fits(work) and layout.beats_numpy(work):
            reason = layout.refusal(survey, work.dtype)
            if reason is None:
                return None
            reasons.append(f"{layout.name}: {reason}")
    return "; ".join(reasons) or None


def compiled_is_faster(work: Workload) -> bool:
    """Whether some layout that runs this dtype expects to beat NumPy on this work (the
    check ``auto`` makes before loading any kernel)."""
    return any(work.dtype in layout.dtypes and layout.beats_numpy(work)
               for layout in LAYOUTS.values())


def macs_per_sample(net: Any) -> int:
    """Multiply-adds of one sample's forward pass through the conv and dense layers."""
    total = 0
    for layer, shape in zip(net.layers, net.shapes[1:], strict=True):
        if isinstance(layer, Conv2d):  # every output value: C/groups x kernel taps
            taps = layer.in_shape[0] // layer.groups * math.prod(layer.kernel_size)
            total += math.prod(shape) * taps
        elif isinstance(layer, Dense):
            total += layer.in_shape[0] * layer.out_features
    return total


# -- rules -------------------------------------------------------------------------------


def rule_refusal(rule: LearningRule | None) -> str | None:
    """Why the kernels cannot compute ``rule`` (None: they can).

    They compute a rule's backward description (:mod:`handprop.rules.backward`) with
    feedback B = scale * M * base(W) (base W, sign(W) or none; M fixed, redrawn every
    step or learning), every pool routing and map transform, rotations, DFA's injection
    and the projected error -- each layout a part of these (its ``refuses_rule``). A
    rule must be a registered class (each has a parity test) that leaves
    ``layer_backward`` and ``feedback_matrix`` alone, so that its description is all it
    computes.
    """
    if rule is None or type(rule) is LearningRule:
        return None
    from ...rules import RULES, FeedbackRule

    kind = type(rule)
    label = f"rule {getattr(rule, 'name', kind.__name__)!r} ({kind.__name__}) has no compiled form"
    registered = {info.factory for info in RULES.values() if isinstance(info.factory, type)}
    if kind not in registered:
        return f"{label}: only registered rules are compiled (each has a parity test)"
    if kind.layer_backward is not LearningRule.layer_backward:
        return f"{label}: its layer_backward is Python"
    if kind.feedback_matrix not in (LearningRule.feedback_matrix, FeedbackRule.feedback_matrix):
        return f"{label}: its feedback_matrix is Python"
    for index, how in rule.description().weights.items():
        reason = _weight_grads_refusal(how)
        if reason:
            return f"{label}: {reason} (layer {rule.net.layers[index].name!r})"
    return None


def _weight_grads_refusal(how: Any) -> str | None:
    if how.feedback.base == "custom":
        return "B computed in Python"
    return None


# -- the README's list ------------------------------------------------------------------


def compiled_rules() -> dict[str, LearningRule]:
    """{name: the rule bound to the seed net} of the registered rules the compiled engine
    runs (in some layout)."""
    from ...core.presets import seed_net
    from ...rules import RULES, make_rule

    net = seed_net().init(0)
    rules = {name: make_rule(name, net, 0) for name in RULES}
    return {name: rule for name, rule in rules.items() if rule_refusal(rule) is None}


def support_text() -> str:
    """What the compiled engine runs, as the README lists it (``python -m
    handprop.training.compiled`` prints it)."""
    specs = sorted(op_specs().values(), key=lambda spec: spec.layer.kind)
    rules = compiled_rules()
    lines = ["| layer | compiled |", "|---|---|"]
    lines += [f"| `{spec.layer.kind}` | {spec.summary} |" for spec in specs]
    lines += ["", "| layout (tried in this order) | dtypes | made for | layers | rules it "
              "does not compute |", "|---|---|---|---|---|"]
    for layout in sorted(LAYOUTS.values(), key=lambda lay: lay.order):
        needs = " and ".join(FEATURES[need] for need in sorted(layout.needs, reverse=True))
        which = "those " + needs if needs else "all of the above"
        if layout.kinds is not None:
            which = ", ".join(f"`{kind}`" for kind in sorted(layout.kinds)) + (
                f" ({which})" if needs else "")
        refused = [f"`{name}`" for name, rule in rules.items()
                   if layout.refuses_rule(rule.description())]
        lines.append(f"| {layout.name} | {', '.join(layout.dtypes)} | {layout.summary} | "
                     f"{which} | {', '.join(refused) or 'none'} |")
    lines += ["", "Rules: " + ", ".join(f"`{name}`" for name in rules) + ".",
              "Losses: " + ", ".join(f"`{name}`" for name in LOSSES) + " (sum or mean).",
              "Optimizers: " + ", ".join(f"`{name}`" for _, name in OPTIMIZERS.values())
              + " (weight decay, every schedule)."]
    return "\n".join(lines)
