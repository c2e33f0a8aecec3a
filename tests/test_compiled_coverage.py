"""What the compiled engine runs, and that it runs nothing else.

The tables are the engine's own (:mod:`handprop.training.compiled.capabilities`), so a
new op or rule is tested the moment it is registered:

* every layer class with a registered OpSpec is compiled, in every layout its features
  allow, and one step there agrees with the NumPy engine to 1e-12 (its test network:
  ``compiled_cases.op_net``; a compiled kind without one fails
  :func:`test_every_compiled_kind_has_a_test_net`);
* every other registered layer kind is refused: ``auto`` trains with NumPy and says why
  in one line (:func:`test_every_layer_kind_is_compiled_or_refused`);
* every registered rule is compiled (its description is one the kernels compute: parity
  on the seed net in every layout that computes it, and at least one does) or refused
  with its reason (one line, the NumPy engine trains it); so is every rule the layouts
  made for the seed net online do not compute (``kp`` and ``dfa-biotorch`` run in the
  batched layout only).

Nothing new ever runs compiled without a parity test. The README's list of what the
compiled engine runs is the tables' (:func:`test_readme_lists_what_the_tables_say`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from compiled_cases import LAYOUT_RUNS, norm_net, one_step, op_net

from handprop import Activation, Conv2d, Dense, Flatten, MaxPool2d, Network
from handprop.core.ops import layer_types
from handprop.core.ops.asrun import AsRunConv2d
from handprop.core.presets import seed_as_run, seed_net
from handprop.rules import RULES, make_rule
from handprop.training.data import load_digits
from handprop.training.epoch import EngineNotice
from handprop.training.loop import TrainConfig, fit
from handprop.training.optim import make_optimizer

pytest.importorskip("numba")

from handprop.training.compiled import unsupported_reason  # noqa: E402
from handprop.training.compiled.capabilities import (  # noqa: E402
    LAYOUTS,
    Workload,
    op_specs,
    passed_over,
    rule_refusal,
    support_text,
)
from handprop.training.compiled.plan import survey  # noqa: E402

STEP_TOL = 1e-12
COMPILED_KINDS = sorted(spec.layer.kind for spec in op_specs().values())
_SEED = seed_net().init(0)
COMPILED_RULES = sorted(name for name in RULES
                        if rule_refusal(make_rule(name, _SEED, 0)) is None)


def _online_refusal(rule) -> str | None:
    """Why the seed net online (batch 1) is not trained compiled under ``rule``: the
    engine does not compute it, or the layouts made for that work do not."""
    net = rule.net
    return rule_refusal(rule) or passed_over(
        Workload.of(net, 1), survey(net, rule, make_optimizer("sgd", 0.1), "l2", "sum"))


REFUSED_RULES = sorted(name for name in RULES if _online_refusal(make_rule(name, _SEED, 0)))
README = Path(__file__).resolve().parents[1] / "README.md"


def _layouts_of(net: Network, kind: str) -> tuple[list[str], list[str]]:
    """The layouts whose needs a layer of ``kind`` meets, and those the whole net meets."""
    found = survey(net, None, make_optimizer("sgd", 0.1), "l2", "sum")
    layers = list(zip(net.layers, found.features, strict=True))
    mine = [have for layer, have in layers if layer.kind == kind][0]
    allowed = [name for name, layout in LAYOUTS.items() if layout.runs(kind, mine)]
    whole = [name for name, layout in LAYOUTS.items()
             if all(layout.runs(layer.kind, have) for layer, have in layers)]
    return allowed, whole


def test_every_compiled_kind_has_a_test_net():
    for kind in COMPILED_KINDS:
        net = op_net(kind)
        assert any(layer.kind == kind for layer in net.layers), kind
        allowed, whole = _layouts_of(net, kind)
        assert set(allowed) <= set(whole), (kind, "the test net keeps it out of", allowed)


def test_every_layer_kind_is_compiled_or_refused():
    """A registered layer kind without an OpSpec is refused with its name; a user's
    subclass of a compiled layer too (:func:`test_a_subclass_of_a_compiled_layer_is_refused`)."""
    from layer_cases import LAYER_CASES, build_layer

    for kind in sorted(set(layer_types()) - set(COMPILED_KINDS)):
        layer = build_layer(kind, LAYER_CASES[kind][0])
        net = Network([layer, Flatten(name="flat"), Dense(1, name="out")],
                      LAYER_CASES[kind][0].sample_shape).init(0)
        reason = unsupported_reason(net, None, make_optimizer("sgd", 0.1), "l2", "sum", 1)
        assert reason == f"layer {layer.name!r} ({type(layer).__name__}) has no compiled form"


@pytest.mark.parametrize("kind", COMPILED_KINDS)
def test_every_compiled_kind_matches_numpy_in_each_of_its_layouts(kind):
    allowed, _ = _layouts_of(op_net(kind), kind)
    assert "per-replica" in allowed
    for layout in allowed:
        batch, replicas = LAYOUT_RUNS[layout]
        for optimizer, seed in (("momentum", 5), ("adam", 6)):
            errors = one_step(op_net(kind), "exact", optimizer, "l2", "sum", batch, seed=seed,
                              replicas=replicas, layout=layout, jitter=0.1)
            assert max(errors.values()) <= STEP_TOL, (layout, errors)


@pytest.mark.parametrize("rule", COMPILED_RULES)
def test_every_compiled_rule_matches_numpy_on_the_seed_net(rule):
    """In every layout that runs the seed net and the rule (``LAYOUT_RUNS`` says how a
    step reaches each; lanes: nine replicas, two blocks)."""
    net_fn = (lambda: seed_net((5, 4))) if not rule.endswith("-t") else seed_net
    found = survey(_SEED, make_rule(rule, _SEED, 0), make_optimizer("sgd", 0.1), "l2", "sum")
    ran = []
    for name, layout in LAYOUTS.items():
        if layout.refusal(found, "float64") is not None:
            continue
        batch, replicas = LAYOUT_RUNS[name]
        errors = one_step(net_fn(), rule, "momentum", "l2", "sum", batch, seed=7,
                          replicas=replicas, layout=name)
        assert max(errors.values()) <= STEP_TOL, (name, errors)
        ran.append(name)
    assert ran, f"no layout runs {rule}"


@pytest.mark.parametrize("rule", REFUSED_RULES)
def test_refused_rules_fall_back_with_a_notice(rule):
    digits = load_digits(seed=0)
    net = seed_net().init(0)
    bound = make_rule(rule, net, 0)
    with pytest.warns(EngineNotice, match="compiled engine not used"):
        history = fit(net, digits.x_train[:5], digits.y_train[:5], TrainConfig(epochs=1),
                      rule=bound, engine="auto")
    assert history.extra["engine"] == "numpy"
    notice = history.extra["engine_notice"]
    assert f"({type(bound).__name__})" in notice
    assert _online_refusal(bound) in notice
    assert "\n" not in notice


def test_readme_lists_what_the_tables_say():
    """The README's list sits between its compiled-support markers and is
    ``python -m handprop.training.compiled``'s output."""
    text = README.read_text()
    found = re.search(r"<!-- compiled-support: begin.*?-->\n(.*?)\n<!-- compiled-support: end -->",
                      text, re.S)
    assert found, "README.md has no compiled-support block"
    assert found.group(1).strip() == support_text().strip()


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
