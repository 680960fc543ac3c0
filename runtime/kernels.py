"""Numba kernels of the fused executor: every dynamic op, one sample and one step at a time.

The fused executor (:mod:`snncompiler.runtime.fused`) runs the whole time-dependent part of
a network for one sample, step after step, before it moves to the next sample, so a
sample's neuron state and its activations stay in the CPU cache. The planner turns the
program into arrays that these kernels read:

- ``ops``: one row of integers per op, ``[opcode, in0 space, in0 offset, in1 space,
  in1 offset, out offset, out size, p0, p1, ...]``; the ``p`` are the op's own integers
  (shapes, geometry, offsets of its parameters and state), listed in :func:`_execute`;
- ``params``: float32 weights, biases, thresholds, ...; ``dparams``: float64 parameters
  of the tracking neurons and the analog functions (the values the node executor reads);
  ``index``: int64 index maps (the linear maps of concat, transpose, pad, resize, reduce
  and of reshapes between layouts; broadcasting);
- per-sample state rows: ``fstate`` (membranes; max counts of the max pools on spikes),
  ``istate`` (spike counts), ``dstate`` (float64 running sums of the other max pools, of
  the tracking neurons, of the analog ops' inputs and of the readout; the analog ops'
  previous outputs);
- per-block scratch rows (a block is a run of samples handled by one thread).

An input lives in space 0 (this step's arena) or space 1 (the sample's static row: values
computed once from the directly coded input). Tensors of rank 3, (C, H, W), are stored
channels-last, (H, W, C): a pixel's channels are contiguous, which is what the vector
loops over channels want. Other tensors keep their logical order.

Event-driven linear ops. A spike tensor is mostly zeros. ``conv`` and ``gemm`` list the
nonzero inputs of the step (their storage indices, pixel by pixel: :func:`list_events`),
then compute every output from the listed inputs that reach it only, keeping 32 output
channels in four 8-lane registers (:mod:`snncompiler.runtime.simd`). The additions done
are (nonzero inputs) x (outputs each reaches), against (all inputs) x (outputs) for a
dense layer. A neuron layer whose spikes a conv or a one-row gemm reads lists them as it
sends them, once for all its readers (a ResNet block reads its input twice).

Dense or event-driven, per layer and step. Listing costs about as much per input as one
8-lane addition; on a dense enough input it costs more than skipping the zeros
saves. A ``conv`` therefore counts its input's nonzeros first and, from a threshold set per
layer by its geometry (:func:`snncompiler.runtime.fused.dense_from`, fitted by
``benchmarks/dense_or_events.py``), adds every input's weights instead, reading the list
0, 1, 2, ...: from 94% nonzero up for a 3x3 conv, from 50% for a 1x1 stride-2 conv to 64
channels. A 1x1 conv that keeps every pixel runs its dense path as a matrix product, two
pixels per weight load (:mod:`snncompiler.runtime.pointwise`, from about 55% nonzero).
At the firing rates of converted networks (10 to 25%) 3x3 convs stay event-driven; dense
inputs come from average pools, adds (EfficientNet's residual stream into its 1x1
expansions) and analog layers. (``gemm`` is always event-driven: its listing is a small
part of its work.)

Depthwise convs (one channel per group: MobileNet, EfficientNet) add few terms per input,
so listing does not pay: :func:`conv_depthwise` adds, per output pixel, each kernel tap's
input pixel channels-last, 8 channels in a register, skipping only all-zero pixels. Other
grouped convs scatter each nonzero input (:func:`conv_grouped`).

Every output adds its terms in an order fixed by the positions of the listed inputs alone
(kernel row, kernel column, input channel; for ``gemm`` the input index; alternate terms go
to two partial sums, added at the end, so that the additions do not wait for each other),
then the bias: the result does not depend on the batch, the time chunk or the number of
threads, and the dense and event-driven paths differ by float rounding only. So does
numpy's BLAS ``conv2d``/``gemm``, which adds in another order.

No kernel allocates (``conv_batch`` allocates its scratch once per call).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from snncompiler.runtime.analog import analog_step
from snncompiler.runtime.neuron_variants import tracking_step
from snncompiler.runtime.neurons import count_and_weigh, signed_spikes
from snncompiler.runtime.pointwise import is_pointwise, pointwise_dense
from snncompiler.runtime.simd import (
    LANES,
    add8,
    add_vectors8,
    list_nonzero8,
    load8,
    load8_float,
    max8,
    mul8,
    mul_add8,
    store8,
    sub8,
    zeros8,
)

# Opcodes of the fused executor.
(CONV, CONV_GROUPED, GEMM, AFFINE, ADD, AVGPOOL, GLOBAL_AVGPOOL, MAXPOOL, MAXPOOL_SPIKES, SNM,
 WEIGHTED_GATHER, READOUT, RECORD, TRACK, ANALOG) = range(15)

# Columns of an ``ops`` row before the op's own integers.
OPCODE, IN0_SPACE, IN0, IN1_SPACE, IN1, OUT, SIZE, P = range(8)
N_PARAMS = 20
ROW = P + N_PARAMS

# The op integers of TRACK (tracking neurons: snm_clip, snm_leaky), by name: offsets in
# ``dparams`` of theta and v0 (one row of C per calibrated T), of slope (C) and of upper (1);
# C; neurons of a channel stored one after the other (neuron_variants.tracking_step);
# theta_neg code; most spikes per step; offsets of the running sums (dstate) and of the
# spike counts (istate); where to write the layer's event list, its starts (-1: nowhere)
# and its pixels (see list_events). TRACK_SLOTS: how many.
(TRACK_THETA, TRACK_V0, TRACK_SLOPE, TRACK_UPPER, TRACK_CHANNELS, TRACK_INNER,
 TRACK_THETA_NEG, TRACK_MAX_SPIKES, TRACK_RUNNING, TRACK_MEMORY, TRACK_LIST_EVENTS,
 TRACK_LIST_STARTS, TRACK_LIST_PIXELS, TRACK_SLOTS) = range(14)

# The op integers of WEIGHTED_GATHER (every linear index map: concat, transpose, pad,
# resize, reduce, a reshape between layouts; shape_ops.LinearMap), by name: offsets in
# ``index`` of the terms' source addresses (an address a >= 0 is arena[a], a < 0 is
# static_row[~a], so that one row reads any number of inputs in either space) and of the
# outputs' first terms (size + 1 of them; -1: one term per output, a plain gather), offsets
# in ``params`` of the terms' weights (-1: all 1) and of a bias per output (-1: none); the
# number of terms. GATHER_SLOTS: how many.
(GATHER_SOURCES, GATHER_STARTS, GATHER_WEIGHTS, GATHER_BIAS, GATHER_TERMS,
 GATHER_SLOTS) = range(6)

# The op integers of ANALOG (analog.analog_step), by name: the function's code
# (analog.FUNCTION_CODES); the sizes of its inputs (IN0, IN1; 0: no second input); offsets in
# dstate of their running sums (-1: a static input) and of y(t - 1); offset in ``index`` of
# each input's value for each output (2 x size: numpy broadcasting; -1: same shapes) and of
# the lines along the axis (softmax, log_softmax, lrn; -1: elementwise) and their length;
# offset in ``dparams`` of alpha, beta and bias; LRN's size. ANALOG_SLOTS: how many.
(ANALOG_FUNCTION, ANALOG_IN0_SIZE, ANALOG_IN1_SIZE, ANALOG_IN0_SUMS, ANALOG_IN1_SUMS,
 ANALOG_PREVIOUS, ANALOG_BROADCAST, ANALOG_LINES, ANALOG_LENGTH, ANALOG_CONSTANTS,
 ANALOG_SIZE, ANALOG_SLOTS) = range(12)

BLOCK = 32  # output channels kept in registers at once (four 8-lane vectors)
BLOCKS_PER_THREAD = 4  # samples are split in this many blocks per thread (load balance)


# --------------------------------------------------------------------------- linear ops


# _block32, _block16 and _block8 are one loop written three times on purpose: each keeps its
# accumulators in a fixed number of named 8-lane values, which is what lets LLVM hold them
# in registers; a loop over an array of accumulators would keep them in memory.
@njit(cache=True, inline="always")
def _block32(weight, events, x, starts, taps, runs, offset, scale):
    """Sums ``value * weight[row + offset : +32]`` over the events of ``runs`` runs.

    Run ``k`` is the events ``starts[2k] .. starts[2k + 1]`` (unsigned, so that indexing
    needs no negative-index check); event ``e`` is the input ``x[events[e]]``, whose weight
    row starts at ``events[e] * scale + taps[k]``.
    Even and odd events of a run go to two sets of registers, added at the end, so that
    consecutive additions do not wait for each other.
    """
    a0, a1, a2, a3 = zeros8(), zeros8(), zeros8(), zeros8()
    b0, b1, b2, b3 = zeros8(), zeros8(), zeros8(), zeros8()
    one, two = np.uint64(1), np.uint64(2)
    for k in range(runs):
        shift = taps[k] + offset
        e, stop = starts[2 * k], starts[2 * k + 1]
        while e + one < stop:
            value = x[events[e]]
            row = np.int64(events[e]) * scale + shift
            a0 = mul_add8(a0, value, weight, row)
            a1 = mul_add8(a1, value, weight, row + 8)
            a2 = mul_add8(a2, value, weight, row + 16)
            a3 = mul_add8(a3, value, weight, row + 24)
            value = x[events[e + one]]
            row = np.int64(events[e + one]) * scale + shift
            b0 = mul_add8(b0, value, weight, row)
            b1 = mul_add8(b1, value, weight, row + 8)
            b2 = mul_add8(b2, value, weight, row + 16)
            b3 = mul_add8(b3, value, weight, row + 24)
            e += two
        if e < stop:
            value = x[events[e]]
            row = np.int64(events[e]) * scale + shift
            a0 = mul_add8(a0, value, weight, row)
            a1 = mul_add8(a1, value, weight, row + 8)
            a2 = mul_add8(a2, value, weight, row + 16)
            a3 = mul_add8(a3, value, weight, row + 24)
    return add_vectors8(a0, b0), add_vectors8(a1, b1), add_vectors8(a2, b2), add_vectors8(a3, b3)


@njit(cache=True, inline="always")
def _block16(weight, events, x, starts, taps, runs, offset, scale):
    """:func:`_block32` for 16 output channels."""
    a0, a1, b0, b1 = zeros8(), zeros8(), zeros8(), zeros8()
    one, two = np.uint64(1), np.uint64(2)
    for k in range(runs):
        shift = taps[k] + offset
        e, stop = starts[2 * k], starts[2 * k + 1]
        while e + one < stop:
            value = x[events[e]]
            row = np.int64(events[e]) * scale + shift
            a0 = mul_add8(a0, value, weight, row)
            a1 = mul_add8(a1, value, weight, row + 8)
            value = x[events[e + one]]
            row = np.int64(events[e + one]) * scale + shift
            b0 = mul_add8(b0, value, weight, row)
            b1 = mul_add8(b1, value, weight, row + 8)
            e += two
        if e < stop:
            value = x[events[e]]
            row = np.int64(events[e]) * scale + shift
            a0 = mul_add8(a0, value, weight, row)
            a1 = mul_add8(a1, value, weight, row + 8)
    return add_vectors8(a0, b0), add_vectors8(a1, b1)


@njit(cache=True, inline="always")
def _block8(weight, events, x, starts, taps, runs, offset, scale):
    """:func:`_block32` for 8 output channels."""
    a0, b0 = zeros8(), zeros8()
    one, two = np.uint64(1), np.uint64(2)
    for k in range(runs):
        shift = taps[k] + offset
        e, stop = starts[2 * k], starts[2 * k + 1]
        while e + one < stop:
            a0 = mul_add8(a0, x[events[e]], weight, np.int64(events[e]) * scale + shift)
            odd = events[e + one]
            b0 = mul_add8(b0, x[odd], weight, np.int64(odd) * scale + shift)
            e += two
        if e < stop:
            a0 = mul_add8(a0, x[events[e]], weight, np.int64(events[e]) * scale + shift)
    return add_vectors8(a0, b0)


@njit(cache=True, inline="always")
def _block1(weight, events, x, starts, taps, runs, offset, scale):
    """:func:`_block32` for 1 output channel."""
    total = np.float32(0.0)
    for k in range(runs):
        shift = taps[k] + offset
        for e in range(starts[2 * k], starts[2 * k + 1]):
            total += x[events[e]] * weight[np.int64(events[e]) * scale + shift]
    return total


@njit(cache=True, inline="always")
def _outputs_from_runs(weight, bias, n_out, events, x, runs_at, taps, runs, out, base):
    """Writes ``out[base + o] = (sum over the runs' events) + bias[o]`` for every o."""
    o = 0
    while o + BLOCK <= n_out:
        a0, a1, a2, a3 = _block32(weight, events, x, runs_at, taps, runs, o, n_out)
        store8(out, base + o, add8(a0, bias, o))
        store8(out, base + o + 8, add8(a1, bias, o + 8))
        store8(out, base + o + 16, add8(a2, bias, o + 16))
        store8(out, base + o + 24, add8(a3, bias, o + 24))
        o += BLOCK
    if o + 16 <= n_out:
        a0, a1 = _block16(weight, events, x, runs_at, taps, runs, o, n_out)
        store8(out, base + o, add8(a0, bias, o))
        store8(out, base + o + 8, add8(a1, bias, o + 8))
        o += 16
    while o + 8 <= n_out:
        store8(out, base + o,
               add8(_block8(weight, events, x, runs_at, taps, runs, o, n_out), bias, o))
        o += 8
    while o < n_out:
        out[base + o] = _block1(weight, events, x, runs_at, taps, runs, o, n_out) + bias[o]
        o += 1


@njit(cache=True)
def count_by_pixel(x, pixels, channels, starts):
    """Writes ``starts[p]``, the nonzero entries of channels-last ``x`` before pixel ``p``
    (``starts[pixels]``: all of them), and returns that count."""
    count = 0
    for pixel in range(pixels):
        starts[pixel] = count
        base = pixel * channels
        nonzero = 0
        for c in range(channels):  # a reduction LLVM vectorises
            nonzero += x[base + c] != 0
        count += nonzero
    starts[pixels] = count
    return count


@njit(cache=True)
def list_events(x, pixels, channels, events, starts):
    """Lists the nonzero entries of one channels-last sample ``x``, pixel by pixel.

    Writes ``events[k]``, the storage index of the k-th nonzero entry, and ``starts[p]``,
    the first event of pixel ``p`` (``starts[pixels]`` is the count). Returns the count.
    """
    if channels % LANES:
        _list_indices(x, pixels * channels, events)
        return count_by_pixel(x, pixels, channels, starts)
    # A pixel is a whole number of 8-entry groups: one pass lists and marks the pixels
    # (a layer does not fit in the cache, so a second pass over it costs a read of it).
    count = 0
    for pixel in range(pixels):
        starts[pixel] = count
        for i in range(pixel * channels, (pixel + 1) * channels, LANES):
            count = list_nonzero8(x, i, events, count)
    starts[pixels] = count
    return count


@njit(cache=True, inline="always")
def _every_entry(pixels, channels, every, starts):
    """The event list of every entry, zeros included: ``every`` (0, 1, 2, ...) as events,
    pixel p's from ``starts[p] = p * channels``."""
    for pixel in range(pixels + 1):
        starts[pixel] = pixel * channels
    return every


@njit(cache=True, inline="always")
def _list_indices(x, size, events):
    # Eight entries at a time, without a branch (simd.list_nonzero8), then the rest one by
    # one: every index is written and the count advanced past nonzeros only. The kernels
    # read the values from x.
    count = 0
    i = 0
    while i + LANES <= size:
        count = list_nonzero8(x, i, events, count)
        i += LANES
    while i < size:
        events[count] = np.uint32(i)
        count += x[i] != 0
        i += 1


@njit(cache=True)
def conv_listed(x, events, starts, channels, height, width, weight, bias, out_channels, kh,
                kw, sh, sw, ph, pw, dh, dw, out_h, out_w, runs_at, taps, out):
    """2-D convolution (group 1) of one channels-last sample from its listed nonzero inputs.

    Args:
        x: (H*W*C,) the channels-last input.
        events, starts: Its nonzero entries (see :func:`list_events`).
        weight: (KH*KW*C*O,) the ONNX weight (O, C, KH, KW) as [kh, kw, c, o]
            (see :func:`snncompiler.runtime.fused.conv_weight_layout`).
        bias: (O,).
        runs_at: Scratch of 2*KH*KW (uint64); taps: of KH*KW.
        out: (Ho*Wo*O,) output.

    Returns:
        The additions done: every nonzero input times the outputs it reaches.
    """
    # The weight row of input i = (ih*W + iw)*C + c at tap (a, b) is ((a*KW + b)*C + c)*O
    # = i*O + ((a*KW + b) - (ih*W + iw))*C*O: an event's row is its index times O plus a
    # shift that is the same for every event of one input pixel, and, with dilation 1, for
    # every event of the KW consecutive pixels one kernel row reads (b - iw = -left).
    if dh != 1 or dw != 1:
        return _conv_listed_dilated(x, events, starts, channels, height, width, weight, bias,
                                    out_channels, kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w,
                                    runs_at, taps, out)
    pixel_rows = channels * out_channels
    additions = 0
    for oh in range(out_h):
        top = oh * sh - ph
        rows_inside = top >= 0 and top + kh <= height
        for ow in range(out_w):
            left = ow * sw - pw
            if rows_inside and left >= 0 and left + kw <= width:
                # Inside the input (most outputs of a large map): one run per kernel row,
                # the next row's a row of pixels further, with no bounds to check.
                pixel = top * width + left
                shift = -pixel * pixel_rows
                for a in range(kh):
                    begin, end = starts[pixel], starts[pixel + kw]
                    runs_at[2 * a] = begin
                    runs_at[2 * a + 1] = end
                    taps[a] = shift
                    additions += np.int64(end - begin)
                    pixel += width
                    shift += (kw - width) * pixel_rows
                runs = kh
            else:
                runs = 0
                first, last = max(left, 0), min(left + kw, width)
                for a in range(max(0, -top), min(kh, height - top)):
                    row = (top + a) * width
                    if first < last:
                        runs_at[2 * runs] = starts[row + first]
                        runs_at[2 * runs + 1] = starts[row + last]
                        taps[runs] = (a * kw - row - left) * pixel_rows
                        additions += np.int64(starts[row + last] - starts[row + first])
                        runs += 1
            _outputs_from_runs(weight, bias, out_channels, events, x, runs_at, taps, runs,
                               out, (oh * out_w + ow) * out_channels)
    return additions * out_channels


@njit(cache=True)
def _conv_listed_dilated(x, events, starts, channels, height, width, weight, bias,
                         out_channels, kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w, runs_at,
                         taps, out):
    """:func:`conv_listed` with a dilation: one run per kernel tap."""
    pixel_rows = channels * out_channels
    additions = 0
    for oh in range(out_h):
        top = oh * sh - ph
        for ow in range(out_w):
            left = ow * sw - pw
            runs = 0
            for a in range(kh):
                ih = top + a * dh
                if ih < 0 or ih >= height:
                    continue
                row = ih * width
                for b in range(kw):
                    iw = left + b * dw
                    if 0 <= iw < width:
                        runs_at[2 * runs] = starts[row + iw]
                        runs_at[2 * runs + 1] = starts[row + iw + 1]
                        taps[runs] = (a * kw + b - row - iw) * pixel_rows
                        additions += np.int64(starts[row + iw + 1] - starts[row + iw])
                        runs += 1
            _outputs_from_runs(weight, bias, out_channels, events, x, runs_at, taps, runs,
                               out, (oh * out_w + ow) * out_channels)
    return additions * out_channels


@njit(cache=True)
def conv_events(x, channels, height, width, weight, bias, out_channels, kh, kw, sh, sw, ph,
                pw, dh, dw, out_h, out_w, events, starts, runs_at, taps, every, dense_from,
                out):
    """:func:`conv_listed` of one channels-last sample ``x`` (H*W*C,), event-driven or dense.

    With fewer than ``dense_from`` nonzero entries (see
    :func:`snncompiler.runtime.fused.dense_from`) it lists them and adds only theirs; with
    more, listing costs more than skipping the zeros saves, and it adds every entry's
    weights, zeros included, reading ``every`` (0, 1, 2, ...) as its list. The choice
    depends on this sample and step alone, so results still do not depend on the batch,
    the chunk or the threads; the two paths pair the additions differently, so they differ
    by float rounding. ``events`` is scratch of at least C*H*W entries, ``starts`` of
    H*W + 1. Returns the additions done (every entry's, on the dense path).
    """
    pixels = height * width
    if count_by_pixel(x, pixels, channels, starts) >= dense_from:
        return conv_dense(x, channels, height, width, weight, bias, out_channels, kh, kw, sh,
                          sw, ph, pw, dh, dw, out_h, out_w, starts, runs_at, taps, every, out)
    _list_indices(x, pixels * channels, events)
    return conv_listed(x, events, starts, channels, height, width, weight, bias, out_channels,
                       kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w, runs_at, taps, out)


@njit(cache=True)
def conv_dense(x, channels, height, width, weight, bias, out_channels, kh, kw, sh, sw, ph, pw,
               dh, dw, out_h, out_w, starts, runs_at, taps, every, out):
    """The dense path of :func:`conv_events`: every entry's weights added, zeros included.
    A 1x1 conv that keeps every pixel is a matrix product (:mod:`pointwise`); any other
    geometry runs :func:`conv_listed` with ``every`` (0, 1, 2, ...) as its list. Returns
    the additions done."""
    if is_pointwise(height, width, kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w):
        return pointwise_dense(x, height * width, channels, weight, bias, out_channels, out)
    events = _every_entry(height * width, channels, every, starts)
    return conv_listed(x, events, starts, channels, height, width, weight, bias, out_channels,
                       kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w, runs_at, taps, out)


@njit(cache=True)
def conv_grouped(x, channels, height, width, weight, bias, out_channels, kh, kw, sh, sw, ph,
                 pw, dh, dw, group, out_h, out_w, acc, out):
    """2-D convolution of one channels-last sample with groups, by scattering each nonzero
    input's weights into an accumulator (slower than :func:`conv_events`, any geometry).

    ``weight`` is (C*KH*KW*O/group,) as [c, kh, kw, o within the group of c]; ``acc`` a
    scratch of Ho*Wo*O. Every output adds its terms in the same order as conv_events.
    """
    per_group = out_channels // group
    in_per_group = channels // group
    size = out_h * out_w * out_channels
    acc[:size] = 0
    targets = 0
    for ih in range(height):
        for iw in range(width):
            pixel = ih * width + iw
            for c in range(channels):
                value = x[pixel * channels + c]
                if value == 0:
                    continue
                o0 = (c // in_per_group) * per_group
                for a in range(kh):
                    y = ih + ph - a * dh
                    if y < 0:
                        break
                    if y % sh or y // sh >= out_h:
                        continue
                    for b in range(kw):
                        z = iw + pw - b * dw
                        if z < 0:
                            break
                        if z % sw or z // sw >= out_w:
                            continue
                        target = ((y // sh) * out_w + z // sw) * out_channels + o0
                        row = ((c * kh + a) * kw + b) * per_group
                        for o in range(per_group):
                            acc[target + o] += value * weight[row + o]
                        targets += 1
    for p in range(out_h * out_w):
        for o in range(out_channels):
            out[p * out_channels + o] = acc[p * out_channels + o] + bias[o]
    return targets * per_group


@njit(cache=True)
def is_depthwise(channels, out_channels, group):
    """Whether a conv is depthwise (one input and one output channel per group): it then
    runs :func:`conv_depthwise`, with its own weight layout."""
    return group > 1 and group == channels and group == out_channels


@njit(cache=True)
def conv_depthwise(x, channels, height, width, weight, bias, kh, kw, sh, sw, ph, pw, dh, dw,
                   out_h, out_w, starts, cells, out):
    """Depthwise 2-D convolution of one channels-last sample, 8 channels at a time.

    Every output pixel adds, for each kernel tap in (kh, kw) order, the tap's input pixel
    times the tap's weights, channel by channel in 8-lane registers, then the bias. A tap
    whose input pixel is all zeros is skipped; the zero entries of the other pixels are
    added (their products are zeros, which change no sum). So every output has the bits of
    :func:`conv_grouped`, which adds each nonzero input in the same order.

    Args:
        x: (H*W*C,) the channels-last input.
        weight: (KH*KW*C,) the ONNX weight (C, 1, KH, KW) as [kh, kw, c]
            (see :func:`snncompiler.runtime.fused.conv_weight_layout`).
        bias: (C,).
        starts: uint64 scratch of H*W + 1; cells: int64 scratch of 2*KH*KW.
        out: (Ho*Wo*C,) output.

    Returns:
        The additions an event-driven layer does: every nonzero input times the outputs it
        reaches (what :func:`conv_grouped` returns).
    """
    count_by_pixel(x, height * width, channels, starts)
    vector_channels = channels - channels % LANES
    additions = 0
    for oh in range(out_h):
        for ow in range(out_w):
            taps = 0
            for a in range(kh):
                ih = oh * sh - ph + a * dh
                if ih < 0 or ih >= height:
                    continue
                for b in range(kw):
                    iw = ow * sw - pw + b * dw
                    if iw < 0 or iw >= width:
                        continue
                    pixel = ih * width + iw
                    nonzero = np.int64(starts[pixel + 1] - starts[pixel])
                    if nonzero > 0:
                        cells[2 * taps] = pixel * channels
                        cells[2 * taps + 1] = (a * kw + b) * channels
                        additions += nonzero
                        taps += 1
            base = (oh * out_w + ow) * channels
            # Four vectors of channels at once: their sums are independent, so the additions
            # of one do not wait for those of another (each channel still adds its taps in
            # order, one sum: the same bits).
            c = 0
            while c + 4 * LANES <= vector_channels:
                a0, a1, a2, a3 = zeros8(), zeros8(), zeros8(), zeros8()
                for k in range(taps):
                    i, w = cells[2 * k] + c, cells[2 * k + 1] + c
                    a0 = add_vectors8(a0, mul8(load8(x, i), weight, w))
                    a1 = add_vectors8(a1, mul8(load8(x, i + 8), weight, w + 8))
                    a2 = add_vectors8(a2, mul8(load8(x, i + 16), weight, w + 16))
                    a3 = add_vectors8(a3, mul8(load8(x, i + 24), weight, w + 24))
                store8(out, base + c, add8(a0, bias, c))
                store8(out, base + c + 8, add8(a1, bias, c + 8))
                store8(out, base + c + 16, add8(a2, bias, c + 16))
                store8(out, base + c + 24, add8(a3, bias, c + 24))
                c += 4 * LANES
            while c < vector_channels:
                acc = zeros8()
                for k in range(taps):
                    acc = add_vectors8(acc, mul8(load8(x, cells[2 * k] + c), weight,
                                                 cells[2 * k + 1] + c))
                store8(out, base + c, add8(acc, bias, c))
                c += LANES
            for c in range(vector_channels, channels):
                total = np.float32(0.0)
                for k in range(taps):
                    total += x[cells[2 * k] + c] * weight[cells[2 * k + 1] + c]
                out[base + c] = total + bias[c]
    return additions


@njit(cache=True, parallel=True)
def conv_batch(x, channels, height, width, weight, bias, out_channels, kh, kw, sh, sw, ph, pw,
               dh, dw, group, out_h, out_w, dense_from, blocks, out):
    """:func:`conv_events` (or :func:`conv_depthwise`, :func:`conv_grouped`) on every sample
    of a batch.

    ``x`` is (B, H*W*C) and ``out`` (B, Ho*Wo*O), channels-last. Samples are split into
    ``blocks`` contiguous blocks, each with its own scratch (allocated once per call), so
    the result does not depend on the number of threads. Returns the additions per sample.
    """
    batch = x.shape[0]
    additions = np.zeros(batch, dtype=np.int64)
    every = np.arange(channels * height * width).astype(np.uint32)
    for block in prange(blocks):
        events = np.empty(channels * height * width, dtype=np.uint32)
        starts = np.empty(height * width + 1, dtype=np.uint64)
        runs_at = np.empty(2 * kh * kw, dtype=np.uint64)
        taps = np.empty(2 * kh * kw, dtype=np.int64)
        acc = np.empty(out_h * out_w * out_channels if group > 1 else 1, dtype=np.float32)
        for n in range(block * batch // blocks, (block + 1) * batch // blocks):
            if group == 1:
                additions[n] = conv_events(x[n], channels, height, width, weight, bias,
                                           out_channels, kh, kw, sh, sw, ph, pw, dh, dw, out_h,
                                           out_w, events, starts, runs_at, taps, every,
                                           dense_from, out[n])
            elif is_depthwise(channels, out_channels, group):
                additions[n] = conv_depthwise(x[n], channels, height, width, weight, bias, kh,
                                              kw, sh, sw, ph, pw, dh, dw, out_h, out_w, starts,
                                              taps, out[n])
            else:
                additions[n] = conv_grouped(x[n], channels, height, width, weight, bias,
                                            out_channels, kh, kw, sh, sw, ph, pw, dh, dw, group,
                                            out_h, out_w, acc, out[n])
    return additions


@njit(cache=True)
def gemm_listed(x, events, count, weight, bias, n_out, runs_at, taps, out):
    """``x @ weight + bias`` for one row ``x`` from its ``count`` listed nonzero entries
    (see :func:`list_events`). ``weight`` is the (IN, OUT) matrix, row-major: entry i's
    row starts at ``i * OUT``. Returns the additions done."""
    taps[0] = 0
    runs_at[0] = 0
    runs_at[1] = count
    _outputs_from_runs(weight, bias, n_out, events, x, runs_at, taps, 1, out, 0)
    return count * n_out


@njit(cache=True)
def gemm_events(x, rows, n_in, weight, bias, n_out, events, starts, runs_at, taps, out):
    """``x @ weight + bias`` for one sample (``rows`` rows of ``n_in``), nonzero inputs only.

    ``weight`` is the (IN, OUT) matrix, row-major. Returns the additions done.
    """
    additions = 0
    for r in range(rows):
        row = x[r * n_in:(r + 1) * n_in]
        count = list_events(row, 1, n_in, events, starts)
        additions += gemm_listed(row, events, count, weight, bias, n_out, runs_at, taps,
                                 out[r * n_out:(r + 1) * n_out])
    return additions


@njit(cache=True)
def affine(x, scale, shift, out):
    """``x * scale + shift`` with both already broadcast to the sample."""
    for i in range(out.size):
        out[i] = x[i] * scale[i] + shift[i]


@njit(cache=True)
def add(a, b, out):
    """``a + b``, same shapes."""
    for i in range(out.size):
        out[i] = a[i] + b[i]


@njit(cache=True)
def add_broadcast(a, b, a_index, b_index, out):
    """``out[i] = a[a_index[i]] + b[b_index[i]]``: numpy broadcasting as index maps."""
    for i in range(out.size):
        out[i] = a[a_index[i]] + b[b_index[i]]


# The gathers read the value at a source address ``a`` as ``arena[a]`` for a >= 0, else
# ``static_row[~a]``, written out in each loop: a helper taking the arrays costs ~20 ns a
# call (numba counts references to its array arguments), twenty times the read itself.


@njit(cache=True)
def gather(arena, static_row, sources, out):
    """``out[i] = value at sources[i]``: the values, bit for bit."""
    for i in range(out.size):
        a = sources[i]
        out[i] = arena[a] if a >= 0 else static_row[~a]


@njit(cache=True)
def gather_sum(arena, static_row, sources, starts, weights, bias, out):
    """``out[i] = bias[i] + sum of weights[k] * value at sources[k]`` over the terms
    ``starts[i] .. starts[i + 1] - 1``, added in that order, in float32. Empty ``weights``:
    all 1 (no multiplication); empty ``bias``: 0."""
    weighted, biased = weights.size > 0, bias.size > 0
    for i in range(out.size):
        total = bias[i] if biased else np.float32(0.0)
        for k in range(starts[i], starts[i + 1]):
            a = sources[k]
            value = arena[a] if a >= 0 else static_row[~a]
            total += value * weights[k] if weighted else value
        out[i] = total


@njit(cache=True)
def avgpool(x, channels, height, width, kh, kw, sh, sw, ph, pw, out_h, out_w, divisor, out):
    """2-D average pool of one channels-last sample; ``divisor`` (Ho*Wo,) per window.

    Each window is summed in kernel order from its first cell, padding counting as 0, then
    divided: the same float32 operations as :func:`snncompiler.runtime.linear.avgpool2d`.
    """
    for oh in range(out_h):
        for ow in range(out_w):
            base = (oh * out_w + ow) * channels
            total = out[base:base + channels]
            total[:] = 0
            for a in range(kh):
                ih = oh * sh - ph + a
                if ih < 0 or ih >= height:
                    continue
                for b in range(kw):
                    iw = ow * sw - pw + b
                    if 0 <= iw < width:
                        cell = x[(ih * width + iw) * channels:(ih * width + iw + 1) * channels]
                        for c in range(channels):
                            total[c] += cell[c]
            d = divisor[oh * out_w + ow]
            for c in range(channels):
                total[c] = total[c] / d


@njit(cache=True)
def global_avgpool(x, channels, size, channels_last, out):
    """Mean over every axis after the channel axis, summed in order in float32."""
    out[:channels] = 0
    if channels_last:
        for p in range(size):
            for c in range(channels):
                out[c] += x[p * channels + c]
    else:
        for c in range(channels):
            for p in range(size):
                out[c] += x[c * size + p]
    for c in range(channels):
        out[c] = out[c] / np.float32(size)


# --------------------------------------------------------------------------- stateful ops


@njit(cache=True)
def maxpool_step(x, channels, height, width, kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w,
                 running, pooled, best, out):
    """One step of the exact signed max-pool tracker for one channels-last sample.

    ``running`` (H*W*C, float64) is the running input, ``pooled`` (Ho*Wo*C, float64) its
    max pool after the previous step, ``best`` a float64 scratch of C; emits the change of
    the max pool (see pooling.py).
    """
    for i in range(x.size):
        running[i] += x[i]
    cells = running.reshape((height * width, channels))
    pooled2 = pooled.reshape((out_h * out_w, channels))
    out2 = out.reshape((out_h * out_w, channels))
    top = best[:channels]
    for oh in range(out_h):
        for ow in range(out_w):
            first = True
            for a in range(kh):
                ih = oh * sh - ph + a * dh
                if ih < 0 or ih >= height:
                    continue
                for b in range(kw):
                    iw = ow * sw - pw + b * dw
                    if iw < 0 or iw >= width:
                        continue
                    q = ih * width + iw
                    if first:
                        for c in range(channels):
                            top[c] = cells[q, c]
                        first = False
                    else:
                        for c in range(channels):
                            value = cells[q, c]
                            top[c] = value if value > top[c] else top[c]
            o = oh * out_w + ow
            for c in range(channels):
                out2[o, c] = top[c] - pooled2[o, c]
                pooled2[o, c] = top[c]


@njit(cache=True)
def maxpool_spikes_step(memory, channels, height, width, kh, kw, sh, sw, ph, pw, dh, dw,
                        out_h, out_w, theta, pooled, cells, out):
    """The max-pool tracker on the spikes of an SNM layer, from its spike counts.

    The running input of a max pool that reads an SNM layer is ``theta * M``, M the net
    spike count (``memory``), so its max pool is ``theta * max M`` (theta > 0) and the
    tracker's output ``theta * (max M - the previous max M)``: integers, exact, with no
    running sum to keep. This gives the same bits as :func:`maxpool_step` on the spikes
    while a spike value ``k * theta`` is exact (bursts of at most 2) and counts stay below
    2**24.

    Args:
        memory: (H*W*C,) int32 spike counts of the SNM layer, channels-last.
        theta: (C,) the layer's thresholds.
        pooled: (Ho*Wo*C,) float32 max count after the previous step, updated in place.
        cells: int64 scratch of KH*KW (the window's offsets).
    """
    vector_channels = channels - channels % 8
    for oh in range(out_h):
        for ow in range(out_w):
            taps = 0
            for a in range(kh):
                ih = oh * sh - ph + a * dh
                if 0 <= ih < height:
                    for b in range(kw):
                        iw = ow * sw - pw + b * dw
                        if 0 <= iw < width:
                            cells[taps] = (ih * width + iw) * channels
                            taps += 1
            base = (oh * out_w + ow) * channels
            for c in range(0, vector_channels, 8):
                best = load8_float(memory, cells[0] + c)
                for k in range(1, taps):
                    best = max8(best, load8_float(memory, cells[k] + c))
                store8(out, base + c, mul8(sub8(best, load8(pooled, base + c)), theta, c))
                store8(pooled, base + c, best)
            for c in range(vector_channels, channels):
                top = memory[cells[0] + c]
                for k in range(1, taps):
                    top = max(top, memory[cells[k] + c])
                out[base + c] = (np.float32(top) - pooled[base + c]) * theta[c]
                pooled[base + c] = np.float32(top)


@njit(cache=True)
def snm_step(z, theta, theta_neg_code, max_spikes, membrane, memory, out, count=True):
    """One step of SNM neurons for one sample (the firing rule of neurons.py).

    Args:
        z: Input current, flat.
        theta: The threshold of every neuron (its channel's).
        membrane: float32, memory: int32, both like ``z``, updated in place.
        out: Receives the weighted spikes.

    Returns:
        The number of spikes sent (a burst of k counts k); 0 for one-spike neurons with
        ``count`` false (their caller counts the nonzero outputs as it lists them).
    """
    # The neuron loop is selects only, so that it vectorises (LLVM checks at run time that
    # its arrays do not overlap; in a function of its own, as LLVM gives up on a larger
    # one). The count is a float, as numba widens int32 arithmetic to int64, which halves
    # the vector width; ``out`` holds it until the spikes are counted.
    band = np.float32(0.0) if theta_neg_code == 0 else np.float32(1.0)
    _snm_counts(z, theta, band, np.float32(max_spikes), theta_neg_code != 2, membrane,
                memory, out)
    if count or max_spikes != 1:
        # In a loop of its own: a reduction would keep the neuron loop from vectorising.
        return count_and_weigh(out, theta, 1, out.size, 1)  # a theta per neuron
    for i in range(out.size):
        out[i] *= theta[i]
    return 0


@njit(cache=True, error_model="numpy")
def _snm_counts(z, theta, band, most, allow_negative, membrane, memory, out):
    # snm_step's neuron loop: the signed spike count of every neuron into ``out``.
    for i in range(z.size):
        th = theta[i]
        v = membrane[i] + z[i]
        sent = signed_spikes(v, th, band, most, np.float32(memory[i]), allow_negative)
        membrane[i] = v - sent * th
        memory[i] += np.int32(sent)
        out[i] = sent


# --------------------------------------------------------------------------- executor


@njit(cache=True)
def _source(space, offset, size, arena, static_row):
    if space == 0:
        return arena[offset:offset + size]
    return static_row[offset:offset + size]


@njit(cache=True, inline="always")
def _optional(array, offset, size):
    """``array[offset:offset + size]``, or an empty slice when ``offset`` is -1 (none)."""
    return array[offset:offset + size] if offset >= 0 else array[:0]


@njit(cache=True)
def _analog(op, arena, static_row, index, dparams, dstate, line, elapsed):
    """The ANALOG row: an analog function of the running means (analog.analog_step)."""
    size = op[SIZE]
    p = op[P:]
    a = _source(op[IN0_SPACE], op[IN0], p[ANALOG_IN0_SIZE], arena, static_row)
    b = _source(op[IN1_SPACE], op[IN1], p[ANALOG_IN1_SIZE], arena, static_row)
    broadcast = _optional(index, p[ANALOG_BROADCAST], 2 * size)
    constants = dparams[p[ANALOG_CONSTANTS]:p[ANALOG_CONSTANTS] + 3]
    analog_step(p[ANALOG_FUNCTION], a, b, _optional(dstate, p[ANALOG_IN0_SUMS], a.size),
                _optional(dstate, p[ANALOG_IN1_SUMS], b.size), broadcast[:size],
                broadcast[size:], _optional(index, p[ANALOG_LINES], size), p[ANALOG_LENGTH],
                constants[0], constants[1], constants[2], p[ANALOG_SIZE], elapsed,
                dstate[p[ANALOG_PREVIOUS]:p[ANALOG_PREVIOUS] + size], line,
                arena[op[OUT]:op[OUT] + size])
    return 0


@njit(cache=True)
def _track(op, arena, static_row, dparams, istate, dstate, listed_events, listed_starts,
           param_row, elapsed):
    """The TRACK row: tracking neurons (snm_clip, snm_leaky); returns the spikes sent."""
    # In a function of its own: written inside _execute, the neuron loop was no longer
    # vectorised (about 20 ns a neuron instead of 1 on EfficientNet's layers).
    size = op[SIZE]
    out = arena[op[OUT]:op[OUT] + size]
    p = op[P:]
    z = _source(op[IN0_SPACE], op[IN0], size, arena, static_row)
    channels = p[TRACK_CHANNELS]
    row = param_row * channels
    spikes = tracking_step(
        z, dparams[p[TRACK_THETA] + row:p[TRACK_THETA] + row + channels],
        dparams[p[TRACK_V0] + row:p[TRACK_V0] + row + channels],
        dparams[p[TRACK_SLOPE]:p[TRACK_SLOPE] + channels], dparams[p[TRACK_UPPER]],
        elapsed, p[TRACK_THETA_NEG], p[TRACK_MAX_SPIKES], p[TRACK_INNER],
        dstate[p[TRACK_RUNNING]:p[TRACK_RUNNING] + size],
        istate[p[TRACK_MEMORY]:p[TRACK_MEMORY] + size], out)
    if p[TRACK_LIST_EVENTS] >= 0:
        pixels = p[TRACK_LIST_PIXELS]
        list_events(out, pixels, size // pixels, listed_events[p[TRACK_LIST_EVENTS]:],
                    listed_starts[p[TRACK_LIST_STARTS]:])
    return spikes


@njit(cache=True)
def _execute(op, arena, static_row, params, dparams, index, every, fstate, istate, dstate,
             acc, events, starts, runs_at, taps, best, line, listed_events, listed_starts,
             param_row, elapsed, readout_row, record_row):
    """Runs one op row for one sample and step; returns its additions or spikes (or 0)."""
    code = op[OPCODE]
    size = op[SIZE]
    out = arena[op[OUT]:op[OUT] + size]
    p = op[P:]
    if code == CONV or code == CONV_GROUPED:
        # p: C, H, W, O, KH, KW, sh, sw, ph, pw, dh, dw, group, Ho, Wo, weight, bias,
        # offset of the input's event list and of its starts (-1: list the input here),
        # nonzero entries from which the dense path is taken
        channels, height, width, out_channels = p[0], p[1], p[2], p[3]
        x = _source(op[IN0_SPACE], op[IN0], channels * height * width, arena, static_row)
        weight = params[p[15]:p[15] + channels * p[4] * p[5] * out_channels // p[12]]
        bias = params[p[16]:p[16] + out_channels]
        if code == CONV:
            if p[17] < 0:
                return conv_events(x, channels, height, width, weight, bias, out_channels,
                                   p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[13],
                                   p[14], events, starts, runs_at, taps, every, p[19], out)
            # The input's neuron layer listed its spikes as it sent them (another reader
            # may use the list too: it is read, never written here).
            if listed_starts[p[18] + height * width] >= p[19]:
                return conv_dense(x, channels, height, width, weight, bias, out_channels,
                                  p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[13],
                                  p[14], starts, runs_at, taps, every, out)
            events, starts = listed_events[p[17]:], listed_starts[p[18]:]
            return conv_listed(x, events, starts, channels, height, width, weight, bias,
                               out_channels, p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11],
                               p[13], p[14], runs_at, taps, out)
        if is_depthwise(channels, out_channels, p[12]):
            return conv_depthwise(x, channels, height, width, weight, bias, p[4], p[5], p[6],
                                  p[7], p[8], p[9], p[10], p[11], p[13], p[14], starts, taps,
                                  out)
        return conv_grouped(x, channels, height, width, weight, bias, out_channels, p[4],
                            p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13], p[14],
                            acc, out)
    if code == GEMM:
        # p: rows, IN, OUT, weight, bias, offset of the input's event list and of its
        # starts (-1: list the input here)
        rows, n_in, n_out = p[0], p[1], p[2]
        weight = params[p[3]:p[3] + n_in * n_out]
        bias = params[p[4]:p[4] + n_out]
        x = _source(op[IN0_SPACE], op[IN0], rows * n_in, arena, static_row)
        if p[5] >= 0:
            count = listed_starts[p[6] + 1] - listed_starts[p[6]]
            return gemm_listed(x, listed_events[p[5]:], count, weight, bias, n_out, runs_at,
                               taps, out)
        return gemm_events(x, rows, n_in, weight, bias, n_out, events, starts, runs_at,
                           taps, out)
    if code == SNM:
        # p: theta (one row of every neuron's per calibrated T), theta_neg code,
        # max spikes, membrane, memory, offset of the event list to write and of its
        # starts (-1: none), pixels of the list
        z = _source(op[IN0_SPACE], op[IN0], size, arena, static_row)
        theta = params[p[0] + param_row * size:p[0] + (param_row + 1) * size]
        listed = p[5] >= 0
        spikes = snm_step(z, theta, p[1], p[2], fstate[p[3]:p[3] + size],
                          istate[p[4]:p[4] + size], out, not listed or p[2] != 1)
        if listed:
            count = list_events(out, p[7], size // p[7], listed_events[p[5]:],
                                listed_starts[p[6]:])
            if p[2] == 1:  # one spike per nonzero output
                return count
        return spikes
    if code == TRACK:
        return _track(op, arena, static_row, dparams, istate, dstate, listed_events,
                      listed_starts, param_row, elapsed)
    if code == MAXPOOL:
        # p: C, H, W, KH, KW, sh, sw, ph, pw, dh, dw, Ho, Wo, running, pooled
        channels, height, width = p[0], p[1], p[2]
        x = _source(op[IN0_SPACE], op[IN0], channels * height * width, arena, static_row)
        maxpool_step(x, channels, height, width, p[3], p[4], p[5], p[6], p[7], p[8], p[9],
                     p[10], p[11], p[12], dstate[p[13]:p[13] + x.size],
                     dstate[p[14]:p[14] + size], best, out)
        return 0
    if code == MAXPOOL_SPIKES:
        # p: C, H, W, KH, KW, sh, sw, ph, pw, dh, dw, Ho, Wo, spike counts (istate),
        # pooled counts (fstate), theta (rows, C)
        channels, height, width = p[0], p[1], p[2]
        theta = params[p[15] + param_row * channels:p[15] + (param_row + 1) * channels]
        maxpool_spikes_step(istate[p[13]:p[13] + channels * height * width], channels, height,
                            width, p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11],
                            p[12], theta, fstate[p[14]:p[14] + size], taps, out)
        return 0
    if code == ADD:
        # p: size of a, size of b, index maps (-1: same shapes)
        a = _source(op[IN0_SPACE], op[IN0], p[0], arena, static_row)
        b = _source(op[IN1_SPACE], op[IN1], p[1], arena, static_row)
        if p[2] < 0:
            add(a, b, out)
        else:
            add_broadcast(a, b, index[p[2]:p[2] + size], index[p[2] + size:p[2] + 2 * size],
                          out)
        return 0
    if code == AFFINE:
        # p: scale, shift (broadcast to the sample)
        x = _source(op[IN0_SPACE], op[IN0], size, arena, static_row)
        affine(x, params[p[0]:p[0] + size], params[p[1]:p[1] + size], out)
        return 0
    if code == AVGPOOL:
        # p: C, H, W, KH, KW, sh, sw, ph, pw, Ho, Wo, divisor
        channels, height, width = p[0], p[1], p[2]
        x = _source(op[IN0_SPACE], op[IN0], channels * height * width, arena, static_row)
        avgpool(x, channels, height, width, p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10],
                params[p[11]:p[11] + p[9] * p[10]], out)
        return 0
    if code == GLOBAL_AVGPOOL:
        # p: C, S, channels last
        x = _source(op[IN0_SPACE], op[IN0], p[0] * p[1], arena, static_row)
        global_avgpool(x, p[0], p[1], p[2] != 0, out)
        return 0
    if code == WEIGHTED_GATHER:
        terms = p[GATHER_TERMS]
        sources = index[p[GATHER_SOURCES]:p[GATHER_SOURCES] + terms]
        if p[GATHER_STARTS] < 0:
            gather(arena, static_row, sources, out)
        else:
            gather_sum(arena, static_row, sources,
                       index[p[GATHER_STARTS]:p[GATHER_STARTS] + size + 1],
                       _optional(params, p[GATHER_WEIGHTS], terms),
                       _optional(params, p[GATHER_BIAS], size), out)
        return 0
    if code == ANALOG:
        return _analog(op, arena, static_row, index, dparams, dstate, line, elapsed)
    if code == READOUT:
        # p: running sums (dstate), column. The running sum of a graph output (float64,
        # in step order) and its mean so far.
        x = _source(op[IN0_SPACE], op[IN0], size, arena, static_row)
        sums = dstate[p[0]:p[0] + size]
        for i in range(size):
            sums[i] += x[i]
            readout_row[p[1] + i] = sums[i] / elapsed
        return 0
    if code == RECORD:
        # p: column
        x = _source(op[IN0_SPACE], op[IN0], size, arena, static_row)
        record_row[p[0]:p[0] + size] = x
        return 0
    return 0


@njit(cache=True, parallel=True)
def run_steps(ops, params, dparams, index, every, static, fstate, istate, dstate, param_row,
              t0, readout, record, arena, acc, events, starts, runs_at, taps, best, line,
              listed_events, listed_starts, counts):
    """Runs every op of ``ops`` for ``readout.shape[0]`` steps on every sample.

    Samples are split into ``arena.shape[0]`` contiguous blocks; each block owns its scratch
    rows and the state rows of its samples, so blocks are independent and the result does
    not depend on how many threads run them.

    Args:
        params: float32 and dparams: float64 parameters; index: int64 index maps.
        every: uint32 0, 1, 2, ...: the event list of a dense input (see conv_events).
        static: (N, S) static rows; fstate, istate, dstate: (N, ...) state rows.
        param_row: Which calibrated row of the neuron parameters to use.
        t0: Steps simulated before this call (the readout divides by t0 + t + 1).
        readout: (Tc, N, R) receives the readout of every graph output after every step.
        record: (Tc, N, Q) receives the ops' outputs when ``ops`` holds RECORD rows.
        arena, acc, events, starts, runs_at, taps, best, line: (blocks, ...) scratch.
        listed_events, listed_starts: (blocks, ...) the event lists that neuron layers write
            for the convs and gemms that read their spikes (each list at its own offsets;
            see :func:`list_events`).
        counts: (N, n_ops) int64; each op adds what it counts: additions done by ``conv``
            and ``gemm``, spikes sent by the neuron layers (``snm``, ``snm_clip``,
            ``snm_leaky``).
    """
    steps, batch = readout.shape[0], readout.shape[1]
    blocks = arena.shape[0]
    for block in prange(blocks):
        start = block * batch // blocks
        stop = (block + 1) * batch // blocks
        for n in range(start, stop):
            for t in range(steps):
                elapsed = np.float64(t0 + t + 1)
                for k in range(ops.shape[0]):
                    counts[n, k] += _execute(
                        ops[k], arena[block], static[n], params, dparams, index, every,
                        fstate[n], istate[n], dstate[n], acc[block], events[block],
                        starts[block], runs_at[block], taps[block], best[block], line[block],
                        listed_events[block], listed_starts[block], param_row, elapsed,
                        readout[t, n], record[t, n])
