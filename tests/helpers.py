"""Shared helpers of the exactness tests: input makers, tolerances, finite differences."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from handprop import Activation, Conv2d, Dense, Flatten, MaxPool2d, Network, PerChannelActivation
from handprop.core.gradcheck import numerical_grad, rel_error

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


def bn_cnn(classes: int = 10) -> Network:
    """small_cnn with batch norm after each conv (conv -> batch_norm2d -> relu -> pool),
    for 8x8 inputs: the network the batch-norm rule and training tests use. The convs
    have no bias: batch norm subtracts the mean, so a bias in front of it has gradient 0
    (all-zero gradients leave finite differences nothing to compare)."""
    from handprop.core.ops.batchnorm import BatchNorm2d

    return Network(
        [
            Conv2d(8, 3, padding=1, bias=False, name="conv1"),
            BatchNorm2d(name="bn1"),
            Activation("relu", name="act1"),
            MaxPool2d(2, name="pool1"),
            Conv2d(16, 3, padding=1, bias=False, name="conv2"),
            BatchNorm2d(name="bn2"),
            Activation("relu", name="act2"),
            MaxPool2d(2, name="pool2"),
            Flatten(name="flatten"),
            Dense(64, name="fc3"),
            Activation("relu", name="act3"),
            Dense(classes, name="fc4"),
        ],
        input_shape=(1, 8, 8),
        loss="softmax_ce",
        init="torch",
        name="bn_cnn",
    )


# -- rule tests: an independent loop-by-loop reference of the seed net -------------------
#
# Written like the article's code: one image, every map handled on its own, explicit 2-D
# loops, max-pool masks built with ``==``, upsampling with ``repeat``. Nothing here calls
# handprop, so the rule tests compare handprop against an independent computation.

REF_ACT = {
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(np.float64)),
    "arctan": (np.arctan, lambda z: 1.0 / (1.0 + z * z)),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "sigmoid": (lambda z: 1.0 / (1.0 + np.exp(-z)),
                lambda z: np.exp(-z) / (1.0 + np.exp(-z)) ** 2),
}
"""name -> (f, f') of the activations the seed net uses."""

SEED_ACT1 = ("relu", "arctan")
SEED_ACT2 = ("arctan", "relu", "arctan", "tanh")


def ref_rot180(m: np.ndarray) -> np.ndarray:
    """One (H, W) map rotated by 180 degrees."""
    return m[::-1, ::-1]


def ref_correlate_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'valid' 2-D cross-correlation, explicit loops: out[y, x] = sum k[i, j] img[y+i, x+j]."""
    kh, kw = kernel.shape
    out = np.zeros((image.shape[0] - kh + 1, image.shape[1] - kw + 1))
    for y in range(out.shape[0]):
        for x in range(out.shape[1]):
            total = 0.0
            for i in range(kh):
                for j in range(kw):
                    total += image[y + i, x + j] * kernel[i, j]
            out[y, x] = total
    return out


def ref_convolve_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'valid' 2-D true convolution: the cross-correlation with the kernel flipped."""
    return ref_correlate_valid(image, ref_rot180(kernel))


def ref_input_grad(delta: np.ndarray, kernel: np.ndarray, pad: int = 1) -> np.ndarray:
    """Exact gradient w.r.t. the input of ``ref_correlate_valid(np.pad(x, pad), kernel)``
    given ``delta`` at its output: every tap's share added back where it was read."""
    kh, kw = kernel.shape
    height, width = delta.shape[0] + kh - 1 - 2 * pad, delta.shape[1] + kw - 1 - 2 * pad
    out = np.zeros((height, width))
    for y in range(delta.shape[0]):
        for x in range(delta.shape[1]):
            for i in range(kh):
                for j in range(kw):
                    r, c = y + i - pad, x + j - pad
                    if 0 <= r < height and 0 <= c < width:
                        out[r, c] += kernel[i, j] * delta[y, x]
    return out


def ref_maxpool(a: np.ndarray) -> np.ndarray:
    """2x2 max-pool of one map, explicit loops."""
    out = np.zeros((a.shape[0] // 2, a.shape[1] // 2))
    for y in range(out.shape[0]):
        for x in range(out.shape[1]):
            out[y, x] = max(a[2 * y, 2 * x], a[2 * y, 2 * x + 1],
                            a[2 * y + 1, 2 * x], a[2 * y + 1, 2 * x + 1])
    return out


def ref_up(g: np.ndarray) -> np.ndarray:
    """up(G): every entry of a 2x2 window gets its window's value."""
    return g.repeat(2, 0).repeat(2, 1)


def ref_mask_ties(a: np.ndarray) -> np.ndarray:
    """The article's mask: 1 at every entry equal to its window's maximum (ties included)."""
    return (a == ref_up(ref_maxpool(a))).astype(np.float64)


def ref_mask_first(a: np.ndarray) -> np.ndarray:
    """Exact routing: 1 at the first maximum of each window in row-major order."""
    mask = np.zeros_like(a, dtype=np.float64)
    for y in range(a.shape[0] // 2):
        for x in range(a.shape[1] // 2):
            best = max(a[2 * y + i, 2 * x + j] for i in range(2) for j in range(2))
            for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
                if a[2 * y + i, 2 * x + j] == best:
                    mask[2 * y + i, 2 * x + j] = 1.0
                    break
    return mask


def ref_seed_forward(p: dict[str, np.ndarray], image: np.ndarray) -> dict:
    """The seed net on one 8x8 image, map by map; ``p`` holds its weights (no replica axis).

    Returns every intermediate: lists of maps ``z1, a1, p1`` (2 each), ``z2, a2, p2``
    (4 each), the vectors ``f, h3, a3, h4, a4, h5, a5``."""
    s: dict = {"x": image}
    w1, w2 = p["conv1.weight"], p["conv2.weight"]
    s["z1"] = [ref_correlate_valid(np.pad(image, 1), w1[c, 0]) for c in range(2)]
    s["a1"] = [REF_ACT[SEED_ACT1[c]][0](s["z1"][c]) for c in range(2)]
    s["p1"] = [ref_maxpool(a) for a in s["a1"]]
    # groups=2: maps a, b of layer 2 read map a of layer 1; maps c, d read map b.
    s["z2"] = [ref_correlate_valid(np.pad(s["p1"][o // 2], 1), w2[o, 0]) for o in range(4)]
    s["a2"] = [REF_ACT[SEED_ACT2[o]][0](s["z2"][o]) for o in range(4)]
    s["p2"] = [ref_maxpool(a) for a in s["a2"]]
    s["f"] = np.concatenate([m.ravel() for m in s["p2"]])
    s["h3"] = p["fc3.weight"] @ s["f"]
    s["a3"] = np.arctan(s["h3"])
    s["h4"] = p["fc4.weight"] @ s["a3"]
    s["a4"] = np.tanh(s["h4"])
    s["h5"] = p["fc5.weight"] @ s["a4"]
    s["a5"] = REF_ACT["sigmoid"][0](s["h5"])
    return s


def layer_inputs(net: Network, x: np.ndarray) -> list[np.ndarray]:
    """The input of every layer of ``net`` on ``x``, by running the layers one by one."""
    inputs = []
    for layer in net.layers:
        inputs.append(x)
        params = {local: net.params[f"{layer.name}.{local}"] for local in layer.param_shapes()}
        state = {local: net.buffers[f"{layer.name}.{local}"].copy()  # leave the net's alone
                 for local in layer.state_shapes()}
        x, _ = layer.forward({**params, **state}, x)
    return inputs


def spy(rule):
    """Wrap ``rule.layer_backward`` to record, per layer index, ``(out_grad arriving,
    input gradient sent down, parameter gradients)``. Returns the (live) record dict."""
    record: dict[int, tuple] = {}
    inner = rule.layer_backward

    def wrapped(step):
        out_grad = step.out_grad  # the step object is reused: read before calling on
        grad_in, grads = inner(step)
        record[step.index] = (out_grad, grad_in, grads)
        return grad_in, grads

    rule.layer_backward = wrapped
    return record


def run_cli(*argv) -> tuple[int, str, str]:
    """``handprop ARGV`` in this process: (exit status, stdout, stderr)."""
    import contextlib
    import io

    from handprop.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def load_json(path) -> dict:
    import json
    from pathlib import Path

    return json.loads(Path(path).read_text())
