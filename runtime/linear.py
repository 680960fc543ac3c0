"""The stateless ops, in numpy, on batches of samples ``(B, ...)``.

The engine folds time into the batch before calling these, so one call covers every step
of a time chunk. Convolution and pooling loop over kernel offsets rather than building an
im2col matrix: each offset is one large matrix product (or elementwise op) over a strided
view, so peak memory stays at one shifted copy of the input.
"""

from __future__ import annotations

import numpy as np


def _pad(x: np.ndarray, pads, value: float, extra=(0, 0)) -> np.ndarray:
    top, left, bottom, right = pads
    bottom, right = bottom + extra[0], right + extra[1]
    if not (top or left or bottom or right):
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def conv2d(x, weight, bias, strides, pads, dilations, group):
    """ONNX Conv (2-D) with ``weight`` (O, C/group, KH, KW) and ``bias`` (O,)."""
    batch, channels = x.shape[:2]
    out_channels, group_channels, kh, kw = weight.shape
    sh, sw = strides
    dh, dw = dilations
    xp = _pad(x, pads, 0.0)
    ho = (xp.shape[2] - (kh - 1) * dh - 1) // sh + 1
    wo = (xp.shape[3] - (kw - 1) * dw - 1) // sw + 1
    out_per_group = out_channels // group
    # Channels first, batch and pixels flattened: each kernel offset is one GEMM
    # (O/g x C/g) @ (C/g x B*Ho*Wo) per group.
    xc = np.ascontiguousarray(xp.transpose(1, 0, 2, 3))
    acc = np.zeros((group, out_per_group, batch * ho * wo), dtype=np.float32)
    w = weight.reshape(group, out_per_group, group_channels, kh, kw)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + (ho - 1) * sh + 1, sh)
            cols = slice(j * dw, j * dw + (wo - 1) * sw + 1, sw)
            shifted = xc[:, :, rows, cols].reshape(group, group_channels, batch * ho * wo)
            if group_channels == 1:
                # Depthwise: a per-channel scale, no matrix product needed.
                acc += w[:, :, 0, i, j][:, :, None] * shifted
            else:
                acc += np.matmul(w[:, :, :, i, j], shifted)
    out = acc.reshape(out_channels, batch, ho, wo).transpose(1, 0, 2, 3)
    return np.ascontiguousarray(out + bias[None, :, None, None], dtype=np.float32)


def gemm(x, weight, bias):
    """``x @ weight + bias`` over the last axis."""
    return (x @ weight + bias).astype(np.float32, copy=False)


def _ceil_extra(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
                dilation: int, out: int) -> int:
    """Padding needed after ``pad_end`` so that ``out`` windows fit (ceil_mode)."""
    span = (kernel - 1) * dilation + 1
    return max(0, (out - 1) * stride + span - (size + pad_begin + pad_end))


def _pool_windows(x, kernel, strides, pads, dilations, out_hw, value):
    """Yields the strided view of every kernel offset of a padded input."""
    h, w = x.shape[2:]
    extra = (
        _ceil_extra(h, kernel[0], strides[0], pads[0], pads[2], dilations[0], out_hw[0]),
        _ceil_extra(w, kernel[1], strides[1], pads[1], pads[3], dilations[1], out_hw[1]),
    )
    xp = _pad(x, pads, value, extra)
    ho, wo = out_hw
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            r0, c0 = i * dilations[0], j * dilations[1]
            rows = slice(r0, r0 + (ho - 1) * strides[0] + 1, strides[0])
            cols = slice(c0, c0 + (wo - 1) * strides[1] + 1, strides[1])
            yield xp[:, :, rows, cols]


def maxpool2d(x, kernel, strides, pads, dilations, out_hw):
    """ONNX MaxPool (2-D); padding never wins the max."""
    out = None
    for view in _pool_windows(x, kernel, strides, pads, dilations, out_hw, -np.inf):
        out = view.copy() if out is None else np.maximum(out, view, out=out)
    return out


def avgpool2d(x, kernel, strides, pads, count_include_pad, out_hw):
    """ONNX AveragePool (2-D).

    The divisor counts the input cells of each window, plus the explicit padding when
    ``count_include_pad``; the extra cells that ``ceil_mode`` adds are never counted.
    """
    total = None
    for view in _pool_windows(x, kernel, strides, pads, (1, 1), out_hw, 0.0):
        total = view.astype(np.float32) if total is None else total + view
    divisor = avgpool_divisor(x.shape[2:], kernel, strides, pads, count_include_pad, out_hw)
    return (total / divisor).astype(np.float32, copy=False)


def avgpool_divisor(in_hw, kernel, strides, pads, count_include_pad, out_hw) -> np.ndarray:
    """(Ho, Wo) float32: the cells each average-pool window divides by.

    The divisor is the same pooling applied to a mask of ones: with count_include_pad the
    mask covers the explicit padding too, and only the ceil-mode extra is zero.
    """
    ones = (1, 1)
    mask = np.ones((1, 1, *in_hw), dtype=np.float32)
    mask_pads = pads
    if count_include_pad:
        mask = _pad(mask, pads, 1.0)
        mask_pads = (0, 0, 0, 0)
    count = None
    for view in _pool_windows(mask, kernel, strides, mask_pads, ones, out_hw, 0.0):
        count = view.copy() if count is None else count + view
    return count[0, 0]


def global_avgpool(x):
    """Mean over every axis after the channel axis, kept as size-1 axes."""
    axes = tuple(range(2, x.ndim))
    return x.mean(axis=axes, keepdims=True, dtype=np.float32)
