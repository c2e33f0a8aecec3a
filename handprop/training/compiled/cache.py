"""Where the compiled kernels are cached, and what a cache entry must pass to be used.

Numba compiles a kernel on first use (tens of seconds for a network's set) and can keep
the machine code on disk. Its own cache has three faults for a library like this one,
all fixed here:

* **a read-only install crashes.** ``@njit(cache=True)`` looks for a writable folder
  when a kernel is *defined* (next to the source, then ``~/.cache/numba``) and raises
  ``RuntimeError: cannot cache function ...: no locator available`` at import when
  there is none;
* **stale kernels.** Numba keys a cached function on its own file only, not on the files
  of the functions it calls: edit ``kernels_conv.py`` and the cached epoch kernel of
  ``kernels_epoch.py`` still runs the old convolution;
* **a corrupted entry** (a truncated ``.nbc``, a garbage ``.nbi``) raises on every run
  until someone deletes it.

So every kernel of this package is cached in a folder of handprop's own, named by a hash
of all the package's sources (:func:`sources_digest`): a changed source is a new folder,
and no entry of another version can ever be read. The folder is
``<root>/numba/<hash>``, the root being the first of

==============================  =========================================================
``HANDPROP_CACHE_DIR``          set by the user (``HANDPROP_CACHE_DIR=/fast/disk``)
``NUMBA_CACHE_DIR``/handprop    where the user keeps Numba's caches
``XDG_CACHE_HOME``/handprop     the XDG convention
``~/.cache/handprop``           the default
==============================  =========================================================

A folder is used only if it can be created, written, is owned by this user and is not
writable by others; else the kernels are compiled in memory, for this process only
(``engine="compiled"``; ``"auto"`` then trains with NumPy, see :func:`unusable_reason`), with
a one-line notice. An entry that cannot be loaded is deleted and compiled again, with a
one-line notice. Folders of other source versions unused for :data:`KEEP_DAYS` days are
deleted (only folders this module made: they carry a marker file).

**Trust.** Numba's cache files are pickles: loading an entry runs whatever the file says.
Whoever can write the cache folder can run code in every compiled run, which is why a
folder writable by others, or owned by someone else, is never used.

Nothing here imports Numba until :func:`prepare` (called when a compiled engine is built).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import os
import pkgutil
import shutil
import stat
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from ..contract import EngineNotice

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = __name__.rpartition(".")[0]
CACHE_ENV = "HANDPROP_CACHE_DIR"
MARKER = "handprop-kernels"
KEEP_DAYS = 30


@functools.lru_cache(maxsize=1)
def sources_digest() -> str:
    """16 hex digits of a SHA-256 over every source file of this package (name and
    bytes) but this one (it decides where kernels live, not what they compute): any
    edit anywhere in the compiled engine names a new cache folder."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if path.name == Path(__file__).name:
            continue
        digest.update(str(path.relative_to(PACKAGE_DIR)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cache_root() -> tuple[Path, str]:
    """(the root folder of handprop's caches, the setting that chose it)."""
    for env, below in ((CACHE_ENV, ""), ("NUMBA_CACHE_DIR", "handprop"),
                       ("XDG_CACHE_HOME", "handprop")):
        value = os.environ.get(env, "").strip()
        if value:
            return Path(value).expanduser() / below, env
    return Path.home() / ".cache" / "handprop", "the default"


def kernel_folder() -> tuple[Path | None, str]:
    """(the folder of this source version's kernels, or None when no usable one; what
    was tried and why it failed)."""
    try:
        root, chosen = cache_root()
        folder = root / "numba" / sources_digest()
    except (OSError, RuntimeError) as exc:  # Path.home() with no home at all
        return None, f"no cache folder ({exc})"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        _check_private(folder)
        with tempfile.TemporaryFile(dir=folder):
            pass
        (folder / MARKER).touch()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return None, f"{folder} ({chosen}) cannot be used: {reason}"
    return folder, f"{folder} ({chosen})"


def _check_private(folder: Path) -> None:
    """Refuse a folder another user could write: its files are run (see the notes)."""
    info = folder.stat()
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise PermissionError(0, f"owned by user {info.st_uid}, not by this user")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(0, f"writable by others (mode {stat.S_IMODE(info.st_mode):o})")


def prune(root: Path, keep: str, days: float = KEEP_DAYS) -> None:
    """Delete kernel folders of other source versions not used for ``days`` days (only
    folders with this module's marker: nothing else under ``root`` is touched)."""
    old = time.time() - days * 86400
    with contextlib.suppress(OSError):
        for folder in root.iterdir():
            marker = folder / MARKER
            if folder.name != keep and len(folder.name) == 16 and marker.is_file() \
                    and marker.stat().st_mtime < old:
                shutil.rmtree(folder, ignore_errors=True)


class CacheNotice(EngineNotice):
    """Something about the kernel cache a user should know (shown as one line, like the
    engine's other notices)."""


def _notice(message: str) -> None:
    warnings.warn(message, CacheNotice, stacklevel=3)


def note_if_in_memory() -> None:
    """Once per process, when a compiled engine is built without a cache folder (as
    :func:`prepare` found it): say that its kernels are compiled in memory (not said when
    only the op table is read, e.g. for the memory estimate, or when ``auto`` falls back
    to NumPy instead)."""
    where = _state["where"]  # None until prepare() ran
    if where is not None and _state["folder"] is None and "memory" not in _state["warned"]:
        _state["warned"].add("memory")
        _notice(f"no usable folder for the compiled kernels' cache ({where}); compiling "
                f"them in memory for this process (set {CACHE_ENV} to keep them)")


def unusable_reason() -> str | None:
    """For ``engine="auto"``: why there is no usable cache folder, or None (compiling every
    kernel in every process costs more than the compiled engine saves on most runs;
    ``engine="compiled"`` still compiles in memory)."""
    folder, where = kernel_folder()
    if folder is None:
        return (f"no usable folder for its kernel cache: {where}; set {CACHE_ENV} to a "
                "writable folder")
    return None


_state: dict[str, Any] = {"folder": None, "where": None, "warned": set()}


def load_kernels() -> None:
    """:func:`prepare`, once per process: every kernel module imported (each registers
    the ops it compiles), cached where no stale or corrupted entry can run."""
    if not _state.get("loaded"):
        prepare()
        _state["loaded"] = True


def prepare() -> None:
    """Import every kernel module of this package with its kernels cached in
    :func:`kernel_folder` (or compiled in memory when there is none). Called before a
    compiled engine is built; cheap when repeated."""
    folder, where = kernel_folder()
    if folder is not None:
        prune(folder.parent, folder.name)
    _state.update(folder=folder, where=where)
    _install_locator()
    for info in pkgutil.iter_modules([str(PACKAGE_DIR)]):
        if info.name != "__main__":  # the command that prints the support list
            importlib.import_module(f"{PACKAGE}.{info.name}")
    _attach_caches(folder)


# -- the Numba side: a locator for this package's files, and a cache that checks -------

@functools.lru_cache(maxsize=1)
def _classes() -> tuple[type, type, type]:
    """(locator, cache, the dispatcher type) built on Numba's classes, once."""
    from numba.core import caching
    from numba.core.dispatcher import Dispatcher

    class Locator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
        """Claims the functions of this package's files: their cache is the current
        kernel folder (or nowhere, when kernels are compiled in memory)."""

        def __init__(self, py_func: Any, py_file: str) -> None:
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._folder = _state["folder"]

        def get_cache_path(self) -> str:
            return str(self._folder or PACKAGE_DIR / "__pycache__" / "in-memory")

        def ensure_cache_path(self) -> None:
            if self._folder is not None:
                super().ensure_cache_path()

        @classmethod
        def from_function(cls, py_func: Any, py_file: str) -> Any:
            if Path(py_file).resolve().parent != PACKAGE_DIR:
                return None  # not ours: Numba's own locators decide
            return cls(py_func, py_file)

    impl_base = caching.CompileResultCacheImpl

    class Impl(impl_base):
        _locator_classes = [Locator]

    class CheckedCache(caching.FunctionCache):
        """Numba's cache, except that an entry that cannot be loaded is deleted and
        compiled again, and a failed save leaves the kernel in memory."""

        _impl_class = Impl

        def load_overload(self, sig: Any, target_context: Any) -> Any:
            try:
                return super().load_overload(sig, target_context)
            except Exception as exc:  # unpickling or rebuilding failed: a corrupted entry
                self._drop(exc)
                return None

        def save_overload(self, sig: Any, data: Any) -> None:
            try:
                super().save_overload(sig, data)
            except OSError as exc:
                _warn_once("save", f"cannot save a compiled kernel to {self._cache_path} "
                                   f"({exc.strerror or exc}); it stays in memory")

        def _drop(self, exc: Exception) -> None:
            index = Path(self._cache_file._index_path)
            base = index.name.removesuffix(".nbi")
            for path in [index, *index.parent.glob(f"{base}.*.nbc")]:
                path.unlink(missing_ok=True)
            _warn_once("corrupt", f"corrupted entries of the compiled kernels' cache "
                                  f"({base}: {type(exc).__name__}) were deleted; compiling "
                                  "them again")

    return Locator, CheckedCache, Dispatcher


def _warn_once(key: str, message: str) -> None:
    if key not in _state["warned"]:
        _state["warned"].add(key)
        _notice(message)


def _install_locator() -> None:
    """Put the package's locator first in Numba's list, so that defining a kernel never
    needs a writable folder (Numba's locators would raise on a read-only install)."""
    from numba.core import caching

    locator = _classes()[0]
    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl
    if locator not in impl._locator_classes:
        impl._locator_classes.insert(0, locator)


def _attach_caches(folder: Path | None) -> None:
    """Give every cached kernel (``cache=True``) of the package's modules the checked
    cache of ``folder``, or none when ``folder`` is None (compiled in memory)."""
    from numba.core.caching import FunctionCache, NullCache

    _, checked, dispatcher = _classes()
    for name, module in list(sys.modules.items()):
        if not name.startswith(f"{PACKAGE}.") or module is None:
            continue
        for kernel in vars(module).values():
            if not isinstance(kernel, dispatcher):
                continue
            if not hasattr(kernel, "_handprop_cached"):  # first seen: as it was defined
                kernel._handprop_cached = isinstance(kernel._cache, FunctionCache)
            if not kernel._handprop_cached:
                continue
            if folder is None:
                kernel._cache = NullCache()
            elif not (isinstance(kernel._cache, checked)
                      and kernel._cache.cache_path == str(folder)):
                kernel._cache = checked(kernel.py_func)
