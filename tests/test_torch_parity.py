"""Parity with PyTorch autograd in float64: outputs and gradients of every op, loss and
preset network, for the same inputs, parameters and random upstream gradient.

Tolerance: ``max|handprop - torch| <= 1e-10 * max(1, max|torch|)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
from helpers import (
    ConvConfig,
    assert_parity,
    conv_id,
    mixed_net,
    random_conv_configs,
    tie_free,
)

from handprop import lenet, seed_net, small_cnn
from handprop.core.ops import (
    activation_backward,
    activation_forward,
    bce_loss,
    conv2d_backward,
    conv2d_forward,
    dense_backward,
    dense_forward,
    get_activation,
    l2_loss,
    max_pool2d_backward,
    max_pool2d_forward,
    max_pool2d_mask,
    max_pool2d_routing,
    max_pool2d_upsample,
    softmax_cross_entropy,
)
from handprop.integrations.torch_twins import (
    TwinMismatchError,
    torch_activation,
    torch_lenet,
    torch_seed_net,
    torch_twin,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """Every test here runs on one torch thread (see conftest.py)."""


def _t(array: np.ndarray, grad: bool = False) -> torch.Tensor:
    """A float64 torch copy of ``array``."""
    return torch.tensor(np.asarray(array, dtype=np.float64), requires_grad=grad)


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().numpy()


# -- convolution -----------------------------------------------------------------------

CONV_CONFIGS = random_conv_configs(72, seed=2024)


def test_conv_configs_cover_the_space() -> None:
    """The random conv configurations include groups > 1, every kernel size, non-square
    kernels, strides and paddings, both strides, every padding and both bias settings."""
    assert len(CONV_CONFIGS) >= 60
    assert sum(c.groups > 1 for c in CONV_CONFIGS) >= 20
    assert {c.groups for c in CONV_CONFIGS} >= {1, 2, 3}
    assert {k for c in CONV_CONFIGS for k in c.kernel} == {1, 2, 3, 4, 5}
    assert {s for c in CONV_CONFIGS for s in c.stride} == {1, 2}
    assert {p for c in CONV_CONFIGS for p in c.padding} == {0, 1, 2}
    assert any(c.kernel[0] != c.kernel[1] for c in CONV_CONFIGS)
    assert any(c.stride[0] != c.stride[1] for c in CONV_CONFIGS)
    assert any(c.padding[0] != c.padding[1] for c in CONV_CONFIGS)
    assert {c.bias for c in CONV_CONFIGS} == {True, False}
    assert {c.batch for c in CONV_CONFIGS} == {1, 2, 3, 4}


@pytest.mark.parametrize("index", range(len(CONV_CONFIGS)),
                         ids=[conv_id(c) for c in CONV_CONFIGS])
def test_conv2d_matches_torch(index: int) -> None:
    """conv2d's output and input, weight and bias gradients equal F.conv2d's autograd."""
    config: ConvConfig = CONV_CONFIGS[index]
    rng = np.random.default_rng(index)
    x = rng.standard_normal(config.input_shape())
    w = rng.standard_normal(config.weight_shape())
    b = rng.standard_normal(config.out_channels) if config.bias else None
    upstream = rng.standard_normal((config.batch, config.out_channels, *config.out_hw()))

    out, cache = conv2d_forward(x, w, b, config.stride, config.padding, config.groups)
    gx, gw, gb = conv2d_backward(upstream, w, cache, has_bias=config.bias)

    xt, wt = _t(x, True), _t(w, True)
    bt = _t(b, True) if config.bias else None
    out_t = F.conv2d(xt, wt, bt, config.stride, config.padding, groups=config.groups)
    out_t.backward(_t(upstream))
    assert_parity(out, _np(out_t), "output")
    assert_parity(gx, _np(xt.grad), "input grad")
    assert_parity(gw, _np(wt.grad), "weight grad")
    if config.bias:
        assert_parity(gb, _np(bt.grad), "bias grad")


# -- max-pooling -----------------------------------------------------------------------


def _pool_configs(count: int, seed: int):
    """Random (shape, kernel, stride): kernels 1-3, strides 1-3 (overlapping windows,
    gaps between windows, sizes the windows do not divide)."""
    rng = np.random.default_rng(seed)
    configs = []
    for _ in range(count):
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        sh, sw = (int(v) for v in rng.integers(1, 4, 2))
        height, width = kh + int(rng.integers(0, 7)), kw + int(rng.integers(0, 7))
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 4)), height, width)
        configs.append((shape, (kh, kw), (sh, sw)))
    return configs


POOL_CONFIGS = _pool_configs(40, seed=7)


def test_pool_configs_cover_the_space() -> None:
    """The random pool configurations include overlapping windows, windows with gaps,
    and sizes not divisible by the stride."""
    assert any(s[0] < k[0] or s[1] < k[1] for _, k, s in POOL_CONFIGS)
    assert any(s[0] > k[0] or s[1] > k[1] for _, k, s in POOL_CONFIGS)
    assert any((shape[2] - k[0]) % s[0] for shape, k, s in POOL_CONFIGS)


@pytest.mark.parametrize("index", range(len(POOL_CONFIGS)), ids=[str(c) for c in POOL_CONFIGS])
def test_max_pool2d_matches_torch(index: int) -> None:
    """max_pool2d's output and routed gradient equal F.max_pool2d's (tie-free inputs)."""
    shape, kernel, stride = POOL_CONFIGS[index]
    rng = np.random.default_rng(index)
    x = tie_free(rng, shape)
    out, cache = max_pool2d_forward(x, kernel, stride)
    upstream = rng.standard_normal(out.shape)
    grad = max_pool2d_backward(upstream, cache)

    xt = _t(x, True)
    out_t = F.max_pool2d(xt, kernel, stride)
    out_t.backward(_t(upstream))
    np.testing.assert_array_equal(out, _np(out_t))
    assert_parity(grad, _np(xt.grad), "input grad")


def _tied_input(rng: np.random.Generator, shape) -> np.ndarray:
    """ReLU'd values with many exact zeros and deliberate equal maxima: most entries come
    from the small set {0, 1, 2} (after ReLU), the rest are ReLU'd normals."""
    x = np.maximum(rng.integers(-2, 3, shape), 0).astype(np.float64)
    continuous = rng.random(shape) < 0.3
    x[continuous] = np.maximum(rng.standard_normal(int(continuous.sum())), 0)
    return x


@pytest.mark.parametrize(
    ("kernel", "stride"),
    [((2, 2), (2, 2)), ((3, 3), (2, 2)), ((3, 3), (1, 1)), ((2, 3), (3, 1)), ((3, 3), (3, 3))],
    ids=str,
)
def test_max_pool2d_ties_route_to_torchs_single_winner(kernel, stride) -> None:
    """With tied maxima (zeros after ReLU, repeated values) exact routing sends each
    window's gradient to exactly one entry, the first maximum in row-major order: the
    same one PyTorch picks, so the gradients agree exactly."""
    rng = np.random.default_rng(19)
    x = _tied_input(rng, (3, 4, 9, 10))
    x[0, 0] = 0.0  # a whole plane of ties
    out, cache = max_pool2d_forward(x, kernel, stride)
    windows = cache.windows
    assert ((windows == windows.max(-1, keepdims=True)).sum(-1) > 1).mean() > 0.3, \
        "the input should have many tied windows"

    # One winner per window, holding the maximum, and no earlier entry ties with it.
    routing = max_pool2d_routing(cache)
    np.testing.assert_array_equal(routing.sum(-1), 1)
    winner = routing.argmax(-1)
    np.testing.assert_array_equal(np.take_along_axis(windows, winner[..., None], -1)[..., 0],
                                  windows.max(-1))
    np.testing.assert_array_equal(winner, (windows == windows.max(-1, keepdims=True)).argmax(-1))

    # The same winner as torch: compare plane positions with torch's indices.
    out_t, indices = F.max_pool2d(_t(x), kernel, stride, return_indices=True)
    np.testing.assert_array_equal(out, _np(out_t))
    position = cache.geometry.index[np.arange(winner.shape[-1]), winner]
    np.testing.assert_array_equal(position.reshape(out.shape), indices.numpy())

    # And the same gradients, for a random upstream gradient.
    upstream = rng.standard_normal(out.shape)
    xt = _t(x, True)
    F.max_pool2d(xt, kernel, stride).backward(_t(upstream))
    np.testing.assert_allclose(max_pool2d_backward(upstream, cache), _np(xt.grad),
                               rtol=0, atol=1e-14)


def test_max_pool2d_tie_routing_marks_every_tied_maximum() -> None:
    """``ties=True`` (the article's mask) gives the gradient to every tied maximum, so
    its total is the upstream gradient times the number of tied winners."""
    rng = np.random.default_rng(20)
    x = _tied_input(rng, (2, 3, 8, 8))
    out, cache = max_pool2d_forward(x, 2, 2)
    tied = (cache.windows == cache.windows.max(-1, keepdims=True)).sum(-1)
    upstream = rng.standard_normal(out.shape)
    grad = max_pool2d_backward(upstream, cache, ties=True)
    np.testing.assert_allclose(grad.sum(), (upstream.reshape(tied.shape) * tied).sum(),
                               rtol=1e-12)
    np.testing.assert_allclose(max_pool2d_backward(upstream, cache).sum(), upstream.sum(),
                               rtol=1e-12)


def _naive_routing(x, kernel, stride, upstream, ties):
    """Loop reference of max-pool routing: (input grad, 0/1 mask, up(G)) in input layout."""
    (kh, kw), (sh, sw) = kernel, stride
    grad, mask, up = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    for index in np.ndindex(upstream.shape):
        *lead, i, j = index
        rows, cols = slice(i * sh, i * sh + kh), slice(j * sw, j * sw + kw)
        window = x[(*lead, rows, cols)]
        chosen = (window == window.max()).astype(x.dtype)
        if not ties:
            chosen = np.zeros_like(window)
            chosen.flat[np.argmax(window)] = 1.0  # first maximum, row-major
        grad[(*lead, rows, cols)] += chosen * upstream[index]
        mask[(*lead, rows, cols)] += chosen
        up[(*lead, rows, cols)] += upstream[index]
    return grad, mask, up


@pytest.mark.parametrize("ties", [False, True], ids=["exact", "ties"])
def test_max_pool2d_routing_helpers_match_a_loop(ties: bool) -> None:
    """The backward pass, the routing mask and up(G), with exact or tie routing, equal a
    plain loop over windows, for overlapping windows, gaps and uncovered edges (tied
    inputs)."""
    rng = np.random.default_rng(25)
    for shape, kernel, stride in POOL_CONFIGS[:20]:
        x = _tied_input(rng, shape)
        out, cache = max_pool2d_forward(x, kernel, stride)
        upstream = rng.standard_normal(out.shape)
        grad, mask, up = _naive_routing(x, kernel, stride, upstream, ties)
        np.testing.assert_allclose(max_pool2d_backward(upstream, cache, ties=ties), grad,
                                   rtol=0, atol=1e-13)
        np.testing.assert_array_equal(max_pool2d_mask(cache, ties=ties), mask)
        np.testing.assert_allclose(max_pool2d_upsample(upstream, cache), up, rtol=0, atol=1e-13)


# -- dense -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 3, 5])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_dense_matches_torch(batch: int, bias: bool) -> None:
    """dense's output and input, weight and bias gradients equal F.linear's autograd."""
    rng = np.random.default_rng(batch)
    x, w = rng.standard_normal((batch, 9)), rng.standard_normal((6, 9))
    b = rng.standard_normal(6) if bias else None
    out, cache = dense_forward(x, w, b)
    upstream = rng.standard_normal(out.shape)
    gx, gw, gb = dense_backward(upstream, w, cache, has_bias=bias)

    xt, wt = _t(x, True), _t(w, True)
    bt = _t(b, True) if bias else None
    out_t = F.linear(xt, wt, bt)
    out_t.backward(_t(upstream))
    assert_parity(out, _np(out_t), "output")
    assert_parity(gx, _np(xt.grad), "input grad")
    assert_parity(gw, _np(wt.grad), "weight grad")
    if bias:
        assert_parity(gb, _np(bt.grad), "bias grad")


# -- activations -----------------------------------------------------------------------

ACTIVATIONS = ["identity", "relu", "leaky_relu", "leaky_relu:0.2", "tanh", "arctan", "sigmoid"]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_torch(name: str) -> None:
    """Each activation's value and derivative equal torch's (relu at exactly 0 too, where
    both use derivative 0; large |z| where tanh and sigmoid saturate)."""
    rng = np.random.default_rng(21)
    z = np.concatenate([rng.standard_normal(50) * 3, [0.0, -0.0, 1e-300, -1e-300, 40, -40,
                                                      700, -700]])
    activation = get_activation(name)
    y, cache = activation_forward(z, activation)
    upstream = rng.standard_normal(z.shape)
    grad = activation_backward(upstream, cache, activation)

    zt = _t(z, True)
    yt = torch_activation(name)(zt)
    yt.backward(_t(upstream))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad))
    assert_parity(y, _np(yt), "value")
    assert_parity(grad, _np(zt.grad), "gradient")


def test_sigmoid_stays_finite_and_accurate_in_the_tails() -> None:
    """sigmoid at z = +-40 and +-700 is finite, matches torch to full relative precision
    in the small tail, and so does its derivative."""
    z = np.array([-700.0, -40.0, -1.0, 0.0, 1.0, 40.0, 700.0])
    activation = get_activation("sigmoid")
    with np.errstate(all="raise"):  # no overflow warnings either
        y, cache = activation_forward(z, activation)
        grad = activation_backward(np.ones_like(z), cache, activation)
    zt = _t(z, True)
    yt = torch.sigmoid(zt)
    yt.backward(torch.ones_like(zt))
    np.testing.assert_allclose(y, _np(yt), rtol=1e-14, atol=0)
    np.testing.assert_allclose(grad, _np(zt.grad), rtol=1e-14, atol=0)
    assert y[0] > 0 and grad[0] > 0  # exp(-700) ~ 1e-304, not flushed to 0
    assert y[-1] == 1.0 and grad[-1] == 0.0


# -- losses ----------------------------------------------------------------------------


def _loss_pair(value: np.ndarray, grad: np.ndarray, value_t: torch.Tensor, pred_t):
    assert_parity(value, _np(value_t), "value")
    value_t.backward()
    assert_parity(grad, _np(pred_t.grad), "gradient")


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_l2_loss_matches_torch(reduction: str) -> None:
    """l2 = 0.5 * F.mse_loss(reduction='sum') (divided by the batch size for 'mean')."""
    rng = np.random.default_rng(22)
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    value, grad = l2_loss(pred, target, reduction)
    pred_t = _t(pred, True)
    value_t = 0.5 * F.mse_loss(pred_t, _t(target), reduction="sum")
    if reduction == "mean":
        value_t = value_t / pred.shape[0]
    _loss_pair(value, grad, value_t, pred_t)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("saturated", [False, True], ids=["interior", "saturated"])
def test_bce_loss_matches_torch(reduction: str, saturated: bool) -> None:
    """bce equals F.binary_cross_entropy (sum; 'mean' divides by the batch size N where
    torch divides by N*K), including p exactly 0 or 1, where both clamp log at -100 and
    divide the gradient by max(p(1-p), eps) with torch's eps (float32 1e-12, also in
    float64): the clamped gradients (~1e12) agree to the same relative 1e-10.
    """
    rng = np.random.default_rng(23)
    pred = rng.uniform(0.01, 0.99, (5, 3))
    target = rng.uniform(0, 1, (5, 3))
    if saturated:
        pred[0] = [0.0, 1.0, 0.0]
        pred[1] = [1.0, 0.0, 1.0]
        target[0] = [1.0, 0.0, 0.0]
        target[1] = [1.0, 1.0, 0.5]
    value, grad = bce_loss(pred, target, reduction)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    pred_t = _t(pred, True)
    value_t = F.binary_cross_entropy(pred_t, _t(target), reduction="sum")
    if reduction == "mean":
        value_t = value_t / pred.shape[0]
    value_t.backward()
    grad_t = _np(pred_t.grad)
    assert_parity(value, _np(value_t), "value")
    clamped = pred * (1 - pred) < 1e-12
    assert clamped.any() == saturated
    assert_parity(grad[~clamped], grad_t[~clamped], "gradient")
    np.testing.assert_allclose(grad[clamped], grad_t[clamped], rtol=1e-10, atol=0)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("target_kind", ["labels", "probabilities"])
def test_softmax_cross_entropy_matches_torch(reduction: str, target_kind: str) -> None:
    """softmax_ce equals F.cross_entropy on logits, with integer labels or class
    probabilities, for 'sum' and 'mean' (both divide by the batch size)."""
    rng = np.random.default_rng(24)
    logits = rng.standard_normal((6, 4)) * 3
    logits[0] = [500.0, -500.0, 0.0, 499.0]  # large logits: the shift keeps it finite
    if target_kind == "labels":
        target = rng.integers(0, 4, 6)
        target_t = torch.tensor(target)
    else:
        target = rng.dirichlet(np.ones(4), size=6)
        target_t = _t(target)
    value, grad = softmax_cross_entropy(logits, target, reduction)
    pred_t = _t(logits, True)
    value_t = F.cross_entropy(pred_t, target_t, reduction=reduction)
    _loss_pair(value, grad, value_t, pred_t)


# -- whole networks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "twin", "input_shape", "batch"),
    [
        (seed_net, torch_seed_net, (1, 8, 8), 6),
        (lenet, torch_lenet, (1, 28, 28), 4),
        (small_cnn, torch_twin, (1, 8, 8), 5),
        (seed_net, torch_twin, (1, 8, 8), 3),
        (mixed_net, torch_twin, (3, 11, 9), 4),
    ],
    ids=["seed_net", "lenet", "small_cnn-generic_twin", "seed_net-generic_twin",
         "mixed_net-generic_twin"],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_network_matches_torch_twin(build, twin, input_shape, batch, seed) -> None:
    """A preset network's output and every parameter gradient equal those of its torch
    twin (same parameters, same inputs, same random upstream gradient)."""
    net = build().init(seed=seed)
    module = twin(net)
    rng = np.random.default_rng(100 + seed)
    x = rng.standard_normal((batch, *input_shape))
    out, tape = net.forward(x)
    upstream = rng.standard_normal(out.shape)
    grads = net.backward(tape, upstream)

    out_t = module(_t(x))
    out_t.backward(_t(upstream))
    assert_parity(out, _np(out_t), "output")
    torch_grads = dict(module.named_parameters())
    assert set(grads) == set(torch_grads)
    for name, grad in grads.items():
        assert_parity(grad, _np(torch_grads[name].grad), name)


def test_twins_reject_a_mismatched_network() -> None:
    """torch_seed_net refuses a network whose parameters do not fit the article's net."""
    with pytest.raises(TwinMismatchError):
        torch_seed_net(small_cnn().init(0))
