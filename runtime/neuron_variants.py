"""SNM variants for other piecewise-linear activations: ReLU6/Clip and LeakyReLU/PReLU.

A Signed Neuron with Memory sends, in net, ``theta * M`` where the spike count ``M``
follows ``floor((v0 + A) / theta)`` of the integrated input ``A(t) = z(1) + ... + z(t)``,
clipped at 0: the running output tracks ``relu(A)``. The same neuron converts any
activation ``f`` that is positively homogeneous, ``f(t * a) = t * f(a)``, by tracking
``f_t(A)`` instead, where ``f_t`` is ``f`` with its bounds grown to ``t`` times their size
(DNISNM doc, "The same idea generalises")::

    f_t(A) = min(max(A, 0) + slope * min(A, 0), upper * t)

    snm_clip   slope = 0, upper = the clip bound      (ReLU6 = Clip(0, 6); a Clip with
                                                       other bounds is shifted to this
                                                       form by the compiler)
    snm_leaky  slope = the negative slope per channel (LeakyRelu, PRelu), upper = inf

For a constant input ``a`` the running output after T steps is then
``theta * floor((v0 + T * f(a)) / theta)``, the ReLU neuron's quantisation of ``f(a)``.

Step, per neuron, with ``S`` the running input sum, ``M`` the net spike count and
``k = max_spikes_per_step``::

    S += z(t);   V = v0 + f_t(S) - theta * M          (the membrane SNM would have)
    repeat up to k times:
        if V >= theta:                     s = +theta
        elif V < theta_neg:                s = -theta   (never when theta_neg is "off")
        else:                              stop
        V -= s;  M += s / theta
    emit the sum of the s of this step

``theta_neg`` is 0 (``"zero"``) or ``-theta`` (``"minus_theta"``, a hysteresis band), as
for SNM. Since ``f_t >= 0`` for the clip neuron, its ``M`` never goes below 0 (no "M > 0"
test is needed); the leaky neuron's ``M`` goes negative with its input, so it needs
negative spikes and has no ``"off"``. ``S`` is kept in float64 so that the bound
``upper * t`` and the comparison stay exact over long runs.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from snncompiler.runtime.graph import Value
from snncompiler.runtime.neurons import THETA_NEG_CODES, neuron_current, spikes_sent


def tracked_value(running, slope, upper, t):
    """``f_t(S)``: the activation of the running input, its bound grown to ``upper * t``."""
    running = np.asarray(running, dtype=np.float64)
    value = np.maximum(running, 0) + slope * np.minimum(running, 0)
    return np.minimum(value, upper * t)


def tracking_step_reference(z, running, memory, t, theta, v0, slope, upper, theta_neg: str,
                            max_spikes: int = 1):
    """One step of the tracking neuron on numpy arrays: the readable definition.

    Args:
        z: Input current at step ``t`` (1-based), any shape.
        running: Running input sum before this step (not modified).
        memory: Net spike count so far, integer (not modified).
        t: The number of this step, 1 for the first.
        theta, v0, slope, upper: Broadcastable to ``z``; ``upper`` may be ``inf``.
        theta_neg: ``"zero"``, ``"minus_theta"`` or ``"off"``.
        max_spikes: Most spikes per step.

    Returns:
        ``(spikes, running, memory)`` after the step; spikes carry their value (+-theta).
    """
    running = running + np.asarray(z, dtype=np.float64)
    theta = np.broadcast_to(np.asarray(theta, dtype=np.float64), running.shape)
    v = v0 + tracked_value(running, slope, upper, t) - theta * memory
    neg = np.zeros_like(v) if theta_neg == "zero" else -theta
    count = np.zeros(running.shape, dtype=np.int64)
    for _ in range(max_spikes):
        up = (v >= theta) & (count >= 0)
        down = ~up & (v < neg) & (count <= 0) & (theta_neg != "off")
        v = v - theta * up + theta * down
        count = count + up - down
    return count * theta, running, memory + count


def tracking_parameters(node) -> tuple[np.ndarray, float]:
    """``(slope, upper)`` of the ``f_t`` a ``snm_clip`` or ``snm_leaky`` node tracks: slope
    (C,) float64 per channel, ``upper`` the bound per step (``inf`` for the leaky neuron).
    Both executors read the node's parameters through this function."""
    channels = node.shape[0] if node.shape else 1
    if node.op == "snm_clip":
        return np.zeros(channels), float(node.attrs["upper"])
    if node.op == "snm_leaky":
        return node.arrays["slope"].astype(np.float64), math.inf
    raise ValueError(f"node {node.name!r}: op {node.op!r} is not a tracking neuron "
                     "(snm_clip, snm_leaky)")


@njit(cache=True, inline="always")
def _spikes(running, memory, theta, v0, slope, bound, theta_neg_code, max_spikes):
    """The signed number of spikes one tracking neuron sends after its running input became
    ``running`` (float64), having sent ``memory`` in net; ``bound`` is ``upper * t``.
    The firing rule of the module docstring, for :func:`tracking_scan` (``_one_spike`` and
    ``_track_bursts`` do the same operations as selects, for :func:`tracking_step`)."""
    value = running if running >= 0.0 else slope * running
    value = min(value, bound)
    v = v0 + value - theta * memory
    sent = 0
    while sent < max_spikes and v >= theta:
        v -= theta
        sent += 1
    if sent == 0 and theta_neg_code != 2:
        neg = 0.0 if theta_neg_code == 0 else -theta
        while sent > -max_spikes and v < neg:
            v += theta
            sent -= 1
    return sent


@njit(cache=True)
def tracking_step(z, theta, v0, slope, upper, elapsed, theta_neg_code, max_spikes, inner,
                  running, memory, out):
    """One step of a layer of tracking neurons for one sample (the fused executor's kernel).

    Args:
        z: Input current, flat (a sample in storage order).
        theta, v0, slope: (C,) float64 per-channel parameters.
        upper: The bound of ``f`` (``inf`` for the leaky neuron); elapsed: this step's
            number t (1-based), float64.
        theta_neg_code: 0 zero, 1 minus_theta, 2 off; max_spikes: most spikes per step.
        inner: Neurons of one channel stored one after the other: neuron i is in channel
            ``(i // inner) % C`` (1 for channels-last tensors).
        running: float64, memory: int32, like ``z``: running input sums and net spike
            counts, updated in place.
        out: Receives the weighted spikes.

    Returns:
        The number of spikes sent (a burst of k counts k).
    """
    bound = upper * elapsed
    if max_spikes == 1:
        _track_one_spike(z, theta, v0, slope, bound, theta_neg_code, inner, running, memory,
                         out)
        spikes = 0
        # In a loop of its own: a reduction would keep the neuron loop from vectorising.
        for i in range(out.size):
            spikes += out[i] != 0
        return spikes
    return _track_bursts(z, theta, v0, slope, bound, theta_neg_code, max_spikes, inner,
                         running, memory, out)


# Neurons per block of the burst kernels (here and kernels._snm_bursts): a block's arrays
# stay in the L1 cache over its max_spikes passes.
BURST_BLOCK = 512


@njit(cache=True)
def _track_bursts(z, theta, v0, slope, bound, theta_neg_code, max_spikes, inner, running,
                  memory, out):
    """:func:`tracking_step` for neurons that may send up to ``max_spikes`` spikes a step."""
    # As kernels._snm_bursts: max_spikes passes over a block of neurons, each deciding one
    # more spike with selects only, so that every pass vectorises. The passes are flat
    # loops over per-neuron copies of the channel parameters (a loop over channels inside
    # a loop over groups did not vectorise); the float64 V waits between passes in
    # ``membrane``. The operations per neuron are those of _spikes (test_fused_tracking
    # checks it bit for bit).
    channels = theta.size
    allow_negative = theta_neg_code != 2
    neg_scale = 0.0 if theta_neg_code == 0 else -1.0
    # channels-last: a block is whole groups, with the same parameters every time
    span = max(1, BURST_BLOCK // channels) * channels if inner == 1 else inner
    membrane = np.empty(span)
    th = np.empty(span)
    v = np.empty(span)
    s = np.empty(span)
    spikes = 0
    if inner == 1:
        for j in range(span):
            th[j] = theta[j % channels]
            v[j] = v0[j % channels]
            s[j] = slope[j % channels]
        for start in range(0, z.size, span):
            end = min(start + span, z.size)
            spikes += _track_block(z[start:end], th, v, s, bound, allow_negative, neg_scale,
                                   max_spikes, running[start:end], memory[start:end],
                                   out[start:end], membrane)
        return spikes
    for g in range(z.size // (channels * inner)):
        for c in range(channels):
            th[:] = theta[c]
            v[:] = v0[c]
            s[:] = slope[c]
            start = (g * channels + c) * inner
            end = start + inner
            spikes += _track_block(z[start:end], th, v, s, bound, allow_negative, neg_scale,
                                   max_spikes, running[start:end], memory[start:end],
                                   out[start:end], membrane)
    return spikes


@njit(cache=True)
def _track_block(z, theta, v0, slope, bound, allow_negative, neg_scale, max_spikes, running,
                 memory, out, membrane):
    # _track_bursts on one block; theta, v0, slope and membrane are per neuron (at least
    # as long as the block).
    for i in range(z.size):  # _spikes up to its loops: V before any spike of this step
        a = running[i] + z[i]
        value = a if a >= 0.0 else slope[i] * a
        value = min(value, bound)
        membrane[i] = v0[i] + value - theta[i] * memory[i]
        running[i] = a
        out[i] = 0.0
    for _ in range(max_spikes):
        _track_one_more(z.size, theta, allow_negative, neg_scale, membrane, out)
        # A large cap costs only the passes that some neuron of the block still needs.
        if not _track_wants_more(z.size, theta, allow_negative, neg_scale, membrane, out):
            break
    spikes = 0
    for i in range(out.size):  # a loop of its own: a reduction would not vectorise
        spikes += np.int64(abs(out[i]))
    for i in range(out.size):
        sent = out[i]
        memory[i] += np.int32(sent)
        out[i] = sent * theta[i]
    return spikes


@njit(cache=True, inline="always")
def fires_again(theta, v, sent, allow_negative, neg_scale, can_take_back):
    """``(up, down)``: whether a neuron at potential ``v`` that has sent ``sent`` spikes so
    far this step sends one more positive or one more negative spike: the burst loop's
    tests, shared by the SNM and tracking kernels' passes and their early stops. ``sent``
    keeps a neuron from turning from positive spikes to negative ones or back (the scalar
    loop tries negative spikes only when no positive one was sent); ``can_take_back`` is
    the SNM's "M > 0" (always true for the tracking neurons)."""
    up = sent >= 0 and v >= theta
    down = allow_negative and sent <= 0 and v < theta * neg_scale and can_take_back
    return up, down


@njit(cache=True)
def _track_one_more(size, theta, allow_negative, neg_scale, membrane, out):
    # One pass of _track_block. As in kernels._snm_one_more, the sign of ``sent`` keeps a
    # neuron from turning from positive spikes to negative ones or back; there is no
    # "M > 0" test (the module docstring says why).
    for i in range(size):
        th = theta[i]
        v = membrane[i]
        sent = out[i]
        up, down = fires_again(th, v, sent, allow_negative, neg_scale, True)
        membrane[i] = v - th if up else (v + th if down else v)
        out[i] = sent + 1.0 if up else (sent - 1.0 if down else sent)


@njit(cache=True)
def _track_wants_more(size, theta, allow_negative, neg_scale, membrane, out):
    # Whether another pass of _track_one_more would change any neuron (its tests, stopping
    # at the first that would fire): skipping a pass that changes nothing keeps every bit.
    for i in range(size):
        up, down = fires_again(theta[i], membrane[i], out[i], allow_negative, neg_scale, True)
        if up or down:
            return True
    return False


@njit(cache=True, inline="always")
def _one_spike(i, z, theta, v0, slope, bound, allow_negative, neg_scale, running, memory,
               out):
    # _spikes for one spike at most, as selects (no branch, so that the loops around it
    # vectorise); the spike is a float, as numba widens int32 arithmetic to int64.
    a = running[i] + z[i]
    value = a if a >= 0.0 else slope * a
    value = min(value, bound)
    v = v0 + value - theta * memory[i]
    sent = 1.0 if v >= theta else (
        -1.0 if allow_negative and v < theta * neg_scale else 0.0)
    running[i] = a
    memory[i] += np.int32(sent)
    out[i] = sent * theta


@njit(cache=True)
def _track_one_spike(z, theta, v0, slope, bound, theta_neg_code, inner, running, memory, out):
    """:func:`tracking_step` for neurons that send at most one spike a step."""
    channels = theta.size
    allow_negative = theta_neg_code != 2
    neg_scale = 0.0 if theta_neg_code == 0 else -1.0
    groups = z.size // (channels * inner)
    if inner == 1:  # channels-last: the loop over the channels is the inner one
        for g in range(groups):
            base = g * channels
            for c in range(channels):
                _one_spike(base + c, z, theta[c], v0[c], slope[c], bound, allow_negative,
                           neg_scale, running, memory, out)
        return
    for g in range(groups):
        for c in range(channels):
            base = (g * channels + c) * inner
            for j in range(inner):
                _one_spike(base + j, z, theta[c], v0[c], slope[c], bound, allow_negative,
                           neg_scale, running, memory, out)


@njit(cache=True, parallel=True)
def tracking_scan(current, static_input, theta, v0, slope, upper, theta_neg_code, max_spikes,
                  t0, running, memory, out):
    """Runs tracking neurons over ``out.shape[0]`` steps (one time chunk).

    Args:
        current: (Tc, N, C, S) input currents, or (1, N, C, S) when ``static_input``.
        static_input: The same current is applied at every step (direct coding).
        theta, v0, slope, upper: (C,) float64 per-channel parameters (``upper`` may be inf).
        theta_neg_code: 0 zero, 1 minus_theta, 2 off (see THETA_NEG_CODES).
        max_spikes: Most spikes per neuron and step.
        t0: Steps simulated before this chunk.
        running: (N, C, S) float64 running input sums, updated in place.
        memory: (N, C, S) int32 net spike counts, updated in place.
        out: (Tc, N, C, S) float32, receives the weighted spikes.
    """
    steps = out.shape[0]
    batch, channels, size = running.shape
    # Batch items are independent: each thread owns whole rows of the state, so the result
    # does not depend on the number of threads.
    for n in prange(batch):
        for c in range(channels):
            th = theta[c]
            for s in range(size):
                a = running[n, c, s]
                m = memory[n, c, s]
                for t in range(steps):
                    a += current[0 if static_input else t, n, c, s]
                    sent = _spikes(a, m, th, v0[c], slope[c], upper[c] * np.float64(t0 + t + 1),
                                   theta_neg_code, max_spikes)
                    m += sent
                    out[t, n, c, s] = sent * th
                running[n, c, s] = a
                memory[n, c, s] = m


# --------------------------------------------------------------------------- executors


def run_tracking(node, inputs, state, engine):
    """The node executor of ``snm_clip`` and ``snm_leaky`` (see :func:`tracking_parameters`)."""
    x = inputs[0]
    row = engine.parameter_row
    theta = node.arrays["theta"][row].astype(np.float64)
    v0 = node.arrays["v0"][row].astype(np.float64)
    slope, upper = tracking_parameters(node)
    current, steps = neuron_current(x, engine.chunk_steps, node.shape)
    _, batch, channels, _ = current.shape
    if "running" not in state:
        state["running"] = np.zeros((batch, channels, current.shape[3]), dtype=np.float64)
        state["memory"] = np.zeros((batch, channels, current.shape[3]), dtype=np.int32)
        state["steps"] = 0
    out = np.empty((steps, batch, channels, current.shape[3]), dtype=np.float32)
    tracking_scan(current, not x.dynamic, theta, v0, slope, np.full(channels, upper),
                  THETA_NEG_CODES[node.attrs["theta_neg"]], node.attrs["max_spikes_per_step"],
                  state["steps"], state["running"], state["memory"], out)
    state["steps"] += steps
    # What SpikingNetwork.counters() reports for this layer (firing rates in stats.activity).
    state["count"] = state.get("count", 0) + spikes_sent(out, theta,
                                                         node.attrs["max_spikes_per_step"])
    return Value(out.reshape(steps, batch, *node.shape), True)
