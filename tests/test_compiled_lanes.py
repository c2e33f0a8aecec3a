"""The lane layout (eight replicas per block, replica axis innermost) against the
per-replica kernels: the same bits for every replica, whatever shares its block.

A replicated run uses lanes (from three replicas on), a single network the per-replica
kernels (online) or its samples in lanes (batches of multiples of 8), so "a replica
alone equals the replica among others" compares the layouts.
"""

from __future__ import annotations

import numpy as np
import pytest

from handprop.core.presets import seed_as_run, seed_net
from handprop.rules import make_rule
from handprop.training.data import load_digits
from handprop.training.loop import TrainConfig, fit

pytest.importorskip("numba")


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


def _group(build, digits, seeds, counts, rule, threads=1, scale=None, epochs=2):
    """Train ``len(seeds)`` replicas on the first ``max(counts)`` digits (replica r on
    its first counts[r]; ``scale`` multiplies one replica's images)."""
    n = max(counts)
    x = np.stack([digits.x_train[:n]] * len(seeds))
    if scale is not None:
        x[scale[0]] *= scale[1]
    y = np.stack([digits.y_train[:n]] * len(seeds))
    net = build().init(seeds[0], replicas=seeds)
    bound = make_rule(rule, net, seeds) if rule != "exact" else None
    config = TrainConfig(epochs=epochs, seed=seeds[0])
    history = fit(net, x, y, config, rule=bound, counts=counts, engine="compiled",
                  threads=threads)
    return net, history


def _alone(build, digits, seed, count, rule, epochs=2):
    net = build().init(seed)
    bound = make_rule(rule, net, seed) if rule != "exact" else None
    history = fit(net, digits.x_train[:count], digits.y_train[:count],
                  TrainConfig(epochs=epochs, seed=seed), rule=bound, engine="compiled")
    return net, history


@pytest.mark.parametrize(("build", "rule"), [(seed_net, "seed-broken"),
                                             (seed_as_run, "seed-original"),
                                             (seed_net, "exact")])
def test_each_lane_equals_its_replica_alone(digits, build, rule):
    """Nine replicas (two blocks, one padded), three of them frozen in the last steps."""
    seeds = list(range(20, 29))
    counts = [40 if r % 3 else 31 for r in range(len(seeds))]
    group, history = _group(build, digits, seeds, counts, rule)
    for r in (0, 1, 3, 8):
        net, alone = _alone(build, digits, seeds[r], counts[r], rule)
        assert np.array_equal(group.flat[r], net.flat), f"replica {r}"
        assert np.array_equal(history.cost[:, r], alone.cost), f"replica {r}"


def test_blocks_on_two_threads_give_the_same_bits(digits):
    seeds = list(range(17))  # three blocks
    counts = [30 - r % 4 for r in seeds]
    one, h1 = _group(seed_net, digits, seeds, counts, "seed-broken", threads=1, epochs=1)
    two, h2 = _group(seed_net, digits, seeds, counts, "seed-broken", threads=2, epochs=1)
    assert np.array_equal(one.flat, two.flat)
    assert np.array_equal(h1.cost, h2.cost)


def test_a_diverging_lane_leaves_the_others_alone(digits):
    """Replica 1's images are scaled up until it overflows; its neighbours in the block
    train exactly as they would alone."""
    seeds, counts = [5, 6, 7], [30, 30, 30]
    group, history = _group(seed_net, digits, seeds, counts, "exact", scale=(1, 1e306))
    assert history.diverged[1] is not None
    assert not np.isfinite(group.flat[1]).all()
    for r in (0, 2):
        net, alone = _alone(seed_net, digits, seeds[r], counts[r], "exact")
        assert history.diverged[r] is None
        assert np.array_equal(group.flat[r], net.flat), f"replica {r}"
        assert np.array_equal(history.cost[:, r], alone.cost)


# -- one network's minibatch samples in lanes -------------------------------------------


@pytest.mark.parametrize("rule", ["exact", "seed-broken", "fa", "brsf", "dfa"])
def test_batches_in_lanes_match_numpy(rule):
    """Batches of 8, 16, 24 samples of one network (samples in lanes), every loss."""
    from compiled_cases import one_step, random_net

    for batch, optimizer in ((8, "momentum"), (16, "adam"), (24, "sgd")):
        errors = one_step(seed_net(), rule, optimizer, "l2", "mean", batch, seed=batch)
        assert max(errors.values()) <= 1e-12, (batch, errors)
    if rule == "exact":
        for k, (loss, reduction) in enumerate((("softmax_ce", "mean"), ("bce", "sum"))):
            errors = one_step(random_net(k, loss), rule, "nesterov", loss, reduction, 16, seed=k)
            assert max(errors.values()) <= 1e-12, errors


@pytest.mark.parametrize("rule", ["exact", "seed-broken", "brsf"])
def test_a_network_trained_on_batches_equals_it_among_replicas(digits, rule):
    """Samples in lanes (one network), replicas per replica and replicas in lanes give
    the same bits, with a short last batch (100 = 6 x 16 + 4)."""
    config = TrainConfig(epochs=2, batch_size=16, seed=3, reduction="mean", shuffle=True)
    alone = seed_net().init(3)
    bound = make_rule(rule, alone, 3) if rule != "exact" else None
    h1 = fit(alone, digits.x_train[:100], digits.y_train[:100], config, rule=bound,
             engine="compiled")
    for seeds in ([3, 4], [3, 4, 5]):  # per replica; replicas in lanes
        group = seed_net().init(3, replicas=seeds)
        bound = make_rule(rule, group, seeds) if rule != "exact" else None
        h2 = fit(group, np.stack([digits.x_train[:100]] * len(seeds)),
                 np.stack([digits.y_train[:100]] * len(seeds)), config, rule=bound,
                 engine="compiled")
        assert np.array_equal(alone.flat, group.flat[0])
        assert np.array_equal(h1.cost, h2.cost[:, 0])
