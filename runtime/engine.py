"""The timestep engine: plans a Program once, then runs it chunk by chunk over time.

Values flowing between nodes are either *static*, ``(N, ...)``, constant over time (what is
computed from the directly coded input alone, so the first linear segment runs once, with
numpy), or *dynamic*, ``(Tc, N, ...)``, one slice per step of the current time chunk.
Stateful ops keep their state between chunks, so any chunking, including ``step()`` one
step at a time, gives the same result.

Two executors run the dynamic part, with the same semantics:

- ``"fused"`` (the default when every dynamic op has a kernel, see
  :mod:`snncompiler.runtime.fused`): one numba call per time chunk runs all dynamic nodes
  sample by sample and step by step, with event-driven ``conv``/``gemm`` on spikes. Its
  results do not depend on the time chunk, the batch or the thread count, bit for bit.
- ``"nodes"``: one executor per node over the whole chunk, time folded into the batch
  (numpy and BLAS; numba for conv and the stateful ops). It runs every op of the schema.

Readout: each graph output accumulates its value; the readout after t steps is the sum of
its values over steps 1..t divided by t.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np

from snncompiler.runtime import fused, kernels, linear
from snncompiler.runtime.analog import run_analog
from snncompiler.runtime.errors import InputError
from snncompiler.runtime.graph import Program
from snncompiler.runtime.neuron_variants import run_tracking
from snncompiler.runtime.neurons import (
    THETA_NEG_CODES,
    neuron_current,
    snm_scan,
    spikes_sent,
)
from snncompiler.runtime.opset import OPS, infer_shape
from snncompiler.runtime.pooling import maxpool_track
from snncompiler.runtime.shape_ops import (
    run_concat,
    run_pad,
    run_reduce,
    run_resize,
    run_transpose,
)

DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes of activations per time chunk
MAX_READOUT_BYTES = 4 * 2**30
# A run longer than this warns with the readout's size: legitimate for long simulations, so
# not refused, but more often a slip (T=10**6 for 10**3) that ties the process up for hours.
LONG_RUN_STEPS = 100_000
EXECUTOR_CHOICES = ("auto", "fused", "nodes")
BLOCKS_PER_THREAD = 4  # samples are split in this many blocks per thread (load balance)
COUNTING_OPCODES = (kernels.CONV, kernels.CONV_GROUPED, kernels.GEMM, kernels.SNM,
                    kernels.TRACK)


@dataclass
class Value:
    """A tensor during execution: ``data`` is (N, ...) if static, (Tc, N, ...) if dynamic."""

    data: np.ndarray
    dynamic: bool


def _folded(value: Value, fn: Callable[[np.ndarray], np.ndarray]) -> Value:
    """Applies a batch op to every step at once by folding time into the batch."""
    if not value.dynamic:
        return Value(fn(value.data), False)
    steps, batch = value.data.shape[:2]
    out = fn(value.data.reshape(steps * batch, *value.data.shape[2:]))
    return Value(out.reshape(steps, batch, *out.shape[1:]), True)


def _align(value: Value, rank: int) -> np.ndarray:
    """View with the sample part padded to ``rank`` axes, for broadcasting between samples."""
    lead = 2 if value.dynamic else 1
    sample = value.data.shape[lead:]
    shape = value.data.shape[:lead] + (1,) * (rank - len(sample)) + sample
    data = value.data.reshape(shape)
    return data if value.dynamic else data[None]


# --------------------------------------------------------------------------- executors
# Each executor is (node, inputs, state, engine) -> Value. ``state`` is a dict private to
# the node that persists across time chunks until reset().


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
                       min(batch, BLOCKS_PER_THREAD * numba.get_num_threads()), out)
    return np.ascontiguousarray(fused.from_storage(out, out_shape))


def _run_conv(node, inputs, state, engine):
    x = inputs[0]
    if x.dynamic:
        _count(state, conv_additions(node, x.data))
    return _folded(x, lambda data: _conv(node, data))


def _run_gemm(node, inputs, state, engine):
    x = inputs[0]
    if x.dynamic:
        active = np.count_nonzero(x.data.reshape(*x.data.shape[:2], -1), axis=(0, 2))
        _count(state, active * node.arrays["weight"].shape[1])
    return _folded(x, lambda data: linear.gemm(data, node.arrays["weight"], node.arrays["bias"]))


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
    return _folded(inputs[0], lambda x: linear.avgpool2d(
        x, a["kernel"], a["strides"], a["pads"], a["count_include_pad"], node.shape[1:]))


def _run_global_avgpool(node, inputs, state, engine):
    return _folded(inputs[0], linear.global_avgpool)


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


# --------------------------------------------------------------------------- engine


def _positive_int(name: str, value) -> int:
    """``value`` as an int, or an InputError naming the argument.

    Bools, floats and strings are refused rather than coerced: ``int(2.5)`` would quietly run
    2 steps, and ``True`` is an int to Python.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def nearest_calibrated(timesteps: list[int], steps: int) -> int:
    """Index of the calibrated T closest to ``steps`` on a log scale (ties: the larger T)."""
    distances = [(abs(math.log(t / steps)), -t) for t in timesteps]
    return distances.index(min(distances))


class SpikingNetwork:
    """A loaded spiking network, ready to run.

    Args:
        program: The compiled program (see :func:`snncompiler.runtime.load`).
        memory_budget: Bytes of activations one time chunk may use; sets the default chunk.
        executor: ``"auto"`` (the fused executor when every dynamic op has a fused kernel,
            else the node executor), ``"fused"`` (required) or ``"nodes"``. Both give the
            same results up to float rounding (they add in a different order).

    Example:
        >>> net = SpikingNetwork(program)
        >>> readout = net.run(x, timesteps=32)   # (32, N, classes): readout after each step
        >>> readout[7].argmax(-1)                 # prediction at T = 8
    """

    def __init__(self, program: Program, *, memory_budget: int = DEFAULT_MEMORY_BUDGET,
                 executor: str = "auto"):
        if executor not in EXECUTOR_CHOICES:
            raise InputError(f"executor must be one of {EXECUTOR_CHOICES}, got {executor!r}")
        self.program = program
        self.memory_budget = _positive_int("memory_budget", memory_budget)
        self._plan()
        supported = fused.supports(program, self._dynamic)
        if executor == "fused" and not supported:
            ops = sorted({n.op for n in self._dynamic_nodes if n.op not in fused.FUSED_OPS})
            raise InputError(f"the fused executor has no kernel for {', '.join(ops)}; "
                             "use executor='nodes' or 'auto'")
        self.executor = "fused" if supported and executor != "nodes" else "nodes"
        self._fused_plans: dict[bool, fused.FusedPlan] = {}
        self._scratch: dict[str, np.ndarray] | None = None  # per-block rows of the kernels
        self.parameter_row = nearest_calibrated(program.timesteps, program.default_timesteps)
        self.chunk_steps = 1
        self.reset()

    # ----------------------------------------------------------------- planning
    def _plan(self) -> None:
        program = self.program
        shapes = {spec.name: tuple(spec.shape) for spec in program.inputs}
        dynamic = {spec.name: False for spec in program.inputs}
        for node in program.nodes:
            if node.op not in EXECUTORS:
                raise InputError(f"node {node.name!r}: unknown op {node.op!r}")
            shape = infer_shape(node, [shapes[name] for name in node.inputs])
            if tuple(node.shape) != shape:
                raise InputError(f"node {node.name!r}: stored shape {list(node.shape)} "
                                 f"but its inputs give {list(shape)}")
            shapes[node.output] = shape
            spiking = getattr(OPS[node.op], "spiking", node.op == "snm")
            dynamic[node.output] = spiking or any(dynamic[n] for n in node.inputs)
        self._shapes = shapes
        self._dynamic = dynamic
        self._static_nodes = [n for n in program.nodes if not dynamic[n.output]]
        self._dynamic_nodes = [n for n in program.nodes if dynamic[n.output]]
        self._largest_sample = max(math.prod(s) for s in shapes.values())

    def _fused_plan(self, record: bool) -> fused.FusedPlan:
        if record not in self._fused_plans:
            self._fused_plans[record] = fused.plan(self.program, self._shapes, self._dynamic,
                                                   record=record)
        return self._fused_plans[record]

    @property
    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of every tensor (inputs and node outputs), by name."""
        return dict(self._shapes)

    def is_dynamic(self, name: str) -> bool:
        """Whether tensor ``name`` changes over time (else it is computed once per input)."""
        return self._dynamic[name]

    @property
    def timesteps_calibrated(self) -> list[int]:
        return list(self.program.timesteps)

    def default_chunk(self, batch: int, *, observer: bool = False) -> int:
        """Time steps per chunk so that one chunk's activations fit the memory budget.

        The node executor keeps a few tensors of the largest size per step; the fused
        executor keeps only the readout (and, for an observer, every node's output).
        """
        if self.executor == "fused":
            plan = self._fused_plan(observer)
            per_step = 4 * batch * (plan.readout_size + plan.record_size)
        else:
            # A few live tensors of the largest size at once (input, output, scratch).
            per_step = 4 * batch * self._largest_sample * 4
        return max(1, self.memory_budget // max(per_step, 1))

    # ----------------------------------------------------------------- state
    def reset(self) -> None:
        """Forgets all neuron state: the next step is step 1 again."""
        self._state = {node.name: {} for node in self.program.nodes}
        self._sums: dict[str, np.ndarray] = {}
        previous = getattr(self, "_fused_state", None)
        self._spare_state = previous if previous is not None else getattr(
            self, "_spare_state", None)
        self._fused_state: dict | None = None
        self._batch: int | None = None  # of the steps since reset, which step() must keep
        self.t = 0

    def select_parameters(self, timesteps: int) -> int:
        """Uses the neuron parameters calibrated for the T closest to ``timesteps``."""
        steps = _positive_int("timesteps", timesteps)
        self.parameter_row = nearest_calibrated(self.program.timesteps, steps)
        return self.program.timesteps[self.parameter_row]

    def counters(self) -> dict[str, np.ndarray]:
        """What each node counted since :meth:`reset`, per sample: ``{node name: (N,)}``.

        ``conv`` and ``gemm`` on dynamic inputs count the additions an event-driven layer
        does (each nonzero input times the outputs it reaches), neuron layers the spikes
        they sent (a burst of k counts k). :func:`snncompiler.runtime.stats.activity` turns
        these into synaptic operations and firing rates per image.
        """
        counted = {}
        if self._fused_state is not None:
            for plan, totals in self._fused_state["counts"].values():
                for k, name in enumerate(plan.op_nodes):
                    if plan.ops[k, kernels.OPCODE] in COUNTING_OPCODES:
                        counted[name] = counted.get(name, 0) + totals[:, k]
        for node in self.program.nodes:
            if "count" in self._state[node.name]:
                counted[node.name] = np.asarray(self._state[node.name]["count"], np.int64)
        return counted

    # ----------------------------------------------------------------- feeding
    def _feeds(self, inputs) -> dict[str, np.ndarray]:
        specs = self.program.inputs
        if isinstance(inputs, np.ndarray) or not isinstance(inputs, dict):
            if len(specs) != 1:
                names = ", ".join(s.name for s in specs)
                raise InputError(f"the network has {len(specs)} inputs ({names}); pass a dict")
            inputs = {specs[0].name: inputs}
        feeds, batch = {}, None
        for spec in specs:
            if spec.name not in inputs:
                raise InputError(f"missing input {spec.name!r}")
            array = np.asarray(inputs[spec.name])
            if not np.issubdtype(array.dtype, np.floating):
                raise InputError(f"input {spec.name!r}: dtype {array.dtype}, expected float32 "
                                 "(preprocess uint8 images first)")
            if array.shape[1:] != tuple(spec.shape) or array.ndim != len(spec.shape) + 1:
                raise InputError(f"input {spec.name!r}: shape {list(array.shape)}, expected "
                                 f"[N, {', '.join(map(str, spec.shape))}]")
            if array.shape[0] == 0:
                raise InputError(f"input {spec.name!r} is empty (batch of 0)")
            if batch is not None and array.shape[0] != batch:
                raise InputError("all inputs must have the same batch size")
            batch = array.shape[0]
            array = np.ascontiguousarray(array, dtype=np.float32)
            if not np.isfinite(array).all():
                raise InputError(f"input {spec.name!r} holds NaN or Inf values")
            feeds[spec.name] = array
        unknown = set(inputs) - {s.name for s in specs}
        if unknown:
            raise InputError(f"unknown inputs {sorted(unknown)}; the network's inputs are "
                             f"{[s.name for s in specs]}")
        return feeds

    def _execute(self, nodes, values: dict[str, Value], observer=None) -> None:
        for node in nodes:
            inputs = [values[name] for name in node.inputs]
            values[node.output] = EXECUTORS[node.op](node, inputs, self._state[node.name], self)
            if observer is not None:
                observer(node, values[node.output], self.t)

    def _chunk(self, static: dict[str, Value], steps: int, observer=None) -> dict[str, Value]:
        self.chunk_steps = steps
        values = dict(static)
        self._execute(self._dynamic_nodes, values, observer)
        return values

    def _static_values(self, feeds, observer=None) -> dict[str, Value]:
        values = {name: Value(array, False) for name, array in feeds.items()}
        self._execute(self._static_nodes, values, observer)
        return values

    def _readout(self, value: Value, name: str, steps: int) -> np.ndarray:
        """Readout after each step of the chunk: running sum over all steps so far / t."""
        if not value.dynamic:
            data = np.broadcast_to(value.data[None], (steps, *value.data.shape))
        else:
            data = value.data
        running = np.cumsum(data, axis=0, dtype=np.float64)
        if name in self._sums:
            running += self._sums[name]
        self._sums[name] = running[-1]
        elapsed = self.t + np.arange(1, steps + 1, dtype=np.float64)
        return (running / elapsed.reshape(-1, *([1] * (running.ndim - 1)))).astype(np.float32)

    # ----------------------------------------------------------------- fused executor
    def _static_rows(self, plan: fused.FusedPlan, static: dict[str, Value],
                     batch: int) -> np.ndarray:
        """The static tensors the dynamic nodes read, one row per sample."""
        rows = np.empty((batch, plan.static_size), dtype=np.float32)
        for name, (offset, size) in plan.static.items():
            rows[:, offset:offset + size] = fused.to_storage(static[name].data,
                                                             self._shapes[name])
        return rows

    def _fresh_fused_state(self, plan: fused.FusedPlan, batch: int) -> dict:
        """Neuron and tracker state at step 0, in the arrays of the previous run when they
        fit (allocating and first touching ~100 MB for a large batch costs more than
        clearing it)."""
        sizes = plan.state_sizes
        dtypes = {"fstate": np.float32, "istate": np.int32, "dstate": np.float64}
        spare = self._spare_state or {}
        state = {}
        for (name, dtype), size in zip(dtypes.items(), sizes):
            array = spare.get(name)
            if array is None or array.shape != (batch, size):
                array = np.empty((batch, size), dtype=dtype)
            array.fill(0)
            state[name] = array
        for offset, v0, shape in plan.membranes:
            start = fused.per_neuron(v0, shape)[self.parameter_row]
            state["fstate"][:, offset:offset + start.size] = start
        state["counts"] = {}  # per plan (with or without RECORD rows): (plan, (N, n_ops))
        self._fused_state = state
        self._spare_state = None
        return state

    def _fused_steps(self, plan: fused.FusedPlan, rows: np.ndarray, readout: np.ndarray,
                     record: np.ndarray) -> None:
        """Advances the fused executor by ``readout.shape[0]`` steps from step ``self.t``."""
        batch = rows.shape[0]
        # run() resets first and step() refuses a batch that differs from its earlier steps,
        # so the state, when there is one, is this batch's.
        state = self._fused_state
        if state is None:
            state = self._fresh_fused_state(plan, batch)
        counts = state["counts"].setdefault(
            id(plan), (plan, np.zeros((batch, len(plan.ops)), dtype=np.int64)))[1]
        blocks = min(batch, BLOCKS_PER_THREAD * numba.get_num_threads())
        if self._scratch is None or self._scratch["arena"].shape[0] != blocks or any(
                self._scratch[k].shape[1] < size for k, size in plan.scratch.items()):
            self._scratch = {name: np.zeros((blocks, plan.scratch[name]),
                                            dtype=fused.SCRATCH_DTYPES[name])
                             for name in fused.SCRATCH}
        scratch = [self._scratch[name] for name in fused.SCRATCH]
        # Blocks are handed to threads one at a time, so a thread slowed down by another
        # process does not hold the others up; results never depend on it.
        with numba.parallel_chunksize(1):
            kernels.run_steps(plan.ops, plan.params, plan.dparams, plan.index, plan.every, rows,
                              state["fstate"], state["istate"], state["dstate"],
                              self.parameter_row, self.t, readout, record, *scratch, counts)

    def _run_fused(self, feeds, steps: int, chunk: int | None, observer) -> dict:
        plan = self._fused_plan(observer is not None)
        static = self._static_values(feeds, observer)
        batch = next(iter(feeds.values())).shape[0]
        rows = self._static_rows(plan, static, batch)
        chunk = chunk or self.default_chunk(batch, observer=observer is not None)
        readout = np.empty((steps, batch, plan.readout_size), dtype=np.float32)
        while self.t < steps:
            todo = min(chunk, steps - self.t)
            self.chunk_steps = todo
            record = np.empty((todo, batch, plan.record_size), dtype=np.float32)
            self._fused_steps(plan, rows, readout[self.t:self.t + todo], record)
            if observer is not None:
                self._observe_record(plan, record, observer)
            self.t += todo
        return self._fused_outputs(plan, readout, static)

    def _observe_record(self, plan: fused.FusedPlan, record: np.ndarray, observer) -> None:
        steps, batch = record.shape[:2]
        recorded: dict[str, np.ndarray] = {}
        for node in self._dynamic_nodes:
            if node.op == "reshape":
                data = recorded[node.inputs[0]].reshape(steps, batch, *node.shape)
            else:
                column, size = plan.record[node.name]
                data = fused.from_storage(record[:, :, column:column + size], node.shape)
            recorded[node.output] = data
            observer(node, Value(data, True), self.t)

    def _fused_outputs(self, plan: fused.FusedPlan, readout: np.ndarray,
                       static: dict[str, Value]) -> dict[str, np.ndarray]:
        steps, batch = readout.shape[:2]
        result = {}
        for spec in self.program.outputs:
            if spec.name in plan.readout:
                column, size = plan.readout[spec.name]
                data = fused.from_storage(readout[:, :, column:column + size],
                                          self._shapes[spec.name])
                if size != readout.shape[2] or not data.flags.c_contiguous:
                    data = np.ascontiguousarray(data)
                result[spec.name] = data
            else:  # constant over time: its running mean is itself
                value = static[spec.name].data.astype(np.float32)
                result[spec.name] = np.ascontiguousarray(
                    np.broadcast_to(value[None], (steps, *value.shape)))
        return result

    # ----------------------------------------------------------------- public API
    def run(self, inputs, timesteps: int | None = None, *, time_chunk: int | None = None,
            parameters_for: int | None = None, observer=None):
        """Simulates ``timesteps`` steps from a fresh state with a constant (direct) input.

        Args:
            inputs: (N, ...) float32 array, or a dict by input name for several inputs.
            timesteps: Number of steps; default: the program's default T.
            time_chunk: Steps simulated at once; default from the memory budget. Results do
                not depend on it.
            parameters_for: Use the neuron parameters calibrated for this T (default: the
                calibrated T closest to ``timesteps``).
            observer: Optional ``f(node, value, t0)`` called with every node's output of
                every chunk (for diagnostics); ``value.data`` is (Tc, N, ...) if dynamic.

        Returns:
            For a single-output network, an array (timesteps, N, ...): the readout after each
            step 1..T. For several outputs, a dict of such arrays by output name.

        Raises:
            InputError: An argument that is not a positive integer, inputs that do not fit,
                or a readout larger than ``MAX_READOUT_BYTES``.

        Warns:
            UserWarning: ``timesteps`` above ``LONG_RUN_STEPS``, with the readout's size.
        """
        steps = self._check_timesteps(timesteps)
        if time_chunk is not None:
            time_chunk = _positive_int("time_chunk", time_chunk)
        if parameters_for is not None:
            parameters_for = _positive_int("parameters_for", parameters_for)
        feeds = self._feeds(inputs)
        batch = next(iter(feeds.values())).shape[0]
        self._check_run_size(steps, batch)
        self.select_parameters(steps if parameters_for is None else parameters_for)
        self.reset()
        self._batch = batch
        if self.executor == "fused":
            result = self._run_fused(feeds, steps, time_chunk, observer)
            return next(iter(result.values())) if len(result) == 1 else result
        chunk = time_chunk or self.default_chunk(batch)
        static = self._static_values(feeds, observer)
        outputs = {spec.name: [] for spec in self.program.outputs}
        while self.t < steps:
            todo = min(chunk, steps - self.t)
            values = self._chunk(static, todo, observer)
            for name in outputs:
                outputs[name].append(self._readout(values[name], name, todo))
            self.t += todo
        result = {name: np.concatenate(parts) for name, parts in outputs.items()}
        return next(iter(result.values())) if len(result) == 1 else result

    def step(self, inputs):
        """Advances one step with ``inputs`` as this step's input (streaming).

        Returns:
            The readout after the steps so far: (N, ...) for a single output, else a dict.
        """
        feeds = self._feeds(inputs)
        batch = next(iter(feeds.values())).shape[0]
        if self._batch is not None and batch != self._batch:
            raise InputError(f"batch of {batch} after steps with a batch of {self._batch}; "
                             "call reset() first")
        self._batch = batch
        static = self._static_values(feeds)
        if self.executor == "fused":
            plan = self._fused_plan(False)
            readout = np.empty((1, batch, plan.readout_size), dtype=np.float32)
            self.chunk_steps = 1
            self._fused_steps(plan, self._static_rows(plan, static, batch), readout,
                              np.empty((1, batch, 0), dtype=np.float32))
            result = {name: out[0] for name, out in
                      self._fused_outputs(plan, readout, static).items()}
        else:
            values = self._chunk(static, 1)
            result = {spec.name: self._readout(values[spec.name], spec.name, 1)[0]
                      for spec in self.program.outputs}
        self.t += 1
        return next(iter(result.values())) if len(result) == 1 else result

    def _check_timesteps(self, timesteps) -> int:
        if timesteps is None:
            return self.program.default_timesteps
        return _positive_int("timesteps", timesteps)

    def _check_run_size(self, steps: int, batch: int) -> None:
        """Refuses a readout too large for memory; warns about a run of very many steps."""
        needed = sum(4 * steps * batch * math.prod(s.shape) for s in self.program.outputs)
        if needed > MAX_READOUT_BYTES:
            raise InputError(
                f"T={steps} with a batch of {batch} needs {needed / 2**30:.1f} GiB for the "
                f"readout alone (limit {MAX_READOUT_BYTES / 2**30:.0f} GiB); use fewer "
                "timesteps or a smaller batch, or step() for streaming")
        if steps > LONG_RUN_STEPS:
            warnings.warn(f"T={steps} is a long run (more than {LONG_RUN_STEPS} steps): the "
                          f"readout of a batch of {batch} alone takes {needed / 2**20:.1f} MiB",
                          stacklevel=3)
