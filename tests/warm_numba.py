"""Fill the compiled engine's Numba cache: the kernels every layout and dtype the tests
use, each compiled once. conftest.py runs this in a background process at the start of a
test session, so that on a fresh clone (an empty cache) the compile happens on the
second core while the first runs the tests that need no compiled engine; tests that get
to a kernel first compile it themselves, as they would without it.

    python tests/warm_numba.py
"""

from __future__ import annotations

import numpy as np

from handprop import seed_net
from handprop.core.presets import small_cnn
from handprop.training.loop import TrainConfig, fit


def warm() -> None:
    x = np.random.default_rng(0).uniform(0, 16, (8, 1, 8, 8))
    y = np.array([0, 1] * 4)
    # the batched layout (batches of 16 and more) first: compare's and BioTorch's runs
    # meet it early
    for dtype in ("float64", "float32"):
        fit(small_cnn().init(0, dtype=dtype), np.concatenate([x, x]), np.arange(16) % 10,
            TrainConfig(epochs=1, batch_size=16, dtype=dtype), engine="compiled")

    runs = [  # (dtype, replicas, batch size): per-replica, lanes, batch lanes
        ("float64", None, 1), ("float64", [0, 1, 2], 1), ("float64", None, 8),
        ("float32", None, 1), ("float32", [0, 1, 2], 1),
    ]
    for dtype, replicas, batch in runs:
        net = seed_net().init(0, dtype=dtype, replicas=replicas)
        data_x = x if replicas is None else np.broadcast_to(x, (len(replicas), *x.shape))
        data_y = y if replicas is None else np.broadcast_to(y, (len(replicas), *y.shape))
        fit(net, np.ascontiguousarray(data_x), np.ascontiguousarray(data_y),
            TrainConfig(epochs=1, batch_size=batch, dtype=dtype), engine="compiled")


if __name__ == "__main__":
    warm()
