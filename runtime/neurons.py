"""Spiking neurons: the SNM step written once, and its numba time-scan kernel.

Signed Neuron with Memory (SNM), per neuron, at step t with input current z(t)::

    V += z(t)
    repeat up to k times (k = max_spikes_per_step):
        if V >= theta:                          s = +theta
        elif V < theta_neg and M > 0:           s = -theta      (never when theta_neg is "off")
        else:                                   stop
        V -= s;  M += s
    emit the sum of the s of this step

State: membrane ``V`` (starts at ``v0``) and memory ``M`` (net value sent, starts at 0, never
negative, so the running output is never negative, like ReLU). ``theta_neg`` is 0
(``"zero"``: M then tracks theta * floor((v0 + sum z) / theta), clipped by the spike budget),
``-theta`` (``"minus_theta"``, the SNM paper's code: a hysteresis band) or ``"off"``: a plain
integrate-and-fire neuron with reset by subtraction, which never sends negative spikes.

``M`` is kept as an integer count of net spikes, so "M > 0" is exact whatever the rounding
of the membrane.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

THETA_NEG_CODES = {"zero": 0, "minus_theta": 1, "off": 2}


def neuron_current(x, steps_if_static: int, shape: tuple) -> tuple[np.ndarray, int]:
    """A neuron layer's input as the scans want it, and the number of steps to run.

    Args:
        x: The input value (``data``, ``dynamic``): ``(T, N, ...)`` when dynamic, else
            ``(N, ...)``, the same current at every step.
        steps_if_static: Steps of the chunk, for a static input.
        shape: The layer's per-sample shape; its first axis is the channels.

    Returns:
        float32 ``(T or 1, N, C, L)``, contiguous, and the steps to scan.
    """
    data = x.data if x.dynamic else x.data[None]
    steps = data.shape[0] if x.dynamic else steps_if_static
    channels = shape[0] if shape else 1
    current = np.ascontiguousarray(data, dtype=np.float32).reshape(
        data.shape[0], data.shape[1], channels, -1)
    return current, steps


def spikes_sent(out: np.ndarray, theta: np.ndarray, max_spikes: int) -> np.ndarray:
    """Spikes per sample in a neuron layer's output ``out`` of shape (steps, N, C, L).

    Every spike sends +-theta of its channel, so a step's output is ``k * theta`` for a burst
    of k spikes (counted k). With one spike per step at most, every nonzero output is one
    spike: a count, three times cheaper than the division.
    """
    if max_spikes == 1:
        return np.count_nonzero(out, axis=(0, 2, 3)).astype(np.int64)
    scale = np.where(theta > 0, theta, 1)[None, None, :, None]
    return np.rint(np.abs(out) / scale).sum(axis=(0, 2, 3)).astype(np.int64)


def snm_step_reference(z, membrane, memory, theta, theta_neg: str, max_spikes: int = 1):
    """One SNM step on numpy arrays, for tests and as the readable definition.

    Args:
        z: Input current at this step, any shape.
        membrane: Membrane potential, same shape (not modified).
        memory: Net spike count sent so far, same shape, integer (not modified).
        theta: Threshold, broadcastable to ``z``.
        theta_neg: ``"zero"``, ``"minus_theta"`` or ``"off"``.
        max_spikes: Most spikes per step (1 is the paper's neuron).

    Returns:
        ``(spikes, membrane, memory)`` after the step; spikes carry their value (+-theta).
    """
    v = membrane + z
    m = memory.copy()
    theta = np.broadcast_to(theta, v.shape)
    neg = np.zeros_like(v) if theta_neg == "zero" else -theta
    count = np.zeros(v.shape, dtype=np.int64)
    for _ in range(max_spikes):
        fire_pos = (v >= theta) & (count >= 0)
        fire_neg = ~fire_pos & (v < neg) & (m > 0) & (count <= 0) & (theta_neg != "off")
        v = v - theta * fire_pos + theta * fire_neg
        m = m + fire_pos - fire_neg
        count = count + fire_pos - fire_neg
    return count * theta, v, m


@njit(cache=True, parallel=True)
def snm_scan(current, static_input, theta, theta_neg_code, max_spikes, membrane, memory, out):
    """Run SNM neurons over ``out.shape[0]`` steps (one time chunk).

    Args:
        current: (Tc, N, C, S) input currents, or (1, N, C, S) when ``static_input``.
        static_input: The same current is applied at every step (direct coding).
        theta: (C,) thresholds.
        theta_neg_code: 0 zero, 1 minus_theta, 2 off (see THETA_NEG_CODES).
        max_spikes: Most spikes per neuron and step.
        membrane: (N, C, S) float32 state, updated in place.
        memory: (N, C, S) int32 net spike counts, updated in place.
        out: (Tc, N, C, S) float32, receives the weighted spikes.
    """
    steps = out.shape[0]
    batch, channels, size = membrane.shape
    # Batch items are independent, so each thread owns whole rows of the state: the result
    # does not depend on the number of threads. Time is the outer loop of a sample and the
    # neurons the inner one, so that the reads and writes of a step are contiguous while the
    # sample's state stays in the cache.
    for n in prange(batch):
        for t in range(steps):
            step = 0 if static_input else t
            for c in range(channels):
                th = theta[c]
                if theta_neg_code == 0:
                    neg = np.float32(0.0)
                else:
                    neg = -th
                for s in range(size):
                    v = membrane[n, c, s] + current[step, n, c, s]
                    m = memory[n, c, s]
                    sent = 0
                    while sent < max_spikes and v >= th:
                        v -= th
                        sent += 1
                    if sent == 0 and theta_neg_code != 2:
                        while sent > -max_spikes and v < neg and m + sent > 0:
                            v += th
                            sent -= 1
                    membrane[n, c, s] = v
                    memory[n, c, s] = m + sent
                    out[t, n, c, s] = sent * th
