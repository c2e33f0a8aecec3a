"""Datasets: the article's digits protocol, digits10, the four built-in images (with
scikit-learn made unimportable), the IDX reader/writer and loader, and validation."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from handprop.core.errors import DataError
from handprop.core.streams import Stream, generator
from handprop.training.data import (
    TINY_IMAGES,
    Dataset,
    load_data,
    load_digits,
    load_digits10,
    load_idx,
    load_tiny,
    read_idx,
    stratified_split,
    write_idx,
)

# -- the article's digits protocol ------------------------------------------------------


def _sklearn_zeros_and_ones() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits

    digits = sk_load_digits()
    keep = np.isin(digits.target, (0, 1))
    return digits.images[keep][:, None].astype(np.float64), digits.target[keep]


def test_digits_protocol_counts_and_pixel_range():
    data = load_digits()
    assert data.name == "digits"
    assert data.classes == (0, 1)
    assert data.x_train.shape == (350, 1, 8, 8)
    assert data.x_test.shape == (10, 1, 8, 8)
    assert data.y_train.shape == (350,) and data.y_test.shape == (10,)
    everything = np.concatenate([data.x_train, data.x_test])
    assert everything.dtype == np.float64
    assert everything.min() == 0 and everything.max() == 16  # raw pixels 0..16
    assert np.array_equal(everything, np.round(everything))
    # labels are class indices (0 -> digit 0, 1 -> digit 1), integers
    assert np.issubdtype(data.y_train.dtype, np.integer)
    assert set(np.unique(data.y_train)) == {0, 1} and set(np.unique(data.y_test)) <= {0, 1}


def test_digits_protocol_is_shuffle_once_then_first_ten_held_out():
    images, labels = _sklearn_zeros_and_ones()
    assert len(images) == 360
    for seed in (0, 7):
        order = generator(seed, Stream.DATA_SPLIT).permutation(360)
        data = load_digits(seed=seed)
        assert np.array_equal(data.x_test, images[order[:10]])
        assert np.array_equal(data.y_test, labels[order[:10]])
        assert np.array_equal(data.x_train, images[order[10:]])
        assert np.array_equal(data.y_train, labels[order[10:]])


def test_digits_scaled_to_unit_interval():
    raw, scaled = load_digits(seed=2), load_digits(seed=2, scale=True)
    assert scaled.x_train.min() == 0 and scaled.x_train.max() == 1
    assert np.array_equal(scaled.x_train, raw.x_train / 16)
    assert np.array_equal(scaled.x_test, raw.x_test / 16)
    assert np.array_equal(scaled.y_train, raw.y_train)


def test_digits_same_seed_identical_different_seed_differs():
    a, b, c = load_digits(seed=5), load_digits(seed=5), load_digits(seed=6)
    for part in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(a, part), getattr(b, part)), part
        assert getattr(a, part).tobytes() == getattr(b, part).tobytes(), part
    assert not np.array_equal(a.x_test, c.x_test)
    assert not np.array_equal(a.x_train, c.x_train)


def test_digits_other_classes_map_to_indices():
    data = load_digits(classes=(7, 3), seed=1)
    assert data.classes == (7, 3)
    from sklearn.datasets import load_digits as sk_load_digits

    digits = sk_load_digits()
    sevens = digits.images[digits.target == 7]
    # index 0 is the digit 7: every training image labelled 0 is one of the sevens
    first_seven = data.x_train[data.y_train == 0][0, 0]
    assert any(np.array_equal(first_seven, s) for s in sevens)
    assert len(data.x_train) + len(data.x_test) == np.isin(digits.target, (3, 7)).sum()


# -- stratified split -------------------------------------------------------------------


def test_stratified_split_keeps_class_proportions():
    labels = np.repeat([0, 1, 2], [100, 40, 60])
    train, test = stratified_split(labels, 0.25, np.random.default_rng(0))
    assert len(np.intersect1d(train, test)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(labels)))
    assert np.array_equal(np.bincount(labels[test]), [25, 10, 15])
    assert np.array_equal(np.bincount(labels[train]), [75, 30, 45])
    again = stratified_split(labels, 0.25, np.random.default_rng(0))
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])


def test_digits_stratified_split():
    data = load_digits(split="stratified", test_size=0.2, seed=3)
    total = np.bincount(data.y_train, minlength=2) + np.bincount(data.y_test, minlength=2)
    assert np.array_equal(total, [178, 182])
    assert np.array_equal(np.bincount(data.y_test), np.round(0.2 * total).astype(int))


@pytest.mark.parametrize("fraction", [0, 1, -0.5, 1.5])
def test_stratified_split_rejects_bad_fraction(fraction):
    with pytest.raises(DataError, match="test fraction"):
        stratified_split(np.array([0, 1, 0, 1]), fraction, np.random.default_rng(0))


# -- digits10 ---------------------------------------------------------------------------


def test_digits10_shapes_and_classes():
    data = load_digits10(seed=0)
    assert data.classes == tuple(range(10))
    assert data.num_classes == 10
    assert len(data.x_train) + len(data.x_test) == 1797
    assert data.x_train.shape[1:] == (1, 8, 8) and data.input_shape == (1, 8, 8)
    assert set(np.unique(data.y_train)) == set(range(10))
    assert set(np.unique(data.y_test)) == set(range(10))
    total = np.bincount(data.y_train) + np.bincount(data.y_test)
    assert np.array_equal(np.bincount(data.y_test), np.round(0.2 * total).astype(int))
    assert data.x_train.min() >= 0 and data.x_train.max() == 1.0  # scaled by default


# -- the four built-in images -----------------------------------------------------------


def test_tiny_four_images_labelled_0110():
    data = load_tiny()
    assert data.name == "tiny"
    assert data.x_train.shape == (4, 1, 8, 8) and data.x_test.shape == (4, 1, 8, 8)
    assert data.y_train.tolist() == [0, 1, 1, 0] and data.y_test.tolist() == [0, 1, 1, 0]
    assert np.array_equal(data.x_train, data.x_test)
    assert data.classes == (0, 1)
    assert data.x_train.min() == 0 and data.x_train.max() == 16


def test_tiny_images_are_the_named_sklearn_digits():
    from sklearn.datasets import load_digits as sk_load_digits

    digits = sk_load_digits()
    assert np.array_equal(TINY_IMAGES, digits.images[[0, 1, 11, 10]])
    assert digits.target[[0, 1, 11, 10]].tolist() == [0, 1, 1, 0]


def test_tiny_does_not_share_memory_between_calls():
    a = load_tiny()
    a.x_train[...] = 0
    assert load_tiny().x_train.max() == 16


_NO_SKLEARN = textwrap.dedent(
    """
    import importlib.abc
    import sys

    attempts = []

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "sklearn" or name.startswith("sklearn."):
                attempts.append(name)
                raise ImportError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, Blocker())
    try:
        import sklearn  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker does not work")
    attempts.clear()

    from handprop.cli import main
    from handprop.training.data import load_tiny

    assert load_tiny().y_train.tolist() == [0, 1, 1, 0]
    code = main(["demo", "--epochs", "50"])
    loaded = sorted(m for m in sys.modules if m == "sklearn" or m.startswith("sklearn."))
    print("SKLEARN-ATTEMPTS", attempts)
    print("SKLEARN-LOADED", loaded)
    sys.exit(code)
    """
)


def test_tiny_and_demo_work_without_sklearn(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MPLBACKEND"] = "Agg"
    done = subprocess.run([sys.executable, "-c", _NO_SKLEARN], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SKLEARN-LOADED []" in done.stdout, done.stdout
    assert "SKLEARN-ATTEMPTS []" in done.stdout, done.stdout
    assert "accuracy:" in done.stdout


# -- load_data spec strings -------------------------------------------------------------


def test_load_data_specs(tmp_path):
    assert load_data("digits").name == "digits"
    assert np.array_equal(load_data("digits", seed=4).x_test, load_digits(seed=4).x_test)
    assert load_data("digits", scale=True).x_train.max() == 1.0
    assert load_data("digits10").num_classes == 10
    tiny = load_data("tiny")
    assert tiny.y_train.tolist() == [0, 1, 1, 0] and tiny.x_train.max() == 16
    assert load_data("tiny", scale=True).x_train.max() == 1.0
    folder = _idx_folder(tmp_path, count=30)
    assert load_data(f"idx:{folder}").name == "idx"


@pytest.mark.parametrize("spec", ["cifar", "idx:", "", "DIGITS"])
def test_load_data_unknown_spec(spec):
    with pytest.raises(DataError, match="choose from"):
        load_data(spec)


# -- IDX: reader and writer -------------------------------------------------------------

_DTYPES = [
    (np.uint8, 0x08),
    (np.int8, 0x09),
    (np.int16, 0x0B),
    (np.int32, 0x0C),
    (np.float32, 0x0D),
    (np.float64, 0x0E),
]


def _sample(dtype, shape, rng):
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return (rng.standard_normal(shape) * 1e3).astype(dtype)


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(("dtype", "code"), _DTYPES, ids=[d.__name__ for d, _ in _DTYPES])
def test_idx_round_trip(tmp_path, dtype, code, suffix):
    rng = np.random.default_rng(code)
    for shape in [(7,), (3, 5), (4, 3, 2), (2, 1, 3, 4)]:
        array = _sample(dtype, shape, rng)
        path = tmp_path / f"a{len(shape)}{suffix}"
        write_idx(path, array)
        back = read_idx(path)
        assert back.dtype == np.dtype(dtype)  # native byte order
        assert back.dtype.isnative
        assert back.shape == shape
        assert np.array_equal(back, array)
        raw = path.read_bytes()
        if suffix:
            assert raw[:2] == b"\x1f\x8b"
            raw = gzip.decompress(raw)
        # on disk: 0, 0, type code, ndim, big-endian uint32 dims, big-endian data
        assert raw[:4] == bytes([0, 0, code, len(shape)])
        header = 4 + 4 * len(shape)
        assert struct.unpack(f">{len(shape)}I", raw[4:header]) == shape
        big = np.dtype(dtype).newbyteorder(">")
        assert raw[header:] == array.astype(big).tobytes()


def test_idx_writes_big_endian_from_any_byte_order(tmp_path):
    little = np.array([1, 256, -2], dtype="<i4")
    big = little.astype(">i4")
    write_idx(tmp_path / "l", little)
    write_idx(tmp_path / "b", big)
    assert (tmp_path / "l").read_bytes() == (tmp_path / "b").read_bytes()
    assert (tmp_path / "l").read_bytes()[8:12] == b"\x00\x00\x00\x01"
    assert np.array_equal(read_idx(tmp_path / "b"), little)


def test_idx_refuses_unstorable_dtype(tmp_path):
    with pytest.raises(DataError, match="int64"):
        write_idx(tmp_path / "x", np.arange(3, dtype=np.int64))


# -- IDX: the loader --------------------------------------------------------------------


def _idx_folder(tmp: Path, count: int = 60, test_count: int | None = None, classes: int = 3,
                dotted: bool = False, gz: bool = False, seed: int = 0) -> Path:
    """A folder of MNIST-style files: uint8 8x8 images and uint8 labels 0..classes-1."""
    folder = tmp / f"idx-{count}-{test_count}-{classes}-{dotted}-{gz}-{seed}"
    folder.mkdir()
    rng = np.random.default_rng(seed)
    sep = "." if dotted else "-"
    ext = ".gz" if gz else ""
    write_idx(folder / f"train-images{sep}idx3-ubyte{ext}",
              rng.integers(0, 256, (count, 8, 8), dtype=np.uint8))
    write_idx(folder / f"train-labels{sep}idx1-ubyte{ext}",
              (np.arange(count) % classes).astype(np.uint8))
    if test_count is not None:
        write_idx(folder / f"t10k-images{sep}idx3-ubyte{ext}",
                  rng.integers(0, 256, (test_count, 8, 8), dtype=np.uint8))
        write_idx(folder / f"t10k-labels{sep}idx1-ubyte{ext}",
                  (np.arange(test_count) % classes).astype(np.uint8))
    return folder


def _pixels(scaled: np.ndarray) -> np.ndarray:
    """Images scaled by 1/255 back to their uint8 pixels."""
    assert scaled.min() >= 0 and scaled.max() <= 1
    return np.rint(scaled * 255).astype(np.uint8)


@pytest.mark.parametrize("dotted", [False, True], ids=["dashed", "dotted"])
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_load_idx_folder_with_test_files(tmp_path, dotted, gz):
    folder = _idx_folder(tmp_path, count=60, test_count=12, dotted=dotted, gz=gz)
    sep = "." if dotted else "-"
    ext = ".gz" if gz else ""
    train_images = read_idx(folder / f"train-images{sep}idx3-ubyte{ext}")
    test_images = read_idx(folder / f"t10k-images{sep}idx3-ubyte{ext}")
    test_labels = read_idx(folder / f"t10k-labels{sep}idx1-ubyte{ext}")
    data = load_idx(str(folder), seed=1)
    assert data.classes == (0, 1, 2)
    assert data.x_train.shape == (60, 1, 8, 8) and data.x_test.shape == (12, 1, 8, 8)
    # the t10k files are the test set, in file order, scaled by 255
    assert np.allclose(data.x_test[:, 0], test_images / 255.0, rtol=1e-15, atol=0)
    assert np.array_equal(_pixels(data.x_test[:, 0]), test_images)
    assert np.array_equal(data.y_test, test_labels)
    # the training set is all the train files, shuffled
    flat = {img.tobytes() for img in train_images}
    assert {img.tobytes() for img in _pixels(data.x_train[:, 0])} == flat
    assert np.array_equal(np.bincount(data.y_train), [20, 20, 20])
    assert data.x_train.max() <= 1.0 and data.x_train.dtype == np.float64


def test_load_idx_folder_without_test_files_splits_stratified(tmp_path):
    folder = _idx_folder(tmp_path, count=60)
    data = load_idx(str(folder), test_size=0.25)
    assert np.array_equal(np.bincount(data.y_test), [5, 5, 5])
    assert np.array_equal(np.bincount(data.y_train), [15, 15, 15])


def test_load_idx_pair_stratified_split_and_scaling(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (80, 6, 5), dtype=np.uint8)
    images[0, 0, 0] = 255
    labels = np.repeat(np.array([4, 9], dtype=np.uint8), [50, 30])
    write_idx(tmp_path / "im", images)
    write_idx(tmp_path / "lb.gz", labels)
    spec = f"{tmp_path / 'im'},{tmp_path / 'lb.gz'}"
    data = load_idx(spec, seed=2, test_size=0.2)
    assert data.classes == (4, 9)
    assert data.input_shape == (1, 6, 5)
    assert np.array_equal(np.bincount(data.y_test), [10, 6])
    assert np.array_equal(np.bincount(data.y_train), [40, 24])
    assert data.x_train.max() <= 1.0
    everything = np.concatenate([data.x_train, data.x_test])[:, 0]
    assert {im.tobytes() for im in _pixels(everything)} == {im.tobytes() for im in images}
    raw = load_idx(spec, seed=2, test_size=0.2, scale=False)
    assert np.array_equal(raw.x_train, data.x_train * 255)
    again = load_idx(spec, seed=2, test_size=0.2)
    assert np.array_equal(again.x_train, data.x_train)
    assert not np.array_equal(load_idx(spec, seed=3).x_train, data.x_train)


def test_load_idx_pair_class_filter(tmp_path):
    folder = _idx_folder(tmp_path, count=90, classes=3)
    spec = f"{folder / 'train-images-idx3-ubyte'},{folder / 'train-labels-idx1-ubyte'}"
    data = load_idx(spec, classes=(2, 0), test_size=0.2)
    assert data.classes == (2, 0)
    labels = read_idx(folder / "train-labels-idx1-ubyte")
    images = read_idx(folder / "train-images-idx3-ubyte")
    twos = {im.tobytes() for im in images[labels == 2]}
    assert {im.tobytes() for im in _pixels(data.x_train[data.y_train == 0, 0])} == twos - {
        im.tobytes() for im in _pixels(data.x_test[data.y_test == 0, 0])}
    assert len(data.x_train) + len(data.x_test) == 60
    with pytest.raises(DataError, match=r"\[5\]"):
        load_idx(spec, classes=(0, 5))


def test_load_idx_folder_class_filter_applies_to_the_test_files(tmp_path):
    """A class filter on an MNIST-style folder keeps those classes in *both* sets (the
    t10k files hold every class, as MNIST's do)."""
    folder = _idx_folder(tmp_path, count=60, test_count=12, classes=3)
    data = load_idx(str(folder), classes=(0, 2))
    assert data.classes == (0, 2)
    assert len(data.x_train) == 40 and len(data.x_test) == 8
    test_labels = read_idx(folder / "t10k-labels-idx1-ubyte")
    test_images = read_idx(folder / "t10k-images-idx3-ubyte")
    keep = np.isin(test_labels, (0, 2))
    assert np.array_equal(_pixels(data.x_test[:, 0]), test_images[keep])
    assert np.array_equal(data.y_test, np.where(test_labels[keep] == 2, 1, 0))


def test_load_idx_scale_uses_the_dtype_maximum(tmp_path):
    labels = (np.arange(20) % 2).astype(np.uint8)
    write_idx(tmp_path / "lb", labels)
    images = np.full((20, 4, 4), 100, dtype=np.uint8)
    write_idx(tmp_path / "u8", images)
    data = load_idx(f"{tmp_path / 'u8'},{tmp_path / 'lb'}")
    assert np.allclose(data.x_train, 100 / 255)
    floats = np.random.default_rng(0).random((20, 4, 4)).astype(np.float32)
    write_idx(tmp_path / "f32", floats)
    data = load_idx(f"{tmp_path / 'f32'},{tmp_path / 'lb'}")
    everything = np.sort(np.concatenate([data.x_train, data.x_test]).ravel())
    assert np.array_equal(everything, np.sort(floats.astype(np.float64).ravel()))


# -- IDX: errors name the file ----------------------------------------------------------


def _header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def _bad_gzip(tmp: Path) -> bytes:
    good = gzip.compress(_header(0x08, (4, 8, 8)) + bytes(range(256)), mtime=0)
    damaged = bytearray(good)
    damaged[12] ^= 0xFF  # inside the deflate stream
    return bytes(damaged)


_BAD_FILES = {
    "empty": (lambda t: b"", "truncated"),
    "truncated-magic": (lambda t: b"\x00\x00\x08", "truncated"),
    "truncated-header": (lambda t: bytes([0, 0, 0x08, 3]) + struct.pack(">I", 4), "header"),
    "bad-magic": (lambda t: b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00", "magic"),
    "bad-type-code": (lambda t: b"\x00\x00\x0a\x01" + struct.pack(">I", 1) + b"\x00", "magic"),
    "zero-dims": (lambda t: b"\x00\x00\x08\x00", "magic"),
    "text-file": (lambda t: b"hello, world\n", "magic"),
    "data-short": (lambda t: _header(0x08, (4, 8, 8)) + bytes(255), "255 data bytes"),
    "data-long": (lambda t: _header(0x08, (4, 8, 8)) + bytes(257), "257 data bytes"),
    "data-short-int32": (lambda t: _header(0x0C, (3,)) + bytes(11), "needs 12"),
    "gzip-truncated": (lambda t: gzip.compress(_header(0x08, (4, 8, 8)) + bytes(256))[:20],
                       "gzip"),
    "gzip-corrupt": (_bad_gzip, "gzip"),
}


@pytest.mark.parametrize("case", list(_BAD_FILES))
def test_read_idx_errors_name_the_file(tmp_path, case):
    make, words = _BAD_FILES[case]
    path = tmp_path / f"{case}-file"
    path.write_bytes(make(tmp_path))
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert words in message
    assert "\n" not in message


@pytest.mark.parametrize("content", [b"root:x:0:0:root:/root:/bin/bash\n",
                                     b"\x00\x00\x08\x09" + bytes(36),
                                     b"\x00\x00\x08\x01\xde\xad\xbe\xef"])
def test_read_idx_errors_never_echo_the_files_bytes(tmp_path, content):
    """Not an IDX file, too many dimensions, a dimension too large: what is wrong is said,
    the bytes that say it are not (as text, hex or a number)."""
    path = tmp_path / "not-idx"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value).replace(str(path), "")
    shown = [content[:4].hex(), content[:8].hex(), "root", "bash", "9 dim",
             str(int.from_bytes(content[4:8], "big") or "no number")]
    assert not [s for s in shown if s in message], message


def test_read_idx_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        read_idx(tmp_path / "nope-idx")
    assert str(tmp_path / "nope-idx") in str(info.value)
    with pytest.raises(DataError, match="directory"):
        read_idx(tmp_path)


def _pair(tmp: Path, images: np.ndarray, labels: np.ndarray) -> str:
    write_idx(tmp / "images-file", images)
    write_idx(tmp / "labels-file", labels)
    return f"{tmp / 'images-file'},{tmp / 'labels-file'}"


def test_load_idx_count_mismatch_names_both_files(tmp_path):
    spec = _pair(tmp_path, np.zeros((10, 4, 4), np.uint8), np.zeros(9, np.uint8))
    with pytest.raises(DataError) as info:
        load_idx(spec)
    message = str(info.value)
    assert "images-file" in message and "labels-file" in message
    assert "10" in message and "9" in message


def test_load_idx_float_labels_refused(tmp_path):
    spec = _pair(tmp_path, np.zeros((10, 4, 4), np.uint8), np.zeros(10, np.float32))
    with pytest.raises(DataError, match="labels-file.*1-D integers"):
        load_idx(spec)


def test_load_idx_two_dimensional_labels_refused(tmp_path):
    spec = _pair(tmp_path, np.zeros((10, 4, 4), np.uint8), np.zeros((10, 2), np.uint8))
    with pytest.raises(DataError, match="labels-file.*1-D integers"):
        load_idx(spec)


def test_load_idx_images_of_wrong_rank_refused(tmp_path):
    spec = _pair(tmp_path, np.zeros((10, 16), np.uint8), np.zeros(10, np.uint8))
    with pytest.raises(DataError, match="images-file"):
        load_idx(spec)


def test_load_idx_missing_files(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        load_idx(f"{tmp_path / 'a'},{tmp_path / 'b'}")
    assert str(tmp_path / "a") in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="train-images-idx3-ubyte") as info:
        load_idx(str(empty))
    assert str(empty) in str(info.value)
    with pytest.raises(DataError, match="neither a folder"):
        load_idx(str(tmp_path / "no-such-folder"))
    with pytest.raises(DataError, match="FOLDER or IMAGES,LABELS"):
        load_idx("a,b,c")


def test_load_idx_corrupt_file_in_folder_is_named(tmp_path):
    folder = _idx_folder(tmp_path, count=20)
    labels = folder / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-3])
    with pytest.raises(DataError) as info:
        load_idx(str(folder))
    assert str(labels) in str(info.value)


def test_load_idx_single_class_refused(tmp_path):
    spec = _pair(tmp_path, np.zeros((10, 4, 4), np.uint8), np.zeros(10, np.uint8))
    with pytest.raises(DataError, match="two distinct classes"):
        load_idx(spec)


# -- Dataset.validate -------------------------------------------------------------------


def _dataset(**changes) -> Dataset:
    parts = {
        "x_train": np.zeros((6, 1, 4, 4)),
        "y_train": np.array([0, 1, 0, 1, 0, 1]),
        "x_test": np.zeros((2, 1, 4, 4)),
        "y_test": np.array([0, 1]),
    }
    parts.update(changes)
    return Dataset("t", parts["x_train"], parts["y_train"], parts["x_test"], parts["y_test"],
                   (0, 1))


def test_validate_accepts_a_good_dataset():
    data = _dataset()
    assert data.validate() is data


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"x_train": np.full((6, 1, 4, 4), np.nan)}, "train images contain NaN"),
        ({"x_test": np.array([[[[np.inf]]], [[[0.0]]]]) * np.ones((2, 1, 4, 4))},
         "test images contain NaN or inf"),
        ({"x_train": np.zeros((0, 1, 4, 4)), "y_train": np.zeros(0, np.int64)},
         "train set is empty"),
        ({"x_test": np.zeros((0, 1, 4, 4)), "y_test": np.zeros(0, np.int64)},
         "test set is empty"),
        ({"y_train": np.array([0, 1, 2, 1, 0, 1])}, "label index 2"),
        ({"y_test": np.array([-1, 0])}, "label index -1"),
        ({"y_train": np.array([0, 1, 0])}, "6 train images but labels of shape (3,)"),
        ({"x_train": np.zeros((6, 4, 4))}, "(N, C, H, W)"),
        ({"x_test": np.zeros((2, 1, 5, 5))}, "differ in shape"),
        ({"x_train": np.zeros((6, 1, 4, 4), np.int64)}, "NaN or inf"),
    ],
)
def test_validate_catches_malformed_data(changes, words):
    with pytest.raises(DataError) as info:
        _dataset(**changes).validate()
    assert words in str(info.value)
