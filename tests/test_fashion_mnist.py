"""Fashion-MNIST: found where Debian's dataset-fashion-mnist installs it, in a folder given
by ``--data fashion-mnist:DIR`` or by $HANDPROP_FASHION_MNIST; checked by size and SHA-256
before it is read; missing or damaged files end in one line. The real-data tests read
the installed files. In CI they must not be skipped: they skip only where
HANDPROP_ALLOW_NO_FMNIST=1 says the package may be absent, and fail loudly otherwise."""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

from handprop.core.errors import DataError
from handprop.training import data as data_module
from handprop.training.data import (
    FASHION_MNIST_DIR,
    FASHION_MNIST_FILES,
    KnownFile,
    clear_data_cache,
    fashion_mnist_arrays,
    find_fashion_mnist,
    load_data,
    load_fashion_mnist,
    resize_bilinear,
    resize_to,
    write_idx,
)

ROOT = Path(__file__).resolve().parents[1]
INSTALLED = all((FASHION_MNIST_DIR / f"{f.stem}.gz").is_file() for f in FASHION_MNIST_FILES)


def needs_installed_files() -> None:
    """Skip only where absence is allowed; everywhere else a missing package fails."""
    if INSTALLED:
        return
    if os.environ.get("HANDPROP_ALLOW_NO_FMNIST") == "1":
        pytest.skip("dataset-fashion-mnist not installed (HANDPROP_ALLOW_NO_FMNIST=1)")
    pytest.fail(f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR}: run `apt-get "
                "install dataset-fashion-mnist` (.ci/run does), or set "
                "HANDPROP_ALLOW_NO_FMNIST=1 to skip the real-data tests")


# -- small files of the same layout, made here ------------------------------------------

def _fake_release(folder: Path, gz: bool = True, train: int = 30, test: int = 10
                  ) -> tuple[KnownFile, ...]:
    """Four Fashion-MNIST-style files and their KnownFile entries (sizes, digests)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (train, 28, 28), np.uint8),
              "train-labels-idx1-ubyte": (np.arange(train) % 10).astype(np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 28, 28), np.uint8),
              "t10k-labels-idx1-ubyte": (np.arange(test) % 10).astype(np.uint8)}
    known = []
    for stem, array in arrays.items():
        raw_path = folder / f"{stem}.raw-for-digest"
        write_idx(raw_path, array)
        raw = raw_path.read_bytes()
        raw_path.unlink()
        packed = gzip.compress(raw, mtime=0)
        (folder / (f"{stem}.gz" if gz else stem)).write_bytes(packed if gz else raw)
        known.append(KnownFile(stem, len(packed), hashlib.sha256(packed).hexdigest(),
                               len(raw), hashlib.sha256(raw).hexdigest()))
    return tuple(known)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A fake release in tmp_path/fmnist, known to the loader in place of the real one."""
    folder = tmp_path / "fmnist"
    monkeypatch.setattr(data_module, "FASHION_MNIST_FILES", _fake_release(folder))
    clear_data_cache()
    yield folder
    clear_data_cache()


def test_a_folder_given_in_the_spec_is_read_and_checked(fake):
    data = load_data(f"fashion-mnist:{fake}", seed=3)
    assert data.name == "fashion-mnist" and data.classes == tuple(range(10))
    assert data.x_train.shape == (30, 1, 28, 28) and data.x_test.shape == (10, 1, 28, 28)
    assert data.x_train.max() <= 1.0
    train_x, train_y, test_x, test_y = fashion_mnist_arrays(fake)
    assert np.array_equal(np.rint(data.x_test * 255).astype(np.uint8), test_x)
    assert np.array_equal(data.y_test, test_y)
    assert sorted(map(bytes, np.rint(data.x_train * 255).astype(np.uint8))) == \
        sorted(map(bytes, train_x))  # every training image, in the seed's order
    assert not train_x.flags.writeable  # the cached arrays cannot be changed by accident


def test_the_environment_variable_names_the_folder(fake, monkeypatch):
    monkeypatch.setenv("HANDPROP_FASHION_MNIST", str(fake))
    assert find_fashion_mnist() == fake
    assert load_fashion_mnist().x_train.shape[0] == 30


def test_inflated_files_are_accepted_by_their_own_digests(tmp_path, monkeypatch):
    folder = tmp_path / "raw"
    monkeypatch.setattr(data_module, "FASHION_MNIST_FILES", _fake_release(folder, gz=False))
    clear_data_cache()
    assert fashion_mnist_arrays(folder)[0].shape == (30, 1, 28, 28)
    clear_data_cache()


def test_missing_files_name_the_install_command_and_both_ways_to_point_elsewhere(tmp_path):
    with pytest.raises(DataError) as info:
        find_fashion_mnist(tmp_path)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "fashion-mnist:DIR" in message and "HANDPROP_FASHION_MNIST" in message
    assert str(tmp_path) in message and "\n" not in message


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_damaged_files_are_refused_before_they_are_read(fake, damage):
    path = fake / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(path.read_bytes())
    if damage == "flipped byte":
        raw[len(raw) // 2] ^= 0x01
    else:
        raw = raw[:-4]
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError) as info:
        fashion_mnist_arrays(fake)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert ("SHA-256" in message) if damage == "flipped byte" else ("bytes" in message)
    assert "apt-get install --reinstall dataset-fashion-mnist" in message


def test_cli_missing_and_damaged_data_end_in_one_line_with_exit_2(fake, tmp_path):
    code, out, err = run_cli("train", "--net", "lenet", "--data",
                             f"fashion-mnist:{tmp_path / 'nowhere'}", "--epochs", "1")
    assert code == 2 and err.count("\n") == 1 and "dataset-fashion-mnist" in err, err
    (fake / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    code, out, err = run_cli("train", "--net", "lenet", "--data", f"fashion-mnist:{fake}",
                             "--epochs", "1")
    assert code == 2 and err.count("\n") == 1 and "train-labels" in err, err


def test_cli_trains_lenet_on_the_folder(fake):
    code, out, err = run_cli("train", "--net", "lenet", "--data", f"fashion-mnist:{fake}",
                             "--epochs", "1", "--batch-size", "10", "--progress", "none")
    assert code == 0, err
    assert "fashion-mnist, 10 images" in out


def test_cli_trains_biotorchs_lenet_on_28x28_images_resized_to_32x32(fake, tmp_path):
    """lenet-biotorch declares its 32x32 inputs: train resizes the 28x28 images to them
    (8-bit bilinear, as BioTorch), says so, and a checkpoint resumes with the same data."""
    run = ["train", "--net", "lenet-biotorch", "--data", f"fashion-mnist:{fake}",
           "--batch-size", "10", "--progress", "none", "--checkpoint", tmp_path / "c.npz"]
    code, out, err = run_cli(*run, "--epochs", "1", "--json", tmp_path / "r.json")
    assert code == 0, err
    assert "resized from 28x28 to 32x32 for lenet-biotorch" in out
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["data"]["resized_from"] == [28, 28]
    assert saved["network"]["input_shape"] == [1, 32, 32]
    code, out, err = run_cli("train", "--resume", tmp_path / "c.npz", "--epochs", "2",
                             "--progress", "none")
    assert code == 0 and "2 epochs" in out, err


def test_resize_to_rounds_8bit_images_and_keeps_others():
    images = np.random.default_rng(2).integers(0, 256, (3, 1, 28, 28), np.uint8)
    assert np.array_equal(resize_to(images, (32, 32)),
                          resize_bilinear(images, (32, 32), round_8bit=True))
    assert resize_to(images, (28, 28)) is images and resize_to(images, None) is images
    floats = images / 255.0
    assert np.allclose(resize_to(floats, (32, 32)), resize_bilinear(floats, (32, 32)))
    data = load_data("digits10", size=(16, 16))
    assert data.input_shape == (1, 16, 16) and data.info["resized_from"] == [8, 8]


# -- resizing as BioTorch does ---------------------------------------------------------

def test_resize_is_pytorchs_bilinear_interpolation():
    torch = pytest.importorskip("torch")
    images = np.random.default_rng(0).uniform(0, 255, (5, 1, 28, 28))
    ours = resize_bilinear(images, (32, 32))
    theirs = torch.nn.functional.interpolate(torch.tensor(images), size=(32, 32),
                                             mode="bilinear", align_corners=False).numpy()
    assert np.allclose(ours, theirs, rtol=0, atol=1e-10)


# -- the real, installed files ---------------------------------------------------------

def test_the_installed_files_match_the_recorded_sizes_and_digests():
    needs_installed_files()
    for known in FASHION_MNIST_FILES:
        path = FASHION_MNIST_DIR / f"{known.stem}.gz"
        assert path.stat().st_size == known.gz_size
        assert hashlib.sha256(path.read_bytes()).hexdigest() == known.gz_sha256
        assert hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() == \
            known.raw_sha256


def test_the_installed_files_load_as_fashion_mnist():
    needs_installed_files()
    train_x, train_y, test_x, test_y = fashion_mnist_arrays()
    assert train_x.shape == (60000, 1, 28, 28) and test_x.shape == (10000, 1, 28, 28)
    assert train_x.dtype == np.uint8
    assert np.array_equal(np.bincount(train_y), [6000] * 10)
    assert np.array_equal(np.bincount(test_y), [1000] * 10)
    scaled = train_x.astype(np.float64) / 255  # BioTorch's normalisation constants
    assert abs(scaled.mean() - 0.2859) < 2e-4 and abs(scaled.std() - 0.3530) < 2e-4
    assert load_data("fashion-mnist").x_train.shape == (60000, 1, 28, 28)


def test_resize_matches_pil_on_the_real_images():
    """torchvision's Resize on these 8-bit images is PIL's: identical, pixel for pixel."""
    needs_installed_files()
    image_module = pytest.importorskip("PIL.Image")
    images = fashion_mnist_arrays()[0][:2000, 0]
    pil = np.stack([np.asarray(image_module.fromarray(im).resize((32, 32),
                                                                 image_module.BILINEAR))
                    for im in images])
    ours = resize_bilinear(images, (32, 32), round_8bit=True)
    assert np.array_equal(ours, pil)


# -- public loaders: nothing imports training.data's private names ---------------------

def _imports_from_training_data(path: Path, node: ast.AST) -> bool:
    if not isinstance(node, ast.ImportFrom):
        return False
    if (node.module or "").endswith("training.data"):
        return True
    return bool(node.level) and node.module == "data" and path.parent.name == "training"


def test_no_module_imports_a_private_name_of_training_data():
    found = [f"{path.relative_to(ROOT)}: {alias.name}"
             for path in [*(ROOT / "handprop").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
             for node in ast.walk(ast.parse(path.read_text()))
             if _imports_from_training_data(path, node)
             for alias in node.names if alias.name.startswith("_")]
    assert not found, found
