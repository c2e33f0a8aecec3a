"""Network construction and API: shape errors that name the culprit, parameters as views
into one flat buffer, seeding, replicas, the backward pass's layout, and float32."""

from __future__ import annotations

import numpy as np
import pytest

from handprop import (
    Activation,
    ConfigError,
    Conv2d,
    Dense,
    Flatten,
    MaxPool2d,
    Network,
    PerChannelActivation,
    ShapeError,
    lenet,
    seed_net,
    small_cnn,
)


def _x(batch: int = 3, shape=(1, 8, 8), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *shape))


# -- construction ----------------------------------------------------------------------


def test_layer_names_must_be_unique() -> None:
    """Two layers with one name are refused, and the message names the repeated name."""
    with pytest.raises(ConfigError, match="fc"):
        Network([Flatten(name="flat"), Dense(4, name="fc"), Dense(2, name="fc")], (1, 3, 3))


def test_preset_parameter_names_are_unique_and_qualified() -> None:
    """Preset parameters are called '<layer>.<param>', one per array."""
    net = lenet()
    assert list(net.param_shapes) == [
        f"{layer}.{p}" for layer in ("conv1", "conv2", "fc3", "fc4", "fc5")
        for p in ("weight", "bias")
    ]
    assert net.param_shapes["fc3.weight"] == (120, 400)
    assert seed_net().param_shapes["conv2.weight"] == (4, 1, 3, 3)


def test_dense_in_features_mismatch_names_layer_and_shapes() -> None:
    """A Dense whose in_features do not match the layer below raises ShapeError naming
    the layer, its expected size and the shape it was given."""
    with pytest.raises(ShapeError) as info:
        Network([Flatten(name="flat"), Dense(3, in_features=10, name="fc_odd")], (1, 4, 4))
    message = str(info.value)
    assert "fc_odd" in message and "10" in message and "(16,)" in message


def test_dense_on_maps_asks_for_flatten() -> None:
    """A Dense straight on (C, H, W) maps raises ShapeError naming the layer."""
    with pytest.raises(ShapeError, match="fc1"):
        Network([Dense(3, name="fc1")], (1, 4, 4))


def test_conv_kernel_too_big_names_layer() -> None:
    """A conv kernel larger than its (padded) input raises ShapeError naming the layer and
    the input shape."""
    with pytest.raises(ShapeError) as info:
        Network([Conv2d(2, 3, name="conv_a"), Conv2d(2, 5, name="conv_big")], (1, 6, 6))
    message = str(info.value)
    assert "conv_big" in message and "(2, 4, 4)" in message
    Network([Conv2d(2, 5, padding=1, name="conv_ok")], (1, 3, 3))  # fits with padding


def test_pool_window_too_big_names_layer() -> None:
    """A pooling window larger than its input raises ShapeError naming the layer."""
    with pytest.raises(ShapeError, match="pool_big"):
        Network([MaxPool2d(3, name="pool_big")], (1, 2, 2))


@pytest.mark.parametrize(("in_channels", "out_channels"), [(4, 3), (3, 4)])
def test_groups_must_divide_channels(in_channels: int, out_channels: int) -> None:
    """groups must divide both the input and the output channels."""
    with pytest.raises(ShapeError, match="conv_g"):
        Network([Conv2d(out_channels, 3, groups=2, name="conv_g")], (in_channels, 5, 5))


def test_per_channel_activation_count_must_match_channels() -> None:
    """A per-channel activation with the wrong number of names raises ShapeError naming
    the layer, for maps and for vectors."""
    with pytest.raises(ShapeError, match="pc"):
        Network([PerChannelActivation(["relu", "tanh"], name="pc")], (3, 4, 4))
    with pytest.raises(ShapeError, match="pc"):
        Network([Flatten(), PerChannelActivation(["relu"] * 5, name="pc")], (1, 2, 2))
    Network([Flatten(), PerChannelActivation(["relu"] * 4, name="pc")], (1, 2, 2))


def test_unknown_activation_is_refused() -> None:
    """An unknown activation name raises ConfigError at construction."""
    with pytest.raises(ConfigError, match="swish"):
        Activation("swish")
    with pytest.raises(ConfigError, match="swish"):
        PerChannelActivation(["relu", "swish"])


# -- parameters ------------------------------------------------------------------------


def test_params_are_views_into_flat() -> None:
    """net.params are views into net.flat: writing a parameter changes the buffer and the
    forward output, and writing the buffer changes the parameters."""
    net = seed_net().init(seed=1)
    x = _x()
    before = net.forward(x)[0].copy()
    for value in net.params.values():
        assert np.shares_memory(value, net.flat)
    assert sum(v.size for v in net.params.values()) == net.flat.size == net.num_params
    net.params["fc5.weight"][...] = 0.0
    assert np.all(net.forward(x)[0] == 0.5)  # sigmoid(0)
    assert not np.allclose(before, 0.5)
    net.flat[...] = 0.0
    assert all(np.all(v == 0) for v in net.params.values())


def test_set_params_roundtrip() -> None:
    """set_params(get_params()) of another network makes the two compute the same."""
    a, b = seed_net().init(seed=1), seed_net().init(seed=2)
    x = _x()
    assert not np.allclose(a.forward(x)[0], b.forward(x)[0])
    b.set_params(a.get_params())
    np.testing.assert_array_equal(a.flat, b.flat)
    np.testing.assert_array_equal(a.forward(x)[0], b.forward(x)[0])


def test_get_params_returns_copies() -> None:
    """get_params returns copies: changing them leaves the network alone."""
    net = seed_net().init(seed=1)
    params = net.get_params()
    params["conv1.weight"][...] = 7.0
    assert not np.any(net.params["conv1.weight"] == 7.0)


def test_set_params_checks_names_shapes_and_values() -> None:
    """set_params refuses unknown names, missing names (when strict), wrong shapes and
    NaN or inf, each with a ShapeError naming the parameter."""
    net = seed_net().init(seed=1)
    good = net.get_params()
    with pytest.raises(ShapeError, match="conv9.weight"):
        net.set_params({**good, "conv9.weight": np.zeros(3)})
    with pytest.raises(ShapeError, match="fc5.weight"):
        net.set_params({k: v for k, v in good.items() if k != "fc5.weight"})
    net.set_params({"fc5.weight": good["fc5.weight"]}, strict=False)
    with pytest.raises(ShapeError, match="conv1.weight"):
        net.set_params({**good, "conv1.weight": np.zeros((2, 1, 3, 2))})
    for bad in (np.nan, np.inf):
        values = {**good, "conv2.weight": np.full(good["conv2.weight"].shape, bad)}
        with pytest.raises(ShapeError, match="conv2.weight"):
            net.set_params(values)
    assert np.all(np.isfinite(net.flat))


def test_failed_set_params_leaves_parameters_unchanged() -> None:
    """A set_params call that is refused changes nothing (all checks before any write)."""
    net = seed_net().init(seed=1)
    before = net.flat.copy()
    values = net.get_params()
    values["conv1.weight"] = values["conv1.weight"] + 1.0  # valid, comes first
    values["fc5.weight"] = np.full(values["fc5.weight"].shape, np.nan)  # invalid, comes last
    with pytest.raises(ShapeError):
        net.set_params(values)
    np.testing.assert_array_equal(net.flat, before)


def test_init_is_reproducible() -> None:
    """init with the same seed gives bit-identical parameters; other seeds differ."""
    a = seed_net().init(seed=7).flat.copy()
    b = seed_net().init(seed=7).flat.copy()
    c = seed_net().init(seed=8).flat.copy()
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)
    net = lenet().init(seed=3)
    first = net.flat.copy()
    net.init(seed=3)  # re-initialising the same network too
    assert first.tobytes() == net.flat.tobytes()


def test_init_replicas_equal_single_seeds() -> None:
    """init(replicas=[3, 4]) gives replica r exactly the parameters of init(seed=s_r)."""
    seeds = [3, 4]
    net = small_cnn().init(replicas=seeds)
    assert net.flat.shape == (2, net.num_params)
    assert net.rep_shape == (2,)
    for r, seed in enumerate(seeds):
        alone = small_cnn().init(seed=seed)
        assert net.flat[r].tobytes() == alone.flat.tobytes()
        for name, value in alone.params.items():
            assert net.params[name].shape == (2, *value.shape)
            np.testing.assert_array_equal(net.params[name][r], value)


@pytest.mark.parametrize("scheme", ["normal", "he", "lecun", "glorot", "torch"])
def test_init_schemes_draw_finite_nonzero_weights(scheme: str) -> None:
    """Every init scheme fills every weight with finite, not-all-zero values."""
    net = lenet().init(seed=0, scheme=scheme)
    for name, value in net.params.items():
        assert np.all(np.isfinite(value)), name
        if name.endswith("weight"):
            assert np.any(value != 0), name


def test_forward_before_init_is_refused() -> None:
    """A network without parameters refuses to run, telling the user to call init()."""
    with pytest.raises(ConfigError, match="init"):
        seed_net().forward(_x())


# -- forward and backward --------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [(3, 1, 8, 7), (3, 2, 8, 8), (1, 8, 8), (2, 3, 1, 8, 8), (3, 64)],
    ids=["width", "channels", "no_batch", "extra_axis", "flat"],
)
def test_forward_rejects_wrong_input_shape(shape) -> None:
    """forward with an input that is not (N, *input_shape) raises ShapeError showing the
    expected and the given shape."""
    net = seed_net().init(seed=0)
    with pytest.raises(ShapeError) as info:
        net.forward(np.zeros(shape))
    assert str(shape) in str(info.value) and "'N', 1, 8, 8" in str(info.value)


def test_forward_leaves_input_alone_and_casts_integers() -> None:
    """forward does not modify its input, and integer inputs compute like floats."""
    net = seed_net().init(seed=0)
    x = np.random.default_rng(1).integers(-3, 4, (2, 1, 8, 8))
    x_before = x.copy()
    out = net.forward(x)[0]
    np.testing.assert_array_equal(x, x_before)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, net.forward(x.astype(np.float64))[0])


def test_backward_rejects_wrong_gradient_shape() -> None:
    """backward with an output gradient of the wrong shape raises ShapeError."""
    net = seed_net().init(seed=0)
    out, tape = net.forward(_x())
    with pytest.raises(ShapeError):
        net.backward(tape, np.ones((3, 2)))
    with pytest.raises(ShapeError):
        net.backward(tape[:-1], np.ones(out.shape))


@pytest.mark.parametrize("build", [seed_net, lenet, small_cnn], ids=["seed", "lenet", "small"])
def test_backward_gives_every_parameter_gradient_laid_out_like_flat(build) -> None:
    """backward returns one gradient per parameter, with the parameter's shape, and
    grads.flat is the same numbers laid out like net.flat."""
    net = build().init(seed=0)
    x = _x(2, net.input_shape)
    out, tape = net.forward(x)
    upstream = np.random.default_rng(1).standard_normal(out.shape)
    upstream_before = upstream.copy()
    grads = net.backward(tape, upstream)
    np.testing.assert_array_equal(upstream, upstream_before)
    assert list(grads) == list(net.params)
    assert grads.flat.shape == net.flat.shape
    for name, value in net.params.items():
        assert grads[name].shape == value.shape, name
        assert np.any(grads[name] != 0), name
    np.testing.assert_array_equal(
        grads.flat, np.concatenate([grads[name].ravel() for name in net.params])
    )
    for name, view in net.unflatten(grads.flat).items():
        np.testing.assert_array_equal(view, grads[name])


def test_backward_with_replicas_keeps_the_replica_axis() -> None:
    """With replicas every gradient gets the leading replica axis, like the parameters."""
    net = seed_net().init(replicas=[1, 2, 3])
    out, tape = net.forward(np.random.default_rng(0).standard_normal((3, 4, 1, 8, 8)))
    assert out.shape == (3, 4, 1)
    grads = net.backward(tape, np.ones(out.shape))
    assert grads.flat.shape == net.flat.shape
    for name, value in net.params.items():
        assert grads[name].shape == value.shape


def test_call_returns_output_and_backprop() -> None:
    """net(x) returns (out, backprop) with out == forward(x), and backprop(upstream) equals
    backward(tape, upstream)."""
    net = lenet().init(seed=0)
    x = _x(2, (1, 28, 28))
    out, backprop = net(x)
    out_fwd, tape = net.forward(x)
    np.testing.assert_array_equal(out, out_fwd)
    upstream = np.random.default_rng(1).standard_normal(out.shape)
    grads = backprop(upstream)
    expected = net.backward(tape, upstream)
    assert list(grads) == list(expected)
    np.testing.assert_array_equal(grads.flat, expected.flat)


def test_predict_in_chunks_equals_forward() -> None:
    """predict with a small batch_size gives the forward output."""
    net = small_cnn().init(seed=0)
    x = _x(11)
    np.testing.assert_allclose(net.predict(x, batch_size=4), net.forward(x)[0],
                               rtol=0, atol=1e-13)


def test_summary_mentions_every_layer() -> None:
    """summary() lists every layer by name and kind, and the parameter count."""
    for net in (seed_net(), lenet(), small_cnn()):
        text = net.summary()
        for layer in net.layers:
            assert layer.name in text and layer.kind in text
        assert str(net.num_params) in text


# -- float32 ---------------------------------------------------------------------------


@pytest.mark.parametrize("build", [seed_net, lenet, small_cnn], ids=["seed", "lenet", "small"])
def test_float32_matches_float64(build) -> None:
    """A float32 network gives float32 outputs and gradients (float64 inputs are cast),
    close (rtol 1e-4 of each array's scale) to the float64 network with the same seed."""
    net64 = build().init(seed=4)
    net32 = build().init(seed=4, dtype="float32")
    assert net32.flat.dtype == np.float32
    np.testing.assert_array_equal(net32.flat, net64.flat.astype(np.float32))
    x = _x(3, net64.input_shape, seed=5)
    out64, tape64 = net64.forward(x)
    out32, tape32 = net32.forward(x.astype(np.float32))
    assert out32.dtype == np.float32
    np.testing.assert_array_equal(net32.forward(x)[0], out32)  # float64 input is cast
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-4 * np.abs(out64).max())
    upstream = np.random.default_rng(6).standard_normal(out64.shape)
    grads64 = net64.backward(tape64, upstream)
    grads32 = net32.backward(tape32, upstream.astype(np.float32))
    assert grads32.flat.dtype == np.float32
    for name, g64 in grads64.items():
        assert grads32[name].dtype == np.float32, name
        np.testing.assert_allclose(grads32[name], g64, rtol=1e-4,
                                   atol=1e-4 * np.abs(g64).max(), err_msg=name)
