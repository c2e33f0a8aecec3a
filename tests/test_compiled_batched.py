"""The compiled engine's batched layout (big batches: NHWC, GEMMs over half-batches)
against the NumPy reference.

* step parity: from the same state, one step of every rule the layout runs x every
  optimizer x both dtypes, on random architectures (groups, stride, padding, bias,
  direct and GEMM convolutions, routed or not, max- and average pools, per-channel
  activations, the three losses, replicas, weight decay): float64 to 1e-10 (the
  parameter update, the optimizer's and the rule's arrays); float32 to 1e-5 (the
  step's gradient, the optimizer's and the rule's arrays, the new parameters relative
  to the largest parameter: in float32 the update p_new - p_old itself loses digits
  to the subtraction, one ulp of p being ~1e-5 of an update);
* a few free-running steps with partial batches and a schedule at a small learning
  rate (1e-10, float64);
* determinism: bit-identical on one or two threads, run to run, and a replica alone or
  among others;
* resume from a checkpoint bit-identical; the engine's choice; refusals.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from compiled_cases import (
    append_head,
    assert_same_checkpoint,
    checkpointed_fit,
    optimizer_with_state,
    random_data,
)

from handprop import Activation, Conv2d, Dense, Flatten, MaxPool2d, Network, PerChannelActivation
from handprop.core.ops.avgpool import AvgPool2d
from handprop.core.ops.batchnorm import BatchNorm2d
from handprop.core.ops.losses import get_loss
from handprop.core.presets import lenet, seed_as_run, seed_net
from handprop.rules import make_rule
from handprop.training.checkpoint import load_checkpoint
from handprop.training.epoch import NumpyEpoch
from handprop.training.loop import TrainConfig, fit, targets_for
from handprop.training.optim import make_optimizer

pytest.importorskip("numba")

from handprop.training.compiled import UnsupportedError, compiled_engine  # noqa: E402
from handprop.training.compiled.kernels_conv import CONV  # noqa: E402
from handprop.training.compiled.kernels_norm import AVG  # noqa: E402

RULES = ("exact", "fa", "usf", "frsf", "brsf", "dfa", "dfa-biotorch", "kp")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
DTYPES = ("float64", "float32")
LOSSES = (("softmax_ce", "mean"), ("l2", "sum"), ("bce", "mean"), ("softmax_ce", "sum"),
          ("l2", "mean"), ("bce", "sum"))
ACTIVATIONS = ("relu", "tanh", "arctan", "sigmoid", "identity", "leaky_relu:0.1")
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}


def _activation(rng, channels: int, name: str):
    if channels > 1 and rng.random() < 0.4:
        return PerChannelActivation([str(rng.choice(ACTIVATIONS)) for _ in range(channels)],
                                    name=name)
    return Activation(str(rng.choice(ACTIVATIONS)), name=name)


def _pool(rng, side: int, name: str):
    """A max-pool (sometimes overlapping), an average pool, or none."""
    kind = rng.random()
    if kind < 0.6 and side >= 2:
        return MaxPool2d(2, stride=int(rng.choice([1, 2])), name=name)
    if kind < 0.85 and side >= 3:
        k = int(rng.integers(2, 4))
        return AvgPool2d(k, stride=int(rng.integers(1, 3)),
                         padding=int(rng.integers(0, k // 2 + 1)),
                         count_include_pad=bool(rng.random() < 0.5), name=name)
    return None


def random_batched_net(seed: int, loss: str) -> Network:
    """A random CNN for the batched layout: 1-2 conv blocks (1-12 channels, kernels 1-5,
    groups, stride, padding, bias; single or per-channel activations; a max-pool, an
    average pool or none), 1-2 hidden dense layers, the loss's output."""
    rng = np.random.default_rng(seed)
    first = (int(rng.integers(1, 4)), int(rng.integers(8, 13)), int(rng.integers(8, 13)))
    shape = first
    layers: list = []
    for block in range(int(rng.integers(1, 3))):
        groups = int(rng.choice([g for g in (1, 2, 3) if shape[0] % g == 0]))
        out = groups * int(rng.integers(1, 5))
        padding = int(rng.integers(0, 3))
        kernel = int(rng.integers(1, min(5, min(shape[1:]) + 2 * padding) + 1))
        stride = int(rng.integers(1, 3)) if min(shape[1:]) >= 7 else 1
        layers.append(Conv2d(out, kernel, stride=stride, padding=padding, groups=groups,
                             bias=bool(rng.random() < 0.6), name=f"conv{block}"))
        current = Network(list(layers), first).shapes[-1]
        layers.append(_activation(rng, current[0], f"cact{block}"))
        pool = _pool(rng, min(current[1:]), f"pool{block}")
        if pool is not None:
            layers.append(pool)
        shape = Network(list(layers), first).shapes[-1]
    layers.append(Flatten(name="flatten"))
    append_head(rng, layers, loss, ACTIVATIONS, widest=11, bias=0.6)
    return Network(layers, first, loss=loss, init="lecun", name=f"batched{seed}")


def _rel(actual, expected, scale=None) -> float:
    """max |a - b| / max |b| (or / ``scale``)."""
    expected = np.asarray(expected, np.float64)
    top = float(np.abs(expected).max()) if scale is None else scale
    diff = float(np.abs(np.asarray(actual, np.float64) - expected).max())
    return diff / top if top > 0 else diff


def _one_engine(net, rule, optimizer, loss, reduction, batch, seed, replicas, decay, data,
                batched):
    """One step from the given state; what it changed."""
    copy_net = copy.deepcopy(net)
    seeds = list(range(seed, seed + replicas)) if replicas else seed
    bound = make_rule(rule, copy_net, seeds) if rule != "exact" else None
    opt = optimizer_with_state(optimizer, copy_net.flat, np.random.default_rng(seed), decay)
    grads: list[np.ndarray] = []
    step = opt.step
    opt.step = lambda params, g, frozen=None: (grads.append(g.copy()), step(params, g, frozen))
    before = copy_net.flat.copy()
    rule_before = copy.deepcopy(bound.state()) if bound is not None else {}
    if batched:
        runner = compiled_engine(copy_net, bound, opt, loss, reduction, batch, layout="batched")
    else:
        runner = NumpyEpoch(copy_net, bound, opt, get_loss(loss, reduction), batch)
    x, y = data
    rows = replicas or 1
    with np.errstate(all="ignore"):
        result = runner.run_epoch(x, y, np.full(rows, batch), np.ones(rows, bool))
    if batched:
        grads.append(runner.runner.work.gsum[0].copy())  # the last replica's gradient
    states = {k: v for k, v in opt.state().items() if isinstance(v, np.ndarray)}
    rule_after = bound.state() if bound is not None else {}
    moved = {k: np.asarray(rule_after[k]) - np.asarray(rule_before[k])
             for k in rule_after if isinstance(rule_after[k], np.ndarray)}
    return {"result": result, "before": before, "after": copy_net.flat.copy(),
            "grad": grads[-1].reshape(-1, net.num_params)[-1], "states": states, "rule": rule_after,
            "moved": moved}


def step_errors(net, rule, optimizer, loss, reduction, batch, seed, dtype, replicas=None,
                decay=0.0) -> dict[str, float]:
    """One step on both engines from the same state; the largest relative differences."""
    net.init(seed, dtype=dtype,
             replicas=None if replicas is None else list(range(seed, seed + replicas)))
    x, labels = random_data(net, seed, batch, replicas)
    data = (x.astype(dtype), targets_for(net, labels, loss, net.dtype))
    ref, got = (_one_engine(net, rule, optimizer, loss, reduction, batch, seed, replicas,
                            decay, data, batched) for batched in (False, True))
    assert ref["result"].steps == got["result"].steps == 1
    assert np.array_equal(ref["result"].bad_step, got["result"].bad_step)
    errors = {"cost": _rel(got["result"].cost, ref["result"].cost)}
    if not decay:  # (the engine adds the decay to its gradient buffer in place)
        errors["grad"] = _rel(got["grad"], ref["grad"])
    if dtype == "float64":
        errors["update"] = _rel(got["after"] - got["before"], ref["after"] - ref["before"])
    else:
        errors["params"] = _rel(got["after"], ref["after"])
    for key, value in ref["states"].items():
        errors[key] = _rel(got["states"][key], value)
    for key, value in ref["moved"].items():  # kp's B learns; brSF's draws are the rule's
        scale = None if dtype == "float64" else float(np.abs(ref["rule"][key]).max())
        errors[f"rule {key}"] = _rel(got["moved"][key], value, scale)
    return errors


CASES = [(rule, optimizer, dtype) for rule in RULES for optimizer in OPTIMIZERS
         for dtype in DTYPES]


@pytest.mark.parametrize(("rule", "optimizer", "dtype"), CASES,
                         ids=[f"{r}-{o}-{d}" for r, o, d in CASES])
def test_one_step_matches_numpy_on_random_architectures(rule, optimizer, dtype):
    """Two random nets per case, cycling losses, reductions, batch sizes (16-21, halves
    of unequal sizes), replicas and weight decay."""
    base = CASES.index((rule, optimizer, dtype))
    for offset in range(2):
        k = 2 * base + offset
        loss, reduction = LOSSES[k % len(LOSSES)]
        net = random_batched_net(k, loss)
        errors = step_errors(net, rule, optimizer, loss, reduction, batch=16 + k % 6, seed=k,
                             dtype=dtype, replicas=2 if k % 5 == 0 else None,
                             decay=0.01 if k % 4 == 1 and dtype == "float64" else 0.0)
        worst = max(errors.values())
        assert worst <= TOLERANCE[dtype], f"{net.name} {loss}/{reduction}: {errors}"


def _batched_ops(net, loss="softmax_ce", reduction="mean", batch=16, rule=None):
    """The batched layout's op rows for ``net`` (its runner built, nothing compiled)."""
    engine = compiled_engine(net, rule, make_optimizer("sgd", 0.1), loss, reduction, batch,
                             layout="batched")
    return engine.runner.plan.tables.ops


def test_the_random_architectures_cover_every_path():
    """Across the parity cases: direct and GEMM convolutions, routed (from the pool's
    winners) and not, groups, stride 2, average pools."""
    seen = set()
    for k in range(2 * len(CASES)):
        loss, reduction = LOSSES[k % len(LOSSES)]
        for op in _batched_ops(random_batched_net(k, loss).init(k), loss, reduction):
            if op["kind"] == CONV:
                seen.add("direct" if op["direct"] else ("gemm routed" if op["routed"] >= 0
                                                        else "gemm"))
                seen |= {"groups"} if op["groups"] > 1 else set()
                seen |= {"stride 2"} if op["stride_h"] == 2 else set()
            seen |= {"avg"} if op["kind"] == AVG else set()
    assert seen >= {"direct", "gemm routed", "gemm", "groups", "stride 2", "avg"}, seen


def test_direct_convs_in_blocks_of_samples_match_numpy():
    """16x16 maps: a direct conv stacks two samples per block (halves of 7: blocks of
    2, 2, 2, 1), with its input gradient (a conv below it)."""
    net = Network([Conv2d(3, 1, name="conv0"), Activation("tanh", name="act0"),
                   Conv2d(4, 3, padding=1, name="conv1"), Activation("relu", name="act1"),
                   MaxPool2d(2, name="pool1"), Flatten(name="flatten"), Dense(3, name="out")],
                  (1, 16, 16), loss="softmax_ce", init="lecun", name="blocks")
    ops = _batched_ops(net.init(0))
    assert ops[2]["direct"] and ops[2]["block"] == 2
    for rule in ("exact", "fa"):
        errors = step_errors(net, rule, "sgd", "softmax_ce", "mean", batch=14, seed=3,
                             dtype="float64")
        assert max(errors.values()) <= TOLERANCE["float64"], (rule, errors)


def test_a_direct_conv_under_a_wide_strided_pool_matches_numpy():
    """A max-pool whose stride (5) is wider than its window: the pool's dropped lanes read
    past the last plane by up to 15 strides (the work area's spare values)."""
    net = Network([Conv2d(2, 3, padding=1, name="conv0"), Activation("relu", name="act0"),
                   MaxPool2d(2, stride=5, name="pool0"), Flatten(name="flatten"),
                   Dense(3, name="out")], (1, 12, 12), loss="softmax_ce", init="lecun",
                  name="wide-pool")
    assert _batched_ops(net.init(0))[0]["direct"]
    for dtype in DTYPES:
        errors = step_errors(net, "exact", "sgd", "softmax_ce", "mean", batch=17, seed=2,
                             dtype=dtype)
        assert max(errors.values()) <= TOLERANCE[dtype], (dtype, errors)


def test_lenet_step_matches_numpy():
    for dtype in DTYPES:
        errors = step_errors(lenet(), "exact", "momentum", "softmax_ce", "mean", batch=64,
                             seed=1, dtype=dtype)
        assert max(errors.values()) <= TOLERANCE[dtype], (dtype, errors)


# -- free-running, determinism -------------------------------------------------------


def small_cnn_net() -> Network:
    """Big enough for the batched layout at batch 16 (LeNet-like on 14x14)."""
    return Network([Conv2d(6, 5, padding=2, name="conv1"), Activation("relu", name="act1"),
                    MaxPool2d(2, name="pool1"), Conv2d(12, 3, padding=1, name="conv2"),
                    Activation("relu", name="act2"), MaxPool2d(2, name="pool2"),
                    Flatten(name="flatten"), Dense(32, name="fc3"),
                    Activation("relu", name="act3"), Dense(10, name="fc4")],
                   (1, 14, 14), loss="softmax_ce", init="torch", name="small14")


def _images(count: int, replicas: int | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    lead = (replicas,) if replicas else ()
    return rng.random((*lead, count, 1, 14, 14)), rng.integers(0, 10, (*lead, count))


def _fit(engine, rule="exact", threads=1, replicas=None, epochs=2, lr=0.05, optimizer="momentum",
         schedule="constant", dtype="float64", count=37, seeds=(3, 4, 5)):
    net = small_cnn_net().init(seeds[0], dtype=dtype,
                               replicas=list(seeds[:replicas]) if replicas else None)
    x, y = _images(count, replicas)
    bound = make_rule(rule, net, list(seeds[:replicas]) if replicas else seeds[0]) \
        if rule != "exact" else None
    config = TrainConfig(epochs=epochs, batch_size=16, lr=lr, optimizer=optimizer,
                         schedule=schedule, shuffle=True, seed=seeds[0], dtype=dtype)
    history = fit(net, x, y, config, rule=bound, engine=engine, threads=threads)
    return net, history, bound


@pytest.mark.parametrize("rule", ["exact", "kp", "brsf", "dfa"])
def test_free_running_matches_numpy_with_partial_batches(rule):
    """37 samples in batches of 16 (16, 16, 5: halves 8/8 and 2/3), a step schedule, at
    a small learning rate (not chaotic)."""
    (ref, _, ref_rule), (got, history, got_rule) = (
        _fit(engine, rule, lr=1e-3, epochs=3, schedule="step", optimizer="nesterov")
        for engine in ("numpy", "compiled"))
    assert history.extra["layout"] == "batched"
    assert _rel(got.flat, ref.flat) <= 1e-10
    for key, value in (ref_rule.state() if ref_rule is not None else {}).items():
        if isinstance(value, np.ndarray):
            assert _rel(got_rule.state()[key], value) <= 1e-10, key


@pytest.mark.parametrize(("rule", "replicas"), [("exact", None), ("kp", None), ("brsf", None),
                                                ("dfa-biotorch", 3), ("brsf", 3)])
def test_bit_identical_on_one_or_two_threads_and_run_to_run(rule, replicas):
    runs = [_fit("compiled", rule, threads=threads, replicas=replicas, dtype="float32")
            for threads in (1, 2, 2)]
    assert runs[0][1].extra["layout"] == "batched"
    for net, history, bound in runs[1:]:
        assert np.array_equal(net.flat, runs[0][0].flat)
        assert np.array_equal(history.cost, runs[0][1].cost, equal_nan=True)
        for key, value in (bound.state() if bound is not None else {}).items():
            if isinstance(value, np.ndarray):
                assert np.array_equal(value, runs[0][2].state()[key]), key


def test_a_replica_alone_equals_the_replica_among_others():
    group, _, _ = _fit("compiled", "fa", replicas=3, threads=2)
    x, y = _images(37, 3)
    for r, seed in enumerate((3, 4, 5)):
        net = small_cnn_net().init(seed)
        bound = make_rule("fa", net, seed)
        config = TrainConfig(epochs=2, batch_size=16, lr=0.05, shuffle=True, seed=seed)
        fit(net, x[r], y[r], config, rule=bound, engine="compiled")
        assert np.array_equal(net.flat, group.flat[r]), r


# -- checkpoints ---------------------------------------------------------------------


def _checkpointed(folder, epochs, rule, optimizer, stop_after=None, resume=None):
    """fit with a checkpoint after every epoch (as tests/test_compiled_engine.py does)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(epochs=epochs, lr=0.02, optimizer=optimizer, shuffle=True, seed=6,
                         batch_size=16, schedule="cosine", dtype="float32")
    net = small_cnn_net().init(6, dtype="float32")
    path = folder / "run.npz"
    x, y = _images(40)
    history = checkpointed_fit(path, net, make_rule(rule, net, 6), x, y, config, "compiled",
                               stop_after, resume)
    assert history.extra["layout"] == "batched"
    return path


@pytest.mark.parametrize(("rule", "optimizer"), [("kp", "adam"), ("brsf", "momentum"),
                                                 ("dfa", "sgd")])
def test_resume_is_bit_identical(tmp_path, rule, optimizer):
    whole = load_checkpoint(_checkpointed(tmp_path / "whole", 4, rule, optimizer))
    part = _checkpointed(tmp_path / "part", 4, rule, optimizer, stop_after=2)
    resumed = load_checkpoint(_checkpointed(tmp_path / "resumed", 4, rule, optimizer,
                                            resume=part))
    assert resumed.meta["state"]["epoch"] == 4
    assert_same_checkpoint(whole, resumed)


# -- choosing the layout, refusing ---------------------------------------------------


def test_big_batches_run_in_the_batched_layout():
    """LeNet in batches of 16 and more (big work per step) runs in the batched layout,
    chosen by ``auto``; in batches of 8 the compiled engine would run it per replica,
    slower than NumPy, so ``auto`` keeps NumPy."""
    from handprop.training.epoch import compiled_is_faster

    opt = make_optimizer("momentum", 0.01, 0.9)
    net = lenet().init(0, dtype="float32")
    assert compiled_engine(net, None, opt, "softmax_ce", "mean", 64).layout.name == "batched"
    assert compiled_engine(net, None, opt, "softmax_ce", "mean", 8).layout.name != "batched"
    assert compiled_is_faster(net, 16) and not compiled_is_faster(net, 8)
    x = np.random.default_rng(0).random((20, 1, 28, 28), dtype=np.float32)
    history = fit(net, x, np.arange(20) % 10, TrainConfig(epochs=1, batch_size=16, lr=0.01,
                                                          dtype="float32"), engine="auto")
    assert history.extra["layout"] == "batched"


def _refusal(net, rule=None, loss="softmax_ce") -> str:
    net.init(0)
    bound = make_rule(rule, net, 0) if isinstance(rule, str) else rule
    with pytest.raises(UnsupportedError) as caught:
        _batched_ops(net, loss, "mean", 32, bound)
    return str(caught.value)


def test_refusals_name_the_reason():
    norm = Network([Conv2d(4, 3, name="conv1"), BatchNorm2d(name="bn1"), Flatten(name="f"),
                    Dense(3, name="out")], (1, 8, 8), loss="softmax_ce")
    assert "batched: layer 'bn1' (BatchNorm2d) is not run in it" in _refusal(norm)
    assert ("batched: rule 'seed-broken' (SeedBroken): max-pool lines other than the first "
            "winner's") in _refusal(seed_net(), "seed-broken", "l2")
    assert "(AsRunConv2d) is not run in it" in _refusal(seed_as_run(), None, "l2")
    assert "(RuleSet) has no compiled form" in _refusal(small_cnn_net(), "conv1=fa,*=exact")
    conv_last = Network([Conv2d(4, 3, name="conv1"), Activation("relu", name="act"),
                         Conv2d(2, 6, name="conv2"), Flatten(name="f")], (1, 8, 8),
                        loss="softmax_ce")
    assert "the output error of a conv layer" in _refusal(conv_last, "dfa")
    maps = Network([Conv2d(2, 3, name="conv1"), Activation("relu", name="act")], (1, 6, 6),
                   loss="l2")
    assert "an output of maps" in _refusal(maps, None, "l2")


def test_frozen_replicas_match_numpy():
    """Replicas whose data has run out sit out an epoch's last steps (the engine
    contract, as in every layout): their parameters, optimizer state and redrawn
    matrices stay as they were."""
    x, labels = _images(40, 3)
    y = targets_for(small_cnn_net(), labels, "softmax_ce", np.float64)
    sizes = np.array([40, 17, 9])
    nets = {}
    for batched in (False, True):
        net = small_cnn_net().init(3, replicas=[3, 4, 5])
        bound = make_rule("brsf", net, [3, 4, 5])
        opt = make_optimizer("adam", 1e-3)
        runner = (compiled_engine(net, bound, opt, "softmax_ce", "mean", 16, layout="batched")
                  if batched else NumpyEpoch(net, bound, opt, get_loss("softmax_ce", "mean"),
                                             16))
        result = runner.run_epoch(x, y, sizes, np.ones(3, bool))
        nets[batched] = (net, result)
    (ref, ref_result), (got, result) = nets[False], nets[True]
    assert _rel(got.flat, ref.flat) <= 1e-10
    assert _rel(result.cost, ref_result.cost) <= 1e-10


def test_every_registered_rule_runs_in_the_batched_layout_or_is_refused():
    """Those this file tests (parity, free-running, determinism, resume), fa-glorot and
    sign (the coverage tests compare them on the seed net in this layout); any other
    registered rule is refused with a reason."""
    from handprop.rules import RULES as REGISTERED

    runs = {*RULES, "fa-glorot", "sign"}
    assert set(REGISTERED) >= runs
    for name in sorted(set(REGISTERED) - runs):
        assert "batched: rule '" in _refusal(seed_net(), name, "l2"), name
    net = small_cnn_net().init(0)
    for name in sorted(runs - {"exact"}):
        assert len(_batched_ops(net, rule=make_rule(name, net, 0))), name
