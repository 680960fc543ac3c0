"""The ``analog`` op: a non-spiking function computed on the running mean of its input.

Some ops have no spiking form (sigmoid, softmax, LRN, the product of two activations). The
``analog`` op runs such a function ``g`` on the time-averaged signal instead: with ``A(t)``
the running sum of its input and ``y(t) = g(A(t) / t)``, it emits::

    out(t) = t * y(t) - (t - 1) * y(t - 1)          (y(0) = 0)

so that the running mean of its output, ``(out(1) + ... + out(t)) / t = y(t)``, is exactly
``g`` of the running mean of its input at every step, like the max-pool tracker. Linear ops
downstream therefore see ``g``'s analog value on average. What comes out is not a spike
train: it is a real number per step, which is why the compiler uses it only at the readout
(Softmax, LogSoftmax) or where the user opts in (``--allow-analog``).

On a static input (constant over time) the op is simply ``g`` of it.

Both executors keep the same state: a float64 running sum per value of every dynamic input
and ``y(t - 1)`` per output; the fused executor runs :func:`analog_step` on one sample and
one step at a time (the node executor, :func:`run_analog`, on a time chunk at once, with
numpy). They do the same float64 operations, in the same order, except where numpy has
its own routines: its exp, log, tanh, expm1 and pow (vectorised, within an ulp of the C
library that numba calls) and its sums along the last axis (pairwise). So ``mul``,
``div``, ``hard_sigmoid`` and ``hard_swish`` give the same bits in both (over a single time
chunk: the node executor adds a chunk's running sums to the previous ones, not step by
step), and the others agree to within an ulp of float64 before the float32 output.

The functions, on float64 arrays whose sample axes are the last ones; ``axis`` counts from
the first sample axis. Attributes each one reads are listed; the others are ignored:

    sigmoid, tanh, exp, softplus, hard_swish     none
    softmax, log_softmax                         axis
    elu                                          alpha
    selu                                         alpha, beta (ONNX's gamma)
    hard_sigmoid                                 alpha, beta: max(0, min(1, alpha x + beta))
    lrn                                          axis (channels), alpha, beta, bias, size
    mul, div                                     none (two inputs, numpy broadcasting)
"""

from __future__ import annotations

import numpy as np
from numba import njit

from snncompiler.runtime.graph import Value


def _softmax(x, axis):
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(x, axis):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _lrn(x, axis, alpha, beta, bias, size):
    """ONNX LRN: x / (bias + alpha / size * sum of squares over ``size`` channels) ** beta."""
    squares = np.moveaxis(x * x, axis, -1)
    channels = squares.shape[-1]
    before, after = (size - 1) // 2, size // 2  # ONNX: floor((size-1)/2), ceil((size-1)/2)
    padded = np.concatenate([np.zeros((*squares.shape[:-1], before)), squares,
                             np.zeros((*squares.shape[:-1], after))], axis=-1)
    cumulative = np.concatenate([np.zeros((*squares.shape[:-1], 1)),
                                 np.cumsum(padded, axis=-1)], axis=-1)
    window = cumulative[..., size:size + channels] - cumulative[..., :channels]
    return x / (bias + alpha / size * np.moveaxis(window, -1, axis)) ** beta


def _selu(x, alpha, gamma):
    return gamma * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


FUNCTIONS = {
    "sigmoid": lambda x, a: 1.0 / (1.0 + np.exp(-x)),
    "tanh": lambda x, a: np.tanh(x),
    "exp": lambda x, a: np.exp(x),
    "softplus": lambda x, a: np.logaddexp(0.0, x),
    "hard_swish": lambda x, a: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "softmax": lambda x, a: _softmax(x, a["axis"]),
    "log_softmax": lambda x, a: _log_softmax(x, a["axis"]),
    "elu": lambda x, a: np.where(x > 0, x, a["alpha"] * np.expm1(np.minimum(x, 0))),
    "selu": lambda x, a: _selu(x, a["alpha"], a["beta"]),
    "hard_sigmoid": lambda x, a: np.clip(a["alpha"] * x + a["beta"], 0.0, 1.0),
    "lrn": lambda x, a: _lrn(x, a["axis"], a["alpha"], a["beta"], a["bias"], a["size"]),
    "mul": lambda x, y, a: x * y,
    "div": lambda x, y, a: x / y,
}


def apply(function: str, arrays: list[np.ndarray], attrs: dict, lead: int) -> np.ndarray:
    """``function`` of ``arrays`` whose first ``lead`` axes are batch (and time) axes."""
    # Sample-axis attributes count from the first sample axis; shifted past the lead axes.
    shifted = {**attrs, "axis": attrs.get("axis", 0) + lead}
    return FUNCTIONS[function](*arrays, shifted)


def _aligned(data: np.ndarray, lead: int, rank: int) -> np.ndarray:
    """``data`` with its sample part padded to ``rank`` axes, for broadcasting."""
    sample = data.shape[lead:]
    return data.reshape(data.shape[:lead] + (1,) * (rank - len(sample)) + sample)


def run_analog(node, inputs, state, engine):
    """Executor: ``g`` of the running mean, emitted as differences (see the module doc)."""
    rank = len(node.shape)
    function = node.attrs["function"]
    if not any(v.dynamic for v in inputs):
        arrays = [_aligned(v.data.astype(np.float64), 1, rank) for v in inputs]
        out = apply(function, arrays, node.attrs, 1)
        return Value(out.astype(np.float32), False)

    steps = next(v.data.shape[0] for v in inputs if v.dynamic)
    if "sums" not in state:
        state["sums"] = [None] * len(inputs)
        state["previous"] = None
        state["steps"] = 0
    t = state["steps"] + np.arange(1, steps + 1, dtype=np.float64)
    shape_t = (steps,) + (1,) * (rank + 1)
    means = []
    for i, value in enumerate(inputs):
        data = value.data.astype(np.float64)
        if value.dynamic:
            running = np.cumsum(data, axis=0)
            if state["sums"][i] is not None:
                running += state["sums"][i]
            state["sums"][i] = running[-1]
            means.append(_aligned(running / t.reshape(-1, *([1] * (running.ndim - 1))), 2,
                                  rank))
        else:
            means.append(_aligned(data[None], 2, rank))  # the mean of a constant is itself
    y = np.broadcast_to(apply(function, means, node.attrs, 2), (steps, *means[0].shape[1:2],
                                                                   *node.shape))
    previous = state["previous"] if state["previous"] is not None else np.zeros_like(y[0])
    before = np.concatenate([previous[None], y[:-1]], axis=0)
    out = t.reshape(shape_t) * y - (t - 1).reshape(shape_t) * before
    state["previous"] = np.array(y[-1])
    state["steps"] += steps
    return Value(out.astype(np.float32), True)


# --------------------------------------------------------------------------- fused kernel
# The functions as numba scalar code, for the fused executor (see the module docstring for
# which give the same bits as FUNCTIONS). The codes are the rows' integers.

(SIGMOID, TANH, EXP, SOFTPLUS, ELU, SELU, HARD_SIGMOID, HARD_SWISH, SOFTMAX, LOG_SOFTMAX, LRN,
 MUL, DIV) = range(13)
FUNCTION_CODES = {"sigmoid": SIGMOID, "tanh": TANH, "exp": EXP, "softplus": SOFTPLUS,
                  "elu": ELU, "selu": SELU, "hard_sigmoid": HARD_SIGMOID,
                  "hard_swish": HARD_SWISH, "softmax": SOFTMAX, "log_softmax": LOG_SOFTMAX,
                  "lrn": LRN, "mul": MUL, "div": DIV}
ALONG_AXIS = frozenset({"softmax", "log_softmax", "lrn"})
"""Functions of a whole line of values along ``axis``; the others are elementwise."""
LOGE2 = float(np.log(2.0))


@njit(cache=True, inline="always")
def _softplus(x):
    # numpy's logaddexp(0, x), branch for branch.
    if x == 0.0:
        return LOGE2
    if -x > 0.0:
        return np.log1p(np.exp(x))
    if -x <= 0.0:
        return x + np.log1p(np.exp(-x))
    return -x  # NaN


@njit(cache=True, inline="always")
def _elementwise(code, x, y, alpha, beta):
    """``g(x)`` (``g(x, y)`` for mul and div) of one value, float64."""
    if code == SIGMOID:
        return 1.0 / (1.0 + np.exp(-x))
    if code == TANH:
        return np.tanh(x)
    if code == EXP:
        return np.exp(x)
    if code == SOFTPLUS:
        return _softplus(x)
    if code == ELU:
        return x if x > 0.0 else alpha * np.expm1(min(x, 0.0))
    if code == SELU:
        return beta * (x if x > 0.0 else alpha * np.expm1(min(x, 0.0)))
    if code == HARD_SIGMOID:
        return min(max(alpha * x + beta, 0.0), 1.0)
    if code == HARD_SWISH:
        return x * min(max(x / 6.0 + 0.5, 0.0), 1.0)
    if code == MUL:
        return x * y
    return x / y  # DIV


@njit(cache=True)
def _along_axis(code, x, alpha, beta, bias, size, y, cumulative):
    """``g`` of one line ``x`` along the function's axis into ``y`` (float64).

    ``cumulative``: scratch of ``x.size + size`` (LRN's running sums of squares).
    """
    n = x.size
    if code == LRN:
        # As _lrn: sums of squares over a window of ``size`` channels, from the running
        # sum of the squares padded with (size - 1) // 2 zeros before and size // 2 after.
        before = (size - 1) // 2
        cumulative[0] = 0.0
        for k in range(n + size - 1):
            c = k - before
            cumulative[k + 1] = cumulative[k] + (x[c] * x[c] if 0 <= c < n else 0.0)
        for c in range(n):
            window = cumulative[c + size] - cumulative[c]
            y[c] = x[c] / (bias + alpha / size * window) ** beta
        return
    top = x[0]
    for k in range(1, n):
        top = max(top, x[k])
    total = 0.0
    for k in range(n):
        y[k] = np.exp(x[k] - top)
        total += y[k]
    if code == SOFTMAX:
        for k in range(n):
            y[k] = y[k] / total
    else:  # LOG_SOFTMAX
        log_total = np.log(total)
        for k in range(n):
            y[k] = (x[k] - top) - log_total


@njit(cache=True)
def analog_step(code, a, b, a_sums, b_sums, a_index, b_index, lines, length, alpha, beta,
                bias, size, t, previous, line, out):
    """One step of an analog layer for one sample (the fused executor's kernel).

    Args:
        code: The function (FUNCTION_CODES).
        a, b: This step's inputs, float32, flat (``b`` empty for a one-input function).
        a_sums, b_sums: float64 running sums of a dynamic input, updated here; empty for a
            static input, whose running mean is itself.
        a_index, b_index: The value of each input that output ``i`` reads (numpy
            broadcasting); empty: value ``i``.
        lines: For softmax, log_softmax and lrn: the output positions line by line along
            the function's axis, ``length`` a line; else empty.
        alpha, beta, bias, size: The node's attributes.
        t: This step's number (1-based), float64.
        previous: float64 ``y(t - 1)`` of every output, updated.
        line: float64 scratch of ``3 * length + size``.
        out: Receives ``t * y(t) - (t - 1) * y(t - 1)``.
    """
    # The running mean of a value is its running sum over t, or the value itself for a
    # static input, written out in each loop (a helper taking the arrays costs ~20 ns a
    # call: numba counts references to its array arguments).
    a_dynamic, b_dynamic = a_sums.size > 0, b_sums.size > 0
    for j in range(a_sums.size):
        a_sums[j] += a[j]
    for j in range(b_sums.size):
        b_sums[j] += b[j]
    if lines.size == 0:
        a_broadcast, b_broadcast, binary = a_index.size > 0, b_index.size > 0, b.size > 0
        for i in range(out.size):
            j = a_index[i] if a_broadcast else i
            x = a_sums[j] / t if a_dynamic else np.float64(a[j])
            y = 0.0
            if binary:
                j = b_index[i] if b_broadcast else i
                y = b_sums[j] / t if b_dynamic else np.float64(b[j])
            value = _elementwise(code, x, y, alpha, beta)
            out[i] = t * value - (t - 1.0) * previous[i]
            previous[i] = value
        return
    means, values, cumulative = line[:length], line[length:2 * length], line[2 * length:]
    for start in range(0, lines.size, length):
        for k in range(length):
            j = lines[start + k]
            means[k] = a_sums[j] / t if a_dynamic else np.float64(a[j])
        _along_axis(code, means, alpha, beta, bias, size, values, cumulative)
        for k in range(length):
            i = lines[start + k]
            out[i] = t * values[k] - (t - 1.0) * previous[i]
            previous[i] = values[k]
