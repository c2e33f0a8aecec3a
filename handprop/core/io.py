"""Writing results safely: every file appears whole or not at all.

Each writer writes to a temporary file in the destination folder and renames it into
place (``os.replace`` is atomic on POSIX and Windows), so an interrupted run never
leaves a half-written JSON, CSV, PNG or Markdown file behind. The file gets the mode
any new file would get (0666 less the umask), or keeps the mode of the file it replaces.

:func:`check_output_file` and :func:`check_output_dir` say, before any work, whether a
path can be written at all (a folder in the way, a regular file where a folder must be,
a read-only or pseudo file system), so a run never fails at its end for a reason known
at its start. A failed write (a full disk) is a one-line :class:`OutputError`.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, HandpropError


class OutputError(HandpropError):
    """A result cannot be written (the path is unusable, the disk is full, ...)."""


def _reason(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))


def _umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back
    os.umask(mask)
    return mask


def _new_file_mode(path: Path) -> int:
    """The mode of the file being replaced, or what a new file gets."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _write_all(handle: Any, data: bytes) -> None:
    handle.write(data)
    handle.flush()
    os.fsync(handle.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating parent folders)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            if hasattr(os, "fchmod"):  # POSIX: not mkstemp's 0600
                os.fchmod(handle.fileno(), _new_file_mode(path))
            _write_all(handle, data)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _existing_ancestor(path: Path) -> Path:
    """The nearest folder above ``path`` that exists (or the first non-folder in the way)."""
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path(path.absolute().anchor)  # pragma: no cover - the root always exists


def _probe(folder: Path, shown: Path) -> None:
    """Create and remove a file and a folder in ``folder``: proves it writable (this
    catches read-only and pseudo file systems such as /proc, where permissions alone say
    yes). ``shown`` is the path named in the error."""
    if not folder.is_dir():
        raise OutputError(f"cannot write {shown}: {folder} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".handprop-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
        Path(tempfile.mkdtemp(dir=folder, prefix=".handprop-probe.")).rmdir()
    except OSError as exc:
        raise OutputError(f"cannot write {shown}: cannot create files in {folder} "
                          f"({_reason(exc)})") from None


def check_output_file(path: str | Path) -> Path:
    """Refuse, before any work, a file path that cannot be written: a folder, a path
    under a regular file, a folder that is read-only or cannot hold files. Creates
    nothing."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    if path.exists() and not path.is_file():
        raise OutputError(f"cannot write {path}: it is not a regular file")
    parent = path.parent if path.parent.exists() else _existing_ancestor(path)
    _probe(parent, path)
    return path


def check_output_dir(path: str | Path) -> Path:
    """Refuse, before any work, a results folder that cannot be made or written.
    Creates nothing."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"cannot write to {path}: it is not a directory")
        _probe(path, path)
    else:
        _probe(_existing_ancestor(path), path)
    return path


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_name(name: Any, what: str) -> str:
    """A name that becomes part of a file path: 1 to 64 letters, digits, ``_``, ``.``
    and ``-``, starting with a letter or digit (so never ``..``, a slash or empty)."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise ConfigError(f"{what} {name!r} is not a safe name: use 1 to 64 letters, digits, "
                          "'_', '.' or '-', starting with a letter or digit")
    return name


def to_jsonable(value: Any) -> Any:
    """NumPy values -> plain Python; NaN and inf -> None (strict JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented, strict JSON, atomically."""
    text = json.dumps(to_jsonable(data), indent=2, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **kwargs)
    return atomic_write_bytes(path, buffer.getvalue())
