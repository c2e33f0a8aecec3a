"""Every hand-written gradient against central finite differences (float64).

Each check contracts the op's output with a random standard-normal upstream gradient
``R`` and compares the hand-written gradient of ``sum(R * out)`` with central
differences; the error is ``handprop.core.gradcheck.rel_error`` and must be <= 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    FD_TOL,
    ConvConfig,
    assert_fd,
    away_from_zero,
    conv_id,
    fd_grad,
    mixed_net,
    tie_free,
)

from handprop import lenet, seed_net, small_cnn
from handprop.core.gradcheck import check_network, numerical_grad
from handprop.core.ops import (
    activation_backward,
    activation_forward,
    bce_loss,
    channel_plan,
    conv2d_backward,
    conv2d_forward,
    conv2d_input_grad,
    dense_backward,
    dense_forward,
    dense_input_grad,
    flatten_backward,
    flatten_forward,
    get_activation,
    l2_loss,
    max_pool2d_backward,
    max_pool2d_forward,
    per_channel_backward,
    per_channel_forward,
    softmax_cross_entropy,
)
from handprop.core.presets import seed_as_run

# -- convolution -----------------------------------------------------------------------

CONV_CONFIGS = [
    # batch, in, out, H, W, kernel, stride, padding, groups, bias
    ConvConfig(2, 1, 2, 6, 6, (3, 3), (1, 1), (0, 0), 1, True),
    ConvConfig(1, 2, 3, 5, 7, (1, 1), (1, 1), (0, 0), 1, False),
    ConvConfig(2, 2, 4, 8, 8, (3, 3), (1, 1), (1, 1), 2, False),
    ConvConfig(2, 3, 3, 7, 6, (2, 2), (2, 2), (1, 1), 3, True),
    ConvConfig(1, 6, 3, 9, 7, (5, 5), (1, 1), (2, 2), 3, True),
    ConvConfig(2, 4, 6, 7, 9, (2, 3), (1, 2), (0, 1), 2, True),
    ConvConfig(1, 3, 2, 6, 5, (4, 2), (2, 1), (2, 0), 1, True),
    ConvConfig(3, 2, 2, 5, 5, (5, 5), (1, 1), (0, 0), 1, True),
    ConvConfig(1, 3, 6, 4, 9, (3, 5), (2, 2), (2, 1), 3, False),
    ConvConfig(2, 1, 1, 3, 4, (5, 4), (1, 2), (2, 2), 1, True),
]


def _conv_data(config: ConvConfig, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(config.input_shape())
    w = rng.standard_normal(config.weight_shape())
    b = rng.standard_normal(config.out_channels) if config.bias else None
    upstream = rng.standard_normal((config.batch, config.out_channels, *config.out_hw()))
    return x, w, b, upstream


@pytest.mark.parametrize("config", CONV_CONFIGS, ids=conv_id)
def test_conv2d_gradients_match_finite_differences(config: ConvConfig) -> None:
    """conv2d's input, weight and bias gradients are the derivatives of its forward."""
    x, w, b, upstream = _conv_data(config, seed=1)
    kwargs = dict(stride=config.stride, padding=config.padding, groups=config.groups)
    out, cache = conv2d_forward(x, w, b, **kwargs)
    assert out.shape == upstream.shape
    gx, gw, gb = conv2d_backward(upstream, w, cache, has_bias=config.bias)

    def forward() -> np.ndarray:
        return conv2d_forward(x, w, b, **kwargs)[0]

    assert_fd(gx, fd_grad(forward, upstream, x), "input grad")
    assert_fd(gw, fd_grad(forward, upstream, w), "weight grad")
    if config.bias:
        assert_fd(gb, fd_grad(forward, upstream, b), "bias grad")
    else:
        assert gb is None


def test_conv2d_input_grad_uses_its_weight_argument() -> None:
    """conv2d_input_grad sends the gradient back through the weight it is given: W gives
    the exact input gradient, 2W twice it, and any B the input gradient of conv with B."""
    config = ConvConfig(2, 4, 6, 7, 6, (3, 2), (2, 1), (1, 0), 2, False)
    x, w, _, upstream = _conv_data(config, seed=2)
    kwargs = dict(stride=config.stride, padding=config.padding, groups=config.groups)
    _, cache = conv2d_forward(x, w, **kwargs)
    exact = conv2d_input_grad(upstream, w, cache)
    assert_fd(exact, fd_grad(lambda: conv2d_forward(x, w, **kwargs)[0], upstream, x))
    np.testing.assert_allclose(conv2d_input_grad(upstream, 2 * w, cache), 2 * exact, rtol=1e-14)
    other = np.random.default_rng(3).standard_normal(w.shape)
    numeric = fd_grad(lambda: conv2d_forward(x, other, **kwargs)[0], upstream, x)
    assert_fd(conv2d_input_grad(upstream, other, cache), numeric)


# -- max-pooling -----------------------------------------------------------------------

POOL_CONFIGS = [
    # (N, C, H, W), kernel, stride
    ((2, 3, 6, 8), (2, 2), (2, 2)),
    ((2, 2, 7, 9), (3, 3), (2, 2)),  # overlapping windows
    ((1, 3, 8, 7), (3, 3), (3, 3)),  # sizes not divisible: uncovered rows/columns
    ((2, 2, 7, 6), (2, 3), (1, 2)),  # non-square window and stride, overlapping
    ((1, 2, 5, 9), (1, 2), (3, 2)),  # stride > kernel: gaps between windows
]


@pytest.mark.parametrize(("shape", "kernel", "stride"), POOL_CONFIGS, ids=str)
def test_max_pool2d_gradient_matches_finite_differences(shape, kernel, stride) -> None:
    """Routing each window's gradient to its maximum is the derivative of max-pooling
    (tie-free inputs, so the max is differentiable)."""
    rng = np.random.default_rng(4)
    x = tie_free(rng, shape)
    out, cache = max_pool2d_forward(x, kernel, stride)
    upstream = rng.standard_normal(out.shape)
    grad = max_pool2d_backward(upstream, cache)
    numeric = fd_grad(lambda: max_pool2d_forward(x, kernel, stride)[0], upstream, x)
    assert_fd(grad, numeric)


# -- dense and flatten -----------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_dense_gradients_match_finite_differences(bias: bool, batch: int) -> None:
    """dense's input, weight and bias gradients are the derivatives of ``x @ W.T + b``
    (one sample and several)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((batch, 7))
    w = rng.standard_normal((5, 7))
    b = rng.standard_normal(5) if bias else None
    out, cache = dense_forward(x, w, b)
    upstream = rng.standard_normal(out.shape)
    gx, gw, gb = dense_backward(upstream, w, cache, has_bias=bias)

    def forward() -> np.ndarray:
        return dense_forward(x, w, b)[0]

    assert_fd(gx, fd_grad(forward, upstream, x), "input grad")
    assert_fd(gw, fd_grad(forward, upstream, w), "weight grad")
    if bias:
        assert_fd(gb, fd_grad(forward, upstream, b), "bias grad")
    else:
        assert gb is None


def test_dense_input_grad_uses_its_weight_argument() -> None:
    """dense_input_grad sends the gradient back through the matrix it is given."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 6))
    w, other = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    upstream = rng.standard_normal((3, 4))
    exact = dense_input_grad(upstream, w)
    assert_fd(exact, fd_grad(lambda: dense_forward(x, w)[0], upstream, x))
    np.testing.assert_allclose(dense_input_grad(upstream, 2 * w), 2 * exact, rtol=1e-14)
    assert_fd(dense_input_grad(upstream, other), fd_grad(lambda: dense_forward(x, other)[0],
                                                          upstream, x))


def test_flatten_gradient_matches_finite_differences() -> None:
    """flatten's backward (a reshape back) is the derivative of its forward."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 2, 4, 5))
    out = flatten_forward(x, 3)
    assert out.shape == (3, 40)
    upstream = rng.standard_normal(out.shape)
    assert_fd(flatten_backward(upstream, x.shape), fd_grad(lambda: flatten_forward(x, 3),
                                                            upstream, x))


# -- activations -----------------------------------------------------------------------

ACTIVATIONS = ["identity", "relu", "leaky_relu", "leaky_relu:0.2", "tanh", "arctan", "sigmoid"]


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_gradient_matches_finite_differences(name: str) -> None:
    """Each activation's derivative is the derivative of its forward (inputs |z| > 1e-3)."""
    rng = np.random.default_rng(8)
    z = away_from_zero(rng, (3, 4, 5)) * 2
    activation = get_activation(name)
    y, cache = activation_forward(z, activation)
    upstream = rng.standard_normal(y.shape)
    grad = activation_backward(upstream, cache, activation)
    assert_fd(grad, fd_grad(lambda: activation_forward(z, activation)[0], upstream, z))


def test_every_activation_is_covered() -> None:
    """The list above names every activation handprop has."""
    from handprop.core.ops import ACTIVATION_NAMES

    assert set(ACTIVATION_NAMES) <= {name.partition(":")[0] for name in ACTIVATIONS}


PER_CHANNEL = ["relu", "arctan", "tanh", "leaky_relu:0.2", "sigmoid", "identity", "relu"]


@pytest.mark.parametrize(
    ("names", "shape"),
    [
        (PER_CHANNEL, (2, 7, 3, 4)),
        (PER_CHANNEL, (5, 7)),
        (["identity", "relu", "tanh"], (2, 3, 2, 2)),  # identity first: forward copies
        (["arctan", "arctan"], (3, 2)),  # one activation only
    ],
    ids=["maps", "vectors", "identity_first_maps", "single_vectors"],
)
def test_per_channel_activation_matches_finite_differences(names, shape) -> None:
    """The per-channel activation applies channel c's function to channel c (forward)
    and its backward is the derivative of that forward, for (C,H,W) and (C,) samples."""
    rng = np.random.default_rng(9)
    z = away_from_zero(rng, shape) * 2
    z_before = z.copy()
    plan = channel_plan(names, len(shape) - 1)
    y, cache = per_channel_forward(z, plan)
    np.testing.assert_array_equal(z, z_before)  # the input is left alone
    for c, name in enumerate(names):
        expected = get_activation(name).forward(z[:, c])
        np.testing.assert_array_equal(y[:, c], expected)
    upstream = rng.standard_normal(y.shape)
    grad = per_channel_backward(upstream, cache, plan)
    assert_fd(grad, fd_grad(lambda: per_channel_forward(z, plan)[0], upstream, z))


# -- losses ----------------------------------------------------------------------------


def _loss_cases():
    """(id, loss function, prediction, target) for every loss and target kind."""
    rng = np.random.default_rng(10)
    n, k = 4, 5
    logits = rng.standard_normal((n, k)) * 2
    prob = rng.uniform(0.05, 0.95, (n, k))
    soft = rng.dirichlet(np.ones(k), size=n)
    cases = []
    for reduction in ("sum", "mean"):
        cases += [
            (f"l2-{reduction}", l2_loss, reduction, logits, rng.standard_normal((n, k))),
            (f"bce-hard-{reduction}", bce_loss, reduction, prob,
             rng.integers(0, 2, (n, k)).astype(float)),
            (f"bce-soft-{reduction}", bce_loss, reduction, prob, rng.uniform(0, 1, (n, k))),
            (f"softmax_ce-labels-{reduction}", softmax_cross_entropy, reduction, logits,
             rng.integers(0, k, n)),
            (f"softmax_ce-probs-{reduction}", softmax_cross_entropy, reduction, logits, soft),
        ]
    return cases


LOSS_CASES = _loss_cases()


@pytest.mark.parametrize(
    ("loss", "reduction", "pred", "target"),
    [case[1:] for case in LOSS_CASES],
    ids=[case[0] for case in LOSS_CASES],
)
def test_loss_gradient_matches_finite_differences(loss, reduction, pred, target) -> None:
    """Each loss's gradient is the derivative of its value with respect to the prediction."""
    pred = pred.copy()
    upstream = np.random.default_rng(11).standard_normal()
    value, grad = loss(pred, target, reduction)
    assert value.shape == ()
    numeric = numerical_grad(lambda: upstream * float(loss(pred, target, reduction)[0]), pred)
    assert_fd(upstream * grad, numeric)


@pytest.mark.parametrize(
    ("loss", "reduction", "pred", "target"),
    [case[1:] for case in LOSS_CASES],
    ids=[case[0] for case in LOSS_CASES],
)
def test_loss_with_replicas_matches_finite_differences(loss, reduction, pred, target) -> None:
    """With a replica axis a loss gives one value per replica, and its gradient is the
    derivative of each replica's own value (contracted with a random vector)."""
    rng = np.random.default_rng(12)
    preds = np.stack([pred, pred[::-1] * 0.5 + 0.25, np.roll(pred, 1, axis=-1)])
    targets = np.stack([target, target[::-1], target])
    upstream = rng.standard_normal(3)
    value, grad = loss(preds, targets, reduction)
    assert value.shape == (3,)
    for r in range(3):
        alone_value, alone_grad = loss(preds[r], targets[r], reduction)
        np.testing.assert_allclose(value[r], alone_value, rtol=1e-13)
        np.testing.assert_allclose(grad[r], alone_grad, rtol=1e-13, atol=1e-15)
    numeric = numerical_grad(lambda: float(upstream @ loss(preds, targets, reduction)[0]), preds)
    assert_fd(upstream[:, None, None] * grad, numeric)


# -- whole networks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "input_shape", "batch", "max_entries"),
    [
        (seed_net, (1, 8, 8), 3, None),
        (seed_as_run, (1, 8, 8), 3, None),
        (small_cnn, (1, 8, 8), 3, 64),
        (lenet, (1, 28, 28), 2, 48),
        (mixed_net, (3, 11, 9), 3, None),
    ],
    ids=["seed_net", "seed_as_run", "small_cnn", "lenet", "mixed_net"],
)
def test_network_gradients_match_finite_differences(build, input_shape, batch, max_entries):
    """Network.backward (the chain rule through every layer) gives every parameter's
    gradient, checked with handprop.core.gradcheck.check_network."""
    net = build().init(seed=13)
    rng = np.random.default_rng(14)
    x = rng.standard_normal((batch, *input_shape))
    results = check_network(net, x, rng, max_entries=max_entries)
    assert [r.name for r in results] == list(net.params)
    for result in results:
        assert result.checked == min(result.size, max_entries or result.size)
        assert result.rel_error <= FD_TOL, result


# -- the replica axis ------------------------------------------------------------------

R = 3


@pytest.mark.parametrize("batch", [1, 2])
def test_conv2d_with_replicas_equals_separate_convolutions(batch: int) -> None:
    """A conv with a leading replica axis computes R independent convolutions: output and
    every gradient equal the stacked single-replica results, and match FD."""
    config = ConvConfig(batch, 4, 6, 7, 6, (3, 2), (2, 1), (1, 2), 2, True)
    rng = np.random.default_rng(15)
    x = rng.standard_normal((R, *config.input_shape()))
    w = rng.standard_normal((R, *config.weight_shape()))
    b = rng.standard_normal((R, config.out_channels))
    kwargs = dict(stride=config.stride, padding=config.padding, groups=config.groups)
    out, cache = conv2d_forward(x, w, b, **kwargs)
    upstream = rng.standard_normal(out.shape)
    grads = conv2d_backward(upstream, w, cache, has_bias=True)
    alone = []
    for r in range(R):
        out_r, cache_r = conv2d_forward(x[r], w[r], b[r], **kwargs)
        alone.append((out_r, *conv2d_backward(upstream[r], w[r], cache_r, has_bias=True)))
    stacked = [np.stack([single[k] for single in alone]) for k in range(4)]
    for got, name, expected in zip((out, *grads), ("out", "dx", "dw", "db"), stacked,
                                   strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12, err_msg=name)

    def forward() -> np.ndarray:
        return conv2d_forward(x, w, b, **kwargs)[0]

    for array, grad in zip((x, w, b), grads, strict=True):
        assert_fd(grad, fd_grad(forward, upstream, array))


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_dense_with_replicas_equals_separate_layers(bias: bool, batch: int) -> None:
    """A dense layer with a replica axis computes R independent layers (weight gradient
    summed over the batch only), and matches FD."""
    rng = np.random.default_rng(16)
    x = rng.standard_normal((R, batch, 6))
    w = rng.standard_normal((R, 5, 6))
    b = rng.standard_normal((R, 5)) if bias else None
    out, cache = dense_forward(x, w, b)
    upstream = rng.standard_normal(out.shape)
    grads = dense_backward(upstream, w, cache, has_bias=bias)
    for r in range(R):
        out_r, cache_r = dense_forward(x[r], w[r], None if b is None else b[r])
        expected = (out_r, *dense_backward(upstream[r], w[r], cache_r, has_bias=bias))
        for got, want in zip((out, *grads), expected, strict=True):
            if want is None:
                assert got is None
            else:
                np.testing.assert_allclose(got[r], want, rtol=0, atol=1e-12)

    def forward() -> np.ndarray:
        return dense_forward(x, w, b)[0]

    arrays = (x, w, b) if bias else (x, w)
    for array, grad in zip(arrays, grads, strict=False):
        assert_fd(grad, fd_grad(forward, upstream, array))


@pytest.mark.parametrize(("kernel", "stride"), [((2, 2), (2, 2)), ((3, 3), (2, 2))],
                         ids=["2x2", "3x3s2"])
def test_max_pool2d_with_replicas_equals_separate_pools(kernel, stride) -> None:
    """Max-pooling with a replica axis equals R separate pools and matches FD."""
    rng = np.random.default_rng(17)
    x = tie_free(rng, (R, 2, 3, 7, 8))
    out, cache = max_pool2d_forward(x, kernel, stride)
    upstream = rng.standard_normal(out.shape)
    grad = max_pool2d_backward(upstream, cache)
    for r in range(R):
        out_r, cache_r = max_pool2d_forward(x[r], kernel, stride)
        np.testing.assert_array_equal(out[r], out_r)
        np.testing.assert_array_equal(grad[r], max_pool2d_backward(upstream[r], cache_r))
    assert_fd(grad, fd_grad(lambda: max_pool2d_forward(x, kernel, stride)[0], upstream, x))


def test_network_with_replicas_equals_separate_networks() -> None:
    """seed_net with replicas [3, 4]: outputs and gradients of replica r equal those of
    the network initialised with seed r alone, fed replica r's inputs."""
    seeds = [3, 4]
    net = seed_net().init(replicas=seeds)
    rng = np.random.default_rng(18)
    x = rng.standard_normal((2, 5, 1, 8, 8))
    out, tape = net.forward(x)
    upstream = rng.standard_normal(out.shape)
    grads = net.backward(tape, upstream)
    for r, seed in enumerate(seeds):
        alone = seed_net().init(seed=seed)
        out_r, tape_r = alone.forward(x[r])
        grads_r = alone.backward(tape_r, upstream[r])
        np.testing.assert_allclose(out[r], out_r, rtol=0, atol=1e-12)
        np.testing.assert_allclose(grads.flat[r], grads_r.flat, rtol=0, atol=1e-12)
