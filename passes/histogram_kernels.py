"""Numba kernels of the calibration histograms; :mod:`.calibration_stats` orchestrates them.

The kernels see only arrays and scalars. They read an activation as ``(N, C, L)``, a free
view of the C-contiguous ``(N, C, ...)`` tensor that onnxruntime returns: no transpose to
channel-major, no copy. Each call handles the channels ``lo:hi`` and writes only their
entries, so disjoint channel ranges may run in different threads at once (the kernels
release the GIL), and a channel's result does not depend on how channels were split.

The kernels are not ``parallel=True``: numba's OpenMP layer spins at the end of every
parallel region, and with a kernel call per tensor per batch that made calibration several
times slower on a loaded machine (measured on 2 shared cores). The caller spreads channel
ranges over plain threads instead, which sleep while they wait.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# float32 bit patterns: an exponent of all ones is an infinity or a NaN.
_EXPONENT = np.int32(0x7F800000)


@njit(cache=True, nogil=True)
def channel_max(bits, lo, hi, maxima, finite):
    """Per-channel ``max(max(x), 0)`` of a float32 tensor, and whether it is all finite.

    Works on the float32 values' bit patterns (``x.view(np.int32)``): for a float32 that is
    +0 or positive the int32 pattern is non-negative and grows with the value, and for a
    negative one (sign bit set) it is negative, so the largest pattern, clamped at 0, is the
    pattern of ``max(max(x), 0)``. Integer max and or-reductions vectorise; float ones do
    not without fast-math, which would also change what NaN does.

    Args:
        bits: ``(N, C, L)`` int32, the float32 activation viewed as int32.
        lo, hi: The channels to do.
        maxima: ``(C,)`` int32 out: bit pattern of ``max(max(x[:, c]), 0)``.
        finite: ``(C,)`` bool out: False where the channel holds a NaN or an infinity.
    """
    n, _, length = bits.shape
    for c in range(lo, hi):
        top = np.int32(0)
        special = np.int32(0)
        for i in range(n):
            row = bits[i, c]
            for j in range(length):
                b = row[j]
                top = max(top, b)
                special |= np.int32((b & _EXPONENT) == _EXPONENT)
        maxima[c] = top
        finite[c] = special == 0


@njit(cache=True, nogil=True)
def bin_channels(x, lo, hi, upper, maxima, counts, sums, n_positive):
    """Adds the positive values of ``x`` to right-closed bins of ``(0, upper[c]]``.

    Value v > 0 of channel c goes to bin ``ceil((v / u) * bins) - 1`` computed in float32
    (u is ``upper[c]`` rounded to float32, or 1 where ``upper[c]`` is 0), clipped to
    ``[0, bins - 1]``: the arithmetic on which ``ChannelHistogram``'s exact range growth
    rests. Non-positive values are not binned.

    A channel's values are added in the order they lie in ``x`` (image by image) into
    per-call sums that start from 0, which are then added to ``sums``: the rounding of
    ``np.bincount`` with the values as weights. It depends on the values and on how they
    were cut into batches, never on threads or channel ranges.

    Args:
        x: ``(N, C, L)`` float32, all finite, ``N * L < 2**31``.
        lo, hi: The channels to do.
        upper: ``(C,)`` float64 upper edges; ``upper[c] >= max(x[:, c])`` wherever channel
            c has a positive value in ``x``.
        maxima: ``(C,)`` float32, ``max(max(x[:, c]), 0)``.
        counts: ``(C, bins)`` int64, incremented.
        sums: ``(C, bins)`` float64, incremented.
        n_positive: ``(C,)`` int64, incremented by the number of positive values.
    """
    n, _, length = x.shape
    bins = counts.shape[1]
    scale = np.float32(bins)
    last = np.int32(bins - 1)
    # Per-call bins: int32 counts keep them and the sums in the L1 cache (2048 bins: 24 kB).
    batch_counts = np.empty(bins, dtype=np.int32)
    batch_sums = np.empty(bins, dtype=np.float64)
    values = np.empty(length, dtype=np.float32)
    index = np.empty(length, dtype=np.uint32)
    for c in range(lo, hi):
        u = np.float32(upper[c]) if upper[c] > 0 else np.float32(1.0)
        # The bin index grows with the value, so no value goes above the maximum's bin: a
        # channel only clears and adds bins 0..end - 1, which keeps one with few values (a
        # Gemm's, a small feature map) from costing O(bins) per batch.
        end = min(max(np.int32(np.ceil((maxima[c] / u) * scale)), np.int32(1)), bins)
        batch_counts[:end] = 0
        batch_sums[:end] = 0.0
        positive = 0
        for i in range(n):
            # Three loops per row: gathering the positive values first leaves a branch-free
            # index loop, which vectorises, and a scatter without the "is it positive"
            # branch that one loop mispredicts on about every other value. Indices are
            # unsigned so that numba adds no negative-index wraparound to the scatter.
            row = x[i, c]
            m = np.uintp(0)
            for j in range(length):
                v = row[j]
                values[m] = v
                m += np.uintp(v > 0)
            for j in range(m):
                k = np.int32(np.ceil((values[j] / u) * scale)) - np.int32(1)
                # A value whose quotient underflows to 0 still belongs to bin 0.
                index[j] = np.uint32(min(max(k, np.int32(0)), last))
            for j in range(m):
                k = index[j]
                batch_counts[k] += 1
                batch_sums[k] += np.float64(values[j])
            positive += m
        for b in range(end):
            counts[c, b] += batch_counts[b]
            sums[c, b] += batch_sums[b]
        n_positive[c] += positive


@njit(cache=True, nogil=True)
def merge_bins(counts, sums, rows, shifts):
    """Merges each run of ``2**g`` neighbouring bins into one, in place: bin i goes to
    ``i >> g``, for every channel ``rows[r]`` and its ``g = shifts[r] >= 1``.

    Walking i upwards, bin ``i >> g < i`` has already been emptied (or is bin 0, which
    stays) when its first source arrives, so every merged sum adds its sources in
    ascending order starting from 0: the rounding of ``np.bincount`` over the same bins.

    Args:
        counts: ``(C, bins)`` int64, changed in place.
        sums: ``(C, bins)`` float64, changed in place.
        rows: ``(R,)`` int64 channels to merge.
        shifts: ``(R,)`` int64 ``g`` of each, 1 to 62.
    """
    bins = counts.shape[1]
    for r in range(rows.size):
        c = rows[r]
        g = shifts[r]
        for i in range(1, bins):
            target = i >> g
            counts[c, target] += counts[c, i]
            counts[c, i] = 0
            sums[c, target] += sums[c, i]
            sums[c, i] = 0.0
