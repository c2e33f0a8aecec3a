"""The plan: a network, rule, optimizer and loss turned into integer tables once per fit.

The compiled kernels know nothing about Python objects. They read one row per layer of
``ops`` (op code, geometry, where its parameters sit in the flat buffer, where its input
and output sit in the per-replica activation arena, what the rule changes) and walk the
rows forward, then backward. Building the plan is also where every unsupported case is
found: :class:`UnsupportedError` names the first one, and the caller falls back to NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

from ...core.network import Network
from ...core.ops import Activation, Conv2d, Dense, Flatten, MaxPool2d, PerChannelActivation
from ...core.ops.asrun import AsRunConv2d
from ...core.ops.avgpool import AvgPool2d, avg_pool2d_geometry
from ...core.ops.batchnorm import BatchNorm2d
from ...rules.base import LearningRule
from ..optim import Adam, Momentum, Nesterov, Optimizer
from .adapter import (
    FB_MATRIX,
    FB_SIGN_MAGNITUDE,
    FB_SIGN_SCALE,
    FB_WEIGHT,
    ROUTE,
    RulePlan,
    UnsupportedError,
    rule_plan,
)

# Op codes.
CONV, POOL, DENSE, FLAT, ACT, AVG, BN = 0, 1, 2, 3, 4, 5, 6
# Columns of the ops table.
(KIND, C, H, W, O, OH, OW, KH, KW, SH, SW, PH, PW, GROUPS, W_OFF, B_OFF, IN_OFF, OUT_OFF,
 IN_SIZE, OUT_SIZE, CODE_OFF, INT_OFF, NEED_DX, TIES, ROT_W, ROT_DX, TRANSFORM, FB_KIND,
 FB_OFF, INJECT, INJECT_OFF, SCALE, FW_OFF, W_OSTRIDE, ASRUN_TRUE, BORROW_OFF, STATE_OFF,
 CACHE_OFF) = range(38)
COLUMNS = 38
# Activation codes.
IDENTITY, RELU, LEAKY, TANH, ARCTAN, SIGMOID = range(6)
_ACT_CODES = {"identity": IDENTITY, "relu": RELU, "tanh": TANH, "arctan": ARCTAN,
              "sigmoid": SIGMOID}
# Losses, optimizers.
L2, BCE, SOFTMAX_CE = 0, 1, 2
_LOSS_CODES = {"l2": L2, "bce": BCE, "softmax_ce": SOFTMAX_CE}
SGD, MOMENTUM, NESTEROV, ADAM = 0, 1, 2, 3
_OPTIMIZERS = {Optimizer: SGD, Momentum: MOMENTUM, Nesterov: NESTEROV, Adam: ADAM}


@dataclass
class Plan:
    """Tables for the kernels (see the module notes) and the sizes of the arenas.

    ops (L, COLUMNS) int64; codes int64 (activation code per channel, pool mode per
    channel); slopes float64 (leaky slope per channel entry of ``codes``); scales
    float64 (usf scale per layer, indexed by ops[:, SCALE]); arena / ints: values per
    replica of the float and integer arenas (the float one ends with ``scratch_off``,
    room for one layer's feedback weights, then ``work_off``, room for one layer's
    padded planes); feedback: values per replica
    of the fixed feedback arrays (FA/frSF/DFA); drawn: values per step of brSF's magnitudes;
    lowest: the lowest layer backward visits; error_off/error_size: where DFA's output
    error sits in the gradient arena.
    """

    ops: np.ndarray
    codes: np.ndarray
    slopes: np.ndarray
    scales: np.ndarray
    arena: int
    scratch_off: int
    work_off: int
    ints: int
    feedback: int
    drawn: int
    lowest: int
    error_off: int
    error_size: int
    in_size: int
    out_size: int
    loss: int
    mean: bool
    optimizer: int
    rule: RulePlan
    # layer index -> (offset, size) of its fixed feedback / drawn magnitudes
    feedback_slots: dict[int, tuple[int, int]]
    drawn_slots: dict[int, tuple[int, int]]


def optimizer_code(optimizer: Any) -> int:
    code = _OPTIMIZERS.get(type(optimizer))
    if code is None:
        raise UnsupportedError(f"optimizer {type(optimizer).__name__} has no compiled form")
    return code


def _activation_code(name: str) -> tuple[int, float]:
    if name in _ACT_CODES:
        return _ACT_CODES[name], 0.0
    if name.startswith("leaky_relu:"):
        return LEAKY, float(name.partition(":")[2])
    raise UnsupportedError(f"activation {name!r} has no compiled form")


def build_plan(net: Network, rule: LearningRule | None, optimizer: Any, loss: str,
               reduction: str, batch_size: int) -> Plan:
    """The plan for ``net`` trained on batches of at most ``batch_size`` samples."""
    if np.dtype(net.dtype) not in (np.float32, np.float64):
        raise UnsupportedError(f"dtype {net.dtype} has no compiled form")
    if loss not in _LOSS_CODES:
        raise UnsupportedError(f"loss {loss!r} has no compiled form")
    opt = optimizer_code(optimizer)
    rules = rule_plan(rule, net)
    builder = _Builder(net, rules, batch_size)
    for index, layer in enumerate(net.layers):
        builder.add(index, layer)
    return builder.finish(loss, reduction, opt)


class _Builder:
    """Fills the ops table layer by layer, handing out arena offsets."""

    def __init__(self, net: Network, rules: RulePlan, batch: int) -> None:
        self.net, self.rules, self.batch = net, rules, batch
        self.rows: list[np.ndarray] = []
        self.codes: list[int] = []
        self.slopes: list[float] = []
        self.scales: list[float] = [0.0]
        self.arena = batch * prod(net.input_shape)  # boundary 0: the input
        self.boundary = [0]  # arena offset of every layer boundary
        self.ints = 0
        self.feedback = 0
        self.drawn = 0
        self.feedback_slots: dict[int, tuple[int, int]] = {}
        self.drawn_slots: dict[int, tuple[int, int]] = {}
        self.scratch = 1  # feedback weights formed each step (and the loss value's rounding)
        self.work = 1  # one layer's working planes (padded maps, pool planes)
        weights = [i for i, lay in enumerate(net.layers) if isinstance(lay, Conv2d | Dense)]
        if not weights:
            raise UnsupportedError("a network without conv or dense layers")
        self.last_weight = weights[-1]

    def _layout(self, index: int) -> tuple[str, dict[str, int]]:
        layout = self.net._layout[index]
        offsets = {name: start for name, (start, _, _) in layout.items()}
        return layout, offsets

    def add(self, index: int, layer: Any) -> None:
        row = np.zeros(COLUMNS, np.int64)
        row[W_OFF] = row[B_OFF] = -1
        in_shape, out_shape = self.net.shapes[index], self.net.shapes[index + 1]
        row[IN_SIZE], row[OUT_SIZE] = prod(in_shape), prod(out_shape)
        row[IN_OFF] = self.boundary[index]
        row[NEED_DX] = self.net._need_input_grad[index] and index not in self.rules.no_input_grad
        _, offsets = self._layout(index)
        if type(layer) is Conv2d:
            self._conv(row, layer, in_shape, out_shape, offsets)
        elif type(layer) is AsRunConv2d:
            self._conv(row, layer, in_shape, out_shape, offsets)
            self._as_run(row, index, layer)
        elif type(layer) is Dense:
            row[KIND] = DENSE
            row[C], row[O] = in_shape[0], out_shape[0]
            self._weights(row, index, layer, offsets)
        elif type(layer) is MaxPool2d:
            self._pool(row, index, layer, in_shape, out_shape)
        elif type(layer) is Flatten:
            row[KIND] = FLAT
        elif type(layer) is AvgPool2d:
            self._avg_pool(row, layer, in_shape, out_shape)
        elif type(layer) is BatchNorm2d:
            self._batch_norm(row, index, layer, in_shape, offsets)
        elif type(layer) is Activation:
            self._activation(row, [layer.activation.name], in_shape)
        elif type(layer) is PerChannelActivation:
            self._activation(row, list(layer.activations), in_shape)
        else:
            raise UnsupportedError(
                f"layer {layer.name!r} ({type(layer).__name__}) has no compiled form")
        if index in self.rules.inject:  # DFA's B: (outputs, this layer's output size)
            size = prod(self.net.shapes[self.last_weight + 1]) * int(row[OUT_SIZE])
            row[INJECT], row[INJECT_OFF] = 1, self._slot(self.feedback_slots, index,
                                                         "feedback", size)
        if row[KIND] == FLAT:  # row-major flatten: the same values, the same place
            row[OUT_OFF] = row[IN_OFF]
        else:
            row[OUT_OFF] = self.arena
            self.arena += self.batch * int(row[OUT_SIZE])
        self.boundary.append(int(row[OUT_OFF]))
        self.rows.append(row)

    def _slot(self, slots: dict, index: int, which: str, size: int) -> int:
        """Room for ``size`` values of layer ``index`` in the ``which`` arena ("feedback":
        fixed per run, or "drawn": per step); returns the offset."""
        offset = getattr(self, which)
        setattr(self, which, offset + size)
        slots[index] = (offset, size)
        return offset

    def _weights(self, row: np.ndarray, index: int, layer: Any, offsets: dict[str, int]) -> None:
        row[W_OFF] = offsets["weight"]
        row[B_OFF] = offsets.get("bias", -1)
        kind = self.rules.feedback.get(index, FB_WEIGHT)
        row[FB_KIND] = kind
        size = prod(layer.param_shapes()["weight"])
        if kind in (FB_MATRIX, FB_SIGN_MAGNITUDE):  # an array the rule keeps
            if self.rules.redraws:
                row[FB_OFF] = self._slot(self.drawn_slots, index, "drawn", size)
            else:
                row[FB_OFF] = self._slot(self.feedback_slots, index, "feedback", size)
        if kind in (FB_SIGN_SCALE, FB_SIGN_MAGNITUDE):  # B formed in scratch every step
            self.scratch = max(self.scratch, size)
        if index in self.rules.sign_scale:
            row[SCALE] = len(self.scales)
            self.scales.append(self.rules.sign_scale[index])

    def _as_run(self, row: np.ndarray, index: int, layer: AsRunConv2d) -> None:
        """The forward pass reads the lender's kernel for every output channel. Backward:
        the conv's own formulas with its own W where the rule computes them (the
        article's rules, feedback rules), else the true gradient: through the borrowed
        kernel, dL/dK = sum over outputs added to the lender's gradient, 0 for W."""
        owner, _, local = layer.borrowed()["source"].rpartition(".")
        source = self.net.layer_index(owner)
        start, stop, shape = self.net._layout[source][local]
        own = layer.param_shapes()["weight"]
        kernel = prod(own[1:])
        if tuple(shape[1:]) != tuple(own[1:]) or not 0 <= layer.source_channel < shape[0]:
            raise UnsupportedError(f"layer {layer.name!r}: kernel {layer.source_channel} of "
                                   f"{owner}.{local} {tuple(shape)} cannot stand in for its "
                                   f"weight {tuple(own)}")
        row[FW_OFF], row[W_OSTRIDE] = start + layer.source_channel * kernel, 0
        if index not in self.rules.conv_formulas:
            if row[FB_KIND] != FB_WEIGHT:
                raise UnsupportedError(f"layer {layer.name!r}: the rule's feedback with a "
                                       "borrowed kernel has no compiled form")
            row[ASRUN_TRUE] = 1
            row[BORROW_OFF] = self.arena
            self.arena += kernel

    def _conv(self, row, layer: Conv2d, in_shape, out_shape, offsets) -> None:
        row[KIND] = CONV
        row[C], row[H], row[W] = in_shape
        row[O], row[OH], row[OW] = out_shape
        (row[KH], row[KW]), (row[SH], row[SW]) = layer.kernel_size, layer.stride
        (row[PH], row[PW]), row[GROUPS] = layer.padding, layer.groups
        index = self.net.layers.index(layer)
        self._weights(row, index, layer, offsets)
        row[FW_OFF], row[W_OSTRIDE] = row[W_OFF], prod(layer.param_shapes()["weight"][1:])
        # padded input, delta widened to padded rows, padded input gradient
        padded = in_shape[0] * (in_shape[1] + 2 * row[PH]) * (in_shape[2] + 2 * row[PW])
        self.work = max(self.work, 2 * padded + out_shape[1] * (in_shape[2] + 2 * row[PW]))
        row[ROT_W] = index in self.rules.rotate_weight_grad
        row[ROT_DX] = index in self.rules.rotate_input_grad

    def _pool(self, row, index: int, layer: MaxPool2d, in_shape, out_shape) -> None:
        row[KIND] = POOL
        row[C], row[H], row[W] = in_shape
        row[O], row[OH], row[OW] = out_shape
        (row[KH], row[KW]), (row[SH], row[SW]) = layer.kernel_size, layer.stride
        row[INT_OFF] = self.ints
        self.ints += self.batch * int(row[OUT_SIZE])  # each window's winning tap
        pool = self.rules.pools.get(index)
        modes = [ROUTE] * in_shape[0] if pool is None or pool.modes is None else pool.modes
        row[TIES] = bool(pool is not None and pool.ties)
        row[TRANSFORM] = 0 if pool is None else pool.transform
        row[CODE_OFF] = len(self.codes)
        self.codes.extend(modes)
        self.slopes.extend([0.0] * len(modes))
        self.work = max(self.work, 2 * in_shape[1] * in_shape[2])

    def _avg_pool(self, row, layer: AvgPool2d, in_shape, out_shape) -> None:
        row[KIND] = AVG
        row[C], row[H], row[W] = in_shape
        row[O], row[OH], row[OW] = out_shape
        (row[KH], row[KW]), (row[SH], row[SW]) = layer.kernel_size, layer.stride
        row[PH], row[PW] = layer.padding
        geometry = avg_pool2d_geometry(tuple(in_shape[1:]), layer.kernel_size, layer.stride,
                                       layer.padding, layer.count_include_pad)
        row[SCALE] = len(self.scales)  # each window's divisor
        self.scales.extend(float(d) for d in geometry.divisor)

    def _batch_norm(self, row, index: int, layer: BatchNorm2d, in_shape, offsets) -> None:
        """Train mode; running statistics in the state buffer (mean, then variance)."""
        row[KIND] = BN
        row[C], row[H], row[W] = in_shape
        if in_shape[1] * in_shape[2] < 2:  # one value per channel: the reference refuses
            raise UnsupportedError(f"layer {layer.name!r}: batch norm of 1x1 maps")
        row[W_OFF] = offsets.get("weight", -1)
        row[B_OFF] = offsets.get("bias", -1)
        state = self.net._state_layout[index]
        row[STATE_OFF] = state["running_mean"][0]
        if state["running_var"][0] != row[STATE_OFF] + in_shape[0]:
            raise UnsupportedError(f"layer {layer.name!r}: unexpected state layout")
        row[CACHE_OFF] = self.arena  # xhat, then 1/sqrt(var + eps) per channel
        self.arena += self.batch * prod(in_shape) + in_shape[0]
        row[SCALE] = len(self.scales)
        self.scales.extend([layer.eps, layer.momentum])

    def _activation(self, row, names: list[str], in_shape) -> None:
        row[KIND] = ACT
        channels = in_shape[0] if len(names) > 1 else 1
        row[C] = channels
        row[H] = prod(in_shape) // channels  # values per channel in one sample
        row[CODE_OFF] = len(self.codes)
        for name in names:
            code, slope = _activation_code(name)
            self.codes.append(code)
            self.slopes.append(slope)

    def finish(self, loss: str, reduction: str, optimizer: int) -> Plan:
        ops = np.stack(self.rows)
        scratch_off = self.arena
        work_off = scratch_off + self.scratch
        self.arena = work_off + self.work
        lowest = min((i for i, lay in enumerate(self.net._layout) if lay), default=0)
        return Plan(
            ops=ops, codes=np.array(self.codes + [0], np.int64),
            slopes=np.array(self.slopes + [0.0]), scales=np.array(self.scales),
            arena=self.arena, scratch_off=scratch_off, work_off=work_off, ints=max(self.ints, 1),
            feedback=max(self.feedback, 1),
            drawn=max(self.drawn, 1), lowest=lowest,
            error_off=int(ops[self.last_weight, OUT_OFF]),
            error_size=int(ops[self.last_weight, OUT_SIZE]),
            in_size=prod(self.net.input_shape), out_size=prod(self.net.output_shape),
            loss=_LOSS_CODES[loss], mean=reduction == "mean", optimizer=optimizer,
            rule=self.rules, feedback_slots=self.feedback_slots, drawn_slots=self.drawn_slots,
        )
