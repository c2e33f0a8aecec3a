"""Every registered learning rule has reference tests and runs on the test networks.

The reference tests themselves live in ``test_rules_seed.py`` and
``test_rules_feedback.py``; ``rule_cases.py`` maps each rule to them. Here: a rule in
:data:`handprop.rules.RULES` without an entry fails, an entry naming a missing test (or
a parametrized test that leaves the rule out) fails, and every rule takes one backward
step on every test network it applies to, with finite gradients of the parameters'
shapes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np
import pytest
from rule_cases import RULE_CASES

from handprop import ConfigError, Network, seed_net, small_cnn
from handprop.rules import RULES, make_rule

NETS: dict[str, Callable[[], Network]] = {"seed": seed_net, "small": small_cnn}
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
