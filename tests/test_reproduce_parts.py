"""The reproduce study's parts, one at a time: the author's seeding against the author's
own forward pass, the gradient-scaled rule of the ablations, and how the sensitivity runs
count switches and label the parting."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import convolve2d

from handprop.core.presets import PRESETS, seed_net
from handprop.rules import make_rule
from handprop.studies.ablations import GradientScaled, rule_for
from handprop.studies.reproduce_base import author_run, digits, initialise
from handprop.studies.sensitivity import LABELS, label_parting, switches
from handprop.training.loop import TrainConfig, fit


def _pool(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2).max(axis=(1, 3))


def author_forward(image: np.ndarray, w: dict[str, np.ndarray]) -> float:
    """The published code's forward pass (its layer 2 applies W1b to all four maps), with
    its own weights: kernels as it draws them (it convolves), dense as (in, out)."""
    relu = lambda z: z * (z > 0)  # noqa: E731
    pad = np.pad(image, 1)
    l1a = _pool(relu(convolve2d(pad, w["w1a"], mode="valid")))
    l1b = _pool(np.arctan(convolve2d(pad, w["w1b"], mode="valid")))
    maps = [np.arctan, relu, np.arctan, np.tanh]
    inputs = [l1a, l1a, l1b, l1b]
    l2 = [_pool(f(convolve2d(np.pad(m, 1), w["w1b"], mode="valid")))
          for f, m in zip(maps, inputs, strict=True)]
    x = np.hstack([m.ravel() for m in l2])[None]
    x = np.tanh(np.arctan(x @ w["w3"]) @ w["w4"])
    return float(1 / (1 + np.exp(-(x @ w["w5"])[0, 0])))


def test_author_seeding_is_the_authors_code():
    """np.random.seed(S); shuffle the 0s then the 1s with sklearn; W1a..W5 from the same
    stream: the data split and the forward pass match the published code's."""
    from sklearn.utils import shuffle

    seed, fc = 1234414, (20, 36)
    data, _ = author_run(seed, fc)
    images, labels = digits()
    order = np.concatenate([np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)])
    np.random.seed(seed)
    x, y = shuffle(images[order], labels[order])
    drawn = {name: np.random.randn(*shape) for name, shape in (
        ("w1a", (3, 3)), ("w1b", (3, 3)), ("w2a", (3, 3)), ("w2b", (3, 3)), ("w2c", (3, 3)),
        ("w2d", (3, 3)), ("w3", (16, 20)), ("w4", (20, 36)), ("w5", (36, 1)))}
    np.testing.assert_array_equal(data.x_test, x[:10])
    np.testing.assert_array_equal(data.y_train, y[10:])
    net = PRESETS["seed-as-run"](fc)
    initialise(net, [seed], fc, "author")
    ours = net.forward(x[:5][None])[0][0, :, 0]
    theirs = [author_forward(image[0], drawn) for image in x[:5]]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_gradient_scaled_is_a_layer_learning_rate():
    """Under the article's momentum, conv gradients times 0.1 train exactly like a conv
    learning rate of 0.1 x lr (checked against a manual step); times 0 freezes them."""
    images, labels = digits()
    x, y = images[:12][None], labels[:12][None]
    config = TrainConfig(epochs=1, batch_size=1)
    nets = {}
    for name in ("code", "conv-lr-0.1", "frozen-conv"):
        net = seed_net((6, 7)).init(replicas=[3])
        start = {k: v.copy() for k, v in net.params.items()}
        fit(net, x, y, config, make_rule(rule_for(name), net))
        nets[name] = (start, net)
    start, frozen = nets["frozen-conv"]
    for key in ("conv1.weight", "conv2.weight"):
        np.testing.assert_array_equal(frozen.params[key], start[key])
    assert not np.array_equal(frozen.params["fc3.weight"], start["fc3.weight"])
    # one step by hand: the scaled rule's conv update is 0.1 of the code rule's
    net = seed_net((6, 7)).init(replicas=[3])
    out, tape = net.forward(x[:, :1])
    grad = out - y[:, :1, None]
    plain = net.backward(tape, grad, make_rule("seed-original", net))
    scaled = net.backward(tape, grad, make_rule(GradientScaled(make_rule("seed-original", net),
                                                               {"conv1": 0.1}), net))
    np.testing.assert_allclose(scaled["conv1.weight"], 0.1 * plain["conv1.weight"])
    np.testing.assert_array_equal(scaled["fc3.weight"], plain["fc3.weight"])


def test_switches_count_routing_and_relu_changes():
    """Rows (base, moved, moved): a weight that moves one ReLU pre-activation across 0 and
    one pool window's maximum shows up as switches; an unmoved copy shows none."""
    net = seed_net((4, 4)).init(replicas=[0, 0, 0])
    image = digits()[0][:1]
    x = np.repeat(image[None], 3, axis=0)
    routing, relu, ties = switches(net, x)
    assert routing.tolist() == [0, 0] and relu.tolist() == [0, 0]
    assert ties[0] == ties[1] and ties[0] > 0  # raw pixels and ReLU zeros tie windows
    net.params["conv1.weight"][1] *= -1.0  # the moved row's first layer flipped
    routing, relu, _ = switches(net, x)
    assert routing[0] > 0 and relu[0] > 0 and routing[1] == relu[1] == 0


def test_label_parting():
    quiet = np.full(50, 1e-16)
    assert label_parting(quiet, np.zeros(49), np.zeros(49))["label"] == LABELS[2]
    merged = np.r_[1e-16, np.zeros(49)]
    assert label_parting(merged, np.zeros(49), np.zeros(49))["label"] == LABELS[3]
    steady = 1e-16 * 10.0 ** (0.4 * np.arange(50))  # 0.4 decades a step, no switch
    found = label_parting(steady, np.zeros(49), np.zeros(49))
    assert found["label"] == LABELS[1] and found["decades_per_step"] == pytest.approx(0.4)
    jump = np.r_[np.full(10, 1e-16), np.full(40, 1e-2)]  # 14 decades in one step
    routing = np.zeros(49)
    routing[9] = 1
    found = label_parting(jump, routing, np.zeros(49))
    assert found["label"] == LABELS[0] and found["jump_step"] == 10 and found["jump_switched"]
    assert found["share_at_switches"] == pytest.approx(1.0)
    assert label_parting(jump, np.zeros(49), np.zeros(49))["label"] == LABELS[1]


def test_the_authors_protocol_is_a_replayable_config(tmp_path):
    """configs/reproduce-author.toml: the code's network and rule, dense 20/36, 100 epochs,
    the author's seeding; it runs (here 2 epochs, 1 seed) and its article split is the
    author's."""
    from pathlib import Path

    from helpers import load_json, run_cli

    from handprop.studies.reproduce import load_config

    path = Path(__file__).resolve().parents[1] / "handprop/studies/configs/reproduce-author.toml"
    config = load_config(path)
    assert (config.seeding, config.variant, config.as_run_rules) == ("author", ["as-run"],
                                                                     ["seed-original"])
    assert config.experiments[0].fc == (20, 36) and config.epochs == 100
    code, _, stderr = run_cli("reproduce", "--config", path, "--epochs", "2", "--seeds", "1",
                              "--out", tmp_path / "out", "--quiet", "--backend", "sequential")
    assert code == 0, stderr
    record = load_json(tmp_path / "out/runs/as-run/author-fc20-36/seed-original/article-seed0.json")
    data, _ = author_run(0, (20, 36))
    assert record["train_images"] == 350 and len(record["test_correct"]) == 10
    assert record["test_accuracy"] == np.mean(record["test_correct"])
    assert record["config"]["seeding"] == "author" and data.x_test.shape[0] == 10
