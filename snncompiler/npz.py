"""User data: ``.npz`` files with ``x`` (inputs) and optional ``y`` (integer labels)."""

from __future__ import annotations

import math
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from snncompiler.errors import InputError


@dataclass(frozen=True)
class Preprocessing:
    """``x = (x * scale - mean) / std``, applied to integer (e.g. uint8) inputs."""

    scale: float | None = None
    mean: float | None = None
    std: float | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.scale, self.mean, self.std))

    def apply(self, x: np.ndarray) -> np.ndarray:
        out = x.astype(np.float32) * np.float32(1.0 if self.scale is None else self.scale)
        if self.mean is not None:
            out -= np.float32(self.mean)
        if self.std is not None:
            if self.std == 0:
                raise InputError("--std must not be zero")
            out /= np.float32(self.std)
        return out


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # float32, model input layout
    y: np.ndarray | None  # int64 labels or None
    source: str

    def __len__(self) -> int:
        return len(self.x)


MAX_DATA_BYTES = 8 << 30
"""Largest array :func:`load_npz` reads, as declared by the file (checked before reading)."""

# What zipfile, zlib and numpy's npy header parser raise on a damaged file (the parser
# tokenizes and literal_evals the header: SyntaxError, RecursionError and friends).
_READ_ERRORS = (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, OverflowError,
                RuntimeError, NotImplementedError, SyntaxError, MemoryError, struct.error,
                zlib.error, zipfile.BadZipFile, zipfile.LargeZipFile, tokenize.TokenError)


def load_npz(path: str | Path, preprocessing: Preprocessing = Preprocessing(),
             limit: int | None = None, *, max_bytes: int = MAX_DATA_BYTES) -> Dataset:
    """Loads ``x`` and optional ``y`` from an ``.npz`` file, as data only.

    The file is untrusted: arrays of Python objects are refused (never unpickled), and each
    array's size is read from its npy header and checked against ``max_bytes`` and against
    the zip entry before anything is allocated or inflated.

    Integer ``x`` (uint8 images) needs ``preprocessing``; float ``x`` is used as is unless
    preprocessing is given.

    Raises:
        InputError: Unreadable file, missing ``x``, empty data, NaN/Inf, bad labels, arrays
            over ``max_bytes``.
    """
    path = Path(path)
    x, y = _read_arrays(path, max_bytes)
    if x.ndim < 2 or len(x) == 0:
        raise InputError(f"{path}: x has shape {list(x.shape)}; expected a non-empty batch "
                         "(N, ...)")
    if y is not None and (not np.issubdtype(y.dtype, np.integer) or y.shape != x.shape[:1]):
        raise InputError(f"{path}: y must be integer labels of shape [{len(x)}], got "
                         f"{y.dtype} {list(y.shape)}")
    if limit is not None:
        x = x[:limit]
        y = None if y is None else y[:limit]
    # Overflow to Inf is caught by the finiteness check below; numpy's warning would only
    # add a second, less useful line.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.bool_):
            if not preprocessing.given:
                raise InputError(f"{path}: x is {x.dtype}; give --scale/--mean/--std to turn it "
                                 "into the model's float input (e.g. --scale 0.00392 for /255)")
            x = preprocessing.apply(x)
        elif np.issubdtype(x.dtype, np.floating):
            x = preprocessing.apply(x) if preprocessing.given else x.astype(np.float32)
        else:
            raise InputError(f"{path}: x has dtype {x.dtype}; expected float32 or uint8")
    if not np.isfinite(x).all():
        raise InputError(f"{path}: x holds NaN or Inf values")
    if y is not None:
        if len(y) and y.min() < 0:
            raise InputError(f"{path}: y holds negative labels")
        if len(y) and y.max() > np.iinfo(np.int64).max:
            raise InputError(f"{path}: y holds labels up to {y.max()}; labels are class "
                             "indices")
        y = y.astype(np.int64)
    return Dataset(np.ascontiguousarray(x), y, str(path))


def _read_arrays(path: Path, max_bytes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` and ``y`` (or None) from the archive, refusing anything but plain arrays."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory; expected an .npz file")
    try:
        with open(path, "rb") as stream:
            magic = stream.read(6)
        if magic == b"\x93NUMPY":
            raise InputError(f"{path}: a .npy file, not an .npz archive; save the data with "
                             "np.savez(file, x=inputs, y=labels)")
        with zipfile.ZipFile(path) as archive:
            names = {info.filename: info for info in archive.infolist()}
            if "x.npy" not in names:
                found = sorted(name.removesuffix(".npy") for name in names)
                raise InputError(f"{path}: no array named 'x' (found: {found}); save inputs "
                                 "as x=..., labels as y=...")
            x = _read_member(archive, names["x.npy"], max_bytes, f"{path}: x")
            y = None
            if "y.npy" in names:
                y = _read_member(archive, names["y.npy"], max_bytes, f"{path}: y")
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as error:
        if error.strerror:
            raise InputError(f"{path}: cannot read it: {error.strerror}") from None
        raise InputError(f"{path}: not a readable .npz file ({_brief(error)})") from None
    except _READ_ERRORS as error:
        raise InputError(f"{path}: not a readable .npz file ({_brief(error)})") from None
    return x, y


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, max_bytes: int,
                 what: str) -> np.ndarray:
    """One npy member: its header is parsed and its size checked before the data is read."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise InputError(f"{what}: compression method {info.compress_type} is not supported; "
                         "save with np.savez or np.savez_compressed")
    if info.file_size > max_bytes:
        raise InputError(f"{what}: the archive declares {info.file_size} bytes, more than the "
                         f"limit of {max_bytes} bytes")
    with archive.open(info) as stream:
        try:
            version = np.lib.format.read_magic(stream)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"npy format version {version} is not supported")
            shape, fortran, dtype = read_header(stream)
        except _READ_ERRORS as error:
            raise InputError(f"{what}: not a readable .npy array ({_brief(error)})") from None
        if dtype.hasobject:
            raise InputError(f"{what}: holds Python objects (dtype {dtype}); refusing to "
                             "unpickle: save plain numeric arrays")
        declared = math.prod(shape) * dtype.itemsize
        if declared > max_bytes:
            raise InputError(f"{what}: declares {declared} bytes ({list(shape)} of {dtype}), "
                             f"more than the limit of {max_bytes} bytes")
        if stream.tell() + declared != info.file_size:
            raise InputError(f"{what}: its header declares {declared} bytes of data but the "
                             f"entry holds {info.file_size - stream.tell()}")
        stream.seek(0)
        return np.lib.format.read_array(stream, allow_pickle=False)


def _brief(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def check_labels(dataset: Dataset, classes: int) -> None:
    """Raises InputError when a label is not the index of one of the model's outputs."""
    if dataset.y is None or not len(dataset.y):
        return
    top = int(dataset.y.max())
    if top >= classes:
        raise InputError(f"{dataset.source}: labels go up to {top} but the model has {classes} "
                         f"outputs (labels 0..{classes - 1}); is this the right data file "
                         "for this model?")


def check_input_shape(dataset: Dataset, name: str, sample_shape: tuple[int, ...]) -> None:
    """Raises InputError when the data's samples do not have the model input's shape."""
    if tuple(dataset.x.shape[1:]) != tuple(sample_shape):
        expected = ", ".join(map(str, sample_shape))
        raise InputError(f"{dataset.source}: x has samples of shape {list(dataset.x.shape[1:])} "
                         f"but model input {name!r} expects [N, {expected}] (check the layout, "
                         "e.g. NCHW vs NHWC, or a missing channel axis)")


def feeds(x: np.ndarray, input_name: str, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Yields ``{input_name: batch}`` slices of ``x``."""
    for start in range(0, len(x), batch_size):
        yield {input_name: x[start : start + batch_size]}
