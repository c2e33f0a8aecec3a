"""Datasets: scikit-learn's 8x8 digits, the article's four built-in images, IDX files.

Every loader returns a :class:`Dataset` of NCHW float images and integer labels
(indices into ``classes``), already split into train and test, and validated: finite
pixels, matching counts, at least one sample on each side.

The article's protocol (``digits``, the default): the images of 0 and 1 (360), shuffled
once with the run's seed (its data-split stream, :mod:`handprop.core.streams`), the
first 10 held out as the test set, raw pixels 0..16.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from math import prod
from pathlib import Path

import numpy as np

from ..core.errors import DataError
from ..core.streams import Stream, generator

# Four real 8x8 digits (a 0, a 1, a 1, a 0; pixel values 0..16), taken from
# scikit-learn's digits (images 0, 1, 11 and 10), so the demo needs no scikit-learn.
# The article's online sandbox used four hand-typed images of the same kinds; their
# exact pixels are not recorded, so these stand in for them.
TINY_IMAGES = np.array(
    [
        [[0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0],
         [0, 4, 12, 0, 0, 8, 8, 0], [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0],
         [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]],
        [[0, 0, 0, 12, 13, 5, 0, 0], [0, 0, 0, 11, 16, 9, 0, 0], [0, 0, 3, 15, 16, 6, 0, 0],
         [0, 7, 15, 16, 16, 2, 0, 0], [0, 0, 1, 16, 16, 3, 0, 0], [0, 0, 1, 16, 16, 6, 0, 0],
         [0, 0, 1, 16, 16, 6, 0, 0], [0, 0, 0, 11, 16, 10, 0, 0]],
        [[0, 0, 0, 0, 14, 13, 1, 0], [0, 0, 0, 5, 16, 16, 2, 0], [0, 0, 0, 14, 16, 12, 0, 0],
         [0, 1, 10, 16, 16, 12, 0, 0], [0, 3, 12, 14, 16, 9, 0, 0], [0, 0, 0, 5, 16, 15, 0, 0],
         [0, 0, 0, 4, 16, 14, 0, 0], [0, 0, 0, 1, 13, 16, 1, 0]],
        [[0, 0, 1, 9, 15, 11, 0, 0], [0, 0, 11, 16, 8, 14, 6, 0], [0, 2, 16, 10, 0, 9, 9, 0],
         [0, 1, 16, 4, 0, 8, 8, 0], [0, 4, 16, 4, 0, 8, 8, 0], [0, 1, 16, 5, 1, 11, 3, 0],
         [0, 0, 12, 12, 10, 10, 0, 0], [0, 0, 1, 10, 13, 3, 0, 0]],
    ],
    dtype=np.float64,
)
TINY_LABELS = np.array([0, 1, 1, 0])


@dataclass
class Dataset:
    """Train and test arrays of one task.

    x_train : (N, C, H, W) float; y_train : (N,) int, index into ``classes``
    x_test : (M, C, H, W) float;  y_test : (M,) int
    classes : the original label of each class index (e.g. (0, 1))
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[int, ...]
    info: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def validate(self) -> Dataset:
        """Raise :class:`DataError` if anything is malformed; return self."""
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if x.ndim != 4:
                raise DataError(f"{self.name}: {part} images must be (N, C, H, W), got {x.shape}")
            if len(x) == 0:
                raise DataError(f"{self.name}: the {part} set is empty")
            if y.shape != (len(x),):
                raise DataError(
                    f"{self.name}: {len(x)} {part} images but labels of shape {y.shape}"
                )
            if not np.issubdtype(x.dtype, np.floating) or not np.all(np.isfinite(x)):
                raise DataError(f"{self.name}: {part} images contain NaN or inf")
            if y.size and (y.min() < 0 or y.max() >= len(self.classes)):
                bad = y[(y < 0) | (y >= len(self.classes))][0]
                raise DataError(
                    f"{self.name}: {part} label index {bad} is outside the classes {self.classes}"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"{self.name}: train images {self.x_train.shape[1:]} and test images "
                f"{self.x_test.shape[1:]} differ in shape"
            )
        return self


def stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with each class split in the same proportion (seeded)."""
    if not 0 < test_fraction < 1:
        raise DataError(f"test fraction must be between 0 and 1, got {test_fraction}")
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = int(round(test_fraction * len(members)))
        count = min(max(count, 1), len(members) - 1) if len(members) > 1 else 0
        test.append(members[:count])
        train.append(members[count:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _select_classes(
    images: np.ndarray, labels: np.ndarray, classes: Sequence[int], source: str
) -> tuple[np.ndarray, np.ndarray]:
    classes = tuple(int(c) for c in classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise DataError(f"choose at least two distinct classes, got {classes}")
    present = set(np.unique(labels).tolist())
    missing = [c for c in classes if c not in present]
    if missing:
        raise DataError(f"{source}: no images of class(es) {missing} (it has {sorted(present)})")
    keep = np.isin(labels, classes)
    index_of = {c: i for i, c in enumerate(classes)}
    return images[keep], np.array([index_of[int(v)] for v in labels[keep]], dtype=np.int64)


def _finish(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[int],
    seed: int,
    split: str,
    test_size: float,
    scale: bool,
    max_value: float,
) -> Dataset:
    images = images.astype(np.float64)
    if scale:
        images = images / max_value
    rng = generator(seed, Stream.DATA_SPLIT)
    if split == "first":
        # The article: shuffle once, the first `test_size` images are the test set.
        order = rng.permutation(len(images))
        count = int(test_size)
        if not 0 < count < len(images):
            raise DataError(f"{name}: cannot hold out {count} of {len(images)} images")
        test, train = order[:count], order[count:]
    elif split == "stratified":
        train, test = stratified_split(labels, test_size, rng)
    else:
        raise DataError(f"split must be 'first' or 'stratified', got {split!r}")
    data = Dataset(
        name, images[train], labels[train], images[test], labels[test], tuple(classes),
        info={"seed": seed, "split": split, "test_size": test_size, "scaled": scale},
    )
    return data.validate()


@lru_cache(maxsize=1)
def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits (read once per process; callers must not modify the arrays)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("the digits data needs scikit-learn (pip install scikit-learn)") from None
    digits = load_digits()
    images, labels = digits.images[:, None, :, :], digits.target
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_digits(
    classes: Sequence[int] = (0, 1),
    seed: int = 0,
    split: str = "first",
    test_size: float = 10,
    scale: bool = False,
) -> Dataset:
    """scikit-learn's 8x8 digits restricted to ``classes``.

    Defaults are the article's: classes 0 and 1, shuffled once with ``seed``, the first
    10 images held out, raw pixels (0..16). ``split="stratified"`` with a fraction
    ``test_size`` keeps class proportions instead; ``scale=True`` maps pixels to [0, 1].
    """
    images, labels = _sklearn_digits()
    images, labels = _select_classes(images, labels, classes, "digits")
    name = "digits" if tuple(classes) == (0, 1) else f"digits{list(classes)}"
    return _finish(name, images, labels, classes, seed, split, test_size, scale, 16.0)


def load_digits10(seed: int = 0, test_size: float = 0.2, scale: bool = True) -> Dataset:
    """All ten digit classes, stratified split (default 20% test), pixels in [0, 1]."""
    images, labels = _sklearn_digits()
    return _finish("digits10", images, labels.astype(np.int64), tuple(range(10)), seed,
                   "stratified", test_size, scale, 16.0)


def load_tiny() -> Dataset:
    """The four built-in images (0, 1, 1, 0), used both to train and to test."""
    x = TINY_IMAGES[:, None, :, :].copy()
    return Dataset("tiny", x, TINY_LABELS.copy(), x.copy(), TINY_LABELS.copy(), (0, 1)).validate()


# -- IDX (the MNIST file format) -------------------------------------------------------

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into an array.

    Format: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a
    big-endian uint32, then the data, big-endian, row-major.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except IsADirectoryError:
        raise DataError(f"IDX path is a directory, not a file: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise DataError(f"corrupt gzip in IDX file {path}: {exc}") from None
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(raw)} bytes, no header")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"IDX file {path} holds {len(raw) - header} data bytes but its header "
            f"{list(dims)} needs {expected} (truncated or corrupt)"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed if ``path`` ends in .gz)."""
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise DataError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, codes[native], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.astype(np.dtype(_IDX_TYPES[codes[native]])).tobytes()
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload)
    Path(path).write_bytes(payload)


def _find(folder: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")  # both spellings are common
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise DataError(
            f"{images_path}: images must be (N, H, W) or (N, C, H, W), got {images.shape}"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{labels_path}: labels must be 1-D integers, got {labels.shape} {labels.dtype}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    return images, labels.astype(np.int64)


def load_idx(
    spec: str,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    test_size: float = 0.2,
    scale: bool = True,
) -> Dataset:
    """Load users' IDX files.

    ``spec`` is either a folder holding ``train-images-idx3-ubyte`` and
    ``train-labels-idx1-ubyte`` (optionally ``.gz``; ``t10k-*`` files, if present, are the
    test set), or ``IMAGES,LABELS`` (two file paths, split stratified with ``test_size``).
    Pixels are divided by their maximum possible value (255 for uint8) if ``scale``.
    """
    images, labels, test_pair = _idx_files(spec)
    integer = np.issubdtype(images.dtype, np.integer)
    max_value = float(np.iinfo(images.dtype).max) if integer else 1.0
    chosen = classes is not None
    if classes is None:
        classes = tuple(int(c) for c in np.unique(labels))
    images, labels = _select_classes(images, labels, classes, f"IDX labels in {spec}")
    if test_pair is None:
        return _finish("idx", images, labels, classes, seed, "stratified", test_size, scale,
                       max_value)
    test_images, test_labels = _idx_test_set(test_pair, classes, chosen)
    factor = 1 / max_value if scale else 1.0
    order = generator(seed, Stream.DATA_SPLIT).permutation(len(images))
    data = Dataset("idx", images[order].astype(np.float64) * factor, labels[order],
                   test_images.astype(np.float64) * factor, test_labels, tuple(classes),
                   info={"seed": seed, "split": "files", "scaled": scale})
    return data.validate()


def _idx_files(spec: str) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """Training images and labels, and the test pair if the folder has ``t10k-*`` files."""
    parts = spec.split(",")
    if len(parts) == 2:
        images, labels = _idx_pair(Path(parts[0]), Path(parts[1]))
        return images, labels, None
    if len(parts) != 1:
        raise DataError(f"IDX data must be FOLDER or IMAGES,LABELS, got {spec!r}")
    folder = Path(spec)
    if not folder.is_dir():
        raise DataError(f"IDX data: {spec} is neither a folder nor IMAGES,LABELS paths")
    train_images = _find(folder, "train-images-idx3-ubyte")
    train_labels = _find(folder, "train-labels-idx1-ubyte")
    if train_images is None or train_labels is None:
        raise DataError(f"IDX folder {folder} has no train-images-idx3-ubyte[.gz] and "
                        "train-labels-idx1-ubyte[.gz]")
    images, labels = _idx_pair(train_images, train_labels)
    test_images = _find(folder, "t10k-images-idx3-ubyte")
    test_labels = _find(folder, "t10k-labels-idx1-ubyte")
    test_pair = _idx_pair(test_images, test_labels) if test_images and test_labels else None
    return images, labels, test_pair


def _idx_test_set(test_pair: tuple, classes: Sequence[int], chosen: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The test files' images and class indices (the user's class filter applies too)."""
    test_images, test_labels = test_pair
    if chosen:
        keep = np.isin(test_labels, classes)
        test_images, test_labels = test_images[keep], test_labels[keep]
    unknown = sorted(set(np.unique(test_labels).tolist()) - set(classes))
    if unknown:
        raise DataError(f"IDX test labels {unknown} are outside the classes {tuple(classes)}")
    index_of = {c: i for i, c in enumerate(classes)}
    return test_images, np.array([index_of[int(v)] for v in test_labels], dtype=np.int64)


DATA_NAMES = ("digits", "digits10", "tiny", "idx:PATH")


def load_data(spec: str, seed: int = 0, scale: bool | None = None) -> Dataset:
    """``digits`` | ``digits10`` | ``tiny`` | ``idx:PATH`` -> Dataset (see each loader)."""
    if spec == "digits":
        return load_digits(seed=seed, scale=bool(scale))
    if spec == "digits10":
        return load_digits10(seed=seed, scale=True if scale is None else scale)
    if spec == "tiny":
        data = load_tiny()
        if scale:
            data.x_train, data.x_test = data.x_train / 16, data.x_test / 16
        return data
    if spec.startswith("idx:") and len(spec) > 4:
        return load_idx(spec[4:], seed=seed, scale=True if scale is None else scale)
    raise DataError(f"unknown data {spec!r}; choose from {', '.join(DATA_NAMES)}")
