"""A scikit-learn classifier around handprop's networks and training loop.

    from handprop.integrations.sklearn import HandpropClassifier
    clf = HandpropClassifier(net="small", epochs=20, scale=16.0).fit(X, y)
    clf.predict_proba(X_test)            # (n, n_classes)

Everything sklearn offers for classifiers then works: ``cross_val_score``,
``GridSearchCV`` (e.g. over ``rule``: exact back-propagation against its
alternatives), pipelines, ``clone``. Training is :func:`handprop.training.loop.fit`; the
gradients are handprop's hand-written backward passes.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..core.errors import DivergedError
from ..core.network import Network
from ..core.spec import network_from_spec
from ..rules.base import LearningRule
from ..training.loop import fit as fit_network
from .sklearn_build import (
    build_network,
    check_params,
    dense_fallback_spec,
    flatten_4d,
    fresh_rule,
    is_seed_preset,
    probabilities,
    scaled,
    train_config,
)

__all__ = ["HandpropClassifier", "dense_fallback_spec"]


class HandpropClassifier(ClassifierMixin, BaseEstimator):
    """A handprop network as a scikit-learn classifier.

    Rows of ``X`` are images flattened row-major (like ``load_digits().data``), or
    ``X`` is a 4-D array ``(n_samples, C, H, W)``. ``fit`` builds the network for the
    data's shape and classes, initialises it from ``seed`` and trains it with
    :func:`handprop.training.loop.fit` (minibatches reshuffled every epoch, seeded by ``seed``).

    Parameters
    ----------
    net : {"small", "lenet", "seed"} or dict, default="small"
        ``"small"``/``"lenet"``: the preset CNN sized for the data (input shape from
        ``image_shape``, output units = number of classes, softmax cross-entropy).
        ``"seed"``: the article's binary network (8x8 inputs, one sigmoid output, l2
        loss); it refuses more than 2 classes. A dict is a network spec for
        :func:`handprop.core.spec.network_from_spec`; a missing ``input_shape`` (or, for a
        ``preset`` spec, ``input_shape``/``classes``) is filled in from the data. A
        spec's output must have one unit per class, or one unit for 2 classes.

        **Non-image features.** When ``image_shape`` is None, ``X`` is 2-D and its
        feature count is not a perfect square with side >= 4 (``"small"``) or >= 12
        (``"lenet"``), the features are shaped ``(1, 1, n_features)`` and a small dense
        network is used instead of the CNN: flatten -> dense 32 + relu -> dense
        ``n_classes`` (see :func:`dense_fallback_spec`), trained with the ``"small"``
        defaults. This makes the estimator work on any tabular data. It never happens
        when the shape is given (``image_shape`` or 4-D ``X``): then a shape the CNN
        cannot take is an error.
    rule : str or LearningRule, default="exact"
        Learning rule (``"exact"``, ``"fa"``, ``"dfa"``, ``"conv1=fa,*=exact"``, ...;
        see :data:`handprop.rules.RULES`). A rule object is copied, never modified.
    epochs : int, default=20
        Passes over the training set.
    lr : float, default=None
        Learning rate; None = the network's default (its preset's).
    momentum : float, default=None
        Momentum; None = the network's default when the optimizer is the network's
        default optimizer, else the optimizer's own default.
    optimizer : {"sgd", "momentum", "nesterov", "adam"}, default=None
        None = the network's default.
    batch_size : int, default=None
        None = the network's default (1, online SGD, for ``"seed"``; 32 for ``"small"``).
    seed : int, default=0
        Seeds the initial weights, the shuffles and any random feedback. Same seed and
        data -> identical predictions.
    dtype : {"float64", "float32"}, default="float64"
        Precision of the network's parameters and computations.
    image_shape : tuple of int, default=None
        ``(C, H, W)`` or ``(H, W)`` (one channel) to reshape feature rows into; its
        product must equal ``n_features``. None = infer (see ``net``).
    scale : float, default=None
        Divisor applied to ``X`` before the network sees it (e.g. 16.0 for the 0..16
        pixels of ``load_digits``); None = no scaling.
    engine : {"auto", "numpy", "compiled"}, default="auto"
        The training engine (:func:`handprop.training.loop.fit`): ``auto`` uses the
        compiled one wherever it supports the run and is faster, else NumPy.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted; outputs are in this order.
    n_features_in_ : int
        Number of features seen in ``fit`` (``C * H * W`` for 4-D ``X``).
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names when ``X`` was a DataFrame with string column names.
    input_shape_ : tuple of int
        ``(C, H, W)`` shape of one sample as the network takes it.
    net_ : Network
        The trained network (``net_.name`` is ``"dense"`` for the non-image fallback).
    rule_ : LearningRule
        The bound learning rule used in training.
    history_ : ndarray of shape (n_epochs,)
        Summed training cost of every epoch.
    train_config_ : TrainConfig
        The resolved hyperparameters of the run.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = HandpropClassifier(epochs=5, scale=16.0).fit(X[:300], y[:300])
    >>> clf.predict_proba(X[300:305]).shape
    (5, 10)
    """

    def __init__(
        self,
        net="small",
        rule="exact",
        epochs=20,
        lr=None,
        momentum=None,
        optimizer=None,
        batch_size=None,
        seed=0,
        dtype="float64",
        image_shape=None,
        scale=None,
        engine="auto",
    ):
        self.net = net
        self.rule = rule
        self.epochs = epochs
        self.lr = lr
        self.momentum = momentum
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.seed = seed
        self.dtype = dtype
        self.image_shape = image_shape
        self.scale = scale
        self.engine = engine

    # -- tags ----------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True  # also 4-D (n, C, H, W); no sklearn tag for it
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.input_tags.string = False
        tags.target_tags.required = True
        tags.classifier_tags.multi_class = not is_seed_preset(self.net)
        tags.classifier_tags.multi_label = False
        tags.non_deterministic = False  # everything random is drawn from ``seed``
        return tags

    # -- sklearn API ---------------------------------------------------------------
    def fit(self, X: ArrayLike, y: ArrayLike) -> HandpropClassifier:
        """Build the network for the data and train it.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Training samples; rows are images flattened row-major.
        y : array-like of shape (n_samples,)
            Class labels (any sortable values: ints, strings, ...).

        Returns
        -------
        self : HandpropClassifier
        """
        check_params(self.net, self.rule, self.scale, self.engine)
        X, shape_4d = flatten_4d(X)
        X, y = validate_data(
            self, X, y, dtype=(np.float64, np.float32), ensure_all_finite=True,
            ensure_min_samples=1,
        )
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                "Classifier can't train when only one class is present: y has the single "
                f"class {self.classes_[0]!r}; a classifier needs at least 2 classes"
            )
        net, defaults_key = build_network(self.net, self.image_shape, X.shape[1],
                                          len(self.classes_), shape_4d)
        config = train_config(defaults_key, self.get_params(deep=False))
        rule = fresh_rule(self.rule)
        net.init(config.seed, scheme=config.init, dtype=config.dtype)
        rule.bind(net, config.seed)
        images = scaled(X, self.scale).reshape(X.shape[0], *net.input_shape)
        history = fit_network(net, images, encoded.astype(np.int64), config, rule=rule,
                              engine=self.engine)
        if history.diverged[0] is not None:
            where = history.diverged[0]
            raise DivergedError(
                f"training diverged at epoch {where['epoch']}, step {where['step']} (the cost "
                f"became NaN or inf); try a smaller lr (lr={config.lr})"
            )
        self.input_shape_ = net.input_shape
        self.net_ = net
        self.rule_ = rule
        self.train_config_ = config
        self.history_ = np.asarray(history.cost, dtype=np.float64).copy()
        return self

    def _images(self, X: ArrayLike) -> np.ndarray:
        """``X`` checked against what was fitted, as the network's input."""
        check_is_fitted(self)
        X, shape_4d = flatten_4d(X)
        X = validate_data(
            self, X, reset=False, dtype=(np.float64, np.float32), ensure_all_finite=True
        )
        if shape_4d is not None and shape_4d != self.input_shape_:
            raise ValueError(
                f"X has samples of shape {shape_4d}, but the network was fitted on "
                f"{self.input_shape_}"
            )
        return scaled(X, self.scale).reshape(X.shape[0], *self.input_shape_)

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Rows sum to 1, columns in the order of ``classes_``. A softmax network
            gives the softmax of its logits; a single sigmoid output ``p`` gives
            ``[1 - p, p]``; other multi-output networks (l2/bce losses) give their
            outputs clipped to >= 0 and normalised.
        """
        images = self._images(X)  # first: it raises NotFittedError before net_ is read
        out = np.asarray(self.net_.predict(images), dtype=np.float64)
        return probabilities(out, self.net_.loss)

    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted class labels: ``classes_[argmax(predict_proba(X))]``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)  # checks that the estimator is fitted
        return self.classes_[np.argmax(proba, axis=1)]

    # -- pickling ------------------------------------------------------------------
    # A Network holds its activations as lambdas, which pickle cannot store: the fitted
    # network is pickled as its spec and parameters and rebuilt on loading, and the rule
    # as its state (rebuilt from ``rule`` and bound to the rebuilt network).
    def __getstate__(self):
        state = dict(super().__getstate__())
        net = state.get("net_")
        if isinstance(net, Network):
            state["net_"] = {
                "spec": net.spec(), "params": net.get_params(), "dtype": net.dtype.name
            }
            rule = state.get("rule_")
            if isinstance(rule, LearningRule):
                state["rule_"] = {"state": rule.state()}
        return state

    def __setstate__(self, state):
        state = dict(state)
        saved_net, saved_rule = state.get("net_"), state.get("rule_")
        super().__setstate__(state)
        if isinstance(saved_net, dict) and "spec" in saved_net:
            net = network_from_spec(saved_net["spec"])
            net.init(0, dtype=saved_net["dtype"])
            net.set_params(saved_net["params"])
            self.net_ = net
            if isinstance(saved_rule, dict) and "state" in saved_rule:
                rule = fresh_rule(self.rule)
                rule.bind(net, self.train_config_.seed)
                rule.load_state(saved_rule["state"])
                self.rule_ = rule
