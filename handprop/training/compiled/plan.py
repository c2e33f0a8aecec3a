"""The plan: a network, a rule's description, an optimizer and a loss as tables, once per fit.

The kernels know nothing about Python objects. They read one row per layer of the op
table (:data:`OP_COLUMNS`: which op, its geometry, where its parameters sit in the flat
buffer, where its input and output sit in the activation arena, what the rule changes)
and walk the rows forward, then backward. Before any table is built,
:func:`survey` checks everything against :mod:`.capabilities` and raises
:class:`~.capabilities.UnsupportedError` naming the first thing the engine cannot run;
the layout is chosen from the survey, and :func:`build_plan` then builds the tables
once, for that layout's arenas. Each op's row is filled by its
:class:`~.capabilities.OpSpec` through :class:`PlanBuilder`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any, NamedTuple

import numpy as np

from ...core.layers import WeightLayer
from ...core.network import Network
from ...rules.backward import BackwardDescription, PoolRouting, WeightGrads
from ...rules.base import LearningRule
from .capabilities import (
    LOSSES,
    OPTIMIZERS,
    OpSpec,
    UnsupportedError,
    op_specs,
    rule_refusal,
)

# The op table: one row per layer, every column an int64 (a structured array, so the
# kernels read ``op.in_offset``). Offsets count values of one replica (or lane); an
# offset of -1 means "none", as does a feedback_scale of -1; other columns default to 0.
OP_COLUMNS = {
    "kind": "the op (its OpSpec's code): which kernels run",
    "in_c": "input channels (dense: inputs; activation: channels with their own function)",
    "in_h": "input height (activation: values per channel of one sample)",
    "in_w": "input width",
    "out_c": "output channels (dense: outputs)",
    "out_h": "output height",
    "out_w": "output width",
    "kernel_h": "window height",
    "kernel_w": "window width",
    "stride_h": "vertical stride",
    "stride_w": "horizontal stride",
    "pad_h": "zero padding above and below",
    "pad_w": "zero padding left and right",
    "groups": "convolution groups",
    "in_offset": "the input in the arena (samples one after another)",
    "out_offset": "the output in the arena",
    "in_size": "values of one sample's input",
    "out_size": "values of one sample's output",
    "params_offset": "the layer's parameters in the flat buffer (contiguous)",
    "params_size": "how many (their gradient is zeroed where no gradient reaches the layer)",
    "weight_offset": "its weight in the flat buffer",
    "weight_size": "values of its weight",
    "bias_offset": "its bias in the flat buffer",
    "kernel_offset": "where the forward pass reads output channel 0's kernel (conv)",
    "kernel_stride": "how far apart consecutive output channels' kernels are (0: one for all)",
    "codes_offset": "its first entry in codes and slopes (a function or line per channel)",
    "ints_offset": "the integer arena (each max-pool window's winning tap)",
    "scales_offset": "its first entry in scales (divisors; eps and momentum)",
    "state_offset": "its running statistics in the state buffer",
    "cache_offset": "arena kept from the forward to the backward pass (batch norm)",
    "sends_grad": "1: its backward pass sends a gradient down",
    "ties": "max-pool: 1 routes to every tied maximum",
    "transform": "max-pool: T of the green and red lines (ROT180, TRANSPOSE)",
    "rotate_delta": "weight layer: the weight gradient of rot180(delta)",
    "rotate_sent": "weight layer: rot180 of the input gradient it sends down",
    "feedback_base": "weight layer: B's factor of W (FROM_WEIGHT, FROM_SIGN, FROM_NOTHING)",
    "feedback_offset": "B's matrix M in the fixed (or drawn) arrays",
    "feedback_redrawn": "1: M is redrawn every step (it sits in the drawn arrays)",
    "feedback_scale": "B's constant factor in scales",
    "learning_offset": "weight layer: a learning M's (lr, weight decay) in scales (Kolen-Pollack)",
    "project_offset": "weight layer: the rule's projection of the output error to its input "
                      "in the fixed arrays (dfa-biotorch: sent instead of anything through B)",
    "inject_offset": "DFA: B_l in the fixed arrays; the output gradient is e @ B_l",
    "borrow_offset": "a borrowed kernel trained by its true gradient: arena room for that "
                     "gradient until the lender's own is complete",
    "borrow_size": "its size",
}
OP_ROW = np.dtype([(name, np.int64) for name in OP_COLUMNS])
# B's factor of W, the map transforms, and each channel's pool line (codes).
FROM_WEIGHT, FROM_SIGN, FROM_NOTHING = 0, 1, 2
ROT180, TRANSPOSE = 0, 1
ROUTE, GREEN, RED = 0, 1, 2
_BASES = {"weight": FROM_WEIGHT, "sign": FROM_SIGN, "none": FROM_NOTHING}
_TRANSFORMS = {"rot180": ROT180, "transpose": TRANSPOSE}
_LINES = {"exact": ROUTE, "green": GREEN, "red": RED}


class Tables(NamedTuple):
    """What the kernels read about the network: ``ops`` (one :data:`OP_ROW` per layer);
    ``codes`` int64 and ``slopes`` float64 (per channel: activation code and leaky
    slope, or pool line); ``scales`` float64 (average-pool divisors, batch norm's eps and
    momentum, feedback constants)."""

    ops: np.ndarray
    codes: np.ndarray
    slopes: np.ndarray
    scales: np.ndarray


class Settings(NamedTuple):
    """The plan's scalars, as the kernels read them (``settings.batch``)."""

    lowest: int  # the lowest layer the backward pass visits
    scratch: int  # arena: room for one layer's feedback weights (and the loss value)
    work: int  # arena: room for one layer's working planes (padded maps, pool planes)
    in_size: int  # values of one input sample
    classes: int  # values of one output
    error_offset: int  # arena: the gradient at the last weight layer's output (DFA's e)
    error_size: int
    loss: int  # capabilities.LOSSES
    mean: int  # 1: the loss is a mean over the batch
    optimizer: int  # capabilities.OPTIMIZERS
    redraws: int  # 1: the rule redraws matrices every step (the drawn arrays)
    batch: int  # samples per step
    count: int  # samples in the epoch


@dataclass(frozen=True)
class Survey:
    """Everything checked before a plan is built: each layer's op spec and features, the
    rule's description, the loss and optimizer codes."""

    net: Network
    rule: LearningRule | None
    specs: list[OpSpec]
    features: list[frozenset[str]]
    description: BackwardDescription
    loss: int
    mean: bool
    optimizer: int


def survey(net: Network, rule: LearningRule | None, optimizer: Any, loss: str,
           reduction: str) -> Survey:
    """Check the configuration; raise :class:`UnsupportedError` for the first thing the
    compiled engine cannot run."""
    if np.dtype(net.dtype) not in (np.float32, np.float64):
        raise UnsupportedError(f"dtype {net.dtype} has no compiled form")
    if loss not in LOSSES:
        raise UnsupportedError(f"loss {loss!r} has no compiled form")
    if type(optimizer) not in OPTIMIZERS:
        raise UnsupportedError(f"optimizer {type(optimizer).__name__} has no compiled form")
    if rule is not None and type(rule) is not LearningRule and rule.net is not net:
        raise UnsupportedError(f"rule {rule.name!r} is not bound to this network")
    refusal = rule_refusal(rule)
    if refusal:
        raise UnsupportedError(refusal)
    if not any(isinstance(layer, WeightLayer) for layer in net.layers):
        raise UnsupportedError("a network without conv or dense layers")
    description = rule.description() if rule is not None else BackwardDescription()
    known = op_specs()
    specs, features = [], []
    for index, layer in enumerate(net.layers):
        spec = known.get(type(layer))
        if spec is None:
            raise UnsupportedError(
                f"layer {layer.name!r} ({type(layer).__name__}) has no compiled form")
        specs.append(spec)
        features.append(spec.features(layer, description.weights.get(index)))
    return Survey(net, rule, specs, features, description, LOSSES[loss], reduction == "mean",
                  OPTIMIZERS[type(optimizer)][0])


@dataclass
class Plan:
    """The tables and the sizes of the arenas, per replica (or lane).

    arena : float arena values (activations, then extras, then ``settings.scratch`` and
        ``settings.work``); ints : integer arena values; fixed : the rule's fixed
        matrices; drawn : the matrices redrawn every step
    fixed_slots, drawn_slots : {layer index: (offset, size)} of ``rule.feedback_array``
    learned_slots : those of ``fixed_slots`` that the kernels train (a learning M), to be
        written back into the rule's arrays after each call
    """

    tables: Tables
    settings: Settings
    arena: int
    ints: int
    fixed: int
    drawn: int
    fixed_slots: dict[int, tuple[int, int]]
    drawn_slots: dict[int, tuple[int, int]]
    learned_slots: dict[int, tuple[int, int]] = field(default_factory=dict)

    def settings_for(self, batch: int, count: int) -> Settings:
        return self.settings._replace(batch=batch, count=count)


@dataclass
class PlanBuilder:
    """Fills the op table layer by layer, handing out offsets (what OpSpecs call)."""

    survey: Survey
    batch: int  # samples per arena row
    ops: np.ndarray = field(default_factory=lambda: np.zeros(0, OP_ROW))
    codes: list[int] = field(default_factory=list)
    slopes: list[float] = field(default_factory=list)
    scale_values: list[float] = field(default_factory=lambda: [0.0])
    arena: int = 0
    int_size: int = 0
    fixed: int = 0
    drawn: int = 0
    fixed_slots: dict[int, tuple[int, int]] = field(default_factory=dict)
    drawn_slots: dict[int, tuple[int, int]] = field(default_factory=dict)
    learned_slots: dict[int, tuple[int, int]] = field(default_factory=dict)
    scratch_size: int = 1  # feedback weights formed each step (and the loss value's rounding)
    work_size: int = 1  # one layer's working planes

    @property
    def net(self) -> Network:
        return self.survey.net

    # -- what an OpSpec's describe() uses ---------------------------------------------
    def shapes(self, row: np.ndarray, index: int) -> None:
        """in_c/in_h/in_w and out_c/out_h/out_w from the layer's shapes (a vector (C,) is
        (C, 1, 1))."""
        for prefix, shape in (("in", self.net.shapes[index]), ("out", self.net.shapes[index + 1])):
            c, h, w = (*shape, 1, 1)[:3] if len(shape) < 3 else shape
            row[f"{prefix}_c"], row[f"{prefix}_h"], row[f"{prefix}_w"] = c, h, w

    def window(self, row: np.ndarray, kernel, stride, padding=(0, 0)) -> None:
        (row["kernel_h"], row["kernel_w"]), (row["stride_h"], row["stride_w"]) = kernel, stride
        row["pad_h"], row["pad_w"] = padding

    def params(self, index: int) -> dict[str, tuple[int, int, tuple[int, ...]]]:
        """Layer ``index``'s parameters: {local: (start, stop, shape)} in the flat buffer."""
        return self.net.param_layout(index)

    def state(self, index: int) -> dict[str, tuple[int, int, tuple[int, ...]]]:
        return self.net.state_layout(index)

    def weight_grads(self, index: int) -> WeightGrads | None:
        """How the rule changes weight layer ``index`` (None: exact)."""
        return self.survey.description.weights.get(index)

    def routing(self, index: int, channels: int) -> PoolRouting:
        """How max-pool ``index`` routes its gradient (exact: the first maximum)."""
        found = self.survey.description.pools.get(index)
        return found or PoolRouting(("exact",) * channels)

    def add_codes(self, codes: list[int], slopes: list[float] | None = None) -> int:
        """Per-channel codes (and leaky slopes); returns their offset."""
        offset = len(self.codes)
        self.codes.extend(codes)
        self.slopes.extend(slopes if slopes is not None else [0.0] * len(codes))
        return offset

    def add_scales(self, values: list[float]) -> int:
        offset = len(self.scale_values)
        self.scale_values.extend(float(v) for v in values)
        return offset

    def add_ints(self, per_sample: int) -> int:
        """Room in the integer arena for ``per_sample`` values of every sample."""
        offset, self.int_size = self.int_size, self.int_size + self.batch * per_sample
        return offset

    def add_arena(self, size: int) -> int:
        """Room for ``size`` values in the float arena (kept from forward to backward)."""
        offset, self.arena = self.arena, self.arena + size
        return offset

    def need_work(self, size: int) -> None:
        """The op needs ``size`` values of working planes (shared by every op)."""
        self.work_size = max(self.work_size, size)

    # -- the rows ------------------------------------------------------------------------
    def _slot(self, slots: dict, index: int, which: str, size: int) -> int:
        offset = getattr(self, which)
        setattr(self, which, offset + size)
        slots[index] = (offset, size)
        return offset

    def add_row(self, index: int, layer: Any, spec: OpSpec) -> None:
        row = self.ops[index]  # a view: what is written here lands in the table
        net, description = self.net, self.survey.description
        row["kind"] = spec.code
        row["in_size"], row["out_size"] = prod(net.shapes[index]), prod(net.shapes[index + 1])
        row["in_offset"] = self.ops[index - 1]["out_offset"] if index else 0
        row["sends_grad"] = net.sends_grad(index) and index not in description.no_input_grad
        layout = self.params(index)
        if layout:
            row["params_offset"] = min(start for start, _, _ in layout.values())
            row["params_size"] = sum(stop - start for start, stop, _ in layout.values())
            row["weight_offset"] = layout["weight"][0] if "weight" in layout else -1
            row["bias_offset"] = layout["bias"][0] if "bias" in layout else -1
        if isinstance(layer, WeightLayer):
            row["weight_size"] = prod(layer.param_shapes()["weight"])
            self._feedback(row, index, int(row["weight_size"]))
        spec.describe(self, row, layer, index)
        if index in description.inject:  # DFA's B_l: (outputs, this layer's output size)
            size = self.error_size() * int(row["out_size"])
            row["inject_offset"] = self._slot(self.fixed_slots, index, "fixed", size)
        if row["out_offset"] < 0:
            row["out_offset"] = self.add_arena(self.batch * int(row["out_size"]))

    def error_size(self) -> int:
        """Values of DFA's error e per sample (the last weight layer's output)."""
        net = self.net
        last = max(i for i, layer in enumerate(net.layers) if isinstance(layer, WeightLayer))
        return prod(net.shapes[last + 1])

    def _feedback(self, row: np.ndarray, index: int, size: int) -> None:
        """The columns of B (and the rotations) for weight layer ``index``."""
        how = self.weight_grads(index) or WeightGrads()
        feedback = how.feedback
        row["rotate_delta"], row["rotate_sent"] = how.rotate_delta, how.rotate_sent
        if how.projected:  # the rule's matrix, whatever its shape (dense: K x in)
            size = int(self.survey.rule.feedback_array(index)[(0,) * len(self.net.rep_shape)]
                       .size)
            row["project_offset"] = self._slot(self.fixed_slots, index, "fixed", size)
            return
        row["feedback_base"] = _BASES[feedback.base]
        if feedback.array:
            slots, which = ((self.drawn_slots, "drawn") if feedback.redrawn
                            else (self.fixed_slots, "fixed"))
            row["feedback_offset"] = self._slot(slots, index, which, size)
            row["feedback_redrawn"] = feedback.redrawn
        if feedback.learning is not None:
            row["learning_offset"] = self.add_scales([feedback.learning.lr,
                                                      feedback.learning.weight_decay])
            self.learned_slots[index] = self.fixed_slots[index]
        if feedback.scale != 1.0:
            row["feedback_scale"] = self.add_scales([feedback.scale])
        if not feedback.is_weight and not (feedback.base == "none" and feedback.scale == 1.0):
            self.scratch_size = max(self.scratch_size, size)  # B formed in scratch every step

    def finish(self) -> Plan:
        survey, net, ops = self.survey, self.net, self.ops
        weights = [i for i, layer in enumerate(net.layers) if isinstance(layer, WeightLayer)]
        scratch = self.arena
        work = scratch + self.scratch_size
        arena = work + self.work_size
        lowest = min((i for i in range(len(net.layers)) if net.param_layout(i)), default=0)
        settings = Settings(
            lowest=lowest, scratch=scratch, work=work, in_size=prod(net.input_shape),
            classes=prod(net.output_shape), error_offset=int(ops[weights[-1]]["out_offset"]),
            error_size=int(ops[weights[-1]]["out_size"]), loss=survey.loss,
            mean=int(survey.mean), optimizer=survey.optimizer, redraws=int(bool(self.drawn)),
            batch=self.batch, count=0)
        tables = Tables(ops, np.array(self.codes + [0], np.int64),
                        np.array(self.slopes + [0.0]), np.array(self.scale_values))
        return Plan(tables, settings, arena, max(self.int_size, 1), max(self.fixed, 1),
                    max(self.drawn, 1), self.fixed_slots, self.drawn_slots,
                    self.learned_slots)


def build_plan(survey: Survey, batch: int) -> Plan:
    """The tables for the surveyed network, arenas for ``batch`` samples per row."""
    builder = PlanBuilder(survey, batch, _empty_table(len(survey.net.layers)))
    builder.arena = batch * prod(survey.net.input_shape)  # the input comes first
    for index, (layer, spec) in enumerate(zip(survey.net.layers, survey.specs, strict=True)):
        builder.add_row(index, layer, spec)
    return builder.finish()


def _empty_table(layers: int) -> np.ndarray:
    ops = np.zeros(layers, OP_ROW)
    for name in OP_COLUMNS:
        if name.endswith("_offset") or name == "feedback_scale":
            ops[name] = -1  # none
    return ops


def line_codes(routing: PoolRouting) -> list[int]:
    """A pool's per-channel line codes (ROUTE, GREEN, RED)."""
    return [_LINES[line] for line in routing.lines]


def transform_code(routing: PoolRouting) -> int:
    return _TRANSFORMS[routing.transform]
