"""batch_norm2d beyond the tables (test_layer_tables.py has its finite differences in
train and eval mode and its torch parity, running statistics included): the running
statistics against a hand computation, initialisation, state in a network, replicas,
and refused configurations."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import bn_cnn

from handprop import ConfigError, Network, ShapeError, small_cnn
from handprop.core.layers import INIT_SCHEMES
from handprop.core.ops.batchnorm import BatchNorm2d, batch_norm2d_forward


def test_running_statistics_follow_the_momentum_update() -> None:
    """After k train-mode passes: running = (1 - m) * running + m * batch statistic, with
    the unbiased variance; the output is normalised with the biased one."""
    rng = np.random.default_rng(0)
    mean, var = np.zeros(3), np.ones(3)
    expected_mean, expected_var = mean.copy(), var.copy()
    for _ in range(4):
        x = 2 * rng.standard_normal((4, 3, 5, 2)) + rng.standard_normal(3)[:, None, None]
        y, _ = batch_norm2d_forward(x, None, None, mean, var, train=True, momentum=0.2)
        per_channel = x.transpose(1, 0, 2, 3).reshape(3, -1)
        expected_mean = 0.8 * expected_mean + 0.2 * per_channel.mean(axis=1)
        expected_var = 0.8 * expected_var + 0.2 * per_channel.var(axis=1, ddof=1)
        normalised = (per_channel - per_channel.mean(1, keepdims=True)) / np.sqrt(
            per_channel.var(1, keepdims=True) + 1e-5)
        np.testing.assert_allclose(y.transpose(1, 0, 2, 3).reshape(3, -1), normalised,
                                   rtol=0, atol=1e-13)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-14)
    np.testing.assert_allclose(var, expected_var, rtol=1e-14)


def test_eval_mode_uses_and_keeps_the_running_statistics() -> None:
    rng = np.random.default_rng(1)
    mean, var = rng.standard_normal(2), rng.uniform(0.5, 2, 2)
    weight, bias = rng.standard_normal(2), rng.standard_normal(2)
    before = mean.copy(), var.copy()
    x = rng.standard_normal((3, 2, 4, 4))
    y, _ = batch_norm2d_forward(x, weight, bias, mean, var, train=False)
    scale = (weight / np.sqrt(var + 1e-5))[:, None, None]
    np.testing.assert_allclose(y, (x - mean[:, None, None]) * scale + bias[:, None, None],
                               rtol=0, atol=1e-14)
    np.testing.assert_array_equal(mean, before[0])
    np.testing.assert_array_equal(var, before[1])


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_initial_parameters_are_ones_and_zeros_whatever_the_scheme(scheme: str) -> None:
    net = bn_cnn().init(seed=3, scheme=scheme)
    for name in ("bn1", "bn2"):
        np.testing.assert_array_equal(net.params[f"{name}.weight"], 1.0)
        np.testing.assert_array_equal(net.params[f"{name}.bias"], 0.0)
        np.testing.assert_array_equal(net.buffers[f"{name}.running_mean"], 0.0)
        np.testing.assert_array_equal(net.buffers[f"{name}.running_var"], 1.0)


def test_adding_batch_norm_leaves_the_other_initial_weights_unchanged() -> None:
    """init_param draws nothing for batch norm, so every other layer gets the weights it
    would get without it."""
    with_bn = bn_cnn()
    without = Network([layer for layer in with_bn.layers if not isinstance(layer, BatchNorm2d)],
                      with_bn.input_shape, with_bn.loss, with_bn.init_scheme)
    with_bn.init(seed=5)
    without.init(seed=5)
    assert set(with_bn.params) - set(without.params) == {"bn1.weight", "bn1.bias",
                                                          "bn2.weight", "bn2.bias"}
    for name, value in without.params.items():
        np.testing.assert_array_equal(with_bn.params[name], value, err_msg=name)


def test_network_forward_updates_state_in_train_mode_only() -> None:
    """Running statistics live in net.buffer_flat: a train-mode forward moves them, an
    evaluation (forward with train=False, predict) does not, and init() resets them."""
    net = bn_cnn().init(seed=0)
    assert net.num_state == 2 * (8 + 16) and net.buffer_flat.shape == (48,)
    x = np.random.default_rng(2).uniform(0, 1, (6, 1, 8, 8))
    start = net.buffer_flat.copy()
    net.predict(x)
    net.forward(x, train=False)
    np.testing.assert_array_equal(net.buffer_flat, start)
    net.forward(x)
    moved = net.buffer_flat.copy()
    assert not np.array_equal(moved, start)
    assert np.all(net.buffers["bn1.running_var"] > 0)
    net.init(seed=0)
    np.testing.assert_array_equal(net.buffer_flat, start)


def test_replicas_keep_their_own_statistics() -> None:
    """Replicas [3, 4] on their own inputs: each replica's outputs, gradients and running
    statistics (after three train-mode passes) equal a network run alone."""
    seeds = [3, 4]
    net = bn_cnn().init(replicas=seeds)
    assert net.buffer_flat.shape == (2, net.num_state)
    alone = [bn_cnn().init(seed=s) for s in seeds]
    rng = np.random.default_rng(4)
    for _ in range(3):
        x = rng.uniform(0, 1, (2, 5, 1, 8, 8))
        out, tape = net.forward(x)
        upstream = rng.standard_normal(out.shape)
        grads = net.backward(tape, upstream)
        for r, single in enumerate(alone):
            out_r, tape_r = single.forward(x[r])
            np.testing.assert_allclose(out[r], out_r, rtol=0, atol=1e-12)
            grads_r = single.backward(tape_r, upstream[r])
            np.testing.assert_allclose(grads.flat[r], grads_r.flat, rtol=0, atol=1e-12)
    for r, single in enumerate(alone):
        np.testing.assert_allclose(net.buffer_flat[r], single.buffer_flat, rtol=0, atol=1e-14)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"eps": 0}, "eps must be a number > 0"),
    ({"eps": "small"}, "eps must be a number"),
    ({"momentum": 1.5}, r"momentum must be a number in \[0, 1\]"),
    ({"momentum": True}, "momentum must be a number"),
    ({"affine": "yes"}, "affine must be true or false"),
])
def test_bad_arguments_are_refused(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        BatchNorm2d(**kwargs)


def test_shapes_are_checked() -> None:
    with pytest.raises(ShapeError, match=r"needs \(C, H, W\) inputs"):
        Network([BatchNorm2d(name="bn")], input_shape=(5,))
    with pytest.raises(ShapeError, match="expects 3 channels"):
        Network([BatchNorm2d(num_features=3, name="bn")], input_shape=(2, 4, 4))
    net = Network([BatchNorm2d(name="bn")], input_shape=(2, 1, 1)).init(0)
    with pytest.raises(ShapeError, match="more than one value per channel"):
        net.forward(np.ones((1, 2, 1, 1)))
    assert net.forward(np.ones((1, 2, 1, 1)), train=False)[0].shape == (1, 2, 1, 1)


# -- training ------------------------------------------------------------------------------

def test_fit_with_uneven_replicas_equals_solo_runs(digits) -> None:
    """Replicas with 12 and 9 samples (online SGD; the second sits out the last steps of
    each epoch on padding): each ends with the parameters *and running statistics* of a
    network trained alone on its own samples."""
    from handprop.training.loop import TrainConfig, fit

    x, y = digits
    counts, seeds = [12, 9], [0, 1]
    config = TrainConfig(epochs=2, batch_size=1, optimizer="momentum", lr=0.01, momentum=0.9)
    xs = np.stack([x[:12], np.concatenate([x[20:29], np.zeros_like(x[:3])])])
    ys = np.stack([y[:12], np.concatenate([y[20:29], y[:3]])])
    net = bn_cnn().init(replicas=seeds)
    fit(net, xs, ys, config, counts=counts)
    for r, (seed, count) in enumerate(zip(seeds, counts, strict=True)):
        alone = bn_cnn().init(seed=seed)
        fit(alone, xs[r, :count], ys[r, :count], config)
        np.testing.assert_allclose(net.flat[r], alone.flat, rtol=0, atol=1e-12)
        np.testing.assert_allclose(net.buffer_flat[r], alone.buffer_flat, rtol=0, atol=1e-12)


def test_large_batches_with_batch_norm_are_never_split() -> None:
    """The engine computes large exact-rule batches in two halves, except when a layer's
    batch statistics couple the samples: then one step is the whole batch's gradient."""
    from handprop.training.epoch import HALVES_MIN, NumpyEpoch
    from handprop.training.loop import TrainConfig, loss_for
    from handprop.training.optim import make_optimizer

    batch = HALVES_MIN // 64
    config = TrainConfig(batch_size=batch, optimizer="sgd", lr=0.1)
    engines = {}
    for build in (small_cnn, bn_cnn):
        net = build().init(seed=0)
        engines[build] = NumpyEpoch(net, None, make_optimizer("sgd", 0.1), loss_for(net, config)[1],
                                    batch)
    assert engines[small_cnn].halves and not engines[bn_cnn].halves
    engine = engines[bn_cnn]
    rng = np.random.default_rng(6)
    xb, yb = rng.uniform(0, 1, (batch, 1, 8, 8)), rng.integers(0, 10, batch)
    reference = bn_cnn().init(seed=0)
    out, tape = reference.forward(xb)
    grads = reference.backward(tape, loss_for(reference, config)[1](out, yb)[1])
    engine.step(xb, yb, None)
    np.testing.assert_allclose(engine.net.flat, reference.flat - 0.1 * grads.flat,
                               rtol=0, atol=1e-12)
    np.testing.assert_array_equal(engine.net.buffer_flat, reference.buffer_flat)


# -- probes leave the state alone ------------------------------------------------------------

def _trained_state(net: Network) -> Network:
    """Move the running statistics away from their initial values (two train passes)."""
    rng = np.random.default_rng(7)
    for _ in range(2):
        net.forward(rng.uniform(0, 1, (*net.rep_shape, 8, 1, 8, 8)))
    return net


def test_alignment_probe_keeps_the_running_statistics() -> None:
    """The alignment probe compares train-mode gradients (batch statistics) and puts the
    running statistics back: a probed run trains exactly like an unprobed one."""
    from handprop.core.ops import softmax_cross_entropy
    from handprop.rules import make_rule
    from handprop.studies.alignment import AlignmentLog, gradient_alignment

    net = _trained_state(bn_cnn().init(seed=0, replicas=[0, 1]))
    before = net.buffer_flat.copy()
    rng = np.random.default_rng(8)
    x, labels = rng.uniform(0, 1, (2, 6, 1, 8, 8)), rng.integers(0, 10, (2, 6))
    rule = make_rule("fa", net)
    metrics = gradient_alignment(net, rule, x, labels, softmax_cross_entropy)
    AlignmentLog(rule, x, labels, softmax_cross_entropy).record(net)
    np.testing.assert_array_equal(net.buffer_flat, before)
    out, tape = net.forward(x)  # the probe's gradients are the train-mode ones
    exact = net.backward(tape, softmax_cross_entropy(out, labels)[1])
    changed = net.backward(tape, softmax_cross_entropy(out, labels)[1], rule)
    cosine = (exact["conv1.weight"] * changed["conv1.weight"]).sum(axis=(1, 2, 3, 4)) / (
        np.linalg.norm(exact["conv1.weight"].reshape(2, -1), axis=1)
        * np.linalg.norm(changed["conv1.weight"].reshape(2, -1), axis=1))
    np.testing.assert_allclose(metrics["conv1.weight"]["cosine"], cosine, rtol=1e-12)


def test_gradcheck_of_a_batch_norm_network_keeps_its_state() -> None:
    """check_network: every parameter of the whole network (batch statistics in train
    mode) matches finite differences, and the running statistics are left as they were."""
    from helpers import FD_TOL

    from handprop.core.gradcheck import check_network

    net = _trained_state(bn_cnn().init(seed=2))
    before = net.buffer_flat.copy()
    rng = np.random.default_rng(9)
    results = check_network(net, rng.uniform(0, 1, (3, 1, 8, 8)), rng, max_entries=24)
    assert {r.name for r in results} == set(net.params)
    assert max(r.rel_error for r in results) <= FD_TOL
    np.testing.assert_array_equal(net.buffer_flat, before)


def test_layer_outputs_run_in_evaluation_mode() -> None:
    from handprop.pictures import show

    net = _trained_state(bn_cnn().init(seed=3))
    before = net.buffer_flat.copy()
    x = np.random.default_rng(10).uniform(0, 1, (4, 1, 8, 8))
    outputs = show.layer_outputs(net, x)
    np.testing.assert_array_equal(outputs[-1][1], net.predict(x))
    np.testing.assert_array_equal(net.buffer_flat, before)
