"""The SNM variants (clip and leaky): golden trajectories, kernel = reference, tracking law."""

import numba
import numpy as np
import pytest

from snncompiler.runtime.neuron_variants import (
    THETA_NEG_CODES,
    tracked_value,
    tracking_scan,
    tracking_step_reference,
)


def scan(currents, theta=1.0, v0=0.5, slope=0.0, upper=np.inf, theta_neg="zero", k=1,
         chunks=None):
    """Runs one neuron per channel over currents (T, N, C, S), optionally in time chunks."""
    steps, batch, channels, size = currents.shape
    per_channel = [np.full(channels, v, np.float64) for v in (theta, v0, slope, upper)]
    running = np.zeros((batch, channels, size))
    memory = np.zeros((batch, channels, size), np.int32)
    out = np.empty(currents.shape, np.float32)
    bounds = chunks or [0, steps]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        tracking_scan(np.ascontiguousarray(currents[lo:hi], np.float32), False, *per_channel,
                      THETA_NEG_CODES[theta_neg], k, lo, running, memory, out[lo:hi])
    return out, running, memory


def test_clip_neuron_golden_trajectory():
    # theta 1, v0 0.5, upper 1, one spike per step, input 3, 0, 0, -1:
    #   t  S   f_t(S) = min(S, t)  V = 0.5 + f - M   spike  M
    #   1  3   1                   1.5               +1     1
    #   2  3   2                   1.5               +1     2
    #   3  3   3                   1.5               +1     3
    #   4  2   2                   -0.5              -1     2
    # running mean after 4 steps: 2 / 4 = clip(mean input 0.5, 0, 1).
    z = np.array([3, 0, 0, -1], np.float32).reshape(4, 1, 1, 1)
    out, _, memory = scan(z, upper=1.0)
    np.testing.assert_array_equal(out.ravel(), [1, 1, 1, -1])
    assert memory.item() == 2


def test_leaky_neuron_golden_trajectory():
    # theta 1, v0 0.5, slope 0.5, input -2, -2, 4, 0:
    #   t  S   f(S)   V = 0.5 + f - M   spike  M
    #   1  -2  -1     -0.5              -1     -1
    #   2  -4  -2     -0.5              -1     -2
    #   3   0   0      2.5              +1     -1   (one spike per step)
    #   4   0   0      1.5              +1      0
    z = np.array([-2, -2, 4, 0], np.float32).reshape(4, 1, 1, 1)
    out, _, memory = scan(z, slope=0.5)
    np.testing.assert_array_equal(out.ravel(), [-1, -1, 1, 1])
    assert memory.item() == 0


@pytest.mark.parametrize("theta_neg", ["zero", "minus_theta", "off"])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("slope, upper", [(0.0, 0.8), (0.3, np.inf), (-0.2, np.inf)])
def test_kernel_matches_the_reference_step(theta_neg, k, slope, upper):
    rng = np.random.default_rng(0)
    currents = rng.normal(0.2, 1.0, (30, 2, 3, 4)).astype(np.float32)
    theta = np.array([0.5, 1.0, 0.7])
    v0 = theta * np.array([0.5, 0.0, 0.25])
    shape = (1, 3, 1)
    out = np.empty(currents.shape, np.float32)
    running = np.zeros((2, 3, 4))
    memory = np.zeros((2, 3, 4), np.int32)
    tracking_scan(currents, False, theta, v0, np.full(3, slope), np.full(3, upper),
                  THETA_NEG_CODES[theta_neg], k, 0, running, memory, out)
    ref_s, ref_m = np.zeros((2, 3, 4)), np.zeros((2, 3, 4), np.int64)
    for t in range(30):
        spikes, ref_s, ref_m = tracking_step_reference(
            currents[t], ref_s, ref_m, t + 1, theta.reshape(shape), v0.reshape(shape), slope,
            upper, theta_neg, k)
        np.testing.assert_allclose(out[t], spikes, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(memory, ref_m)


def test_zero_threshold_tracks_the_activation_of_the_integrated_input_exactly():
    """With bursts large enough to never run out, M = floor((v0 + f_t(S)) / theta) always."""
    rng = np.random.default_rng(1)
    currents = rng.normal(0, 2.0, (40, 3, 2, 5)).astype(np.float32)
    for slope, upper in ((0.0, 1.5), (0.25, np.inf)):
        out, running, memory = scan(currents, theta=0.5, v0=0.2, slope=slope, upper=upper,
                                    k=10_000)
        value = tracked_value(np.cumsum(currents.astype(np.float64), 0)[-1], slope, upper, 40)
        np.testing.assert_array_equal(memory, np.floor((0.2 + value) / 0.5))
        np.testing.assert_allclose(out.sum(0), 0.5 * memory, atol=1e-4)


def test_time_chunks_do_not_change_the_result():
    currents = np.random.default_rng(2).normal(0.3, 1, (25, 2, 2, 3)).astype(np.float32)
    whole = scan(currents, upper=1.0)[0]
    np.testing.assert_array_equal(scan(currents, upper=1.0, chunks=[0, 1, 7, 8, 25])[0], whole)


def test_static_input_is_applied_at_every_step():
    current = np.full((1, 1, 1, 1), 0.4, np.float32)
    out = np.empty((10, 1, 1, 1), np.float32)
    tracking_scan(current, True, *(np.full(1, v) for v in (1.0, 0.5, 0.0, np.inf)), 0, 1, 0,
                  np.zeros((1, 1, 1)), np.zeros((1, 1, 1), np.int32), out)
    assert out.sum() == 4.0  # floor(0.5 + 10 * 0.4)


def test_results_do_not_depend_on_the_thread_count():
    currents = np.random.default_rng(3).normal(0, 1, (20, 8, 2, 3)).astype(np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = scan(currents, slope=0.1)[0]
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = scan(currents, slope=0.1)[0]
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, many)
