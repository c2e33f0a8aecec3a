"""Checking, before any work, that the engine asked for can run every job of a study.

A study's job builds its network, data and rule, then calls :func:`~.loop.fit`. In
*check-only* mode (:func:`engine_check_only`, entered by the study skeleton for each job
before the first one runs) ``fit`` stops as soon as it knows the engine: an engine that
cannot run the job raises its one-line ConfigError (``--engine compiled`` with a rule
that has no compiled form), one that can raises :class:`EngineChecked`. So an
``--engine compiled`` study refuses before it trains anything, not after five of eight
jobs and a partial report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from ..core.errors import ConfigError

_CHECKING: ContextVar[bool] = ContextVar("handprop_engine_check_only", default=False)


class EngineChecked(Exception):  # noqa: N818 - a signal, not an error
    """Raised by ``fit`` in check-only mode: the engine can run this job."""


@contextlib.contextmanager
def engine_check_only() -> Iterator[None]:
    """Within the block, ``fit`` checks its engine and stops (see the module notes)."""
    token = _CHECKING.set(True)
    try:
        yield
    finally:
        _CHECKING.reset(token)


def stop_if_checking(engine: str, net: Any, rule: Any, optimizer: Any, loss: str,
                     reduction: str, batch_size: int) -> None:
    """In check-only mode: a ConfigError if ``engine`` cannot run this configuration,
    else :class:`EngineChecked`. Otherwise nothing."""
    if not _CHECKING.get():
        return
    if engine == "compiled":
        from .compiled.build import unsupported_reason

        reason = unsupported_reason(net, rule, optimizer, loss, reduction, batch_size)
        if reason:
            raise ConfigError(f"the compiled engine cannot run this: {reason}")
    raise EngineChecked
