"""Writing results safely: every file appears whole or not at all.

Each writer writes to a temporary file in the destination folder and renames it into
place (``os.replace`` is atomic on POSIX and Windows), so an interrupted run never
leaves a half-written JSON, CSV, PNG or Markdown file behind. The file gets the mode
any new file would get (0666 less the umask), or keeps the mode of the file it replaces.

:func:`check_output_file` and :func:`check_output_dir` say, before any work, whether a
path can be written at all (a folder in the way, a regular file where a folder must be,
a read-only or pseudo file system), so a run never fails at its end for a reason known
at its start. A failed write (a full disk) is a one-line :class:`OutputError`.

Temporary files are named ``.<name>.<tag>.<random>.tmp``: the tag is this process's
(``pid<PID>``; the next write of the same file deletes those of a writer that died), or
the one a study gives its jobs (:func:`temporary_tag`), so that a study can delete the
temporaries its own killed workers left behind, and no one else's
(:func:`remove_temporaries`). :func:`folder_lock` keeps two runs out of one results
folder.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
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


_TAG = {"tag": ""}


def _temp_tag() -> str:
    return _TAG["tag"] or f"pid{os.getpid()}"


def _remove_dead_writers(path: Path) -> None:
    """Temporaries of ``path`` left by a process of this machine that died mid-write
    (``kill -9``): named ``.<name>.pid<PID>.<random>.tmp`` with a PID no longer alive."""
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.pid*.tmp"):
        pid = leftover.name[len(path.name) + 5:].partition(".")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                leftover.unlink()


@contextlib.contextmanager
def temporary_tag(tag: str) -> Iterator[None]:
    """Name the temporary files written inside the block with ``tag`` (a study's run)."""
    saved, _TAG["tag"] = _TAG["tag"], tag
    try:
        yield
    finally:
        _TAG["tag"] = saved


def remove_temporaries(folders: Iterable[Path], tag: str) -> int:
    """Delete the temporary files named with ``tag`` in ``folders`` (left by a writer
    that was killed mid-write); how many. Nothing else is touched."""
    removed = 0
    for folder in folders:
        for leftover in Path(folder).glob(f".*.{tag}.*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()
                removed += 1
    return removed


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating parent folders)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_writers(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_temp_tag()}.",
                                   suffix=".tmp")
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


# -- one run per results folder ---------------------------------------------------------

LOCK_NAME = ".handprop.lock"


class FolderInUseError(OutputError):
    """Another live run holds the results folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return pid > 0  # a process of another user (PermissionError) is alive
    return True


def _lock_owner(fd: int) -> int | None:
    """The PID written in an open lock file (None if unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).split()[0])
    return None


def _take(fd: int, path: Path) -> str:
    """Lock ``fd``, the file at ``path``: "taken", "busy" (a live run holds it) or "retry"
    (the file was replaced meanwhile). With flock the kernel releases the lock of a
    process that died, however it died; where flock is not available (some network file
    systems) a lock whose PID is dead is stale and taken over."""
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return "busy"
    except (ImportError, OSError):
        owner = _lock_owner(fd)
        if owner is not None and owner != os.getpid() and _pid_alive(owner):
            return "busy"
    try:  # the owner we raced with may have removed the file: then lock the new one
        return "taken" if os.fstat(fd).st_ino == path.stat().st_ino else "retry"
    except FileNotFoundError:
        return "retry"


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder`` for this run: a second run on it gets :class:`FolderInUseError` (one
    line naming the owner's PID). The lock file holds this process's PID and is removed
    on the way out; a lock left by a process that died is taken over."""
    path = Path(folder) / LOCK_NAME
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputError(f"cannot lock {folder}: {_reason(exc)}") from None
        outcome = _take(fd, path)
        if outcome == "taken":
            break
        owner = _lock_owner(fd)
        os.close(fd)
        if outcome == "busy":
            raise FolderInUseError(f"{folder} is in use by another handprop run (pid {owner}); "
                              "wait for it to finish or choose another results folder")
    else:  # pragma: no cover - five races lost in a row
        raise FolderInUseError(f"{folder} is in use by another handprop run")
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_ino == path.stat().st_ino:
                path.unlink()
        os.close(fd)


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
