"""Index-map and reduction ops: concat, transpose, pad, resize, reduce.

Each op is linear in its input(s), so applying it to the spikes of every step and averaging
gives the op of the averaged signal: they convert exactly. Each op is here three times,
side by side:

- its math, a small numpy function on whole batches ``(B, ...)`` (the reference);
- its node executor (same signature as those of :mod:`snncompiler.runtime.engine`), which
  folds time into the batch and handles static ``(N, ...)`` versus dynamic ``(Tc, N, ...)``
  values;
- its :class:`LinearMap`: which input values (and weights) every output adds, computed
  once at plan time for the fused executor's ``WEIGHTED_GATHER`` rows
  (:mod:`snncompiler.runtime.fused`). The maps of the ops that only move values (concat,
  transpose, pad, nearest resize) come from the reference itself, run on the inputs'
  indices, so the two cannot disagree.

Attribute axes count sample axes, so on a batch they are shifted by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np

from snncompiler.runtime.graph import Value

# --------------------------------------------------------------------------- math


def concat(parts: list[np.ndarray], axis: int) -> np.ndarray:
    """ONNX Concat of ``(B, ...)`` arrays along sample axis ``axis``."""
    return np.concatenate(parts, axis=axis + 1)


def transpose(x: np.ndarray, perm) -> np.ndarray:
    """ONNX Transpose of ``(B, ...)`` with ``perm`` over the sample axes."""
    return np.ascontiguousarray(x.transpose(0, *(p + 1 for p in perm)))


def pad(x: np.ndarray, pads, mode: str, value: float) -> np.ndarray:
    """ONNX Pad of ``(B, ...)``: ``pads`` = begins then ends of every sample axis.

    Negative entries crop, as in ONNX; the crop is applied before the padding, and an
    axis cropped by more than its size leaves nothing of ``x``: every output value is the
    constant (the schema allows that in constant mode only).
    """
    rank = x.ndim - 1
    begins, ends = pads[:rank], pads[rank:]
    sizes = x.shape[1:]
    if any(max(0, -b) + max(0, -e) > size for b, e, size in zip(begins, ends, sizes)):
        out = tuple(size + b + e for b, e, size in zip(begins, ends, sizes))
        return np.full((x.shape[0], *out), np.float32(value), dtype=x.dtype)
    crop = tuple(slice(max(0, -b), size - max(0, -e))
                 for b, e, size in zip(begins, ends, sizes))
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


def run_concat(node, inputs, state, engine):
    dynamic = [v for v in inputs if v.dynamic]
    if not dynamic:
        return Value(concat([v.data for v in inputs], node.attrs["axis"]), False)
    # A static input is the same at every step: repeat it over the chunk's steps.
    steps = dynamic[0].data.shape[0]
    parts = [v.data if v.dynamic else np.broadcast_to(v.data, (steps, *v.data.shape))
             for v in inputs]
    return Value(np.concatenate(parts, axis=node.attrs["axis"] + 2), True)


def run_transpose(node, inputs, state, engine):
    return inputs[0].folded(lambda x: transpose(x, node.attrs["perm"]))


def run_pad(node, inputs, state, engine):
    a = node.attrs
    return inputs[0].folded(lambda x: pad(x, a["pads"], a["mode"], a["value"]))


def run_resize(node, inputs, state, engine):
    rows, cols = node.arrays["rows"], node.arrays["cols"]
    x = inputs[0]
    return Value(resize(x.data, rows, cols), x.dynamic)


def run_reduce(node, inputs, state, engine):
    a = node.attrs
    return inputs[0].folded(lambda x: reduce(x, a["mode"], a["axes"], a["keepdims"]))


# --------------------------------------------------------------------------- linear maps


@dataclass
class LinearMap:
    """A linear op as data: which input values every output adds, with which weights.

    Output ``i`` (logical, C order) is ``bias[i] + sum_k weights[k] * x[inputs[k]][sources[k]]``
    over its terms ``k = starts[i] .. starts[i + 1] - 1``, added in that order.

    Attributes:
        shape: Per-sample shape of the output.
        inputs: (terms,) which input each term reads.
        sources: (terms,) the logical (C-order) index of that term in its input.
        starts: (size + 1,) the first term of every output, or None: one term per output
            (a gather: outputs are input values, bit for bit).
        weights: (terms,) float32, or None: every weight is 1 (no multiplication).
        bias: (size,) float32, or None: 0.
    """

    shape: tuple[int, ...]
    inputs: np.ndarray
    sources: np.ndarray
    starts: np.ndarray | None = None
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None


FILL = -1.0  # what the traced ops write where they make a value up (constant padding)


def _traced(fn, shapes: list[tuple], fill: float = 0.0) -> LinearMap:
    """The map of an op that only moves values: ``fn`` (the op's reference, on a list of
    ``(1, ...)`` batches) run on the inputs' indices, numbered one after the other in
    float64 (exact). An output of :data:`FILL` has no term and reads ``fill``."""
    offsets = np.cumsum([0, *(prod(s) for s in shapes)])
    parts = [(offsets[j] + np.arange(offsets[j + 1] - offsets[j], dtype=np.float64)
              ).reshape(1, *shape) for j, shape in enumerate(shapes)]
    traced = fn(parts)[0]
    index = traced.reshape(-1)
    filled = index == FILL
    taken = index[~filled].astype(np.int64)
    inputs = np.searchsorted(offsets, taken, side="right") - 1
    lmap = LinearMap(tuple(traced.shape), inputs, taken - offsets[inputs])
    if filled.any():
        lmap.starts = np.concatenate([[0], np.cumsum(~filled)])
        if fill != 0:
            lmap.bias = np.where(filled, np.float32(fill), np.float32(0))
    return lmap


def identity_map(shape: tuple) -> LinearMap:
    """Every value to the same logical index (a reshape: only the storage order changes)."""
    size = prod(shape)
    return LinearMap(tuple(shape), np.zeros(size, np.int64), np.arange(size))


def _matrix_map(shape: tuple, matrix: np.ndarray, axis: int) -> LinearMap:
    """``matrix`` (OUT, IN) applied along ``axis``: output ``(.., j, ..)`` adds
    ``matrix[j, w] * x[.., w, ..]`` over the nonzero ``matrix[j, w]``, in ``w`` order."""
    axis %= len(shape)
    after = prod(shape[axis + 1:])
    n_out, n_in = matrix.shape
    out_shape = (*shape[:axis], n_out, *shape[axis + 1:])
    nonzero_j, nonzero_w = np.nonzero(matrix)  # row by row, w ascending
    row_starts = np.concatenate([[0], np.cumsum(np.bincount(nonzero_j, minlength=n_out))])
    output = np.arange(prod(out_shape))
    j = output // after % n_out
    per_output = row_starts[j + 1] - row_starts[j]
    starts = np.concatenate([[0], np.cumsum(per_output)])
    term_output = np.repeat(output, per_output)
    w = nonzero_w[np.arange(starts[-1]) - starts[term_output] + row_starts[j[term_output]]]
    sources = ((term_output // (after * n_out)) * n_in + w) * after + term_output % after
    return LinearMap(out_shape, np.zeros(sources.size, np.int64), sources, starts,
                     matrix[j[term_output], w].astype(np.float32))


def concat_map(node, shapes: list[tuple]) -> list[LinearMap]:
    return [_traced(lambda parts: concat(parts, node.attrs["axis"]), shapes)]


def transpose_map(node, shapes: list[tuple]) -> list[LinearMap]:
    return [_traced(lambda parts: transpose(parts[0], node.attrs["perm"]), shapes)]


def pad_map(node, shapes: list[tuple]) -> list[LinearMap]:
    a = node.attrs
    return [_traced(lambda parts: pad(parts[0], a["pads"], a["mode"], FILL), shapes,
                    fill=a["value"] if a["mode"] == "constant" else 0.0)]


def resize_map(node, shapes: list[tuple]) -> list[LinearMap]:
    """A gather for nearest resizing; else two stages, the columns then the rows, as
    :func:`resize` multiplies (float32 sums in another order than BLAS: float rounding)."""
    rows, cols = node.arrays["rows"], node.arrays["cols"]
    if _one_hot_columns(rows) is not None and _one_hot_columns(cols) is not None:
        return [_traced(lambda parts: resize(parts[0], rows, cols), shapes)]
    by_columns = _matrix_map(shapes[0], cols, -1)
    return [by_columns, _matrix_map(by_columns.shape, rows, -2)]


def reduce_map(node, shapes: list[tuple]) -> list[LinearMap]:
    """Every output adds its inputs in logical order (numpy pairs them otherwise: float
    rounding); a mean weighs each by 1 / count."""
    a = node.attrs
    shape, axes = shapes[0], set(a["axes"])
    coords = np.unravel_index(np.arange(prod(shape)), shape)
    kept = [i for i in range(len(shape)) if i not in axes]
    target = (np.ravel_multi_index([coords[i] for i in kept], [shape[i] for i in kept])
              if kept else np.zeros(prod(shape), np.int64))
    out_shape = (tuple(1 if i in axes else n for i, n in enumerate(shape)) if a["keepdims"]
                 else tuple(shape[i] for i in kept))
    sources = np.argsort(target, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(target, minlength=prod(out_shape)))])
    count = prod(shape[i] for i in axes)
    weights = (np.full(sources.size, np.float32(1) / np.float32(count), np.float32)
               if a["mode"] == "mean" else None)
    return [LinearMap(out_shape, np.zeros(sources.size, np.int64), sources, starts, weights)]


LINEAR_MAPS = {
    "concat": concat_map,
    "transpose": transpose_map,
    "pad": pad_map,
    "resize": resize_map,
    "reduce": reduce_map,
}
"""Op -> ``(node, input shapes) -> [LinearMap, ...]``: the stages of its fused form, each
reading the previous one's output (one stage but for linear resizing)."""
