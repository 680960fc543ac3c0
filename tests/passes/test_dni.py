"""DNI: the calibration histogram, the objective, and the search for theta and v0."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from snncompiler.errors import CalibrationError
from snncompiler.passes.calibration_stats import ChannelHistogram
from snncompiler.passes.dni import (
    DEFAULT_PERCENTILES,
    NeuronParams,
    choose_neuron_parameters,
    dni_objective,
    spike_output,
    threshold_candidates,
)

FAST = settings(max_examples=50, deadline=None)

finite32 = st.floats(-50, 50, width=32, allow_nan=False, allow_infinity=False)


def batches_of(channels: int, max_batches: int = 4):
    """Lists of (N, channels) float32 batches."""
    batch = hnp.arrays(
        np.float32, st.tuples(st.integers(1, 40), st.just(channels)), elements=finite32
    )
    return st.lists(batch, min_size=1, max_size=max_batches)


def histogram(batches, bins: int) -> ChannelHistogram:
    hist = ChannelHistogram(batches[0].shape[1], bins)
    for batch in batches:
        hist.update(batch)
    return hist


def positives(batches, channel: int) -> np.ndarray:
    values = np.concatenate([b[:, channel] for b in batches]).astype(np.float64)
    return values[values > 0]


# ---------------------------------------------------------------- histogram


@FAST
@given(batches_of(3), st.sampled_from([0.0, 10.0, 50.0, 90.0, 99.0, 99.9, 100.0]))
def test_percentile_is_within_one_bin_of_numpy(batches, q):
    hist = histogram(batches, 64)
    got = hist.percentile(q)
    for c in range(3):
        values = positives(batches, c)
        if values.size == 0:
            assert got[c] == 0
            continue
        # The histogram inverts the CDF at rank q/100 * n, which sits between numpy's
        # "lower" and "higher" order statistics; allow one bin width (plus rounding).
        lo = np.percentile(values, q, method="lower")
        hi = np.percentile(values, q, method="higher")
        width = hist.bin_width[c] * (1 + 1e-9) + 1e-12
        assert lo - width <= got[c] <= hi + width
    np.testing.assert_array_equal(hist.percentile(100), hist.max)


@FAST
@given(
    st.lists(
        hnp.arrays(np.float32, (20, 2), elements=st.floats(0, 1, width=32)), min_size=2, max_size=5
    ),
    st.lists(st.integers(0, 12), min_size=5, max_size=5),
)
def test_range_growth_keeps_counts_exact(raw, exponents):
    # Each batch is scaled up by a power of two or more, so the range grows several times.
    batches = [b * np.float32(2.0**e * 1.37) for b, e in zip(raw, exponents)]
    hist = histogram(batches, 32)
    for c in range(2):
        values = positives(batches, c)
        assert hist.counts[c].sum() == hist.n_positive[c] == values.size
        assert hist.max[c] == (values.max() if values.size else 0)
        if values.size == 0:
            continue
        # Binning all values afresh at the final range gives the very same counts.
        # In float32 like the histogram: a value on a bin edge may round either way in
        # another precision.
        scaled = values.astype(np.float32) / np.float32(hist.upper[c]) * np.float32(32)
        index = np.clip(np.ceil(scaled).astype(np.int64) - 1, 0, 31)
        np.testing.assert_array_equal(hist.counts[c], np.bincount(index, minlength=32))
        np.testing.assert_allclose(
            hist.sums[c], np.bincount(index, weights=values, minlength=32), rtol=1e-12
        )
        # Every bin's mean lies inside the bin.
        full = hist.counts[c] > 0
        means = hist.bin_means()[c][full]
        edges = np.nonzero(full)[0] * hist.bin_width[c]
        # Values are binned in float32, so bin edges hold to float32 precision.
        assert np.all(means > edges * (1 - 1e-6))
        assert np.all(means <= (edges + hist.bin_width[c]) * (1 + 1e-6))


def test_range_grows_by_powers_of_two():
    hist = ChannelHistogram(1, 8)
    hist.update(np.array([[3.0]]))
    assert hist.upper[0] == 3.0
    hist.update(np.array([[5.0]]))
    assert hist.upper[0] == 6.0
    hist.update(np.array([[25.0]]))
    assert hist.upper[0] == 48.0
    # Bins of (0, 48] are 6 wide: 3 (first in bin 7 of (0, 3]) and 5 fall in (0, 6], 25 in
    # (24, 30].
    np.testing.assert_array_equal(hist.counts[0], [2, 0, 0, 0, 1, 0, 0, 0])
    assert hist.max[0] == 25.0


def test_memory_does_not_grow_with_updates():
    rng = np.random.default_rng(0)
    hist = ChannelHistogram(4, 128)
    arrays = (hist.counts, hist.sums, hist.upper, hist.max)
    sizes = [a.nbytes for a in arrays]
    for i in range(200):
        hist.update(rng.normal(size=(8, 4, 3, 3)) * (1 + i))
    assert [a.nbytes for a in (hist.counts, hist.sums, hist.upper, hist.max)] == sizes
    assert hist.counts.shape == (4, 128)
    assert hist.n_total.tolist() == [200 * 8 * 9] * 4


def test_channel_axis_is_one_and_statistics_are_exact():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(10, 3, 4, 5)).astype(np.float32)
    hist = ChannelHistogram(3, 16)
    hist.update(data)
    per_channel = np.moveaxis(data, 1, 0).reshape(3, -1).astype(np.float64)
    np.testing.assert_array_equal(hist.n_positive, (per_channel > 0).sum(1))
    np.testing.assert_array_equal(hist.n_total, [200] * 3)
    np.testing.assert_array_equal(hist.max, per_channel.max(1))
    np.testing.assert_allclose(hist.sum_positive, np.where(per_channel > 0, per_channel, 0).sum(1))
    np.testing.assert_allclose(hist.mean_positive, hist.sum_positive / hist.n_positive)


def test_bad_batches_raise():
    hist = ChannelHistogram(3, 16)
    with pytest.raises(ValueError, match=r"\(N, 3, \.\.\.\)"):
        hist.update(np.zeros((2, 4)))
    with pytest.raises(CalibrationError, match="NaN or infinite"):
        hist.update(np.array([[1.0, np.inf, 0.0]]))


@FAST
@given(batches_of(4))
def test_layer_merge(batches):
    hist = histogram(batches, 64)
    layer = hist.layer()
    assert layer.channels == 1
    assert layer.counts.sum() == layer.n_positive[0] == hist.n_positive.sum()
    assert layer.n_total[0] == hist.n_total.sum()
    assert layer.max[0] == hist.max.max()
    assert layer.percentile(100)[0] == hist.max.max()
    np.testing.assert_allclose(layer.sums.sum(), hist.sums.sum(), rtol=1e-9, atol=1e-9)
    values = np.concatenate([positives(batches, c) for c in range(4)])
    if values.size:
        # Re-binning moves a value at most half a common bin from its own bin.
        lo = np.percentile(values, 50, method="lower")
        hi = np.percentile(values, 50, method="higher")
        width = 1.5 * layer.bin_width[0] * (1 + 1e-9)
        assert lo - width <= layer.percentile(50)[0] <= hi + width


# ---------------------------------------------------------------- the objective


def simulate(a: float, theta: float, v0: float, steps: int, k: int) -> float:
    """SNM neuron with theta_neg = 0 on a constant input, up to k spikes per step.

    Returns the value sent in total divided by T, i.e. the rate the next layer sees.
    """
    v, memory, sent = v0, 0, 0.0
    for _ in range(steps):
        v += a
        spikes = 0
        while spikes < k and v >= theta:
            v -= theta
            spikes += 1
        while spikes == 0 and v < 0 and memory > 0:
            v += theta
            memory -= 1
            sent -= theta
        memory += spikes
        sent += spikes * theta
    return sent / steps


@FAST
@given(
    st.integers(1, 64),
    st.integers(-300, 3000),
    st.data(),
    st.integers(1, 40),
    st.integers(1, 3),
)
def test_closed_form_matches_simulation(theta_8ths, a_64ths, data, steps, k):
    # Dyadic values keep every sum exact, so the comparison can be exact too.
    theta = theta_8ths / 8
    a = a_64ths / 64
    v0 = data.draw(st.integers(0, theta_8ths * 8 - 1)) / 64
    expected = simulate(a, theta, v0, steps, k)
    assert spike_output(a, theta, v0, steps, k) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@FAST
@given(
    st.integers(1, 64),
    st.integers(-3000, 3000),
    st.data(),
    st.integers(1, 40),
    st.integers(1, 3),
    st.sampled_from(["zero", "minus_theta"]),
    st.sampled_from([0.0, 0.125, 0.5, 1.0]),
)
def test_signed_closed_form_matches_the_leaky_neuron(theta_8ths, x_64ths, data, steps, k,
                                                     theta_neg, slope):
    """The leaky neuron (runtime.neuron_variants), run step by step on a constant input x,
    ends with the net count of spike_output(f(x), band=...): the second stage's target."""
    from snncompiler.runtime.neuron_variants import tracking_step_reference

    theta = theta_8ths / 8
    x = x_64ths / 64
    v0 = data.draw(st.integers(0, theta_8ths * 8 - 1)) / 64
    running, memory = np.zeros(1), np.zeros(1, np.int64)
    for t in range(1, steps + 1):
        _, running, memory = tracking_step_reference(
            np.array([x]), running, memory, t, theta, v0, slope, np.inf, theta_neg, k)
    fx = x if x >= 0 else slope * x
    band = 0.0 if theta_neg == "zero" else 1.0
    expected = spike_output(fx, theta, v0, steps, k, band=band)
    assert memory[0] * theta / steps == pytest.approx(expected, rel=1e-12, abs=1e-12)


def random_activations(seed: int, channels: int = 3, n: int = 3000) -> np.ndarray:
    """Pre-activations like a conv layer's: a normal bulk with a heavy right tail."""
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.2, 3.0, size=channels)
    bulk = rng.normal(size=(n, channels)) * scale
    tail = rng.exponential(size=(n, channels)) * scale * (rng.random((n, channels)) < 0.05)
    return (bulk + 3 * tail).astype(np.float32)


@FAST
@given(
    st.integers(0, 2**16),
    st.sampled_from([1, 2, 4, 8, 32, 64]),
    st.integers(1, 2),
    st.sampled_from(["dni", "zero", "half"]),
)
def test_search_is_never_worse_than_zero_or_half(seed, steps, k, initial):
    hist = ChannelHistogram(3, 64)
    hist.update(random_activations(seed, n=500))
    percentiles = (90.0, 99.0, 99.9, 100.0)
    params = choose_neuron_parameters(
        hist, (steps,), percentiles=percentiles, initial_potential=initial, levels_per_step=k
    )
    # The candidates of bursts of k are the percentiles divided by k.
    candidates = (threshold_candidates(hist, percentiles) / k).astype(np.float32)
    zero = np.stack(
        [dni_objective(hist, theta, 0 * theta, steps, k) for theta in candidates.T], axis=1
    )
    half = np.stack(
        [dni_objective(hist, theta, theta / 2, steps, k) for theta in candidates.T], axis=1
    )
    chosen = params.expected_error[0]
    if initial == "dni":
        assert np.all(chosen <= zero.min(axis=1))
        assert np.all(chosen <= half.min(axis=1))
    else:
        # The fixed choices must find the best threshold for their v0 exactly.
        best = (zero if initial == "zero" else half).min(axis=1)
        np.testing.assert_allclose(chosen, best, rtol=1e-9, atol=1e-300)
        np.testing.assert_array_equal(params.v0, params.theta / 2 if initial == "half" else 0)


@pytest.mark.parametrize("steps", [1, 3, 16])
@pytest.mark.parametrize("k", [1, 2])
def test_bucketed_search_matches_brute_force(steps, k):
    hist = ChannelHistogram(3, 256)
    hist.update(random_activations(steps))
    grid = 8
    params = choose_neuron_parameters(hist, (steps,), levels_per_step=k, v0_grid=grid)
    candidates = (threshold_candidates(hist, DEFAULT_PERCENTILES) / k).astype(np.float32)
    brute = np.stack(
        [
            dni_objective(hist, theta, theta * g / grid, steps, k)
            for theta in candidates.T
            for g in range(grid)
        ],
        axis=1,
    )
    np.testing.assert_allclose(params.expected_error[0], brute.min(axis=1), rtol=1e-6)


@FAST
@given(
    st.integers(1, 64),
    st.floats(0.015625, 128, width=32),
    st.lists(st.integers(-5, 64), min_size=1, max_size=200),
    st.integers(1, 3),
)
def test_activations_on_the_grid_convert_exactly(steps, top, multiples, batches):
    # Activations that are multiples of max / T: theta = max is a candidate (percentile
    # 100) and makes the conversion exact, so the search must find zero error.
    top = np.float32(top)
    m = np.clip(np.array(multiples + [steps]), None, steps)
    values = (m * np.float64(top) / steps).astype(np.float32)
    values[-1] = top
    hist = ChannelHistogram(1, 2048)
    for part in np.array_split(values, batches):
        hist.update(part[:, None])
    params = choose_neuron_parameters(hist, (steps,))
    assert params.expected_error[0, 0] <= 1e-10 * float(top) ** 2
    sent = spike_output(values, params.theta[0, 0], params.v0[0, 0], steps)
    np.testing.assert_allclose(sent, np.maximum(values, 0), rtol=0, atol=1e-5 * float(top))


def test_error_shrinks_with_more_timesteps():
    hist = ChannelHistogram(3, 2048)
    for seed in range(4):
        hist.update(random_activations(seed))
    params = choose_neuron_parameters(hist, (4, 16, 64))
    error = params.expected_error
    assert np.all(error[1] < error[0]) and np.all(error[2] < error[1])
    # Quantisation error falls like (theta / T)**2: far more than 10x from T=4 to T=64.
    assert np.all(error[2] < error[0] / 10)
    # And DNI beats the classic max-threshold, v0 = 0 conversion.
    assert np.all(error <= params.baseline_error["p100/zero"])


def test_layer_granularity_shares_parameters():
    hist = ChannelHistogram(3, 512)
    hist.update(random_activations(7))
    params = choose_neuron_parameters(hist, (4, 32), granularity="layer")
    assert params.theta.shape == params.v0.shape == params.expected_error.shape == (2, 3)
    assert np.all(params.theta == params.theta[:, :1])
    assert np.all(params.v0 == params.v0[:, :1])
    per_channel = choose_neuron_parameters(hist, (4, 32))
    # One pair for all channels cannot beat a pair per channel on the same data.
    assert per_channel.expected_error.sum() <= params.expected_error.sum() * (1 + 1e-9)


def test_inactive_channels_and_fixed_thresholds():
    data = random_activations(3)
    data[:, 1] = -np.abs(data[:, 1])  # channel 1 never fires
    hist = ChannelHistogram(3, 512)
    hist.update(data)
    params = choose_neuron_parameters(
        hist, (8, 16), threshold_search=False, initial_potential="half"
    )
    assert params.inactive.tolist() == [False, True, False]
    assert params.theta[:, 1].tolist() == [1.0, 1.0] and params.v0[:, 1].tolist() == [0.0, 0.0]
    assert params.expected_error[:, 1].tolist() == [0.0, 0.0]
    # threshold_search=False takes the last percentile (100: the maximum) for every T.
    np.testing.assert_array_equal(params.theta[:, [0, 2]], np.tile(hist.max[[0, 2]], (2, 1)))
    np.testing.assert_array_equal(params.v0[:, [0, 2]], params.theta[:, [0, 2]] / 2)
    assert np.all(params.percentile[:, [0, 2]] == 100.0)
    assert np.isnan(params.percentile[:, 1]).all()
    for key in ("p100/zero", "p100/half", "p99.9/zero", "p99.9/half"):
        assert params.baseline_error[key].shape == (2, 3)


def test_arguments_are_checked():
    hist = ChannelHistogram(2, 16)
    hist.update(np.ones((3, 2)))
    with pytest.raises(ValueError, match="v0_grid"):
        choose_neuron_parameters(hist, (4,), v0_grid=7)
    with pytest.raises(ValueError, match="percentiles"):
        choose_neuron_parameters(hist, (4,), percentiles=(0.0, 100.0))
    with pytest.raises(ValueError, match="granularity"):
        choose_neuron_parameters(hist, (4,), granularity="tensor")
    params = choose_neuron_parameters(hist, (4,))
    with pytest.raises(ValueError, match=r"NeuronParams.v0 has shape"):
        NeuronParams(
            theta=params.theta,
            v0=params.v0[:, :1],
            expected_error=params.expected_error,
            baseline_error={},
            timesteps=(4,),
            percentile=params.percentile,
            inactive=params.inactive,
        )


def test_each_target_gets_the_thresholds_of_its_own_burst_size():
    """Rows of a multi-T calibration with different burst sizes are each the row that a
    single-T calibration with that size gives: the sizes do not leak into each other."""
    hist = ChannelHistogram(3, 256)
    hist.update(random_activations(5))
    together = choose_neuron_parameters(hist, (2, 4, 16), levels_per_step=(4, 2, 1))
    for row, (steps, k) in enumerate(((2, 4), (4, 2), (16, 1))):
        alone = choose_neuron_parameters(hist, (steps,), levels_per_step=k)
        np.testing.assert_array_equal(together.theta[row], alone.theta[0])
        np.testing.assert_array_equal(together.v0[row], alone.v0[0])


def test_bursts_reach_the_same_clipping_point_with_finer_steps():
    """With bursts of k, k spikes of one step reach the percentile that one spike reaches
    without bursts, so the largest value sent per step is unchanged and the objective
    (the error of a finer quantiser with the same range) is never larger."""
    hist = ChannelHistogram(3, 256)
    hist.update(random_activations(9))
    single = choose_neuron_parameters(hist, (4,), percentiles=(99.9,), threshold_search=False)
    burst = choose_neuron_parameters(hist, (4,), percentiles=(99.9,), threshold_search=False,
                                     levels_per_step=4)
    np.testing.assert_allclose(4 * burst.theta, single.theta, rtol=1e-6)
    assert np.all(burst.expected_error <= single.expected_error + 1e-12)


def test_levels_per_step_must_match_the_targets():
    hist = ChannelHistogram(1, 16)
    hist.update(random_activations(1, n=50, channels=1))
    with pytest.raises(ValueError, match="one positive integer per T"):
        choose_neuron_parameters(hist, (2, 4), levels_per_step=(2,))
