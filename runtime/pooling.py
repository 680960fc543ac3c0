"""Numba kernel of the exact signed max-pool tracker (see ``maxpool`` in opset.py).

Per output cell, with ``A(t)`` the running sum of each input cell of its window::

    P(t)   = max over the window of A(t)
    out(t) = P(t) - P(t-1)          (P(0) = 0)

so the running sum of the output is exactly the max pool of the running input at every
step. Padding cells never win a max, so windows are simply clipped to the input.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def maxpool_track(x, kernel, strides, pads, dilations, running, pooled, out):
    """Advances the tracker over ``x.shape[0]`` steps.

    Args:
        x: (Tc, N, C, H, W) input of each step.
        kernel, strides, pads, dilations: int64 arrays (kh, kw), (sh, sw),
            (top, left, bottom, right), (dh, dw).
        running: (N, C, H, W) float64 running input sums, updated in place.
        pooled: (N, C, Ho, Wo) float64 max pool of ``running`` so far, updated in place.
        out: (Tc, N, C, Ho, Wo) float32, receives each step's output.
    """
    steps, batch, channels, height, width = x.shape
    out_h, out_w = out.shape[3], out.shape[4]
    # Each batch item is independent: one thread owns it, so results never depend on the
    # number of threads.
    for n in prange(batch):
        for t in range(steps):
            for c in range(channels):
                for h in range(height):
                    for w in range(width):
                        running[n, c, h, w] += x[t, n, c, h, w]
                for oh in range(out_h):
                    for ow in range(out_w):
                        best = -np.inf
                        for i in range(kernel[0]):
                            ih = oh * strides[0] - pads[0] + i * dilations[0]
                            if ih < 0 or ih >= height:
                                continue
                            for j in range(kernel[1]):
                                iw = ow * strides[1] - pads[1] + j * dilations[1]
                                if 0 <= iw < width and running[n, c, ih, iw] > best:
                                    best = running[n, c, ih, iw]
                        out[t, n, c, oh, ow] = best - pooled[n, c, oh, ow]
                        pooled[n, c, oh, ow] = best
