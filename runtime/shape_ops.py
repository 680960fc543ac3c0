"""Index-map and reduction ops: concat, transpose, pad, resize, reduce, in numpy.

Each op is linear in its input(s), so applying it to the spikes of every step and averaging
gives the op of the averaged signal: they convert exactly. The math lives in the small
functions on whole batches ``(B, ...)``; the executors (same signature as those of
:mod:`snncompiler.runtime.engine`) only fold time into the batch and handle static
``(N, ...)`` versus dynamic ``(Tc, N, ...)`` values. Attribute axes count sample axes, so
on a batch they are shifted by one.

This module must not import the engine (the engine imports it): an executor builds its
result with the class of the values it was given.
"""

from __future__ import annotations

import numpy as np

# --------------------------------------------------------------------------- math


def concat(parts: list[np.ndarray], axis: int) -> np.ndarray:
    """ONNX Concat of ``(B, ...)`` arrays along sample axis ``axis``."""
    return np.concatenate(parts, axis=axis + 1)


def transpose(x: np.ndarray, perm) -> np.ndarray:
    """ONNX Transpose of ``(B, ...)`` with ``perm`` over the sample axes."""
    return np.ascontiguousarray(x.transpose(0, *(p + 1 for p in perm)))


def pad(x: np.ndarray, pads, mode: str, value: float) -> np.ndarray:
    """ONNX Pad of ``(B, ...)``: ``pads`` = begins then ends of every sample axis.

    Negative entries crop, as in ONNX; the crop is applied before the padding.
    """
    rank = x.ndim - 1
    begins, ends = pads[:rank], pads[rank:]
    crop = tuple(slice(max(0, -b), size - max(0, -e) or None)
                 for b, e, size in zip(begins, ends, x.shape[1:]))
    x = x[(slice(None), *crop)]
    widths = [(0, 0)] + [(max(0, b), max(0, e)) for b, e in zip(begins, ends)]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.float32(value))
    return np.pad(x, widths, mode=mode)


def _one_hot_columns(matrix: np.ndarray) -> np.ndarray | None:
    """Column index of the single 1 of every row, or None when a row is not one-hot."""
    index = matrix.argmax(axis=1)
    if np.array_equal(matrix, np.eye(matrix.shape[1], dtype=matrix.dtype)[index]):
        return index
    return None


def resize(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``out[..., i, j] = sum_hw rows[i, h] * x[..., h, w] * cols[j, w]`` on the last two axes.

    Nearest-neighbour resizing has one-hot rows and becomes a gather; linear resizing is the
    product of the interpolation matrices.
    """
    row_index, col_index = _one_hot_columns(rows), _one_hot_columns(cols)
    if row_index is not None and col_index is not None:
        return np.ascontiguousarray(x[..., row_index[:, None], col_index[None, :]])
    out = np.matmul(rows, np.matmul(x, cols.T))
    return out.astype(np.float32, copy=False)


def reduce(x: np.ndarray, mode: str, axes, keepdims: int) -> np.ndarray:
    """Mean or sum of ``(B, ...)`` over sample axes ``axes``."""
    fn = np.mean if mode == "mean" else np.sum
    return fn(x, axis=tuple(a + 1 for a in axes), keepdims=bool(keepdims), dtype=np.float32)


# --------------------------------------------------------------------------- executors


def _folded(value, fn):
    """Applies a batch function to every step at once by folding time into the batch."""
    if not value.dynamic:
        return type(value)(fn(value.data), False)
    steps, batch = value.data.shape[:2]
    out = fn(value.data.reshape(steps * batch, *value.data.shape[2:]))
    return type(value)(out.reshape(steps, batch, *out.shape[1:]), True)


def run_concat(node, inputs, state, engine):
    dynamic = [v for v in inputs if v.dynamic]
    if not dynamic:
        return type(inputs[0])(concat([v.data for v in inputs], node.attrs["axis"]), False)
    # A static input is the same at every step: repeat it over the chunk's steps.
    steps = dynamic[0].data.shape[0]
    parts = [v.data if v.dynamic else np.broadcast_to(v.data, (steps, *v.data.shape))
             for v in inputs]
    return type(inputs[0])(np.concatenate(parts, axis=node.attrs["axis"] + 2), True)


def run_transpose(node, inputs, state, engine):
    return _folded(inputs[0], lambda x: transpose(x, node.attrs["perm"]))


def run_pad(node, inputs, state, engine):
    a = node.attrs
    return _folded(inputs[0], lambda x: pad(x, a["pads"], a["mode"], a["value"]))


def run_resize(node, inputs, state, engine):
    rows, cols = node.arrays["rows"], node.arrays["cols"]
    x = inputs[0]
    return type(x)(resize(x.data, rows, cols), x.dynamic)


def run_reduce(node, inputs, state, engine):
    a = node.attrs
    return _folded(inputs[0], lambda x: reduce(x, a["mode"], a["axes"], a["keepdims"]))
