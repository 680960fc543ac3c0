"""The dense path of a 1x1 convolution (stride 1, no padding): a matrix product, two or three
pixels at a time.

A 1x1 conv of a channels-last sample is ``out[p, :] = x[p, :] @ W + bias`` for every pixel
``p``. Its event-driven kernel (:func:`snncompiler.runtime.kernels.conv_listed`) computes
one output pixel at a time, so every input channel loads its weight row again for every
pixel: on EfficientNet's expansion convs (16 to 320 channels in, 96 to 1280 out) the
weights, C x O floats, stream from the L2 cache once per pixel. Here each block of 32
output channels runs over all pixels before the next block (its weights, C x 32 floats,
stay in the L1 cache), and three pixels share every weight load: twelve 8-lane
accumulators in registers, four weight loads and three input loads per input channel (the
16- and 8-output blocks of a remainder take two pixels). On a full input it does about 1.7
times the additions per second of the event-driven path (``benchmarks/dense_or_events.py``,
``fused.POINTWISE_COST``); three pixels instead of two did 6% to 21% more additions per
second on EfficientNet-Lite0's 1x1 geometries, alone, by hand.

Every output adds ``x[p, c] * W[c, o]`` for c = 0, 1, ... into one float32 sum (product
and sum each rounded, as everywhere in the fused kernels), then the bias: the result
depends on the sample alone, not on the batch, the chunk or the threads. It pairs the
terms differently from the event-driven path, so the two differ by float rounding.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from snncompiler.runtime.simd import add8, mul_add8, store8, zeros8

# _three_pixels32, _two_pixels16 and _two_pixels8 are one loop written three times on
# purpose, as kernels._block32 and its siblings: named 8-lane accumulators stay in registers.


@njit(cache=True, inline="always")
def _three_pixels32(x, first, second, third, channels, weight, o, n_out):
    """Sums over the channels of pixels ``first``, ``second`` and ``third`` (offsets in
    ``x``) for the 32 outputs from ``o``: four vectors per pixel."""
    a0, a1, a2, a3 = zeros8(), zeros8(), zeros8(), zeros8()
    b0, b1, b2, b3 = zeros8(), zeros8(), zeros8(), zeros8()
    d0, d1, d2, d3 = zeros8(), zeros8(), zeros8(), zeros8()
    row = o
    for c in range(channels):
        u, v, w = x[first + c], x[second + c], x[third + c]
        a0 = mul_add8(a0, u, weight, row)
        a1 = mul_add8(a1, u, weight, row + 8)
        a2 = mul_add8(a2, u, weight, row + 16)
        a3 = mul_add8(a3, u, weight, row + 24)
        b0 = mul_add8(b0, v, weight, row)
        b1 = mul_add8(b1, v, weight, row + 8)
        b2 = mul_add8(b2, v, weight, row + 16)
        b3 = mul_add8(b3, v, weight, row + 24)
        d0 = mul_add8(d0, w, weight, row)
        d1 = mul_add8(d1, w, weight, row + 8)
        d2 = mul_add8(d2, w, weight, row + 16)
        d3 = mul_add8(d3, w, weight, row + 24)
        row += n_out
    return a0, a1, a2, a3, b0, b1, b2, b3, d0, d1, d2, d3


@njit(cache=True, inline="always")
def _store32(out, base, a0, a1, a2, a3, bias, o):
    """One pixel's 32 sums plus the bias from ``o``, into ``out[base:base + 32]``."""
    store8(out, base, add8(a0, bias, o))
    store8(out, base + 8, add8(a1, bias, o + 8))
    store8(out, base + 16, add8(a2, bias, o + 16))
    store8(out, base + 24, add8(a3, bias, o + 24))


@njit(cache=True, inline="always")
def _two_pixels16(x, first, second, channels, weight, o, n_out):
    """Sums over the channels of pixels ``first`` and ``second`` for the 16 outputs from
    ``o``: two vectors per pixel."""
    a0, a1, b0, b1 = zeros8(), zeros8(), zeros8(), zeros8()
    row = o
    for c in range(channels):
        u, v = x[first + c], x[second + c]
        a0 = mul_add8(a0, u, weight, row)
        a1 = mul_add8(a1, u, weight, row + 8)
        b0 = mul_add8(b0, v, weight, row)
        b1 = mul_add8(b1, v, weight, row + 8)
        row += n_out
    return a0, a1, b0, b1


@njit(cache=True, inline="always")
def _two_pixels8(x, first, second, channels, weight, o, n_out):
    """:func:`_two_pixels16` for 8 outputs."""
    a0, b0 = zeros8(), zeros8()
    row = o
    for c in range(channels):
        a0 = mul_add8(a0, x[first + c], weight, row)
        b0 = mul_add8(b0, x[second + c], weight, row)
        row += n_out
    return a0, b0


@njit(cache=True)
def pointwise_dense(x, pixels, channels, weight, bias, n_out, out):
    """``out[p, :] = x[p, :] @ W + bias`` for every pixel of one channels-last sample.

    Args:
        x: (pixels * channels,) float32, channels-last.
        weight: (channels * n_out,) float32: the ONNX weight (O, C, 1, 1) as [c, o]
            (:func:`snncompiler.runtime.fused.conv_weight_layout`).
        bias: (n_out,).
        out: (pixels * n_out,), channels-last.

    Returns:
        The additions done: every input entry times the outputs it reaches.
    """
    o = 0
    while o + 32 <= n_out:
        for p in range(0, pixels, 3):
            # The last pixels of an incomplete triple stand in for the missing ones: their
            # sums are their own, stored twice.
            q, r = min(p + 1, pixels - 1), min(p + 2, pixels - 1)
            a0, a1, a2, a3, b0, b1, b2, b3, d0, d1, d2, d3 = _three_pixels32(
                x, p * channels, q * channels, r * channels, channels, weight, o, n_out)
            _store32(out, p * n_out + o, a0, a1, a2, a3, bias, o)
            _store32(out, q * n_out + o, b0, b1, b2, b3, bias, o)
            _store32(out, r * n_out + o, d0, d1, d2, d3, bias, o)
        o += 32
    if o + 16 <= n_out:
        for p in range(0, pixels, 2):
            # An odd last pixel pairs with itself, as above.
            q = min(p + 1, pixels - 1)
            a0, a1, b0, b1 = _two_pixels16(x, p * channels, q * channels, channels, weight, o,
                                           n_out)
            base, other = p * n_out + o, q * n_out + o
            store8(out, base, add8(a0, bias, o))
            store8(out, base + 8, add8(a1, bias, o + 8))
            store8(out, other, add8(b0, bias, o))
            store8(out, other + 8, add8(b1, bias, o + 8))
        o += 16
    if o + 8 <= n_out:
        for p in range(0, pixels, 2):
            q = min(p + 1, pixels - 1)
            a0, b0 = _two_pixels8(x, p * channels, q * channels, channels, weight, o, n_out)
            store8(out, p * n_out + o, add8(a0, bias, o))
            store8(out, q * n_out + o, add8(b0, bias, o))
        o += 8
    while o < n_out:
        for p in range(pixels):
            total = np.float32(0.0)
            for c in range(channels):
                total += x[p * channels + c] * weight[c * n_out + o]
            out[p * n_out + o] = total + bias[o]
        o += 1
    return pixels * channels * n_out


@njit(cache=True, inline="always")
def is_pointwise(height, width, kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w):
    """Whether a group-1 conv of this geometry is a 1x1 conv that keeps every pixel (stride
    1, no padding), the case :func:`pointwise_dense` computes."""
    return (kh == 1 and kw == 1 and sh == 1 and sw == 1 and ph == 0 and pw == 0
            and out_h == height and out_w == width)
