"""Pictures of a network (handprop.pictures.show): each function writes one valid PNG, checks its
arguments before drawing, and leaves no file behind when it refuses them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from handprop import (
    ConfigError,
    DataError,
    Dense,
    Flatten,
    Network,
    ShapeError,
    lenet,
    seed_net,
    small_cnn,
)
from handprop.pictures import show
from handprop.training.data import load_digits
from handprop.training.loop import TrainConfig, evaluate, fit

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained():
    """The seed net after 3 epochs of the article's protocol (about 0.2 s): a few
    training images are still wrong."""
    data = load_digits(seed=0)
    net = seed_net().init(seed=0)
    history = fit(net, data.x_train, data.y_train, TrainConfig(epochs=3, seed=0))
    return net, data, history


def assert_png(path: Path, folder: Path | None = None) -> np.ndarray:
    """``path`` is a whole PNG that matplotlib reads back, and the only file in its folder
    (no temporary file left over). Returns the pixels."""
    import matplotlib.image

    path = Path(path)
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert pixels.shape[2] in (3, 4)
    assert float(pixels[..., :3].std()) > 0, "the picture is blank"
    if folder is not None:
        assert sorted(p.name for p in folder.iterdir()) == [path.name]
    return pixels


def assert_nothing_written(folder: Path) -> None:
    assert not folder.exists() or list(folder.iterdir()) == []


# -- each picture ----------------------------------------------------------------------


def test_kernels_writes_a_png(trained, tmp_path: Path) -> None:
    """Every conv layer's kernels: a PNG at the given path (the path is returned), parent
    folders created."""
    net, _, _ = trained
    target = tmp_path / "new" / "kernels.png"
    saved = show.kernels(net, target)
    assert saved == target
    assert_png(saved, tmp_path / "new")


def test_kernels_of_wider_nets_and_the_output_limit(tmp_path: Path) -> None:
    """Many channels (small CNN, LeNet) work too; max_out caps the rows drawn."""
    assert_png(show.kernels(small_cnn().init(0), tmp_path / "small.png"))
    capped = assert_png(show.kernels(lenet().init(0), tmp_path / "lenet4.png", max_out=4))
    full = assert_png(show.kernels(lenet().init(0), tmp_path / "lenet.png"))
    assert capped.shape[0] < full.shape[0]


def test_feature_maps_writes_a_png(trained, tmp_path: Path) -> None:
    """One image through the net; a batch of one is accepted as well."""
    net, data, _ = trained
    assert_png(show.feature_maps(net, data.x_test[0], tmp_path / "maps.png"), tmp_path)
    assert_png(show.feature_maps(net, data.x_test[:1], tmp_path / "maps1.png"))
    assert_png(show.feature_maps(small_cnn().init(0), data.x_test[1], tmp_path / "small.png"))


def test_layer_outputs_match_the_forward_pass(trained) -> None:
    """The intermediate values are the network's: names in order, shapes as net.shapes,
    and the last one is net.forward's output."""
    net, data, _ = trained
    x = data.x_test[:3]
    outputs = show.layer_outputs(net, x)
    assert [name for name, _ in outputs] == ["input"] + [layer.name for layer in net.layers]
    assert [value.shape[1:] for _, value in outputs] == net.shapes
    assert all(value.shape[0] == 3 for _, value in outputs)
    np.testing.assert_array_equal(outputs[-1][1], net.forward(x)[0])
    single = show.layer_outputs(net, data.x_test[0])
    assert [value.shape for _, value in single] == net.shapes
    np.testing.assert_allclose(single[-1][1], outputs[-1][1][0], rtol=1e-12)


def test_misclassified_draws_the_wrong_images(trained, tmp_path: Path) -> None:
    """After 3 epochs some training images are wrong: they are drawn (limit respected)."""
    net, data, _ = trained
    wrong = int(np.sum(evaluate(net, data.x_train, data.y_train).predicted != data.y_train))
    assert wrong >= 2, "the fixture should leave a few mistakes to draw"
    assert_png(show.misclassified(net, data.x_train, data.y_train, data.classes,
                                  tmp_path / "wrong.png"), tmp_path)
    assert_png(show.misclassified(net, data.x_train, data.y_train, data.classes,
                                  tmp_path / "wrong1.png", limit=1))


def test_misclassified_says_so_when_nothing_is_wrong(trained, tmp_path: Path) -> None:
    """Labels equal to the predictions: nothing wrong, still a (non-blank) picture."""
    net, data, _ = trained
    predicted = evaluate(net, data.x_train[:20], data.y_train[:20]).predicted
    assert_png(show.misclassified(net, data.x_train[:20], predicted, data.classes,
                                  tmp_path / "none.png"), tmp_path)


def test_misclassified_with_ten_classes(tmp_path: Path) -> None:
    """A softmax network (arg-max prediction, probability shown)."""
    net = small_cnn().init(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (12, 1, 8, 8))
    labels = rng.integers(0, 10, 12)
    assert_png(show.misclassified(net, x, labels, tuple(range(10)), tmp_path / "ten.png"))


def test_cost_curve_writes_a_png(trained, tmp_path: Path) -> None:
    """From History.cost, from the History itself, with replicas, with NaN and zeros."""
    _, _, history = trained
    assert_png(show.cost_curve(history.cost, tmp_path / "a.png"))
    assert_png(show.cost_curve(history, tmp_path / "b.png"))
    assert_png(show.cost_curve([[3.0, 4.0], [2.0, np.nan], [1.0, np.nan]], tmp_path / "c.png"))
    assert_png(show.cost_curve([5.0, 0.0, 1.0], tmp_path / "d.png"))
    assert_png(show.cost_curve([0.0, 0.0], tmp_path / "e.png"))  # nothing positive: linear


def test_pictures_leave_the_pyplot_backend_alone(trained, tmp_path: Path) -> None:
    """Drawing with the object API: a notebook's inline backend is not switched to Agg."""
    import matplotlib

    net, data, _ = trained
    before = matplotlib.rcParams["backend"]
    show.kernels(net, tmp_path / "k.png")
    show.cost_curve([1.0, 0.5], tmp_path / "c.png")
    assert matplotlib.rcParams["backend"] == before


# -- refusals: a clear error, and no file --------------------------------------------


def test_kernels_needs_a_conv_layer(tmp_path: Path) -> None:
    dense_only = Network([Flatten(name="flat"), Dense(2, name="fc")], (1, 4, 4)).init(0)
    with pytest.raises(ConfigError, match=r"no conv2d layer.*fc \(dense\)"):
        show.kernels(dense_only, tmp_path / "k.png")
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("make", [
    lambda net, p: show.kernels(net, p),
    lambda net, p: show.feature_maps(net, np.zeros((1, 8, 8)), p),
    lambda net, p: show.misclassified(net, np.zeros((2, 1, 8, 8)), np.array([0, 1]), (0, 1), p),
    lambda net, p: show.layer_outputs(net, np.zeros((1, 8, 8))),
], ids=["kernels", "feature_maps", "misclassified", "layer_outputs"])
def test_networks_without_parameters_or_with_replicas_are_refused(make, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="call init"):
        make(seed_net(), tmp_path / "x.png")
    with pytest.raises(ConfigError, match="replicas"):
        make(seed_net().init(replicas=[0, 1]), tmp_path / "x.png")
    with pytest.raises(ConfigError, match="Network"):
        make("seed", tmp_path / "x.png")
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("image, message", [
    (np.zeros((8, 8)), r"one image of shape \(1, 8, 8\), got \(8, 8\)"),
    (np.zeros((2, 1, 8, 8)), r"got \(2, 1, 8, 8\).*x\[i\]"),
    (np.zeros((1, 28, 28)), r"got \(1, 28, 28\)"),
    ([[0.0]], "got list"),
])
def test_feature_maps_refuses_wrong_shapes(trained, tmp_path: Path, image, message) -> None:
    net, _, _ = trained
    with pytest.raises(ShapeError, match=message):
        show.feature_maps(net, image, tmp_path / "maps.png")
    assert_nothing_written(tmp_path)


def test_feature_maps_refuses_non_finite_pixels(trained, tmp_path: Path) -> None:
    net, _, _ = trained
    image = np.zeros((1, 8, 8))
    image[0, 2, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        show.feature_maps(net, image, tmp_path / "maps.png")
    assert_nothing_written(tmp_path)


def test_misclassified_refuses_bad_arguments(trained, tmp_path: Path) -> None:
    net, data, _ = trained
    x, y = data.x_test, data.y_test
    path = tmp_path / "wrong.png"
    cases = [
        (ShapeError, r"images of shape \('N', 1, 8, 8\).*got \(10, 8, 8\)",
         lambda: show.misclassified(net, x[:, 0], y, data.classes, path)),
        (ShapeError, r"10 images need labels of shape \(10,\), got \(9,\)",
         lambda: show.misclassified(net, x, y[:9], data.classes, path)),
        (ShapeError, "integer class indices",
         lambda: show.misclassified(net, x, y.astype(float), data.classes, path)),
        (ConfigError, "1 output.*needs 2 class names; got 3",
         lambda: show.misclassified(net, x, y, (0, 1, 2), path)),
        (DataError, "label index 5 is outside",
         lambda: show.misclassified(net, x, np.full(10, 5), data.classes, path)),
        (ConfigError, "limit must be a positive integer",
         lambda: show.misclassified(net, x, y, data.classes, path, limit=0)),
    ]
    for error, message, call in cases:
        with pytest.raises(error, match=message):
            call()
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("cost, message", [
    ([], r"at least one epoch, got \(0,\)"),
    (np.zeros((2, 2, 2)), r"got \(2, 2, 2\)"),
    (5.0, r"got \(\)"),
    (["a", "b"], "numbers"),
])
def test_cost_curve_refuses_wrong_shapes(tmp_path: Path, cost, message) -> None:
    with pytest.raises(ShapeError, match=message):
        show.cost_curve(cost, tmp_path / "cost.png")
    assert_nothing_written(tmp_path)


def test_a_refused_call_keeps_the_previous_picture(trained, tmp_path: Path) -> None:
    """Arguments are checked before anything is written: an existing file is untouched."""
    net, _, _ = trained
    path = show.kernels(net, tmp_path / "pic.png")
    before = path.read_bytes()
    with pytest.raises(ShapeError):
        show.feature_maps(net, np.zeros((3, 3)), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["pic.png"]


def test_a_failure_while_drawing_leaves_no_file(trained, tmp_path: Path, monkeypatch) -> None:
    """If rendering fails, no PNG and no temporary file appear."""
    from matplotlib.figure import Figure

    def broken_savefig(self, *args, **kwargs):
        raise RuntimeError("renderer exploded")

    net, _, _ = trained
    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="exploded"):
        show.kernels(net, tmp_path / "k.png")
    assert_nothing_written(tmp_path)


def test_line_diagram_draws_the_article_rules(tmp_path):
    from handprop.pictures.lines import line_diagram

    path = line_diagram(seed_net(), ["seed-broken", "broken-text"], tmp_path / "lines.png")
    assert path.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ConfigError, match="no per-channel lines"):
        line_diagram(seed_net(), ["fa"], tmp_path / "fa.png")
    assert not (tmp_path / "fa.png").exists()
