"""A dependency-free progress bar with an ETA, on standard error."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``bar.update(done, note)``; ``bar.close()``. Redraws at most every 0.1 s.

    Disabled (silent) when ``enabled`` is False; by default enabled when the stream is a
    terminal, so logs and CI output are not filled with carriage returns.
    """

    def __init__(self, total: int, label: str = "", stream: TextIO | None = None,
                 enabled: bool | None = None, width: int = 28) -> None:
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.width = width
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self.done = 0

    def update(self, done: int, note: str = "") -> None:
        self.done = done
        now = time.perf_counter()
        if not self.enabled or (now - self._last_draw < 0.1 and done < self.total):
            return
        self._last_draw = now
        elapsed = now - self.start
        fraction = min(done / self.total, 1.0)
        eta = elapsed / fraction - elapsed if fraction > 0 else float("nan")
        filled = int(round(self.width * fraction))
        bar = "#" * filled + "-" * (self.width - filled)
        text = (f"\r{self.label} [{bar}] {done}/{self.total} {elapsed:6.1f}s "
                f"ETA {eta:6.1f}s {note}")
        self.stream.write(text.ljust(100)[:120])
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes)}m{secs:04.1f}s"
