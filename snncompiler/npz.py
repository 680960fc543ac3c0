"""User data: ``.npz`` files with ``x`` (inputs) and optional ``y`` (integer labels)."""

from __future__ import annotations

import math
import struct
import threading
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

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
    x: np.ndarray | StreamedRows  # float32, model input layout
    y: np.ndarray | None  # int64 labels or None
    source: str

    def __len__(self) -> int:
        return len(self.x)


class _Member(NamedTuple):
    """An npy member of an archive, its header read: where its values start within it."""

    path: Path
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    data_start: int


class StreamedRows:
    """The float32 rows of an ``.npz`` file's ``x``, read from the file whenever a slice is
    taken, so that a compile holds one batch of its calibration data, however many images
    there are (``load_npz(..., stream=True)``).

    Only what a compile does with its data is supported: ``len``, ``shape``, ``dtype`` and
    slices ``x[a:b]``, best taken in order. A stored member (``np.savez``) is read at any
    offset; a compressed one (``np.savez_compressed``) is inflated once per pass, and a slice
    that starts before the previous one ended opens it again.
    """

    def __init__(self, member: _Member, length: int, preprocessing: Preprocessing):
        self._member, self._path, self._preprocessing = member, member.path, preprocessing
        self.shape = (length, *member.shape[1:])
        self.dtype = np.dtype(np.float32)
        self._row_bytes = math.prod(member.shape[1:]) * member.dtype.itemsize
        self._stream = self._archive = None  # an open compressed member, and its offset
        self._offset = 0
        self._lock = threading.Lock()  # threads (a Dask worker's) share the open member

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError("StreamedRows supports contiguous slices x[a:b] only")
        start, stop, _ = index.indices(len(self))
        count = max(stop - start, 0)
        raw = self._read(self._member.data_start + start * self._row_bytes,
                         count * self._row_bytes)
        rows = np.frombuffer(raw, dtype=self._member.dtype).reshape(count, *self.shape[1:])
        return _as_model_input(rows, self._preprocessing, str(self._path))

    def _read(self, offset: int, size: int) -> bytes:
        with self._lock:
            return self._read_unlocked(offset, size)

    def _read_unlocked(self, offset: int, size: int) -> bytes:
        try:
            info = self._member.info
            if info.compress_type == zipfile.ZIP_STORED:
                with open(self._path, "rb") as stream:
                    stream.seek(_member_data_offset(stream, info) + offset)
                    data = stream.read(size)
            else:
                if self._stream is None or offset < self._offset:
                    self.close()
                    self._archive = zipfile.ZipFile(self._path)
                    self._stream, self._offset = self._archive.open(info), 0
                self._stream.seek(offset)
                data = self._stream.read(size)
                self._offset = offset + len(data)
        except _READ_ERRORS as error:
            raise InputError(f"{self._path}: cannot read x any more ({_brief(error)})") from None
        if len(data) != size:
            raise InputError(f"{self._path}: x ended early (the file changed while in use?)")
        return data

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._archive.close()
            self._stream = None

    def __del__(self):
        self.close()


MAX_DATA_BYTES = 8 << 30
"""Largest array :func:`load_npz` reads, as declared by the file (checked before reading)."""

# What zipfile, zlib and numpy's npy header parser raise on a damaged file (the parser
# tokenizes and literal_evals the header: SyntaxError, RecursionError and friends).
_READ_ERRORS = (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, OverflowError,
                RuntimeError, NotImplementedError, SyntaxError, MemoryError, struct.error,
                zlib.error, zipfile.BadZipFile, zipfile.LargeZipFile, tokenize.TokenError)


def load_npz(path: str | Path, preprocessing: Preprocessing = Preprocessing(),
             limit: int | None = None, *, max_bytes: int = MAX_DATA_BYTES,
             stream: bool = False, check_rows: bool = True) -> Dataset:
    """Loads ``x`` and optional ``y`` from an ``.npz`` file, as data only.

    The file is untrusted: arrays of Python objects are refused (never unpickled), and each
    array's size is read from its npy header and checked against ``max_bytes`` and against
    the zip entry before anything is allocated or inflated.

    Integer ``x`` (uint8 images) needs ``preprocessing``; float ``x`` is used as is unless
    preprocessing is given.

    With ``stream``, ``x`` is a :class:`StreamedRows` that reads its rows from the file when
    sliced (a C-ordered ``x``; a Fortran-ordered one is loaded whole): checked once here,
    batch by batch, and never held whole. ``check_rows=False`` skips that first pass, for a
    reader that opens a file its caller has already checked (a Dask worker): every slice is
    still converted and checked as it is read.

    Raises:
        InputError: Unreadable file, missing ``x``, empty data, NaN/Inf, bad labels, arrays
            over ``max_bytes``.
    """
    path = Path(path)
    x, y = _read_arrays(path, max_bytes, streamed=stream)
    if len(x.shape) < 2 or x.shape[0] == 0:
        raise InputError(f"{path}: x has shape {list(x.shape)}; expected a non-empty batch "
                         "(N, ...)")
    if y is not None and (not np.issubdtype(y.dtype, np.integer) or y.shape != x.shape[:1]):
        raise InputError(f"{path}: y must be integer labels of shape [{x.shape[0]}], got "
                         f"{y.dtype} {list(y.shape)}")
    if limit is not None:
        y = None if y is None else y[:limit]
    if isinstance(x, _Member):
        # The rows x[:limit] would keep, whatever the sign of limit.
        x = StreamedRows(x, len(range(x.shape[0])[:limit]), preprocessing)
        for first in range(0, len(x) if check_rows else 0, _CHECK_ROWS):
            x[first:first + _CHECK_ROWS]  # every row converts and is finite
    else:
        x = _as_model_input(x[:limit] if limit is not None else x, preprocessing, str(path))
    if y is not None:
        if len(y) and y.min() < 0:
            raise InputError(f"{path}: y holds negative labels")
        if len(y) and y.max() > np.iinfo(np.int64).max:
            raise InputError(f"{path}: y holds labels up to {y.max()}; labels are class "
                             "indices")
        y = y.astype(np.int64)
    return Dataset(x if isinstance(x, StreamedRows) else np.ascontiguousarray(x), y, str(path))


# Rows per read when load_npz(stream=True) checks the data: small next to any image set.
_CHECK_ROWS = 64


def _as_model_input(x: np.ndarray, preprocessing: Preprocessing, source: str) -> np.ndarray:
    """float32 model input from stored values: preprocessed (integer ``x`` needs it) and
    checked to be finite."""
    # Overflow to Inf is caught by the finiteness check below; numpy's warning would only
    # add a second, less useful line.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.bool_):
            if not preprocessing.given:
                raise InputError(f"{source}: x is {x.dtype}; give --scale/--mean/--std to turn "
                                 "it into the model's float input (e.g. --scale 0.00392 for "
                                 "/255)")
            x = preprocessing.apply(x)
        elif np.issubdtype(x.dtype, np.floating):
            x = preprocessing.apply(x) if preprocessing.given else x.astype(np.float32)
        else:
            raise InputError(f"{source}: x has dtype {x.dtype}; expected float32 or uint8")
    if not np.isfinite(x).all():
        raise InputError(f"{source}: x holds NaN or Inf values")
    return x


def _member_data_offset(stream, info: zipfile.ZipInfo) -> int:
    """Where a stored zip member's bytes start in the file: after its local header, whose
    name and extra field lengths may differ from the central directory's."""
    stream.seek(info.header_offset)
    local = stream.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise InputError(f"{stream.name}: damaged zip entry {info.filename!r}")
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_length + extra_length


def _read_arrays(path: Path, max_bytes: int, *, streamed: bool = False
                 ) -> tuple[np.ndarray | _Member, np.ndarray | None]:
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
            x = _read_member(archive, names["x.npy"], max_bytes, f"{path}: x",
                             stream_from=path if streamed else None)
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
                 what: str, stream_from: Path | None = None) -> np.ndarray | _Member:
    """One npy member: its header is parsed and its size checked before the data is read
    (with ``stream_from``, a C-ordered one is not read: its :class:`_Member` is returned)."""
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
        if stream_from is not None and not fortran and len(shape) >= 1:
            return _Member(stream_from, info, tuple(shape), dtype, stream.tell())
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
