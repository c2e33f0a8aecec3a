"""What every command shares: the one-line-error parser, exit statuses, the command
registry, argument types that check a value before any work (bounded integers, output
paths), and small helpers for writing results."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from ..core.errors import HandpropError
from ..core.io import OutputError, check_output_dir, check_output_file, write_json

EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 130

Setup = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line and exit 2 like every other user error."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("handprop").strip()
        sys.stderr.write(f"handprop: error: {f'{command}: ' if command else ''}{message}\n")
        raise SystemExit(EXIT_USAGE)


# -- argument types: a bad value is refused while parsing, before any work ---------------

def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in ``low..high`` (the limits of
    :mod:`handprop.core.limits`); the error names the flag and the limit."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in {low}..{high}, got {value}")
        return value

    return parse


def _path_type(check: Callable[[Path], Path]) -> Callable[[str], Path]:
    def parse(text: str) -> Path:
        try:
            return check(Path(text))
        except HandpropError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


output_file = _path_type(check_output_file)
"""An argparse type: a file path that can be written (checked before any work)."""
output_dir = _path_type(check_output_dir)
"""An argparse type: a folder that can be created or written (checked before any work)."""


def add_progress_args(p: argparse.ArgumentParser) -> None:
    """``--progress`` and ``--quiet`` (the same as ``--progress none``)."""
    from ..studies.progress import MODES

    p.add_argument("--progress", choices=MODES, default="auto",
                   help="auto (a bar on a terminal, else a line every 30 s) | bar | lines | "
                        "none")
    p.add_argument("--quiet", action="store_true", help="no progress (--progress none)")


def progress_mode(args: argparse.Namespace) -> str:
    return "none" if args.quiet else args.progress


def format_number(value: float | None) -> str:
    """A cost or other float for people: 4 decimals when that reads well, else 4
    significant digits (never 300 digits for 1e300)."""
    if value is None or not math.isfinite(value):
        return "n/a" if value is None else str(value)
    if value != 0 and not 1e-3 <= abs(value) < 1e6:
        return f"{value:.4g}"
    return f"{value:.4f}"


# -- a reader that goes away (``handprop ... | head``) -----------------------------------

class ClosedPipeGuard:
    """Wraps ``sys.stdout`` or ``sys.stderr``: once the reader has gone (a broken pipe),
    further output is dropped (the stream is pointed at /dev/null) and the command goes
    on to finish its work and write its files, quietly. Any other failed write (a full
    disk: ``> /dev/full``) drops the output too, and on standard output ends the
    command with one line (an :class:`~handprop.core.io.OutputError`)."""

    def __init__(self, stream: Any, name: str = "standard output") -> None:
        self._stream = stream
        self.name = name
        self.broken = False

    def _failed(self, exc: OSError) -> None:
        self._drop()
        if self.name == "standard output":  # (an error on stderr has nowhere to go)
            raise OutputError(f"cannot write to {self.name}: "
                              f"{exc.strerror or exc}") from None

    def _drop(self) -> None:
        self.broken = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._drop()
            return len(text)
        except OSError as exc:
            self._failed(exc)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            self._drop()
            with contextlib.suppress(OSError, ValueError):
                self._stream.flush()  # what was buffered goes to /dev/null
            if not isinstance(exc, BrokenPipeError):
                self._failed(exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help, how to add its arguments, how to run it.

    ``order`` places it in ``handprop --help`` (lower first; ties by name), so the list
    keeps a deliberate reading order however the modules are discovered. ``module`` is
    where it is defined.
    """

    name: str
    help: str
    run: Run
    setup: Setup = _no_arguments
    order: int = 100
    module: str = ""


COMMANDS: dict[str, Command] = {}
# Functions that yield commands known only when the parser is built (one per registered
# study, including studies registered after the CLI was imported).
COMMAND_SOURCES: list[Callable[[], Iterable[Command]]] = []


def command(name: str, help: str, setup: Setup = _no_arguments,
            order: int = 100) -> Callable[[Run], Run]:
    """Register the decorated ``run(args) -> exit status`` as ``handprop NAME``."""

    def register(run: Run) -> Run:
        COMMANDS[name] = Command(name, help, run, setup, order, run.__module__)
        return run

    return register


def command_source(source: Callable[[], Iterable[Command]]) -> Callable[[], Iterable[Command]]:
    """Register a function that yields commands each time the parser is built."""
    COMMAND_SOURCES.append(source)
    return source


def all_commands() -> list[Command]:
    """Every registered command, in ``--help`` order."""
    found = dict(COMMANDS)
    for source in COMMAND_SOURCES:
        found.update((c.name, c) for c in source())
    return sorted(found.values(), key=lambda c: (c.order, c.name))


def versions() -> dict[str, str]:
    from ..studies.records import versions as package_versions

    return package_versions()


def write_results(path: Path | None, data: dict[str, Any]) -> None:
    """``--json PATH``: write ``data`` there (atomically) and say so; nothing without it."""
    if path:
        write_json(path, data)
        print(f"wrote {path}")


def add_track_arg(p: argparse.ArgumentParser) -> None:
    """``--track DIR``: mirror the results into an MLflow store in DIR (optional extra)."""
    p.add_argument("--track", type=output_dir, metavar="DIR",
                   help="also record the results in an MLflow store in DIR (SQLite, "
                        "DIR/mlflow.db; needs pip install 'handprop[mlflow]')")


def check_track(args: argparse.Namespace) -> None:
    """``--track`` without MLflow installed fails here, before any work."""
    if getattr(args, "track", None):
        from ..integrations.tracking import require_mlflow

        require_mlflow()
