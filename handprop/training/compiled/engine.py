"""The compiled engine's driver: arrays in, one kernel call per epoch, state back.

Everything the kernels change lives in the Python objects' own arrays: the network's
flat buffer and the optimizer's velocity/moments are passed in and updated in place,
and brSF's magnitudes are drawn by the rule itself. So after every epoch the network,
optimizer and rule hold exactly what the NumPy engine's would (checkpoints do not
know which engine made them), and schedules, which change the optimizer between
epochs, are read afresh at the start of each epoch.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ...core.network import Network
from ...rules.base import LearningRule
from ..epoch import EpochResult
from . import adapter
from .adapter import UnsupportedError
from .kernels_epoch import (
    BATCH,
    CLASSES,
    COUNT,
    ERROR_OFF,
    ERROR_SIZE,
    IN_SIZE,
    LOSS,
    LOWEST,
    MEAN,
    OPTIMIZER,
    REDRAWS,
    SCRATCH,
    SETTINGS,
    WORK,
    train_epoch,
)
from .lanes import LANES
from .plan import (
    ACT,
    ADAM,
    ASRUN_TRUE,
    B_OFF,
    CONV,
    DENSE,
    FLAT,
    KIND,
    MOMENTUM,
    NESTEROV,
    POOL,
    SH,
    SW,
    Plan,
    build_plan,
)

# brSF's magnitudes are drawn ahead for at most this many bytes of steps at a time.
DRAWN_BYTES = 32 << 20
# From this many replicas on, the lane layout (eight replicas per block) runs them: it
# gives each replica the same bits as the per-replica kernels, and is faster from three
# on (measured here, seed net, us per replica-step: R = 2: 10.3 in lanes, 8.6 per
# replica; R = 3: 7.0 / 8.6; R = 4: 5.8 / 8.7; R = 24: 3.0 / 8.9).
LANES_FROM = 3


def lanes_fit(plan: Plan, dtype: np.dtype, replicas: int) -> bool:
    """Whether the lane kernels run this plan: float64, enough replicas, and only the
    ops they have (convolutions of stride 1, max-pool, dense, flatten, activations)."""
    if replicas < LANES_FROM or np.dtype(dtype) != np.float64:
        return False
    for op in plan.ops:
        if op[KIND] == CONV and (op[SH] != 1 or op[SW] != 1):
            return False
        if op[KIND] not in (CONV, POOL, DENSE, FLAT, ACT):
            return False
    return True


def batch_lanes_fit(plan: Plan, dtype: np.dtype, replicas: int, batch_size: int) -> bool:
    """Whether one network's batches run with their samples in lanes (see
    :mod:`.lanes_batch`): the lane kernels' ops, batches of multiples of eight, and
    no sum the lanes would take in another order (conv biases, as-run true gradients)."""
    if replicas != 1 or batch_size % LANES or not lanes_fit(plan, dtype, LANES_FROM):
        return False
    convs = plan.ops[plan.ops[:, KIND] == CONV]
    return not ((convs[:, B_OFF] >= 0).any() or (convs[:, ASRUN_TRUE] != 0).any())


def to_lanes(rows: np.ndarray, blocks: int) -> np.ndarray:
    """(R, *rest) -> (blocks, prod(rest) * LANES): value k of replica r at
    [r // LANES, k * LANES + r % LANES]; lanes past R hold zeros."""
    rest = rows.shape[1:]
    out = np.zeros((blocks * LANES, *rest), rows.dtype)
    out[: len(rows)] = rows
    out = out.reshape(blocks, LANES, -1).transpose(0, 2, 1)
    return np.ascontiguousarray(out).reshape(blocks, -1)


def from_lanes(lanes: np.ndarray, out: np.ndarray) -> None:
    """The inverse of :func:`to_lanes`, into ``out`` (R, size)."""
    blocks = lanes.shape[0]
    rows = lanes.reshape(blocks, -1, LANES).transpose(0, 2, 1).reshape(blocks * LANES, -1)
    out[...] = rows[: len(out)]


class CompiledEpoch:
    """An :class:`~handprop.training.epoch.Engine` running compiled kernels (Numba).

    ``threads``: how many threads run replicas side by side (results are the same for
    any number).
    """

    name = "compiled"

    def __init__(self, net: Network, rule: LearningRule | None, optimizer: Any, loss: str,
                 reduction: str, batch_size: int, threads: int = 1) -> None:
        self.net, self.rule, self.optimizer = net, rule, optimizer
        self.batch_size = batch_size
        self.threads = max(int(threads), 1)
        self.plan: Plan = build_plan(net, rule, optimizer, loss, reduction, batch_size)
        self.replicas = net.rep_shape[0] if net.rep_shape else 1
        dtype = net.dtype
        plan = self.plan
        self.lanes = lanes_fit(plan, dtype, self.replicas)
        self.batch_lanes = batch_lanes_fit(plan, dtype, self.replicas, batch_size)
        if self.batch_lanes:  # a block holds one sample per lane: arenas for one sample
            self.plan = plan = build_plan(net, rule, optimizer, loss, reduction, 1)
        # per-replica rows, or per block of LANES replicas (or samples) in the lane layout
        rows = -(-self.replicas // LANES) if self.lanes else self.replicas
        width = LANES if self.lanes or self.batch_lanes else 1
        self.arena = np.zeros((rows, plan.arena * width), dtype)
        self.garena = np.zeros((rows, plan.arena * width), dtype)
        self.ints = np.zeros((rows, plan.ints * width), np.int64)
        self.gflat = np.zeros((rows, net.num_params * width), dtype)
        self.fixed = np.zeros((self.replicas, plan.feedback), dtype)
        self._fill_fixed()
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # -- arrays ----------------------------------------------------------------------
    def _rows(self, array: np.ndarray) -> np.ndarray:
        """``array`` (*rep, ...) as (R, -1), a view: the kernels write through it."""
        rows = array.reshape(self.replicas, -1)
        if not np.shares_memory(rows, array) or not rows.flags.c_contiguous:
            raise RuntimeError("compiled engine: an array is not contiguous")  # never silent
        return rows

    def _fill_fixed(self) -> None:
        """FA's B, frSF's magnitudes, DFA's B_l into the per-replica feedback rows."""
        arrays = adapter.feedback_arrays(self.rule)
        for index, (offset, size) in self.plan.feedback_slots.items():
            array = arrays.get(index)
            if array is None or array.size != self.replicas * size:
                raise UnsupportedError(f"the rule's feedback array for layer {index} is not "
                                       "the expected size")
            self.fixed[:, offset : offset + size] = array.reshape(self.replicas, size)

    def _optimizer_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        opt, net = self.optimizer, self.net
        opt.init_state(net.flat)
        for attr in ("velocity", "buffer", "m", "v"):
            value = getattr(opt, attr, None)
            if value is not None and (value.dtype != net.dtype or not value.flags.c_contiguous
                                      or value.shape != net.flat.shape):
                setattr(opt, attr, np.ascontiguousarray(value, net.dtype).reshape(net.flat.shape))
        code = self.plan.optimizer
        spare = np.zeros((self.replicas, 1), net.dtype)
        if code == MOMENTUM:
            return self._rows(opt.velocity), spare
        if code == NESTEROV:
            return self._rows(opt.buffer), spare
        if code == ADAM:
            return self._rows(opt.m), self._rows(opt.v)
        return spare, spare

    def _state_rows(self) -> np.ndarray:
        """The network's state buffer (running statistics) as (R, -1) rows, a view."""
        if not self.net.num_state:
            return np.zeros((self.replicas, 1), self.net.dtype)
        return self._rows(self.net.buffer_flat)

    def _hyper(self) -> np.ndarray:
        opt = self.optimizer
        beta1, beta2 = getattr(opt, "beta1", 0.0), getattr(opt, "beta2", 0.0)
        values = [opt.lr, opt.momentum, opt.weight_decay, beta1, 1 - beta1, beta2, 1 - beta2,
                  getattr(opt, "eps", 0.0)]
        return np.array(values, self.net.dtype)

    def _corrections(self, steps: int) -> np.ndarray:
        """Adam's bias corrections 1 - beta**t for this epoch's steps (t counts globally)."""
        out = np.ones((steps, 2), self.net.dtype)
        if self.plan.optimizer == ADAM:
            opt = self.optimizer
            for s in range(steps):
                t = opt.steps + s + 1
                out[s] = (1 - opt.beta1**t, 1 - opt.beta2**t)
        return out

    def _targets(self, ye: np.ndarray, count: int) -> np.ndarray:
        """(R, N, K) float targets; softmax's class indices become one-hot rows (what
        the reference's loss does with them)."""
        classes = self.plan.out_size
        y = np.asarray(ye)
        if y.ndim == len(self.net.rep_shape) + 1:  # class indices
            y = (y[..., None] == np.arange(classes)).astype(self.net.dtype)
        return np.ascontiguousarray(y, self.net.dtype).reshape(self.replicas, count, classes)

    def _settings(self, count: int) -> np.ndarray:
        plan = self.plan
        settings = np.zeros(SETTINGS, np.int64)
        settings[LOWEST], settings[SCRATCH] = plan.lowest, plan.scratch_off
        settings[IN_SIZE], settings[CLASSES] = plan.in_size, plan.out_size
        settings[ERROR_OFF], settings[ERROR_SIZE] = plan.error_off, plan.error_size
        settings[LOSS], settings[MEAN] = plan.loss, plan.mean
        settings[OPTIMIZER], settings[REDRAWS] = plan.optimizer, plan.rule.redraws
        settings[BATCH], settings[COUNT] = self.batch_size, count
        settings[WORK] = plan.work_off
        return settings

    # -- the epoch -------------------------------------------------------------------
    def run_epoch(self, xe, ye, sizes, alive) -> EpochResult:
        net = self.net
        count = xe.shape[1 if net.rep_shape else 0]
        steps = math.ceil(count / self.batch_size)
        x = np.ascontiguousarray(xe, net.dtype).reshape(self.replicas, -1)
        y = self._targets(ye, count)
        sizes = np.ascontiguousarray(sizes, np.int64)
        self._fill_fixed()  # the rule's arrays as they are now (e.g. after load_state)
        flat = self._rows(net.flat)
        state1, state2 = self._optimizer_arrays()
        self._buffers = self._state_rows()
        before = [flat.copy(), state1.copy(), state2.copy(), self._buffers.copy()]
        rule_before = adapter.save_rule_state(self.rule)
        inputs = (x, y, sizes, self._settings(count), self._hyper(), self._corrections(steps))
        cost, bad = self._run(inputs, flat, state1, state2, steps)
        stop = _early_stop(bad, alive, steps)
        if stop < steps:  # every alive replica diverged: the reference stops right there
            for array, saved in zip((flat, state1, state2, self._buffers), before, strict=True):
                array[...] = saved
            adapter.load_rule_state(self.rule, rule_before)
            cost, bad = self._run(inputs, flat, state1, state2, stop)
            steps = stop
        self.optimizer.steps += steps
        return EpochResult(cost, bad, steps)

    def _run(self, inputs, flat, state1, state2, steps: int) -> tuple[np.ndarray, np.ndarray]:
        x, y, sizes, settings, hyper, corrections = inputs
        plan = self.plan
        cost = np.zeros(self.replicas)
        bad = np.zeros(self.replicas, np.int64)
        chunk = steps
        if plan.rule.redraws:
            per_step = self.replicas * plan.drawn * flat.itemsize
            chunk = max(1, min(steps, DRAWN_BYTES // per_step))
        drawn = np.zeros((self.replicas, 1, 1), flat.dtype)
        if self.lanes:
            return self._run_lanes(inputs, flat, state1, state2, steps, chunk)
        if self.batch_lanes:
            return self._run_batch_lanes(inputs, flat, state1, state2, steps, chunk)
        for first in range(0, steps, chunk):
            todo = min(chunk, steps - first)
            if plan.rule.redraws:
                drawn = self._draw(first, todo, sizes)
            arrays = (plan.ops, plan.codes, plan.slopes, plan.scales, settings, flat, state1,
                      state2, self._buffers, hyper, corrections, x, y, sizes, self.fixed, drawn,
                      self.arena, self.garena, self.ints, self.gflat, cost, bad, first, todo)
            self._side_by_side(train_epoch, arrays, self.replicas)
        return cost, bad

    def _run_lanes(self, inputs, flat, state1, state2, steps: int, chunk: int
                   ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_run` in the lane layout: every array in blocks of LANES replicas,
        and the parameters and optimizer state back in their rows at the end."""
        x, y, sizes, settings, hyper, corrections = inputs
        plan, blocks = self.plan, self.arena.shape[0]
        rows = (flat, state1, state2)
        flat_l, state1_l, state2_l = (to_lanes(array, blocks) for array in rows)
        x_l, y_l = to_lanes(x, blocks), to_lanes(y.reshape(self.replicas, -1), blocks)
        sizes_l = np.zeros(blocks * LANES, np.int64)
        sizes_l[: self.replicas] = sizes
        cost = np.zeros(blocks * LANES)
        bad = np.zeros(blocks * LANES, np.int64)
        drawn = np.zeros((blocks, 1, LANES), flat.dtype)
        fixed = to_lanes(self.fixed, blocks)
        spare = np.zeros((3, 1), flat.dtype)
        for first in range(0, steps, chunk):
            todo = min(chunk, steps - first)
            if plan.rule.redraws:
                drawn = self._draw(first, todo, sizes)
                drawn = to_lanes(drawn.reshape(self.replicas, -1), blocks).reshape(blocks, todo,
                                                                                   -1)
            arrays = (False, plan.ops, plan.codes, plan.slopes, plan.scales, settings, flat_l,
                      state1_l, state2_l, hyper, corrections, x_l, y_l, sizes_l, fixed, drawn,
                      self.arena, self.garena, self.ints, self.gflat, spare, cost, bad, first,
                      todo)
            self._side_by_side(_lane_kernel(arrays), arrays, blocks)
        for array, lanes in zip(rows, (flat_l, state1_l, state2_l), strict=True):
            from_lanes(lanes, array)
        return cost[: self.replicas], bad[: self.replicas]

    def _run_batch_lanes(self, inputs, flat, state1, state2, steps: int, chunk: int
                         ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_run` for one network whose batches' samples take the lanes."""
        x, y, sizes, settings, hyper, corrections = inputs
        plan, count = self.plan, int(settings[COUNT])
        blocks = -(-count // LANES)
        x_l = to_lanes(x.reshape(count, -1), blocks)
        y_l = to_lanes(y.reshape(count, -1), blocks)
        fixed = to_lanes(np.repeat(self.fixed, LANES, axis=0), 1)
        cost, bad = np.zeros(1), np.zeros(1, np.int64)
        # the parameters in every lane, brSF's magnitudes in every lane, the gradient
        spare = np.zeros((3, max(flat.shape[1], plan.drawn) * LANES), flat.dtype)
        drawn = np.zeros((1, 1, 1), flat.dtype)
        for first in range(0, steps, chunk):
            todo = min(chunk, steps - first)
            if plan.rule.redraws:
                drawn = self._draw(first, todo, sizes)
            arrays = (True, plan.ops, plan.codes, plan.slopes, plan.scales, settings, flat,
                      state1, state2, hyper, corrections, x_l, y_l, sizes, fixed, drawn,
                      self.arena, self.garena, self.ints, self.gflat, spare, cost, bad, first,
                      todo)
            _lane_kernel(arrays)(*arrays, 0, 1)
        return cost, bad

    def _side_by_side(self, kernel, arrays: tuple, rows: int) -> None:
        """The kernel over contiguous ranges of rows (replicas or blocks), one range per
        thread."""
        ranges = np.array_split(np.arange(rows), min(self.threads, rows))
        bounds = [(int(part[0]), int(part[-1]) + 1) for part in ranges]
        if len(bounds) == 1:
            kernel(*arrays, *bounds[0])
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(len(bounds) - 1)
        waiting = [self._pool.submit(kernel, *arrays, *b) for b in bounds[1:]]
        kernel(*arrays, *bounds[0])
        for future in waiting:
            future.result()

    def _draw(self, first: int, todo: int, sizes: np.ndarray) -> np.ndarray:
        """brSF: the rule draws each step's magnitudes itself, as it would in the NumPy
        engine (frozen replicas keep theirs and do not advance their generator)."""
        plan = self.plan
        drawn = np.zeros((self.replicas, todo, plan.drawn), self.net.dtype)
        shortest = int(sizes.min())
        for s in range(todo):
            start = (first + s) * self.batch_size
            active = None if start + 1 <= shortest else ~(sizes < start + 1)
            magnitudes = adapter.redraw(self.rule, active)
            for index, (offset, size) in plan.drawn_slots.items():
                drawn[:, s, offset : offset + size] = magnitudes[index].reshape(
                    self.replicas, size)
        return drawn


def _lane_kernel(arrays: tuple) -> Any:
    """The lane kernel, compiled (or loaded from the cache) on first use with the
    vectorizers it needs (see :mod:`.lanes`), by a call that does no work."""
    from .lanes import vector_codegen
    from .lanes_batch import train_lanes

    if not train_lanes.signatures:
        with vector_codegen():
            train_lanes(False, *arrays[1:-1], 0, 0, 0)  # no steps, no block
    return train_lanes


def _early_stop(bad: np.ndarray, alive: np.ndarray, steps: int) -> int:
    """The step after which the NumPy engine stops: the first step at which some replica
    turned non-finite while no alive replica is left finite (``steps`` if never)."""
    turned = sorted({int(s) for s in bad if s > 0})
    for step in turned:
        if not np.any(alive & ((bad == 0) | (bad > step))):
            return step
    return steps


