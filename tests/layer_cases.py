"""The exactness tables: cases for every registered layer kind.

``LAYER_CASES[kind]`` lists cases for the layer class registered as ``kind``
(:data:`handprop.core.layers.LAYERS`): constructor keyword arguments, the per-sample
input shape, the batch size and how to draw the input. ``test_layer_tables.py`` runs
every case through the Layer API (``build``, ``init_param``, ``init_state``,
``forward``, ``backward``) against central finite differences and against the kind's
torch twin (``handprop.integrations.torch_twins.TORCH_LAYERS``), with replicas, and
through a TOML spec.

A registered kind with no finite-difference case or no parity case fails
``test_every_layer_kind_has_cases``: a new op adds its cases here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from helpers import away_from_zero, tie_free

from handprop.core.layers import Layer
from handprop.core.ops import layer_types

INPUTS = ("normal", "tie_free", "away_from_zero", "shifted")


@dataclass(frozen=True)
class LayerCase:
    """One configuration of one layer kind.

    id : short name (the test id is ``kind-id``)
    kwargs : constructor keyword arguments (as a TOML spec would give them)
    sample_shape : per-sample input shape; batch : samples per forward pass
    inputs : how the input is drawn: ``normal``; ``tie_free`` (distinct values 0.01 apart,
        so no max-pool winner changes under a finite-difference nudge); ``away_from_zero``
        (|z| > 1e-3, clear of kinks, times 2); ``shifted`` (3 * normal + 1.5)
    train : the forward mode checked
    warmup : train-mode forward passes (fresh inputs) before the checked one, so that
        state such as running statistics has moved away from its initial value
    param_noise : standard deviation of normal noise added to the drawn parameters (for
        layers whose initial parameters are constants, e.g. batch norm's ones and zeros)
    borrowed : shapes of the parameters the layer borrows from another layer
        (``Layer.borrowed``; drawn standard normal and checked like its own)
    zero_grads : parameters that do not act in the forward pass, so that their true
        gradient (hand-written and finite-difference alike) is exactly 0
    fd, parity : whether the finite-difference / torch-parity test runs this case
    """

    id: str
    kwargs: dict[str, Any]
    sample_shape: tuple[int, ...]
    batch: int = 2
    inputs: str = "normal"
    train: bool = True
    warmup: int = 0
    param_noise: float = 0.0
    fd: bool = True
    parity: bool = True
    borrowed: dict[str, tuple[int, ...]] = field(default_factory=dict)
    zero_grads: tuple[str, ...] = ()
    notes: str = field(default="", compare=False)


ACTIVATIONS = ["identity", "relu", "leaky_relu", "leaky_relu:0.2", "tanh", "arctan", "sigmoid"]
PER_CHANNEL = ["relu", "arctan", "tanh", "leaky_relu:0.2", "sigmoid", "identity", "relu"]

LAYER_CASES: dict[str, list[LayerCase]] = {
    "conv2d": [
        LayerCase("k3p1", {"out_channels": 3, "kernel_size": 3, "padding": 1}, (2, 6, 6)),
        LayerCase("grouped-strided-nobias",
                  {"out_channels": 4, "kernel_size": [2, 3], "stride": [2, 1],
                   "padding": [1, 0], "groups": 2, "bias": False}, (2, 7, 6)),
        LayerCase("1x1-groups3", {"out_channels": 6, "kernel_size": 1, "groups": 3},
                  (3, 4, 5), batch=3),
        LayerCase("large-stream", {"out_channels": 3, "kernel_size": 3, "padding": 2},
                  (4, 10, 10), notes="a large sample: streaming path, full correlation"),
        LayerCase("large-stride2", {"out_channels": 2, "kernel_size": 2, "stride": 2},
                  (3, 9, 9), batch=1),
    ],
    "as_run_conv2d": [
        LayerCase("seed-layer2", {"out_channels": 4, "kernel_size": 3, "padding": 1,
                                  "groups": 2, "bias": False}, (2, 4, 4),
                  borrowed={"source": (2, 1, 3, 3)}, zero_grads=("weight",),
                  notes="the author's layer 2: conv1's second kernel on all four maps"),
        LayerCase("bias-channel0", {"out_channels": 3, "kernel_size": 2, "stride": 2,
                                    "source_channel": 0}, (2, 5, 6),
                  borrowed={"source": (2, 2, 2, 2)}, zero_grads=("weight",)),
    ],
    "dense": [
        LayerCase("bias", {"out_features": 5}, (7,), batch=3),
        LayerCase("no-bias-one-sample", {"out_features": 4, "bias": False}, (6,), batch=1),
    ],
    "flatten": [LayerCase("maps", {}, (2, 3, 4))],
    "max_pool2d": [
        LayerCase("2x2", {"kernel_size": 2}, (2, 6, 8), inputs="tie_free"),
        LayerCase("3x3s2-overlapping", {"kernel_size": 3, "stride": 2}, (2, 7, 9),
                  inputs="tie_free"),
        LayerCase("2x3s1x2", {"kernel_size": [2, 3], "stride": [1, 2]}, (3, 7, 6),
                  inputs="tie_free"),
        LayerCase("1x1s2-gaps", {"kernel_size": 1, "stride": 2}, (2, 5, 7), inputs="tie_free"),
        LayerCase("large-stream", {"kernel_size": 2}, (3, 12, 12), inputs="tie_free"),
    ],
    "avg_pool2d": [
        LayerCase("2x2", {"kernel_size": 2}, (2, 6, 8)),
        LayerCase("3x3s2-pad-include", {"kernel_size": 3, "stride": 2, "padding": 1},
                  (2, 7, 9)),
        LayerCase("3x3s2-pad-exclude", {"kernel_size": 3, "stride": 2, "padding": 1,
                                        "count_include_pad": False}, (2, 7, 9)),
        LayerCase("2x3s1x2-pad-exclude", {"kernel_size": [2, 3], "stride": [1, 2],
                                          "padding": [1, 1], "count_include_pad": False},
                  (3, 7, 6)),
        LayerCase("5x5s1-pad2-exclude", {"kernel_size": 5, "stride": 1, "padding": 2,
                                         "count_include_pad": False}, (2, 5, 6), batch=1),
        LayerCase("1x1s2-gaps", {"kernel_size": 1, "stride": 2}, (2, 5, 7)),
        LayerCase("large-stream-pad-exclude", {"kernel_size": 3, "stride": 2, "padding": 1,
                                               "count_include_pad": False}, (3, 12, 12)),
        LayerCase("large-stream-pad-include", {"kernel_size": 2, "padding": 1}, (4, 9, 9)),
    ],
    "batch_norm2d": [
        LayerCase("train", {}, (3, 4, 5), inputs="shifted", param_noise=0.5),
        LayerCase("train-initial-params", {}, (2, 3, 3), batch=4,
                  notes="gamma = 1, beta = 0 as init_param draws them"),
        LayerCase("train-no-affine", {"affine": False}, (3, 4, 4), inputs="shifted"),
        LayerCase("train-momentum-eps-warmup", {"momentum": 0.3, "eps": 1e-3}, (2, 5, 4),
                  batch=3, inputs="shifted", warmup=3, param_noise=0.5),
        LayerCase("train-one-sample", {}, (3, 3, 4), batch=1, inputs="shifted",
                  param_noise=0.5),
        LayerCase("train-large", {}, (6, 10, 10), inputs="shifted", param_noise=0.5),
        LayerCase("eval-after-warmup", {}, (3, 4, 5), inputs="shifted", train=False, warmup=3,
                  param_noise=0.5),
        LayerCase("eval-no-affine", {"affine": False, "momentum": 0.5}, (2, 3, 3),
                  inputs="shifted", train=False, warmup=2),
    ],
    "scale": [
        LayerCase("maps", {}, (3, 4, 5), param_noise=0.5),
        LayerCase("vectors", {}, (6,), batch=4, param_noise=0.5),
        LayerCase("one-sample-initial", {}, (2, 3, 3), batch=1,
                  notes="s = 1 as init_param gives it"),
    ],
    "activation": [
        LayerCase(name, {"activation": name}, (3, 4, 5), inputs="away_from_zero")
        for name in ACTIVATIONS
    ],
    "per_channel_activation": [
        LayerCase("maps", {"activations": PER_CHANNEL}, (7, 3, 4), inputs="away_from_zero"),
        LayerCase("vectors", {"activations": PER_CHANNEL}, (7,), batch=5,
                  inputs="away_from_zero"),
        LayerCase("identity-first", {"activations": ["identity", "relu", "tanh"]},
                  (3, 2, 2), inputs="away_from_zero"),
    ],
}


def case_params() -> list[tuple[str, LayerCase]]:
    """Every (kind, case) of the table, in order."""
    return [(kind, case) for kind, cases in LAYER_CASES.items() for case in cases]


def build_layer(kind: str, case: LayerCase) -> Layer:
    """The registered layer class of ``kind``, made from the case's kwargs and built."""
    layer = layer_types()[kind](**case.kwargs, name=f"{kind}0")
    layer.build(case.sample_shape)
    return layer


def draw_input(case: LayerCase, rng: np.random.Generator,
               lead: tuple[int, ...] = ()) -> np.ndarray:
    """A float64 input of shape (*lead, batch, *sample_shape), drawn as the case says."""
    shape = (*lead, case.batch, *case.sample_shape)
    if case.inputs == "tie_free":
        return tie_free(rng, shape)
    if case.inputs == "away_from_zero":
        return away_from_zero(rng, shape) * 2
    if case.inputs == "shifted":
        return 3 * rng.standard_normal(shape) + 1.5
    assert case.inputs == "normal", case.inputs
    return rng.standard_normal(shape)


def draw_arrays(layer: Layer, case: LayerCase, rng: np.random.Generator
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Parameters drawn by ``layer.init_param`` with the "torch" scheme (uniform weights
    *and* biases: a zero bias would hide a wrong bias path), plus the case's noise, and
    the state from ``layer.init_state``; all float64."""
    params = {}
    for local, shape in layer.param_shapes().items():
        value = np.asarray(layer.init_param(local, rng, "torch"), dtype=np.float64)
        if case.param_noise:
            value = value + case.param_noise * rng.standard_normal(shape)
        params[local] = value
    for local, shape in case.borrowed.items():
        params[local] = rng.standard_normal(shape)
    state = {local: np.array(layer.init_state(local), dtype=np.float64)
             for local in layer.state_shapes()}
    return params, state
