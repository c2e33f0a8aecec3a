"""The IDX file format (MNIST's, Fashion-MNIST's), read with bounded memory.

An IDX file is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C
int32, 0x0D float32, 0x0E float64), the number of dimensions, each dimension as a
big-endian uint32, then the data, big-endian, row-major. Files may be gzip-compressed.

A file from disk is untrusted, and a gzip file can inflate to far more than its size
(1.9 MB of zeros inflate to 2 GB). So :func:`read_idx` never inflates first and checks
later. It reads the header, then checks the size it declares: the dimensions against
:data:`MAX_IDX_DIMS` and :data:`MAX_IDX_DIM`, the data bytes against the memory budget
(:func:`handprop.core.limits.check_memory`). Only then does it allocate exactly that
many bytes and fill them from the stream in chunks of at most :data:`CHUNK` bytes. A
stream that would inflate past the declared size is stopped at the first extra byte. The
peak memory of a load is the declared data plus a few chunks (:func:`idx_read_bytes`; a
test measures it).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from math import prod
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..core.errors import DataError
from ..core.limits import check_memory

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
TYPE_CODES = ", ".join(f"0x{code:02X}" for code in IDX_TYPES)
MAX_IDX_DIMS = 4  # (N,), (N, W), (N, H, W), (N, C, H, W)
MAX_IDX_DIM = 2**31 - 1  # a dimension's largest value (a uint32 may say up to 2^32 - 1)
CHUNK = 1 << 20  # bytes read or inflated at a time
GZIP_MAGIC = b"\x1f\x8b"


def idx_read_bytes(data_bytes: int) -> int:
    """The memory :func:`read_idx` needs for ``data_bytes`` of data: the array, plus a
    compressed chunk, an inflated chunk and the decompressor's window (a few MB)."""
    return int(data_bytes) + 4 * CHUNK


class _Source:
    """The bytes of a file, raw or inflated from gzip, never more than asked for."""

    def __init__(self, handle: BinaryIO, path: Path) -> None:
        self.handle, self.path = handle, path
        self.gzip = handle.read(2) == GZIP_MAGIC
        handle.seek(0)
        self._inflate = zlib.decompressobj(wbits=31) if self.gzip else None
        self._pending = b""  # compressed bytes not yet inflated

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes (fewer only at the end of the data)."""
        if not self.gzip:
            return self.handle.read(size)
        out = bytearray()
        while len(out) < size:
            piece = self._inflate_some(size - len(out))
            if piece is None:
                break
            out += piece
        return bytes(out)

    def _inflate_some(self, limit: int) -> bytes | None:
        """Inflate at most ``limit`` (and at most CHUNK) bytes; None at the end."""
        try:
            if self._inflate.eof and not self._next_member():
                return None
            if not self._pending:
                self._pending = self.handle.read(CHUNK)
                if not self._pending:
                    raise DataError(f"corrupt gzip in IDX file {self.path}: the compressed "
                                    "stream ends early (truncated)")
            piece = self._inflate.decompress(self._pending, min(limit, CHUNK))
            self._pending = self._inflate.unconsumed_tail or self._inflate.unused_data
        except zlib.error as exc:
            raise DataError(f"corrupt gzip in IDX file {self.path}: {exc}") from None
        return piece

    def _next_member(self) -> bool:
        """A gzip file may hold several members, one after the other; False at the end."""
        rest = self._pending or self.handle.read(CHUNK)
        if not rest:
            return False
        if not rest.startswith(GZIP_MAGIC[: len(rest)]):
            raise DataError(f"corrupt gzip in IDX file {self.path}: bytes after the end of "
                            "the compressed stream")
        self._inflate, self._pending = zlib.decompressobj(wbits=31), rest
        return True


def _header(source: _Source, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """The type and dimensions an IDX header declares, checked against the limits."""
    magic = source.read(4)
    if len(magic) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(magic)} bytes, no header")
    # What is wrong is said without the bytes: an error never echoes a file's content.
    if magic[0] != 0 or magic[1] != 0 or magic[2] not in IDX_TYPES or magic[3] == 0:
        raise DataError(f"{path} is not an IDX file: its magic number is not 0x0000 "
                        f"followed by a type code ({TYPE_CODES}) and 1-{MAX_IDX_DIMS} "
                        "dimensions")
    ndim = magic[3]
    if ndim > MAX_IDX_DIMS:
        raise DataError(f"IDX file {path} declares more than {MAX_IDX_DIMS} dimensions, "
                        "the most handprop reads")
    raw = source.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise DataError(f"IDX file {path} is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", raw)
    if max(dims) > MAX_IDX_DIM:
        raise DataError(f"IDX file {path} declares a dimension of more than {MAX_IDX_DIM}")
    return np.dtype(IDX_TYPES[magic[2]]), dims


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a native-byte-order array.

    The header's declared size is checked against the memory budget before anything is
    allocated or inflated; data shorter or longer than declared is refused (see the
    module docstring). Errors name the file, never its content.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            source = _Source(handle, path)
            dtype, dims = _header(source, path)
            expected = prod(dims) * dtype.itemsize
            check_memory(idx_read_bytes(expected), f"IDX file {path} (declared {list(dims)} "
                                                    f"of {dtype.name})")
            data = np.empty(expected, dtype=np.uint8)
            filled = _fill(source, memoryview(data))
            extra = len(source.read(1))
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"IDX path is a directory, not a file: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc.strerror or exc}") from None
    if filled != expected or extra:
        raise DataError(f"IDX file {path} holds {_held(path, source, dims, filled, extra)} "
                        f"but its header {list(dims)} needs {expected} (truncated or corrupt)")
    array = data.view(dtype).reshape(dims)
    if dtype.itemsize > 1 and not dtype.isnative:
        array.byteswap(inplace=True)  # in place: no second copy of the data
    return array.view(dtype.newbyteorder("="))


def _held(path: Path, source: _Source, dims: tuple[int, ...], filled: int, extra: bool) -> str:
    """How much data a file holds, for an error: exact for a raw file; a gzip stream is
    not inflated past its declared size to count the rest."""
    if not extra:
        return f"{filled} data bytes"
    if source.gzip:
        return "more data than that (it inflates past its declared size)"
    return f"{path.stat().st_size - 4 - 4 * len(dims)} data bytes"


def _fill(source: _Source, target: memoryview) -> int:
    """Copy the source into ``target`` chunk by chunk; the bytes copied."""
    done = 0
    while done < len(target):
        piece = source.read(min(CHUNK, len(target) - done))
        if not piece:
            break
        target[done:done + len(piece)] = piece
        done += len(piece)
    return done


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed if ``path`` ends in .gz)."""
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise DataError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, codes[native], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.astype(np.dtype(IDX_TYPES[codes[native]])).tobytes()
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload)
    Path(path).write_bytes(payload)
