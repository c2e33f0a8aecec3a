"""What every command shares: the one-line-error parser, exit statuses, the command
registry, and small helpers for writing results."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from ..core.io import write_json

EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 130

Setup = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line and exit 2 like every other user error."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"handprop: error: {self.prog.removeprefix('handprop ')}: {message}\n")
        raise SystemExit(EXIT_USAGE)


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
