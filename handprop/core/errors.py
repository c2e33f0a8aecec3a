"""Errors that mean "the user asked for something that cannot work".

The CLI turns every :class:`HandpropError` into a one-line message and a non-zero
exit; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class HandpropError(Exception):
    """Base class of user-facing errors (bad shapes, values, files, options)."""


class ShapeError(HandpropError, ValueError):
    """An array or a layer does not have the shape it must have."""


class ConfigError(HandpropError, ValueError):
    """An option, hyperparameter or config file is invalid."""


class DataError(HandpropError, ValueError):
    """A dataset is empty, malformed, or contains values it must not."""


class DivergedError(HandpropError, FloatingPointError):
    """Training produced a non-finite cost (raised only when asked to)."""
