"""The ops: each forward next to its hand-written backward, on NCHW arrays, and the
layer class that wraps it (registered in :data:`handprop.core.layers.LAYERS`).

Every module in this folder is imported here, so a new op is one new file: its maths,
its functions, and a layer class decorated with ``@register_layer``.

==================  =====================================================
where               what
==================  =====================================================
``conv.py``         conv2d: forward, weight/input/bias gradients
``pool.py``         max_pool2d: forward, gradient routing (winner or ties)
``dense.py``        dense (fully connected) and flatten
``activations.py``  relu, leaky relu, tanh, arctan, sigmoid, identity, per-channel
``losses.py``       the article's L2, binary cross-entropy, softmax cross-entropy
``windows.py``      the gather/scatter tables conv and pool share
==================  =====================================================
"""

import importlib
import pkgutil

from .activations import (
    ACTIVATION_NAMES,
    Activation,
    ActivationFn,
    PerChannelActivation,
    activation_backward,
    activation_forward,
    channel_plan,
    get_activation,
    per_channel_backward,
    per_channel_forward,
)
from .conv import (
    Conv2d,
    Conv2dCache,
    conv2d_backward,
    conv2d_bias_grad,
    conv2d_forward,
    conv2d_input_grad,
    conv2d_weight_grad,
)
from .dense import (
    Dense,
    Flatten,
    dense_backward,
    dense_bias_grad,
    dense_forward,
    dense_input_grad,
    dense_weight_grad,
    flatten_backward,
    flatten_forward,
)
from .losses import (
    LOSSES,
    bce_loss,
    get_loss,
    l2_loss,
    log_softmax,
    one_hot,
    softmax_cross_entropy,
)
from .pool import (
    MaxPool2d,
    MaxPool2dCache,
    max_pool2d_backward,
    max_pool2d_forward,
    max_pool2d_mask,
    max_pool2d_routing,
    max_pool2d_scatter,
    max_pool2d_upsample,
)

for _module in pkgutil.iter_modules(__path__):  # every op file registers its layers
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ACTIVATION_NAMES",
    "LOSSES",
    "Activation",
    "ActivationFn",
    "Conv2d",
    "Conv2dCache",
    "Dense",
    "Flatten",
    "MaxPool2d",
    "MaxPool2dCache",
    "PerChannelActivation",
    "activation_backward",
    "activation_forward",
    "bce_loss",
    "channel_plan",
    "conv2d_backward",
    "conv2d_bias_grad",
    "conv2d_forward",
    "conv2d_input_grad",
    "conv2d_weight_grad",
    "dense_backward",
    "dense_bias_grad",
    "dense_forward",
    "dense_input_grad",
    "dense_weight_grad",
    "flatten_backward",
    "flatten_forward",
    "get_activation",
    "get_loss",
    "l2_loss",
    "log_softmax",
    "max_pool2d_backward",
    "max_pool2d_forward",
    "max_pool2d_mask",
    "max_pool2d_routing",
    "max_pool2d_scatter",
    "max_pool2d_upsample",
    "one_hot",
    "per_channel_backward",
    "per_channel_forward",
    "softmax_cross_entropy",
]
