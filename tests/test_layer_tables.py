"""Every registered layer kind, through the Layer API, against finite differences and
PyTorch: the tables of ``layer_cases.py``.

For each case: the layer is built for the case's sample shape, its parameters drawn by
``init_param`` and its state by ``init_state`` (float64), and a random upstream
gradient ``R`` contracts its output.

* finite differences: the gradient of ``sum(R * forward(x))`` with respect to the input
  and every parameter, ``rel_error <= 1e-6`` (``helpers.FD_TOL``);
* parity: output, input gradient, every parameter gradient and every state array equal
  the torch twin's (``handprop.integrations.torch_twins.TORCH_LAYERS``), ``<= 1e-10``
  (``helpers.PARITY_TOL``);
* replicas: with a leading replica axis the layer computes each replica on its own;
* specs: every case's layer survives a TOML network spec unchanged.

A kind registered in ``handprop.core.layers.LAYERS`` with no case of either kind, or no
torch twin, fails ``test_every_layer_kind_has_cases``.
"""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import torch
from helpers import assert_fd, assert_parity, fd_grad
from layer_cases import LAYER_CASES, LayerCase, build_layer, case_params, draw_arrays, draw_input

from handprop.core.ops import layer_types
from handprop.core.spec import dump_toml, layer_from_spec, network_from_spec
from handprop.integrations.torch_twins import TORCH_LAYERS, load_arrays, torch_layer

CASES = case_params()


def _params(check: str | None = None) -> list:
    """pytest params ``(kind, case, seed)`` of the cases ``check`` ("fd"/"parity") runs."""
    return [pytest.param(kind, case, seed, id=f"{kind}-{case.id}")
            for seed, (kind, case) in enumerate(CASES)
            if check is None or getattr(case, check)]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """Every test here runs on one torch thread (see conftest.py)."""


# -- every registered kind is in the tables ----------------------------------------------

@pytest.mark.parametrize("kind", sorted(layer_types()))
def test_every_layer_kind_has_cases(kind: str) -> None:
    """A registered layer kind has a finite-difference case, a parity case and a torch
    twin (add them to tests/layer_cases.py and handprop/integrations/torch_twins.py)."""
    cases = LAYER_CASES.get(kind, [])
    assert any(c.fd for c in cases), f"layer kind {kind!r} has no finite-difference case"
    assert any(c.parity for c in cases), f"layer kind {kind!r} has no torch-parity case"
    assert layer_types()[kind] in TORCH_LAYERS, f"layer kind {kind!r} has no torch twin"


def test_tables_name_only_registered_kinds() -> None:
    assert set(LAYER_CASES) <= set(layer_types())
    ids = [f"{kind}-{case.id}" for kind, case in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"


# -- finite differences --------------------------------------------------------------------

def fd_errors(kind: str, case: LayerCase, seed: int) -> dict[str, float]:
    """Check the input and every parameter gradient of one case against central
    differences (asserting each); return the relative errors by array name."""
    from handprop.core.gradcheck import rel_error

    rng = np.random.default_rng(seed)
    layer = build_layer(kind, case)
    params, state = draw_arrays(layer, case, rng)
    arrays = {**params, **state}
    for _ in range(case.warmup):
        layer.forward(arrays, draw_input(case, rng), train=True)
    x = draw_input(case, rng)
    out, cache = layer.forward(arrays, x, case.train)
    assert out.shape == (case.batch, *layer.out_shape)
    upstream = rng.standard_normal(out.shape)
    grad_in, grads = layer.backward(arrays, cache, upstream)
    assert set(grads) == set(params)

    def forward() -> np.ndarray:
        return layer.forward(arrays, x, case.train)[0]

    errors = {}
    for name, array, grad in [("input", x, grad_in),
                              *((local, params[local], grads[local]) for local in params)]:
        numeric = fd_grad(forward, upstream, array)
        if name in case.zero_grads:  # does not act: both must be exactly zero
            assert not grad.any() and not numeric.any(), f"{kind} {case.id} {name}"
            errors[name] = 0.0
            continue
        assert_fd(grad, numeric, f"{kind} {case.id} {name}")
        errors[name] = rel_error(grad, numeric)
    return errors


@pytest.mark.parametrize(("kind", "case", "seed"), _params("fd"))
def test_layer_gradients_match_finite_differences(kind, case, seed) -> None:
    """Input and parameter gradients are the derivatives of the layer's forward pass."""
    fd_errors(kind, case, seed)


# -- parity with torch ---------------------------------------------------------------------

def _t(array: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(np.asarray(array, dtype=np.float64), requires_grad=grad)


def parity_errors(kind: str, case: LayerCase, seed: int) -> dict[str, float]:
    """Compare one case with its torch twin (asserting each); return the errors
    ``max|a - b| / max(1, max|b|)`` by what was compared."""
    from helpers import scale_error

    rng = np.random.default_rng(seed)
    layer = build_layer(kind, case)
    params, state = draw_arrays(layer, case, rng)
    arrays = {**params, **state}
    module = torch_layer(layer)
    load_arrays(module, params, state)
    errors: dict[str, float] = {}

    def compare(name: str, ours: np.ndarray, theirs: torch.Tensor) -> None:
        assert_parity(ours, theirs.detach().numpy(), f"{kind} {case.id} {name}")
        errors[name] = max(errors.get(name, 0.0), scale_error(ours, theirs.detach().numpy()))

    buffers = dict(module.named_buffers())
    for step in range(case.warmup):
        xw = draw_input(case, rng)
        module.train()
        compare(f"warmup output {step}", layer.forward(arrays, xw, True)[0], module(_t(xw)))
        for local in state:
            compare(local, state[local], buffers[local])
    module.train(case.train)
    x = draw_input(case, rng)
    out, cache = layer.forward(arrays, x, case.train)
    upstream = rng.standard_normal(out.shape)
    grad_in, grads = layer.backward(arrays, cache, upstream)
    xt = _t(x, True)
    out_t = module(xt)
    out_t.backward(_t(upstream))
    compare("output", out, out_t)
    compare("input grad", grad_in, xt.grad)
    theirs = dict(module.named_parameters())
    assert set(theirs) == set(grads)
    for local, grad in grads.items():
        compare(f"{local} grad", grad, theirs[local].grad)
    for local in state:  # after the checked forward pass too (train mode updates them)
        compare(local, state[local], buffers[local])
    return errors


@pytest.mark.parametrize(("kind", "case", "seed"), _params("parity"))
def test_layer_matches_torch(kind, case, seed) -> None:
    """Output, input gradient, parameter gradients and state equal the torch twin's
    (same parameters, state, inputs and random upstream gradient; the same warm-up
    forwards in train mode first)."""
    parity_errors(kind, case, seed)


# -- replicas ------------------------------------------------------------------------------

R = 2


@pytest.mark.parametrize(("kind", "case", "seed"), _params())
def test_layer_with_replicas_equals_separate_layers(kind, case, seed) -> None:
    """With a leading replica axis, replica r's output, gradients and state equal those
    of the layer run on replica r's arrays alone."""
    rng = np.random.default_rng(seed)
    layer = build_layer(kind, case)
    draws = [draw_arrays(layer, case, rng) for _ in range(R)]
    stacked = {local: np.stack([{**p, **s}[local] for p, s in draws]) for local in
               {**draws[0][0], **draws[0][1]}}
    x = draw_input(case, rng, lead=(R,))
    out, cache = layer.forward(stacked, x, case.train)
    upstream = rng.standard_normal(out.shape)
    grad_in, grads = layer.backward(stacked, cache, upstream)
    for r, (params, state) in enumerate(draws):
        alone = {**params, **state}
        out_r, cache_r = layer.forward(alone, x[r], case.train)
        grad_in_r, grads_r = layer.backward(alone, cache_r, upstream[r])
        for name, got, want in [("output", out[r], out_r), ("input grad", grad_in[r], grad_in_r),
                                *((local, stacked[local][r], alone[local]) for local in state),
                                *((f"{k} grad", grads[k][r], grads_r[k]) for k in grads_r)]:
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=name)


# -- specs ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "case", "seed"), _params())
def test_layer_survives_a_toml_spec(kind, case, seed) -> None:
    """The case's layer written into a TOML network spec and read back is the same layer
    (the constructor takes its own ``spec()``, lists and booleans as TOML gives them)."""
    layer = build_layer(kind, case)
    spec = {"input_shape": list(case.sample_shape), "layers": [layer.spec()]}
    text = dump_toml("network", spec)
    table = tomllib.loads(text)["network"]
    if layer.borrowed():  # a network needs the lender too: check the layer's table alone
        again = layer_from_spec(table["layers"][0])
        assert again.spec() == layer.spec()
        assert again.build(case.sample_shape) == layer.out_shape
        return
    net = network_from_spec(table)
    assert net.layers[0].spec() == layer.spec()
    assert net.output_shape == layer.out_shape
    assert net.param_shapes == {f"{layer.name}.{k}": v for k, v in layer.param_shapes().items()}


def test_the_ops_package_lists_every_module_and_exports_every_layer() -> None:
    """``handprop.core.ops`` lists each op module (its first line) and exports every
    registered layer class, with nothing listed by hand."""
    import pkgutil

    import handprop.core.ops as ops

    for found in pkgutil.iter_modules(ops.__path__):
        assert f"* ``{found.name}.py``: " in ops.__doc__, found.name
    for layer in layer_types().values():
        assert layer.__name__ in ops.__all__ and getattr(ops, layer.__name__) is layer
    assert all(hasattr(ops, name) for name in ops.__all__)
