"""What the compiled engine runs, and that it runs nothing else.

Every registered layer kind and every registered rule is either compiled (and then one
step agrees with the NumPy engine to 1e-12) or refused (``auto`` trains with NumPy and
says why in one line). The two tables below classify them: a new layer or rule that is
in neither fails :func:`test_every_registered_layer_and_rule_is_classified`, so nothing
new ever runs compiled without a parity test (the engine itself matches exact classes,
so it would refuse it anyway).
"""

from __future__ import annotations

import numpy as np
import pytest
from compiled_cases import norm_net, one_step

from handprop import Activation, Conv2d, Dense, Flatten, MaxPool2d, Network
from handprop.core.layers import layer_types
from handprop.core.ops.asrun import AsRunConv2d
from handprop.core.presets import seed_as_run, seed_net
from handprop.rules import RULES, make_rule
from handprop.training.data import load_digits
from handprop.training.loop import EngineNotice, TrainConfig, fit

pytest.importorskip("numba")

STEP_TOL = 1e-12
COMPILED_LAYERS = {"activation", "per_channel_activation", "conv2d", "dense", "flatten",
                   "max_pool2d", "as_run_conv2d", "avg_pool2d", "batch_norm2d"}
REFUSED_LAYERS: set[str] = set()
REFUSED_RULES = {"dfa-biotorch": "DirectFeedbackAlignmentInput", "kp": "KolenPollack"}
COMPILED_RULES = set(RULES) - set(REFUSED_RULES)


def test_every_registered_layer_and_rule_is_classified():
    assert set(layer_types()) == COMPILED_LAYERS | REFUSED_LAYERS
    assert not COMPILED_LAYERS & REFUSED_LAYERS
    assert set(REFUSED_RULES) <= set(RULES)


def _layer_net(kind: str) -> Network:
    """A small net that contains a layer of ``kind``."""
    if kind == "as_run_conv2d":
        return seed_as_run((5, 4))
    if kind in ("avg_pool2d", "batch_norm2d"):
        return norm_net(0)
    return seed_net((5, 4))  # conv, per-channel and single activations, pool, flatten, dense


@pytest.mark.parametrize("kind", sorted(COMPILED_LAYERS))
def test_every_compiled_layer_kind_matches_numpy(kind):
    net = _layer_net(kind)
    assert any(layer.kind == kind for layer in net.layers)
    for batch, optimizer, replicas in ((1, "momentum", None), (3, "adam", 3)):
        errors = one_step(_layer_net(kind), "exact", optimizer, "l2", "sum", batch, seed=5,
                          replicas=replicas)
        assert max(errors.values()) <= STEP_TOL, errors


@pytest.mark.parametrize("rule", sorted(COMPILED_RULES))
def test_every_compiled_rule_matches_numpy_on_the_seed_net(rule):
    net_fn = (lambda: seed_net((5, 4))) if not rule.endswith("-t") else seed_net
    for batch, replicas in ((1, None), (2, 9)):  # 9 replicas: the lane layout, two blocks
        errors = one_step(net_fn(), rule, "momentum", "l2", "sum", batch, seed=7,
                          replicas=replicas)
        assert max(errors.values()) <= STEP_TOL, errors


@pytest.mark.parametrize("rule", sorted(REFUSED_RULES))
def test_refused_rules_fall_back_with_a_notice(rule):
    digits = load_digits(seed=0)
    net = seed_net().init(0)
    with pytest.warns(EngineNotice, match="compiled engine not used"):
        history = fit(net, digits.x_train[:5], digits.y_train[:5], TrainConfig(epochs=1),
                      rule=make_rule(rule, net, 0), engine="auto")
    assert history.extra["engine"] == "numpy"
    notice = history.extra["engine_notice"]
    assert f"({REFUSED_RULES[rule]}) has no compiled form" in notice
    assert "\n" not in notice


class _MyConv(Conv2d):
    """A user's subclass of a compiled layer: it may change the maths, so it is refused."""


def test_a_subclass_of_a_compiled_layer_is_refused():
    net = Network([_MyConv(2, 3, name="conv"), Activation("relu", name="act"),
                   MaxPool2d(2, name="pool"), Flatten(name="flat"), Dense(1, name="out")],
                  (1, 6, 6), loss="l2").init(0)
    x, labels = np.zeros((4, 1, 6, 6)), np.array([0, 1, 0, 1])
    with pytest.warns(EngineNotice, match=r"layer 'conv' \(_MyConv\) has no compiled form"):
        history = fit(net, x, labels, TrainConfig(epochs=1), engine="auto")
    assert history.extra["engine"] == "numpy"


# -- the as-run layer ------------------------------------------------------------------

AS_RUN_RULES = ("exact", "seed-original", "seed-broken", "broken-upstream", "fa", "usf", "dfa")


@pytest.mark.parametrize("rule", AS_RUN_RULES)
def test_the_as_run_net_matches_numpy(rule):
    """Exact (and rules that leave the layer exact): the true gradient, the borrowed
    kernel's added to conv1's; the article's and feedback rules: the conv's own formulas
    with its own W."""
    for batch, optimizer, replicas in ((1, "momentum", None), (1, "momentum", 9),
                                       (4, "nesterov", 2)):
        errors = one_step(seed_as_run(), rule, optimizer, "l2", "sum", batch, seed=3,
                          replicas=replicas)
        assert max(errors.values()) <= STEP_TOL, (batch, replicas, errors)


def test_the_as_run_layer_borrowing_across_groups_matches_numpy():
    """A lender with several input channels per group and a bias on the borrower."""
    net = Network([Conv2d(4, 3, padding=1, name="conv1"),
                   Activation("tanh", name="act1"), MaxPool2d(2, name="pool1"),
                   AsRunConv2d(4, 3, padding=1, groups=2, bias=True, name="conv2",
                               source="conv1", source_channel=3),
                   Activation("arctan", name="act2"), Flatten(name="flat"),
                   Dense(1, name="out")], (2, 6, 6), loss="l2", init="lecun")
    for rule in ("exact", "seed-original"):
        errors = one_step(net, rule, "sgd", "l2", "sum", 2, seed=1, replicas=3)
        assert max(errors.values()) <= STEP_TOL, errors


# -- average pooling and batch norm ---------------------------------------------------

NORM_RULES = ("exact", "seed-original", "fa", "usf", "brsf", "dfa")
NORM_NETS = [{}, {"affine": False}, {"count_include_pad": False}, {"padding": 0, "stride": 1}]


@pytest.mark.parametrize("rule", NORM_RULES)
def test_average_pooling_and_batch_norm_match_numpy(rule):
    """Parameters, optimizer state and the running statistics after one step."""
    for k, options in enumerate(NORM_NETS):
        for batch, optimizer, replicas in ((1, "momentum", None), (4, "adam", 3)):
            errors = one_step(norm_net(k, **options), rule, optimizer, "l2", "sum", batch,
                              seed=k, replicas=replicas)
            assert max(errors.values()) <= STEP_TOL, (options, errors)


def test_frozen_replicas_keep_their_running_statistics():
    """A batch-norm replica that sits out the last steps ends as it would alone."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 1, 8, 8))
    labels = np.arange(12) % 2
    config = TrainConfig(epochs=2, lr=0.01, momentum=0.5, seed=0)
    group = norm_net(0).init(0, replicas=[0, 1])
    fit(group, np.stack([x, x]), np.stack([labels, labels]), config, counts=[12, 7],
        engine="compiled")
    alone = norm_net(0).init(1)
    fit(alone, x[:7], labels[:7], TrainConfig(epochs=2, lr=0.01, momentum=0.5, seed=1),
        engine="compiled")
    assert np.array_equal(group.flat[1], alone.flat)
    assert np.array_equal(group.buffer_flat[1], alone.buffer_flat)
