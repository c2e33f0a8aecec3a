"""PyTorch twins of handprop's preset networks, and plain torch training loops to time.

Used only by the benchmark (imported lazily there; torch is a test/benchmark
dependency, never a runtime one).

The twins name their layers like handprop's presets (``conv1``, ``fc3``, ...), so a
module's ``state_dict`` keys are exactly the handprop parameter names and the weights
have the same layouts (conv ``(O, C/groups, kh, kw)``, dense ``(out, in)``; both
libraries compute a cross-correlation). :func:`load_handprop_params` therefore starts a
twin from the very weights a handprop run starts from.

The training loop is the idiomatic one (forward, loss, ``loss.backward()``,
``optimizer.step()``, ``zero_grad``, and ``loss.item()`` for the epoch cost, which
``handprop.training.loop.fit`` also keeps), with ``torch.optim.SGD``. handprop's momentum
optimizer, ``v <- alpha*v + lr*g; w <- w - v``, is ``SGD(lr, momentum=alpha)`` with the
velocity rescaled by ``lr``: the same updates while ``lr`` is constant.
``torch.set_num_threads`` is left alone.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

SEED_FC = (28, 36)


class PerChannelActivation(nn.Module):
    """A different activation on each channel (dim 1), e.g. ``[torch.relu, torch.atan]``."""

    def __init__(self, activations: Sequence[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        super().__init__()
        self.activations = list(activations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([f(x[:, i : i + 1]) for i, f in enumerate(self.activations)], dim=1)


class SeedTwin(nn.Module):
    """The article's ``seed`` net (see ``handprop.core.presets.seed_net``) in PyTorch."""

    def __init__(self, fc: tuple[int, int] = SEED_FC) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.act1 = PerChannelActivation([torch.relu, torch.atan])
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(2, 4, 3, padding=1, groups=2, bias=False)
        self.act2 = PerChannelActivation([torch.atan, torch.relu, torch.atan, torch.tanh])
        self.pool2 = nn.MaxPool2d(2)
        self.fc3 = nn.Linear(16, fc[0], bias=False)
        self.fc4 = nn.Linear(fc[0], fc[1], bias=False)
        self.fc5 = nn.Linear(fc[1], 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.atan(self.fc3(x))
        x = torch.tanh(self.fc4(x))
        return torch.sigmoid(self.fc5(x))


class LeNetTwin(nn.Module):
    """``handprop.core.presets.lenet`` in PyTorch: conv 6@5x5 pad 2, pool, conv 16@5x5, pool,
    120, 84, classes; ReLU; biases."""

    def __init__(self, input_shape: tuple[int, int, int] = (1, 28, 28), classes: int = 10) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.conv1 = nn.Conv2d(channels, 6, 5, padding=2)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool2 = nn.MaxPool2d(2)
        flat = 16 * ((height // 2 - 4) // 2) * ((width // 2 - 4) // 2)
        self.fc3 = nn.Linear(flat, 120)
        self.fc4 = nn.Linear(120, 84)
        self.fc5 = nn.Linear(84, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.relu(self.conv1(x)))
        x = self.pool2(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc3(x))
        x = torch.relu(self.fc4(x))
        return self.fc5(x)


def torch_seed_module(
    fc: tuple[int, int] = SEED_FC, dtype: torch.dtype = torch.float64
) -> nn.Module:
    """The ``seed`` net's twin, in ``dtype`` (float64 like the article)."""
    return SeedTwin(fc).to(dtype)


def torch_lenet_module(
    input_shape: tuple[int, int, int] = (1, 28, 28),
    classes: int = 10,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """LeNet-5's twin, in ``dtype``."""
    return LeNetTwin(input_shape, classes).to(dtype)


def load_handprop_params(module: nn.Module, params: Mapping[str, np.ndarray]) -> nn.Module:
    """Copy handprop parameters (``net.get_params()``) into a twin, by name; returns it."""
    state = module.state_dict()
    missing = sorted(set(state) - set(params))
    unknown = sorted(set(params) - set(state))
    if missing or unknown:
        raise ValueError(f"parameter names differ: missing {missing}, unknown {unknown}")
    with torch.no_grad():
        for name, tensor in state.items():
            value = torch.from_numpy(np.ascontiguousarray(params[name]))
            if tuple(value.shape) != tuple(tensor.shape):
                raise ValueError(
                    f"{name}: handprop {tuple(value.shape)}, torch {tuple(tensor.shape)}"
                )
            tensor.copy_(value)
    return module


def l2_loss(reduction: str = "sum") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """handprop's ``l2``: ``0.5 * sum((pred - y)**2)``, divided by the batch size if mean."""
    if reduction == "sum":
        return lambda pred, target: 0.5 * ((pred - target) ** 2).sum()
    if reduction == "mean":
        return lambda pred, target: 0.5 * ((pred - target) ** 2).sum() / pred.shape[0]
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


@dataclass
class TorchTiming:
    """Best of ``repeats`` runs of a torch training loop.

    seconds : wall time of the best run's loop; steps, samples : what it did
    runs : every run's seconds; cost : the best run's last epoch cost (a sanity check)
    threads : ``torch.get_num_threads()``
    """

    seconds: float
    steps: int
    samples: int
    runs: list[float]
    cost: float
    threads: int

    @property
    def step_us(self) -> float:
        return self.seconds / self.steps * 1e6

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds


def train_torch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    batch_size: int,
    epochs: int,
    lr: float,
    momentum: float,
    max_steps: int | None = None,
) -> tuple[float, int, int, float]:
    """A plain torch training loop over ``x`` in a fixed order (like ``fit``'s default).

    Returns (seconds, steps, samples, last epoch's summed cost).
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    count = x.shape[0]
    steps = samples = 0
    cost = 0.0
    start = time.perf_counter()
    for _ in range(epochs):
        cost = 0.0
        for i in range(0, count, batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            out = model(xb)
            loss = loss_fn(out, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            cost += loss.item()
            steps += 1
            samples += xb.shape[0]
            if max_steps is not None and steps >= max_steps:
                return time.perf_counter() - start, steps, samples, cost
    return time.perf_counter() - start, steps, samples, cost


def _time(
    make_model: Callable[[], nn.Module],
    x: np.ndarray,
    y: np.ndarray,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    batch_size: int,
    epochs: int,
    lr: float,
    momentum: float,
    repeats: int,
    warmup_steps: int,
) -> TorchTiming:
    xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
    kwargs = {"batch_size": batch_size, "lr": lr, "momentum": momentum}
    if warmup_steps:
        train_torch(make_model(), xt, yt, loss_fn, epochs=1, max_steps=warmup_steps, **kwargs)
    best = None
    runs = []
    for _ in range(max(int(repeats), 1)):
        result = train_torch(make_model(), xt, yt, loss_fn, epochs=epochs, **kwargs)
        runs.append(result[0])
        if best is None or result[0] < best[0]:
            best = result
    seconds, steps, samples, cost = best
    return TorchTiming(seconds, steps, samples, runs, cost, torch.get_num_threads())


def _seed_maker(params: Mapping[str, np.ndarray] | None, fc: tuple[int, int]):
    template = torch_seed_module(fc, torch.float64)
    if params is not None:
        load_handprop_params(template, params)
    return lambda: copy.deepcopy(template)


def time_torch_online(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    params: Mapping[str, np.ndarray] | None = None,
    fc: tuple[int, int] = SEED_FC,
    lr: float = 0.09,
    momentum: float = 0.0009,
    repeats: int = 3,
    warmup_steps: int = 50,
) -> TorchTiming:
    """Online SGD (batch 1) of the seed twin, the article's protocol: float64, L2 loss
    summed, momentum ``alpha`` with ``lr``. ``x`` (N, 1, 8, 8), ``labels`` (N,) 0/1."""
    y = np.asarray(labels, dtype=np.float64)[:, None]
    return _time(
        _seed_maker(params, fc), np.asarray(x, np.float64), y, l2_loss("sum"),
        batch_size=1, epochs=epochs, lr=lr, momentum=momentum, repeats=repeats,
        warmup_steps=warmup_steps,
    )


def time_torch_seed_batch(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 32,
    reduction: str = "mean",
    params: Mapping[str, np.ndarray] | None = None,
    fc: tuple[int, int] = SEED_FC,
    lr: float = 0.09,
    momentum: float = 0.0009,
    repeats: int = 3,
    warmup_steps: int = 10,
) -> TorchTiming:
    """Minibatch training of the seed twin (float64, L2 loss with ``reduction``)."""
    y = np.asarray(labels, dtype=np.float64)[:, None]
    return _time(
        _seed_maker(params, fc), np.asarray(x, np.float64), y, l2_loss(reduction),
        batch_size=batch_size, epochs=epochs, lr=lr, momentum=momentum, repeats=repeats,
        warmup_steps=warmup_steps,
    )


def time_torch_lenet_batch(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 64,
    params: Mapping[str, np.ndarray] | None = None,
    lr: float = 0.01,
    momentum: float = 0.9,
    repeats: int = 3,
    warmup_steps: int = 5,
) -> TorchTiming:
    """Minibatch training of the LeNet twin in float32 with softmax cross-entropy (mean).
    ``x`` (N, C, H, W), ``labels`` (N,) class indices."""
    x = np.asarray(x, np.float32)
    template = torch_lenet_module(tuple(x.shape[1:]), dtype=torch.float32)
    if params is not None:
        load_handprop_params(template, {k: np.asarray(v, np.float32) for k, v in params.items()})
    return _time(
        lambda: copy.deepcopy(template), x, np.asarray(labels, np.int64), F.cross_entropy,
        batch_size=batch_size, epochs=epochs, lr=lr, momentum=momentum, repeats=repeats,
        warmup_steps=warmup_steps,
    )
