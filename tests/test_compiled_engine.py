"""The compiled engine (Numba) against the NumPy reference.

* step parity: from the same state, one step of every rule x optimizer on random
  architectures (groups, stride, padding, bias, overlapping pools, ties, per-channel
  activations, the three losses and both reductions, replicas) agrees to 1e-12;
* free-running parity at lr 1e-4 (not chaotic): 20 epochs agree to 1e-10;
* determinism: bit-identical run to run, with 1 or 2 threads, and a replica alone or
  among others (frozen replicas and brSF redraws included);
* checkpoints: resumed on the compiled engine bit-identical to an uninterrupted run,
  and interchangeable with the NumPy engine;
* divergence bookkeeping, fallback notice, and that importing handprop leaves Numba out.

At lr 0.09 training is chaotic (one ulp grows to O(1) within an epoch), so long runs
of two correct engines are compared only at a small learning rate.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import warnings

import numpy as np
import pytest
from compiled_cases import (
    LOSSES,
    OPTIMIZERS,
    RULE_NAMES,
    SQUARE_RULES,
    assert_same_checkpoint,
    checkpointed_fit,
    one_step,
    random_data,
    random_net,
)

from handprop.core.errors import ConfigError
from handprop.core.presets import seed_net
from handprop.rules import RuleSet, make_rule
from handprop.rules.feedback import FeedbackAlignment
from handprop.training.checkpoint import load_checkpoint
from handprop.training.data import load_digits
from handprop.training.epoch import EngineNotice
from handprop.training.loop import TrainConfig, fit

pytest.importorskip("numba")

STEP_TOL = 1e-12
FREE_TOL = 1e-10


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


# -- step parity -----------------------------------------------------------------------

CASES = [(rule, optimizer) for rule in RULE_NAMES for optimizer in OPTIMIZERS]


@pytest.mark.parametrize(("rule", "optimizer"), CASES, ids=[f"{r}-{o}" for r, o in CASES])
def test_one_step_matches_numpy_on_random_architectures(rule, optimizer):
    """Three random nets per rule x optimizer, cycling losses, reductions, batch sizes,
    replicas and weight decay."""
    base = RULE_NAMES.index(rule) * len(OPTIMIZERS) + OPTIMIZERS.index(optimizer)
    for offset in range(3):
        k = 3 * base + offset
        loss, reduction = LOSSES[k % len(LOSSES)]
        net = random_net(k, loss, square=rule in SQUARE_RULES)
        errors = one_step(net, rule, optimizer, loss, reduction, batch=1 + k % 5, seed=k,
                          replicas=(2 + k % 2) if k % 3 == 0 else None,
                          decay=0.01 if k % 4 == 0 else 0.0)
        worst = max(errors.values())
        assert worst <= STEP_TOL, f"{net.name} {loss}/{reduction}: {errors}"


TIE_RULES = ("exact", "seed-original", "seed-broken", "broken-upstream", "broken-mask")
PIECEWISE_LINEAR = ("relu", "identity", "leaky_relu:0.25")


@pytest.mark.parametrize("rule", TIE_RULES)
def test_one_step_matches_numpy_with_tied_maxima(rule):
    """Integer inputs, dyadic weights, piecewise-linear activations: windows with tied
    maxima everywhere, computed exactly by both engines, so single-winner and
    every-tie routing must agree exactly."""
    for k in range(4):
        net = random_net(100 + k, "l2", activations=PIECEWISE_LINEAR)
        errors = one_step(net, rule, "sgd", "l2", "sum", batch=1 + k, seed=k,
                          replicas=9 if k % 2 else None, ties=True)
        assert max(errors.values()) <= STEP_TOL, f"{net.name}: {errors}"


@pytest.mark.parametrize("rule", RULE_NAMES)
def test_one_step_matches_numpy_on_the_seed_net(rule):
    for batch, optimizer in ((1, "momentum"), (7, "adam")):
        errors = one_step(seed_net(), rule, optimizer, "l2", "sum", batch, seed=11)
        assert max(errors.values()) <= STEP_TOL, errors


def test_step_parity_would_catch_a_wrong_rule():
    """The comparison is sharp: the exact rule against the article's broken one differs."""
    from compiled_cases import _rel

    from handprop.core.ops.losses import get_loss
    from handprop.training.compiled import compiled_engine
    from handprop.training.epoch import NumpyEpoch
    from handprop.training.loop import targets_for
    from handprop.training.optim import make_optimizer

    net = seed_net().init(3)
    x, labels = random_data(net, 3, 4, None)
    y = targets_for(net, labels, "l2")
    updates = []
    for engine in ("numpy", "compiled"):
        copy_net = copy.deepcopy(net)
        opt = make_optimizer("sgd", 0.1)
        if engine == "numpy":
            runner = NumpyEpoch(copy_net, None, opt, get_loss("l2", "sum"), 4)
        else:
            rule = make_rule("seed-broken", copy_net, 3)
            runner = compiled_engine(copy_net, rule, opt, "l2", "sum", 4)
        runner.run_epoch(x, y, np.array([4]), np.array([True]))
        updates.append(copy_net.flat - net.flat)
    assert _rel(updates[1], updates[0]) > 1e-3


# -- free-running parity ---------------------------------------------------------------


def _fit_pair(net_fn, x, labels, config, rule=None, **kwargs):
    """The same run on both engines: (numpy history, net), (compiled history, net)."""
    out = []
    for engine in ("numpy", "compiled"):
        net = net_fn()
        bound = make_rule(rule, net, config.seed) if rule else None
        history = fit(net, x, labels, config, rule=bound, engine=engine, **kwargs)
        assert history.extra["engine"] == engine
        out.append((history, net))
    return out


def _close(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("rule", [None, "seed-broken"])
def test_twenty_epochs_of_the_seed_net_agree(digits, rule):
    config = TrainConfig(epochs=20, lr=1e-4, momentum=0.00008, seed=2)
    (ref, ref_net), (got, net) = _fit_pair(lambda: seed_net().init(2), digits.x_train[:120],
                                           digits.y_train[:120], config, rule)
    assert _close(net.flat, ref_net.flat) <= FREE_TOL
    assert _close(got.cost, ref.cost) <= FREE_TOL
    assert got.steps == ref.steps == 20 * 120


SCHEDULED = [("nesterov", "cosine", 0.0, "fa"), ("adam", "step", 1e-3, "brsf"),
             ("momentum", "article", 0.0, "dfa")]


@pytest.mark.parametrize(("optimizer", "schedule", "decay", "rule"), SCHEDULED,
                         ids=[f"{o}-{s}-{r}" for o, s, _, r in SCHEDULED])
def test_twenty_epochs_of_a_random_net_agree(optimizer, schedule, decay, rule):
    """Schedules change the optimizer between epochs: the compiled engine reads them."""
    net_fn = lambda: random_net(4, "softmax_ce").init(4)  # noqa: E731
    x, labels = random_data(net_fn(), 4, 40, None)
    config = TrainConfig(epochs=20, batch_size=8, optimizer=optimizer, lr=1e-4, momentum=0.9,
                         weight_decay=decay, schedule=schedule, shuffle=True, seed=4)
    (ref, ref_net), (got, net) = _fit_pair(net_fn, x, labels, config, rule)
    assert _close(net.flat, ref_net.flat) <= FREE_TOL
    assert _close(got.cost, ref.cost) <= FREE_TOL


# -- determinism -----------------------------------------------------------------------


def _compiled_run(digits, seeds, rule="brsf", threads=1, counts=None, epochs=2):
    net = seed_net().init(seeds[0], replicas=seeds if len(seeds) > 1 else None)
    n = 60
    x, y = digits.x_train[:n], digits.y_train[:n]
    if len(seeds) > 1:
        x, y = np.stack([x] * len(seeds)), np.stack([y] * len(seeds))
    config = TrainConfig(epochs=epochs, seed=seeds[0], shuffle=True)
    bound = make_rule(rule, net, seeds if len(seeds) > 1 else seeds[0])
    history = fit(net, x, y, config, rule=bound, engine="compiled", threads=threads,
                  counts=counts)
    return net, history, bound


def test_same_config_is_bit_identical_and_thread_count_does_not_matter(digits):
    first, h1, _ = _compiled_run(digits, [3, 4, 5], threads=1)
    second, h2, _ = _compiled_run(digits, [3, 4, 5], threads=1)
    third, h3, _ = _compiled_run(digits, [3, 4, 5], threads=2)
    assert np.array_equal(first.flat, second.flat) and np.array_equal(first.flat, third.flat)
    assert np.array_equal(h1.cost, h2.cost) and np.array_equal(h1.cost, h3.cost)


def test_a_replica_alone_equals_the_replica_among_others(digits):
    """Including frozen replicas (fewer samples sit out the last steps) and brSF redraws
    (a frozen replica's generator does not advance)."""
    group, history, rule = _compiled_run(digits, [7, 8, 9], counts=[60, 45, 30], threads=2)
    for r, (seed, count) in enumerate(zip([7, 8, 9], [60, 45, 30], strict=True)):
        net = seed_net().init(seed)
        config = TrainConfig(epochs=2, seed=seed, shuffle=True)
        alone_rule = make_rule("brsf", net, seed)
        alone = fit(net, digits.x_train[:count], digits.y_train[:count], config,
                    rule=alone_rule, engine="compiled")
        assert np.array_equal(group.flat[r], net.flat), f"replica {r}"
        assert np.array_equal(history.cost[:, r], alone.cost)
        for key, value in alone_rule.state().items():
            if isinstance(value, np.ndarray):
                assert np.array_equal(rule.state()[key][r], value)


# -- divergence ------------------------------------------------------------------------


@pytest.mark.parametrize("scales", [[30.0], [30.0, 1e-3, 100.0], [30.0, 100.0]])
def test_divergence_is_recorded_like_numpy(scales):
    """Replicas fed big inputs blow up (cost inf, then NaN); the compiled engine records
    the same epochs and steps as NumPy, and stops where NumPy does: at the step where
    no alive replica is left finite."""
    from handprop import Activation, Dense, Flatten, Network

    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(0, scale, (30, 1, 4, 4)) for scale in scales])
    labels = np.stack([np.arange(30) % 2] * len(scales))
    config = TrainConfig(epochs=3, lr=0.5, momentum=0.9, seed=1)
    seeds = list(range(len(scales))) if len(scales) > 1 else None
    if seeds is None:
        x, labels = x[0], labels[0]
    runs = []
    for engine in ("numpy", "compiled"):
        net = Network([Flatten(), Dense(4, name="fc1"), Activation("relu"), Dense(1, name="fc2")],
                      (1, 4, 4), loss="l2", init="lecun").init(1, replicas=seeds)
        runs.append((fit(net, x, labels, config, engine=engine), net))
    (ref, ref_net), (got, net) = runs
    assert ref.diverged[0] is not None
    assert got.steps == ref.steps
    assert got.diverged == ref.diverged
    np.testing.assert_array_equal(np.isfinite(got.cost), np.isfinite(ref.cost))
    finite = np.isfinite(ref.cost)
    if finite.any():
        assert _close(got.cost[finite], ref.cost[finite]) <= FREE_TOL


def test_early_stop_rewinds_brsf_draws_like_numpy():
    """When every replica has diverged the epoch ends at that step: brSF must then have
    drawn its magnitudes for exactly the steps that ran (the compiled engine draws a
    whole epoch ahead, so it rewinds the rule's generators and draws again)."""
    from handprop import Activation, Dense, Flatten, Network

    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(0, scale, (30, 1, 4, 4)) for scale in (30.0, 100.0)])
    labels = np.stack([np.arange(30) % 2] * 2)
    runs = []
    for engine in ("numpy", "compiled"):
        net = Network([Flatten(), Dense(4, name="fc1"), Activation("relu"), Dense(1, name="fc2")],
                      (1, 4, 4), loss="l2", init="lecun").init(1, replicas=[0, 1])
        rule = make_rule("brsf", net, [0, 1])
        history = fit(net, x, labels, TrainConfig(epochs=3, lr=0.5, momentum=0.9, seed=1),
                      rule=rule, engine=engine)
        runs.append((history, rule.state()))
    (ref, ref_state), (got, state) = runs
    assert got.steps == ref.steps < 30 and got.diverged == ref.diverged
    assert state["rng"] == ref_state["rng"]
    for key in ref_state:
        if key != "rng":
            assert np.array_equal(state[key], ref_state[key]), key


# -- checkpoints -----------------------------------------------------------------------


def _api_run(folder, digits, engine, epochs, stop_after=None, resume=None, lr=0.09,
             rule="fa", optimizer="adam"):
    """fit with a checkpoint after every epoch (in ``folder``); optionally stop after
    ``stop_after`` epochs, or resume from the checkpoint ``resume``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(epochs=epochs, lr=lr, optimizer=optimizer, shuffle=True, seed=6,
                         batch_size=5)
    net = seed_net().init(6)
    path = folder / f"{engine}-{epochs}-{stop_after}.npz"
    checkpointed_fit(path, net, make_rule(rule, net, 6), digits.x_train[:50],
                     digits.y_train[:50], config, engine, stop_after, resume)
    return path


@pytest.mark.parametrize(("rule", "optimizer"), [("fa", "adam"), ("brsf", "momentum")])
def test_compiled_resume_is_bit_identical(tmp_path, digits, rule, optimizer):
    whole = load_checkpoint(_api_run(tmp_path / "whole", digits, "compiled", 4, rule=rule,
                                     optimizer=optimizer))
    part = _api_run(tmp_path / "part", digits, "compiled", 4, stop_after=2, rule=rule,
                    optimizer=optimizer)
    assert load_checkpoint(part).meta["state"]["epoch"] == 2
    resumed = load_checkpoint(_api_run(tmp_path / "resumed", digits, "compiled", 4,
                                       resume=part, rule=rule, optimizer=optimizer))
    assert resumed.meta["state"]["epoch"] == 4
    assert_same_checkpoint(whole, resumed)


@pytest.mark.parametrize(("first", "second"), [("numpy", "compiled"), ("compiled", "numpy")])
def test_checkpoints_are_interchangeable_between_engines(tmp_path, digits, first, second):
    """The same entries either way, and a run resumed on the other engine ends where a
    run on one engine does (to rounding: at lr 1e-3 the engines agree to 1e-10)."""
    reference = load_checkpoint(_api_run(tmp_path / "one", digits, first, 4, lr=1e-3))
    part = _api_run(tmp_path / "part", digits, first, 4, stop_after=2, lr=1e-3)
    other = load_checkpoint(_api_run(tmp_path / "other", digits, second, 4, resume=part,
                                     lr=1e-3))
    assert set(other.optimizer) == set(reference.optimizer)
    assert set(other.rule) == set(reference.rule)
    assert other.meta["state"]["steps"] == reference.meta["state"]["steps"]
    assert _close(other.params, reference.params) <= FREE_TOL


# -- choosing the engine ---------------------------------------------------------------


class _MyFA(FeedbackAlignment):
    """A user's subclass: it may change the backward pass, so it is never compiled."""


@pytest.mark.parametrize("rule", ["ruleset", "subclass"])
def test_unsupported_configuration_falls_back_with_a_notice(digits, rule):
    net = seed_net().init(0)
    bound = (RuleSet({"conv2": make_rule("seed-broken", net)}) if rule == "ruleset"
             else _MyFA())
    bound.bind(net, 0)
    config = TrainConfig(epochs=1)
    with pytest.warns(EngineNotice, match="compiled engine not used"):
        history = fit(net, digits.x_train[:10], digits.y_train[:10], config, rule=bound,
                      engine="auto")
    assert history.extra["engine"] == "numpy"
    assert "no compiled form" in history.extra["engine_notice"]
    with pytest.raises(ConfigError, match="compiled engine cannot run"):
        fit(seed_net().init(0), digits.x_train[:10], digits.y_train[:10], config,
            rule=bound, engine="compiled")


def test_auto_uses_the_compiled_engine_where_it_can(digits):
    with warnings.catch_warnings():
        warnings.simplefilter("error", EngineNotice)
        history = fit(seed_net().init(0), digits.x_train[:10], digits.y_train[:10],
                      TrainConfig(epochs=1), engine="auto")
    assert history.extra["engine"] == "compiled"
    assert "engine_notice" not in history.extra


def test_importing_handprop_does_not_import_numba():
    code = ("import sys, handprop, handprop.training.loop, handprop.training.compiled, "
            "handprop.integrations.benchmark; sys.exit(1 if 'numba' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.slow
def test_float32_runs_close_to_numpy(digits):
    config = TrainConfig(epochs=2, lr=1e-3, dtype="float32", seed=1)
    (ref, ref_net), (got, net) = _fit_pair(lambda: seed_net().init(1, dtype="float32"),
                                           digits.x_train[:60], digits.y_train[:60], config)
    assert net.flat.dtype == np.float32
    assert _close(net.flat, ref_net.flat) <= 1e-5


def test_auto_keeps_numpy_where_blas_is_faster():
    """LeNet in batches of 8 is big convolutions in small batches: NumPy's BLAS path wins
    there (from batches of 16 on, the compiled engine's batched layout runs such work:
    tests/test_compiled_batched.py)."""
    from handprop.core.presets import lenet
    from handprop.training.epoch import compiled_is_faster

    assert compiled_is_faster(seed_net(), 1) and compiled_is_faster(seed_net(), 32)
    assert not compiled_is_faster(lenet(), 8)
    net = lenet().init(0, dtype="float32")
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    history = fit(net, x, np.array([1, 2]), TrainConfig(epochs=1, batch_size=8, lr=0.01,
                                                        dtype="float32"), engine="auto")
    assert history.extra["engine"] == "numpy"
