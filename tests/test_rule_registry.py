"""Every registered learning rule has reference tests, runs on the test networks, and
leaves batch norm exact.

The reference tests themselves live in ``test_rules_seed.py`` and
``test_rules_feedback.py``; ``rule_cases.py`` maps each rule to them. Here: a rule in
:data:`handprop.rules.RULES` without an entry fails, an entry naming a missing test (or
a parametrized test that leaves the rule out) fails, and every rule takes one backward
step on every test network it applies to (the seed net, small_cnn, and small_cnn with
batch norm), with finite gradients of the parameters' shapes.

Batch norm is not a weight layer: no rule changes its backward pass (as in BioTorch,
where feedback alignment and sign symmetry replace only the weights of conv and linear
layers). Under every rule its input and parameter gradients are its exact ones for the
gradient that reaches it, and a conv -> batch_norm2d -> relu -> pool network trains.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np
import pytest
from helpers import bn_cnn, spy
from rule_cases import RULE_CASES

from handprop import ConfigError, Network, seed_net, small_cnn
from handprop.core.ops.batchnorm import BatchNorm2d
from handprop.rules import RULES, make_rule
from handprop.training.loop import TrainConfig, fit, loss_for, targets_for

NETS: dict[str, Callable[[], Network]] = {"seed": seed_net, "small": small_cnn, "bn": bn_cnn}
RULE_ARGUMENTS = ("spec", "name")  # what the reference tests call their rule parameter
ParameterSet = type(pytest.param(None))  # what pytest.param(...) makes


def _test_function(reference: str) -> Callable:
    path, _, function = reference.partition("::")
    module = importlib.import_module(path.removesuffix(".py"))
    found = getattr(module, function, None)
    assert callable(found), f"{reference} does not exist"
    return found


def _parametrized_rules(test: Callable) -> set[str] | None:
    """The rule names a test is parametrized over (None: not parametrized over rules)."""
    for mark in getattr(test, "pytestmark", []):
        if mark.name != "parametrize":
            continue
        argnames = mark.args[0]
        if isinstance(argnames, str):
            argnames = [a.strip() for a in argnames.split(",")]
        found = [i for i, argname in enumerate(argnames) if argname in RULE_ARGUMENTS]
        if found:
            rows = [_row(value, len(argnames)) for value in mark.args[1]]
            return {row[found[0]] for row in rows}
    return None


def _row(value, width: int) -> tuple:
    """One parametrize value as a tuple of arguments (``pytest.param`` unwrapped)."""
    if isinstance(value, ParameterSet):
        return tuple(value.values)
    return (value,) if width == 1 else tuple(value)


@pytest.mark.parametrize("name", list(RULES))
def test_every_rule_has_reference_tests(name: str) -> None:
    """A registered rule is mapped in rule_cases.py to reference tests that exist and
    run it."""
    assert name in RULE_CASES, f"rule {name!r} has no reference case in tests/rule_cases.py"
    case = RULE_CASES[name]
    assert case.tests, f"rule {name!r} names no reference test"
    for reference in case.tests:
        covered = _parametrized_rules(_test_function(reference))
        assert covered is None or name in covered, f"{reference} is not run for {name!r}"
    assert set(case.nets) <= set(NETS)


def test_rule_cases_name_only_registered_rules() -> None:
    assert set(RULE_CASES) <= set(RULES)


@pytest.mark.parametrize("net_name", list(NETS))
@pytest.mark.parametrize("name", list(RULES))
def test_rule_takes_a_backward_step(name: str, net_name: str) -> None:
    """One backward pass of the rule on the network (where the rule applies; elsewhere it
    refuses with a ConfigError): finite gradients with the parameters' shapes."""
    net = NETS[net_name]().init(seed=0, scheme="lecun")
    if net_name not in RULE_CASES.get(name, RULE_CASES["exact"]).nets:
        with pytest.raises(ConfigError):
            make_rule(name, net, seed=0)
        return
    rule = make_rule(name, net, seed=0)
    rng = np.random.default_rng(1)
    out, tape = net.forward(rng.standard_normal((3, *net.input_shape)))
    rule.begin_step()
    grads = net.backward(tape, rng.standard_normal(out.shape), rule)
    assert list(grads) == list(net.params)
    for key, grad in grads.items():
        assert grad.shape == net.params[key].shape, key
        assert np.all(np.isfinite(grad)), key
    assert np.any(grads.flat != 0), "the rule changed nothing at all"


# -- batch norm under every rule ---------------------------------------------------------------

def _applies(name: str, net_name: str) -> bool:
    return net_name in RULE_CASES.get(name, RULE_CASES["exact"]).nets


BN_RULES = [name for name in RULES if _applies(name, "bn")]  # (all of them today)


@pytest.mark.parametrize("name", BN_RULES)
def test_batch_norm_stays_exact_under_every_rule(name: str) -> None:
    """What each batch-norm layer sends down and its gamma/beta gradients are its own
    exact backward pass of the gradient that reached it (train mode, replicas)."""
    net = bn_cnn().init(replicas=[0, 1])
    rule = make_rule(name, net)
    record = spy(rule)
    rng = np.random.default_rng(3)
    out, tape = net.forward(rng.uniform(0, 1, (2, 4, 1, 8, 8)))
    rule.begin_step()
    net.backward(tape, rng.standard_normal(out.shape), rule)
    norms = [i for i, layer in enumerate(net.layers) if isinstance(layer, BatchNorm2d)]
    assert norms and all(i in record for i in norms)
    for i in norms:
        layer, (out_grad, sent, grads) = net.layers[i], record[i]
        params = {k: net.params[f"{layer.name}.{k}"] for k in layer.param_shapes()}
        params.update({k: net.buffers[f"{layer.name}.{k}"] for k in layer.state_shapes()})
        want_sent, want = layer.backward(params, tape[i], out_grad)
        np.testing.assert_allclose(sent, want_sent, rtol=0, atol=1e-13, err_msg=layer.name)
        for key in ("weight", "bias"):
            np.testing.assert_allclose(grads[key], want[key], rtol=0, atol=1e-13)


# Rules that only learn at a smaller learning rate here (see test_rules_feedback.py; at
# 0.05 fa-glorot's and dfa-biotorch's evaluation-mode loss rises after 3 epochs; sign's
# B = sign(W) is not scaled to the layers' fans, so it sends down gradients about
# sqrt(fan) times larger: its evaluation-mode loss falls at 0.005, rises from 0.01 on).
SMALLER_LR = {"dfa": 0.01, "dfa-biotorch": 0.02, "fa-glorot": 0.02, "sign": 0.005}
@pytest.mark.parametrize("name", BN_RULES)
def test_batch_norm_network_trains_under_every_rule(name: str, digits) -> None:
    """small_cnn with batch norm (conv -> batch_norm2d -> relu -> pool, twice), 3 epochs
    on 200 digits10 images, momentum 0.9, batch 32: the training cost falls, and so does
    the evaluation-mode loss (running statistics) on the same images."""
    x, y = digits
    net = bn_cnn().init(seed=0)
    config = TrainConfig(epochs=3, batch_size=32, optimizer="momentum", momentum=0.9, seed=0,
                         lr=SMALLER_LR.get(name, 0.05))
    loss_name, loss_fn = loss_for(net, config)
    targets = targets_for(net, y, loss_name)
    before = float(loss_fn(net.predict(x), targets)[0])
    history = fit(net, x, y, config, make_rule(name, net, seed=0))
    after = float(loss_fn(net.predict(x), targets)[0])
    assert np.all(np.isfinite(history.cost)) and np.all(np.isfinite(net.buffer_flat))
    assert history.cost[-1] < history.cost[0], (name, history.cost)
    assert after < before, (name, before, after)
