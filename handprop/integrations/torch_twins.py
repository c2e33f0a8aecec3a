"""PyTorch twins of handprop networks, with handprop's parameters copied in.

One module for both users of PyTorch: the tests (parity of every layer and network with
torch autograd) and ``handprop bench`` (the same networks trained by torch, timed).
torch is a test and benchmark dependency, never a runtime one: importing this module
imports torch, and nothing in handprop imports it except lazily (the benchmark, when
torch is installed).

``torch_seed_net`` and ``torch_lenet`` are written out layer by layer from the
architectures' descriptions (not derived from handprop's layer list), so that a wrong
preset is caught too; ``torch_twin`` translates any chain of handprop layers, one
``TORCH_LAYERS`` entry per layer class (the parity table of ``tests/layer_cases.py``
uses the same entries).

    net = handprop.seed_net().init(0)
    twin = torch_seed_net(net)
    out = twin(torch.from_numpy(x))        # == net.forward(x)[0]

The twins' parameter names are handprop's (``conv1.weight``, ``fc3.weight``, ...) and
their weights have handprop's layouts (conv ``(O, C/groups, kh, kw)``, dense
``(out, in)``; both libraries compute a cross-correlation). A twin computes in the
network's dtype (float64 or float32).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.layers import Layer
from ..core.network import Network
from ..core.ops.activations import Activation, PerChannelActivation
from ..core.ops.asrun import AsRunConv2d
from ..core.ops.avgpool import AvgPool2d
from ..core.ops.batchnorm import BatchNorm2d
from ..core.ops.conv import Conv2d
from ..core.ops.dense import Dense, Flatten
from ..core.ops.pool import MaxPool2d
from ..core.ops.scale import Scale

TORCH_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda z: z,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "arctan": torch.atan,
    "sigmoid": torch.sigmoid,
}
TORCH_DTYPES = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}


class TwinMismatchError(ValueError):
    """A twin and a handprop network (or arrays) do not have the same parameters."""


def torch_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The torch function of a handprop activation name (``leaky_relu:SLOPE`` too)."""
    if name == "leaky_relu" or name.startswith("leaky_relu:"):
        slope = float(name.partition(":")[2] or "0.01")
        return lambda z: torch.nn.functional.leaky_relu(z, slope)
    return TORCH_ACTIVATIONS[name]


class Elementwise(nn.Module):
    """One activation everywhere."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.fn = torch_activation(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class PerChannel(nn.Module):
    """Activation ``names[c]`` on channel c (axis 1 of (N, C, ...))."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = list(names)
        self.fns = [torch_activation(name) for name in names]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != len(self.fns):
            raise TwinMismatchError(f"{len(self.fns)} activations {self.names}, input {x.shape}")
        return torch.stack([fn(x[:, c]) for c, fn in enumerate(self.fns)], dim=1)


def copy_params(module: nn.Module, net: Network) -> nn.Module:
    """Copy ``net.params`` (and ``net.buffers``, the layers' state) into ``module`` (same
    names and shapes required), which is cast to the network's dtype; returns it."""
    if net.flat is None or net.rep_shape:
        raise TwinMismatchError("copy_params needs a network with parameters and no replicas")
    module = module.to(TORCH_DTYPES[np.dtype(net.dtype)])
    load_arrays(module, dict(net.params), dict(net.buffers))
    return module


def load_arrays(module: nn.Module, params: Mapping[str, np.ndarray],
                state: Mapping[str, np.ndarray]) -> None:
    """Copy ``params`` into the module's parameters (exactly these names) and ``state``
    into its buffers of the same names (torch may keep more, e.g. a batch counter), each
    in the dtype of the module's tensor."""
    theirs = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    if set(theirs) != set(params) or not set(state) <= set(buffers):
        raise TwinMismatchError(f"parameters: twin {sorted(theirs)}, handprop {sorted(params)}; "
                           f"state: twin {sorted(buffers)}, handprop {sorted(state)}")
    with torch.no_grad():
        for name, value in [*params.items(), *state.items()]:
            target = theirs[name] if name in theirs else buffers[name]
            if tuple(target.shape) != np.shape(value):
                raise TwinMismatchError(f"{name}: twin {tuple(target.shape)}, handprop "
                                   f"{np.shape(value)}")
            target.copy_(torch.from_numpy(np.asarray(value)).to(target.dtype))


class _Named(nn.Module):
    """A chain of named submodules run in order (names become parameter prefixes)."""

    def __init__(self, layers: Sequence[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.order = [name for name, _ in layers]
        for name, layer in layers:
            self.add_module(name, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.order:
            x = getattr(self, name)(x)
        return x


def torch_seed_net(net: Network) -> nn.Module:
    """The article's network (``handprop.seed_net()``) in torch, ``net``'s parameters in.

    conv1 1->2 3x3 pad 1; relu | atan per channel; maxpool 2; conv2 2->4 3x3 pad 1
    groups 2; atan | relu | atan | tanh; maxpool 2; flatten; 16->fc0 atan; fc0->fc1
    tanh; fc1->1 sigmoid. No biases.
    """
    fc0, fc1 = net.params["fc3.weight"].shape[-2], net.params["fc4.weight"].shape[-2]
    twin = _Named(
        [
            ("conv1", nn.Conv2d(1, 2, 3, padding=1, bias=False)),
            ("act1", PerChannel(["relu", "arctan"])),
            ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(2, 4, 3, padding=1, groups=2, bias=False)),
            ("act2", PerChannel(["arctan", "relu", "arctan", "tanh"])),
            ("pool2", nn.MaxPool2d(2)),
            ("flatten", nn.Flatten()),
            ("fc3", nn.Linear(16, fc0, bias=False)),
            ("act3", Elementwise("arctan")),
            ("fc4", nn.Linear(fc0, fc1, bias=False)),
            ("act4", Elementwise("tanh")),
            ("fc5", nn.Linear(fc1, 1, bias=False)),
            ("act5", Elementwise("sigmoid")),
        ]
    )
    return copy_params(twin, net)


def torch_lenet(net: Network) -> nn.Module:
    """LeNet-5 (``handprop.lenet()``) in torch, ``net``'s parameters in.

    conv 6@5x5 pad 2, relu, maxpool 2, conv 16@5x5, relu, maxpool 2, flatten,
    dense 120 relu, 84 relu, classes. Biases everywhere.
    """
    in_channels = net.input_shape[0]
    flat = net.params["fc3.weight"].shape[-1]
    classes = net.params["fc5.weight"].shape[-2]
    twin = _Named(
        [
            ("conv1", nn.Conv2d(in_channels, 6, 5, padding=2)),
            ("act1", nn.ReLU()),
            ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(6, 16, 5)),
            ("act2", nn.ReLU()),
            ("pool2", nn.MaxPool2d(2)),
            ("flatten", nn.Flatten()),
            ("fc3", nn.Linear(flat, 120)),
            ("act3", nn.ReLU()),
            ("fc4", nn.Linear(120, 84)),
            ("act4", nn.ReLU()),
            ("fc5", nn.Linear(84, classes)),
        ]
    )
    return copy_params(twin, net)


def _conv2d(layer: Conv2d) -> nn.Module:
    return nn.Conv2d(layer.in_shape[0], layer.out_channels, layer.kernel_size,
                     stride=layer.stride, padding=layer.padding, groups=layer.groups,
                     bias=layer.bias)


class AsRunConv(nn.Module):
    """``as_run_conv2d``: the convolution with kernel ``source_channel`` of the borrowed
    ``source`` on every output channel; its own ``weight`` does not act (a zero term keeps
    it in the graph, so torch reports its gradient as 0 rather than None)."""

    def __init__(self, layer: AsRunConv2d, source_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.layer = layer
        self.weight = nn.Parameter(torch.zeros(layer.param_shapes()["weight"]))
        self.source = nn.Parameter(torch.zeros(source_shape))
        self.bias = nn.Parameter(torch.zeros(layer.out_channels)) if layer.bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        kernel = self.source[layer.source_channel : layer.source_channel + 1]
        weight = kernel.expand(layer.out_channels, *kernel.shape[1:])
        out = torch.nn.functional.conv2d(x, weight, self.bias, layer.stride, layer.padding,
                                         groups=layer.groups)
        return out + 0 * self.weight.sum()


class ChannelScale(nn.Module):
    """``scale``: each channel times its own learnable factor."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.reshape(-1, *([1] * (x.dim() - 2)))


TORCH_LAYERS: dict[type[Layer], Callable[[Any], nn.Module]] = {
    Conv2d: _conv2d,
    AsRunConv2d: lambda layer: AsRunConv(layer, (2, *layer.param_shapes()["weight"][1:])),
    Dense: lambda layer: nn.Linear(layer.in_shape[0], layer.out_features, bias=layer.bias),
    MaxPool2d: lambda layer: nn.MaxPool2d(layer.kernel_size, layer.stride),
    Flatten: lambda layer: nn.Flatten(),
    AvgPool2d: lambda layer: nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding,
                                          count_include_pad=layer.count_include_pad),
    BatchNorm2d: lambda layer: nn.BatchNorm2d(layer.in_shape[0], eps=layer.eps,
                                              momentum=layer.momentum, affine=layer.affine),
    PerChannelActivation: lambda layer: PerChannel(layer.activations),
    Activation: lambda layer: Elementwise(layer.activation.name),
    Scale: lambda layer: ChannelScale(layer.in_shape[0]),
}
"""The torch twin of every handprop layer class, made from a *built* layer (its
``in_shape`` known). Parameters and state keep handprop's local names (``weight``,
``bias``, ``running_mean``, ...). Every registered layer class must have one: see
``tests/test_layer_tables.py``."""


def torch_layer(layer: Layer) -> nn.Module:
    """The float64 torch module that computes what ``layer`` computes (parameters not
    copied yet)."""
    make = TORCH_LAYERS.get(type(layer))
    if make is None:
        raise TypeError(f"no torch twin for layer {layer!r}: add one to TORCH_LAYERS")
    return make(layer).double()


def torch_twin(net: Network) -> nn.Module:
    """A torch module translated layer by layer from any chain of handprop layers, with
    the network's parameters and state copied in."""
    return copy_params(_Named([(layer.name, torch_layer(layer)) for layer in net.layers]), net)


def l2_loss(reduction: str = "sum") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """handprop's ``l2``: ``0.5 * sum((pred - y)**2)``, divided by the batch size if mean."""
    if reduction == "sum":
        return lambda pred, target: 0.5 * ((pred - target) ** 2).sum()
    if reduction == "mean":
        return lambda pred, target: 0.5 * ((pred - target) ** 2).sum() / pred.shape[0]
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
