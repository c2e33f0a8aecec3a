"""Alignment diagnostics: what they count, on hand-made cases."""

from __future__ import annotations

import math

import numpy as np

from handprop import small_cnn
from handprop.rules import make_rule
from handprop.studies.alignment import alignment_pass, compare_arrays, hidden_activations
from handprop.studies.records import final_alignment
from handprop.training.loop import TrainConfig, loss_for, targets_for


def test_sign_agreement_ignores_positions_where_both_are_zero():
    metrics = compare_arrays(np.array([0, 0, 0, 1, -1.0]), np.array([0, 0, 0, -1, 1.0]))
    assert metrics["sign_agreement"] == 0.0
    metrics = compare_arrays(np.array([0, 2, 0, 1.0]), np.array([0, 0, 3, 1.0]))
    assert metrics["sign_agreement"] == 1 / 3
    assert math.isnan(compare_arrays(np.zeros(3), np.zeros(3))["sign_agreement"])


def _probe(rule_name: str):
    net = small_cnn().init(seed=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 1, 8, 8))
    labels = rng.integers(0, 10, 8)
    config = TrainConfig(loss="softmax_ce")
    loss_name, loss_fn = loss_for(net, config)
    rule = make_rule(rule_name, net, seed=0)
    return net, alignment_pass(net, rule, x, targets_for(net, labels, loss_name), loss_fn)


def test_signal_alignment_is_measured_at_every_hidden_activation():
    net, (gradient, signal) = _probe("exact")
    names = [net.layers[i].name for i in hidden_activations(net)]
    assert names == ["act1", "act2", "act3"]
    assert list(signal) == names and list(gradient) == [
        "conv1.weight", "conv2.weight", "fc3.weight", "fc4.weight"]
    for metrics in [*signal.values(), *gradient.values()]:
        assert np.allclose(metrics["angle_deg"], 0.0, atol=1e-5)


def test_fa_signal_reaching_the_last_hidden_layer_is_e_times_b():
    """Under FA the last hidden activation receives e @ B instead of e @ W: the signal
    angle there is the angle between those two (Lillicrap's measure), while fc4's own
    update is exact."""
    net, (gradient, signal) = _probe("fa")
    assert np.allclose(gradient["fc4.weight"]["angle_deg"], 0.0, atol=1e-5)
    assert signal["act3"]["angle_deg"] > 10.0


def test_final_alignment_never_reports_a_stale_value():
    records = [{"diverged": None, "alignment": {"gradient": {"fc3.weight": {
        "angle_deg": [80.0, 40.0, None]}}}},
        {"diverged": None, "alignment": {"gradient": {"fc3.weight": {
            "angle_deg": [70.0, 30.0, 20.0]}}}}]
    final = final_alignment(records)["fc3.weight"]
    assert final["angle_deg_final_mean"] == 20.0
    assert final["angle_deg_final_undefined"] == 1
