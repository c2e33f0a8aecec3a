"""Training: bit-for-bit reproducibility, replicas equal separate runs, input validation,
divergence bookkeeping, evaluation and the article's result through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

import handprop.training.loop as train_module
from handprop.cli import main
from handprop.core.errors import ConfigError, DataError
from handprop.core.presets import seed_net, small_cnn
from handprop.rules import make_rule
from handprop.training.data import load_digits, load_digits10, load_tiny
from handprop.training.loop import (
    Evaluation,
    TrainConfig,
    TrainState,
    evaluate,
    fit,
    prediction_table,
    targets_for,
)
from handprop.training.optim import ArticleSchedule, make_schedule


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0)


def _run(data, config: TrainConfig, rule: str | None = None, fc=(28, 36)):
    net = seed_net(fc).init(config.seed, dtype=config.dtype)
    bound = make_rule(rule, net, config.seed) if rule else None
    history = fit(net, data.x_train, data.y_train, config, rule=bound)
    return net, history


# -- reproducibility --------------------------------------------------------------------

DETERMINISM = [
    # (batch size, dtype, shuffle, rule); batch 256 takes the two-halves (threaded) path
    (1, "float64", False, None),
    (1, "float32", False, None),
    (1, "float64", True, "fa"),
    (16, "float64", True, None),
    (16, "float32", True, None),
    (256, "float64", True, None),
    (256, "float32", False, None),
    (8, "float64", True, "brsf"),
]


@pytest.mark.parametrize(("batch", "dtype", "shuffle", "rule"), DETERMINISM,
                         ids=[f"b{b}-{d}-{'shuf' if s else 'fixed'}-{r or 'exact'}"
                              for b, d, s, r in DETERMINISM])
def test_same_seed_same_config_is_bit_identical(digits, batch, dtype, shuffle, rule):
    config = TrainConfig(epochs=3, batch_size=batch, dtype=dtype, shuffle=shuffle, seed=5,
                         optimizer="momentum", lr=0.05 if batch > 1 else 0.09,
                         momentum=0.5 if batch > 1 else 0.0009)
    net_a, hist_a = _run(digits, config, rule)
    net_b, hist_b = _run(digits, config, rule)
    assert net_a.flat.dtype == np.dtype(dtype)
    assert np.array_equal(net_a.flat, net_b.flat)
    assert hist_a.cost.shape == (3,)
    assert np.all(np.isfinite(hist_a.cost))
    assert np.array_equal(hist_a.cost, hist_b.cost)
    assert hist_a.steps == hist_b.steps == 3 * -(-350 // batch)
    # and training did something
    assert not np.array_equal(net_a.flat, seed_net().init(5, dtype=dtype).flat)


def test_different_seeds_differ(digits):
    a, _ = _run(digits, TrainConfig(epochs=1, seed=1))
    b, _ = _run(digits, TrainConfig(epochs=1, seed=2))
    assert not np.array_equal(a.flat, b.flat)


REPLICAS = [
    (1, "float64", False, None),
    (16, "float64", True, None),
    (256, "float64", True, None),
    (4, "float64", True, "fa"),
    (4, "float64", True, "brsf"),
    (1, "float32", False, None),
    (256, "float32", True, None),
]


@pytest.mark.parametrize(("batch", "dtype", "shuffle", "rule"), REPLICAS,
                         ids=[f"b{b}-{d}-{'shuf' if s else 'fixed'}-{r or 'exact'}"
                              for b, d, s, r in REPLICAS])
def test_replicated_training_equals_separate_runs(batch, dtype, shuffle, rule):
    """init(replicas=[3, 4]) trained on (data of seed 3, data of seed 4) in lockstep ends
    with exactly the parameters and cost histories of init(3) and init(4) trained alone."""
    seeds = [3, 4]
    sets = [load_digits(seed=s) for s in seeds]

    def config(seed: int) -> TrainConfig:
        return TrainConfig(epochs=2, batch_size=batch, dtype=dtype, shuffle=shuffle, seed=seed,
                           lr=0.05 if batch > 1 else 0.09, momentum=0.5 if batch > 1 else 0.0009)

    net = seed_net().init(0, replicas=seeds, dtype=dtype)
    assert net.flat.shape == (2, net.num_params)
    bound = make_rule(rule, net, seeds) if rule else None
    history = fit(net, np.stack([d.x_train for d in sets]), np.stack([d.y_train for d in sets]),
                  config(0), rule=bound)
    assert history.cost.shape == (2, 2)
    assert history.diverged == [None, None]
    for r, (seed, data) in enumerate(zip(seeds, sets, strict=True)):
        single, single_history = _run(data, config(seed), rule)
        assert np.array_equal(net.flat[r], single.flat), f"replica {r}: parameters differ"
        assert np.array_equal(history.cost[:, r], single_history.cost), (
            f"replica {r}: cost history {history.cost[:, r].tolist()} != "
            f"{single_history.cost.tolist()}"
        )
        assert history.cost_list(r) == single_history.cost_list()


# -- input validation -------------------------------------------------------------------


def test_fit_rejects_nan_images(digits):
    x = digits.x_train.copy()
    x[7, 0, 3, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        fit(seed_net().init(0), x, digits.y_train, TrainConfig(epochs=1))
    x[7, 0, 3, 3] = np.inf
    with pytest.raises(DataError, match="inf"):
        fit(seed_net().init(0), x, digits.y_train, TrainConfig(epochs=1))


@pytest.mark.parametrize(
    "reshape",
    [
        lambda x: x[:, 0],  # no channel axis
        lambda x: x[:, :, :4],  # 4x8 images
        lambda x: np.concatenate([x, x], axis=1),  # two channels
        lambda x: x[:0],  # no images
        lambda x: x[None],  # a replica axis the network does not have
    ],
    ids=["no-channel", "wrong-size", "two-channels", "empty", "extra-axis"],
)
def test_fit_rejects_images_of_the_wrong_shape(digits, reshape):
    x = reshape(digits.x_train)
    labels = np.zeros(x.shape[0] if x.ndim == 4 else 350, dtype=np.int64)
    with pytest.raises(DataError, match="shape"):
        fit(seed_net().init(0), x, labels, TrainConfig(epochs=1))


def test_fit_rejects_unreplicated_data_for_a_replicated_net(digits):
    net = seed_net().init(0, replicas=[0, 1])
    with pytest.raises(DataError, match="shape"):
        fit(net, digits.x_train, digits.y_train, TrainConfig(epochs=1))
    with pytest.raises(DataError, match="labels"):
        fit(net, np.stack([digits.x_train] * 2), digits.y_train, TrainConfig(epochs=1))


def test_fit_rejects_label_count_mismatch(digits):
    with pytest.raises(DataError, match="350 labels") as info:
        fit(seed_net().init(0), digits.x_train, digits.y_train[:-1], TrainConfig(epochs=1))
    assert "(349,)" in str(info.value)


@pytest.mark.parametrize("bad", [2, -1, 9])
def test_fit_rejects_labels_beyond_a_binary_output(digits, bad):
    labels = digits.y_train.copy()
    labels[5] = bad
    net = seed_net().init(0)
    before = net.flat.copy()
    with pytest.raises(DataError, match="one output"):
        fit(net, digits.x_train, labels, TrainConfig(epochs=1))
    assert np.array_equal(net.flat, before)  # nothing trained


def test_fit_rejects_labels_beyond_the_classes():
    data = load_digits10()
    labels = data.y_train.copy()
    labels[0] = 10
    with pytest.raises(DataError, match="label 10"):
        fit(small_cnn().init(0), data.x_train, labels, TrainConfig(epochs=1, batch_size=32))


def test_fit_rejects_uninitialised_net_and_bad_config(digits):
    with pytest.raises(ConfigError, match="init"):
        fit(seed_net(), digits.x_train, digits.y_train, TrainConfig(epochs=1))
    with pytest.raises(ConfigError, match="epochs"):
        fit(seed_net().init(0), digits.x_train, digits.y_train, TrainConfig(epochs=0))
    state = TrainState.fresh(TrainConfig(epochs=1), [0, 1])
    with pytest.raises(ConfigError, match="2 runs"):
        fit(seed_net().init(0), digits.x_train, digits.y_train, TrainConfig(epochs=1),
            state=state)


def test_targets_for():
    seed = seed_net().init(0)
    out = targets_for(seed, np.array([0, 1, 1]), "l2")
    assert out.shape == (3, 1) and out.dtype == np.float64
    assert out[:, 0].tolist() == [0.0, 1.0, 1.0]
    assert targets_for(seed, np.array([1, 0]), "l2", np.float32).dtype == np.float32
    small = small_cnn(classes=4).init(0)
    labels = np.array([3, 0, 2])
    assert targets_for(small, labels, "softmax_ce").tolist() == [3, 0, 2]
    assert targets_for(small, labels, "softmax_ce").dtype == np.int64
    assert np.array_equal(targets_for(small, labels, "l2"), np.eye(4)[labels])
    with pytest.raises(DataError, match="empty"):
        targets_for(small, np.array([], dtype=np.int64), "l2")
    with pytest.raises(DataError, match="label 4"):
        targets_for(small, np.array([0, 4]), "softmax_ce")
    with pytest.raises(DataError, match="one output"):
        targets_for(seed, np.array([0, 2]), "l2")


# -- divergence -------------------------------------------------------------------------


def test_divergence_in_one_replica_is_recorded_for_it_alone(digits):
    """Replica 0 starts with weights of 1e300 (its first cost is NaN); replica 1 is
    healthy. Replica 0 is recorded as diverged at epoch 1, step 1; replica 1 trains all
    epochs and ends exactly where it would alone."""
    x, y = digits.x_train[:40], digits.y_train[:40]
    net = seed_net().init(0, replicas=[3, 4])
    net.flat[0] *= 1e300
    history = fit(net, np.stack([x, x]), np.stack([y, y]), TrainConfig(epochs=4))
    assert history.diverged == [{"epoch": 1, "step": 1}, None]
    assert history.cost.shape == (4, 2)
    assert np.all(np.isnan(history.cost[:, 0]))
    assert np.all(np.isfinite(history.cost[:, 1]))
    assert history.cost_list(0) == []  # no epoch completed before it diverged
    assert history.steps == 4 * 40
    alone = seed_net().init(4)
    alone_history = fit(alone, x, y, TrainConfig(epochs=4, seed=4))
    assert np.array_equal(net.flat[1], alone.flat)
    assert np.array_equal(history.cost[:, 1], alone_history.cost)


def test_training_stops_when_every_replica_has_diverged(digits, monkeypatch):
    """Replica 0 diverges at once; replica 1 later, under a fast version of the article's
    schedule. fit stops at replica 1's divergence and keeps the history of both so far."""
    monkeypatch.setattr(train_module, "make_schedule",
                        lambda name, epochs: ArticleSchedule(start=0, momentum_factor=2.0)
                        if name == "article" else make_schedule(name, epochs))
    x, y = digits.x_train[:40], digits.y_train[:40]
    net = seed_net().init(0, replicas=[3, 4])
    net.flat[0] *= 1e300
    epochs_seen = []
    history = fit(net, np.stack([x, x]), np.stack([y, y]),
                  TrainConfig(epochs=200, schedule="article"),
                  on_epoch=lambda e, h: epochs_seen.append(e))
    first, second = history.diverged
    assert first == {"epoch": 1, "step": 1}
    assert second is not None and 1 < second["epoch"] < 200 and 1 <= second["step"] <= 40
    done = second["epoch"] - 1
    assert history.cost.shape == (done, 2)
    assert np.all(np.isnan(history.cost[:, 0])) and np.all(np.isfinite(history.cost[:, 1]))
    assert epochs_seen == list(range(done))
    assert history.steps == done * 40 + second["step"]
    assert history.state.epoch == done


def test_cli_reports_divergence_with_exit_3_and_keeps_the_history(tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.setattr(train_module, "make_schedule",
                        lambda name, epochs: ArticleSchedule(start=0, momentum_factor=2.0)
                        if name == "article" else make_schedule(name, epochs))
    out = tmp_path / "run.json"
    code = main(["train", "--epochs", "200", "--schedule", "article", "--quiet",
                 "--json", str(out)])
    assert code == 3
    result = json.loads(out.read_text())
    diverged = result["diverged"]
    assert set(diverged) == {"epoch", "step"}
    assert len(result["cost_history"]) == diverged["epoch"] - 1
    assert None not in result["cost_history"]
    assert result["test_accuracy"] is None
    assert f"training diverged at epoch {diverged['epoch']}, step {diverged['step']}" in (
        capsys.readouterr().out)


# -- evaluation -------------------------------------------------------------------------


def test_evaluate_rounds_a_single_output_and_counts():
    tiny = load_tiny()
    net = seed_net().init(0)
    fit(net, tiny.x_train, tiny.y_train, TrainConfig(epochs=100))
    result = evaluate(net, tiny.x_test, tiny.y_test)
    raw = net.predict(tiny.x_test)
    assert np.array_equal(result.raw, raw)
    assert result.predicted.tolist() == (raw[:, 0] >= 0.5).astype(int).tolist()
    assert result.accuracy == 1.0
    flipped = evaluate(net, tiny.x_test, 1 - tiny.y_test)
    assert flipped.accuracy == 0.0
    half = evaluate(net, tiny.x_test, np.array([0, 1, 0, 1]))
    assert half.accuracy == 0.5 and isinstance(half.accuracy, float)


def test_evaluate_multiclass_argmax_and_replicas():
    data = load_digits10()
    x, y = data.x_test[:50], data.y_test[:50]
    net = small_cnn().init(1)
    result = evaluate(net, x, y)
    assert np.array_equal(result.predicted, net.predict(x).argmax(-1))
    assert result.accuracy == pytest.approx(np.mean(result.predicted == y))
    replicated = small_cnn().init(0, replicas=[1, 2])
    both = evaluate(replicated, np.stack([x, x]), np.stack([y, y]))
    assert both.accuracy.shape == (2,)
    assert both.accuracy[0] == result.accuracy
    assert both.accuracy[1] == evaluate(small_cnn().init(2), x, y).accuracy


def test_prediction_table_binary():
    evaluation = Evaluation(raw=np.array([[0.01], [0.98765], [0.6], [0.2]]),
                            predicted=np.array([0, 1, 1, 0]), truth=np.array([0, 1, 0, 0]),
                            accuracy=0.75)
    lines = prediction_table(evaluation, (3, 7)).splitlines()
    assert lines[0].split() == ["truth", "3", "7", "3", "3"]
    assert lines[1].split() == ["prediction", "0.0100", "0.9877", "0.6000", "0.2000"]
    assert lines[2].split() == ["rounded", "3", "7", "7", "3"]
    assert lines[3] == "accuracy: 3/4"
    assert len(lines) == 4
    # columns line up
    assert len({len(line) for line in lines[:3]}) == 1


def test_prediction_table_limit_and_multiclass():
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 3, (30, 10))  # logits
    probability = np.exp(raw) / np.exp(raw).sum(-1, keepdims=True)
    truth = rng.integers(0, 10, 30)
    evaluation = Evaluation(raw, raw.argmax(-1), truth, float(np.mean(raw.argmax(-1) == truth)),
                            probability)
    lines = prediction_table(evaluation, tuple(range(10)), limit=12).splitlines()
    assert lines[0].split()[0] == "truth" and len(lines[0].split()) == 13
    assert lines[1].split()[:2] == ["max", "prob"]
    assert lines[1].split()[2] == f"{probability[0].max():.4f}"
    assert lines[2].split()[0] == "predicted"
    assert lines[2].split()[1:] == [str(p) for p in raw.argmax(-1)[:12]]
    assert lines[3] == "(first 12 of 30 images shown)"
    assert lines[4] == f"accuracy: {int(np.sum(raw.argmax(-1) == truth))}/30"
    without = Evaluation(raw, raw.argmax(-1), truth, 0.0)  # outputs that are not logits
    assert prediction_table(without, tuple(range(10))).splitlines()[1].split()[:3] == [
        "max", "output", f"{raw[0].max():.4f}"]


def test_evaluate_gives_probabilities_of_a_softmax_net():
    """A softmax cross-entropy net outputs logits (the softmax is in the loss): the table
    shows the softmax of them, a probability."""
    data = load_digits10()
    net = small_cnn().init(1)
    assert net.loss == "softmax_ce"
    result = evaluate(net, data.x_test[:20], data.y_test[:20])
    assert np.allclose(result.probability.sum(-1), 1.0)
    assert np.array_equal(result.probability.argmax(-1), result.predicted)
    shown = prediction_table(result, data.classes).splitlines()[1].split()
    assert shown[:2] == ["max", "prob"]
    assert all(0.0 < float(v) <= 1.0 for v in shown[2:])


# -- the article's result ---------------------------------------------------------------


def test_cli_seed_net_500_epochs_gets_the_held_out_images_right(tmp_path, capsys):
    """The article's run: seed net, digits 0/1, online SGD with its momentum, 500 epochs
    (about 20 s). At least 9 of the 10 held-out images must be classified right."""
    out = tmp_path / "seed.json"
    assert main(["train", "--net", "seed", "--epochs", "500", "--quiet",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"cost_history", "test_accuracy", "config"} <= set(result)
    costs = result["cost_history"]
    assert len(costs) == 500 and None not in costs
    assert costs[-1] < costs[0] / 10
    assert result["test_accuracy"] >= 0.9
    assert result["diverged"] is None
    config = result["config"]
    assert config["epochs"] == 500 and config["batch_size"] == 1
    assert config["optimizer"] == "momentum"
    assert (config["lr"], config["momentum"]) == (0.09, 0.0009)
    assert config["net"] == "seed" and config["data"] == "digits"
    assert result["data"]["train"] == 350 and result["data"]["test"] == 10
    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines()
             if line.split()[:1] in (["truth"], ["prediction"], ["rounded"])]
    assert len(table) == 3 and all(len(line.split()) == 11 for line in table)
    correct = round(result["test_accuracy"] * 10)
    assert f"accuracy: {correct}/10" in printed
