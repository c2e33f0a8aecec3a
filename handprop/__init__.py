"""handprop: a NumPy CNN lab where every gradient is written by hand.

Where things are:

* ``handprop.ops``       each op's forward next to its backward (conv, pool, dense, ...)
* ``handprop.layers``    ops with shapes and parameters
* ``handprop.network``   the chain of layers and its backward pass
* ``handprop.rules``     learning rules: exact back-propagation and its alternatives
* ``handprop.optim``     optimizers and schedules
* ``handprop.train``     the training loop and evaluation
* ``handprop.data``      digits, the four built-in images, IDX files
* ``handprop.gradcheck`` finite-difference proofs of the gradients
"""

from .errors import ConfigError, DataError, HandpropError, ShapeError
from .layers import Activation, Conv2d, Dense, Flatten, MaxPool2d, PerChannelActivation
from .network import Network
from .presets import lenet, seed_net, small_cnn

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
