"""Finishing what must not be cut in half: an interrupt (Ctrl-C, SIGTERM) that arrives
while a report of finished work is being written waits until it is written.

    with deferred_interrupts():
        write_outputs()          # Ctrl-C here: the outputs are still written whole,
                                 # then KeyboardInterrupt is raised

A second interrupt during the block is not deferred (the user insists). Only signals
whose handler raises KeyboardInterrupt are deferred (SIGINT in Python, SIGTERM under the
``handprop`` command); elsewhere, and outside the main thread, this does nothing.

An interrupt can also be lost: a KeyboardInterrupt raised while the main thread runs a
ctypes callback (Numba's compiler caches its code through one) is printed and dropped.
:func:`interrupt` (the ``handprop`` command's handler) therefore also keeps the signal
pending, and :func:`raise_if_interrupted`, called where work may stop (after each
finished job), raises it again.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

_pending: list[int] = []  # a signal :func:`interrupt` saw and no one has handled yet


def interrupt(signum: int, frame: Any) -> None:
    """A signal handler: KeyboardInterrupt now, and kept until handled (see above)."""
    _pending.append(signum)
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Raise the KeyboardInterrupt of a signal that was lost on its way."""
    if _pending:
        handled()
        raise KeyboardInterrupt


def handled() -> None:
    """The interrupt has been acted on: nothing is pending any more."""
    _pending.clear()


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def defer(signum: int, frame: Any) -> None:
        if pending:  # the second one: stop now
            raise KeyboardInterrupt
        pending.append(signum)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if callable(handler):  # Python raises KeyboardInterrupt from it
            previous[sig] = handler
            signal.signal(sig, defer)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if pending:
        raise KeyboardInterrupt
