"""DNI, data-based neuronal initialisation: thresholds and initial potentials from data.

The model. A neuron whose input is a constant ``a`` for T steps, with threshold ``theta``,
initial potential ``0 <= v0 < theta``, ``theta_neg = 0`` and at most k spikes per step,
sends in total

    q(a) = theta / T * clip(floor((T * a + v0) / theta), 0, k * T)

Why: while the input keeps up (``a <= k * theta``) the membrane after t steps is
``v0 + t * a - theta * n(t)`` with ``n(t)`` the spikes sent so far, and the neuron fires
whenever it can, so ``n(t) = floor((v0 + t * a) / theta)``; at most k spikes fit in a step,
which caps the total at ``k * T`` (k = 1 is the paper's neuron, capped at T). For ``a <= 0``
the membrane never reaches ``theta`` from ``v0 < theta``, nothing is sent and ``q(a) = 0``,
matching ``relu(a)``: negative activations cost no error.

The objective. For every channel (or the whole layer) DNI picks

    (theta, v0) = argmin  E_a[(relu(a) - q(a))^2]

over the calibration activations of that channel, the expectation taken over all of them
(zeros and negatives included, which contribute nothing). The histogram stands in for the
data: every bin counts as its values' mean (see :class:`ChannelHistogram`), weighted by its
count. ``theta`` is searched over percentiles of the positive activations, ``v0`` over the
grid ``{g * theta / G : g = 0 .. G-1}`` with G even, which holds ``v0 = 0`` (the SNM code)
and ``v0 = theta / 2`` (Bu et al. 2022) exactly.

The search. Write ``u = T * a / theta`` (activation in steps of ``theta / T``),
``f = u - floor(u)`` and ``phi = v0 / theta``. For ``u < k * T`` the neuron rounds u down
when ``f < 1 - phi`` (error ``f^2``) and up otherwise (error ``(1 - f)^2``); for
``u >= k * T`` it is clipped (error ``(u - k * T)^2``, independent of ``v0``). On the grid
``phi = g / G`` the test ``f < 1 - g / G`` is ``floor(f * G) < G - g``, so bucketing the
bins by ``floor(f * G)`` and taking cumulative sums gives the objective at all G values of
``v0`` for the cost of one pass over the bins.

What the search finds. ``phi = 1/2`` rounds every u below the cap to its nearest integer,
which is the smallest error for that u, whatever the data and theta (the clipped part does
not depend on v0). So for this objective, on constant inputs, ``v0 = theta / 2`` is optimal
for every activation at once and the v0 search can only tie with it; ties go to theta / 2.
The gain of DNI here comes from choosing theta per channel and per T. A data-dependent v0
needs inputs that are not constant over time (deeper layers), see the second stage in
docs/DNISNM.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from snncompiler.context import GRANULARITIES, INITIAL_POTENTIALS

from .calibration_stats import ChannelHistogram

# Threshold of channels that had no positive activation on the calibration data. Any
# positive value does: with v0 = 0 and inputs that never exceed 0, they never fire.
INACTIVE_THETA = 1.0

# Threshold candidates: percentiles of each channel's positive activations. Going down to
# the 90th matters at small T, where clipping a few large values buys a finer step for
# all the others (docs/results/fidelity.md, the threshold-grid ablation).
DEFAULT_PERCENTILES = (90.0, 95.0, 97.0, 98.0, 99.0, 99.5, 99.7, 99.9, 99.95, 99.99, 100.0)

# Percentile thresholds whose objective is reported as baselines, with v0 = 0 and theta / 2.
BASELINE_PERCENTILES = (100.0, 99.9)

# Largest number of float64 elements of one (channels, candidates, bins) block; about ten
# arrays of that size live at once, so this caps the search's temporary memory near 40 MB.
_CHUNK_ELEMENTS = 1 << 19

# Objectives this close to the best count as ties, which go to the preferred candidate.
_TIE_RTOL = 1e-9


@dataclass(frozen=True, eq=False)
class NeuronParams:
    """DNI parameters of one activation tensor, one row per target T.

    Attributes:
        theta: ``(K, C)`` float32 thresholds, positive and finite.
        v0: ``(K, C)`` float32 initial potentials, ``0 <= v0 < theta``.
        expected_error: ``(K, C)`` float64, the objective ``E[(relu(a) - q(a))^2]`` at the
            chosen parameters (float32 values as the runtime will use them), estimated from
            the histogram's bin means.
        baseline_error: Objective of classic choices, for reports: keys
            ``"p100/zero"``, ``"p100/half"``, ``"p99.9/zero"``, ``"p99.9/half"`` (threshold
            percentile / ``v0`` of 0 or theta/2), each ``(K, C)`` float64.
        timesteps: The K target T values, in row order.
        percentile: ``(K, C)`` float64, the percentile that gave each threshold (NaN for
            inactive channels at channel granularity).
        inactive: ``(C,)`` bool, channels without any positive calibration activation.
            At channel granularity they get ``theta = 1`` and ``v0 = 0``; at layer
            granularity they share the layer's values. Either way they never fire on
            inputs like the calibration data.
    """

    theta: np.ndarray
    v0: np.ndarray
    expected_error: np.ndarray
    baseline_error: dict[str, np.ndarray]
    timesteps: tuple[int, ...]
    percentile: np.ndarray
    inactive: np.ndarray

    def __post_init__(self):
        shape = (len(self.timesteps), self.inactive.shape[0])
        arrays = {
            "theta": self.theta,
            "v0": self.v0,
            "expected_error": self.expected_error,
            "percentile": self.percentile,
            **{f"baseline_error[{k!r}]": v for k, v in self.baseline_error.items()},
        }
        for name, array in arrays.items():
            if array.shape != shape:
                raise ValueError(f"NeuronParams.{name} has shape {array.shape}, expected {shape}")
        if not (np.isfinite(self.theta).all() and (self.theta > 0).all()):
            raise ValueError("NeuronParams.theta must be positive and finite")
        if not ((self.v0 >= 0).all() and (self.v0 < self.theta).all()):
            raise ValueError("NeuronParams.v0 must lie in [0, theta)")

    @property
    def channels(self) -> int:
        """Number of channels C."""
        return self.inactive.shape[0]


def spike_output(
    a: np.ndarray,
    theta: np.ndarray | float,
    v0: np.ndarray | float,
    timesteps: int,
    max_spikes_per_step: int = 1,
    band: float | None = None,
) -> np.ndarray:
    """What the neuron sends for a constant input, averaged over T steps: q(a).

    ``q(a) = theta / T * clip(floor((T * a + v0) / theta), 0, k * T)`` with k the maximum
    number of spikes per step; see the module docstring for the derivation. Broadcasts.

    With ``band`` (a leaky neuron, whose count goes negative with ``a = f(x) < 0``; its
    ``theta_neg = -band * theta``): ``theta / T`` times :func:`signed_spike_count`.
    """
    if band is not None:
        return theta / timesteps * signed_spike_count(a, theta, v0, timesteps,
                                                      max_spikes_per_step, band)
    steps = np.floor((timesteps * np.asarray(a, dtype=np.float64) + v0) / theta)
    return theta / timesteps * np.clip(steps, 0, max_spikes_per_step * timesteps)


def signed_spike_count(a, theta, v0, timesteps: int, max_spikes_per_step: int,
                       band: float) -> np.ndarray:
    """The net spikes a signed (leaky) neuron sends in T steps of a constant input ``a``
    from ``0 <= v0 < theta``, with ``theta_neg = -band * theta`` (band 0 or 1). Broadcasts.

    Write ``u(t) = (v0 + t * a) / theta``. Upwards (``a >= 0``) it is the ReLU neuron's
    ``min(floor(u(T)), k * T)``. Downwards the neuron fires while ``V < -band * theta``,
    each spike lifting ``V`` by theta, so without the cap it ends in
    ``[-band * theta, -band * theta + theta)``: ``floor(u(T)) + band`` spikes (none while
    ``u(T) >= -band``). With the cap, the count after t steps is the smaller in size of what
    the potential asks for and the count one step earlier plus k; for a constant input that
    is the first step's count plus ``k * (T - 1)`` when ``-a`` is above ``k * theta``, so

        n = max(floor(u(T)) + band, floor(u(1)) + band - k * (T - 1), -k * T), at most 0.

    With band 1 the second term matters: the first step leaves ``V`` a whole theta short of
    what the cap allows, and the cap never lets the neuron make it up. It is what
    ``tests/passes/test_dni.py`` finds by running the neuron step by step.
    """
    a = np.asarray(a, dtype=np.float64)
    top = max_spikes_per_step * timesteps
    total = np.floor((timesteps * a + v0) / theta)
    first = np.floor((a + v0) / theta)
    down = np.maximum(np.maximum(total + band, first + band - (top - max_spikes_per_step)),
                      -top)
    return np.where(a >= 0, np.clip(total, 0, top), np.minimum(down, 0))


def dni_objective(
    hist: ChannelHistogram,
    theta: np.ndarray,
    v0: np.ndarray,
    timesteps: int,
    max_spikes_per_step: int = 1,
) -> np.ndarray:
    """The DNI objective ``E[(relu(a) - q(a))^2]`` of every channel, in closed form.

    Args:
        hist: Calibration histogram of C channels.
        theta: ``(C,)`` thresholds.
        v0: ``(C,)`` initial potentials in ``[0, theta)``.
        timesteps: T.
        max_spikes_per_step: k.

    Returns:
        ``(C,)`` float64, over all calibration values of each channel.
    """
    return _objective(_Weighted.of(hist), theta, v0, timesteps, max_spikes_per_step)


def _objective(hist: _Weighted, theta, v0, timesteps: int, k: int) -> np.ndarray:
    """:func:`dni_objective` of a histogram whose means and weights are already read."""
    theta = np.asarray(theta, dtype=np.float64).reshape(-1, 1)
    v0 = np.asarray(v0, dtype=np.float64).reshape(-1, 1)
    return _direct(hist, theta, v0, timesteps, k)[:, 0]


def threshold_candidates(hist: ChannelHistogram, percentiles: Sequence[float]) -> np.ndarray:
    """``(C, P)`` candidate thresholds: the percentiles of each channel's positive values.

    Rounded to float32, the precision the runtime uses, so the search scores the values
    that will run. A percentile that comes out as 0 (possible for low percentiles of
    sparse channels) is replaced by the channel's maximum; channels without positive values
    get :data:`INACTIVE_THETA`.
    """
    values = np.stack([hist.percentile(q) for q in percentiles], axis=1)
    values = np.where(values > 0, values, hist.max[:, None])
    values = np.where(values > 0, values, INACTIVE_THETA)
    return values.astype(np.float32).astype(np.float64)


def choose_neuron_parameters(
    hist: ChannelHistogram,
    timesteps: Sequence[int],
    *,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    threshold_search: bool = True,
    initial_potential: str = "dni",
    granularity: str = "channel",
    levels_per_step: int | Sequence[int] = 1,
    v0_grid: int = 32,
) -> NeuronParams:
    """Picks (theta, v0) per channel and per target T by the DNI objective.

    Args:
        hist: Calibration histogram of the activation (the input of a Relu).
        timesteps: Target T values; one row of parameters each.
        percentiles: Threshold candidates, percentiles of the positive activations.
        threshold_search: Search theta among ``percentiles``; when False the last one is
            used as is.
        initial_potential: ``"dni"`` searches v0 on the grid, ``"half"`` fixes
            ``v0 = theta / 2``, ``"zero"`` fixes ``v0 = 0``.
        granularity: ``"channel"`` (one pair per channel) or ``"layer"`` (one pair for the
            whole tensor, from :meth:`ChannelHistogram.layer`, broadcast to all channels).
        levels_per_step: k, the burst size that each target T's thresholds are chosen for
            (one value for all, or one per entry of ``timesteps``): the candidates are the
            percentiles divided by k, so that k spikes of a step reach the percentile, and
            the objective is that of a neuron with bursts of up to k.
        v0_grid: G, the number of v0 values searched, ``g * theta / G`` for
            ``g = 0 .. G-1``; even, so that ``theta / 2`` is on the grid.

    Returns:
        The parameters, with ``expected_error`` and baselines evaluated per channel.

    With ``"dni"`` the result is never worse on the histogram than v0 = 0 or theta / 2
    with any of the candidate thresholds: those are on the grid, and the winner is checked
    against them in closed form before it is kept.
    """
    timesteps = tuple(int(t) for t in timesteps)
    if not timesteps or min(timesteps) < 1:
        raise ValueError(f"timesteps must be positive integers, got {timesteps}")
    if not percentiles or not all(0 < q <= 100 for q in percentiles):
        raise ValueError(f"percentiles must lie in (0, 100], got {tuple(percentiles)}")
    if initial_potential not in INITIAL_POTENTIALS:
        raise ValueError(
            f"initial_potential must be one of {INITIAL_POTENTIALS}, got {initial_potential!r}"
        )
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    levels = ([int(levels_per_step)] * len(timesteps) if np.isscalar(levels_per_step)
              else [int(k) for k in levels_per_step])
    if len(levels) != len(timesteps) or min(levels) < 1:
        raise ValueError(f"levels_per_step must be one positive integer per T, got "
                         f"{levels_per_step} for T = {timesteps}")
    if v0_grid < 2 or v0_grid % 2:
        raise ValueError(f"v0_grid must be even and at least 2 (to hold theta/2), got {v0_grid}")

    percentiles = tuple(float(q) for q in percentiles)
    if not threshold_search:
        percentiles = percentiles[-1:]
    # The fixed choices are one-point grids: phi = 1/2 is g = 1 of G = 2, phi = 0 is g = 0.
    grid_size, steps = {
        "dni": (v0_grid, np.arange(v0_grid)),
        "half": (2, np.array([1])),
        "zero": (2, np.array([0])),
    }[initial_potential]

    source = hist.layer() if granularity == "layer" else hist
    percentile_values = threshold_candidates(source, percentiles)
    # The bins' means and weights, once: the searches and checks below read them some
    # thirty times (every T, candidate group and classic choice). Computed at each read,
    # they took a sixth of EfficientNet-Lite0's threshold search (profiled by hand); once,
    # a 672-channel layer's search over 7 level counts and 4 T ran 18% faster, same bits.
    weighted = _Weighted.of(hist)
    source_weighted = weighted if source is hist else _Weighted.of(source)
    shape = (len(timesteps), source.channels)
    theta, v0, chosen = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    # Targets with the same burst size share their candidates: one search per size.
    for k in sorted(set(levels)):
        rows = [i for i, size in enumerate(levels) if size == k]
        group = tuple(timesteps[i] for i in rows)
        candidates = (percentile_values / k).astype(np.float32).astype(np.float64)
        p_index, phi = _search(source_weighted, candidates, group, k, grid_size, steps)
        theta_k = candidates[np.arange(source.channels)[None, :], p_index]
        v0_k = phi * theta_k
        chosen_k = np.asarray(percentiles)[p_index]
        if initial_potential == "dni":
            theta_k, v0_k, chosen_k = _keep_best_of_classic(
                source_weighted, candidates, percentiles, theta_k, v0_k, chosen_k, group, k
            )
        theta[rows], v0[rows], chosen[rows] = theta_k, v0_k, chosen_k

    inactive = hist.n_positive == 0
    if granularity == "layer":
        theta = np.broadcast_to(theta, (len(timesteps), hist.channels))
        v0 = np.broadcast_to(v0, theta.shape)
        chosen = np.broadcast_to(chosen, theta.shape).astype(np.float64)
    else:
        theta = np.where(inactive, INACTIVE_THETA, theta)
        v0 = np.where(inactive, 0.0, v0)
        chosen = np.where(inactive, np.nan, chosen)
    theta32, v032 = _as_float32(theta, v0)

    expected = np.stack(
        [
            _direct(weighted, theta32[i, :, None], v032[i, :, None], t, k)[:, 0]
            for i, (t, k) in enumerate(zip(timesteps, levels))
        ]
    )
    return NeuronParams(
        theta=theta32,
        v0=v032,
        expected_error=expected,
        baseline_error=_baselines(weighted, source, timesteps, levels),
        timesteps=timesteps,
        percentile=np.ascontiguousarray(chosen, dtype=np.float64),
        inactive=inactive,
    )


def _as_float32(theta: np.ndarray, v0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 copies, with v0 kept strictly below theta should rounding meet them."""
    theta32 = np.ascontiguousarray(theta, dtype=np.float32)
    v032 = np.ascontiguousarray(v0, dtype=np.float32)
    v032 = np.minimum(v032, np.nextafter(theta32, np.float32(0)))
    return theta32, v032


@dataclass(frozen=True)
class _Weighted:
    """A histogram as the objective reads it: ``(C, bins)`` bin means and counts (float64),
    and ``(C,)`` values per channel (at least 1)."""

    means: np.ndarray
    weights: np.ndarray
    total: np.ndarray

    @classmethod
    def of(cls, hist: ChannelHistogram) -> _Weighted:
        return cls(hist.bin_means(), hist.counts.astype(np.float64),
                   np.maximum(hist.n_total, 1).astype(np.float64))

    @property
    def channels(self) -> int:
        return self.means.shape[0]

    @property
    def bins(self) -> int:
        return self.means.shape[1]


def _direct(
    hist: _Weighted, theta: np.ndarray, v0: np.ndarray, timesteps: int, k: int
) -> np.ndarray:
    """Closed-form objective for ``(C, P)`` pairs of theta and v0: ``(C, P)`` float64."""
    means, weights, total = hist.means, hist.weights, hist.total
    out = np.empty(theta.shape, dtype=np.float64)
    chunk = max(1, _CHUNK_ELEMENTS // (theta.shape[1] * hist.bins))
    for lo in range(0, hist.channels, chunk):
        part = slice(lo, lo + chunk)
        a = means[part, None, :]
        q = spike_output(a, theta[part, :, None], v0[part, :, None], timesteps, k)
        out[part] = np.einsum("cpb,cb->cp", (a - q) ** 2, weights[part]) / total[part, None]
    return out


def _search(
    hist: _Weighted,
    candidates: np.ndarray,
    timesteps: tuple[int, ...],
    k: int,
    grid_size: int,
    steps: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Best (threshold candidate, v0 grid point) per channel and T.

    Ties (within ``_TIE_RTOL``) go to the v0 closest to theta / 2, which sits farthest from
    every rounding edge and so is least sensitive to activations the data did not show,
    then to the higher percentile, which clips less.

    Returns:
        ``(K, C)`` index into the candidates and ``(K, C)`` phi = v0 / theta.
    """
    channels, count = candidates.shape
    phis = steps / grid_size
    # Flattened (candidate, grid point) indices in order of preference for ties.
    p_of = np.repeat(np.arange(count), len(steps))
    s_of = np.tile(np.arange(len(steps)), count)
    order = np.lexsort((-p_of, np.abs(phis[s_of] - 0.5)))

    means, weights, total = hist.means, hist.weights, hist.total
    shape = (len(timesteps), channels)
    best_p = np.zeros(shape, dtype=np.int64)
    best_phi = np.zeros(shape, dtype=np.float64)
    chunk = max(1, _CHUNK_ELEMENTS // (count * hist.bins))
    for lo in range(0, channels, chunk):
        part = slice(lo, lo + chunk)
        for i, t in enumerate(timesteps):
            objective = (
                _grid_objective(
                    means[part], weights[part], candidates[part], t, k, grid_size, steps
                )
                / total[part, None, None]
            )
            flat = objective.reshape(objective.shape[0], -1)[:, order]
            lowest = flat.min(axis=1, keepdims=True)
            pick = order[np.argmax(flat <= lowest * (1 + _TIE_RTOL), axis=1)]
            best_p[i, part] = p_of[pick]
            best_phi[i, part] = phis[s_of[pick]]
    return best_p, best_phi


def _grid_objective(
    means: np.ndarray,
    weights: np.ndarray,
    theta: np.ndarray,
    timesteps: int,
    k: int,
    grid_size: int,
    steps: np.ndarray,
) -> np.ndarray:
    """Summed squared error at every (channel, theta candidate, v0 grid point).

    Args:
        means: ``(c, B)`` bin means; weights: ``(c, B)`` bin counts.
        theta: ``(c, P)`` threshold candidates.
        timesteps, k: T and the burst size.
        grid_size: G; ``steps``: the grid indices g to evaluate (v0 = g * theta / G).

    Returns:
        ``(c, P, len(steps))`` float64, not yet divided by the number of values.
    """
    channels, count = theta.shape
    cap = k * timesteps
    # T * a / theta in the order spike_output computes it (for v0 = 0 the two must agree to
    # the last bit: an activation equal to theta is u = T exactly, not T - 1 ulp, which
    # floor would send a whole step down).
    u = (timesteps * means)[:, None, :] / theta[:, :, None]
    w = weights[:, None, :]
    clipped = u >= cap
    tail = np.einsum(
        "cpb,cpb->cp", np.where(clipped, u - cap, 0.0) ** 2, np.broadcast_to(w, u.shape)
    )
    inside = np.where(clipped, 0.0, w)
    f = u - np.floor(u)
    del u, clipped

    rows = channels * count
    bucket = np.minimum((f * grid_size).astype(np.int64), grid_size - 1)
    bucket += (np.arange(rows, dtype=np.int64) * grid_size).reshape(channels, count, 1)
    bucket = bucket.ravel()
    size = rows * grid_size
    down = np.bincount(bucket, weights=(inside * f * f).ravel(), minlength=size)
    up = np.bincount(bucket, weights=(inside * (1 - f) ** 2).ravel(), minlength=size)
    down = np.cumsum(down.reshape(channels, count, grid_size), axis=2)
    up = np.cumsum(up.reshape(channels, count, grid_size), axis=2)
    zero = np.zeros((channels, count, 1))
    down = np.concatenate([zero, down], axis=2)
    up = np.concatenate([zero, up], axis=2)

    # Buckets below G - g round down, the others round up.
    cut = grid_size - steps
    error = down[..., cut] + (up[..., -1:] - up[..., cut]) + tail[..., None]
    return error * ((theta / timesteps) ** 2)[..., None]


def _keep_best_of_classic(source, candidates, percentiles, theta, v0, chosen, timesteps, k):
    """Swaps the searched pair for v0 = 0 or theta/2 wherever one of those scores better.

    Both are on the search grid, so this changes something only where floating-point
    rounding at a rounding edge made the bucketed objective and the closed form disagree;
    it turns "never worse than the classic choices" from nearly true into true.
    """
    theta = theta.copy()
    v0 = v0.copy()
    chosen = chosen.copy()
    pairs_theta = np.concatenate([candidates, candidates], axis=1)
    pairs_v0 = np.concatenate([np.zeros_like(candidates), candidates / 2], axis=1)
    pairs_q = np.concatenate([percentiles, percentiles])
    theta32, v032 = _as_float32(pairs_theta, pairs_v0)
    for i, t in enumerate(timesteps):
        mine32, my_v032 = _as_float32(theta[i], v0[i])
        mine = _direct(source, mine32[:, None], my_v032[:, None], t, k)[:, 0]
        classic = _direct(source, theta32.astype(np.float64), v032.astype(np.float64), t, k)
        best = np.argmin(classic, axis=1)
        rows = np.arange(source.channels)
        better = classic[rows, best] < mine
        theta[i, better] = pairs_theta[rows, best][better]
        v0[i, better] = pairs_v0[rows, best][better]
        chosen[i, better] = pairs_q[best][better]
    return theta, v0, chosen


def _baselines(
    hist: _Weighted, source: ChannelHistogram, timesteps: tuple[int, ...],
    levels: list[int],
) -> dict[str, np.ndarray]:
    """Objective of the classic choices (one spike per step), evaluated per channel of
    ``hist``; the objective is that of the neuron with ``levels`` spikes per step."""
    thresholds = threshold_candidates(source, BASELINE_PERCENTILES)
    thresholds = np.broadcast_to(thresholds, (hist.channels, len(BASELINE_PERCENTILES)))
    out = {}
    for j, q in enumerate(BASELINE_PERCENTILES):
        for label, fraction in (("zero", 0.0), ("half", 0.5)):
            theta32, v032 = _as_float32(thresholds[:, j], thresholds[:, j] * fraction)
            out[f"p{q:g}/{label}"] = np.stack(
                [_objective(hist, theta32, v032, t, k) for t, k in zip(timesteps, levels)])
    return out
