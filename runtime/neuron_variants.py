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
    n = the SNM's firing rule on V (neurons.py), without its "M left" limit
    M += n;  emit n * theta

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
from snncompiler.runtime.neurons import (
    THETA_NEG_CODES,
    count_and_weigh,
    neuron_current,
    signed_spikes,
    signed_spikes_reference,
    spikes_sent,
)


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
    band = 0.0 if theta_neg == "zero" else 1.0
    count = signed_spikes_reference(v, theta, band, max_spikes, np.float64(max_spikes),
                                    theta_neg != "off")
    return count * theta, running, memory + count.astype(memory.dtype)


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
def _spikes(running, memory, theta, v0, slope, bound, band, most, allow_negative):
    """The signed number of spikes (a float64) one tracking neuron sends after its running
    input became ``running`` (float64), having sent ``memory`` in net; ``bound`` is
    ``upper * t``, ``band`` and ``most`` as for neurons.signed_spikes. The step of the
    module docstring, for both kernels."""
    value = running if running >= 0.0 else slope * running
    value = min(value, bound)
    v = v0 + value - theta * memory
    return signed_spikes(v, theta, band, most, most, allow_negative)


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
    # ``out`` holds the signed counts until they are counted and weighted, in a loop of its
    # own: a reduction or a second store would keep the neuron loop from vectorising.
    bound = upper * elapsed
    band = np.float32(0.0) if theta_neg_code == 0 else np.float32(1.0)
    _track_counts(z, theta, v0, slope, bound, band, np.float64(max_spikes),
                  theta_neg_code != 2, inner, running, memory, out)
    channels = theta.size
    return count_and_weigh(out, theta, out.size // (channels * inner), channels, inner)


@njit(cache=True, error_model="numpy")
def _track_counts(z, theta, v0, slope, bound, band, most, allow_negative, inner, running,
                  memory, out):
    # tracking_step's neuron loops: each neuron's signed spike count into ``out``.
    # channels-last (inner == 1): the loop over the channels is the inner one; otherwise
    # the neurons of one channel are, with its parameters as scalars (a loop over channels
    # inside a loop over neurons did not vectorise, nor did a body passed the arrays in an
    # inlined function).
    channels = theta.size
    groups = z.size // (channels * inner)
    if inner == 1:
        for g in range(groups):
            base = g * channels
            for c in range(channels):
                i = base + c
                a = running[i] + z[i]
                sent = _spikes(a, memory[i], theta[c], v0[c], slope[c], bound, band, most,
                               allow_negative)
                running[i] = a
                memory[i] += np.int32(sent)
                out[i] = sent
        return
    for g in range(groups):
        for c in range(channels):
            th, start, sl = theta[c], v0[c], slope[c]
            base = (g * channels + c) * inner
            for j in range(inner):
                i = base + j
                a = running[i] + z[i]
                sent = _spikes(a, memory[i], th, start, sl, bound, band, most, allow_negative)
                running[i] = a
                memory[i] += np.int32(sent)
                out[i] = sent


@njit(cache=True, error_model="numpy", parallel=True)
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
    band = np.float32(0.0) if theta_neg_code == 0 else np.float32(1.0)
    most = np.float64(max_spikes)
    allow_negative = theta_neg_code != 2
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
                                   band, most, allow_negative)
                    m += np.int32(sent)
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
