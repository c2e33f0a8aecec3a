"""The ops: each forward next to its hand-written backward, on NCHW arrays.

==================  =====================================================
where               what
==================  =====================================================
``conv.py``         conv2d: forward, weight/input/bias gradients
``pool.py``         max_pool2d: forward, gradient routing (winner or ties)
``dense.py``        dense (fully connected) and flatten
``activations.py``  relu, leaky relu, tanh, arctan, sigmoid, identity, per-channel
``losses.py``       the article's L2, binary cross-entropy, softmax cross-entropy
``_index.py``       the gather/scatter tables conv and pool share
==================  =====================================================
"""

from .activations import (
    ACTIVATION_NAMES,
    Activation,
    activation_backward,
    activation_forward,
    channel_plan,
    get_activation,
    per_channel_backward,
    per_channel_forward,
)
from .conv import (
    Conv2dCache,
    conv2d_backward,
    conv2d_bias_grad,
    conv2d_forward,
    conv2d_input_grad,
    conv2d_weight_grad,
)
from .dense import (
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
    MaxPool2dCache,
    max_pool2d_backward,
    max_pool2d_forward,
    max_pool2d_mask,
    max_pool2d_routing,
    max_pool2d_scatter,
    max_pool2d_upsample,
)

__all__ = [
    "ACTIVATION_NAMES",
    "LOSSES",
    "Activation",
    "Conv2dCache",
    "MaxPool2dCache",
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
