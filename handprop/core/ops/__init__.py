"""The ops: each forward next to its hand-written backward, on NCHW arrays, and the
layer class that wraps it (registered in :data:`handprop.core.layers.LAYERS`).

Every module in this folder is imported here, so a new op is one new file: its maths,
its functions, and a layer class decorated with ``@register_layer``. Nothing here lists
the modules by hand: the table below is made from each module's first line when the
package is imported (``help(handprop.core.ops)``), and every registered layer class is
exported here (``__all__``) next to the functions imported below.

Modules:
"""

import importlib
import pkgutil

from ..layers import LAYERS
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
from .asrun import shared_kernel
from .avgpool import avg_pool2d_backward, avg_pool2d_forward, avg_pool2d_geometry
from .batchnorm import batch_norm2d_forward, batch_norm2d_input_grad, batch_norm2d_param_grads
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

_MODULES = [importlib.import_module(f"{__name__}.{found.name}")  # each registers its layers
            for found in pkgutil.iter_modules(__path__)]
__doc__ += "\n" + "\n".join(
    f"* ``{module.__name__.rpartition('.')[2]}.py``: {module.__doc__.strip().splitlines()[0]}"
    for module in _MODULES)
for _layer in LAYERS.values():  # every registered layer class, from its own module
    globals()[_layer.__name__] = _layer


def layer_types() -> dict[str, type]:
    """Every registered layer class by ``kind`` (:data:`handprop.core.layers.LAYERS`), all
    op modules imported (importing this package imports them)."""
    return LAYERS


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
    "avg_pool2d_backward",
    "avg_pool2d_forward",
    "avg_pool2d_geometry",
    "batch_norm2d_forward",
    "batch_norm2d_input_grad",
    "batch_norm2d_param_grads",
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
    "layer_types",
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
    "shared_kernel",
    "softmax_cross_entropy",
]
__all__ += sorted(layer.__name__ for layer in LAYERS.values() if layer.__name__ not in __all__)
