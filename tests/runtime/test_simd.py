"""The branch-free event listing: the nonzero indices, in order, whatever the input."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from snncompiler.runtime import kernels as K
from snncompiler.runtime import simd


@njit
def _listed(x, events, lanes):
    count = 0
    for index in range(0, x.size - x.size % 8, 8):
        if lanes:
            count = simd.list_nonzero8_lanes(x, index, events, count)
        else:
            count = simd.list_nonzero8(x, index, events, count)
    return count


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.floats(0.0, 1.0), st.integers(0, 2**32 - 1))
def test_list_events_finds_every_nonzero_in_order(pixels, density, seed):
    rng = np.random.default_rng(seed)
    # Any count, and whole 8-entry groups (listed and marked in one pass).
    channels = int(rng.integers(1, 20) if rng.random() < 0.5 else 8 * rng.integers(1, 5))
    x = (rng.normal(size=pixels * channels) * (rng.random(pixels * channels) < density))
    x = x.astype(np.float32)
    x[rng.random(x.size) < 0.05] = -0.0  # a negative zero is a zero
    events = np.zeros(x.size, np.uint32)
    starts = np.zeros(pixels + 1, np.uint64)
    count = K.list_events(x, pixels, channels, events, starts)
    nonzero = np.flatnonzero(x)
    assert count == nonzero.size
    np.testing.assert_array_equal(events[:count], nonzero)
    per_pixel = np.count_nonzero(x.reshape(pixels, channels), axis=1)
    np.testing.assert_array_equal(starts, np.concatenate([[0], np.cumsum(per_pixel)]))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_the_avx2_and_lane_by_lane_listings_agree(groups, seed):
    rng = np.random.default_rng(seed)
    x = (rng.random(8 * groups) < rng.random()).astype(np.float32) * rng.choice([-1, 1],
                                                                                 8 * groups)
    x = x.astype(np.float32)
    results = []
    for lanes in (False, True):
        events = np.zeros(x.size, np.uint32)
        count = _listed(x, events, lanes)
        results.append(events[:count])
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], np.flatnonzero(x))
