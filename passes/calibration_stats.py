"""Bounded calibration statistics: per-channel histograms of activations, built in one pass.

DNI needs, for every channel of every activation, the distribution of the values the ANN
produces on calibration data. Keeping all activations is out of the question (a ResNet on a
few thousand images holds tens of gigabytes of them), so each tensor gets a
:class:`ChannelHistogram` whose memory is ``O(channels * bins)`` however many images pass
through it, and :func:`collect_activation_stats` feeds it batch by batch from onnxruntime.

The per-value work is done by the Numba kernels of :mod:`.histogram_kernels`, on the NCHW
tensors as onnxruntime returns them; this module checks, grows ranges and spreads blocks of
channels over threads. onnxruntime runs one batch ahead of the histograms, in a thread of
its own, so the two overlap.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from tqdm import tqdm

from snncompiler.errors import CalibrationError

from . import histogram_kernels as kernels

# Right shifts of int64 by 63 or more bits are undefined; shifting by 62 already sends every
# bin index below 2**62 to bin 0, which is what a huge range growth means anyway.
_MAX_SHIFT = 62

# Values per kernel call on a block of channels: below this, handing a block to another
# thread costs about as much as it saves.
_MIN_BLOCK_VALUES = 1 << 16

# bin_channels counts a call's values per bin in int32.
_MAX_KERNEL_VALUES = 2**31 - 1

# onnxruntime raises its own exception types (not subclasses of RuntimeError) for bad feeds.
_ORT_ERRORS = (ort_state.Fail, ort_state.InvalidArgument, ort_state.RuntimeException)


class ChannelHistogram:
    """Streaming histogram of the positive values of each channel of an activation tensor.

    Channel axis is 1: ``(N, C, ...)`` tensors have C channels, and for ``(N, F)`` tensors
    (after Gemm/MatMul) every feature is a channel. Only positive values are binned, since
    a ReLU neuron sends nothing for the rest; they are still counted in ``n_total`` because
    they weigh in expectations over all values.

    Channel c has ``bins`` bins of width ``upper[c] / bins`` covering ``(0, upper[c]]``;
    bin i is the right-closed interval ``(i * w, (i + 1) * w]``, so a channel's maximum sits
    in the last bin and nothing positive falls below bin 0. Right-closed bins are what keep
    range growth exact (see :meth:`update`).

    Besides counts, every bin keeps the sum of its values, so :meth:`bin_means` gives the
    mean of the values in each bin. The DNI objective is evaluated at those means: when a
    bin holds one distinct value (e.g. activations that are already multiples of
    ``theta / T``), the mean is that value and the objective is exact, which bin centres
    would not be. This doubles the memory, which stays ``O(channels * bins)``.

    Attributes:
        counts: ``(C, bins)`` int64, positive values per bin.
        sums: ``(C, bins)`` float64, sum of the values in each bin.
        upper: ``(C,)`` float64, upper edge of the last bin; 0 until the channel has seen a
            positive value.
        max: ``(C,)`` float64, exact maximum of the positive values (0 if none).
        n_positive: ``(C,)`` int64, number of positive values.
        n_total: ``(C,)`` int64, number of values, positive or not.
    """

    def __init__(self, channels: int, bins: int = 2048):
        """Creates an empty histogram.

        Args:
            channels: Number of channels (size of axis 1 of the tensors to come).
            bins: Bins per channel.
        """
        if channels < 1 or bins < 1:
            raise ValueError(f"channels and bins must be positive, got {channels}, {bins}")
        self.counts = np.zeros((channels, bins), dtype=np.int64)
        self.sums = np.zeros((channels, bins), dtype=np.float64)
        self.upper = np.zeros(channels, dtype=np.float64)
        self.max = np.zeros(channels, dtype=np.float64)
        self.n_positive = np.zeros(channels, dtype=np.int64)
        self.n_total = np.zeros(channels, dtype=np.int64)

    @property
    def channels(self) -> int:
        """Number of channels C."""
        return self.counts.shape[0]

    @property
    def bins(self) -> int:
        """Number of bins per channel."""
        return self.counts.shape[1]

    @property
    def bin_width(self) -> np.ndarray:
        """``(C,)`` bin width of every channel (0 for channels without positive values)."""
        return self.upper / self.bins

    @property
    def sum_positive(self) -> np.ndarray:
        """``(C,)`` sum of the positive values: the sum of the bins' sums."""
        return self.sums.sum(axis=1)

    @property
    def mean_positive(self) -> np.ndarray:
        """``(C,)`` mean of the positive values (0 for channels without any)."""
        return self.sum_positive / np.maximum(self.n_positive, 1)

    def update(
        self, values: np.ndarray, pool: Executor | None = None, workers: int = 1
    ) -> None:
        """Adds one batch of activations.

        A channel's range starts at the maximum of the first batch that holds a positive
        value for it. When a later batch exceeds ``upper[c]``, the range grows by the
        smallest power of two ``2**g`` that covers the new maximum, and groups of ``2**g``
        neighbouring bins merge into one. Because bins are right-closed and the factor is a
        power of two, old bin i lies entirely inside new bin ``i >> g``, so merged counts
        equal what binning all values afresh at the new range would give: no count ever
        leaves the interval it belongs to. (Multiplying by a power of two is exact in
        floating point, so this holds bit for bit, not only on paper.)

        The result is the same bit for bit however many workers share the work. A batch
        with a NaN or an infinity changes nothing.

        Args:
            values: Activations of shape ``(N, C, ...)``; any float dtype.
            pool: Threads to spread blocks of channels over (the kernels release the GIL).
            workers: Blocks of channels to cut the work into, at most: one runs in this
                thread, the others in ``pool``, needed when ``workers > 1``.

        Raises:
            ValueError: Wrong rank or channel count.
            CalibrationError: The batch holds NaN or infinite values.
        """
        x = _channels_view(values, self.channels)
        if x is None:
            return
        blocks = _channel_blocks(self.channels, x.shape[0] * x.shape[2],
                                 workers if pool is not None else 1)
        maxima = _maxima(x, pool, blocks)
        self.extend(maxima, x.shape[0] * x.shape[2])
        # Bin ceil(x / w) - 1 of the right-closed bins, computed as ceil((x / upper) * bins)
        # - 1 in float32: x / upper is 1 exactly at the maximum (which so lands in the last
        # bin), and a later growth of upper by 2**g scales (x / upper) * bins by exactly
        # 2**-g, so values binned before and after a growth agree bit for bit.
        for part in _parts(x):
            _for_blocks(pool, blocks, lambda lo, hi, part=part: kernels.bin_channels(
                part, lo, hi, self.upper, maxima, self.counts, self.sums, self.n_positive))

    def extend(self, maxima: np.ndarray, values: int) -> None:
        """The first half of :meth:`update`: counts ``values`` more values (``n_total``)
        whose per-channel maxima, clamped at 0, are ``maxima`` (:func:`batch_maxima`), and
        grows the ranges to hold them. :meth:`add_binned` adds their bins.

        A batch cut into shards elsewhere is merged exactly by calling, batch after batch in
        the original order, ``extend`` and then ``add_binned`` with the batch's
        :func:`bin_batch` at the ``upper`` that ``extend`` left: the same operations, in
        the same order, as :meth:`update`.
        """
        batch_max = np.asarray(maxima, dtype=np.float32).astype(np.float64)
        self.n_total += values
        self.max = np.maximum(self.max, batch_max)
        self._grow(batch_max)

    def add_binned(self, parts: list[BinnedPart]) -> None:
        """The second half of :meth:`update`: adds a batch's bins from :func:`bin_batch`,
        part after part, as the kernel adds each call's bins (the same float additions)."""
        for part in parts:
            self.counts.reshape(-1)[part.index] += part.counts
            self.sums.reshape(-1)[part.index] += part.sums
            self.n_positive += part.n_positive

    def _grow(self, batch_max: np.ndarray) -> None:
        """Widens the ranges of the channels whose new maximum exceeds their upper edge."""
        upper, rows, shifts = grown_upper(self.upper, batch_max)
        self.upper[:] = upper
        if rows.size:
            kernels.merge_bins(self.counts, self.sums, rows, np.minimum(shifts, _MAX_SHIFT))

    def bin_centers(self) -> np.ndarray:
        """``(C, bins)`` centre of every bin (all 0 for channels without positive values)."""
        return (np.arange(self.bins) + 0.5)[None, :] * self.bin_width[:, None]

    def bin_means(self) -> np.ndarray:
        """``(C, bins)`` mean of the values in every bin; the centre for empty bins."""
        means = self.bin_centers()
        full = self.counts > 0
        means[full] = self.sums[full] / self.counts[full]
        return means

    def percentile(self, q: float) -> np.ndarray:
        """Per-channel percentile of the positive values.

        ``q = 100`` gives the exact maximum. Otherwise the result is the inverse of the
        histogram's CDF with values spread evenly inside their bin: it lies in the bin of
        the ``ceil(q / 100 * n)``-th smallest positive value, so it is within one bin width
        of numpy's ``method="inverted_cdf"`` percentile of the same values.

        Args:
            q: Percentile in [0, 100].

        Returns:
            ``(C,)`` float64; 0 for channels without positive values.
        """
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {q}")
        if q == 100:
            return self.max.copy()
        cumulative = np.cumsum(self.counts, axis=1)
        # A rank of at least a sliver above 0 makes q = 0 land in the first non-empty bin.
        rank = np.maximum(q / 100.0 * self.n_positive, 1e-9)
        bin_index = np.minimum((cumulative < rank[:, None]).sum(axis=1), self.bins - 1)
        rows = np.arange(self.channels)
        below = np.where(bin_index > 0, cumulative[rows, bin_index - 1], 0)
        inside = self.counts[rows, bin_index]
        fraction = np.clip((rank - below) / np.maximum(inside, 1), 0.0, 1.0)
        value = (bin_index + fraction) * self.bin_width
        value = np.minimum(value, self.max)
        return np.where(self.n_positive > 0, value, 0.0)

    def layer(self) -> ChannelHistogram:
        """Merges all channels into a one-channel histogram, for layer-wise thresholds.

        Channels have different ranges, so their bins are re-binned onto a common range:
        the largest upper edge, with the same number of bins. A source bin cannot be split
        without inventing fractional counts, so each moves whole into the common bin that
        holds its centre. Common bins are at least as wide as any source bin, so a value
        ends at most half a common bin outside its bin (percentiles are within 1.5 common
        bins); counts, totals, the maximum and the per-bin sums (so the bin means, which
        the DNI objective uses) stay exact.
        """
        merged = ChannelHistogram(1, self.bins)
        merged.n_total[0] = self.n_total.sum()
        merged.n_positive[0] = self.n_positive.sum()
        merged.max[0] = self.max.max()
        upper = self.upper.max()
        if upper == 0:
            return merged
        merged.upper[0] = upper
        target = np.ceil(self.bin_centers() * (self.bins / upper)).astype(np.int64) - 1
        target = np.clip(target, 0, self.bins - 1).ravel()
        counts = np.bincount(target, weights=self.counts.ravel(), minlength=self.bins)
        merged.counts[0] = np.rint(counts).astype(np.int64)
        merged.sums[0] = np.bincount(target, weights=self.sums.ravel(), minlength=self.bins)
        return merged


class BinnedPart(NamedTuple):
    """One kernel call's bins of a batch (:func:`bin_batch`), sparse: ``counts`` and
    ``sums`` of the non-empty bins at flat indices ``index`` of the ``(C, bins)`` arrays."""

    index: np.ndarray
    counts: np.ndarray
    sums: np.ndarray
    n_positive: np.ndarray


def grown_upper(upper: np.ndarray, batch_max: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The range growth of :meth:`ChannelHistogram.update`, without the bins.

    Returns:
        The new upper edges, the channels whose bins merge and the power of two ``g``
        (at least 1) each grows by. A channel's first positive maximum becomes its upper
        edge as is; a later one above it doubles the edge ``g`` times, the fewest that
        cover it.
    """
    upper = np.array(upper, dtype=np.float64)
    grow = batch_max > upper
    none = np.zeros(0, dtype=np.int64)
    if not grow.any():
        return upper, none, none
    fresh = grow & (upper == 0)
    upper[fresh] = batch_max[fresh]
    grow &= ~fresh
    if not grow.any():
        return upper, none, none
    old = upper[grow]
    shift = np.maximum(np.ceil(np.log2(batch_max[grow] / old)), 1).astype(np.int64)
    # log2 may round down by one; ldexp is exact, so this check settles it.
    while True:
        short = np.ldexp(old, shift) < batch_max[grow]
        if not short.any():
            break
        shift[short] += 1
    upper[grow] = np.ldexp(old, shift)
    return upper, np.flatnonzero(grow), shift


def batch_maxima(values: np.ndarray, channels: int) -> tuple[np.ndarray, int]:
    """``(C,)`` float32 ``max(max(x[:, c]), 0)`` of a batch and its number of values: what
    :meth:`ChannelHistogram.extend` takes.

    Raises:
        ValueError: Wrong rank or channel count.
        CalibrationError: The batch holds NaN or infinite values.
    """
    x = _channels_view(values, channels)
    if x is None:
        return np.zeros(channels, dtype=np.float32), 0
    return _maxima(x, None, [(0, channels)]), x.shape[0] * x.shape[2]


def bin_batch(values: np.ndarray, upper: np.ndarray, bins: int,
              maxima: np.ndarray | None = None) -> list[BinnedPart]:
    """A batch's bins at the upper edges ``upper`` (which must hold its maxima), as
    :meth:`ChannelHistogram.update` bins it at that range: one part per kernel call, each
    counted from 0, for :meth:`ChannelHistogram.add_binned`.

    Args:
        values: The batch's activation, ``(N, C, ...)``.
        upper: ``(C,)`` the histogram's upper edges after :meth:`ChannelHistogram.extend`
            with this batch's maxima.
        bins: Bins per channel.
        maxima: The batch's :func:`batch_maxima` as computed before (elsewhere), if any: a
            batch whose maxima differ now (onnxruntime computed another activation) is
            refused rather than binned at a range computed for other values.

    Raises:
        ValueError: Wrong rank or channel count.
        CalibrationError: The batch holds NaN or infinite values, or other maxima than
            ``maxima``.
    """
    channels = len(upper)
    upper = np.ascontiguousarray(upper, dtype=np.float64)
    x = _channels_view(values, channels)
    if x is None:
        return []
    found = _maxima(x, None, [(0, channels)])
    if maxima is not None and not np.array_equal(found, maxima):
        raise CalibrationError("the activation differs from the one its range was computed "
                               "from (do the workers run another onnxruntime or CPU?)")
    maxima = found
    parts = []
    for part in _parts(x):
        counts = np.zeros((channels, bins), dtype=np.int64)
        sums = np.zeros((channels, bins), dtype=np.float64)
        n_positive = np.zeros(channels, dtype=np.int64)
        kernels.bin_channels(part, 0, channels, upper, maxima, counts, sums, n_positive)
        index = np.flatnonzero(counts)
        parts.append(BinnedPart(index, counts.reshape(-1)[index], sums.reshape(-1)[index],
                                n_positive))
    return parts


def _channels_view(values: np.ndarray, channels: int) -> np.ndarray | None:
    """``values`` as a float32 ``(N, C, L)`` view (or copy), None when it holds no value.

    float32 is what onnxruntime produces and the runtime computes in. (N, C, L) is a view
    of a C-contiguous (N, C, ...) tensor: the kernels read NCHW in place.
    """
    values = np.asarray(values)
    if values.ndim < 2 or values.shape[1] != channels:
        raise ValueError(
            f"expected an activation of shape (N, {channels}, ...), got {values.shape}"
        )
    images, length = values.shape[0], math.prod(values.shape[2:])
    if images * length == 0:
        return None
    return np.ascontiguousarray(values, dtype=np.float32).reshape(images, channels, length)


def _maxima(x: np.ndarray, pool: Executor | None, blocks: list[tuple]) -> np.ndarray:
    """``(C,)`` float32 per-channel maxima of ``(N, C, L)`` ``x``, clamped at 0.

    Raises:
        CalibrationError: ``x`` holds NaN or infinite values.
    """
    channels = x.shape[1]
    maxima = np.empty(channels, dtype=np.int32)
    finite = np.empty(channels, dtype=np.bool_)
    bits = x.view(np.int32)
    _for_blocks(pool, blocks, lambda lo, hi: kernels.channel_max(bits, lo, hi, maxima, finite))
    if not finite.all():
        raise CalibrationError(
            "activation holds NaN or infinite values; check the calibration data and "
            "its preprocessing"
        )
    return maxima.view(np.float32)


def _parts(x: np.ndarray):
    """``x`` cut along the images into the parts that one kernel call bins (``bin_channels``
    counts a call's values per bin in int32)."""
    step = max(1, _MAX_KERNEL_VALUES // x.shape[2])
    for start in range(0, x.shape[0], step):
        yield x[start : start + step]


def _channel_blocks(channels: int, per_channel: int, workers: int) -> list[tuple]:
    """Contiguous channel ranges ``(lo, hi)``, at most ``workers``, none too small."""
    count = max(1, min(workers, channels, channels * per_channel // _MIN_BLOCK_VALUES))
    edges = [channels * i // count for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _for_blocks(pool: Executor | None, blocks: list[tuple], call) -> None:
    """``call(lo, hi)`` for every block: the first in this thread, the others in ``pool``."""
    futures = [pool.submit(call, lo, hi) for lo, hi in blocks[1:]] if pool is not None else []
    try:
        call(*blocks[0])
    finally:
        # Wait for every block, even if one failed: none may still write after we return.
        errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error


def collect_activation_stats(
    model: onnx.ModelProto,
    tensor_names: list[str],
    batches: Iterable[dict[str, np.ndarray]],
    *,
    bins: int = 2048,
    progress: bool = True,
    total: int | None = None,
    threads: int | None = None,
) -> dict[str, ChannelHistogram]:
    """Runs the ANN on calibration batches and histograms the named tensors.

    The model is copied and every requested tensor is added as an extra graph output (with
    its ``value_info`` when the model has one, else with only a name and FLOAT type), then
    onnxruntime runs it on the CPU one batch at a time. Each batch's outputs update the
    histograms and are dropped before the next batch, so memory does not grow with the
    number of images. The model given is not modified.

    A requested tensor that a Relu reads is fetched as that Relu's output: its positive
    values are the input's, bit for bit, and the rest (zeros instead of negatives) are only
    counted, so the histogram is the same, while onnxruntime keeps its Conv+Relu fusion,
    which exposing the Conv output would prevent. (A -inf in such a tensor is seen as 0, not
    refused; NaN and +inf still are.)

    Args:
        model: The ANN, runnable by onnxruntime.
        tensor_names: Tensors to histogram (for DNI, the inputs of every Relu).
        batches: Feeds ``{input_name: array}``, each holding a batch of images.
        bins: Bins per channel.
        progress: Show a tqdm progress bar counting images.
        total: Number of images, for the progress bar (optional).
        threads: onnxruntime's intra-op threads, and the threads that share the histogram
            work (besides one that runs onnxruntime a batch ahead of them); None: the
            onnxruntime default, and one per CPU. The histograms do not depend on it.

    Returns:
        Tensor name -> histogram, in the order of ``tensor_names``.

    Raises:
        CalibrationError: No batches, a tensor that is not in the graph, feed names that do
            not match the model's inputs, feeds of the wrong shape, or non-finite
            activations.
    """
    names = list(dict.fromkeys(tensor_names))
    if not names:
        return {}
    activations = ActivationSession(model, names, threads)
    session, fetched, source = activations.session, activations.fetched, activations.source
    inputs, allowed = activations.inputs, activations.allowed

    hists: dict[str, ChannelHistogram] = {}
    batch_count = 0
    # One thread runs onnxruntime a batch ahead, `workers - 1` more share the histograms
    # with this one.
    workers = threads or _cpu_count()
    with (
        ThreadPoolExecutor(1, thread_name_prefix="calibration-onnxruntime") as ahead,
        ThreadPoolExecutor(workers - 1, thread_name_prefix="calibration-histograms")
        if workers > 1 else contextlib.nullcontext() as pool,
        tqdm(total=total, desc="calibrating", unit="images", disable=not progress) as bar,
    ):
        for number, feed, outputs in _run_ahead(ahead, session, fetched, batches, inputs,
                                                allowed):
            images = int(feed[inputs[0].name].shape[0]) if inputs else 0
            values = dict(zip(fetched, outputs))
            for name in names:
                tensor = values[source[name]] if name in source else feed[name]
                if name not in hists:
                    hists[name] = ChannelHistogram(channels_of(name, tensor), bins)
                try:
                    hists[name].update(tensor, pool, workers)
                except (ValueError, CalibrationError) as err:
                    raise CalibrationError(f"tensor {name!r}, batch {number}: {err}") from err
            # Drop this batch's arrays before fetching the next one.
            del feed, outputs, values, tensor
            batch_count += 1
            bar.update(images)
    if batch_count == 0:
        raise CalibrationError("calibration data holds no images: the batch iterator was empty")
    return hists


def channels_of(name: str, tensor: np.ndarray) -> int:
    """The channels of activation ``name`` (axis 1), from its first batch.

    Raises:
        CalibrationError: The tensor has no channel axis.
    """
    if tensor.ndim < 2:
        raise CalibrationError(
            f"tensor {name!r} has shape {tensor.shape}; calibration needs "
            "(N, C, ...) with channels on axis 1"
        )
    return tensor.shape[1]


class ActivationSession:
    """onnxruntime on a copy of ``model`` that also outputs the tensors to histogram.

    A requested tensor that a Relu reads is fetched as that Relu's output (see
    :func:`collect_activation_stats`); one that is a graph input comes from the feed.

    Raises:
        CalibrationError: A tensor that is not in the graph, or a model that onnxruntime
            cannot load.
    """

    def __init__(self, model: onnx.ModelProto, tensor_names: list[str],
                 threads: int | None = None):
        self.names = list(dict.fromkeys(tensor_names))
        graph = model.graph
        initializers = {init.name for init in graph.initializer}
        graph_inputs = [i.name for i in graph.input if i.name not in initializers]
        produced = {out for node in graph.node for out in node.output if out}
        unknown = [n for n in self.names if n not in produced and n not in graph_inputs]
        if unknown:
            raise CalibrationError(
                f"cannot calibrate tensors {unknown}: no node of the model produces them"
            )
        # A tensor that is itself a graph input comes straight from the feed; all the others
        # become extra outputs of a copy of the model.
        self.source = _relu_outputs(model, [n for n in self.names if n not in graph_inputs])
        self.fetched = list(dict.fromkeys(self.source.values()))
        self.session = _session_with_outputs(model, self.fetched, threads)
        self.inputs = self.session.get_inputs()
        self.allowed = ({i.name for i in self.inputs}
                        | {i.name for i in self.session.get_overridable_initializers()})

    def activations(self, feed: dict[str, np.ndarray], number: int) -> dict[str, np.ndarray]:
        """The requested tensors on batch ``number`` (checked as collect_activation_stats
        checks it), by name."""
        feed = _check_feed(feed, self.inputs, self.allowed, number)
        outputs = _run(self.session, self.fetched, feed, self.inputs, number) if self.fetched \
            else []
        values = dict(zip(self.fetched, outputs))
        return {name: values[self.source[name]] if name in self.source else feed[name]
                for name in self.names}


def _cpu_count() -> int:
    """CPUs this process may run on (a container may allow fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _run_ahead(pool, session, names, batches, inputs, allowed):
    """Yields ``(number, feed, outputs)`` for every batch, onnxruntime one batch ahead.

    While the caller histograms batch k, batch k + 1 runs in ``pool``'s thread: onnxruntime
    and the histogram kernels release the GIL, so the two halves of calibration overlap
    instead of taking turns. Batches are still yielded, and so histogrammed, in order, and
    at most two batches of activations are alive at once.
    """
    pending = None
    for number, feed in enumerate(batches):
        feed = _check_feed(feed, inputs, allowed, number)
        future = pool.submit(_run, session, names, feed, inputs, number) if names else None
        if pending is not None:
            yield _ready(*pending)
        pending = number, feed, future
        del feed, future
    if pending is not None:
        yield _ready(*pending)


def _ready(number, feed, future):
    """``(number, feed, outputs)`` once the batch's onnxruntime call is done."""
    return number, feed, [] if future is None else future.result()


def _relu_outputs(model: onnx.ModelProto, names: list[str]) -> dict[str, str]:
    """Maps each name to the tensor to fetch for it: the output of a Relu reading it, or
    the name itself."""
    relu = {}
    for node in model.graph.node:
        if node.op_type == "Relu" and node.domain in ("", "ai.onnx") and node.output[0]:
            relu.setdefault(node.input[0], node.output[0])
    return {name: relu.get(name, name) for name in names}


def _session_with_outputs(
    model: onnx.ModelProto, names: list[str], threads: int | None = None
) -> ort.InferenceSession:
    """An onnxruntime CPU session of a copy of ``model`` that also outputs ``names``."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    value_info = {vi.name: vi for vi in graph.value_info}
    existing = {o.name for o in graph.output}
    for name in names:
        if name in existing:
            continue
        if name in value_info:
            graph.output.append(value_info[name])
        else:
            graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    options = ort.SessionOptions()
    # Fatal only: warnings (unused initializers) are noise, and errors reach the user in the
    # CalibrationError raised below, with what was fed and what the model expects.
    options.log_severity_level = 4
    if threads is not None:
        options.intra_op_num_threads = threads
    # onnxruntime's idle threads spin by default, taking the CPUs from the histogram
    # threads that run at the same time (measured 1.6x slower with 2 threads on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(
            copy.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except _ORT_ERRORS as err:
        raise CalibrationError(f"onnxruntime cannot load the model for calibration: {err}") from err


def _expected(inputs) -> str:
    """The model's inputs as ``name: [dims] type`` for error messages."""
    return ", ".join(f"{i.name}: {list(i.shape)} {i.type}" for i in inputs)


def _check_feed(feed, inputs, allowed: set[str], number: int) -> dict[str, np.ndarray]:
    """Checks names and shapes of one feed and converts float arrays to what the model takes.

    Returns:
        The feed as a new dict of numpy arrays.
    """
    if not isinstance(feed, dict):
        raise CalibrationError(
            f"calibration batch {number} is a {type(feed).__name__}, expected a dict "
            f"{{input_name: array}}; the model takes {_expected(inputs)}"
        )
    feed = {name: np.asarray(value) for name, value in feed.items()}
    missing = [i.name for i in inputs if i.name not in feed]
    extra = [name for name in feed if name not in allowed]
    if missing or extra:
        raise CalibrationError(
            f"calibration batch {number}: missing inputs {missing}, unknown inputs {extra}; "
            f"the model takes {_expected(inputs)}"
        )
    for spec in inputs:
        array = feed[spec.name]
        if spec.type == "tensor(float)" and array.dtype != np.float32:
            if not np.issubdtype(array.dtype, np.number):
                raise CalibrationError(
                    f"calibration batch {number}: input {spec.name!r} has dtype "
                    f"{array.dtype}, the model expects float32"
                )
            array = feed[spec.name] = array.astype(np.float32)
        fits = array.ndim == len(spec.shape) and all(
            not isinstance(dim, int) or dim == size for dim, size in zip(spec.shape, array.shape)
        )
        if not fits:
            raise CalibrationError(
                f"calibration batch {number}: input {spec.name!r} has shape "
                f"{list(array.shape)}, the model expects {list(spec.shape)} "
                "(strings are free dimensions)"
            )
        if array.ndim == 0 or array.shape[0] == 0:
            raise CalibrationError(
                f"calibration batch {number}: input {spec.name!r} holds no images "
                f"(shape {list(array.shape)})"
            )
    return feed


def _run(session, names, feed, inputs, number: int) -> list[np.ndarray]:
    """One onnxruntime call, with its errors turned into a CalibrationError."""
    try:
        return session.run(names, feed)
    except _ORT_ERRORS as err:
        given = ", ".join(f"{k}: {list(v.shape)}" for k, v in feed.items())
        raise CalibrationError(
            f"onnxruntime failed on calibration batch {number} (given {given}; the model "
            f"expects {_expected(inputs)}): {err}"
        ) from err
