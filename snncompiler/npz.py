"""User data: ``.npz`` files with ``x`` (inputs) and optional ``y`` (integer labels)."""

from __future__ import annotations

import zipfile
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


def load_npz(path: str | Path, preprocessing: Preprocessing = Preprocessing(),
             limit: int | None = None) -> Dataset:
    """Loads ``x`` and optional ``y`` from an ``.npz`` file, never unpickling.

    Integer ``x`` (uint8 images) needs ``preprocessing``; float ``x`` is used as is unless
    preprocessing is given.

    Raises:
        InputError: Unreadable file, missing ``x``, empty data, NaN/Inf, bad labels.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive.files:
                raise InputError(f"{path}: no array named 'x' (found: {archive.files}); save "
                                 "inputs as x=..., labels as y=...")
            x = archive["x"]
            y = archive["y"] if "y" in archive.files else None
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise InputError(f"{path}: not a readable .npz file ({error})") from None
    if limit is not None:
        x = x[:limit]
        y = None if y is None else y[:limit]
    if x.ndim < 2 or len(x) == 0:
        raise InputError(f"{path}: x has shape {list(x.shape)}; expected a non-empty batch "
                         "(N, ...)")
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
        if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or len(y) != len(x):
            raise InputError(f"{path}: y must be integer labels of shape [{len(x)}], got "
                             f"{y.dtype} {list(y.shape)}")
        if y.min() < 0:
            raise InputError(f"{path}: y holds negative labels")
        y = y.astype(np.int64)
    return Dataset(np.ascontiguousarray(x), y, str(path))


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
