"""Every random stream handprop draws from, named in one place.

A run's randomness comes from its seed alone, split into independent streams so that
changing one use (say, the data order) never shifts another (the initial weights):
stream ``s`` of seed ``k`` is ``numpy.random.default_rng([k, s, *extra])``. The initial
weights are the one exception: they are drawn from the bare seed,
``default_rng(k)``, as they always have been, so weights stay comparable across
versions.

==============  ====  ================================================================
stream          tag   draws
==============  ====  ================================================================
INIT            --    initial weights, layer by layer (``Network.init``)
DATA_ORDER      3     the per-epoch reshuffles of the training set
FOLDS           5     which fold each image belongs to (cross-validation)
FEEDBACK_FA     7     feedback alignment's fixed B (extra: the layer index)
FEEDBACK_FRSF   8     frSF's fixed magnitudes (extra: the layer index)
FEEDBACK_BRSF   9     brSF's magnitudes, redrawn every step
FEEDBACK_DFA    10    DFA's fixed B (extra: the layer index)
DATA_SPLIT      11    which images are held out (train/test split) and the training order
PROBE           12    probes and other measurement-only draws
PERTURB         13    perturbations of initial weights (sensitivity studies)
HELDOUT         14    a study's held-out split per seed (which 20% are scored)
==============  ====  ================================================================
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from .limits import check_seed


class Stream(IntEnum):
    """The tag of each stream (see the module table)."""

    DATA_ORDER = 3
    FOLDS = 5
    FEEDBACK_FA = 7
    FEEDBACK_FRSF = 8
    FEEDBACK_BRSF = 9
    FEEDBACK_DFA = 10
    DATA_SPLIT = 11
    PROBE = 12
    PERTURB = 13
    HELDOUT = 14


def generator(seed: int, stream: Stream, *extra: int) -> np.random.Generator:
    """Stream ``stream`` of ``seed`` (``extra`` picks a sub-stream, e.g. a layer index).
    A seed must be an integer in 0..2**32-1 (:mod:`handprop.core.limits`)."""
    return np.random.default_rng([check_seed(seed), int(stream), *(int(e) for e in extra)])


def init_generator(seed: int) -> np.random.Generator:
    """The stream of a network's initial weights: the bare seed."""
    return np.random.default_rng(check_seed(seed))
