"""SNM neuron: hand-derived trajectories, and the numba kernel against the numpy reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snncompiler.runtime.neurons import (
    THETA_NEG_CODES,
    signed_spikes_reference,
    snm_scan,
    snm_step_reference,
)


def scan(currents, theta, v0, theta_neg, max_spikes=1):
    """Runs one neuron (N = C = S = 1) over the given currents with the numba kernel."""
    currents = np.asarray(currents, dtype=np.float32).reshape(-1, 1, 1, 1)
    membrane = np.full((1, 1, 1), v0, dtype=np.float32)
    memory = np.zeros((1, 1, 1), dtype=np.int32)
    out = np.empty_like(currents)
    snm_scan(currents, False, np.array([theta], np.float32), THETA_NEG_CODES[theta_neg],
             max_spikes, membrane, memory, out)
    return out.ravel().tolist(), float(membrane[0, 0, 0]), int(memory[0, 0, 0])


def test_positive_then_negative_input_is_taken_back_with_theta_neg_zero():
    # theta = 1, v0 = 0.5, currents +0.8, +0.8, -1.0, -1.0:
    # t1: V = 1.3 >= 1 -> +1, V = 0.3, M = 1
    # t2: V = 1.1 >= 1 -> +1, V = 0.1, M = 2
    # t3: V = -0.9 < 0 and M > 0 -> -1, V = 0.1, M = 1
    # t4: V = -0.9 < 0 and M > 0 -> -1, V = 0.1, M = 0
    # Net output 0 = floor((0.5 + 0.8 + 0.8 - 1 - 1) / 1) = floor(0.1) = 0, as the doc says.
    spikes, v, m = scan([0.8, 0.8, -1.0, -1.0], 1.0, 0.5, "zero")
    assert spikes == [1.0, 1.0, -1.0, -1.0]
    assert v == pytest.approx(0.1, abs=1e-6) and m == 0


def test_minus_theta_is_a_hysteresis_band():
    # Same input with theta_neg = -theta: at t3 V = -0.9 is not below -1, so no spike;
    # t4: V = -1.9 < -1 and M > 0 -> -1, V = -0.9, M = 1. The neuron keeps one spike.
    spikes, v, m = scan([0.8, 0.8, -1.0, -1.0], 1.0, 0.5, "minus_theta")
    assert spikes == [1.0, 1.0, 0.0, -1.0]
    assert v == pytest.approx(-0.9, abs=1e-6) and m == 1


def test_off_is_a_plain_integrate_and_fire_neuron():
    # No negative spikes ever: output stays at the two early spikes (asynchrony error).
    spikes, v, m = scan([0.8, 0.8, -1.0, -1.0], 1.0, 0.5, "off")
    assert spikes == [1.0, 1.0, 0.0, 0.0]
    assert v == pytest.approx(-1.9, abs=1e-6) and m == 2


def test_memory_never_goes_negative():
    # Negative input from the start: M = 0, so no negative spike may be sent.
    spikes, v, m = scan([-2.0, -2.0, 3.0], 1.0, 0.0, "zero")
    # t3: V = -4 + 3 = -1 < 0 but M = 0: silent.
    assert spikes == [0.0, 0.0, 0.0] and m == 0


def test_burst_sends_several_spikes_in_one_step():
    # theta = 1, v0 = 0, current 2.5 with up to 3 spikes: t1 V = 2.5 -> two spikes, V = 0.5.
    spikes, v, m = scan([2.5, -2.0], 1.0, 0.0, "zero", max_spikes=3)
    # t2: V = -1.5 < 0, M = 2 -> -1 (V -0.5) -> -1 (V 0.5): two negative spikes.
    assert spikes == [2.0, -2.0] and m == 0
    assert v == pytest.approx(0.5)


def test_weighted_spikes_carry_the_threshold():
    spikes, _, _ = scan([0.7, 0.7, 0.7], 0.5, 0.0, "zero")
    # V: 0.7 -> +0.5 (0.2) ; 0.9 -> +0.5 (0.4) ; 1.1 -> +0.5 (0.6)
    assert spikes == [0.5, 0.5, 0.5]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 12),
    st.sampled_from(["zero", "minus_theta", "off"]),
    st.sampled_from([1, 2, 3, 64]),
    st.integers(0, 2**31 - 1),
)
def test_kernel_matches_numpy_reference(steps, theta_neg, max_spikes, seed):
    rng = np.random.default_rng(seed)
    n, c, s = 2, 3, 4
    currents = rng.normal(0, 1.5, size=(steps, n, c, s)).astype(np.float32)
    theta = rng.uniform(0.2, 2.0, size=c).astype(np.float32)
    v0 = (rng.uniform(0, 1, size=c) * theta).astype(np.float32)
    membrane = np.ascontiguousarray(np.broadcast_to(v0[None, :, None], (n, c, s)))
    memory = np.zeros((n, c, s), dtype=np.int32)
    out = np.empty_like(currents)
    snm_scan(currents, False, theta, THETA_NEG_CODES[theta_neg], max_spikes, membrane.copy(),
             memory.copy(), out)
    ref_v = membrane.copy()
    ref_m = memory.copy()
    th = theta[None, :, None]
    for t in range(steps):
        spikes, ref_v, ref_m = snm_step_reference(currents[t], ref_v, ref_m, th, theta_neg,
                                                  max_spikes)
        np.testing.assert_array_equal(out[t], spikes)


def test_static_input_equals_repeated_input():
    rng = np.random.default_rng(0)
    current = rng.normal(size=(1, 2, 3, 5)).astype(np.float32)
    theta = np.ones(3, np.float32)
    results = []
    for static in (True, False):
        data = current if static else np.repeat(current, 6, axis=0)
        out = np.empty((6, 2, 3, 5), np.float32)
        snm_scan(data, static, theta, 0, 1, np.zeros((2, 3, 5), np.float32),
                 np.zeros((2, 3, 5), np.int32), out)
        results.append(out)
    np.testing.assert_array_equal(*results)


def spike_loop(v, theta, band, max_spikes, memory, allow_negative):
    """The firing rule as the loop it stands for: one spike at a time."""
    sent = 0
    while sent < max_spikes and v >= theta:
        v -= theta
        sent += 1
    if sent == 0 and allow_negative:
        while sent > -max_spikes and v < -band * theta and memory + sent > 0:
            v += theta
            sent -= 1
    return sent


@settings(max_examples=300, deadline=None)
@given(
    st.integers(-400, 400),
    st.integers(1, 16),
    st.sampled_from([0.0, 1.0]),
    st.sampled_from([1, 2, 3, 7, 64]),
    st.integers(0, 100),
    st.booleans(),
)
def test_closed_form_is_the_spike_loop_in_exact_arithmetic(eighths, theta_eighths, band,
                                                          max_spikes, memory,
                                                          allow_negative):
    """Potentials and thresholds on a grid of 1/8, so that every subtraction of the loop is
    exact (and potentials hit multiples of theta, the closed form's boundaries, often)."""
    v = np.array([eighths / 8], np.float32)
    theta = np.array([theta_eighths / 8], np.float32)
    got = signed_spikes_reference(v, theta, np.float32(band), max_spikes,
                                  np.array([memory], np.float32), allow_negative)
    assert got[0] == spike_loop(float(v[0]), float(theta[0]), band, max_spikes, memory,
                                allow_negative)
