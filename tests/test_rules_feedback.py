"""The literature's learning rules (fa, usf, frsf, brsf, dfa): what each sends backward.

Expected signals are computed independently: dense layers with explicit matrix
products, conv layers with PyTorch autograd (``conv2d`` with the feedback kernels B),
DFA with the loop reference of the seed net in ``helpers``. Float64, fixed seeds.
"""

from __future__ import annotations

from math import sqrt

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
from helpers import (
    REF_ACT,
    SEED_ACT1,
    SEED_ACT2,
    layer_inputs,
    ref_correlate_valid,
    ref_seed_forward,
    spy,
)

from handprop import Activation, Conv2d, Dense, Network, seed_net, small_cnn
from handprop.core.gradcheck import rel_error
from handprop.integrations.torch_twins import torch_twin
from handprop.rules import make_rule
from handprop.rules.base import weight_layer_indices
from handprop.studies.alignment import weight_alignment
from handprop.training.loop import TrainConfig, fit, loss_for, targets_for

TOL = 1e-12
FEEDBACK_RULES = ("fa", "fa-glorot", "usf", "frsf", "brsf", "sign")
NETS = {"small": small_cnn, "seed": seed_net}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """Every test here runs on one torch thread (see conftest.py)."""


def assert_close(actual, expected, what, tol=TOL):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert np.abs(expected).max() > 0, f"{what}: expected value is all zero"
    err = rel_error(actual, expected)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def case(make, seed: int = 1):
    """A float64 net with 3 random inputs and a random upstream gradient."""
    net = make().init(seed=seed)
    rng = np.random.default_rng(50 + seed)
    x = rng.standard_normal((3, *net.input_shape))
    return net, x, rng.standard_normal((3, *net.output_shape))


def fans(weight: np.ndarray) -> tuple[int, int]:
    """fan_in, fan_out of an ungrouped dense (out, in) or conv (out, in, kh, kw) weight."""
    receptive = int(np.prod(weight.shape[2:]))
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def torch_conv_grads(layer, x_in, feedback, delta):
    """PyTorch autograd of conv2d(x_in, feedback) with upstream delta:
    (gradient w.r.t. the input, i.e. delta sent back through B; gradient w.r.t. the kernel,
    which does not depend on the kernel's values)."""
    xt = torch.tensor(x_in, requires_grad=True)
    bt = torch.tensor(feedback, requires_grad=True)
    out = F.conv2d(xt, bt, None, layer.stride, layer.padding, 1, layer.groups)
    out.backward(torch.tensor(delta))
    return xt.grad.numpy(), bt.grad.numpy()


# -- fa, usf, frsf, brsf: the gradient goes down through B --------------------------------

@pytest.mark.parametrize("net_name", NETS)
@pytest.mark.parametrize("name", FEEDBACK_RULES)
def test_feedback_rule_sends_through_b(name, net_name):
    """Each weight layer sends delta back through B (dense: delta @ B; conv: autograd of
    torch conv2d with kernel B), keeps the exact local weight/bias gradient of the delta
    it receives, and the top weight layer's gradients equal exact back-propagation."""
    net, x, R = case(NETS[net_name])
    rule = make_rule(name, net, seed=7)
    record = spy(rule)
    feedback = rule.feedback()
    out, tape = net.forward(x)
    grads = net.backward(tape, R, rule)
    exact = net.backward(tape, R)
    inputs = layer_inputs(net, x)
    weights = weight_layer_indices(net)
    assert sorted(feedback) == sorted(f"{net.layers[i].name}.weight" for i in weights)
    for i in weights:
        layer = net.layers[i]
        W = net.params[f"{layer.name}.weight"]
        B = feedback[f"{layer.name}.weight"]
        assert B.shape == W.shape and not np.allclose(B, W)
        delta, sent, local = record[i]
        if isinstance(layer, Conv2d):
            want_sent, want_weight = torch_conv_grads(layer, inputs[i], B, delta)
            bias_axes = (0, 2, 3)
        else:
            want_sent, want_weight = delta @ B, delta.T @ inputs[i]
            bias_axes = (0,)
        if i == weights[0]:
            assert sent is None  # nothing below needs it
        else:
            assert_close(sent, want_sent, f"{name} {layer.name} sends")
        assert_close(grads[f"{layer.name}.weight"], want_weight, f"{layer.name}.weight")
        assert_close(local["weight"], want_weight, f"{layer.name} local weight")
        if layer.bias:
            assert_close(grads[f"{layer.name}.bias"], delta.sum(axis=bias_axes), "bias")
    top = net.layers[weights[-1]].name
    for key in grads:
        if key.startswith(top + "."):
            assert_close(grads[key], exact[key], f"top {key}")


def test_fa_sent_signal_uses_b_not_w():
    """fa's conv input gradient is not the exact one (through W): the swap is real."""
    net, x, R = case(small_cnn)
    rule = make_rule("fa", net, seed=7)
    record = spy(rule)
    exact_rule = make_rule("exact", net)
    exact_record = spy(exact_rule)
    out, tape = net.forward(x)
    net.backward(tape, R, rule)
    net.backward(tape, R, exact_rule)
    conv2 = net.layer_index("conv2")
    assert rel_error(record[conv2][1], exact_record[conv2][1]) > 0.1


def _train(net, rule, digits, count=64, epochs=1, batch_size=16):
    x, y = digits
    config = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer="momentum", lr=0.05,
                         momentum=0.9, seed=0)
    return fit(net, x[:count], y[:count], config, rule)


def test_fa_b_is_fixed_and_depends_only_on_the_seed(digits):
    """fa's B does not change while W trains; it depends only on the rule's seed (not on
    the net's weights), and replica r of a replicated net gets the B of seed r."""
    net = small_cnn().init(seed=0)
    rule = make_rule("fa", net, seed=5)
    before = {k: v.copy() for k, v in rule.feedback().items()}
    w_before = net.get_params()
    history = _train(net, rule, digits)
    assert history.steps == 4
    for key, B in rule.feedback().items():
        assert np.array_equal(B, before[key]), key
        assert not np.array_equal(net.params[key], w_before[key]), key
    other = make_rule("fa", small_cnn().init(seed=1), seed=5).feedback()
    different = make_rule("fa", small_cnn().init(seed=0), seed=6).feedback()
    for key, B in before.items():
        assert np.array_equal(other[key], B), key
        assert not np.allclose(different[key], B), key
        fan_in, _ = fans(B)  # drawn like small_cnn's initial weights: U(+-1/sqrt(fan_in))
        assert np.abs(B).max() <= 1 / sqrt(fan_in)
    replicated = make_rule("fa", small_cnn().init(replicas=[3, 4])).feedback()
    for r, seed in enumerate((3, 4)):
        single = make_rule("fa", small_cnn().init(seed=seed), seed=seed).feedback()
        for key, B in single.items():
            assert np.array_equal(replicated[key][r], B), (r, key)


def _usf_expected(net) -> dict[str, np.ndarray]:
    """sqrt(2 / (fan_in + fan_out)) * sign(W) for every weight (ungrouped layers)."""
    out = {}
    for key, W in net.params.items():
        if key.endswith(".weight"):
            fan_in, fan_out = fans(W)
            out[key] = sqrt(2 / (fan_in + fan_out)) * np.sign(W)
    return out


def test_usf_b_follows_current_w(digits):
    """usf's B is sqrt(2/(fan_in+fan_out)) * sign(W) of the current W, also after training
    and after W is changed by hand, and the backward pass uses that current B."""
    net = small_cnn().init(seed=2)
    rule = make_rule("usf", net, seed=0)
    for key, B in rule.feedback().items():
        assert_close(B, _usf_expected(net)[key], key)
    _train(net, rule, digits)
    net.params["fc4.weight"][:, :5] *= -1.0
    expected = _usf_expected(net)
    for key, B in rule.feedback().items():
        assert_close(B, expected[key], f"after steps {key}")
    record = spy(rule)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    out, tape = net.forward(x)
    net.backward(tape, np.ones_like(out), rule)
    fc4 = net.layer_index("fc4")
    assert_close(record[fc4][1], record[fc4][0] @ expected["fc4.weight"], "fc4 sends")


def test_sign_b_is_the_sign_of_current_w(digits):
    """sign's B is sign(W) of the current W (entries +-1), also after training and after W
    is changed by hand, and the backward pass sends through that current B."""
    net = small_cnn().init(seed=2)
    rule = make_rule("sign", net, seed=0)
    for key, B in rule.feedback().items():
        assert np.array_equal(B, np.sign(net.params[key])), key
        assert set(np.unique(B)) <= {-1.0, 1.0}, key
    _train(net, rule, digits)
    net.params["fc4.weight"][:, :5] *= -1.0
    for key, B in rule.feedback().items():
        assert np.array_equal(B, np.sign(net.params[key])), f"after steps {key}"
    record = spy(rule)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    out, tape = net.forward(x)
    net.backward(tape, np.ones_like(out), rule)
    fc4 = net.layer_index("fc4")
    want = record[fc4][0] @ np.sign(net.params["fc4.weight"])
    assert_close(record[fc4][1], want, "fc4 sends")


def test_frsf_magnitude_fixed_sign_follows_w(digits):
    """frsf's B = |M| * sign(W): |B| is unchanged by training and by rescaling W (M fixed),
    and sign(B) == sign(W) throughout."""
    net = small_cnn().init(seed=3)
    rule = make_rule("frsf", net, seed=4)
    magnitude = {k: np.abs(B) for k, B in rule.feedback().items()}
    _train(net, rule, digits)
    net.flat *= 2.0
    net.params["fc3.weight"][0] *= -1.0
    for key, B in rule.feedback().items():
        assert np.array_equal(np.abs(B), magnitude[key]), key
        assert np.array_equal(np.sign(B), np.sign(net.params[key])), key
        fan_in, fan_out = fans(B)  # |M| from Glorot-uniform
        assert np.abs(B).max() <= sqrt(6 / (fan_in + fan_out))


def test_brsf_redraws_magnitude_every_step(digits):
    """brsf: |M| changes at every begin_step, sign(B) == sign(W) always, the same seed gives
    the same sequence (another seed another one), and fit calls begin_step once per step."""
    def sequence(seed, steps=3):
        net = small_cnn().init(seed=0)
        rule = make_rule("brsf", net, seed=seed)
        out = []
        for _ in range(steps):
            feedback = rule.feedback()
            for key, B in feedback.items():
                assert np.array_equal(np.sign(B), np.sign(net.params[key])), key
            out.append({k: np.abs(B) for k, B in feedback.items()})
            rule.begin_step()
        return out

    first, again, other = sequence(9), sequence(9), sequence(10)
    for step in range(3):
        for key in first[0]:
            assert np.array_equal(first[step][key], again[step][key]), (step, key)
            assert not np.allclose(first[step][key], other[step][key]), (step, key)
            if step:
                assert not np.allclose(first[step][key], first[step - 1][key]), (step, key)
    net = small_cnn().init(seed=0)
    rule = make_rule("brsf", net, seed=9)
    history = _train(net, rule, digits, count=48)
    twin_net = small_cnn().init(seed=0)
    twin = make_rule("brsf", twin_net, seed=9)
    for _ in range(history.steps):
        twin.begin_step()
    for key, B in rule.feedback().items():
        assert np.array_equal(np.abs(B), np.abs(twin.feedback()[key])), key
        assert np.array_equal(np.sign(B), np.sign(net.params[key])), key


# -- dfa -------------------------------------------------------------------------------------

def _dense_net() -> Network:
    return Network(
        [Dense(5, name="d1"), Activation("tanh", name="a1"), Dense(4, name="d2"),
         Activation("relu", name="a2"), Dense(3, name="d3")],
        input_shape=(6,), loss="softmax_ce", name="dense",
    )


def test_dfa_dense_net():
    """DFA on 6 -> 5 tanh -> 4 relu -> 3: the output layer's gradients are exact; hidden
    layer l gets e @ B_l at its activation output, so its weight gradient is the local
    gradient of (e @ B_l) * f'(z); B_l (K x D_l) is fixed by the seed and Glorot-uniform."""
    net = _dense_net().init(seed=0)
    rng = np.random.default_rng(4)
    x, e = rng.standard_normal((4, 6)), rng.standard_normal((4, 3))
    rule = make_rule("dfa", net, seed=2)
    B = rule.direct_matrices()
    assert sorted(B) == ["a1", "a2"]
    assert B["a1"].shape == (3, 5) and B["a2"].shape == (3, 4)
    assert all(np.abs(m).max() <= sqrt(6 / sum(m.shape)) for m in B.values())
    out, tape = net.forward(x)
    grads = net.backward(tape, e, rule)
    p = net.params
    h1 = x @ p["d1.weight"].T + p["d1.bias"]
    a1 = np.tanh(h1)
    h2 = a1 @ p["d2.weight"].T + p["d2.bias"]
    a2 = np.maximum(h2, 0)
    assert_close(out, a2 @ p["d3.weight"].T + p["d3.bias"], "forward")
    delta2 = (e @ B["a2"]) * (h2 > 0)
    delta1 = (e @ B["a1"]) * (1 - a1 ** 2)
    expected = {"d3.weight": e.T @ a2, "d3.bias": e.sum(0),
                "d2.weight": delta2.T @ a1, "d2.bias": delta2.sum(0),
                "d1.weight": delta1.T @ x, "d1.bias": delta1.sum(0)}
    for key, value in expected.items():
        assert_close(grads[key], value, key)
    again = make_rule("dfa", _dense_net().init(seed=1), seed=2).direct_matrices()
    assert all(np.array_equal(again[k], B[k]) for k in B)


def test_dfa_seed_net():
    """DFA on the seed net: e (gradient at fc5's output) times B_l, reshaped to (C, H, W)
    at act1 and act2 (before the pools), times f'(z), gives each conv map's delta; weight
    gradients from the loop reference (per map, groups=2) match, fc5 is exact."""
    net, x, R = case(seed_net, seed=2)
    rule = make_rule("dfa", net, seed=3)
    B = rule.direct_matrices()
    assert {k: v.shape for k, v in B.items()} == {
        "act1": (1, 128), "act2": (1, 64), "act3": (1, 28), "act4": (1, 36)}
    out, tape = net.forward(x)
    grads = net.backward(tape, R, rule)
    exact = net.backward(tape, R)
    assert_close(grads["fc5.weight"], exact["fc5.weight"], "fc5")
    p = {k: v for k, v in net.params.items()}
    expected = {k: np.zeros_like(v) for k, v in p.items()}
    for n in range(len(x)):
        s = ref_seed_forward(p, x[n, 0])
        e = R[n] * REF_ACT["sigmoid"][1](s["h5"])
        g1 = (e @ B["act1"]).reshape(2, 8, 8)
        g2 = (e @ B["act2"]).reshape(4, 4, 4)
        for c in range(2):
            delta = g1[c] * REF_ACT[SEED_ACT1[c]][1](s["z1"][c])
            expected["conv1.weight"][c, 0] += ref_correlate_valid(np.pad(s["x"], 1), delta)
        for o in range(4):
            delta = g2[o] * REF_ACT[SEED_ACT2[o]][1](s["z2"][o])
            expected["conv2.weight"][o, 0] += ref_correlate_valid(np.pad(s["p1"][o // 2], 1),
                                                                  delta)
        d3 = (e @ B["act3"]) / (1 + s["h3"] ** 2)
        d4 = (e @ B["act4"]) * (1 - s["a4"] ** 2)
        expected["fc3.weight"] += np.outer(d3, s["f"])
        expected["fc4.weight"] += np.outer(d4, s["a3"])
        expected["fc5.weight"] += np.outer(e, s["a4"])
    for key, value in expected.items():
        assert_close(grads[key], value, key)


# -- replicas --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [*FEEDBACK_RULES, "dfa", "dfa-biotorch"])
def test_replicas_equal_separate_nets(name):
    """On small_cnn with replicas=[3, 4], gradients and feedback matrices of replica r equal
    those of a separate net and rule with seed r (after two begin_steps, for brsf)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 1, 8, 8))
    R = rng.standard_normal((2, 3, 10))
    net = small_cnn().init(replicas=[3, 4])
    rule = make_rule(name, net)
    for _ in range(2):
        rule.begin_step()
    out, tape = net.forward(x)
    grads = net.backward(tape, R, rule)
    for r, seed in enumerate((3, 4)):
        single = small_cnn().init(seed=seed)
        single_rule = make_rule(name, single, seed=seed)
        for _ in range(2):
            single_rule.begin_step()
        out_r, tape_r = single.forward(x[r])
        expected = single.backward(tape_r, R[r], single_rule)
        for key, value in expected.items():
            assert_close(grads[key][r], value, f"replica {r} {key}")
        for key, B in single_rule.feedback().items():
            assert np.array_equal(rule.feedback()[key][r], B), (r, key)


# -- alignment ------------------------------------------------------------------------------

def test_weight_alignment_usf_and_fa():
    """weight_alignment: usf has sign concordance 1 with W and the angle of sign(W) with W,
    arccos(sum|W| / (sqrt(n) |W|)) (not 0: |W| is not uniform); for fa the angle, norm
    ratio and sign concordance equal their direct computation from B and W."""
    net = small_cnn().init(seed=0)
    usf = weight_alignment(net, make_rule("usf", net))
    expected = _usf_expected(net)
    assert sorted(usf) == sorted(expected)
    for key, metrics in usf.items():
        w = net.params[key].ravel()
        angle = np.degrees(np.arccos(np.abs(w).sum() / (sqrt(w.size) * np.linalg.norm(w))))
        assert 0 < angle < 90
        assert abs(float(metrics["angle_deg"]) - angle) < 1e-9, key
        assert float(metrics["sign_concordance"]) == 1.0
        ratio = np.linalg.norm(expected[key]) / np.linalg.norm(w)
        assert abs(float(metrics["norm_ratio"]) - ratio) <= 1e-12 * ratio
    rule = make_rule("fa", net, seed=1)
    fa = weight_alignment(net, rule)
    assert sorted(fa) == sorted(rule.feedback())
    for key, B in rule.feedback().items():
        W = net.params[key]
        b, w = B.ravel(), W.ravel()
        cosine = b @ w / (np.linalg.norm(b) * np.linalg.norm(w))
        assert abs(float(fa[key]["angle_deg"]) - np.degrees(np.arccos(cosine))) < 1e-9
        assert abs(float(fa[key]["norm_ratio"]) - np.linalg.norm(b) / np.linalg.norm(w)) < 1e-12
        assert float(fa[key]["sign_concordance"]) == np.mean(np.sign(b) == np.sign(w))


# -- training smoke --------------------------------------------------------------------------

# DFA is run at a smaller learning rate: its hidden conv gradients are about 14x the exact
# ones at init on small_cnn (conv1: 0.32 vs 0.023), and at lr 0.05 with momentum 0.9 it
# diverges from epoch 4 on (why `handprop compare` uses Adam).
@pytest.mark.parametrize(("name", "lr"), [
    *[(name, 0.05) for name in FEEDBACK_RULES],
    ("dfa", 0.01),
    ("dfa-biotorch", 0.02),
])
def test_rule_reduces_training_loss(name, lr, digits):
    """small_cnn trained with the rule for 3 epochs on 200 digits10 images (momentum 0.9,
    batch 32, lr 0.05; dfa only learns at a smaller lr) ends with a lower training loss
    than it started with."""
    x, y = digits
    net = small_cnn().init(seed=0)
    config = TrainConfig(epochs=3, batch_size=32, optimizer="momentum", lr=lr, momentum=0.9,
                         seed=0)
    loss_name, loss_fn = loss_for(net, config)
    targets = targets_for(net, y, loss_name)
    before = float(loss_fn(net.forward(x)[0], targets)[0])
    history = fit(net, x, y, config, make_rule(name, net, seed=0))
    after = float(loss_fn(net.forward(x)[0], targets)[0])
    assert np.all(np.isfinite(history.cost))
    assert after < before, (name, before, after)
    assert history.cost[-1] < history.cost[0], (name, history.cost)


# -- DFA as BioTorch does it, and FA's B initialisation ----------------------------------------

def _biotorch_dfa_reference(net, rule, x, R) -> dict:
    """Gradients of BioTorch's DFA mechanism, run in torch: every Linear/Conv2d module's
    input gradient is replaced in a backward hook by the projected output error (``e @ B``,
    or ``torch.nn.grad.conv2d_input`` of e spread over the output positions). The error e
    is the gradient at the last weight layer's output (its hook runs first)."""
    twin = torch_twin(net)
    modules = {name: module for name, module in twin.named_children()}
    last = max(rule.matrices)
    found: dict[str, torch.Tensor] = {}
    handles = []
    for index, B in rule.matrices.items():
        layer, module = net.layers[index], modules[net.layers[index].name]
        feedback = torch.from_numpy(B)

        def hook(module, grad_input, grad_output, layer=layer, feedback=feedback, index=index):
            if index == last:
                found["error"] = grad_output[0]
            error = found["error"]
            if grad_input[0] is None:
                return grad_input
            if isinstance(module, torch.nn.Linear):
                return (error @ feedback, *grad_input[1:])
            spread = error[:, :, None, None].expand(-1, -1, *grad_output[0].shape[2:])
            sent = torch.nn.grad.conv2d_input(grad_input[0].shape, feedback, spread,
                                              stride=layer.stride, padding=layer.padding)
            return (sent, *grad_input[1:])

        handles.append(module.register_full_backward_hook(hook))
    inputs = torch.from_numpy(x).requires_grad_(True)  # so the first layer's hook fires too
    twin(inputs).backward(torch.from_numpy(R))
    for handle in handles:
        handle.remove()
    return {name: p.grad.numpy() for name, p in twin.named_parameters()}


@pytest.mark.parametrize("net_name", ["small", "seed"])
def test_dfa_biotorch_matches_biotorchs_hooks(net_name):
    """dfa-biotorch's gradients equal BioTorch's mechanism run in torch autograd."""
    net = NETS[net_name]().init(seed=2, scheme="lecun")
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, *net.input_shape))
    R = rng.standard_normal((3, *net.output_shape))
    rule = make_rule("dfa-biotorch", net, seed=2)
    out, tape = net.forward(x)
    grads = net.backward(tape, R, rule)
    expected = _biotorch_dfa_reference(net, rule, x, R)
    for key, value in expected.items():
        assert_close(grads[key], value, f"dfa-biotorch {key}")
    exact = net.backward(tape, R)
    last = net.layers[weight_layer_indices(net)[-1]].name
    assert_close(grads[f"{last}.weight"], exact[f"{last}.weight"], "output layer stays exact")


def test_fa_draws_b_with_the_scheme_actually_used_or_glorot():
    """fa's B follows the init the network was drawn with (not its default scheme), and
    fa-glorot draws Glorot-uniform B whatever the init."""
    normal = small_cnn().init(seed=0, scheme="normal")
    he = small_cnn().init(seed=0, scheme="he")
    b_normal = make_rule("fa", normal, seed=0).feedback()["fc3.weight"]
    b_he = make_rule("fa", he, seed=0).feedback()["fc3.weight"]
    fan_in = he.params["fc3.weight"].shape[1]
    assert abs(b_normal.std() - 1) < 0.1
    assert abs(b_he.std() - sqrt(2 / fan_in)) < 0.2 * sqrt(2 / fan_in)
    glorot = make_rule("fa-glorot", he, seed=0).feedback()["fc3.weight"]
    bound = sqrt(6 / sum(he.params["fc3.weight"].shape))
    assert np.abs(glorot).max() <= bound and np.abs(glorot).max() > 0.9 * bound
