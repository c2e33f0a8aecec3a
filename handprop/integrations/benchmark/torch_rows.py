"""PyTorch's side of the benchmark: plain torch training loops over the twins of
handprop's networks (:mod:`handprop.integrations.torch_twins`), started from the same
weights. Imported only when torch is installed (it imports torch).

The loop is the idiomatic one (forward, loss, ``zero_grad``, ``loss.backward()``,
``optimizer.step()``, and ``loss.item()`` for the epoch cost, which
``handprop.training.loop.fit`` also keeps). handprop's momentum optimizer,
``v <- alpha*v + lr*g; w <- w - v``, is ``torch.optim.SGD(lr, momentum=alpha)`` with the
velocity rescaled by ``lr``: the same updates while ``lr`` is constant. Adam is
``torch.optim.Adam`` with the same defaults.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from ...core.network import Network
from ...core.presets import lenet, small_cnn
from ..torch_twins import l2_loss, torch_seed_net, torch_twin
from .settings import SEED_LR, SEED_MOMENTUM, Sizes

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TorchTiming:
    """Best of ``repeats`` runs of a torch training loop.

    seconds : wall time of the best run's loop; steps, samples : what it did
    runs : every run's seconds; threads : ``torch.get_num_threads()``
    """

    seconds: float
    steps: int
    samples: int
    runs: list[float]
    threads: int

    @property
    def step_us(self) -> float:
        return self.seconds / self.steps * 1e6

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds


def torch_optimizer(model: torch.nn.Module, name: str, lr: float,
                   momentum: float) -> torch.optim.Optimizer:
    """handprop's ``momentum`` (SGD with momentum) or ``adam``, in torch."""
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def train_torch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn,
                optimizer: torch.optim.Optimizer, *, batch_size: int, epochs: int = 1,
                max_steps: int | None = None, order: torch.Tensor | None = None
                ) -> tuple[float, int, int, float]:
    """Batches of ``x`` in order (or in ``order``, a permutation), ``epochs`` times.

    Returns (seconds, steps, samples, last epoch's summed cost).
    """
    count = x.shape[0]
    steps = samples = 0
    cost = 0.0
    start = time.perf_counter()
    for _ in range(epochs):
        cost = 0.0
        for i in range(0, count, batch_size):
            rows = slice(i, i + batch_size) if order is None else order[i : i + batch_size]
            xb, yb = x[rows], y[rows]
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            cost += loss.item()
            steps += 1
            samples += xb.shape[0]
            if max_steps is not None and steps >= max_steps:
                return time.perf_counter() - start, steps, samples, cost
    return time.perf_counter() - start, steps, samples, cost


def _best_of(template: torch.nn.Module, x: np.ndarray, y: np.ndarray, loss_fn: LossFn, *,
             batch_size: int, epochs: int, repeats: int, warmup_steps: int) -> TorchTiming:
    """Best of ``repeats`` runs from copies of ``template`` (momentum: the article's)."""
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))

    def run(**kwargs: Any) -> tuple[float, int, int, float]:
        model = copy.deepcopy(template)
        optimizer = torch_optimizer(model, "momentum", SEED_LR, SEED_MOMENTUM)
        return train_torch(model, xt, yt, loss_fn, optimizer, batch_size=batch_size, **kwargs)

    if warmup_steps:
        run(max_steps=warmup_steps)
    results = [run(epochs=epochs) for _ in range(max(int(repeats), 1))]
    seconds, steps, samples, _ = min(results, key=lambda result: result[0])
    return TorchTiming(seconds, steps, samples, [r[0] for r in results],
                       torch.get_num_threads())


def time_torch_seed(x: np.ndarray, labels: np.ndarray, seed: Network, *,
                    epochs: int, batch_size: int, repeats: int) -> TorchTiming:
    """The seed twin trained like rows (a) (batch 1, L2 summed) and (b) (batch 32, L2
    averaged), float64, with the article's momentum, from the weights of ``seed``."""
    y = np.asarray(labels, dtype=np.float64)[:, None]
    loss_fn = l2_loss("sum" if batch_size == 1 else "mean")
    return _best_of(torch_seed_net(seed), np.asarray(x, np.float64), y, loss_fn,
                    batch_size=batch_size, epochs=epochs, repeats=repeats,
                    warmup_steps=50 if batch_size == 1 else 10)


def measure_torch(results: dict[str, Any], runs: dict[str, list[float]], sizes: Sizes,
                  repeats: int, data: dict[str, Any]) -> None:
    """The PyTorch twins of (a) (on torch's default threads and on one) and (b)."""
    xd, yd, seed = data["xd"], data["yd"], data["make_seed"]()
    online = {"epochs": sizes.online_epochs, "batch_size": 1, "repeats": repeats}
    timing = time_torch_seed(xd, yd, seed, **online)
    results["torch_online_step_us"], runs["torch_online"] = timing.step_us, timing.runs
    # One intra-op thread too: on a busy machine torch's default two threads wait on
    # each other at every small op, which a single thread does not.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        timing = time_torch_seed(xd, yd, seed, **online)
    finally:
        torch.set_num_threads(threads)
    results["torch_1thread_online_step_us"] = timing.step_us
    runs["torch_1thread_online"] = timing.runs
    timing = time_torch_seed(xd, yd, seed, epochs=sizes.batch32_epochs, batch_size=32,
                             repeats=repeats)
    results["torch_seed_batch32_samples_per_s"] = timing.samples_per_s
    runs["torch_seed_batch32"] = timing.runs


def fresh_torch_run(work: dict[str, Any], x: np.ndarray, y: np.ndarray,
                    faults: Callable[[], int]) -> dict[str, Any]:
    """A fresh process's torch run of a workload (see :mod:`.fresh_child`): a twin per
    seed (the handprop network's weights), trained one after another within each epoch,
    ``runs`` times; a mark (time, faults) before the first epoch and after every epoch."""
    xs = [torch.from_numpy(xr) for xr in (x if work["replicas"] else [x])]
    ys = [torch.from_numpy(yr.astype(np.int64)) for yr in (y if work["replicas"] else [y])]
    shuffle = torch.Generator().manual_seed(0) if work["shuffle"] else None
    marks, cost = [(time.perf_counter(), faults())], 0.0
    for _ in range(work["runs"]):
        models = _fresh_twins(work)
        optimizers = [torch_optimizer(m, work["optimizer"], work["lr"], work["momentum"])
                      for m in models]
        for _ in range(work["epochs"]):
            cost = 0.0
            for model, optimizer, xr, yr in zip(models, optimizers, xs, ys, strict=True):
                order = None if shuffle is None else torch.randperm(len(xr), generator=shuffle)
                cost += train_torch(model, xr, yr, F.cross_entropy, optimizer,
                                    batch_size=work["batch_size"], order=order)[3]
            marks.append((time.perf_counter(), faults()))
    return {"marks": marks, "engine": "torch", "threads": torch.get_num_threads(),
            "cost": cost / len(xs)}


def _fresh_twins(work: dict[str, Any]) -> list[torch.nn.Module]:
    """A twin per seed of the workload's network, from handprop's initial weights."""
    build = {"lenet": lenet, "small": small_cnn}[work["net"]]
    return [torch_twin(build(input_shape=tuple(work["input_shape"])).init(seed,
                                                                         dtype=work["dtype"]))
            for seed in range(max(work["replicas"], 1))]
