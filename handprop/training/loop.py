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

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..core.article import ARTICLE
from ..core.errors import ConfigError, DataError
from ..core.limits import MAX_BATCH, MAX_EPOCHS, MAX_SEED, check_int
from ..core.network import Network
from ..core.ops.losses import get_loss, log_softmax, one_hot
from ..core.schema import check_type, hints_of
from ..core.streams import Stream, generator
from ..rules.base import LearningRule
from .epoch import EpochResult, make_engine
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

    epochs: int = ARTICLE.epochs
    batch_size: int = ARTICLE.batch_size
    optimizer: str = "momentum"
    lr: float = ARTICLE.lr
    momentum: float | None = ARTICLE.momentum
    weight_decay: float = 0.0
    schedule: str = "constant"
    shuffle: bool = False
    seed: int = 0
    dtype: str = "float64"
    loss: str | None = None
    reduction: str | None = None
    init: str | None = None

    def validate(self) -> TrainConfig:
        """Check every field's type and range (limits: :mod:`handprop.core.limits`)."""
        for name, low, high in (("epochs", 1, MAX_EPOCHS), ("batch_size", 1, MAX_BATCH),
                                ("seed", 0, MAX_SEED)):
            check_int(getattr(self, name), name, low, high)
        hints = hints_of(TrainConfig)
        for name in ("optimizer", "lr", "momentum", "weight_decay", "schedule", "shuffle",
                     "dtype", "loss", "reduction", "init"):
            check_type(getattr(self, name), hints[name], name)
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


def loss_spec(net: Network, config: TrainConfig) -> tuple[str, str]:
    """The loss a run uses and its reduction (sum for l2, the article's; mean otherwise)."""
    name = config.loss or net.loss
    return name, config.reduction or ("sum" if name == "l2" else "mean")


def loss_for(net: Network, config: TrainConfig):
    """The loss function a run uses, with its reduction."""
    name, reduction = loss_spec(net, config)
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
            f"label {top} is outside the {outputs} classes of the output of network "
            f"{net.name!r}"
        )
    if loss == "softmax_ce":
        return labels.astype(np.int64)
    return one_hot(labels, outputs, dtype)


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
                   [generator(seed, Stream.DATA_ORDER) for seed in seeds])

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
        for shuffler, saved_state in zip(state.shufflers, meta["shufflers"], strict=True):
            shuffler.bit_generator.state = saved_state
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
    *,
    engine: str = "numpy",
    threads: int = 1,
) -> History:
    """Train ``net`` in place.

    Parameters
    ----------
    net : Network with parameters (``init`` called); replicated or not
    x : (N, *input_shape), or (R, N, *input_shape) for a replicated net
    labels : (N,) or (R, N) class indices
    config : TrainConfig
    rule : LearningRule, optional. A rule already bound to ``net`` is used as it is
        (its state, e.g. random feedback, is the caller's); any other rule is copied
        and the copy bound to ``net`` (the caller's object is never changed).
    progress : called as ``progress(epoch, epochs, last_cost)`` after every epoch
    on_epoch : called as ``on_epoch(epoch, history_so_far)`` after every epoch;
        ``history.state`` is the :class:`TrainState` (e.g. to save a checkpoint)
    stop : polled after every epoch; training ends early when it returns True
    state : continue from this state (a resumed run ends bit-identical to an
        uninterrupted one)
    counts : replicas only: how many of the N samples each replica really has (the rest
        is padding). Replicas with fewer samples sit out the last steps of every epoch:
        their parameters, optimizer and rule state are left exactly as they were, so
        each replica still ends as it would alone. Online SGD only (batch size 1), not
        Adam (its bias correction counts steps globally).
    engine : ``numpy`` (the reference), ``compiled`` (Numba; a ConfigError if it cannot
        run this configuration) or ``auto`` (compiled where supported and faster, else
        numpy; see :func:`~handprop.training.epoch.make_engine`). ``history.extra["engine"]``
        names the one used (and ``history.extra["layout"]`` the compiled engine's layout)
    threads : 2 lets large exact-rule batches use a helper thread (numpy engine) or
        replicas (a batch's halves, in the batched layout) run on two cores (compiled
        engine); results are the same

    Returns
    -------
    History
    """
    config.validate()
    data = _training_data(net, x, labels, config, counts)
    rule = _bound_rule(net, rule, data.seeds)
    state = _starting_state(state, config, data)
    name, reduction = loss_spec(net, config)
    runner = make_engine(engine, net, rule, state.optimizer, name, reduction,
                         config.batch_size, threads)
    history = History(_costs(state, net), state.diverged, state.seconds, state.steps)
    history.state = state
    history.extra["engine"] = runner.name
    layout = getattr(runner, "layout", None)
    if layout is not None:
        history.extra["layout"] = layout.name
    notice = getattr(runner, "notice", None)
    if notice:
        history.extra["engine_notice"] = notice
    start = time.perf_counter() - state.seconds
    try:
        # A diverging replica must not flood the terminal.
        with np.errstate(all="ignore"):
            for epoch in range(state.epoch, config.epochs):
                xe, ye = _epoch_order(data, state, config)
                result = runner.run_epoch(xe, ye, data.sizes, state.alive)
                finished = _end_epoch(state, epoch, result, config)
                _sync(history, state, net, start)
                if not finished:
                    break  # every replica diverged
                if progress is not None:
                    progress(epoch + 1, config.epochs, _mean_alive_cost(state, epoch))
                if on_epoch is not None:
                    on_epoch(epoch, history)
                if stop is not None and stop():
                    break
    finally:
        runner.close()
    _sync(history, state, net, start)
    history.extra["optimizer"] = state.optimizer.state()
    return history


@dataclass
class _Data:
    """The training set as fit uses it: images, targets, per-replica sample counts."""

    x: np.ndarray
    y: np.ndarray
    sizes: np.ndarray
    seeds: list[int]
    replicated: bool


def _training_data(net: Network, x: np.ndarray, labels: np.ndarray, config: TrainConfig,
                   counts: Sequence[int] | None) -> _Data:
    """Check the images and labels against the network; build the loss targets."""
    if net.flat is None:
        raise ConfigError("call net.init() before fit()")
    rep = net.rep_shape
    x = np.asarray(x)
    expected = (*rep, x.shape[len(rep)] if x.ndim > len(rep) else 0, *net.input_shape)
    if x.shape != expected or x.shape[len(rep)] == 0:
        want = (*rep, "N", *net.input_shape)
        raise DataError(f"training images must have shape {want}, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise DataError("training images contain NaN or inf")
    count = x.shape[len(rep)]
    if np.shape(labels) != (*rep, count):
        raise DataError(f"expected {count} labels per run, got labels of shape {np.shape(labels)}")
    loss_name, _ = loss_for(net, config)
    y = targets_for(net, labels, loss_name, net.dtype)
    seeds = list(net.replica_seeds) if net.replica_seeds is not None else [config.seed]
    sizes = _replica_sizes(counts, rep, count, config)
    return _Data(x.astype(net.dtype, copy=False), y, sizes, seeds, bool(rep))


def _bound_rule(net: Network, rule: LearningRule | None, seeds: list[int]
                ) -> LearningRule | None:
    """The rule to train with: the caller's if bound to ``net``, else a bound copy;
    None for plain exact back-propagation (the network's own, faster path)."""
    if rule is None or type(rule) is LearningRule:
        return None
    if rule.net is not net:
        # a copy that shares (does not copy) the network the rule was bound to, if any
        rule = copy.deepcopy(rule, {id(rule.net): rule.net})
        rule.bind(net, seeds)
    return rule


def _starting_state(state: TrainState | None, config: TrainConfig, data: _Data) -> TrainState:
    if state is None:
        return TrainState.fresh(config, data.seeds)
    if len(state.shufflers) != len(data.seeds):
        raise ConfigError(f"the training state is for {len(state.shufflers)} runs, the network "
                          f"has {len(data.seeds)}")
    return state


def _epoch_order(data: _Data, state: TrainState, config: TrainConfig
                 ) -> tuple[np.ndarray, np.ndarray]:
    """This epoch's images and targets in training order: the given order, or with
    ``shuffle`` each replica's real samples in a fresh order from its own stream
    (padding rows repeat sample 0)."""
    if not config.shuffle:
        return data.x, data.y
    count = data.x.shape[1 if data.replicated else 0]
    order = np.zeros((len(state.shufflers), count), dtype=np.int64)
    for row, (shuffler, size) in enumerate(zip(state.shufflers, data.sizes, strict=True)):
        order[row, :size] = shuffler.permutation(size)
    if not data.replicated:
        return data.x[order[0]], data.y[order[0]]
    rows = np.arange(len(order))[:, None]
    return data.x[rows, order], data.y[rows, order]


def _end_epoch(state: TrainState, epoch: int, result: EpochResult, config: TrainConfig
               ) -> bool:
    """Fold an epoch's result into the state; False if every replica has diverged
    (the epoch is then not counted)."""
    newly = (result.bad_step > 0) & state.alive
    for r in np.flatnonzero(newly):
        state.diverged[r] = {"epoch": epoch + 1, "step": int(result.bad_step[r])}
    state.alive &= ~newly
    state.steps += result.steps
    if not state.alive.any():
        return False
    state.cost[epoch] = np.where(state.alive, result.cost, np.nan)
    state.schedule.end_epoch(state.optimizer, epoch)
    state.epoch = epoch + 1
    return True


def _sync(history: History, state: TrainState, net: Network, start: float) -> None:
    """Bring the history up to date with the state."""
    state.seconds = time.perf_counter() - start
    history.cost = _costs(state, net)
    history.seconds, history.steps = state.seconds, state.steps


def _costs(state: TrainState, net: Network) -> np.ndarray:
    """(epochs,) without replicas, (epochs, R) with."""
    done = state.cost[: state.epoch]
    return done if net.rep_shape else done[:, 0]


def _mean_alive_cost(state: TrainState, epoch: int) -> float:
    return float(np.nanmean(state.cost[epoch])) if state.alive.any() else math.nan


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


@dataclass
class Evaluation:
    """Predictions on a set of images.

    raw : network outputs, (N, K) (or (R, N, K))
    predicted : predicted class index, (N,) (or (R, N))
    accuracy : fraction correct (per replica with replicas)
    probability : the class probabilities, where the outputs are a softmax's logits
        (softmax cross-entropy: the softmax is in the loss, not the network); else None
    """

    raw: np.ndarray
    predicted: np.ndarray
    truth: np.ndarray
    accuracy: np.ndarray | float
    probability: np.ndarray | None = None


def evaluate(net: Network, x: np.ndarray, labels: np.ndarray) -> Evaluation:
    """Run the network on ``x`` and compare with ``labels`` (class indices)."""
    raw = net.predict(np.asarray(x, dtype=net.dtype))
    if raw.shape[-1] == 1:
        predicted = (raw[..., 0] >= 0.5).astype(np.int64)  # one sigmoid output: round it
    else:
        predicted = raw.argmax(axis=-1)
    labels = np.asarray(labels)
    accuracy = (predicted == labels).mean(axis=-1)
    probability = np.exp(log_softmax(raw)) if net.loss == "softmax_ce" else None
    return Evaluation(raw, predicted, labels, float(accuracy) if accuracy.ndim == 0 else accuracy,
                      probability)


def prediction_table(evaluation: Evaluation, classes: tuple[int, ...], limit: int = 20) -> str:
    """The article's test table: ground truth, raw prediction, rounded prediction.

    With several outputs the middle row is the largest class probability (``max prob``)
    where the evaluation has probabilities, else the largest output (``max output``).
    At most ``limit`` images are shown; the accuracy line counts them all.
    """
    shown = slice(0, limit)
    binary = evaluation.raw.shape[-1] == 1
    truth = [str(classes[t]) for t in evaluation.truth[shown]]
    if binary:
        label, raw = "prediction", [f"{v:.4f}" for v in evaluation.raw[shown, 0]]
    else:
        scores = evaluation.raw if evaluation.probability is None else evaluation.probability
        label = "max output" if evaluation.probability is None else "max prob"
        raw = [f"{v.max():.4f}" for v in scores[shown]]
    rounded = [str(classes[p]) for p in evaluation.predicted[shown]]
    width = max(len(s) for s in truth + raw + rounded)
    rows = [
        ("truth", truth),
        (label, raw),
        ("rounded" if binary else "predicted", rounded),
    ]
    lines = [f"{name:<11}" + " ".join(s.rjust(width) for s in values) for name, values in rows]
    total = len(evaluation.truth)
    if total > limit:
        lines.append(f"(first {limit} of {total} images shown)")
    correct = int(np.sum(evaluation.predicted == evaluation.truth))
    lines.append(f"accuracy: {correct}/{total}")
    return "\n".join(lines)
