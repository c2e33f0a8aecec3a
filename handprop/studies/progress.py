"""A dependency-free progress display with an ETA, on standard error.

Four modes (``--progress``):

* ``bar`` -- one line redrawn in place (carriage returns), for a terminal;
* ``lines`` -- a plain line every ``interval`` seconds (and one at the end), for logs and
  CI, e.g. ``reproduce: 3/12 jobs, 41%, 1m02.0s elapsed, ETA 1m29.5s``;
* ``none`` -- nothing;
* ``auto`` (the default) -- ``bar`` when standard error is a terminal, else ``lines``.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

MODES = ("auto", "bar", "lines", "none")
LINE_INTERVAL = 30.0  # seconds between two progress lines in ``lines`` mode


def resolve_mode(mode: str | None, stream: TextIO | None = None) -> str:
    """``auto`` (or None) -> ``bar`` on a terminal, ``lines`` elsewhere."""
    if mode in (None, "auto"):
        stream = stream or sys.stderr
        try:
            return "bar" if stream.isatty() else "lines"
        except (AttributeError, ValueError):
            return "lines"
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


class ProgressBar:
    """``bar.update(done, note)``; ``bar.close()``.

    ``mode``: see the module docstring. ``enabled`` is the older switch: False is
    ``none``, True ``bar``, None ``auto``; ``mode`` wins when both are given. The bar
    redraws at most every 0.1 s; lines come every ``interval`` seconds. ``unit`` names
    what is counted (``epoch``) in progress lines; without it the note says it
    (``3/12 jobs``).
    """

    def __init__(self, total: int, label: str = "", stream: TextIO | None = None,
                 enabled: bool | None = None, width: int = 28, mode: str | None = None,
                 interval: float | None = None, unit: str | None = None) -> None:
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream or sys.stderr
        if mode is None:
            mode = {False: "none", True: "bar", None: "auto"}[enabled]
        self.mode = resolve_mode(mode, self.stream)
        self.enabled = self.mode != "none"
        self.width = width
        self.interval = LINE_INTERVAL if interval is None else interval
        self.unit = unit
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._last_line = self.start
        self._note = ""
        self._drawn = False
        self.done = 0

    def _eta(self, elapsed: float) -> str:
        fraction = min(self.done / self.total, 1.0)
        if fraction <= 0:
            return "--"
        return format_seconds(elapsed / fraction - elapsed)

    def update(self, done: int, note: str = "") -> None:
        self.done, self._note = done, note
        if self.mode == "bar":
            self._bar()
        elif self.mode == "lines":
            now = time.perf_counter()
            if now - self._last_line >= self.interval:
                self._last_line = now
                self._line()

    def _bar(self) -> None:
        now = time.perf_counter()
        if now - self._last_draw < 0.1 and self.done < self.total:
            return
        self._last_draw = now
        elapsed = now - self.start
        fraction = min(self.done / self.total, 1.0)
        filled = int(round(self.width * fraction))
        bar = "#" * filled + "-" * (self.width - filled)
        text = (f"\r{self.label} [{bar}] {self.done}/{self.total} {elapsed:6.1f}s "
                f"ETA {self._eta(elapsed):>7} {self._note}")
        self.stream.write(text.ljust(100)[:120])
        self.stream.flush()
        self._drawn = True

    def line(self) -> str:
        """The text of one progress line (``lines`` mode)."""
        elapsed = time.perf_counter() - self.start
        percent = math.floor(100 * min(self.done / self.total, 1.0))
        if self.unit:
            lead, tail = f"{self.unit} {self.done}/{self.total}", self._note
        else:
            lead, tail = self._note or f"{self.done}/{self.total}", ""
        return (f"{self.label}: {lead}, {percent}%, {format_seconds(elapsed)} elapsed, "
                f"ETA {self._eta(elapsed)}{f', {tail}' if tail else ''}")

    def _line(self) -> None:
        self.stream.write(self.line() + "\n")
        self.stream.flush()
        self._drawn = True

    def message(self, text: str) -> None:
        """A line of its own (a notice), shown in every mode; a bar is redrawn below it."""
        if self.mode == "bar" and self._drawn:
            self.stream.write("\r" + text.ljust(100) + "\n")
            self._last_draw = 0.0
            self._bar()
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.mode == "bar" and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
        elif self.mode == "lines" and self._drawn:
            self._line()  # where it ended


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{secs:04.1f}s"
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}h{minutes:02d}m"
