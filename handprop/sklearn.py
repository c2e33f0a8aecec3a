"""``handprop.sklearn.HandpropClassifier``: the estimator lives in
:mod:`handprop.integrations.sklearn`; this is its public import path."""

from .integrations.sklearn import HandpropClassifier, dense_fallback_spec

__all__ = ["HandpropClassifier", "dense_fallback_spec"]
