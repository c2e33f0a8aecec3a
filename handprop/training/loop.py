"""Training: online (one image per step, the article's protocol) or minibatch.

One step is the whole story of the library::

    out, tape = net.forward(x)                 # forward, keeping what backward needs
    cost, out_grad = loss(out, y)              # the loss and its gradient
    grads = net.backward_flat(tape, out_grad, rule)   # the hand-written chain rule
    optimizer.step(net.flat, grads)            # update every parameter in place

:func:`fit` runs that loop over epochs, records the summed cost of every epoch (the
article's "total cost"), and stops at the first step whose cost is NaN or inf, naming
the epoch and the step and keeping the history so far. With a replicated network (see
``Network.init(replicas=...)``) it trains R independent runs in lockstep: each replica
sees its own data and its own order, and stops counting on its own if it diverges.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..core.errors import ConfigError, DataError
from ..core.network import Network
from ..core.ops.losses import get_loss, one_hot
from ..rules.base import LearningRule
from .optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule


@dataclass
class TrainConfig:
    """Hyperparameters of a training run (defaults: the article's protocol).

    epochs : passes over the training set
    batch_size : 1 is online SGD (the article); larger is minibatch
    optimizer : sgd | momentum (the article's form) | nesterov | adam
    lr : learning rate; momentum : alpha (momentum / nesterov), ignored otherwise
    weight_decay : L2 penalty added to the gradient
    schedule : constant | step | cosine | article (the article's post-epoch-300 defect)
    shuffle : reshuffle the training set every epoch (the article keeps one fixed order)
    seed : seeds initial weights, data split, shuffles and random feedback
    dtype : float64 | float32
    loss : l2 | bce | softmax_ce; None = the network's own
    reduction : sum | mean; None = sum for l2 (the article), mean otherwise
    init : weight initialisation scheme; None = the network's own
    """

    epochs: int = 500
    batch_size: int = 1
    optimizer: str = "momentum"
    lr: float = 0.09
    momentum: float | None = 0.0009
    weight_decay: float = 0.0
    schedule: str = "constant"
    shuffle: bool = False
    seed: int = 0
    dtype: str = "float64"
    loss: str | None = None
    reduction: str | None = None
    init: str | None = None

    def validate(self) -> TrainConfig:
        for name in ("epochs", "batch_size", "seed"):
            value = getattr(self, name)
            minimum = 0 if name == "seed" else 1
            integer = isinstance(value, int | np.integer) and not isinstance(value, bool)
            if not integer or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"unknown schedule {self.schedule!r}; choose from {', '.join(SCHEDULES)}"
            )
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be float32 or float64, got {self.dtype!r}")
        make_optimizer(self.optimizer, self.lr, self.momentum, self.weight_decay)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class History:
    """What a run produced.

    cost : per epoch, the summed cost of its steps; shape (epochs,) or (epochs, R)
    diverged : per replica, None or {"epoch": e, "step": s} (1-based) of the first
        step whose cost was not finite
    seconds : wall time of the training loop
    """

    cost: np.ndarray
    diverged: list[dict[str, int] | None]
    seconds: float
    steps: int
    extra: dict[str, Any] = field(default_factory=dict)
    state: Any = None

    def cost_list(self, replica: int | None = None) -> list[float | None]:
        """The cost of every epoch the run completed before any divergence (JSON-friendly).

        A run that diverged in epoch e has e - 1 entries, whatever else trained beside it.
        """
        column = self.cost if self.cost.ndim == 1 else self.cost[:, replica or 0]
        stop = self.diverged[replica or 0]
        if stop is not None:
            column = column[: stop["epoch"] - 1]
        return [float(c) if math.isfinite(c) else None for c in column]


def loss_for(net: Network, config: TrainConfig):
    """The loss function a run uses, with its reduction."""
    name = config.loss or net.loss
    reduction = config.reduction or ("sum" if name == "l2" else "mean")
    return name, get_loss(name, reduction)


def targets_for(net: Network, labels: np.ndarray, loss: str, dtype: Any = np.float64) -> np.ndarray:
    """Class indices -> what the loss compares the output with.

    One output unit: the label itself as a float (binary task, 0 or 1). Several: integer
    labels for softmax cross-entropy, one-hot rows for the others.
    """
    outputs = net.output_shape[-1]
    labels = np.asarray(labels)
    if labels.size == 0:
        raise DataError("no labels: the dataset is empty")
    top = int(labels.max())
    if outputs == 1:
        if labels.min() < 0 or top > 1:
            raise DataError(
                f"network {net.name!r} has one output (a binary task) but labels go up to {top}"
            )
        return labels[..., None].astype(dtype)
    if labels.min() < 0 or top >= outputs:
        raise DataError(
            f"label {top} is outside the {outputs} classes of network {net.name!r}'s output"
        )
    if loss == "softmax_ce":
        return labels.astype(np.int64)
    return one_hot(labels, outputs, dtype)


def _batches(count: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, count)) for i in range(0, count, batch_size)]


@dataclass
class TrainState:
    """Everything :func:`fit` carries from one epoch to the next: what a checkpoint saves.

    epoch : epochs completed; steps : optimizer steps taken; seconds : training time so far
    cost : (epochs, R) summed cost per epoch, NaN where not run or diverged
    diverged : per replica, None or {"epoch", "step"}; alive : (R,) not diverged
    optimizer, schedule : their current values (learning rate, velocity, ...)
    shufflers : one random generator per replica for the per-epoch reshuffles
    """

    epoch: int
    steps: int
    seconds: float
    cost: np.ndarray
    diverged: list[dict[str, int] | None]
    alive: np.ndarray
    optimizer: Any
    schedule: Any
    shufflers: list[np.random.Generator]

    @classmethod
    def fresh(cls, config: TrainConfig, seeds: list[int]) -> TrainState:
        replicas = len(seeds)
        return cls(0, 0, 0.0, np.full((config.epochs, replicas), np.nan), [None] * replicas,
                   np.ones(replicas, dtype=bool),
                   make_optimizer(config.optimizer, config.lr, config.momentum,
                                  config.weight_decay),
                   make_schedule(config.schedule, config.epochs),
                   [np.random.default_rng([seed, 3]) for seed in seeds])

    def to_meta(self) -> dict[str, Any]:
        """JSON-able state (the optimizer's arrays are saved separately)."""
        return {"epoch": self.epoch, "steps": self.steps, "seconds": self.seconds,
                "cost": [[None if not math.isfinite(v) else float(v) for v in row]
                         for row in self.cost[: self.epoch].T],
                "diverged": self.diverged, "alive": self.alive.tolist(),
                "schedule": self.schedule.state(),
                "shufflers": [g.bit_generator.state for g in self.shufflers]}

    @classmethod
    def restore(cls, meta: dict[str, Any], optimizer_state: dict[str, Any],
                config: TrainConfig) -> TrainState:
        """Rebuild from :meth:`to_meta` and the optimizer's saved state."""
        seeds = [0] * len(meta["shufflers"])
        state = cls.fresh(config, seeds)
        state.epoch, state.steps, state.seconds = meta["epoch"], meta["steps"], meta["seconds"]
        saved = np.array([[np.nan if v is None else v for v in row] for row in meta["cost"]],
                         dtype=float).T.reshape(state.epoch, len(seeds))
        state.cost[: state.epoch] = saved[: config.epochs]
        state.diverged = list(meta["diverged"])
        state.alive = np.array(meta["alive"], dtype=bool)
        state.schedule.load_state(meta["schedule"])
        state.optimizer.load_state(optimizer_state)
        for generator, saved_state in zip(state.shufflers, meta["shufflers"], strict=True):
            generator.bit_generator.state = saved_state
        return state

    def cost_history(self, replica: int = 0) -> np.ndarray:
        return self.cost[: self.epoch, replica]


def fit(
    net: Network,
    x: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    rule: LearningRule | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[int, History], None] | None = None,
    stop: Callable[[], bool] | None = None,
    state: TrainState | None = None,
    counts: Sequence[int] | None = None,
) -> History:
    """Train ``net`` in place.

    Parameters
    ----------
    net : Network with parameters (``init`` called); replicated or not
    x : (N, *input_shape), or (R, N, *input_shape) for a replicated net
    labels : (N,) or (R, N) class indices
    config : TrainConfig
    rule : LearningRule, optional (bound to ``net`` here if it is not yet)
    progress : called as ``progress(epoch, epochs, last_cost)`` after every epoch
    on_epoch : called as ``on_epoch(epoch, history_so_far)`` after every epoch;
        ``history.state`` is the :class:`TrainState` (e.g. to save a checkpoint)
    stop : polled after every epoch; training ends early when it returns True
    state : continue from this state (a resumed run ends bit-identical to an
        uninterrupted one)
    counts : replicas only: how many of the N samples each replica really has (the rest
        is padding). Replicas with fewer samples sit out the last steps of every epoch:
        their parameters and optimizer state are left exactly as they were, so each
        replica still ends as it would alone. Online SGD only (batch size 1), not Adam
        (its bias correction counts steps globally).

    Returns
    -------
    History
    """
    config.validate()
    if net.flat is None:
        raise ConfigError("call net.init() before fit()")
    rep = net.rep_shape
    replicas = rep[0] if rep else 1
    seeds = list(net.replica_seeds) if net.replica_seeds is not None else [config.seed]
    x = np.asarray(x)
    expected = (*rep, x.shape[len(rep)] if x.ndim > len(rep) else 0, *net.input_shape)
    if x.shape != expected or x.shape[len(rep)] == 0:
        want = (*rep, "N", *net.input_shape)
        raise DataError(f"training images must have shape {want}, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise DataError("training images contain NaN or inf")
    x = x.astype(net.dtype, copy=False)
    count = x.shape[len(rep)]
    if np.shape(labels) != (*rep, count):
        raise DataError(f"expected {count} labels per run, got labels of shape {np.shape(labels)}")
    loss_name, loss_fn = loss_for(net, config)
    y = targets_for(net, labels, loss_name, net.dtype)
    if rule is not None and rule.net is not net:
        rule.bind(net, seeds)
    if type(rule) is LearningRule:
        rule = None  # plain exact back-propagation: the network's own (faster) path
    if state is None:
        state = TrainState.fresh(config, seeds)
    elif len(state.shufflers) != replicas:
        raise ConfigError(f"the training state is for {len(state.shufflers)} runs, the network "
                          f"has {replicas}")
    optimizer, cost, alive, diverged = state.optimizer, state.cost, state.alive, state.diverged
    sizes = _replica_sizes(counts, rep, count, config)
    shortest = int(sizes.min())
    batches = _batches(count, config.batch_size)
    # Index of one batch in an epoch's reordered arrays: the batch axis follows replicas.
    selectors = [(slice(None), part) if rep else part for part in batches]
    order = np.tile(np.arange(count), (replicas, 1))
    rows = np.arange(replicas)[:, None]

    history = History(cost[: state.epoch] if rep else cost[: state.epoch, 0], diverged,
                      state.seconds, state.steps)
    history.state = state
    start = time.perf_counter() - state.seconds
    steps = state.steps
    forward, backward, update = net._forward, net._backward_flat, optimizer.step
    begin = rule.begin_step if rule is not None else None
    xe = ye = None
    # Large minibatches (exact rule): the two halves of a batch go forward and backward
    # side by side, the second in a helper thread (NumPy and single-threaded BLAS release
    # the GIL), and their gradients are added. A batch is split the same way whether or
    # not a second core is there to run it, so the numbers never depend on the machine.
    split = rule is None and config.batch_size * math.prod(net.input_shape) >= 1 << 14
    helper = ThreadPoolExecutor(1) if split and (os.cpu_count() or 1) > 1 else None
    lead = (slice(None),) * len(rep)

    def aside(function: Callable, *args: Any) -> Callable[[], Any]:
        """``function(*args)`` started in the helper thread (or run now): call to wait."""
        if helper is None:
            result = function(*args)
            return lambda: result
        return helper.submit(context.run, function, *args).result

    def in_halves(xb: np.ndarray, yb: np.ndarray) -> tuple[Any, np.ndarray]:
        """One step's cost and gradient, computed on the two halves of the batch."""
        cut = xb.shape[len(rep)] // 2
        first, second = (*lead, slice(None, cut)), (*lead, slice(cut, None))
        forward_second = aside(forward, xb[second])
        out_first, tape_first = forward(xb[first])
        out_second, tape_second = forward_second()
        value, out_grad = loss_fn(np.concatenate([out_first, out_second], len(rep)), yb)
        backward_second = aside(backward, tape_second, out_grad[second])
        grads = backward(tape_first, out_grad[first])
        grads += backward_second()
        return value, grads

    # A diverging replica must not flood the terminal (errstate), from either thread.
    with contextlib.ExitStack() as threads, np.errstate(all="ignore"):
        if helper is not None:
            from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

            threads.enter_context(helper)
            threads.enter_context(threadpool_limits(1, "blas"))  # no BLAS threads on top
        context = contextvars.copy_context()  # the helper computes under these errstates
        for epoch in range(state.epoch, config.epochs):
            if config.shuffle or xe is None:
                if config.shuffle:
                    order = np.zeros((replicas, count), dtype=np.int64)  # padding: sample 0
                    for row, (generator, size) in enumerate(zip(state.shufflers, sizes,
                                                                strict=True)):
                        order[row, :size] = generator.permutation(size)
                xe, ye = (x[rows, order], y[rows, order]) if rep else (x[order[0]], y[order[0]])
            # float64 totals in both forms, so float32 runs sum alike with and without replicas
            epoch_cost = np.zeros(replicas) if rep else np.float64(0.0)
            stopped = False
            for number, sel in enumerate(selectors, start=1):
                if split and xe[sel].shape[len(rep)] > 1:
                    value, grads = in_halves(xe[sel], ye[sel])
                else:
                    out, tape = forward(xe[sel])
                    value, out_grad = loss_fn(out, ye[sel])
                    if begin is not None:
                        begin()
                    grads = backward(tape, out_grad, rule)
                # replicas past the end of their data (only in an epoch's last steps)
                frozen = sizes < number if number > shortest else None
                if frozen is not None:
                    value = np.where(frozen, 0.0, value)
                    _update_except(update, optimizer, net.flat, grads, frozen)
                else:
                    update(net.flat, grads)
                steps += 1
                epoch_cost += value
                finite = np.isfinite(value).all() if rep else math.isfinite(value)
                if not finite:
                    bad = ~np.isfinite(np.atleast_1d(value)) & alive
                    for r in np.flatnonzero(bad):
                        diverged[r] = {"epoch": epoch + 1, "step": number}
                    alive &= ~bad
                    if not alive.any():
                        stopped = True
                        break
            if stopped:
                break
            cost[epoch] = np.where(alive, epoch_cost, np.nan)
            state.schedule.end_epoch(optimizer, epoch)
            state.epoch, state.steps = epoch + 1, steps
            state.seconds = time.perf_counter() - start
            history.cost = cost[: epoch + 1] if rep else cost[: epoch + 1, 0]
            history.seconds, history.steps = state.seconds, steps
            if progress is not None:
                costs = np.where(alive, epoch_cost, np.nan)
                progress(epoch + 1, config.epochs,
                         float(np.nanmean(costs)) if alive.any() else math.nan)
            if on_epoch is not None:
                on_epoch(epoch, history)
            if stop is not None and stop():
                break
    history.seconds = time.perf_counter() - start
    history.steps = steps
    history.extra["optimizer"] = optimizer.state()
    return history


def _replica_sizes(counts: Sequence[int] | None, rep: tuple[int, ...], count: int,
                   config: TrainConfig) -> np.ndarray:
    """The number of real samples of every replica (see ``fit``'s ``counts``)."""
    replicas = rep[0] if rep else 1
    if counts is None:
        return np.full(replicas, count)
    sizes = np.asarray(counts, dtype=np.int64)
    if not rep or sizes.shape != (replicas,) or sizes.min() < 1 or sizes.max() > count:
        raise ConfigError(f"counts must give 1..{count} samples for each of the {replicas} "
                          f"replicas, got {list(counts)}")
    if sizes.min() < count and (config.batch_size != 1 or config.optimizer == "adam"):
        raise ConfigError("replicas with different numbers of samples need online SGD "
                          "(batch size 1) and an optimizer other than adam")
    return sizes


def _update_except(update: Callable, optimizer: Any, params: np.ndarray, grads: np.ndarray,
                   frozen: np.ndarray) -> None:
    """One optimizer step, undone for the ``frozen`` replicas (rows of every array)."""
    arrays = [params] + [a for a in optimizer.state().values() if isinstance(a, np.ndarray)]
    kept = [a[frozen] for a in arrays]  # fancy indexing copies
    update(params, grads)
    for array, rows in zip(arrays, kept, strict=True):
        array[frozen] = rows


@dataclass
class Evaluation:
    """Predictions on a set of images.

    raw : network outputs, (N, K) (or (R, N, K))
    predicted : predicted class index, (N,) (or (R, N))
    accuracy : fraction correct (per replica with replicas)
    """

    raw: np.ndarray
    predicted: np.ndarray
    truth: np.ndarray
    accuracy: np.ndarray | float


def evaluate(net: Network, x: np.ndarray, labels: np.ndarray) -> Evaluation:
    """Run the network on ``x`` and compare with ``labels`` (class indices)."""
    raw = net.predict(np.asarray(x, dtype=net.dtype))
    if raw.shape[-1] == 1:
        predicted = (raw[..., 0] >= 0.5).astype(np.int64)  # one sigmoid output: round it
    else:
        predicted = raw.argmax(axis=-1)
    labels = np.asarray(labels)
    accuracy = (predicted == labels).mean(axis=-1)
    return Evaluation(raw, predicted, labels, float(accuracy) if accuracy.ndim == 0 else accuracy)


def prediction_table(evaluation: Evaluation, classes: tuple[int, ...], limit: int = 20) -> str:
    """The article's test table: ground truth, raw prediction, rounded prediction.

    At most ``limit`` images are shown; the accuracy line counts them all.
    """
    shown = slice(0, limit)
    binary = evaluation.raw.shape[-1] == 1
    truth = [str(classes[t]) for t in evaluation.truth[shown]]
    if binary:
        raw = [f"{v:.4f}" for v in evaluation.raw[shown, 0]]
    else:
        raw = [f"{v.max():.4f}" for v in evaluation.raw[shown]]
    rounded = [str(classes[p]) for p in evaluation.predicted[shown]]
    width = max(len(s) for s in truth + raw + rounded)
    rows = [
        ("truth", truth),
        ("prediction" if binary else "max prob", raw),
        ("rounded" if binary else "predicted", rounded),
    ]
    lines = [f"{name:<11}" + " ".join(s.rjust(width) for s in values) for name, values in rows]
    total = len(evaluation.truth)
    if total > limit:
        lines.append(f"(first {limit} of {total} images shown)")
    correct = int(np.sum(evaluation.predicted == evaluation.truth))
    lines.append(f"accuracy: {correct}/{total}")
    return "\n".join(lines)
