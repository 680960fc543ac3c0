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
        return type(inputs[0])(out.astype(np.float32), False)

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
    return type(inputs[0])(out.astype(np.float32), True)
