"""The compiled engine's driver: arrays in, one kernel call per epoch, state back.

Everything the kernels change lives in the Python objects' own arrays: the network's
flat buffer and the optimizer's velocity/moments are passed in and updated in place,
and redrawn matrices (brSF's) are drawn by the rule itself. So after every epoch the
network, optimizer and rule hold exactly what the NumPy engine's would (checkpoints do
not know which engine made them), and schedules, which change the optimizer between
epochs, are read afresh at the start of each epoch.

The layout (:mod:`.capabilities`) is chosen once, before the plan is built; its runner
(:class:`ReplicaRunner`, :class:`LaneRunner`, :class:`BatchLaneRunner`) lays the arrays
out for its kernels and calls them. The kernels take their arrays as named groups:
:class:`Model` (the network's, optimizer's and rule's rows), :class:`Work` (arenas) and
:class:`EpochArrays` (this call's data and results).
"""

from __future__ import annotations

import copy
import importlib
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

from ...core.network import Network
from ...rules.base import LearningRule
from ..contract import EpochResult
from ..optim import Adam, Momentum, Nesterov
from .capabilities import LANES, OPTIMIZERS, Workload, choose_layout
from .plan import Plan, build_plan, survey
from .slots import Lanes

# Redrawn matrices (brSF's) are drawn ahead for at most this many bytes of steps at a time.
DRAWN_BYTES = 32 << 20
MOMENTUM, NESTEROV, ADAM = (OPTIMIZERS[kind][0] for kind in (Momentum, Nesterov, Adam))


class Model(NamedTuple):
    """Rows of what training changes: parameters, optimizer state (two buffers), state
    buffers (running statistics), the rule's fixed matrices."""

    flat: Any
    state1: Any
    state2: Any
    buffers: Any
    fixed: Any


class Work(NamedTuple):
    """Rows of scratch: the activation, gradient and integer arenas, the parameter
    gradient."""

    arena: Any
    garena: Any
    ints: Any
    gflat: Any


class EpochArrays(NamedTuple):
    """One call's data: inputs and targets (rows), each replica's sample count, the
    optimizer's hyper-parameters and Adam's corrections per step, the redrawn matrices
    per step (rows); and its results, each replica's cost and first bad step."""

    x: Any
    y: Any
    sizes: np.ndarray
    hyper: np.ndarray
    corrections: np.ndarray
    drawn: Any
    cost: np.ndarray
    bad: np.ndarray


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
    """An :class:`~handprop.training.engines.Engine` running compiled kernels (Numba).

    ``threads``: how many threads run replicas side by side (results are the same for
    any number). ``layout``: the name of the layout to run in (else chosen for the work,
    see :func:`~.capabilities.choose_layout`).
    """

    name = "compiled"

    def __init__(self, net: Network, rule: LearningRule | None, optimizer: Any, loss: str,
                 reduction: str, batch_size: int, threads: int = 1,
                 layout: str | None = None) -> None:
        self.net, self.rule, self.optimizer = net, rule, optimizer
        self.batch_size = batch_size
        self.threads = max(int(threads), 1)
        self.survey = survey(net, rule, optimizer, loss, reduction)
        self.layout = choose_layout(Workload.of(net, batch_size), self.survey, layout)
        self.plan: Plan = build_plan(self.survey, self.layout.arena_batch(batch_size))
        self.replicas = net.rep_shape[0] if net.rep_shape else 1
        self.fixed = np.zeros((self.replicas, self.plan.fixed), net.dtype)
        self._fill_fixed()
        self._pool: ThreadPoolExecutor | None = None
        module, _, name = self.layout.runner.partition(":")
        self.runner = getattr(importlib.import_module(f"{__package__}.{module}"), name)(self)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    # -- arrays ----------------------------------------------------------------------
    def rows(self, array: np.ndarray) -> np.ndarray:
        """``array`` (*rep, ...) as (R, -1), a view: the kernels write through it."""
        rows = array.reshape(self.replicas, -1)
        if not np.shares_memory(rows, array) or not rows.flags.c_contiguous:
            raise RuntimeError("compiled engine: an array is not contiguous")  # never silent
        return rows

    def _fill_fixed(self) -> None:
        """The rule's fixed matrices (FA's B, frSF's magnitudes, DFA's B_l) into the
        per-replica rows of ``self.fixed``."""
        for index, (offset, size) in self.plan.fixed_slots.items():
            self.fixed[:, offset : offset + size] = self._rule_array(index, size)

    def _rule_array(self, index: int, size: int) -> np.ndarray:
        array = self.rule.feedback_array(index)
        if array is None or array.size != self.replicas * size:
            raise RuntimeError(f"compiled engine: the rule's matrix for layer {index} is "
                               "not the size its description says")
        return array.reshape(self.replicas, size)

    def _optimizer_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        opt, net = self.optimizer, self.net
        opt.init_state(net.flat)
        for attr in ("velocity", "buffer", "m", "v"):
            value = getattr(opt, attr, None)
            if value is not None and (value.dtype != net.dtype or not value.flags.c_contiguous
                                      or value.shape != net.flat.shape):
                setattr(opt, attr, np.ascontiguousarray(value, net.dtype).reshape(net.flat.shape))
        code = self.survey.optimizer
        spare = np.zeros((self.replicas, 1), net.dtype)
        if code == MOMENTUM:
            return self.rows(opt.velocity), spare
        if code == NESTEROV:
            return self.rows(opt.buffer), spare
        if code == ADAM:
            return self.rows(opt.m), self.rows(opt.v)
        return spare, spare

    def _state_rows(self) -> np.ndarray:
        """The network's state buffer (running statistics) as (R, -1) rows, a view."""
        if not self.net.num_state:
            return np.zeros((self.replicas, 1), self.net.dtype)
        return self.rows(self.net.buffer_flat)

    def _hyper(self) -> np.ndarray:
        opt = self.optimizer
        beta1, beta2 = getattr(opt, "beta1", 0.0), getattr(opt, "beta2", 0.0)
        values = [opt.lr, opt.momentum, opt.weight_decay, beta1, 1 - beta1, beta2, 1 - beta2,
                  getattr(opt, "eps", 0.0)]
        return np.array(values, self.net.dtype)

    def _corrections(self, steps: int) -> np.ndarray:
        """Adam's bias corrections 1 - beta**t for this epoch's steps (t counts globally)."""
        out = np.ones((steps, 2), self.net.dtype)
        if self.survey.optimizer == ADAM:
            opt = self.optimizer
            for s in range(steps):
                t = opt.steps + s + 1
                out[s] = (1 - opt.beta1**t, 1 - opt.beta2**t)
        return out

    def _targets(self, ye: np.ndarray, count: int) -> np.ndarray:
        """(R, N * K) float targets; softmax's class indices become one-hot rows (what
        the reference's loss does with them)."""
        classes = self.plan.settings.classes
        y = np.asarray(ye)
        if y.ndim == len(self.net.rep_shape) + 1:  # class indices
            y = (y[..., None] == np.arange(classes)).astype(self.net.dtype)
        return np.ascontiguousarray(y, self.net.dtype).reshape(self.replicas, count * classes)

    # -- the epoch -------------------------------------------------------------------
    def run_epoch(self, xe, ye, sizes, alive) -> EpochResult:
        net = self.net
        count = xe.shape[1 if net.rep_shape else 0]
        steps = math.ceil(count / self.batch_size)
        x = np.ascontiguousarray(xe, net.dtype).reshape(self.replicas, -1)
        y = self._targets(ye, count)
        sizes = np.ascontiguousarray(sizes, np.int64)
        self._fill_fixed()  # the rule's arrays as they are now (e.g. after load_state)
        model = Model(self.rows(net.flat), *self._optimizer_arrays(), self._state_rows(),
                      self.fixed)
        before = [array.copy() for array in model[:4]]
        rule_before = self._rule_state()
        data = (x, y, sizes, self.plan.settings_for(self.batch_size, count))
        cost, bad = self._run(data, model, steps)
        stop = _early_stop(bad, alive, steps)
        if stop < steps:  # every alive replica diverged: the reference stops right there
            for array, saved in zip(model[:4], before, strict=True):
                array[...] = saved
            if rule_before is not None:
                self.rule.load_state(rule_before)
                self._fill_fixed()
            cost, bad = self._run(data, model, stop)
            steps = stop
        self.optimizer.steps += steps
        return EpochResult(cost, bad, steps)

    def _rule_state(self) -> dict[str, Any] | None:
        """A copy of the rule's state where the epoch changes it (matrices redrawn every
        step, or learning), to rewind it after an early stop."""
        if not self.plan.drawn_slots and not self.plan.learned_slots:
            return None
        return copy.deepcopy(self.rule.state())

    def _run(self, data: tuple, model: Model, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Steps 0 .. steps - 1 in chunks (so that redrawn matrices fit in memory); a
        learning M goes back into the rule's own arrays."""
        chunk = steps
        if self.plan.drawn_slots:
            per_step = self.replicas * self.plan.drawn * model.flat.itemsize
            chunk = max(1, min(steps, DRAWN_BYTES // per_step))
        done = self.runner.run(data, model, steps, chunk, self._hyper(),
                               self._corrections(steps))
        for index, (offset, size) in self.plan.learned_slots.items():
            array = self.rule.feedback_array(index)
            array[...] = self.fixed[:, offset : offset + size].reshape(array.shape)
        return done

    def draw(self, first: int, todo: int, sizes: np.ndarray) -> np.ndarray:
        """Redrawn matrices for steps first .. first + todo - 1, (R, todo, size): the rule
        draws them itself (``begin_step``), as in the NumPy engine (replicas that sit a
        step out keep theirs and do not advance their generator)."""
        plan = self.plan
        if not plan.drawn_slots:  # (contiguous, as every array the kernels take: one type)
            return np.zeros((self.replicas, 1, 1), self.net.dtype)
        drawn = np.zeros((self.replicas, todo, plan.drawn), self.net.dtype)
        shortest = int(sizes.min())
        for s in range(todo):
            start = (first + s) * self.batch_size
            self.rule.begin_step(None if start + 1 <= shortest else ~(sizes < start + 1))
            for index, (offset, size) in plan.drawn_slots.items():
                drawn[:, s, offset : offset + size] = self._rule_array(index, size)
        return drawn

    def side_by_side(self, kernel, arguments: tuple, rows: int, worker: bool = False) -> None:
        """The kernel over contiguous ranges of rows (replicas or blocks), one range per
        thread (``worker``: each call also gets its range's index, for buffers of its
        own)."""
        ranges = np.array_split(np.arange(rows), min(self.threads, rows))
        bounds = [(int(part[0]), int(part[-1]) + 1, *((index,) if worker else ()))
                  for index, part in enumerate(ranges)]
        if len(bounds) == 1:
            kernel(*arguments, *bounds[0])
            return
        waiting = [self.helpers().submit(kernel, *arguments, *b) for b in bounds[1:]]
        kernel(*arguments, *bounds[0])
        for future in waiting:
            future.result()

    def helpers(self) -> ThreadPoolExecutor:
        """The threads beside the caller's (``threads - 1`` of them, at least one)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max(self.threads - 1, 1))
        return self._pool


class ReplicaRunner:
    """The per-replica layout: one row per replica, a slot is one value."""

    def __init__(self, engine: CompiledEpoch) -> None:
        self.engine = engine
        rows, plan, dtype = engine.replicas, engine.plan, engine.net.dtype
        self.work = Work(np.zeros((rows, plan.arena), dtype), np.zeros((rows, plan.arena), dtype),
                         np.zeros((rows, plan.ints), np.int64),
                         np.zeros((rows, engine.net.num_params), dtype))

    def run(self, data, model, steps, chunk, hyper, corrections):
        from .kernels_epoch import train_epoch

        engine = self.engine
        x, y, sizes, settings = data
        cost, bad = np.zeros(engine.replicas), np.zeros(engine.replicas, np.int64)
        for first in range(0, steps, chunk):
            todo = min(chunk, steps - first)
            arrays = EpochArrays(x, y, sizes, hyper, corrections, engine.draw(first, todo, sizes),
                                 cost, bad)
            engine.side_by_side(train_epoch, (engine.plan.tables, settings, model, self.work,
                                              arrays, first, todo), engine.replicas)
        return cost, bad


def _lane_work(plan: Plan, blocks: int, params: int, dtype) -> Work:
    def rows(size, kind=dtype):
        return Lanes(np.zeros((blocks, size * LANES), kind))

    return Work(rows(plan.arena), rows(plan.arena), rows(plan.ints, np.int64), rows(params))


def _lane_kernel(arguments: tuple) -> Any:
    """The lane kernel, compiled (or loaded from the cache) on first use with the
    vectorizers it needs (see :mod:`.slots`), by a call that does no work."""
    from .kernels_batch import train_lanes
    from .slots import vector_codegen

    if not train_lanes.signatures:
        with vector_codegen():
            train_lanes(False, *arguments[1:-1], 0, 0, 0)  # no steps, no block
    return train_lanes


class LaneRunner:
    """The lane layout: blocks of eight replicas, a slot is the eight replicas' values;
    the parameters, optimizer state and running statistics go back to their rows after
    each call."""

    def __init__(self, engine: CompiledEpoch) -> None:
        self.engine = engine
        self.blocks = -(-engine.replicas // LANES)
        self.work = _lane_work(engine.plan, self.blocks, engine.net.num_params,
                               engine.net.dtype)

    def run(self, data, model, steps, chunk, hyper, corrections):
        engine, blocks = self.engine, self.blocks
        x, y, sizes, settings = data
        lanes = Model(*(Lanes(to_lanes(array, blocks)) for array in model))
        padded = np.zeros(blocks * LANES, np.int64)
        padded[: engine.replicas] = sizes
        cost, bad = np.zeros(blocks * LANES), np.zeros(blocks * LANES, np.int64)
        spare = np.zeros((3, 1), engine.net.dtype)
        for first in range(0, steps, chunk):
            todo = min(chunk, steps - first)
            drawn = np.zeros((blocks, 1, LANES), engine.net.dtype)
            if engine.plan.drawn_slots:
                drawn = engine.draw(first, todo, sizes).reshape(engine.replicas, -1)
                drawn = to_lanes(drawn, blocks).reshape(blocks, todo, -1)
            arrays = EpochArrays(Lanes(to_lanes(x, blocks)), Lanes(to_lanes(y, blocks)), padded,
                                 hyper, corrections, Lanes(drawn), cost, bad)
            arguments = (False, engine.plan.tables, settings, lanes, self.work, arrays, spare,
                         first, todo)
            engine.side_by_side(_lane_kernel(arguments), arguments, blocks)
        for array, lane_rows in zip(model[:4], lanes[:4], strict=True):
            from_lanes(lane_rows.values, array)
        return cost[: engine.replicas], bad[: engine.replicas]


class BatchLaneRunner:
    """One network whose batches' samples take the lanes (see :mod:`.kernels_batch`)."""

    def __init__(self, engine: CompiledEpoch) -> None:
        self.engine = engine
        self.work = _lane_work(engine.plan, 1, engine.net.num_params, engine.net.dtype)

    def run(self, data, model, steps, chunk, hyper, corrections):
        engine, plan = self.engine, self.engine.plan
        x, y, sizes, settings = data
        count = settings.count
        blocks = -(-count // LANES)
        fixed = to_lanes(np.repeat(model.fixed, LANES, axis=0), 1)
        lanes = Model(*(Lanes(array) for array in model[:4]), Lanes(fixed))
        cost, bad = np.zeros(1), np.zeros(1, np.int64)
        # the parameters in every lane, the redrawn matrices in every lane, the gradient
        spare = np.zeros((3, max(model.flat.shape[1], plan.drawn) * LANES), model.flat.dtype)
        arrays_x = Lanes(to_lanes(x.reshape(count, -1), blocks))
        arrays_y = Lanes(to_lanes(y.reshape(count, -1), blocks))
        for first in range(0, steps, chunk):
            todo = min(chunk, steps - first)
            arrays = EpochArrays(arrays_x, arrays_y, sizes, hyper, corrections,
                                 Lanes(engine.draw(first, todo, sizes)), cost, bad)
            arguments = (True, plan.tables, settings, lanes, self.work, arrays, spare, first,
                         todo)
            _lane_kernel(arguments)(*arguments, 0, 1)
        return cost, bad


def _early_stop(bad: np.ndarray, alive: np.ndarray, steps: int) -> int:
    """The step after which the NumPy engine stops: the first step at which some replica
    turned non-finite while no alive replica is left finite (``steps`` if never)."""
    turned = sorted({int(s) for s in bad if s > 0})
    for step in turned:
        if not np.any(alive & ((bad == 0) | (bad > step))):
            return step
    return steps
