"""The ``handprop`` command.

Every user mistake (bad option, shape, value or file) ends in one line on standard
error, ``handprop: error: ...``, and exit status 2; no traceback. Results are written
atomically, so a failed or interrupted command leaves no half-written file.

Exit status: 0 done, 1 a check failed (gradcheck), 2 bad input, 3 training diverged
(results up to the divergence are still written), 130 interrupted.

A reader that goes away (``handprop train | head -1``) does not stop the command: its
output is dropped from then on, its files are still written, and it exits quietly.

Each command lives in its own module of this package and registers itself there
(:func:`.common.command`); a study gets its command from :mod:`.studies`. A new command
is one new module: :func:`load_commands` imports every module here.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from .. import __version__
from ..core.errors import HandpropError
from ..core.interrupts import handled, interrupt
from .common import (
    EXIT_DIVERGED,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    ClosedPipeGuard,
    Command,
    Parser,
    all_commands,
)

__all__ = ["EXIT_DIVERGED", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_USAGE", "load_commands",
           "main", "make_parser"]


def load_commands() -> list[Command]:
    """Import every command module of this package (they register themselves); every
    command, in ``--help`` order."""
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):  # not __main__: importing it would run the CLI
            importlib.import_module(f"{__name__}.{info.name}")
    return all_commands()


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="handprop", description="NumPy CNNs with hand-written backward passes.")
    parser.add_argument("--version", action="version", version=f"handprop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in load_commands():
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.setup(p)
        p.set_defaults(handprop_run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a one-line usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    # SIGTERM is handled like Ctrl-C, and neither is lost (see core/interrupts.py)
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    streams = _guard_streams()
    try:
        status = _run(args)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        unwritten = _release_streams(streams)
    return unwritten if unwritten is not None and status == 0 else status


def _run(args: argparse.Namespace) -> int:
    """Run the command; every handprop error, an interrupt, an exhausted memory: one line
    and an exit status."""
    try:
        with warnings.catch_warnings():
            default, warnings.showwarning = warnings.showwarning, _note
            _note.default = default  # type: ignore[attr-defined]
            return args.handprop_run(args)
    except HandpropError as exc:
        sys.stderr.write(f"handprop: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        handled()
        sys.stderr.write("handprop: interrupted\n")
        return EXIT_INTERRUPTED
    except MemoryError:
        # The sizes a user gives are checked against handprop.core.limits first; this is
        # what the estimate missed.
        sys.stderr.write("handprop: error: out of memory\n")
        return EXIT_USAGE


def _note(message: Warning | str, category: type, *args: Any, **kwargs: Any) -> None:
    """handprop's notices (e.g. the compiled engine fell back to NumPy) as one line on
    stderr, without a file and line: they are news, not bugs. Others as usual."""
    from ..training.epoch import EngineNotice

    if issubclass(category, EngineNotice):
        sys.stderr.write(f"handprop: note: {message}\n")
    else:
        _note.default(message, category, *args, **kwargs)  # type: ignore[attr-defined]


def _guard_streams() -> dict[str, Any]:
    """Standard output and error, when they are the process's own, wrapped so that a
    closed pipe drops output instead of raising (see :class:`.common.ClosedPipeGuard`)."""
    guarded = {}
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and stream is getattr(sys, f"__{name}__"):
            shown = "standard output" if name == "stdout" else "standard error"
            setattr(sys, name, ClosedPipeGuard(stream, shown))
            guarded[name] = stream
    return guarded


def _release_streams(guarded: dict[str, Any]) -> int | None:
    """Put the streams back; EXIT_USAGE (after one line) if the last of standard output
    could not be written (a full disk), else None."""
    status = None
    for name, stream in guarded.items():
        guard = getattr(sys, name)
        if isinstance(guard, ClosedPipeGuard):
            try:
                guard.flush()  # a pipe closed after the last write shows here
            except HandpropError as exc:
                sys.stderr.write(f"handprop: error: {exc}\n")
                status = EXIT_USAGE
        setattr(sys, name, stream)
    return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
