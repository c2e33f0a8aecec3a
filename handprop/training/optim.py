"""Optimizers and learning-rate schedules, acting on a network's flat parameter buffer.

Every optimizer updates ``params`` (the network's ``flat`` buffer, all parameters in
one array) in place from a gradient laid out the same way, so one step is a handful of
whole-buffer NumPy operations whatever the number of layers.

Momentum is written as the article writes it::

    v <- alpha * v + lr * g        w <- w - v

which is classical (heavy-ball) momentum ``u <- alpha*u + g; w <- w - lr*u`` with the
velocity rescaled, ``v = lr * u`` (identical while ``lr`` is constant; when a schedule
changes ``lr`` the article's form keeps the old velocity at its old scale).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.article import ARTICLE
from ..core.errors import ConfigError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
SCHEDULES = ("constant", "step", "multistep", "cosine", "article")


def _check(name: str, value: float, low: float = 0.0, high: float = math.inf,
           low_open: bool = False) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    bad_low = value <= low if low_open else value < low
    if not math.isfinite(value) or bad_low or value > high:
        bound = f"> {low}" if low_open else f">= {low}"
        upper = f" and <= {high}" if math.isfinite(high) else ""
        raise ConfigError(f"{name} must be a finite number {bound}{upper}, got {value}")
    return value


class Optimizer:
    """Base class: plain SGD, ``w <- w - lr * (g + weight_decay * w)``.

    Parameters
    ----------
    lr : float, > 0
    weight_decay : float, >= 0
        L2 penalty added to the gradient (PyTorch's coupled form).

    Subclasses implement :meth:`_update` and list the arrays they carry between steps
    in :meth:`_arrays`; :meth:`step` does the rest (counting, frozen replicas).
    """

    name = "sgd"

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0) -> None:
        self.lr = _check("learning rate", lr, low_open=True)
        self.weight_decay = _check("weight decay", weight_decay)
        self.momentum = 0.0
        self.steps = 0

    def _grad(self, params: np.ndarray, grads: np.ndarray) -> np.ndarray:
        if self.weight_decay:
            return grads + self.weight_decay * params
        return grads

    def step(self, params: np.ndarray, grads: np.ndarray,
             frozen: np.ndarray | None = None) -> None:
        """Update ``params`` in place. Both arrays: (*rep, P).

        ``frozen`` (R,) bool: replicas that sit this step out; their parameters and
        optimizer state are left exactly as they were.
        """
        self.init_state(params)
        self.steps += 1
        if frozen is None or not frozen.any():
            self._update(params, grads)
            return
        arrays = [params, *self._arrays()]
        kept = [array[frozen] for array in arrays]  # fancy indexing copies
        self._update(params, grads)
        for array, rows in zip(arrays, kept, strict=True):
            array[frozen] = rows

    def _update(self, params: np.ndarray, grads: np.ndarray) -> None:
        params -= self.lr * self._grad(params, grads)

    def init_state(self, params: np.ndarray) -> None:
        """Create the arrays carried between steps (zeros), shaped like ``params``."""

    def _arrays(self) -> list[np.ndarray]:
        """The arrays carried between steps (after :meth:`init_state`)."""
        return []

    # Anything an optimizer carries between steps, for checkpoints.
    def state(self) -> dict[str, Any]:
        return {"lr": self.lr, "momentum": self.momentum, "steps": self.steps}

    def load_state(self, state: dict[str, Any]) -> None:
        self.lr = float(state["lr"])
        self.momentum = float(state["momentum"])
        self.steps = int(state["steps"])


SGD = Optimizer


class Momentum(Optimizer):
    """The article's momentum: ``v <- alpha * v + lr * g; w <- w - v``."""

    name = "momentum"

    def __init__(self, lr: float = ARTICLE.lr, momentum: float = ARTICLE.momentum,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.momentum = _check("momentum", momentum)
        self.velocity: np.ndarray | None = None
        self._scaled: np.ndarray | None = None

    def init_state(self, params):
        if self.velocity is None:
            self.velocity = np.zeros_like(params)
            self._scaled = np.empty_like(params)  # reused every step: no allocation

    def _arrays(self):
        return [self.velocity]

    def _update(self, params, grads):
        g = self._grad(params, grads)
        self.velocity *= self.momentum
        self.velocity += np.multiply(g, self.lr, out=self._scaled)
        params -= self.velocity

    def state(self):
        return {**super().state(), "velocity": self.velocity}

    def load_state(self, state):
        super().load_state(state)
        self.velocity = _array(state, "velocity")
        self._scaled = None if self.velocity is None else np.empty_like(self.velocity)


class Nesterov(Optimizer):
    """Nesterov momentum in PyTorch's form: ``u <- mu*u + g; w <- w - lr*(g + mu*u)``."""

    name = "nesterov"

    def __init__(self, lr: float = 0.01, momentum: float = 0.9,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.momentum = _check("momentum", momentum)
        self.buffer: np.ndarray | None = None

    def init_state(self, params):
        if self.buffer is None:
            self.buffer = np.zeros_like(params)

    def _arrays(self):
        return [self.buffer]

    def _update(self, params, grads):
        g = self._grad(params, grads)
        self.buffer *= self.momentum
        self.buffer += g
        params -= self.lr * (g + self.momentum * self.buffer)

    def state(self):
        return {**super().state(), "buffer": self.buffer}

    def load_state(self, state):
        super().load_state(state)
        self.buffer = _array(state, "buffer")


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, PyTorch's defaults."""

    name = "adam"

    def __init__(self, lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.beta1 = _check("adam beta1", betas[0], high=1.0)
        self.beta2 = _check("adam beta2", betas[1], high=1.0)
        if self.beta1 >= 1 or self.beta2 >= 1:
            raise ConfigError(f"adam betas must be < 1, got {betas}")
        self.eps = _check("adam eps", eps, low_open=True)
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None

    def init_state(self, params):
        if self.m is None:
            self.m = np.zeros_like(params)
            self.v = np.zeros_like(params)

    def _arrays(self):
        return [self.m, self.v]

    def _update(self, params, grads):
        g = self._grad(params, grads)
        self.m *= self.beta1
        self.m += (1 - self.beta1) * g
        self.v *= self.beta2
        self.v += (1 - self.beta2) * g * g
        m_hat = self.m / (1 - self.beta1**self.steps)
        v_hat = self.v / (1 - self.beta2**self.steps)
        params -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)

    def state(self):
        return {**super().state(), "m": self.m, "v": self.v}

    def load_state(self, state):
        super().load_state(state)
        self.m, self.v = _array(state, "m"), _array(state, "v")


def _array(state: dict[str, Any], key: str) -> np.ndarray | None:
    value = state.get(key)
    return None if value is None else np.array(value)


def make_optimizer(name: str, lr: float, momentum: float | None = None,
                   weight_decay: float = 0.0) -> Optimizer:
    """Build an optimizer by name (``sgd``, ``momentum``, ``nesterov``, ``adam``)."""
    if name == "sgd":
        return Optimizer(lr, weight_decay)
    if name == "momentum":
        return Momentum(lr, ARTICLE.momentum if momentum is None else momentum, weight_decay)
    if name == "nesterov":
        return Nesterov(lr, 0.9 if momentum is None else momentum, weight_decay)
    if name == "adam":
        return Adam(lr, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


class Schedule:
    """Changes the optimizer's hyperparameters at the end of each epoch (default: never)."""

    name = "constant"

    def end_epoch(self, optimizer: Optimizer, epoch: int) -> None:
        """Called after epoch ``epoch`` (0-based) finishes."""

    def state(self) -> dict[str, Any]:
        """What the schedule remembers between epochs (JSON-able)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""


class StepSchedule(Schedule):
    """``lr <- lr * gamma`` every ``every`` epochs."""

    name = "step"

    def __init__(self, every: int = 100, gamma: float = 0.5) -> None:
        if not isinstance(every, int) or every < 1:
            raise ConfigError(f"step schedule: every must be a positive integer, got {every!r}")
        self.every = every
        self.gamma = _check("step schedule gamma", gamma, low_open=True)

    def end_epoch(self, optimizer, epoch):
        if (epoch + 1) % self.every == 0:
            optimizer.lr *= self.gamma


class MultiStepSchedule(Schedule):
    """``lr <- lr * gamma`` after each epoch of ``milestones`` (1-based epoch counts):
    BioTorch's MNIST and Fashion-MNIST schedule is 0.1 after epochs 50 and 75 of 100."""

    name = "multistep"

    def __init__(self, milestones: tuple[int, ...], gamma: float = 0.1) -> None:
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = _check("multistep schedule gamma", gamma, low_open=True)

    def end_epoch(self, optimizer, epoch):
        if epoch + 1 in self.milestones:
            optimizer.lr *= self.gamma


class CosineSchedule(Schedule):
    """Cosine decay from the initial ``lr`` to ``lr * floor`` over ``epochs`` epochs."""

    name = "cosine"

    def __init__(self, epochs: int, floor: float = 0.0) -> None:
        self.epochs = max(int(epochs), 1)
        self.floor = _check("cosine schedule floor", floor, high=1.0)
        self.base: float | None = None

    def state(self):
        return {"base": self.base}

    def load_state(self, state):
        self.base = state.get("base")

    def end_epoch(self, optimizer, epoch):
        if self.base is None:
            self.base = optimizer.lr
        t = min(epoch + 1, self.epochs) / self.epochs
        cosine = 0.5 * (1 + math.cos(math.pi * t))
        optimizer.lr = self.base * (self.floor + (1 - self.floor) * cosine)


class ArticleSchedule(Schedule):
    """The article's post-epoch-300 schedule: after every epoch past ``start``,
    ``lr <- 0.9 * lr`` and ``alpha <- 1.1 * alpha``.

    A defect kept so it can be shown: once ``alpha`` passes 1 the velocity
    ``v <- alpha*v + lr*g`` grows geometrically and training diverges.
    """

    name = "article"

    def __init__(self, start: int = 300, lr_factor: float = 0.9,
                 momentum_factor: float = 1.1) -> None:
        self.start = start
        self.lr_factor = lr_factor
        self.momentum_factor = momentum_factor

    def end_epoch(self, optimizer, epoch):
        if epoch > self.start:  # the article's `if iter > 300`, after the epoch
            optimizer.lr *= self.lr_factor
            optimizer.momentum *= self.momentum_factor


def make_schedule(name: str, epochs: int) -> Schedule:
    """Build a schedule by name (``constant``, ``step``, ``multistep``, ``cosine``,
    ``article``)."""
    if name == "constant":
        return Schedule()
    if name == "step":
        return StepSchedule(every=max(epochs // 3, 1))
    if name == "multistep":  # at half and three quarters of the run, as BioTorch's 50, 75
        return MultiStepSchedule((max(epochs // 2, 1), max(3 * epochs // 4, 1)))
    if name == "cosine":
        return CosineSchedule(epochs)
    if name == "article":
        return ArticleSchedule()
    raise ConfigError(f"unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
