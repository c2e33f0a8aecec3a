"""HandpropClassifier: sklearn's estimator checks and real use on digits."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import SkipTestWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.utils.estimator_checks import check_estimator

from handprop.integrations.sklearn import HandpropClassifier
from handprop.rules import LearningRule

# Checks that cannot apply to HandpropClassifier, with the reason (none so far).
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@pytest.fixture(scope="module")
def digits():
    """600 digits: X (600, 64) pixels 0..16, y (600,) in 0..9."""
    X, y = load_digits(return_X_y=True)
    return X[:600], y[:600]


@pytest.fixture(scope="module")
def zeros_ones(digits):
    """The 0s and 1s of ``digits`` with string labels: X (n, 64), y (n,) of str."""
    X, y = digits
    keep = (y == 0) | (y == 1)
    return X[keep], np.where(y[keep] == 0, "zero", "one")


def test_check_estimator():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkipTestWarning)  # e.g. no pandas, no array API
        results = check_estimator(
            HandpropClassifier(), expected_failed_checks=EXPECTED_FAILED_CHECKS, on_fail=None
        )
    failed = [(r["check_name"], repr(r["exception"])) for r in results if r["status"] == "failed"]
    assert not failed
    assert sum(r["status"] == "passed" for r in results) > 40


def test_check_estimator_with_feedback_alignment():
    # A non-exact rule draws random feedback: still deterministic and sklearn-compliant.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkipTestWarning)
        check_estimator(HandpropClassifier(rule="fa"), expected_failed_checks={})


def test_cross_val_score_on_digits(digits):
    X, y = digits
    scores = cross_val_score(HandpropClassifier(net="small", epochs=50, scale=16.0), X, y, cv=3)
    assert scores.mean() > 0.8, scores


def test_fitted_small_cnn_attributes(digits):
    X, y = digits
    clf = HandpropClassifier(epochs=2, scale=16.0).fit(X[:200], y[:200])
    assert clf.net_.name == "small"
    assert clf.input_shape_ == (1, 8, 8)
    assert clf.n_features_in_ == 64
    np.testing.assert_array_equal(clf.classes_, np.arange(10))
    assert clf.history_.shape == (2,) and np.all(np.isfinite(clf.history_))
    proba = clf.predict_proba(X[200:260])
    assert proba.shape == (60, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # 4-D input (n, C, H, W) gives the same answers as flat rows.
    np.testing.assert_array_equal(clf.predict_proba(X[200:260].reshape(-1, 1, 8, 8)), proba)


def test_grid_search_over_lr_and_rule(digits):
    X, y = digits
    grid = GridSearchCV(
        HandpropClassifier(net="small", epochs=15, scale=16.0),
        {"lr": [0.01, 0.05], "rule": ["exact", "fa"]},
        cv=2,
    )
    grid.fit(X[:300], y[:300])
    assert sorted((p["lr"], p["rule"]) for p in grid.cv_results_["params"]) == [
        (0.01, "exact"), (0.01, "fa"), (0.05, "exact"), (0.05, "fa")]
    best = int(np.argmax(grid.cv_results_["mean_test_score"]))
    assert grid.best_params_ == grid.cv_results_["params"][best]
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))
    assert grid.best_estimator_.score(X[300:], y[300:]) > 0.5  # refit on all 300, chance 0.1


def test_seed_net_binary_with_string_labels(zeros_ones):
    X, y = zeros_ones
    clf = HandpropClassifier(net="seed", epochs=20, scale=16.0)
    scores = cross_val_score(clf, X, y, cv=3)
    assert scores.mean() > 0.9, scores
    clf.fit(X, y)
    np.testing.assert_array_equal(clf.classes_, ["one", "zero"])
    assert clf.net_.output_shape == (1,)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert set(clf.predict(X)) <= {"zero", "one"}
    # Column 1 is the sigmoid output p, column 0 is 1 - p.
    p = clf.net_.predict(X.reshape(-1, 1, 8, 8) / 16.0)[:, 0]
    np.testing.assert_allclose(proba[:, 1], p)


def test_seed_net_refuses_multiclass_and_wrong_size(digits):
    X, y = digits
    with pytest.raises(ValueError, match="single output unit.*3 classes"):
        HandpropClassifier(net="seed", epochs=1).fit(X[:60], y[:60] % 3)
    with pytest.raises(ValueError, match="8x8 images"):
        HandpropClassifier(net="seed", epochs=1).fit(X[:60, :16], y[:60] % 2)


def test_same_seed_same_predictions(digits):
    X, y = digits
    params = {"epochs": 3, "scale": 16.0, "rule": "fa"}
    a = HandpropClassifier(seed=7, **params).fit(X[:200], y[:200]).predict_proba(X[200:])
    b = HandpropClassifier(seed=7, **params).fit(X[:200], y[:200]).predict_proba(X[200:])
    c = HandpropClassifier(seed=8, **params).fit(X[:200], y[:200]).predict_proba(X[200:])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_clone_round_trips_params():
    spec = {"preset": "small"}
    clf = HandpropClassifier(
        net=spec, rule="fa", epochs=3, lr=0.02, momentum=0.5, optimizer="nesterov",
        batch_size=16, seed=3, dtype="float32", image_shape=(1, 8, 8), scale=16.0,
    )
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert copy is not clf
    assert clone(HandpropClassifier()).get_params() == HandpropClassifier().get_params()


def test_non_image_features_use_the_dense_fallback():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5))
    y = np.where(X[:, 0] + X[:, 1] > 0, "pos", "neg")
    clf = HandpropClassifier(epochs=30).fit(X, y)
    assert clf.net_.name == "dense"
    assert clf.input_shape_ == (1, 1, 5)
    assert clf.score(X, y) > 0.9


def test_image_shape_and_spec_dict(digits):
    X, y = digits
    # An explicit shape is obeyed: a CNN cannot take 2x32 images, and says so.
    with pytest.raises(ValueError):
        HandpropClassifier(image_shape=(2, 32), epochs=1).fit(X[:50], y[:50])
    with pytest.raises(ValueError, match="holds 60 values"):
        HandpropClassifier(image_shape=(6, 10), epochs=1).fit(X[:50], y[:50])
    spec = {
        "layers": [
            {"type": "conv2d", "name": "conv1", "out_channels": 4, "kernel_size": 3},
            {"type": "activation", "name": "act1", "activation": "relu"},
            {"type": "flatten", "name": "flat"},
            {"type": "dense", "name": "fc", "out_features": 10},
        ]
    }
    clf = HandpropClassifier(net=spec, epochs=2, scale=16.0).fit(X[:100], y[:100])
    assert clf.net_.input_shape == (1, 8, 8)  # filled in from the data
    assert clf.predict_proba(X[:5]).shape == (5, 10)
    assert "input_shape" not in spec  # the parameter is not modified


def test_rule_object_is_not_modified(digits):
    X, y = digits
    rule = LearningRule()
    clf = HandpropClassifier(rule=rule, epochs=1, scale=16.0).fit(X[:64], y[:64])
    assert rule.net is None
    assert clf.rule_ is not rule and clf.rule_.net is clf.net_


def test_pickle_round_trip(digits):
    X, y = digits
    clf = HandpropClassifier(epochs=2, scale=16.0, rule="fa").fit(X[:100], y[:100])
    loaded = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(loaded.predict_proba(X[100:150]), clf.predict_proba(X[100:150]))
    # The rebuilt network's named parameters are views of its flat buffer again.
    net = loaded.net_
    assert all(np.shares_memory(p, net.flat) for p in net.params.values())
    for name, value in clf.rule_.feedback().items():
        np.testing.assert_array_equal(loaded.rule_.feedback()[name], value)


def test_diverging_training_raises(digits):
    X, y = digits
    with pytest.raises(FloatingPointError, match="diverged"):
        HandpropClassifier(epochs=3, lr=1e100, optimizer="sgd").fit(X[:64], y[:64])
