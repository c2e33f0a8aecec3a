"""Random architectures and one-step comparisons of the compiled engine with NumPy's."""

from __future__ import annotations

import copy

import numpy as np

from handprop import Activation, Conv2d, Dense, Flatten, MaxPool2d, Network, PerChannelActivation
from handprop.core.ops.avgpool import AvgPool2d
from handprop.core.ops.batchnorm import BatchNorm2d
from handprop.core.ops.losses import get_loss
from handprop.core.ops.scale import Scale
from handprop.rules import make_rule
from handprop.training.epoch import NumpyEpoch
from handprop.training.loop import targets_for
from handprop.training.optim import make_optimizer

ACTIVATIONS = ("relu", "tanh", "arctan", "sigmoid", "identity", "leaky_relu:0.1")
RULE_NAMES = ("exact", "seed-original", "seed-broken", "broken-upstream", "broken-upstream-t",
              "broken-mask", "broken-mask-t", "broken-text", "fa", "fa-glorot", "usf", "frsf",
              "brsf", "dfa")
SQUARE_RULES = ("broken-upstream-t", "broken-mask-t", "broken-text")  # transpose: square maps
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
LOSSES = (("l2", "sum"), ("bce", "mean"), ("softmax_ce", "mean"), ("l2", "mean"),
          ("softmax_ce", "sum"), ("bce", "sum"))


def _activation(rng: np.random.Generator, channels: int, name: str,
                choices: tuple[str, ...] = ACTIVATIONS) -> object:
    if channels > 1 and rng.random() < 0.6:
        names = [str(rng.choice(choices)) for _ in range(channels)]
        return PerChannelActivation(names, name=name)
    return Activation(str(rng.choice(choices)), name=name)


def random_net(seed: int, loss: str, square: bool = False,
               activations: tuple[str, ...] = ACTIVATIONS) -> Network:
    """A random small CNN: 1-2 conv blocks (groups, stride, padding, bias; per-channel or
    single activations; max-pools, sometimes overlapping), 1-2 hidden dense layers."""
    rng = np.random.default_rng(seed)
    channels = int(rng.integers(1, 4))
    height = int(rng.integers(6, 11))
    width = height if square or rng.random() < 0.5 else int(rng.integers(6, 11))
    shape = (channels, height, width)
    layers: list = []
    for block in range(int(rng.integers(1, 3))):
        divisors = [g for g in (1, 2, 3) if shape[0] % g == 0]
        groups = int(rng.choice(divisors))
        out = groups * int(rng.integers(1, 3))
        padding = int(rng.integers(0, 2))
        most = min(3, min(shape[1:]) + 2 * padding)
        kh = int(rng.integers(1, most + 1))
        kw = kh if square or rng.random() < 0.6 else int(rng.integers(1, most + 1))
        stride = int(rng.integers(1, 3)) if min(shape[1:]) >= 6 else 1
        conv = Conv2d(out, (kh, kw), stride=stride, padding=padding, groups=groups,
                      bias=bool(rng.random() < 0.5), name=f"conv{block}")
        layers.append(conv)
        shape = Network([*layers], (channels, height, width)).shapes[-1]
        layers.append(_activation(rng, shape[0], f"cact{block}", activations))
        side = min(shape[1:])
        pool_k = 2 if side >= 2 else 1
        pool_s = int(rng.choice([1, 2])) if side >= 3 else pool_k
        layers.append(MaxPool2d(pool_k, stride=pool_s, name=f"pool{block}"))
        shape = Network([*layers], (channels, height, width)).shapes[-1]
    layers.append(Flatten(name="flatten"))
    append_head(rng, layers, loss, activations)
    return Network(layers, (channels, height, width), loss=loss, init="lecun",
                   name=f"random{seed}")


def append_head(rng: np.random.Generator, layers: list, loss: str,
                activations: tuple[str, ...] = ACTIVATIONS, widest: int = 8,
                bias: float = 0.5) -> None:
    """1-2 hidden dense layers (3..``widest`` units, each with a bias at probability
    ``bias``) with activations, then the loss's output: 3 classes for softmax, 1-2
    units for the others (a sigmoid for bce, sometimes an activation for l2)."""
    for hidden in range(int(rng.integers(1, 3))):
        layers.append(Dense(int(rng.integers(3, widest + 1)), bias=bool(rng.random() < bias),
                            name=f"fc{hidden}"))
        layers.append(_activation(rng, 1, f"fact{hidden}", activations))
    classes = 3 if loss == "softmax_ce" else int(rng.integers(1, 3))
    layers.append(Dense(classes, bias=bool(rng.random() < bias), name="out"))
    if loss == "bce":
        layers.append(Activation("sigmoid", name="prob"))
    elif loss == "l2" and rng.random() < 0.5:
        layers.append(Activation(str(rng.choice(activations)), name="outact"))


def dyadic(net: Network) -> Network:
    """Round the weights to multiples of 1/4: with small-integer inputs and piecewise
    linear activations every sum is then exact in any order, so tied window maxima are
    tied in both engines (a tie between two *rounded* sums could break either way
    depending on the order of the additions, and routing is discontinuous there)."""
    net.flat[...] = np.round(net.flat * 4) / 4
    return net


def random_data(net: Network, seed: int, count: int, replicas: int | None,
                integers: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and labels for the net's task: normal values (ties only where values are
    exact, e.g. ReLU's zeros), or small integers (many ties; see :func:`dyadic`)."""
    rng = np.random.default_rng(seed + 1000)
    lead = (replicas,) if replicas else ()
    shape = (*lead, count, *net.input_shape)
    x = rng.integers(-3, 4, shape).astype(float) if integers else rng.normal(0, 1.5, shape)
    classes = max(net.output_shape[-1], 2)
    labels = rng.integers(0, classes, (*lead, count))
    if net.output_shape[-1] == 1:
        labels = labels % 2
    return x, labels


def optimizer_with_state(name: str, flat: np.ndarray, rng: np.random.Generator,
                         decay: float):
    """An optimizer with a non-trivial state, as after some steps."""
    lr = {"sgd": 0.05, "momentum": 0.05, "nesterov": 0.05, "adam": 0.01}[name]
    opt = make_optimizer(name, lr, 0.7 if name != "sgd" else None, weight_decay=decay)
    opt.init_state(flat)
    for attr in ("velocity", "buffer", "m"):
        if getattr(opt, attr, None) is not None:
            getattr(opt, attr)[...] = rng.normal(0, 0.01, flat.shape)
    if name == "adam":
        opt.v[...] = rng.random(flat.shape) * 1e-4
        opt.steps = 3
    return opt


def one_step(net: Network, rule: str, optimizer: str, loss: str, reduction: str, batch: int,
             seed: int, replicas: int | None = None, decay: float = 0.0,
             ties: bool = False, layout: str | None = None, jitter: float = 0.0
             ) -> dict[str, float]:
    """One step from the same state on both engines; the largest relative differences
    of the cost, the parameter update and the optimizer state. ``ties``: dyadic
    weights and integer inputs (see :func:`dyadic`); ``layout``: the compiled layout
    that runs it (chosen for the work if None); ``jitter``: normal noise of that size added to every
    parameter (so that none keeps a constant initial value, e.g. a scale of 1)."""
    from handprop.training.compiled import compiled_engine

    net.init(seed, replicas=None if replicas is None else list(range(seed, seed + replicas)))
    if ties:
        dyadic(net)
    if jitter:
        net.flat += jitter * np.random.default_rng(seed + 2000).standard_normal(net.flat.shape)
    x, labels = random_data(net, seed, batch, replicas, integers=ties)
    y = targets_for(net, labels, loss, net.dtype)
    sizes = np.full(replicas or 1, batch)
    alive = np.ones(replicas or 1, bool)
    results = []
    for engine in ("numpy", "compiled"):
        copy_net = copy.deepcopy(net)
        bound = make_rule(rule, copy_net, list(range(seed, seed + (replicas or 1)))
                          if replicas else seed) if rule != "exact" else None
        opt = optimizer_with_state(optimizer, copy_net.flat, np.random.default_rng(seed), decay)
        start = copy_net.flat.copy()
        if engine == "numpy":
            runner = NumpyEpoch(copy_net, bound, opt, get_loss(loss, reduction), batch)
        else:
            runner = compiled_engine(copy_net, bound, opt, loss, reduction, batch,
                                     layout=layout)
            assert layout is None or runner.layout.name == layout, runner.layout.name
        with np.errstate(all="ignore"):
            result = runner.run_epoch(x, y, sizes, alive)
        state = {k: v for k, v in opt.state().items() if isinstance(v, np.ndarray)}
        state["buffers"] = copy_net.buffer_flat  # running statistics
        results.append((result, copy_net.flat - start, state, opt.steps))
    (ref, ref_update, ref_state, ref_steps), (got, update, state, steps) = results
    assert ref.steps == got.steps == 1 and ref_steps == steps
    assert np.array_equal(ref.bad_step, got.bad_step)
    errors = {"cost": _rel(got.cost, ref.cost), "update": _rel(update, ref_update)}
    for key in ref_state:
        errors[key] = _rel(state[key], ref_state[key])
    return errors


def norm_net(seed: int, affine: bool = True, padding: int = 1, count_include_pad: bool = True,
             stride: int = 2) -> Network:
    """A small CNN with batch norm and average pooling (no max-pool: the article's line
    rules do not apply to it)."""
    return Network([Conv2d(3, 3, padding=1, name="conv1"),
                    BatchNorm2d(affine=affine, name="bn1"), Activation("tanh", name="act1"),
                    AvgPool2d(3, stride=stride, padding=padding,
                              count_include_pad=count_include_pad, name="avg1"),
                    Conv2d(2, 2, name="conv2"), Activation("relu", name="act2"),
                    Flatten(name="flatten"), Dense(4, name="fc"), Activation("arctan", name="act3"),
                    Dense(1, name="out")], (1, 8, 8), loss="l2", init="lecun",
                   name=f"norm{seed}")


# How one_step reaches each compiled layout: (batch, replicas).
LAYOUT_RUNS = {"per-replica": (1, None), "lanes": (3, 9), "batch-lanes": (8, None),
               "batched": (5, 2)}


def op_net(kind: str) -> Network:
    """A small net with a layer of ``kind`` (the coverage tests' network for each compiled
    op); nothing else in it keeps the op out of a layout its kernels allow."""
    from handprop.core.presets import seed_as_run, seed_net

    if kind == "as_run_conv2d":
        return seed_as_run((5, 4))
    if kind == "batch_norm2d":
        return norm_net(0)
    if kind == "avg_pool2d":
        return Network([Conv2d(3, 3, padding=1, bias=False, name="conv1"),
                        Activation("tanh", name="act1"), AvgPool2d(3, stride=2, padding=1,
                                                                  name="avg1"),
                        Flatten(name="flatten"), Dense(4, bias=False, name="fc"),
                        Activation("arctan", name="act2"), Dense(1, bias=False, name="out")],
                       (1, 8, 8), loss="l2", init="lecun", name="avg")
    if kind == "scale":
        return Network([Conv2d(3, 3, padding=1, bias=False, name="conv1"), Scale(name="scale1"),
                        Activation("tanh", name="act1"), MaxPool2d(2, name="pool1"),
                        Flatten(name="flatten"), Dense(4, bias=False, name="fc"),
                        Scale(name="scale2"), Activation("arctan", name="act2"),
                        Dense(1, bias=False, name="out")], (1, 8, 8), loss="l2", init="lecun",
                       name="scaled")
    return seed_net((5, 4))  # conv, per-channel and single activations, pool, flatten, dense


def _rel(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |a - b| / max |b| (0 when both are all zero)."""
    scale = float(np.abs(expected).max()) if np.size(expected) else 0.0
    diff = float(np.abs(np.asarray(actual) - expected).max()) if np.size(expected) else 0.0
    return diff / scale if scale > 0 else diff


def checkpointed_fit(path, net: Network, bound, x: np.ndarray, y: np.ndarray, config,
                     engine: str, stop_after: int | None = None, resume=None):
    """fit with a checkpoint written to ``path`` after every epoch; optionally stop after
    ``stop_after`` epochs, or first resume from the checkpoint ``resume`` (the network,
    the rule's and the optimizer's state, the loop's). Returns the history."""
    from handprop.training.checkpoint import load_checkpoint, save_checkpoint
    from handprop.training.loop import TrainState, fit

    state = None
    if resume is not None:
        saved = load_checkpoint(resume)
        net.set_params(net.unflatten(saved.params))
        bound.load_state({**saved.meta["rule_state"], **saved.rule})
        state = TrainState.restore(saved.meta["state"],
                                   {**saved.meta["optimizer_state"], **saved.optimizer}, config)
    done = []

    def on_epoch(epoch, history):
        s = history.state
        save_checkpoint(path, net, {"state": s.to_meta(), "config": config.to_dict()},
                        optimizer_state=s.optimizer.state(), rule_state=bound.state())
        done.append(epoch)

    return fit(net, x, y, config, rule=bound, engine=engine, state=state, on_epoch=on_epoch,
               stop=lambda: stop_after is not None and len(done) >= stop_after)


def assert_same_checkpoint(whole, resumed) -> None:
    """Two loaded checkpoints hold the same bits: parameters, optimizer and rule arrays,
    the cost and the rule's other state."""
    assert np.array_equal(whole.params, resumed.params)
    for saved in ("optimizer", "rule"):
        for key, value in getattr(whole, saved).items():
            assert np.array_equal(value, getattr(resumed, saved)[key]), (saved, key)
    assert whole.meta["state"]["cost"] == resumed.meta["state"]["cost"]
    assert whole.meta["rule_state"] == resumed.meta["rule_state"]
