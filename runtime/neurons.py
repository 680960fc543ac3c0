"""Spiking neurons: the SNM firing rule written once, and its numba time-scan kernel.

Signed Neuron with Memory (SNM), per neuron, at step t with input current z(t)::

    V += z(t)
    q = floor(V / theta)
    if V >= theta:                       n = min(q, k)                 positive spikes
    elif V < theta_neg and M > 0:        n = -min(max(-c - q, 1), k, M)  negative spikes
    else:                                n = 0
    V -= n * theta;  M += n;  emit n * theta

``k`` is ``max_spikes_per_step`` and ``theta_neg = -c * theta``. This is the loop "send
+theta while fewer than k were sent and V >= theta; if none was sent, send -theta while
fewer than k were sent, V < theta_neg and M is left" in closed form: in exact arithmetic
the loop stops after ``min(k, floor(V / theta))`` positive spikes, or after
``min(k, M, ceil((theta_neg - V) / theta))`` negative ones, and
``ceil(-c - V / theta) = -c - floor(V / theta)`` (``snncompiler.export_onnx`` writes the
proof out). The closed form costs one division per neuron however many spikes it sends,
where the loop costs one pass per spike, and it is what every kernel, the numpy
references and the ONNX export compute, operation for operation. Which side fires is
decided on ``V`` itself; the count is clipped to at least 1, as the rounded quotient may
sit on the wrong side of an integer.

State: membrane ``V`` (starts at ``v0``) and memory ``M`` (net spikes sent, starts at 0,
never negative, so the running output is never negative, like ReLU). ``theta_neg`` is 0
(``"zero"``: M then tracks floor((v0 + sum z) / theta), clipped by the spike budget),
``-theta`` (``"minus_theta"``, the SNM paper's code: a hysteresis band) or ``"off"``: a
plain integrate-and-fire neuron with reset by subtraction, which never sends negative
spikes.

``M`` is kept as an integer count of net spikes, so "M > 0" is exact whatever the rounding
of the membrane.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

THETA_NEG_CODES = {"zero": 0, "minus_theta": 1, "off": 2}


@njit(cache=True, inline="always")
def signed_spikes(v, theta, band, most, left, allow_negative):
    """The spikes a neuron at potential ``v`` sends this step, signed, as a float of ``v``'s
    type: the firing rule of the module docstring, as selects only, so that the neuron
    loops around it vectorise. Those loops are compiled with ``error_model="numpy"``:
    numba's default checks every float division for a zero divisor, a branch that keeps
    the loop scalar (about 7 ns a neuron instead of 0.25, timed by hand); thresholds are positive
    (``format`` refuses others), so the check can never fire.

    Args:
        v, theta: The potential after this step's input, and the threshold (> 0).
        band: ``c`` of ``theta_neg = -c * theta``: 0 for ``"zero"``, 1 for
            ``"minus_theta"`` (a float32, so that float32 neurons stay float32).
        most: ``k``, the most spikes per step, as a float.
        left: The most negative spikes the neuron may send (the SNM's M; the tracking
            neurons, whose M may go negative, pass ``most``), as a float.
        allow_negative: False for ``"off"``.
    """
    one = np.float32(1.0)
    q = np.floor(v / theta)
    up = q if q < most else most  # (a NaN quotient, from an infinite v, gives k)
    down = -band - q
    down = down if down > one else one
    down = down if down < most else most
    down = down if down < left else left
    return up if v >= theta else (
        -down if allow_negative and v < -band * theta and left > 0 else np.float32(0.0))



@njit(cache=True, fastmath={"reassoc"})
def count_and_weigh(out, theta, rows, channels, inner):
    """The second loop of a neuron layer's step: ``out`` holds each neuron's signed spike
    count; returns the spikes sent (the sum of the counts' sizes) and turns each count into
    its value, the count times its channel's theta. Neuron ``i`` is in channel
    ``(i // inner) % channels``; an SNM layer, with a theta per neuron, passes one row of
    ``out.size`` channels.

    One pass over ``out``: a layer does not fit in the cache, so a pass for each costs more
    than the arithmetic. The sum is of whole numbers in a float64, exact in any order, which
    is what lets LLVM vectorise it ("reassoc"; the products are single operations, which no
    flag changes). The loop bounds come from the caller: computed here, from ``out.size``,
    the loop was no longer vectorised.
    """
    spikes = 0
    if inner == 1:  # channels-last: the channels are the inner loop
        for row in range(rows):
            total = 0.0
            base = row * channels
            for c in range(channels):
                count = out[base + c]
                total += abs(count)
                out[base + c] = count * theta[c]
            spikes += np.int64(total)
        return spikes
    for row in range(rows):
        total = 0.0
        for c in range(channels):
            th = theta[c]
            base = (row * channels + c) * inner
            for j in range(inner):
                count = out[base + j]
                total += abs(count)
                out[base + j] = count * th
        spikes += np.int64(total)
    return spikes

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
    theta = np.broadcast_to(theta, v.shape).astype(v.dtype)
    band = v.dtype.type(0.0 if theta_neg == "zero" else 1.0)
    count = signed_spikes_reference(v, theta, band, max_spikes, memory.astype(v.dtype),
                                    theta_neg != "off")
    return count * theta, v - count * theta, memory + count.astype(memory.dtype)


def signed_spikes_reference(v, theta, band, max_spikes, left, allow_negative):
    """:func:`signed_spikes` on numpy arrays: the same operations, in ``v``'s dtype."""
    one, zero = v.dtype.type(1.0), v.dtype.type(0.0)
    most = v.dtype.type(max_spikes)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.floor(v / theta)
    up = np.where(q < most, q, most)
    down = -band - q
    down = np.where(down > one, down, one)
    down = np.where(down < most, down, most)
    down = np.where(down < left, down, left)
    negative = allow_negative & (v < -band * theta) & (left > 0)
    return np.where(v >= theta, up, np.where(negative, -down, zero))


@njit(cache=True, error_model="numpy", parallel=True)
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
    band = np.float32(0.0) if theta_neg_code == 0 else np.float32(1.0)
    most = np.float32(max_spikes)
    allow_negative = theta_neg_code != 2
    # Batch items are independent, so each thread owns whole rows of the state: the result
    # does not depend on the number of threads. Time is the outer loop of a sample and the
    # neurons the inner one, so that the reads and writes of a step are contiguous while the
    # sample's state stays in the cache.
    for n in prange(batch):
        for t in range(steps):
            step = 0 if static_input else t
            for c in range(channels):
                th = theta[c]
                for s in range(size):
                    v = membrane[n, c, s] + current[step, n, c, s]
                    m = memory[n, c, s]
                    sent = signed_spikes(v, th, band, most, np.float32(m), allow_negative)
                    membrane[n, c, s] = v - sent * th
                    memory[n, c, s] = m + np.int32(sent)
                    out[t, n, c, s] = sent * th
