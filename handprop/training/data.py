"""Datasets: scikit-learn's 8x8 digits, the article's four built-in images, IDX files
(users' MNIST-format files, and Fashion-MNIST from Debian's dataset-fashion-mnist).

Every loader returns a :class:`Dataset` of NCHW float images and integer labels
(indices into ``classes``), already split into train and test, and validated: finite
pixels, matching counts, at least one sample on each side.

The article's protocol (``digits``, the default): the images of 0 and 1 (360), shuffled
once with the run's seed (its data-split stream, :mod:`handprop.core.streams`), the
first 10 held out as the test set, raw pixels 0..16.

IDX files are read by :mod:`.idx` (bounded memory, sizes checked before inflating).
Fashion-MNIST's files are checked against their known sizes and SHA-256 digests
(:data:`FASHION_MNIST_FILES`) before they are read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import DataError
from ..core.streams import Stream, generator
from .idx import read_idx, write_idx

__all__ = [
    "DATA_NAMES", "FASHION_MNIST_FILES", "Dataset", "clear_data_cache", "digits_images",
    "fashion_mnist_arrays", "find_fashion_mnist", "idx_dataset", "load_data", "load_digits",
    "load_digits10", "load_fashion_mnist", "load_idx", "load_idx_arrays", "load_tiny",
    "read_idx", "resize_bilinear", "resize_to", "select_classes", "stratified_split",
    "verify_file", "write_idx",
]

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


def select_classes(
    images: np.ndarray, labels: np.ndarray, classes: Sequence[int], source: str
) -> tuple[np.ndarray, np.ndarray]:
    """The images of ``classes`` and their labels as class indices (``classes[i]`` -> i);
    ``source`` names the data in errors."""
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
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
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


def digits_images(classes: Sequence[int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits of ``classes`` as (N, 1, 8, 8) float64 raw pixels (0..16)
    and class indices, in scikit-learn's order (a fresh copy: the caller may change it)."""
    images, labels = select_classes(*_all_digits(), classes, "digits")
    return images.astype(np.float64), labels


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
    images, labels = _all_digits()
    images, labels = select_classes(images, labels, classes, "digits")
    name = "digits" if tuple(classes) == (0, 1) else f"digits{list(classes)}"
    return _finish(name, images, labels, classes, seed, split, test_size, scale, 16.0)


def load_digits10(seed: int = 0, test_size: float = 0.2, scale: bool = True) -> Dataset:
    """All ten digit classes, stratified split (default 20% test), pixels in [0, 1]."""
    images, labels = _all_digits()
    return _finish("digits10", images, labels.astype(np.int64), tuple(range(10)), seed,
                   "stratified", test_size, scale, 16.0)


def load_tiny() -> Dataset:
    """The four built-in images (0, 1, 1, 0), used both to train and to test."""
    x = TINY_IMAGES[:, None, :, :].copy()
    return Dataset("tiny", x, TINY_LABELS.copy(), x.copy(), TINY_LABELS.copy(), (0, 1)).validate()


# -- IDX (the MNIST file format) -------------------------------------------------------

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
    size: tuple[int, int] | None = None,
) -> Dataset:
    """Load users' IDX files (MNIST's format; MNIST itself, for example).

    ``spec`` is either a folder holding ``train-images-idx3-ubyte`` and
    ``train-labels-idx1-ubyte`` (optionally ``.gz``; ``t10k-*`` files, if present, are the
    test set), or ``IMAGES,LABELS`` (two file paths, split stratified with ``test_size``).
    Pixels are divided by their maximum possible value (255 for uint8) if ``scale``;
    ``size`` resizes the images first (:func:`resize_to`).
    """
    images, labels, test_pair = _idx_files(spec)
    return idx_dataset("idx", images, labels, test_pair, seed=seed, classes=classes,
                       test_size=test_size, scale=scale, source=f"IDX labels in {spec}",
                       size=size)


def load_idx_arrays(folder: str | Path
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """An MNIST-style folder's arrays as on disk: training images (N, C, H, W) and labels
    (int64), test images and labels (its ``t10k-*`` files, required here)."""
    images, labels, test_pair = _idx_files(str(folder))
    if test_pair is None:
        raise DataError(f"IDX folder {folder} has no t10k-images-idx3-ubyte[.gz] and "
                        "t10k-labels-idx1-ubyte[.gz] (the test set)")
    return images, labels, *test_pair


def idx_dataset(name: str, images: np.ndarray, labels: np.ndarray,
                test_pair: tuple[np.ndarray, np.ndarray] | None, *, seed: int = 0,
                classes: Sequence[int] | None = None, test_size: float = 0.2,
                scale: bool = True, source: str = "IDX labels",
                size: tuple[int, int] | None = None) -> Dataset:
    """A :class:`Dataset` from IDX arrays: with a test pair (MNIST's ``t10k`` files) the
    training images in the seed's order and the test images in file order; without, a
    stratified split. The same for every MNIST-format source (users' files, Fashion-MNIST).
    ``size``: resize the images to (H, W) first (:func:`resize_to`)."""
    integer = np.issubdtype(images.dtype, np.integer)
    max_value = float(np.iinfo(images.dtype).max) if integer else 1.0
    chosen = classes is not None
    if classes is None:
        classes = tuple(int(c) for c in np.unique(labels))
    images, labels = select_classes(images, labels, classes, source)
    resized = _resized_info(images, size)
    images = resize_to(images, size)
    if test_pair is None:
        data = _finish(name, images, labels, classes, seed, "stratified", test_size, scale,
                       max_value)
        data.info.update(resized)
        return data
    test_images, test_labels = _idx_test_set(test_pair, classes, chosen)
    test_images = resize_to(test_images, size)
    factor = 1 / max_value if scale else 1.0
    order = generator(seed, Stream.DATA_SPLIT).permutation(len(images))
    data = Dataset(name, images[order].astype(np.float64) * factor, labels[order],
                   test_images.astype(np.float64) * factor, test_labels, tuple(classes),
                   info={"seed": seed, "split": "files", "scaled": scale, **resized})
    return data.validate()


def resize_to(images: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``images`` (N, C, H, W) at ``size`` (H', W'): unchanged when ``size`` is None or
    already theirs; else :func:`resize_bilinear`, rounded to 8 bits for 8-bit images (as
    PIL and torchvision's ``Resize`` do: BioTorch's preprocessing)."""
    if size is None or tuple(images.shape[-2:]) == tuple(size):
        return images
    return resize_bilinear(images, tuple(size), round_8bit=images.dtype == np.uint8)


def _resized_info(images: np.ndarray, size: tuple[int, int] | None) -> dict[str, Any]:
    """``{"resized_from": [H, W]}`` when :func:`resize_to` changes the images' size."""
    if size is None or tuple(images.shape[-2:]) == tuple(size):
        return {}
    return {"resized_from": [int(v) for v in images.shape[-2:]]}


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


# -- Fashion-MNIST (Debian's dataset-fashion-mnist, or a folder of its four files) -----

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # dataset-fashion-mnist
FASHION_MNIST_ENV = "HANDPROP_FASHION_MNIST"
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_INSTALL = f"apt-get install {FASHION_MNIST_PACKAGE}"


@dataclass(frozen=True)
class KnownFile:
    """A file whose bytes we know: its size and SHA-256, gzip-compressed and inflated."""

    stem: str
    gz_size: int
    gz_sha256: str
    raw_size: int
    raw_sha256: str


# Zalando's Fashion-MNIST release, as Debian's dataset-fashion-mnist
# (0.0~git20200523.55506a9-1) installs it; the inflated digests are those of the same
# files unpacked (as torchvision leaves them).
FASHION_MNIST_FILES = (
    KnownFile("train-images-idx3-ubyte", 26421856,
              "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7", 47040016,
              "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    KnownFile("train-labels-idx1-ubyte", 29491,
              "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056", 60008,
              "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    KnownFile("t10k-images-idx3-ubyte", 4422079,
              "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa", 7840016,
              "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    KnownFile("t10k-labels-idx1-ubyte", 5125,
              "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05", 10008,
              "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
)


def find_fashion_mnist(folder: str | Path | None = None) -> Path:
    """The folder holding Fashion-MNIST's four IDX files: ``folder`` if given, else
    ``$HANDPROP_FASHION_MNIST``, else where Debian's package installs them. Missing
    files: one line naming the install command and both ways to point elsewhere."""
    where = ("given" if folder else f"in ${FASHION_MNIST_ENV}"
             if os.environ.get(FASHION_MNIST_ENV) else "installed")
    chosen = Path(folder or os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR)
    missing = [f.stem for f in FASHION_MNIST_FILES if _find(chosen, f.stem) is None]
    if missing:
        what = "no such folder" if not chosen.is_dir() else f"no {', '.join(missing)}[.gz]"
        raise DataError(f"Fashion-MNIST not found ({where} folder {chosen}: {what}); install "
                        f"it with `{FASHION_MNIST_INSTALL}`, or name a folder of its four "
                        f"IDX files as data fashion-mnist:DIR or in {FASHION_MNIST_ENV}")
    return chosen


def verify_file(path: Path, known: KnownFile, package: str) -> None:
    """Refuse a file whose size or SHA-256 is not the known file's (gzip or inflated)."""
    with path.open("rb") as handle:
        compressed = handle.read(2) == b"\x1f\x8b"
    size, digest = ((known.gz_size, known.gz_sha256) if compressed
                    else (known.raw_size, known.raw_sha256))
    fix = f"a damaged or different file; reinstall with `{package}` or replace it"
    actual = path.stat().st_size
    if actual != size:
        raise DataError(f"{path} has {actual} bytes, {known.stem} has {size} ({fix})")
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    if sha.hexdigest() != digest:
        raise DataError(f"{path}: SHA-256 {sha.hexdigest()[:16]}... is not {known.stem}'s "
                        f"{digest[:16]}... ({fix})")


@lru_cache(maxsize=2)
def _fashion_arrays(folder: Path) -> tuple[np.ndarray, ...]:
    paths = {}
    for known in FASHION_MNIST_FILES:
        paths[known.stem] = _find(folder, known.stem)
        verify_file(paths[known.stem], known,
                    f"apt-get install --reinstall {FASHION_MNIST_PACKAGE}")
    train = _idx_pair(paths["train-images-idx3-ubyte"], paths["train-labels-idx1-ubyte"])
    test = _idx_pair(paths["t10k-images-idx3-ubyte"], paths["t10k-labels-idx1-ubyte"])
    arrays = (*train, *test)
    for array in arrays:
        array.setflags(write=False)
    return arrays


def clear_data_cache() -> None:
    """Forget the files read so far in this process (e.g. after they changed on disk)."""
    _fashion_arrays.cache_clear()


def fashion_mnist_arrays(folder: str | Path | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST as it is on disk, checked (sizes, SHA-256, IDX headers): training
    images (60000, 1, 28, 28) uint8 and labels (60000,) int64, test images (10000, 1, 28,
    28) and labels, in file order. Read once per process (the arrays are read-only)."""
    return _fashion_arrays(find_fashion_mnist(folder).resolve())


def load_fashion_mnist(folder: str | Path | None = None, seed: int = 0,
                       scale: bool = True, size: tuple[int, int] | None = None) -> Dataset:
    """Fashion-MNIST as a :class:`Dataset`: the 60,000 training images in the seed's
    order, the 10,000 test images in file order, pixels / 255 if ``scale``, resized to
    ``size`` if given (:func:`find_fashion_mnist` says where the files are looked for)."""
    train_x, train_y, test_x, test_y = fashion_mnist_arrays(folder)
    return idx_dataset("fashion-mnist", train_x, train_y, (test_x, test_y), seed=seed,
                       scale=scale, source="Fashion-MNIST labels", size=size)


# -- preprocessing ---------------------------------------------------------------------

def _interpolation(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) weights of bilinear resampling with pixel centres aligned
    (PyTorch's ``align_corners=False``; what PIL does when enlarging)."""
    source = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
    source = np.clip(source, 0, size_in - 1)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, size_in - 1)
    weights = np.zeros((size_out, size_in))
    rows = np.arange(size_out)
    np.add.at(weights, (rows, low), 1 - (source - low))
    np.add.at(weights, (rows, high), source - low)
    return weights


def resize_bilinear(images: np.ndarray, size: tuple[int, int], *,
                    round_8bit: bool = False) -> np.ndarray:
    """Resize (..., H, W) images to ``size`` bilinearly, as float64: rows first, then
    columns (PyTorch's ``interpolate(mode="bilinear", align_corners=False)``; for
    enlarging only: no anti-aliasing filter is applied).

    ``round_8bit``: round each pass half up to 0..255, as PIL does with 8-bit images --
    torchvision's ``Resize``, which BioTorch applies to MNIST-format images, is PIL's. (A
    test finds it identical to PIL on Fashion-MNIST's images.)"""
    height, width = images.shape[-2:]
    across, down = _interpolation(width, size[1]), _interpolation(height, size[0])
    out = np.asarray(images, dtype=np.float64) @ across.T  # horizontal pass first, as PIL
    if round_8bit:
        out = _round_8bit(out)
    out = down @ out  # (H', H) @ (..., H, W') -> (..., H', W')
    return _round_8bit(out) if round_8bit else out


def _round_8bit(values: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(values + 0.5), 0, 255)


DATA_NAMES = ("digits", "digits10", "tiny", "idx:PATH", "fashion-mnist[:DIR]")


def load_data(spec: str, seed: int = 0, scale: bool | None = None,
              size: tuple[int, int] | None = None) -> Dataset:
    """``digits`` | ``digits10`` | ``tiny`` | ``idx:PATH`` | ``fashion-mnist[:DIR]`` ->
    Dataset (see each loader). ``size``: images resized to (H, W) (:func:`resize_to`;
    ``info["resized_from"]`` keeps their own size), for a network sized for others."""
    full = True if scale is None else scale
    if spec.startswith("idx:") and len(spec) > 4:
        return load_idx(spec[4:], seed=seed, scale=full, size=size)
    if spec == "fashion-mnist" or spec.startswith("fashion-mnist:") and len(spec) > 14:
        return load_fashion_mnist(spec[14:] or None, seed=seed, scale=full, size=size)
    if spec == "digits":
        data = load_digits(seed=seed, scale=bool(scale))
    elif spec == "digits10":
        data = load_digits10(seed=seed, scale=full)
    elif spec == "tiny":
        data = load_tiny()
        if scale:
            data.x_train, data.x_test = data.x_train / 16, data.x_test / 16
    else:
        raise DataError(f"unknown data {spec!r}; choose from {', '.join(DATA_NAMES)}")
    data.info.update(_resized_info(data.x_train, size))
    data.x_train, data.x_test = resize_to(data.x_train, size), resize_to(data.x_test, size)
    return data
