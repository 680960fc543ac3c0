"""The node executor: one numpy function per op over a whole time chunk.

It computes the static segment of every program (the nodes whose inputs do not change
over time, once per input), and is the numpy reference of the dynamic part that the tests
hold the fused executor (:mod:`snncompiler.runtime.fused`, what users get) to, through
:class:`snncompiler.runtime.reference.ReferenceNetwork`.

Each executor is ``(node, inputs, state, engine) -> Value``: time is folded into the batch
(numpy and BLAS; numba for conv and the stateful ops), ``state`` is a dict private to the
node that persists across time chunks until ``reset()``, and ``engine`` gives the chunk's
steps (``chunk_steps``) and the calibrated row of neuron parameters (``parameter_row``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numba
import numpy as np

from snncompiler.runtime import fused, kernels, linear
from snncompiler.runtime.analog import run_analog
from snncompiler.runtime.graph import Value
from snncompiler.runtime.neuron_variants import run_tracking
from snncompiler.runtime.neurons import (
    THETA_NEG_CODES,
    neuron_current,
    snm_scan,
    spikes_sent,
)
from snncompiler.runtime.pooling import maxpool_track
from snncompiler.runtime.shape_ops import (
    run_concat,
    run_pad,
    run_reduce,
    run_resize,
    run_transpose,
)


def _align(value: Value, rank: int) -> np.ndarray:
    """View with the sample part padded to ``rank`` axes, for broadcasting between samples."""
    lead = 2 if value.dynamic else 1
    sample = value.data.shape[lead:]
    shape = value.data.shape[:lead] + (1,) * (rank - len(sample)) + sample
    data = value.data.reshape(shape)
    return data if value.dynamic else data[None]


def _count(state, counts: np.ndarray) -> None:
    """Adds per-sample counts (N,) to the node's counter (see SpikingNetwork.counters)."""
    state["count"] = state.get("count", 0) + counts.astype(np.int64)


def _reach(size, kernel, stride, pad, dilation, out) -> np.ndarray:
    """For each input index along one axis: how many kernel taps land on an output."""
    position = np.arange(size)[:, None] + pad - np.arange(kernel)[None, :] * dilation
    valid = (position >= 0) & (position % stride == 0) & (position // stride < out)
    return valid.sum(axis=1)


def conv_additions(node, spikes: np.ndarray) -> np.ndarray:
    """Additions the conv kernel does on ``spikes`` (Tc, N, C, H, W), per sample.

    Each nonzero input adds one weight row (O/group values) per kernel tap that lands on
    an output; taps that fall off the border cost nothing. A step whose input is dense
    enough runs dense (see :func:`snncompiler.runtime.fused.dense_from`) and adds every
    input's rows.
    """
    a = node.attrs
    weight = node.arrays["weight"]
    taps = np.outer(
        _reach(spikes.shape[3], weight.shape[2], a["strides"][0], a["pads"][0],
               a["dilations"][0], node.shape[1]),
        _reach(spikes.shape[4], weight.shape[3], a["strides"][1], a["pads"][1],
               a["dilations"][1], node.shape[2]))
    active = np.count_nonzero(spikes, axis=2)
    per_step = np.einsum("tnhw,hw->tn", active.astype(np.int64), taps)
    if a["group"] == 1:
        dense = active.sum(axis=(2, 3)) >= _dense_from(node, spikes.shape[2:])
        per_step = np.where(dense, spikes.shape[2] * taps.sum(), per_step)
    return weight.shape[0] // a["group"] * per_step.sum(axis=0)


def _dense_from(node, in_shape) -> int:
    weight = node.arrays["weight"]
    return fused.dense_from(*in_shape, weight.shape[0], weight.shape[2:], node.attrs["strides"])


def _conv(node, data: np.ndarray) -> np.ndarray:
    """Conv of a (B, C, H, W) batch with the event-driven kernel, sample by sample (numba):
    much faster than BLAS on spikes, and as fast on the dense input of the first layer."""
    a = node.attrs
    weight = node.arrays["weight"]
    out_channels, _, kh, kw = weight.shape
    out_shape = tuple(node.shape)
    batch = data.shape[0]
    out = np.empty((batch, math.prod(out_shape)), dtype=np.float32)
    kernels.conv_batch(fused.to_storage(data.astype(np.float32, copy=False), data.shape[1:]),
                       *data.shape[1:], fused.conv_weight_layout(weight, a["group"]),
                       node.arrays["bias"].astype(np.float32), out_channels, kh, kw,
                       *a["strides"], a["pads"][0], a["pads"][1], *a["dilations"], a["group"],
                       *out_shape[1:], _dense_from(node, data.shape[1:]),
                       min(batch, kernels.BLOCKS_PER_THREAD * numba.get_num_threads()), out)
    return np.ascontiguousarray(fused.from_storage(out, out_shape))


def _run_conv(node, inputs, state, engine):
    x = inputs[0]
    if x.dynamic:
        _count(state, conv_additions(node, x.data))
    return x.folded(lambda data: _conv(node, data))


def _run_gemm(node, inputs, state, engine):
    x = inputs[0]
    if x.dynamic:
        active = np.count_nonzero(x.data.reshape(*x.data.shape[:2], -1), axis=(0, 2))
        _count(state, active * node.arrays["weight"].shape[1])
    return x.folded(lambda data: linear.gemm(data, node.arrays["weight"], node.arrays["bias"]))


def _run_affine(node, inputs, state, engine):
    x = inputs[0]
    data = x.data * node.arrays["scale"] + node.arrays["shift"]
    return Value(data.astype(np.float32, copy=False), x.dynamic)


def _run_add(node, inputs, state, engine):
    a, b = inputs
    rank = len(node.shape)
    if not (a.dynamic or b.dynamic):
        return Value((_align(a, rank)[0] + _align(b, rank)[0]).astype(np.float32), False)
    return Value((_align(a, rank) + _align(b, rank)).astype(np.float32), True)


def _run_avgpool(node, inputs, state, engine):
    a = node.attrs
    return inputs[0].folded(lambda x: linear.avgpool2d(
        x, a["kernel"], a["strides"], a["pads"], a["count_include_pad"], node.shape[1:]))


def _run_global_avgpool(node, inputs, state, engine):
    return inputs[0].folded(linear.global_avgpool)


def _maxpool(node, x):
    a = node.attrs
    return linear.maxpool2d(x, a["kernel"], a["strides"], a["pads"], a["dilations"], node.shape[1:])


def _run_maxpool(node, inputs, state, engine):
    """Exact signed max tracker: emits maxpool(A(t)) - maxpool(A(t-1)), A the running input."""
    x = inputs[0]
    if not x.dynamic:
        return Value(_maxpool(node, x.data), False)
    steps, batch = x.data.shape[:2]
    if "running_input" not in state:
        state["running_input"] = np.zeros(x.data.shape[1:], dtype=np.float64)
        state["pooled"] = np.zeros((batch, *node.shape), dtype=np.float64)
        a = node.attrs
        state["geometry"] = [np.asarray(a[key], dtype=np.int64)
                             for key in ("kernel", "strides", "pads", "dilations")]
    out = np.empty((steps, batch, *node.shape), dtype=np.float32)
    maxpool_track(np.ascontiguousarray(x.data, dtype=np.float32), *state["geometry"],
                  state["running_input"], state["pooled"], out)
    return Value(out, True)


def _run_reshape(node, inputs, state, engine):
    x = inputs[0]
    lead = x.data.shape[:2] if x.dynamic else x.data.shape[:1]
    return Value(x.data.reshape(*lead, *node.shape), x.dynamic)


def _run_snm(node, inputs, state, engine):
    x = inputs[0]
    row = engine.parameter_row
    theta = np.ascontiguousarray(node.arrays["theta"][row], dtype=np.float32)
    current, steps = neuron_current(x, engine.chunk_steps, node.shape)
    _, batch, channels, _ = current.shape
    if "membrane" not in state:
        v0 = node.arrays["v0"][row].astype(np.float32)
        state["membrane"] = np.ascontiguousarray(
            np.broadcast_to(v0[None, :, None], (batch, channels, current.shape[3])))
        state["memory"] = np.zeros((batch, channels, current.shape[3]), dtype=np.int32)
    out = np.empty((steps, batch, channels, current.shape[3]), dtype=np.float32)
    snm_scan(current, not x.dynamic, theta, THETA_NEG_CODES[node.attrs["theta_neg"]],
             node.attrs["max_spikes_per_step"], state["membrane"], state["memory"], out)
    _count(state, spikes_sent(out, theta, node.attrs["max_spikes_per_step"]))
    return Value(out.reshape(steps, batch, *node.shape), True)


EXECUTORS: dict[str, Callable] = {
    "conv": _run_conv,
    "gemm": _run_gemm,
    "affine": _run_affine,
    "add": _run_add,
    "avgpool": _run_avgpool,
    "global_avgpool": _run_global_avgpool,
    "maxpool": _run_maxpool,
    "reshape": _run_reshape,
    "snm": _run_snm,
    "snm_clip": run_tracking,
    "snm_leaky": run_tracking,
    "concat": run_concat,
    "transpose": run_transpose,
    "pad": run_pad,
    "resize": run_resize,
    "reduce": run_reduce,
    "analog": run_analog,
}
