"""handprop: a NumPy CNN lab where every gradient is written by hand.

Where things are:

* ``handprop.core.ops``       each op's forward next to its backward (conv, pool, dense, ...)
* ``handprop.core.layers``    ops with shapes and parameters
* ``handprop.core.network``   the chain of layers and its backward pass
* ``handprop.rules``     learning rules: exact back-propagation and its alternatives
* ``handprop.training.optim``     optimizers and schedules
* ``handprop.training.loop``     the training loop and evaluation
* ``handprop.training.data``      digits, the four built-in images, IDX files
* ``handprop.core.gradcheck`` finite-difference proofs of the gradients
"""

from .core.errors import ConfigError, DataError, HandpropError, ShapeError
from .core.network import Network
from .core.ops import Activation, Conv2d, Dense, Flatten, MaxPool2d, PerChannelActivation
from .core.presets import lenet, seed_net, small_cnn

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "ConfigError",
    "Conv2d",
    "DataError",
    "Dense",
    "Flatten",
    "HandpropError",
    "MaxPool2d",
    "Network",
    "PerChannelActivation",
    "ShapeError",
    "lenet",
    "seed_net",
    "small_cnn",
]
