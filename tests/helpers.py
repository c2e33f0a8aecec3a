"""Shared helpers of the exactness tests: input makers, tolerances, finite differences."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from handprop import Activation, Conv2d, Dense, Flatten, MaxPool2d, Network, PerChannelActivation
from handprop.gradcheck import numerical_grad, rel_error

FD_TOL = 1e-6
"""Largest accepted ``rel_error`` between a hand-written gradient and central differences."""

PARITY_TOL = 1e-10
"""Largest accepted ``max|a - b| / max(1, max|b|)`` against PyTorch in float64."""


def tie_free(rng: np.random.Generator, shape: tuple[int, ...], step: float = 0.01) -> np.ndarray:
    """Distinct values in random order, at least ``step`` apart (no max-pool ties, and a
    finite-difference nudge of 1e-6 can never change a window's winner)."""
    size = int(np.prod(shape))
    values = (rng.permutation(size) - (size - 1) / 2) * step
    return values.reshape(shape).astype(np.float64)


def away_from_zero(
    rng: np.random.Generator, shape: tuple[int, ...], margin: float = 1e-3
) -> np.ndarray:
    """Standard normal values with ``|z| > margin`` (clear of the ReLU kink)."""
    z = rng.standard_normal(shape)
    sign = np.where(z < 0, -1.0, 1.0)
    return np.where(np.abs(z) < margin, sign * (margin + np.abs(z)), z)


def scale_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max|a - b| / max(1, max|b|)``: the error measure of the PyTorch parity tests."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if actual.size == 0:
        return 0.0
    return float(np.abs(actual - expected).max() / max(1.0, np.abs(expected).max()))


def assert_parity(actual: np.ndarray, expected: np.ndarray, what: str = "") -> None:
    """Assert ``scale_error(actual, expected) <= PARITY_TOL``."""
    err = scale_error(actual, expected)
    assert err <= PARITY_TOL, f"{what}: error {err:.3g} > {PARITY_TOL:g}"


def fd_grad(
    forward: Callable[[], np.ndarray], upstream: np.ndarray, array: np.ndarray, eps: float = 1e-6
) -> np.ndarray:
    """Central differences of ``sum(upstream * forward())`` with respect to ``array``."""
    return numerical_grad(lambda: float(np.sum(upstream * forward())), array, eps)


def assert_fd(analytic: np.ndarray, numeric: np.ndarray, what: str = "") -> None:
    """Assert ``rel_error(analytic, numeric) <= FD_TOL`` and that the gradient is not zero."""
    assert analytic.shape == numeric.shape, (what, analytic.shape, numeric.shape)
    assert np.abs(numeric).max() > 0, f"{what}: the numerical gradient is all zero"
    err = rel_error(analytic, numeric)
    assert err <= FD_TOL, f"{what}: relative error {err:.3g} > {FD_TOL:g}"


class ConvConfig(NamedTuple):
    """One grouped convolution problem (per-axis kernel, stride and padding)."""

    batch: int
    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int
    bias: bool

    def out_hw(self) -> tuple[int, int]:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        return (self.height + 2 * ph - kh) // sh + 1, (self.width + 2 * pw - kw) // sw + 1

    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel)

    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.in_channels, self.height, self.width)


def random_conv_configs(count: int, seed: int) -> list[ConvConfig]:
    """``count`` random conv problems: channels 1-6, groups dividing both (often > 1),
    kernels 1-5 (sometimes non-square), stride 1-2, padding 0-2, batch 1-4."""
    rng = np.random.default_rng(seed)
    configs = []
    while len(configs) < count:
        groups = int(rng.choice([1, 1, 2, 2, 3, 3, 6]))
        per_group = 6 // groups
        in_channels = groups * int(rng.integers(1, per_group + 1))
        out_channels = groups * int(rng.integers(1, per_group + 1))
        kh = int(rng.integers(1, 6))
        kw = kh if rng.random() < 0.6 else int(rng.integers(1, 6))
        sh = int(rng.integers(1, 3))
        sw = sh if rng.random() < 0.7 else int(rng.integers(1, 3))
        ph = int(rng.integers(0, 3))
        pw = ph if rng.random() < 0.7 else int(rng.integers(0, 3))
        # Smallest input that fits, plus up to 6 more rows/columns.
        height = max(1, kh - 2 * ph) + int(rng.integers(0, 7))
        width = max(1, kw - 2 * pw) + int(rng.integers(0, 7))
        config = ConvConfig(
            batch=int(rng.integers(1, 5)),
            in_channels=in_channels,
            out_channels=out_channels,
            height=height,
            width=width,
            kernel=(kh, kw),
            stride=(sh, sw),
            padding=(ph, pw),
            groups=groups,
            bias=bool(rng.random() < 0.5),
        )
        assert min(config.out_hw()) >= 1
        configs.append(config)
    return configs


def conv_id(config: ConvConfig) -> str:
    """A short test id for a conv config."""
    (kh, kw), (sh, sw), (ph, pw) = config.kernel, config.stride, config.padding
    return (
        f"n{config.batch}c{config.in_channels}o{config.out_channels}"
        f"_{config.height}x{config.width}_k{kh}x{kw}_s{sh}x{sw}_p{ph}x{pw}"
        f"_g{config.groups}{'_b' if config.bias else ''}"
    )


def mixed_net() -> Network:
    """A network exercising what the presets do not: a parameter-free layer first,
    non-square kernels, strides and paddings, groups=3 with bias, overlapping pooling,
    a 1x1 grouped conv, leaky ReLU, per-channel activations on maps and on vectors."""
    return Network(
        [
            Activation("tanh", name="pre"),
            Conv2d(6, (3, 2), stride=(2, 1), padding=(1, 2), groups=3, name="c1"),
            PerChannelActivation(
                ["relu", "arctan", "tanh", "leaky_relu:0.2", "sigmoid", "identity"], name="pc1"
            ),
            MaxPool2d(3, stride=2, name="p1"),
            Conv2d(4, 1, groups=2, bias=False, name="c2"),
            Activation("leaky_relu", name="a2"),
            Flatten(name="fl"),
            Dense(5, name="d1"),
            PerChannelActivation(["tanh", "relu", "arctan", "sigmoid", "identity"], name="pc2"),
            Dense(3, bias=False, name="d2"),
        ],
        input_shape=(3, 11, 9),
        init="glorot",
        name="mixed",
    )
