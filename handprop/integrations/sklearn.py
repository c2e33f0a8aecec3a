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

import copy
from collections.abc import Mapping
from math import isqrt, prod
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..core.errors import DivergedError
from ..core.network import Network
from ..core.ops.losses import log_softmax
from ..core.presets import NET_DEFAULTS, PRESETS
from ..core.spec import network_from_spec
from ..rules import parse_rule
from ..rules.base import LearningRule
from ..training.loop import TrainConfig, fit

__all__ = ["HandpropClassifier", "dense_fallback_spec"]

# Smallest square image side each image preset can take (below it, a shape error):
# small: two 2x2 pools after padded 3x3 convs; lenet: pool, unpadded 5x5 conv, pool.
_MIN_SIDE = {"small": 4, "lenet": 12}
_SEED_SHAPE = (1, 8, 8)
_HIDDEN = 32


def dense_fallback_spec(input_shape: tuple[int, ...], classes: int) -> dict[str, Any]:
    """The network used when the features are not an image: flatten, dense 32 + relu,
    dense ``classes`` (softmax cross-entropy, PyTorch initialisation).

    Parameters
    ----------
    input_shape : tuple of int
        Shape of one sample, e.g. ``(1, 1, n_features)``.
    classes : int
        Number of output units.

    Returns
    -------
    dict
        A spec for :func:`handprop.core.spec.network_from_spec`.
    """
    return {
        "name": "dense",
        "input_shape": list(input_shape),
        "loss": "softmax_ce",
        "init": "torch",
        "layers": [
            {"type": "flatten", "name": "flatten"},
            {"type": "dense", "name": "fc1", "out_features": _HIDDEN},
            {"type": "activation", "name": "act1", "activation": "relu"},
            {"type": "dense", "name": "fc2", "out_features": classes},
        ],
    }


def _stable_softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis via a max-shifted log-softmax (no overflow)."""
    return np.exp(log_softmax(logits))


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
        Learning rate; None = the network's default (``NET_DEFAULTS``).
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

    # -- tags ----------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True  # also 4-D (n, C, H, W); no sklearn tag for it
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.input_tags.string = False
        tags.target_tags.required = True
        tags.classifier_tags.multi_class = not self._is_seed_preset()
        tags.classifier_tags.multi_label = False
        tags.non_deterministic = False  # everything random is drawn from ``seed``
        return tags

    def _is_seed_preset(self) -> bool:
        if isinstance(self.net, Mapping):
            return self.net.get("preset") == "seed"
        return self.net == "seed"

    # -- input handling ------------------------------------------------------------
    @staticmethod
    def _flatten_4d(X):
        """(n, C, H, W) -> (n, C*H*W) and the image shape; anything else unchanged."""
        if getattr(X, "ndim", None) == 4 and not hasattr(X, "tocsr"):
            X = np.asarray(X)
            return X.reshape(X.shape[0], -1), tuple(int(s) for s in X.shape[1:])
        return X, None

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        if self.scale is None:
            return X
        return X / self.scale

    def _check_params(self) -> None:
        if self.scale is not None:
            ok = isinstance(self.scale, int | float | np.number) and not isinstance(
                self.scale, bool
            )
            if not ok or not np.isfinite(self.scale) or self.scale <= 0:
                raise ValueError(f"scale must be a positive number or None, got {self.scale!r}")
        if not (isinstance(self.net, Mapping) or self.net in PRESETS):
            raise ValueError(
                f"net must be one of {', '.join(map(repr, PRESETS))} or a network spec "
                f"dict, got {self.net!r}"
            )
        if not isinstance(self.rule, str | LearningRule):
            raise ValueError(f"rule must be a rule name or a LearningRule, got {self.rule!r}")

    def _explicit_shape(self, n_features: int, shape_4d) -> tuple[int, int, int] | None:
        """The (C, H, W) given by ``image_shape`` or a 4-D X, checked; else None."""
        shape = None
        if self.image_shape is not None:
            try:
                shape = tuple(int(s) for s in self.image_shape)
            except (TypeError, ValueError):
                raise ValueError(
                    f"image_shape must be (C, H, W) or (H, W), got {self.image_shape!r}"
                ) from None
            if len(shape) == 2:
                shape = (1, *shape)
            if len(shape) != 3 or min(shape) < 1:
                raise ValueError(
                    f"image_shape must be (C, H, W) or (H, W) of positive integers, "
                    f"got {self.image_shape!r}"
                )
            if prod(shape) != n_features:
                raise ValueError(
                    f"image_shape {shape} holds {prod(shape)} values but X has "
                    f"{n_features} features"
                )
        if shape_4d is not None:
            if shape is not None and shape != shape_4d:
                raise ValueError(f"image_shape {shape} does not match 4-D X of shape {shape_4d}")
            shape = shape_4d
        return shape

    @staticmethod
    def _square(n_features: int, min_side: int) -> tuple[int, int, int] | None:
        side = isqrt(n_features)
        if side * side == n_features and side >= min_side:
            return (1, side, side)
        return None

    # -- building the network ------------------------------------------------------
    def _build(self, n_features: int, n_classes: int, shape_4d) -> tuple[Network, str]:
        """The untrained network and the ``NET_DEFAULTS`` key of its hyperparameters."""
        explicit = self._explicit_shape(n_features, shape_4d)
        flat_shape = (1, 1, n_features)
        if isinstance(self.net, Mapping):
            spec = dict(self.net)
            preset = spec.get("preset")
            if preset in ("small", "lenet"):
                shape = explicit or self._square(n_features, _MIN_SIDE[preset])
                if shape is None:
                    raise ValueError(
                        f"preset {preset!r}: cannot infer an image shape from {n_features} "
                        "features; give image_shape"
                    )
                spec.setdefault("input_shape", list(shape))
                spec.setdefault("classes", n_classes)
            elif preset is None and "input_shape" not in spec:
                spec["input_shape"] = list(explicit or self._square(n_features, 1) or flat_shape)
            net = network_from_spec(spec)
            defaults = preset if preset in NET_DEFAULTS else "small"
        elif self.net == "seed":
            shape = explicit or self._square(n_features, 1) or flat_shape
            if shape != _SEED_SHAPE:
                raise ValueError(
                    f"net='seed' takes 8x8 images (64 features), got samples of shape {shape}"
                )
            net = PRESETS["seed"]()
            defaults = "seed"
        else:
            shape = explicit or self._square(n_features, _MIN_SIDE[self.net])
            if shape is None:
                net = network_from_spec(dense_fallback_spec(flat_shape, n_classes))
            else:
                net = PRESETS[self.net](input_shape=shape, classes=n_classes)
            defaults = self.net
        if prod(net.input_shape) != n_features:
            raise ValueError(
                f"network {net.name!r} takes samples of shape {net.input_shape} "
                f"({prod(net.input_shape)} values) but X has {n_features} features"
            )
        if explicit is not None and net.input_shape != explicit:
            raise ValueError(
                f"network {net.name!r} takes samples of shape {net.input_shape}, "
                f"the data has shape {explicit}"
            )
        outputs = net.output_shape
        if len(outputs) != 1:
            raise ValueError(f"network {net.name!r} must end in a flat output, got {outputs}")
        if outputs[0] == 1 and n_classes > 2:
            raise ValueError(
                f"network {net.name!r} has a single output unit (a binary classifier) but "
                f"y has {n_classes} classes; use net='small' or 'lenet' for multiclass"
            )
        if outputs[0] != 1 and outputs[0] != n_classes:
            raise ValueError(
                f"network {net.name!r} has {outputs[0]} output units but y has "
                f"{n_classes} classes"
            )
        return net, defaults

    def _fresh_rule(self) -> LearningRule:
        """An unbound copy of ``rule`` (the parameter itself is never modified)."""
        return parse_rule(self.rule) if isinstance(self.rule, str) else copy.deepcopy(self.rule)

    def _config(self, defaults_key: str) -> TrainConfig:
        defaults = NET_DEFAULTS[defaults_key]
        optimizer = self.optimizer if self.optimizer is not None else defaults["optimizer"]
        if self.momentum is not None:
            momentum = self.momentum
        elif optimizer == defaults["optimizer"]:
            momentum = defaults["momentum"]
        else:
            momentum = None
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size if self.batch_size is not None else defaults["batch_size"],
            optimizer=optimizer,
            lr=self.lr if self.lr is not None else defaults["lr"],
            momentum=momentum,
            shuffle=True,
            seed=self.seed,
            dtype=self.dtype,
        ).validate()

    # -- sklearn API ---------------------------------------------------------------
    def fit(self, X, y):
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
        self._check_params()
        X, shape_4d = self._flatten_4d(X)
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
        net, defaults_key = self._build(X.shape[1], len(self.classes_), shape_4d)
        config = self._config(defaults_key)
        rule = self._fresh_rule()
        net.init(config.seed, scheme=config.init, dtype=config.dtype)
        rule.bind(net, config.seed)
        images = self._scaled(X).reshape(X.shape[0], *net.input_shape)
        history = fit(net, images, encoded.astype(np.int64), config, rule=rule)
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

    def _images(self, X) -> np.ndarray:
        check_is_fitted(self)
        X, shape_4d = self._flatten_4d(X)
        X = validate_data(
            self, X, reset=False, dtype=(np.float64, np.float32), ensure_all_finite=True
        )
        if shape_4d is not None and shape_4d != self.input_shape_:
            raise ValueError(
                f"X has samples of shape {shape_4d}, but the network was fitted on "
                f"{self.input_shape_}"
            )
        return self._scaled(X).reshape(X.shape[0], *self.input_shape_)

    def predict_proba(self, X):
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
        images = self._images(X)
        out = np.asarray(self.net_.predict(images), dtype=np.float64)
        if out.shape[-1] == 1:
            p = np.clip(out[:, 0], 0.0, 1.0)
            return np.column_stack([1.0 - p, p])
        if self.net_.loss == "softmax_ce":
            return _stable_softmax(out)
        out = np.clip(out, 0.0, None)
        total = out.sum(axis=1, keepdims=True)
        uniform = np.full_like(out, 1.0 / out.shape[1])
        return np.divide(out, total, out=uniform, where=total > 0)

    def predict_log_proba(self, X):
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

    def predict(self, X):
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
                rule = self._fresh_rule()
                rule.bind(net, self.train_config_.seed)
                rule.load_state(saved_rule["state"])
                self.rule_ = rule
