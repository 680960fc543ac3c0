"""Tests of the Fashion-MNIST idx loader on small synthetic files and, if present, the real data."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from snncompiler.datasets import DEFAULT_ROOT, FASHION_MNIST_CLASSES, load_fashion_mnist, read_idx
from snncompiler.errors import InputError


def idx_bytes(array: np.ndarray, dtype_code: int = 0x08) -> bytes:
    """Encodes an array as idx: magic 00 00 <code> <ndim>, big-endian uint32 dims, data."""
    header = bytes([0, 0, dtype_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_split(
    root: Path,
    prefix: str,
    images: np.ndarray,
    labels: np.ndarray,
    compress: bool,
) -> None:
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        data = idx_bytes(array)
        name = f"{prefix}-{kind}-ubyte"
        if compress:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)


def synthetic(n: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    return images, labels


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("split,prefix", [("test", "t10k"), ("train", "train")])
def test_round_trip(tmp_path, compress, split, prefix):
    images, labels = synthetic()
    write_split(tmp_path, prefix, images, labels, compress)
    x, y = load_fashion_mnist(split, root=tmp_path)
    assert x.dtype == np.uint8 and x.shape == (5, 28, 28)
    assert y.dtype == np.int64 and y.shape == (5,)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    x[0, 0, 0] = 1  # callers get writable arrays, not views of the file buffer


def test_root_accepts_str(tmp_path):
    write_split(tmp_path, "t10k", *synthetic(), compress=True)
    x, _ = load_fashion_mnist(root=str(tmp_path))
    assert len(x) == 5


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(InputError, match=r"apt-get install dataset-fashion-mnist.*root="):
        load_fashion_mnist("test", root=tmp_path)


def test_unknown_split(tmp_path):
    with pytest.raises(InputError, match=r"unknown Fashion-MNIST split 'val'; known: \['test'"):
        load_fashion_mnist("val", root=tmp_path)


def test_wrong_magic(tmp_path):
    images, labels = synthetic()
    write_split(tmp_path, "t10k", images, labels, compress=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])
    with pytest.raises(InputError, match=r"t10k-images-idx3-ubyte: not an idx file \(magic 1234"):
        load_fashion_mnist("test", root=tmp_path)


def test_wrong_dtype_code(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(idx_bytes(np.zeros((2, 3), np.uint8), dtype_code=0x0D))
    with pytest.raises(InputError, match=r"f: idx dtype code 0x0d not supported"):
        read_idx(path)


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "plain"])
def test_truncated_data(tmp_path, compress):
    images, labels = synthetic()
    write_split(tmp_path, "t10k", images, labels, compress=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    data = path.read_bytes()[:-7]
    path.unlink()
    if compress:
        (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    with pytest.raises(
        InputError, match=r"dimensions \[5, 28, 28\] need 3936 bytes, file has 3929"
    ):
        load_fashion_mnist("test", root=tmp_path)


def test_truncated_header(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(InputError, match=r"f: idx header truncated"):
        read_idx(path)


def test_truncated_gzip_stream(tmp_path):
    path = tmp_path / "f.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 28, 28), np.uint8)))[:-12])
    with pytest.raises(InputError, match=r"f.gz: cannot read idx file"):
        read_idx(path)


def test_count_mismatch(tmp_path):
    images, labels = synthetic(5)
    write_split(tmp_path, "t10k", images, labels[:4], compress=True)
    with pytest.raises(InputError, match=r"5 images but t10k-labels-idx1-ubyte.gz has 4 labels"):
        load_fashion_mnist("test", root=tmp_path)


def test_wrong_image_shape(tmp_path):
    write_split(tmp_path, "t10k", np.zeros((3, 32, 32), np.uint8), np.zeros(3, np.uint8), True)
    with pytest.raises(
        InputError, match=r"expected images of shape \(N, 28, 28\), got \(3, 32, 32\)"
    ):
        load_fashion_mnist("test", root=tmp_path)


def test_label_out_of_range(tmp_path):
    images, labels = synthetic(3)
    labels[1] = 10
    write_split(tmp_path, "t10k", images, labels, compress=False)
    with pytest.raises(InputError, match=r"label 10 out of range 0..9"):
        load_fashion_mnist("test", root=tmp_path)


@pytest.mark.skipif(not DEFAULT_ROOT.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_test_split():
    x, y = load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (10000,) and y.dtype == np.int64
    assert y.min() == 0 and y.max() == len(FASHION_MNIST_CLASSES) - 1
    # The test split is balanced: 1000 images per class.
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 1000))
