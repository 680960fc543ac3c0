"""Fused-executor kernels against numpy references, one op and one sample at a time.

Event-driven ``conv``/``gemm`` add the same terms as numpy's BLAS products in another order,
so they agree to float32 rounding: the tolerance below is a few ulps of the largest partial
sum (|x| |w| summed over the fan-in), ``rtol=1e-5, atol=1e-5`` at these magnitudes.
Everything else (pools, neurons, the spike-count max pool) does the very same float
operations as its reference and must match exactly.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snncompiler.runtime import kernels as K
from snncompiler.runtime import linear
from snncompiler.runtime.fused import (
    LISTING_COST,
    POINTWISE_COST,
    conv_weight_layout,
    dense_from,
    from_storage,
    grouped_weight_layout,
    to_storage,
)
from snncompiler.runtime.neurons import THETA_NEG_CODES, snm_step_reference

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def spikes(rng, shape, density, theta=0.7):
    """A ternary spike tensor: 0 or +-theta, nonzero with probability ``density``."""
    sign = rng.choice([-1.0, 1.0], size=shape, p=[0.2, 0.8])
    return (sign * theta * (rng.random(shape) < density)).astype(np.float32)


def conv_scratch(channels, height, width, kh, kw):
    return (np.zeros(channels * height * width, np.uint32),
            np.zeros(height * width + 1, np.uint64), np.zeros(2 * kh * kw, np.uint64),
            np.zeros(kh * kw, np.int64))


def run_conv(x, weight, bias, strides, pads, dilations, group, out_hw, dense_from=None):
    """One sample (C, H, W) through the fused conv kernel (events, depthwise, or grouped
    scatter).

    ``dense_from``: nonzero entries from which the kernel runs dense (default: never).
    """
    channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    out = np.zeros(out_channels * out_hw[0] * out_hw[1], np.float32)
    args = (to_storage(x, x.shape), channels, height, width, conv_weight_layout(weight, group),
            bias, out_channels, kh, kw, *strides, pads[0], pads[1], *dilations)
    if group == 1:
        every = np.arange(x.size, dtype=np.uint32)
        additions = K.conv_events(*args, *out_hw, *conv_scratch(channels, height, width, kh,
                                                                  kw), every,
                                  x.size + 1 if dense_from is None else dense_from, out)
    elif K.is_depthwise(channels, out_channels, group):
        scratch = conv_scratch(channels, height, width, kh, kw)
        additions = K.conv_depthwise(*args[:6], *args[7:], *out_hw, scratch[1],
                                     np.zeros(2 * kh * kw, np.int64), out)
    else:
        acc = np.zeros(out.size, np.float32)
        additions = K.conv_grouped(*args, group, *out_hw, acc, out)
    return from_storage(out, (out_channels, *out_hw)), additions


CONV_CASES = [
    # channels, out, kernel, strides, pads, dilations, group, size
    (3, 32, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, (7, 6)),
    (5, 40, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1, (6, 6)),     # 40 = 32 + 8
    (4, 13, (3, 2), (2, 1), (1, 0, 1, 1), (1, 1), 1, (8, 7)),     # 13 = 8 + 5
    (6, 64, (3, 3), (2, 2), (1, 1, 0, 0), (1, 1), 1, (9, 9)),
    (3, 9, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1, (7, 7)),      # dilation: taps one by one
    (4, 6, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1, (6, 5)),      # 1x1 projection
    (5, 56, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, (5, 7)),     # 1x1 keeping every pixel:
    (3, 13, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, (4, 4)),     # dense, a matrix product
    (4, 16, (1, 1), (1, 1), (0, 0, 1, 1), (1, 1), 1, (5, 5)),     # 1x1 padded at the end
    (4, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2, (5, 5)),      # groups: scatter kernel
    (6, 6, (3, 3), (2, 1), (1, 1, 1, 1), (1, 2), 6, (7, 6)),      # depthwise
    (19, 19, (5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 19, (9, 8)),   # depthwise, 19 = 2 * 8 + 3
    (43, 43, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 43, (6, 5)),   # depthwise, 43 = 32 + 8 + 3
]


def out_size(size, kernel, stride, pad_begin, pad_end, dilation):
    return (size + pad_begin + pad_end - (kernel - 1) * dilation - 1) // stride + 1


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("density", [0.0, 0.15, 1.0])
@pytest.mark.parametrize("dense", [False, True])
def test_event_conv_matches_numpy(case, density, dense):
    channels, out_channels, kernel, strides, pads, dilations, group, size = case
    rng = np.random.default_rng(len(str(case)))
    weight = rng.normal(0, 0.5, (out_channels, channels // group, *kernel)).astype(np.float32)
    bias = rng.normal(0, 0.1, out_channels).astype(np.float32)
    x = spikes(rng, (channels, *size), density)
    if density == 1.0:
        x = rng.normal(size=x.shape).astype(np.float32)  # a dense current, not spikes
    out_hw = (out_size(size[0], kernel[0], strides[0], pads[0], pads[2], dilations[0]),
              out_size(size[1], kernel[1], strides[1], pads[1], pads[3], dilations[1]))
    got, additions = run_conv(x, weight, bias, strides, pads, dilations, group, out_hw,
                              dense_from=0 if dense else None)
    expected = linear.conv2d(x[None], weight, bias, strides, pads, dilations, group)[0]
    np.testing.assert_allclose(got, expected, **TOLERANCE)
    # Additions: each nonzero input (every input, on the dense path) times the outputs it
    # reaches (counted by brute force).
    counted = (x != 0) | (dense and group == 1)
    reach = linear.conv2d(counted.astype(np.float32)[None], np.ones_like(weight),
                          np.zeros_like(bias), strides, pads, dilations, group)
    assert additions == int(reach.sum())


def test_conv_runs_dense_from_the_given_number_of_nonzero_inputs():
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(8, 4, 3, 3)).astype(np.float32)
    bias = rng.normal(size=8).astype(np.float32)
    x = spikes(rng, (4, 6, 6), 0.4)
    nonzero = np.count_nonzero(x)
    geometry = ((1, 1), (1, 1, 1, 1), (1, 1), 1, (6, 6))
    reach = np.array([2, 3, 3, 3, 3, 2])
    per_entry = np.outer(reach, reach) * 8  # additions of one input entry, by pixel
    sparse = int((np.count_nonzero(x, axis=0) * per_entry).sum())
    assert 0 < sparse < 4 * per_entry.sum()
    events, counted = run_conv(x, weight, bias, *geometry, dense_from=nonzero + 1)
    assert counted == sparse
    dense, counted = run_conv(x, weight, bias, *geometry, dense_from=nonzero)
    assert counted == 4 * per_entry.sum()
    np.testing.assert_allclose(dense, events, **TOLERANCE)


def test_dense_from_follows_the_cost_of_listing_against_the_additions_it_saves():
    # 3x3 to 16 channels: 18 eight-lane additions per entry, dense from 1 - cost/18 nonzero.
    assert dense_from(16, 28, 28, 16, (3, 3), (1, 1)) == int(
        np.ceil(12544 * (1 - LISTING_COST / 18)))
    # 1x1 stride 2 to 8 channels: a quarter of an addition per entry, listing costs more.
    assert dense_from(8, 10, 10, 8, (1, 1), (2, 2)) == 0
    assert dense_from(32, 7, 7, 64, (3, 3), (1, 1)) > dense_from(32, 7, 7, 8, (3, 3), (1, 1))
    # A 1x1 conv that keeps every pixel runs dense as a matrix product, whose additions
    # cost POINTWISE_COST each: 12 per entry to 96 channels.
    assert dense_from(16, 14, 14, 96, (1, 1), (1, 1), pointwise=True) == int(
        np.ceil(3136 * (POINTWISE_COST - LISTING_COST / 12)))


def test_event_conv_equals_the_scatter_kernel_up_to_pairing():
    """Both fused kernels add each output's terms in (kh, kw, c) order."""
    rng = np.random.default_rng(5)
    weight = rng.normal(size=(16, 8, 3, 3)).astype(np.float32)
    bias = rng.normal(size=16).astype(np.float32)
    x = spikes(rng, (8, 9, 9), 0.2)
    geometry = ((1, 1), (1, 1, 1, 1), (1, 1))
    events, _ = run_conv(x, weight, bias, *geometry, 1, (9, 9))
    acc = np.zeros(16 * 81, np.float32)
    out = np.zeros(16 * 81, np.float32)
    K.conv_grouped(to_storage(x, x.shape), 8, 9, 9, grouped_weight_layout(weight, 1), bias,
                   16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 9, 9, acc, out)
    np.testing.assert_allclose(events, from_storage(out, (16, 9, 9)), **TOLERANCE)


@pytest.mark.parametrize("case", [case for case in CONV_CASES if case[6] == case[0] > 1])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.3, 1.0])
def test_depthwise_kernel_gives_the_bits_of_the_scatter_kernel(case, density):
    """conv_depthwise adds every tap's pixel, zeros included, in the order conv_grouped adds
    the nonzero inputs: the same bits and the same count of event-driven additions."""
    channels, _, kernel, strides, pads, dilations, _, size = case
    rng = np.random.default_rng(11)
    weight = rng.normal(0, 0.5, (channels, 1, *kernel)).astype(np.float32)
    bias = rng.normal(0, 0.1, channels).astype(np.float32)
    x = spikes(rng, (channels, *size), density)
    x[:, 0] = 0  # whole pixels of zeros, which the depthwise kernel skips
    out_hw = (out_size(size[0], kernel[0], strides[0], pads[0], pads[2], dilations[0]),
              out_size(size[1], kernel[1], strides[1], pads[1], pads[3], dilations[1]))
    depthwise, additions = run_conv(x, weight, bias, strides, pads, dilations, channels,
                                    out_hw)
    out = np.zeros(channels * out_hw[0] * out_hw[1], np.float32)
    scattered = K.conv_grouped(to_storage(x, x.shape), channels, *size,
                               grouped_weight_layout(weight, channels), bias, channels,
                               *kernel, *strides, pads[0], pads[1], *dilations, channels,
                               *out_hw, np.zeros(out.size, np.float32), out)
    np.testing.assert_array_equal(depthwise, from_storage(out, (channels, *out_hw)))
    assert additions == scattered


def test_event_conv_result_does_not_depend_on_zeros():
    """Skipping exact zeros changes nothing: a zero input adds nothing, bit for bit."""
    rng = np.random.default_rng(2)
    weight = rng.normal(size=(32, 4, 3, 3)).astype(np.float32)
    bias = np.zeros(32, np.float32)
    x = spikes(rng, (4, 6, 6), 0.3)
    y = x.copy()
    y[0] = 0  # fewer events
    both = [run_conv(v, weight, bias, (1, 1), (1, 1, 1, 1), (1, 1), 1, (6, 6))[0] for v in (x, y)]
    contribution = run_conv(x - y, weight, bias, (1, 1), (1, 1, 1, 1), (1, 1), 1, (6, 6))[0]
    np.testing.assert_allclose(both[0], both[1] + contribution, **TOLERANCE)


@pytest.mark.parametrize(("rows", "n_in", "n_out"), [(1, 50, 10), (3, 17, 72), (1, 9, 1)])
@pytest.mark.parametrize("density", [0.0, 0.2, 1.0])
def test_event_gemm_matches_numpy(rows, n_in, n_out, density):
    rng = np.random.default_rng(rows * n_in)
    x = spikes(rng, (rows, n_in), density)
    weight = rng.normal(size=(n_in, n_out)).astype(np.float32)
    bias = rng.normal(size=n_out).astype(np.float32)
    out = np.zeros(rows * n_out, np.float32)
    additions = K.gemm_events(x.reshape(-1), rows, n_in, weight.reshape(-1), bias, n_out,
                              np.zeros(n_in, np.uint32), np.zeros(2, np.uint64),
                              np.zeros(2, np.uint64), np.zeros(1, np.int64), out)
    np.testing.assert_allclose(out.reshape(rows, n_out), linear.gemm(x, weight, bias),
                               **TOLERANCE)
    assert additions == np.count_nonzero(x) * n_out


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 10), st.sampled_from(["zero", "minus_theta", "off"]),
       st.sampled_from([1, 2, 3, 64]), st.sampled_from([0.3, 1.5, 40.0]),
       st.integers(0, 2**31 - 1))
def test_snm_step_matches_the_reference(steps, theta_neg, max_spikes, scale, seed):
    # Caps that bind and one that does not (64), over 1100 neurons: the vectorised body of
    # the neuron loop and its scalar remainder; a few hundred neurons with a tiny input.
    rng = np.random.default_rng(seed)
    n = 1100
    theta = rng.uniform(0.2, 2.0, size=n).astype(np.float32)
    membrane = (rng.uniform(0, 1, size=n) * theta).astype(np.float32)
    memory = np.zeros(n, np.int32)
    ref_v, ref_m = membrane.copy(), memory.copy()
    for _ in range(steps):
        z = rng.normal(0, scale, size=n).astype(np.float32)
        z[:512] *= 0.01
        out = np.zeros(n, np.float32)
        sent = K.snm_step(z, theta, THETA_NEG_CODES[theta_neg], max_spikes, membrane, memory,
                          out)
        expected, ref_v, ref_m = snm_step_reference(z, ref_v, ref_m, theta, theta_neg,
                                                     max_spikes)
        np.testing.assert_array_equal(out, expected.astype(np.float32))
        np.testing.assert_array_equal(membrane, ref_v)
        np.testing.assert_array_equal(memory, ref_m)
        assert sent == int(np.abs(np.rint(expected / theta)).sum())


POOLS = [((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), (8, 8)),
         ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (7, 9)),
         ((2, 3), (1, 2), (0, 1, 0, 1), (2, 1), (7, 8))]


@pytest.mark.parametrize(("kernel", "strides", "pads", "dilations", "size"), POOLS)
def test_maxpool_tracker_on_spike_counts_is_the_tracker(kernel, strides, pads, dilations, size):
    """The max pool computed from an SNM layer's counts gives the float tracker's bits."""
    rng = np.random.default_rng(7)
    channels = 11  # 8 vector lanes and 3 more
    theta = rng.uniform(0.3, 1.5, channels).astype(np.float32)
    out_hw = tuple(
        (size[i] + pads[i] + pads[i + 2] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1
        for i in range(2))
    n_in, n_out = channels * size[0] * size[1], channels * out_hw[0] * out_hw[1]
    running, pooled = np.zeros(n_in), np.zeros(n_out)
    counts, pooled_counts = np.zeros(n_in, np.int32), np.zeros(n_out, np.float32)
    per_neuron = to_storage(np.broadcast_to(theta[:, None, None], (channels, *size)),
                            (channels, *size))
    for _ in range(12):
        sent = rng.choice([-1, 0, 1], size=n_in, p=[0.1, 0.7, 0.2]).astype(np.int32)
        sent = np.where(counts + sent < 0, 0, sent).astype(np.int32)
        counts += sent
        spikes_now = (sent * per_neuron).astype(np.float32)
        floats = np.zeros(n_out, np.float32)
        K.maxpool_step(spikes_now, channels, *size, *kernel, *strides, pads[0], pads[1],
                       *dilations, *out_hw, running, pooled, np.zeros(channels), floats)
        from_counts = np.zeros(n_out, np.float32)
        K.maxpool_spikes_step(counts, channels, *size, *kernel, *strides, pads[0], pads[1],
                              *dilations, *out_hw, theta, pooled_counts,
                              np.zeros(kernel[0] * kernel[1], np.int64), from_counts)
        np.testing.assert_array_equal(from_counts, floats)
    # And the running sum of the output is the max pool of the running input.
    np.testing.assert_array_equal(
        from_storage(pooled, (channels, *out_hw)),
        linear.maxpool2d(from_storage(running, (channels, *size))[None], kernel, strides,
                         pads, dilations, out_hw)[0])


@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_avgpool_matches_numpy_exactly(count_include_pad):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 7, 8)).astype(np.float32)
    kernel, strides, pads, out_hw = (3, 2), (2, 2), (1, 0, 1, 1), (4, 4)
    divisor = linear.avgpool_divisor((7, 8), kernel, strides, pads, count_include_pad, out_hw)
    out = np.zeros(5 * 16, np.float32)
    K.avgpool(to_storage(x, x.shape), 5, 7, 8, *kernel, *strides, pads[0], pads[1], *out_hw,
              divisor.reshape(-1), out)
    expected = linear.avgpool2d(x[None], kernel, strides, pads, count_include_pad, out_hw)[0]
    np.testing.assert_array_equal(from_storage(out, (5, *out_hw)), expected)


def test_global_avgpool_in_both_layouts():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 5, 4)).astype(np.float32)
    expected = x.reshape(6, -1).mean(axis=1)
    for data, last in ((to_storage(x, x.shape), True), (x.reshape(-1), False)):
        out = np.zeros(6, np.float32)
        K.global_avgpool(data, 6, 20, last, out)
        np.testing.assert_allclose(out, expected, **TOLERANCE)


def test_storage_layout_round_trip():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    stored = to_storage(x, (3, 4, 5))
    assert stored[0, :3].tolist() == [0, 20, 40]  # channels of pixel (0, 0) first
    np.testing.assert_array_equal(from_storage(stored, (3, 4, 5)), x)
    np.testing.assert_array_equal(to_storage(x.reshape(2, 60), (60,)), x.reshape(2, 60))
