"""Fashion-MNIST from the idx files of Debian's ``dataset-fashion-mnist`` package.

The idx format (LeCun's MNIST format) is a 4-byte magic ``00 00 <dtype code> <ndim>``, then
``ndim`` big-endian uint32 dimensions, then the values in C order. Only what Fashion-MNIST
uses is accepted: unsigned bytes, images ``(N, 28, 28)`` and labels ``(N,)`` in ``0..9``.
Files may be gzipped or plain; gzip is recognised by its magic bytes, not by the name.

numpy only, so that evaluation and the demo do not need torch or torchvision.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from snncompiler.errors import InputError

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
"""Where ``apt-get install dataset-fashion-mnist`` puts the files."""

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Class names, indexed by label."""

# split name -> file name prefix used by the original distribution.
_SPLITS = {"train": "train", "test": "t10k"}

_IDX_UBYTE = 0x08
_IMAGE_SIZE = 28
_GZIP_MAGIC = b"\x1f\x8b"


def load_fashion_mnist(
    split: str = "test", root: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Loads one split of Fashion-MNIST.

    Args:
        split: ``"train"`` (60000 images) or ``"test"`` (10000 images).
        root: Folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.
            Defaults to the folder of Debian's ``dataset-fashion-mnist`` package.

    Returns:
        ``(images, labels)``: uint8 images of shape ``(N, 28, 28)`` (0 is background) and
        int64 labels of shape ``(N,)`` in ``0..9``, indexing :data:`FASHION_MNIST_CLASSES`.

    Raises:
        InputError: The split is unknown, a file is missing, or a file is not a valid
            Fashion-MNIST idx file (bad magic, dtype, dimensions, size or label values), or
            the images and labels files disagree on the number of samples.
    """
    if split not in _SPLITS:
        raise InputError(f"unknown Fashion-MNIST split {split!r}; known: {sorted(_SPLITS)}")
    folder = DEFAULT_ROOT if root is None else Path(root)
    prefix = _SPLITS[split]
    images_path = _find(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(folder, f"{prefix}-labels-idx1-ubyte")

    images = read_idx(images_path)
    if images.ndim != 3 or images.shape[1:] != (_IMAGE_SIZE, _IMAGE_SIZE):
        raise InputError(
            f"{images_path}: expected images of shape (N, {_IMAGE_SIZE}, {_IMAGE_SIZE}), "
            f"got {images.shape}"
        )
    labels = read_idx(labels_path)
    if labels.ndim != 1:
        raise InputError(f"{labels_path}: expected labels of shape (N,), got {labels.shape}")
    if len(images) != len(labels):
        raise InputError(
            f"{images_path}: {len(images)} images but {labels_path.name} has {len(labels)} labels"
        )
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise InputError(
            f"{labels_path}: label {int(labels.max())} out of range "
            f"0..{len(FASHION_MNIST_CLASSES) - 1}"
        )
    return images, labels.astype(np.int64)


def read_idx(path: str | Path) -> np.ndarray:
    """Reads one idx file of unsigned bytes, gzipped or plain.

    Args:
        path: The file.

    Returns:
        A writable uint8 array with the shape stored in the header.

    Raises:
        InputError: The file cannot be read or decompressed, its magic or dtype code is
            wrong, or its size does not match the dimensions in its header.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: cannot read idx file ({exc})") from exc

    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise InputError(
            f"{path}: not an idx file (magic {raw[:4].hex() or 'missing'}, "
            "expected 0000<dtype><ndim>)"
        )
    if raw[2] != _IDX_UBYTE:
        raise InputError(
            f"{path}: idx dtype code 0x{raw[2]:02x} not supported, expected 0x08 (unsigned byte)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise InputError(f"{path}: idx header truncated or empty (ndim {ndim}, {len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise InputError(
            f"{path}: dimensions {list(dims)} need {expected} bytes, file has {len(raw)} "
            "(truncated or corrupt)"
        )
    # frombuffer over bytes is read-only; copy so callers get an ordinary array.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find(folder: Path, stem: str) -> Path:
    """Returns ``folder/stem.gz`` or ``folder/stem``, preferring the gzipped file."""
    for name in (f"{stem}.gz", stem):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise InputError(
        f"Fashion-MNIST file {stem}[.gz] not found in {folder}: "
        "run `apt-get install dataset-fashion-mnist`, or pass root= the folder that holds it"
    )
