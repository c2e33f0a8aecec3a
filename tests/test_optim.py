"""Optimizers against torch.optim in float64, hyperparameter validation, schedules, and
the article's post-epoch-300 schedule making training diverge."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import handprop.training.loop as train_module
from handprop.core.errors import ConfigError
from handprop.core.presets import seed_net
from handprop.training.data import load_digits
from handprop.training.loop import TrainConfig, TrainState, fit
from handprop.training.optim import (
    SGD,
    Adam,
    ArticleSchedule,
    CosineSchedule,
    Momentum,
    Nesterov,
    Optimizer,
    Schedule,
    StepSchedule,
    make_optimizer,
    make_schedule,
)

TOL = 1e-12
STEPS = 60
SHAPE = (3, 41)  # a replicated-looking buffer: every optimizer acts elementwise


def _error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max|a - b| / max(1, max|b|)``."""
    return float(np.abs(actual - expected).max() / max(1.0, np.abs(expected).max()))


def _problem(seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(SHAPE)
    # gradients of very different sizes, some exactly zero, signs flipping
    grads = [rng.standard_normal(SHAPE) * 10.0 ** rng.integers(-3, 2) for _ in range(STEPS)]
    grads[3][0] = 0.0
    return w0, grads


def _ours(optimizer: Optimizer, w0: np.ndarray, grads: list[np.ndarray]) -> list[np.ndarray]:
    params = w0.copy()
    trajectory = []
    for g in grads:
        optimizer.step(params, g.copy())
        trajectory.append(params.copy())
    return trajectory


def _torch(make, w0: np.ndarray, grads: list[np.ndarray]):
    p = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    optimizer = make([p])
    trajectory = []
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
        trajectory.append(p.detach().numpy().copy())
    return trajectory, optimizer, p


def _assert_same(ours: list[np.ndarray], theirs: list[np.ndarray], what: str) -> None:
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True), start=1):
        assert a.dtype == np.float64
        err = _error(a, b)
        assert err <= TOL, f"{what}: step {step}, error {err:.3g} > {TOL:g}"


# -- parity with torch.optim ------------------------------------------------------------

CASES = {
    "sgd": (lambda: SGD(lr=0.05),
            lambda p: torch.optim.SGD(p, lr=0.05)),
    "sgd+wd": (lambda: SGD(lr=0.05, weight_decay=0.01),
               lambda p: torch.optim.SGD(p, lr=0.05, weight_decay=0.01)),
    "momentum": (lambda: Momentum(lr=0.03, momentum=0.9),
                 lambda p: torch.optim.SGD(p, lr=0.03, momentum=0.9)),
    "momentum-article": (lambda: Momentum(lr=0.09, momentum=0.0009),
                         lambda p: torch.optim.SGD(p, lr=0.09, momentum=0.0009)),
    "momentum+wd": (lambda: Momentum(lr=0.03, momentum=0.8, weight_decay=0.02),
                    lambda p: torch.optim.SGD(p, lr=0.03, momentum=0.8, weight_decay=0.02)),
    "nesterov": (lambda: Nesterov(lr=0.02, momentum=0.9),
                 lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9, nesterov=True)),
    "nesterov+wd": (lambda: Nesterov(lr=0.02, momentum=0.7, weight_decay=0.05),
                    lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.7, nesterov=True,
                                              weight_decay=0.05)),
    "adam": (lambda: Adam(),
             lambda p: torch.optim.Adam(p)),
    "adam-custom": (lambda: Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
                    lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
    "adam+wd": (lambda: Adam(lr=0.003, weight_decay=0.1),
                lambda p: torch.optim.Adam(p, lr=0.003, weight_decay=0.1)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_matches_torch(case):
    ours_factory, torch_factory = CASES[case]
    w0, grads = _problem(seed=len(case))
    theirs, _, _ = _torch(torch_factory, w0, grads)
    _assert_same(_ours(ours_factory(), w0, grads), theirs, case)


def test_adam_defaults_are_torch_defaults():
    adam, reference = Adam(), torch.optim.Adam([torch.zeros(1)]).defaults
    assert adam.lr == reference["lr"]
    assert (adam.beta1, adam.beta2) == tuple(reference["betas"])
    assert adam.eps == reference["eps"]
    assert adam.weight_decay == reference["weight_decay"]


def test_make_optimizer_builds_the_same_optimizers_as_torch():
    w0, grads = _problem(seed=9)
    pairs = [
        (make_optimizer("sgd", 0.05, None, 0.01),
         lambda p: torch.optim.SGD(p, lr=0.05, weight_decay=0.01)),
        (make_optimizer("momentum", 0.03, 0.9),
         lambda p: torch.optim.SGD(p, lr=0.03, momentum=0.9)),
        (make_optimizer("nesterov", 0.02, None),  # default momentum 0.9
         lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9, nesterov=True)),
        (make_optimizer("adam", 0.002, None, 0.1),
         lambda p: torch.optim.Adam(p, lr=0.002, weight_decay=0.1)),
    ]
    for ours, theirs in pairs:
        _assert_same(_ours(ours, w0, grads), _torch(theirs, w0, grads)[0], ours.name)
    assert make_optimizer("momentum", 0.09).momentum == 0.0009  # the article's alpha


def test_article_momentum_is_classical_momentum_with_velocity_scaled_by_lr():
    """v <- alpha v + lr g; w <- w - v   equals   u <- alpha u + g; w <- w - lr u
    (torch's SGD with momentum) with v = lr u, while lr is constant."""
    lr, alpha = 0.07, 0.85
    w0, grads = _problem(seed=4)
    ours = Momentum(lr=lr, momentum=alpha)
    params = w0.copy()
    p = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    reference = torch.optim.SGD([p], lr=lr, momentum=alpha)
    for g in grads:
        ours.step(params, g.copy())
        p.grad = torch.tensor(g)
        reference.step()
        u = reference.state[p]["momentum_buffer"].numpy()
        assert _error(ours.velocity, lr * u) <= TOL
        assert _error(params, p.detach().numpy()) <= TOL


def test_article_momentum_keeps_old_velocity_at_its_old_scale_when_lr_changes():
    w0, grads = _problem(seed=5)
    ours = Momentum(lr=0.05, momentum=0.5)
    params, w, v = w0.copy(), w0.copy(), np.zeros_like(w0)
    for step, g in enumerate(grads):
        if step and step % 7 == 0:
            ours.lr *= 0.9
        ours.step(params, g.copy())
        v = 0.5 * v + ours.lr * g
        w = w - v
        assert _error(params, w) <= TOL


def test_optimizers_update_in_place_and_count_steps():
    w0, grads = _problem()
    for optimizer in (SGD(0.1), Momentum(0.1, 0.5), Nesterov(0.1, 0.5), Adam(0.1)):
        params = w0.copy()
        buffer = params
        for g in grads[:5]:
            optimizer.step(params, g)
        assert params is buffer and not np.array_equal(params, w0)
        assert optimizer.steps == 5


def test_float32_buffers_stay_float32():
    w0, grads = _problem()
    for optimizer in (SGD(0.1, 0.01), Momentum(0.1, 0.5), Nesterov(0.1, 0.5), Adam(0.1)):
        params = w0.astype(np.float32)
        for g in grads[:3]:
            optimizer.step(params, g.astype(np.float32))
        assert params.dtype == np.float32


# -- optimizer state round trip ---------------------------------------------------------


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam"])
def test_optimizer_state_round_trip_resumes_bit_identically(name):
    w0, grads = _problem(seed=11)
    whole = make_optimizer(name, 0.01, 0.9, 0.001)
    expected = _ours(whole, w0, grads)[-1]
    first = make_optimizer(name, 0.01, 0.9, 0.001)
    params = w0.copy()
    for g in grads[:20]:
        first.step(params, g.copy())
    state = first.state()
    plain = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    json.dumps(plain)  # the scalars go into a checkpoint's JSON
    second = make_optimizer(name, 0.5, 0.1, 0.0)  # hyperparameters come from the state...
    second.load_state({k: (v.copy() if isinstance(v, np.ndarray) else v)
                       for k, v in state.items()})
    second.weight_decay = 0.001  # ...except weight decay, which is config
    for g in grads[20:]:
        second.step(params, g.copy())
    assert np.array_equal(params, expected)
    assert second.steps == STEPS


# -- invalid hyperparameters ------------------------------------------------------------

BAD = [
    (lambda: SGD(lr=0), "learning rate"),
    (lambda: SGD(lr=-0.1), "learning rate"),
    (lambda: SGD(lr=float("nan")), "learning rate"),
    (lambda: SGD(lr=float("inf")), "learning rate"),
    (lambda: SGD(lr="fast"), "learning rate"),
    (lambda: SGD(lr=None), "learning rate"),
    (lambda: SGD(lr=0.1, weight_decay=-1e-3), "weight decay"),
    (lambda: SGD(lr=0.1, weight_decay=float("nan")), "weight decay"),
    (lambda: Momentum(lr=0.1, momentum=-0.5), "momentum"),
    (lambda: Momentum(lr=0.1, momentum=float("inf")), "momentum"),
    (lambda: Momentum(lr=-1.0), "learning rate"),
    (lambda: Nesterov(lr=0.1, momentum=float("nan")), "momentum"),
    (lambda: Nesterov(lr=0.1, momentum=-0.1), "momentum"),
    (lambda: Adam(betas=(1.0, 0.999)), "beta"),
    (lambda: Adam(betas=(1.5, 0.999)), "beta1"),
    (lambda: Adam(betas=(0.9, -0.1)), "beta2"),
    (lambda: Adam(betas=(0.9, 1.0)), "beta"),
    (lambda: Adam(eps=0.0), "eps"),
    (lambda: Adam(eps=-1e-8), "eps"),
    (lambda: Adam(lr=0.0), "learning rate"),
    (lambda: Adam(weight_decay=-1.0), "weight decay"),
    (lambda: make_optimizer("rmsprop", 0.1), "rmsprop"),
    (lambda: StepSchedule(every=0), "every"),
    (lambda: StepSchedule(every=2.5), "every"),
    (lambda: StepSchedule(every=3, gamma=0.0), "gamma"),
    (lambda: StepSchedule(every=3, gamma=float("nan")), "gamma"),
    (lambda: CosineSchedule(10, floor=1.5), "floor"),
    (lambda: CosineSchedule(10, floor=-0.1), "floor"),
    (lambda: make_schedule("exponential", 10), "exponential"),
    (lambda: TrainConfig(lr=0.0).validate(), "learning rate"),
    (lambda: TrainConfig(momentum=-1.0).validate(), "momentum"),
    (lambda: TrainConfig(weight_decay=-1.0).validate(), "weight decay"),
    (lambda: TrainConfig(optimizer="rmsprop").validate(), "rmsprop"),
    (lambda: TrainConfig(schedule="warmup").validate(), "warmup"),
    (lambda: TrainConfig(epochs=0).validate(), "epochs"),
    (lambda: TrainConfig(epochs=2.0).validate(), "epochs"),
    (lambda: TrainConfig(epochs=True).validate(), "epochs"),
    (lambda: TrainConfig(batch_size=0).validate(), "batch_size"),
    (lambda: TrainConfig(seed=-1).validate(), "seed"),
    (lambda: TrainConfig(dtype="float16").validate(), "float16"),
]


@pytest.mark.parametrize(("make", "name"), BAD, ids=[f"{i}-{n}" for i, (_, n) in enumerate(BAD)])
def test_invalid_hyperparameters_raise_config_error_naming_them(make, name):
    with pytest.raises(ConfigError) as info:
        make()
    assert name in str(info.value)
    assert "\n" not in str(info.value)


# -- schedules --------------------------------------------------------------------------


def test_constant_schedule_changes_nothing():
    optimizer = Momentum(0.09, 0.0009)
    schedule = make_schedule("constant", 10)
    assert type(schedule) is Schedule
    for epoch in range(500):
        schedule.end_epoch(optimizer, epoch)
    assert optimizer.lr == 0.09 and optimizer.momentum == 0.0009
    assert schedule.state() == {}


def test_step_schedule_values():
    optimizer = SGD(0.1)
    schedule = StepSchedule(every=2, gamma=0.5)
    lrs = []
    for epoch in range(7):
        schedule.end_epoch(optimizer, epoch)
        lrs.append(optimizer.lr)
    assert lrs == [0.1, 0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125]
    built = make_schedule("step", 30)
    assert isinstance(built, StepSchedule) and built.every == 10 and built.gamma == 0.5
    assert make_schedule("step", 2).every == 1


@pytest.mark.parametrize("floor", [0.0, 0.1])
def test_cosine_schedule_values(floor):
    epochs, base = 8, 0.2
    optimizer = Momentum(base, 0.9)
    schedule = CosineSchedule(epochs, floor=floor)
    lrs = []
    for epoch in range(epochs + 3):
        schedule.end_epoch(optimizer, epoch)
        lrs.append(optimizer.lr)
    for epoch, lr in enumerate(lrs):
        t = min(epoch + 1, epochs) / epochs
        expected = base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))
        assert lr == pytest.approx(expected, rel=1e-15, abs=1e-18)
    assert lrs[0] < base and all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[epochs - 1] == pytest.approx(base * floor, abs=1e-18)
    assert lrs[-1] == lrs[epochs - 1]  # stays at the floor
    assert optimizer.momentum == 0.9
    assert isinstance(make_schedule("cosine", 8), CosineSchedule)


def test_cosine_schedule_state_round_trip():
    optimizer = Momentum(0.2, 0.9)
    schedule = CosineSchedule(10, floor=0.05)
    for epoch in range(4):
        schedule.end_epoch(optimizer, epoch)
    state = json.loads(json.dumps(schedule.state()))
    optimizer_state = optimizer.state()
    expected = []
    for epoch in range(4, 12):
        schedule.end_epoch(optimizer, epoch)
        expected.append(optimizer.lr)
    resumed, resumed_optimizer = CosineSchedule(10, floor=0.05), Momentum(1.0, 0.9)
    resumed.load_state(state)
    resumed_optimizer.load_state(optimizer_state)
    got = []
    for epoch in range(4, 12):
        resumed.end_epoch(resumed_optimizer, epoch)
        got.append(resumed_optimizer.lr)
    assert got == expected
    assert resumed.state() == schedule.state()


def test_article_and_step_schedules_resume_through_the_optimizer_state():
    for make in (lambda: ArticleSchedule(start=3), lambda: StepSchedule(every=2, gamma=0.7)):
        optimizer, schedule = Momentum(0.09, 0.0009), make()
        for epoch in range(6):
            schedule.end_epoch(optimizer, epoch)
        saved = json.loads(json.dumps({"opt": {k: v for k, v in optimizer.state().items()
                                               if k != "velocity"},
                                       "schedule": schedule.state()}))
        resumed_optimizer, resumed = Momentum(0.09, 0.0009), make()
        resumed_optimizer.load_state(saved["opt"])
        resumed.load_state(saved["schedule"])
        for epoch in range(6, 15):
            schedule.end_epoch(optimizer, epoch)
            resumed.end_epoch(resumed_optimizer, epoch)
            assert (resumed_optimizer.lr, resumed_optimizer.momentum) == (
                optimizer.lr, optimizer.momentum)


# -- the article's schedule -------------------------------------------------------------


def test_article_schedule_changes_lr_and_alpha_after_every_epoch_past_300():
    optimizer = Momentum(0.09, 0.0009)
    schedule = make_schedule("article", 500)
    assert isinstance(schedule, ArticleSchedule) and schedule.start == 300
    for epoch in range(301):  # epochs 0..300: untouched
        schedule.end_epoch(optimizer, epoch)
    assert optimizer.lr == 0.09 and optimizer.momentum == 0.0009
    lr, alpha = 0.09, 0.0009
    for epoch in range(301, 320):
        schedule.end_epoch(optimizer, epoch)
        lr, alpha = lr * 0.9, alpha * 1.1
        assert optimizer.lr == lr and optimizer.momentum == alpha
    # alpha passes 1 after 74 epochs past 300
    optimizer = Momentum(0.09, 0.0009)
    for epoch in range(301, 301 + 73):
        schedule.end_epoch(optimizer, epoch)
    assert optimizer.momentum < 1
    schedule.end_epoch(optimizer, 301 + 73)
    assert optimizer.momentum > 1


def test_train_config_article_schedule_is_the_epoch_300_one():
    config = TrainConfig(schedule="article", epochs=400).validate()
    state = TrainState.fresh(config, [0])
    assert isinstance(state.schedule, ArticleSchedule) and state.schedule.start == 300
    assert isinstance(state.optimizer, Momentum)
    assert (state.optimizer.lr, state.optimizer.momentum) == (0.09, 0.0009)


def test_article_schedule_makes_momentum_diverge_in_a_small_loop():
    """Cost 0.5 |w|^2 (gradient w), the article's lr and alpha, the schedule from epoch 2:
    training converges, then alpha passes 1 and the velocity grows until the cost is inf."""
    optimizer, schedule = Momentum(0.09, 0.0009), ArticleSchedule(start=2)
    w = np.random.default_rng(0).standard_normal(20)
    costs, alpha_at_divergence = [], None
    with np.errstate(all="ignore"):
        for epoch in range(400):
            for _ in range(20):
                optimizer.step(w, w.copy())
            cost = 0.5 * float(np.sum(w * w))
            if not math.isfinite(cost):
                alpha_at_divergence = optimizer.momentum
                break
            costs.append(cost)
            schedule.end_epoch(optimizer, epoch)
    assert alpha_at_divergence is not None, "never diverged"
    assert alpha_at_divergence > 1
    assert min(costs) < 1e-6 * costs[0]  # it did converge first
    first_alpha_above_one = next(e for e in range(400) if 0.0009 * 1.1 ** (e - 2) > 1)
    assert len(costs) > first_alpha_above_one  # and diverged only once alpha was above 1


def test_article_schedule_makes_the_seed_net_diverge(monkeypatch):
    """The article's training (seed net, digits, lr 0.09, alpha 0.0009) with the article's
    schedule, started at epoch 2 instead of 300 to keep the test fast: fit stops at the
    first non-finite cost, names the epoch and step, and keeps the history so far."""
    monkeypatch.setattr(train_module, "make_schedule",
                        lambda name, epochs: ArticleSchedule(start=2) if name == "article"
                        else make_schedule(name, epochs))
    data = load_digits()
    net = seed_net().init(0)
    seen = []
    config = TrainConfig(epochs=300, schedule="article")
    history = fit(net, data.x_train, data.y_train, config,
                  on_epoch=lambda epoch, h: seen.append(
                      (epoch, h.state.optimizer.lr, h.state.optimizer.momentum)))
    assert len(history.diverged) == 1 and history.diverged[0] is not None
    epoch, step = history.diverged[0]["epoch"], history.diverged[0]["step"]
    assert 1 <= step <= 350
    assert epoch < 300  # it stopped early
    # the history so far: every finished epoch, all finite
    assert history.cost.shape == (epoch - 1,)
    assert np.all(np.isfinite(history.cost))
    assert history.cost[1] < history.cost[0]  # it was learning at first
    assert history.steps == (epoch - 1) * 350 + step
    assert [e for e, _, _ in seen] == list(range(epoch - 1))
    # it diverged because alpha had passed 1 (and only then)
    alpha = history.state.optimizer.momentum
    assert alpha > 1
    assert alpha == pytest.approx(0.0009 * 1.1 ** (epoch - 4), rel=1e-12)
    assert seen[-1][2] > 1  # alpha during the epoch that diverged
    above = [e for e, _, m in seen if m > 1]
    assert above and above[0] == 2 + 74  # alpha passed 1 after 74 epochs past the start
    assert seen[-1][1] == pytest.approx(0.09 * 0.9 ** (epoch - 4), rel=1e-12)
    assert not np.all(np.isfinite(net.flat))
    assert history.cost_list()[-1] is not None and len(history.cost_list()) == epoch - 1
