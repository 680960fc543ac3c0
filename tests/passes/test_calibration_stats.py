"""The calibration histogram's Numba kernels against a plain numpy reference.

The reference below is the straightforward statement of what ``ChannelHistogram.update``
computes: channel-major float32 copy, per-channel loop, ``np.bincount``. The kernels read
NCHW in place, split channels over threads and keep per-call bins, and must still give the
reference's counts, sums, ranges and maxima bit for bit.
"""

from __future__ import annotations

import math
import textwrap
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from snncompiler.demo import demo_files
from snncompiler.errors import CalibrationError
from snncompiler.npz import Preprocessing, load_npz
from snncompiler.passes import calibration_stats
from snncompiler.passes.calibration_stats import ChannelHistogram, collect_activation_stats
from snncompiler.passes.dni import choose_neuron_parameters
from tests.passes.test_calibrate_neurons import batches as tiny_batches
from tests.passes.test_calibrate_neurons import tiny_model
from tests.without_jit import assert_prints_same_without_jit

FAST = settings(max_examples=60, deadline=None)

EXACT = ("counts", "sums", "upper", "max", "n_positive", "n_total")


class Reference:
    """``ChannelHistogram``'s state and update, written the plain way."""

    def __init__(self, channels: int, bins: int):
        self.counts = np.zeros((channels, bins), dtype=np.int64)
        self.sums = np.zeros((channels, bins), dtype=np.float64)
        self.upper = np.zeros(channels)
        self.max = np.zeros(channels)
        self.n_positive = np.zeros(channels, dtype=np.int64)
        self.n_total = np.zeros(channels, dtype=np.int64)

    def update(self, values: np.ndarray) -> None:
        channels, bins = self.counts.shape
        x = np.moveaxis(np.asarray(values), 1, 0).reshape(channels, -1).astype(np.float32)
        if x.shape[1] == 0:
            return
        if not np.isfinite(x).all():
            raise CalibrationError("NaN or infinite")
        batch_max = np.maximum(x.max(axis=1), 0).astype(np.float64)
        self.n_total += x.shape[1]
        self.max = np.maximum(self.max, batch_max)
        for c in range(channels):
            if batch_max[c] > 0 and self.upper[c] == 0:
                self.upper[c] = batch_max[c]
            elif batch_max[c] > self.upper[c]:
                # The smallest power of two that covers the new maximum; bin i -> i >> g.
                g = 1
                while np.ldexp(self.upper[c], g) < batch_max[c]:
                    g += 1
                self.upper[c] = np.ldexp(self.upper[c], g)
                target = np.arange(bins) >> min(g, 62)
                merged = np.bincount(target, weights=self.counts[c], minlength=bins)
                self.counts[c] = np.rint(merged).astype(np.int64)
                self.sums[c] = np.bincount(target, weights=self.sums[c], minlength=bins)
            positive = x[c][x[c] > 0]
            u = np.float32(self.upper[c] if self.upper[c] > 0 else 1.0)
            index = np.ceil((positive / u) * np.float32(bins)).astype(np.int64) - 1
            index = np.clip(index, 0, bins - 1)
            self.counts[c] += np.bincount(index, minlength=bins)
            self.sums[c] += np.bincount(index, weights=positive.astype(np.float64), minlength=bins)
            self.n_positive[c] += positive.size


def assert_same(hist: ChannelHistogram, ref) -> None:
    for field in EXACT:
        np.testing.assert_array_equal(getattr(hist, field), getattr(ref, field), err_msg=field)
    np.testing.assert_allclose(hist.sum_positive, ref.sums.sum(axis=1), rtol=1e-12)


# Values of every kind the kernels branch on: negative, zero of both signs, subnormal, tiny
# and large, repeated values (many land in one bin).
special = st.sampled_from([0.0, -0.0, 1e-45, 1e-40, 1e-30, -1e-45, 1.0, 2.0, 3.0, 1e30])
elements = st.one_of(st.floats(-100, 100, width=32), special)


@st.composite
def batch_lists(draw, max_batches: int = 5):
    """Lists of ``(N, C, ...)`` float32 batches of one channel count, each scaled by a
    power of two so that ranges grow (and shrink, which must change nothing)."""
    channels = draw(st.integers(1, 4))
    spatial = draw(st.sampled_from([(), (1,), (3,), (2, 3), (5, 1)]))
    out = []
    for _ in range(draw(st.integers(1, max_batches))):
        n = draw(st.integers(0, 5))
        batch = draw(hnp.arrays(np.float32, (n, channels, *spatial), elements=elements))
        out.append(batch * np.float32(2.0 ** draw(st.integers(-12, 20))))
    return out


@FAST
@given(batch_lists(), st.sampled_from([1, 2, 7, 64, 2048]))
def test_update_matches_the_numpy_reference(batches, bins):
    hist = ChannelHistogram(batches[0].shape[1], bins)
    ref = Reference(batches[0].shape[1], bins)
    for batch in batches:
        hist.update(batch)
        ref.update(batch)
        assert_same(hist, ref)


@FAST
@given(batch_lists(max_batches=3), st.sampled_from([np.nan, np.inf, -np.inf]), st.data())
def test_non_finite_batches_raise_and_change_nothing(batches, bad, data):
    hist = ChannelHistogram(batches[0].shape[1], 16)
    for batch in batches:
        hist.update(batch)
    before = {field: getattr(hist, field).copy() for field in EXACT}
    poisoned = np.ones((2, hist.channels, 3), dtype=np.float32)
    poisoned.flat[data.draw(st.integers(0, poisoned.size - 1))] = bad
    with pytest.raises(CalibrationError, match="NaN or infinite"):
        hist.update(poisoned)
    for field in EXACT:
        np.testing.assert_array_equal(getattr(hist, field), before[field], err_msg=field)


def test_empty_batches_change_nothing():
    hist = ChannelHistogram(3, 8)
    hist.update(np.ones((2, 3, 2), np.float32))
    before = {field: getattr(hist, field).copy() for field in EXACT}
    for empty in (np.zeros((0, 3, 4)), np.zeros((5, 3, 0)), np.zeros((0, 3))):
        hist.update(empty)
    for field in EXACT:
        np.testing.assert_array_equal(getattr(hist, field), before[field], err_msg=field)


def test_other_dtypes_and_layouts_are_converted():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(6, 2, 4, 5))
    hist, ref = ChannelHistogram(2, 32), Reference(2, 32)
    hist.update(data)  # float64
    ref.update(data)
    hist.update(data[:, :, ::2].astype(np.float16))  # not contiguous
    ref.update(data[:, :, ::2].astype(np.float16))
    hist.update(np.asfortranarray(data.astype(np.float32)))
    ref.update(data.astype(np.float32))
    assert_same(hist, ref)


@FAST
@given(batch_lists(), st.integers(1, 5), st.integers(1, 4))
def test_threads_do_not_change_a_bit(batches, workers, pool_size):
    channels = batches[0].shape[1]
    alone = ChannelHistogram(channels, 64)
    shared = ChannelHistogram(channels, 64)
    # Blocks of one channel, so that even these small batches are split.
    with (
        mock.patch.object(calibration_stats, "_MIN_BLOCK_VALUES", 1),
        ThreadPoolExecutor(pool_size) as pool,
    ):
        for batch in batches:
            alone.update(batch)
            shared.update(batch, pool, workers)
    assert_same(shared, alone)


@FAST
@given(batch_lists(), st.data())
def test_splitting_later_batches_keeps_counts_and_ranges(batches, data):
    # The range of a channel is its first positive batch's maximum times the smallest power
    # of two that covers everything seen: so once every channel has a positive value, how
    # the rest of the data is cut into batches changes only the rounding of the sums.
    channels = batches[0].shape[1]
    first = np.ones((1, channels, 2), dtype=np.float32)
    rest = np.concatenate([b.reshape(*b.shape[:2], math.prod(b.shape[2:]))[..., :1]
                           for b in batches])
    cuts = sorted(data.draw(st.lists(st.integers(0, len(rest)), max_size=4)))
    whole, pieces = ChannelHistogram(channels, 32), ChannelHistogram(channels, 32)
    whole.update(first)
    whole.update(rest)
    pieces.update(first)
    for part in np.split(rest, cuts):
        pieces.update(part)
    for field in ("counts", "upper", "max", "n_positive", "n_total"):
        np.testing.assert_array_equal(getattr(pieces, field), getattr(whole, field))
    np.testing.assert_allclose(pieces.sums, whole.sums, rtol=1e-12)


def test_huge_batches_are_binned_in_parts():
    # A kernel call counts in int32, so a batch of 2**31 values or more per channel goes in
    # parts of images; shrinking the limit shows the parts add up.
    rng = np.random.default_rng(5)
    batch = rng.normal(size=(9, 2, 4)).astype(np.float32)
    whole, parts = ChannelHistogram(2, 16), ChannelHistogram(2, 16)
    whole.update(batch)
    with mock.patch.object(calibration_stats, "_MAX_KERNEL_VALUES", 8):
        parts.update(batch)
    for field in ("counts", "upper", "max", "n_positive", "n_total"):
        np.testing.assert_array_equal(getattr(parts, field), getattr(whole, field))
    np.testing.assert_allclose(parts.sums, whole.sums, rtol=1e-12)


def test_kernels_give_the_same_bits_without_the_jit(tmp_path):
    """Under NUMBA_DISABLE_JIT=1 the kernels run as Python on numpy scalars and must give
    the jitted result bit for bit."""
    rng = np.random.default_rng(11)
    batches = [rng.normal(size=(4, 3, 5)).astype(np.float32) * 2.0**e for e in (0, 3, -2, 6)]
    hist = ChannelHistogram(3, 64)
    for batch in batches:
        hist.update(batch)
    np.savez(tmp_path / "data.npz", *batches, **{f"_{f}": getattr(hist, f) for f in EXACT})
    code = textwrap.dedent(f"""
        import numpy as np
        from snncompiler.passes.calibration_stats import ChannelHistogram
        data = np.load({str(tmp_path / "data.npz")!r})
        hist = ChannelHistogram(3, 64)
        for i in range(4):
            hist.update(data[f"arr_{{i}}"])
        for field in {EXACT!r}:
            np.testing.assert_array_equal(getattr(hist, field), data["_" + field])
        print("same")
    """)
    assert_prints_same_without_jit(code)


# ---------------------------------------------------------------- collect_activation_stats


def exposed_reference(model: onnx.ModelProto, names: list[str], feeds, bins: int) -> dict:
    """Histograms of ``names`` exposed as they are (not as a Relu's output), by Reference."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for name in names:
        copy.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
    session = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
    refs = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed)):
            refs.setdefault(name, Reference(value.shape[1], bins)).update(value)
    return refs


def test_relu_outputs_stand_for_their_inputs_and_threads_change_nothing():
    model = tiny_model()
    feeds = list(tiny_batches(5, size=3))
    refs = exposed_reference(model, ["conv", "gemm"], feeds, 128)
    assert calibration_stats._relu_outputs(model, ["conv", "gemm"]) == {
        "conv": "relu1", "gemm": "y"}
    for threads in (1, 2, 3):
        stats = collect_activation_stats(
            model, ["conv", "gemm"], feeds, bins=128, progress=False, threads=threads)
        for name in ("conv", "gemm"):
            assert_same(stats[name], refs[name])


def test_demo_thresholds_are_those_of_the_reference():
    """On the shipped demo CNN and its calibration images, the histograms (Relu outputs,
    kernels, worker threads) and so the thresholds and initial potentials DNI picks are
    exactly those of the reference (Relu inputs, numpy)."""
    spec, folder = demo_files()
    model = onnx.load(folder / spec["model"])
    preprocessing = Preprocessing(spec["scale"], spec["mean"], spec["std"])
    x = load_npz(folder / spec["calibration"], preprocessing).x
    name = model.graph.input[0].name
    feeds = [{name: x[i:i + 64]} for i in range(0, len(x), 64)]
    relu_inputs = list(dict.fromkeys(n.input[0] for n in model.graph.node if n.op_type == "Relu"))
    refs = exposed_reference(model, relu_inputs, feeds, 2048)
    stats = collect_activation_stats(model, relu_inputs, feeds, progress=False, threads=2)
    for tensor in relu_inputs:
        assert_same(stats[tensor], refs[tensor])
        ref = ChannelHistogram(stats[tensor].channels)
        for field in EXACT:
            getattr(ref, field)[...] = getattr(refs[tensor], field)
        got = choose_neuron_parameters(stats[tensor], (4, 32))
        want = choose_neuron_parameters(ref, (4, 32))
        np.testing.assert_array_equal(got.theta, want.theta)
        np.testing.assert_array_equal(got.v0, want.v0)
        np.testing.assert_array_equal(got.expected_error, want.expected_error)
