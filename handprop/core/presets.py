"""Ready-made networks: the article's ``seed`` net, a LeNet-5 and a small CNN for 8x8
digits. Presets register where they are defined (:func:`register_preset`), with the
training defaults the CLI and the estimator use for them; a new preset is a function
with that decorator.

``seed`` is the network the article describes (seed-spec section 2), written with
handprop's layers. Two things differ from the author's *code*:

* the code computes a true convolution (kernel flipped), handprop, like PyTorch, a
  cross-correlation. A flipped kernel is still a free kernel, so learning is
  unaffected; to compare weights with the author's code, flip them (``np.rot90(w, 2)``);
* the code's layer 2 applies conv1's second kernel W1b to all four channels (a defect:
  W2a..W2d never act in its forward pass). The article's figures come from that
  network; ``seed`` is the network its text describes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .article import ARTICLE
from .errors import ConfigError
from .network import Network
from .ops import Activation, Conv2d, Dense, Flatten, MaxPool2d, PerChannelActivation
from .ops.asrun import AsRunConv2d


@dataclass(frozen=True)
class Preset:
    """A named network builder and the training defaults that go with it.

    defaults : optimizer, lr, momentum, batch_size, epochs, and data (the dataset the
        preset is sized for, or None when the user must give one); optionally image_size,
        the (H, W) the network is built for, to which ``train`` resizes other images (a
        preset without it takes the data's own size)
    """

    name: str
    build: Callable[..., Network]
    summary: str
    defaults: dict[str, Any] = field(default_factory=dict)

    def __call__(self, *args: Any, **kwargs: Any) -> Network:
        return self.build(*args, **kwargs)


PRESETS: dict[str, Preset] = {}


def register_preset(name: str, summary: str, **defaults: Any) -> Callable:
    """Function decorator: make a network builder a preset called ``name``."""

    def decorate(build: Callable[..., Network]) -> Callable[..., Network]:
        PRESETS[name] = Preset(name, build, summary, defaults)
        return build

    return decorate


@register_preset("seed", "the article's network (two conv layers, per-channel activations)",
                 optimizer="momentum", lr=ARTICLE.lr, momentum=ARTICLE.momentum,
                 batch_size=ARTICLE.batch_size, epochs=ARTICLE.epochs, data="digits")
def seed_net(fc: tuple[int, int] = ARTICLE.fc) -> Network:
    """The article's network: two conv layers, per-channel activations, three dense layers.

    ===========  ============================================  ============
    layer        what                                          output
    ===========  ============================================  ============
    conv1        3x3, pad 1, 1 -> 2 channels, no bias          (2, 8, 8)
    act1         a: relu, b: arctan                            (2, 8, 8)
    pool1        2x2 max                                       (2, 4, 4)
    conv2        3x3, pad 1, 2 -> 4 channels, groups=2         (4, 4, 4)
    act2         a: arctan, b: relu, c: arctan, d: tanh        (4, 4, 4)
    pool2        2x2 max                                       (4, 2, 2)
    flatten      a, b, c, d, row-major                         (16,)
    fc3, act3    dense 16 -> fc[0], arctan                     (fc[0],)
    fc4, act4    dense fc[0] -> fc[1], tanh                    (fc[1],)
    fc5, act5    dense fc[1] -> 1, sigmoid                     (1,)
    ===========  ============================================  ============

    Groups=2 is the article's wiring: layer-2 maps a, b read layer-1 map a; c, d read b.
    Weights are drawn from a standard normal (``init="normal"``); the loss is the
    article's ``0.5 * sum((pred - y)**2)``.
    """
    if len(fc) != 2 or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in fc):
        raise ConfigError(f"seed net: fc must be two positive integers (the widths of its "
                          f"hidden dense layers), got {fc!r}")
    return Network(
        [
            Conv2d(2, 3, padding=1, bias=False, name="conv1"),
            PerChannelActivation(["relu", "arctan"], name="act1"),
            MaxPool2d(2, name="pool1"),
            Conv2d(4, 3, padding=1, groups=2, bias=False, name="conv2"),
            PerChannelActivation(["arctan", "relu", "arctan", "tanh"], name="act2"),
            MaxPool2d(2, name="pool2"),
            Flatten(name="flatten"),
            Dense(fc[0], bias=False, name="fc3"),
            Activation("arctan", name="act3"),
            Dense(fc[1], bias=False, name="fc4"),
            Activation("tanh", name="act4"),
            Dense(1, bias=False, name="fc5"),
            Activation("sigmoid", name="act5"),
        ],
        input_shape=(1, 8, 8),
        loss="l2",
        init="normal",
        name="seed",
    )


@register_preset("seed-as-run", "the article's network as its code ran it (layer 2 applies "
                 "conv1's second kernel to all four maps)", optimizer="momentum",
                 lr=ARTICLE.lr, momentum=ARTICLE.momentum, batch_size=ARTICLE.batch_size,
                 epochs=ARTICLE.epochs, data="digits")
def seed_as_run(fc: tuple[int, int] = ARTICLE.fc) -> Network:
    """:func:`seed_net` as the author's code ran it: layer 2 applies conv1's second kernel
    W1b to all four maps (seed-spec section 2, "known defect"), so its own kernels
    W2a..W2d never act in the forward pass. The article's figures come from this network.

    Trained with ``seed-original`` or ``seed-broken`` it reproduces the code's backward
    pass too: W2 is updated as if it acted and the gradient reaches layer 1 through it.
    With ``exact`` it gets the true gradient of this forward pass (W1b learns from both
    of its uses; W2's gradient is 0). See :mod:`handprop.core.ops.asrun`.
    """
    net = seed_net(fc)
    conv2 = net.layers[3]
    layers = list(net.layers)
    layers[3] = AsRunConv2d(conv2.out_channels, conv2.kernel_size, conv2.stride, conv2.padding,
                            conv2.groups, conv2.bias, name=conv2.name, source="conv1",
                            source_channel=1)
    return Network(layers, net.input_shape, loss=net.loss, init=net.init_scheme,
                   name="seed-as-run")


@register_preset("lenet", "LeNet-5 for 28x28 images (MNIST-format files)", optimizer="momentum",
                 lr=0.01, momentum=0.9, batch_size=64, epochs=10, data=None)
def lenet(input_shape: tuple[int, int, int] = (1, 28, 28), classes: int = 10) -> Network:
    """LeNet-5 style: conv 6@5x5 pad 2, pool, conv 16@5x5, pool, 120, 84, classes.

    ReLU activations, biases, PyTorch's default initialisation, softmax cross-entropy.
    """
    return Network(
        [
            Conv2d(6, 5, padding=2, name="conv1"),
            Activation("relu", name="act1"),
            MaxPool2d(2, name="pool1"),
            Conv2d(16, 5, name="conv2"),
            Activation("relu", name="act2"),
            MaxPool2d(2, name="pool2"),
            Flatten(name="flatten"),
            Dense(120, name="fc3"),
            Activation("relu", name="act3"),
            Dense(84, name="fc4"),
            Activation("relu", name="act4"),
            Dense(classes, name="fc5"),
        ],
        input_shape=input_shape,
        loss="softmax_ce",
        init="torch",
        name="lenet",
    )


@register_preset("lenet-biotorch", "BioTorch's LeNet MNIST for 32x32 images (conv3 is a "
                 "5x5 convolution)", optimizer="momentum", lr=0.01, momentum=0.9,
                 batch_size=64, epochs=100, data=None, image_size=(32, 32))
def lenet_biotorch(input_shape: tuple[int, int, int] = (1, 32, 32),
                   classes: int = 10) -> Network:
    """BioTorch's ``LeNetMNIST`` (``biotorch/models/le_net.py``): conv 6@5x5, pool, conv
    16@5x5, pool, conv 120@5x5 (1x1 output on 32x32 inputs), dense 84, dense classes;
    no padding, ReLU after every layer but the last, biases, softmax cross-entropy.

    It differs from :func:`lenet` in two ways that matter to a comparison: inputs are
    32x32 (BioTorch resizes MNIST-format images; ``lenet`` pads 28x28 ones), and the
    120-unit layer is a convolution, whose fan-out (120 x 25) sets its Glorot scale and
    the sign-symmetry rules' feedback scale. Weights are Glorot-uniform with zero biases
    (BioTorch's ``init: xavier``).
    """
    return Network(
        [
            Conv2d(6, 5, name="conv1"),
            Activation("relu", name="act1"),
            MaxPool2d(2, name="pool1"),
            Conv2d(16, 5, name="conv2"),
            Activation("relu", name="act2"),
            MaxPool2d(2, name="pool2"),
            Conv2d(120, 5, name="conv3"),
            Activation("relu", name="act3"),
            Flatten(name="flatten"),
            Dense(84, name="fc4"),
            Activation("relu", name="act4"),
            Dense(classes, name="fc5"),
        ],
        input_shape=input_shape,
        loss="softmax_ce",
        init="glorot",
        name="lenet-biotorch",
    )


@register_preset("small", "a small CNN for 8x8 digits", optimizer="momentum", lr=0.01,
                 momentum=0.9, batch_size=32, epochs=30, data="digits10")
def small_cnn(classes: int = 10, input_shape: tuple[int, int, int] = (1, 8, 8)) -> Network:
    """A small CNN sized for 8x8 digits: conv 8@3x3 pad 1, pool, conv 16@3x3 pad 1, pool,
    dense 64, dense classes. ReLU, biases, softmax cross-entropy."""
    return Network(
        [
            Conv2d(8, 3, padding=1, name="conv1"),
            Activation("relu", name="act1"),
            MaxPool2d(2, name="pool1"),
            Conv2d(16, 3, padding=1, name="conv2"),
            Activation("relu", name="act2"),
            MaxPool2d(2, name="pool2"),
            Flatten(name="flatten"),
            Dense(64, name="fc3"),
            Activation("relu", name="act3"),
            Dense(classes, name="fc4"),
        ],
        input_shape=input_shape,
        loss="softmax_ce",
        init="torch",
        name="small",
    )


def preset_defaults(name: str) -> dict[str, Any]:
    """The training defaults of preset ``name`` (the small CNN's for anything else,
    e.g. a network from a TOML file)."""
    return dict((PRESETS.get(name) or PRESETS["small"]).defaults)
