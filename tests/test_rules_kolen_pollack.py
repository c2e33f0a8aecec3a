"""Kolen-Pollack (``kp``) against independent computations.

* one step on a dense net, with explicit matrix products: the gradient goes down
  through B (which starts as feedback alignment's B), the weight gradient is the exact
  local one, and B then takes one SGD step with that gradient and its own decay;
* Akrout et al.'s (2019) property, measured on training runs: under plain SGD with the
  rule's learning rate and weight decay, ``W_t - B_t = (1 - lr * decay)**t (W_0 - B_0)``
  for every weight layer, conv and dense;
* B changes only in training steps: not in probes, not for a replica sitting out.
"""

from __future__ import annotations

import numpy as np
from helpers import layer_inputs, spy

from handprop import Activation, Dense, Network, small_cnn
from handprop.core.gradcheck import rel_error
from handprop.rules import make_rule
from handprop.rules.base import weight_layer_indices
from handprop.rules.kolen_pollack import KolenPollack
from handprop.training.loop import TrainConfig, fit

LR, DECAY = 0.05, 0.5


def dense_net() -> Network:
    return Network([Dense(5, name="fc1"), Activation("tanh", name="a1"),
                    Dense(4, name="fc2"), Activation("arctan", name="a2"),
                    Dense(3, name="fc3")], input_shape=(6,), loss="l2", init="glorot")


def test_one_step_sends_through_b_then_b_learns_the_local_gradient() -> None:
    net = dense_net().init(seed=1)
    rule = make_rule(KolenPollack(LR, DECAY), net, seed=4)
    start = {k: v.copy() for k, v in rule.feedback().items()}
    fa = make_rule("fa", net, seed=4).feedback()
    assert all(np.array_equal(start[k], fa[k]) for k in fa)  # kp starts where fa does
    record = spy(rule)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 6))
    out, tape = net.forward(x)
    rule.begin_step()
    grads = net.backward(tape, rng.standard_normal(out.shape), rule)
    inputs = layer_inputs(net, x)
    for i in weight_layer_indices(net):
        name = f"{net.layers[i].name}.weight"
        delta, sent, _ = record[i]
        local = delta.T @ inputs[i]
        assert rel_error(grads[name], local) < 1e-13
        if i > 0:
            assert rel_error(sent, delta @ start[name]) < 1e-13
        want = start[name] - LR * (local + DECAY * start[name])
        assert rel_error(rule.feedback()[name], want) < 1e-13


def test_w_minus_b_decays_geometrically_under_sgd(digits) -> None:
    """small_cnn, 2 epochs of SGD (lr 0.05, weight decay 0.5, batch 32) with kp(0.05,
    0.5): every weight layer's W - B is its initial difference times 0.975**steps."""
    x, y = digits
    net = small_cnn().init(seed=0)
    rule = make_rule(KolenPollack(LR, DECAY), net, seed=0)
    before = {k: net.params[k] - b for k, b in rule.feedback().items()}
    config = TrainConfig(epochs=2, batch_size=32, optimizer="sgd", lr=LR, weight_decay=DECAY)
    history = fit(net, x, y, config, rule)
    assert history.steps == 14
    shrink = (1 - LR * DECAY) ** history.steps
    for name, difference in before.items():
        now = net.params[name] - rule.feedback()[name]
        assert rel_error(now, shrink * difference) < 1e-10, name
    assert shrink < 0.71


def test_b_changes_only_in_training_steps() -> None:
    """A backward pass without begin_step (an alignment probe) leaves B alone; after
    begin_step, B learns once however many backward passes follow."""
    net = dense_net().init(seed=3)
    rule = make_rule(KolenPollack(LR, DECAY), net, seed=0)
    start = {k: v.copy() for k, v in rule.feedback().items()}
    x = np.random.default_rng(5).standard_normal((3, 6))
    out, tape = net.forward(x)
    net.backward(tape, out, rule)
    assert all(np.array_equal(rule.feedback()[k], start[k]) for k in start)
    rule.begin_step()
    net.backward(tape, out, rule)
    once = {k: v.copy() for k, v in rule.feedback().items()}
    net.backward(tape, out, rule)
    assert all(np.array_equal(rule.feedback()[k], once[k]) for k in once)
    assert not any(np.array_equal(once[k], start[k]) for k in start)


def test_replicas_equal_separate_runs(digits) -> None:
    """Replicas with 8 and 5 samples (online SGD: the second sits out the last steps):
    each ends with the weights and B of a run alone."""
    x, y = digits
    counts, seeds = [8, 5], [0, 1]
    config = TrainConfig(epochs=2, batch_size=1, optimizer="sgd", lr=0.02)
    xs = np.stack([x[:8], np.concatenate([x[10:15], x[:3]])])
    ys = np.stack([y[:8], np.concatenate([y[10:15], y[:3]])])
    net = small_cnn().init(replicas=seeds)
    rule = make_rule("kp", net)
    fit(net, xs, ys, config, rule, counts=counts)
    for r, (seed, count) in enumerate(zip(seeds, counts, strict=True)):
        alone = small_cnn().init(seed=seed)
        single = make_rule("kp", alone, seed=seed)
        fit(alone, xs[r, :count], ys[r, :count], config, single)
        np.testing.assert_allclose(net.flat[r], alone.flat, rtol=0, atol=1e-12)
        for name, feedback in single.feedback().items():
            np.testing.assert_allclose(rule.feedback()[name][r], feedback, rtol=0, atol=1e-12)
