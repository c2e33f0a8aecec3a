"""avg_pool2d beyond the tables (test_layer_tables.py has its finite differences and
torch parity): a loop reference of the divisors, float32, and refused configurations."""

from __future__ import annotations

import numpy as np
import pytest

from handprop import ConfigError, Network, ShapeError
from handprop.core.ops.avgpool import AvgPool2d, avg_pool2d_backward, avg_pool2d_forward


def loop_avg_pool(x, kernel, stride, padding, count_include_pad):
    """One window at a time: the mean of its entries, padding counted as zeros or not."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    *lead, height, width = x.shape
    out_h, out_w = (height + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1
    out = np.zeros((*lead, out_h, out_w))
    for y in range(out_h):
        for x_ in range(out_w):
            rows = range(max(y * sh - ph, 0), min(y * sh - ph + kh, height))
            cols = range(max(x_ * sw - pw, 0), min(x_ * sw - pw + kw, width))
            total = x[..., rows.start:rows.stop, cols.start:cols.stop].sum(axis=(-2, -1))
            out[..., y, x_] = total / (kh * kw if count_include_pad else len(rows) * len(cols))
    return out


@pytest.mark.parametrize("count_include_pad", [True, False], ids=["include", "exclude"])
@pytest.mark.parametrize(("kernel", "stride", "padding"), [
    ((3, 3), (2, 2), (1, 1)), ((2, 3), (1, 2), (1, 1)), ((4, 4), (3, 1), (2, 0)),
], ids=str)
def test_avg_pool2d_equals_a_loop(kernel, stride, padding, count_include_pad) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 8))
    out, _ = avg_pool2d_forward(x, kernel, stride, padding, count_include_pad)
    np.testing.assert_allclose(out, loop_avg_pool(x, kernel, stride, padding,
                                                  count_include_pad), rtol=0, atol=1e-14)


def test_avg_pool2d_keeps_float32() -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32)
    out, cache = avg_pool2d_forward(x, 3, 2, 1, count_include_pad=False)
    assert out.dtype == np.float32
    assert avg_pool2d_backward(np.ones_like(out), cache).dtype == np.float32


def test_avg_pool2d_gradient_sums_to_the_upstream_sum_without_padding() -> None:
    """Without padding each window hands out exactly its gradient: the totals agree."""
    rng = np.random.default_rng(2)
    out, cache = avg_pool2d_forward(rng.standard_normal((2, 2, 9, 9)), 3, 2)
    upstream = rng.standard_normal(out.shape)
    assert np.isclose(avg_pool2d_backward(upstream, cache).sum(), upstream.sum())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"kernel_size": 3, "padding": 2}, "at most half the kernel"),
    ({"kernel_size": [2, 4], "padding": [1, 3]}, "at most half the kernel"),
    ({"kernel_size": 2, "count_include_pad": 1}, "count_include_pad must be true or false"),
    ({"kernel_size": 0}, "kernel_size must be >= 1"),
    ({"kernel_size": 2, "padding": -1}, "padding must be >= 0"),
])
def test_avg_pool2d_refuses_bad_arguments(kwargs, match) -> None:
    with pytest.raises(ConfigError, match=match):
        AvgPool2d(**kwargs)


def test_avg_pool2d_window_must_fit() -> None:
    with pytest.raises(ShapeError, match="does not fit input shape"):
        Network([AvgPool2d(5, padding=1, name="pool")], input_shape=(1, 2, 2))
    with pytest.raises(ShapeError, match=r"needs \(C, H, W\) inputs"):
        Network([AvgPool2d(2, name="pool")], input_shape=(4,))
