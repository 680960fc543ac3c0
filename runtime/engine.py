"""The timestep engine: plans a Program once, then runs it chunk by chunk over time.

Values flowing between nodes are either *static*, ``(N, ...)``, constant over time (what is
computed from the directly coded input alone, so the first linear segment runs once), or
*dynamic*, ``(Tc, N, ...)``, one slice per step of the current time chunk. Stateless ops
fold time into the batch; ``snm`` and ``maxpool`` scan time and keep their state between
chunks, so any chunking, including ``step()`` one step at a time, gives the same result.

Readout: each graph output accumulates its value; the readout after t steps is the sum of
its values over steps 1..t divided by t.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from snncompiler.runtime import linear
from snncompiler.runtime.errors import InputError
from snncompiler.runtime.graph import Program
from snncompiler.runtime.neurons import THETA_NEG_CODES, snm_scan
from snncompiler.runtime.opset import infer_shape
from snncompiler.runtime.pooling import maxpool_track

DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes of activations per time chunk
MAX_READOUT_BYTES = 4 * 2**30


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


def _run_conv(node, inputs, state, engine):
    a = node.attrs
    return _folded(inputs[0], lambda x: linear.conv2d(
        x, node.arrays["weight"], node.arrays["bias"], a["strides"], a["pads"],
        a["dilations"], a["group"]))


def _run_gemm(node, inputs, state, engine):
    return _folded(inputs[0], lambda x: linear.gemm(x, node.arrays["weight"], node.arrays["bias"]))


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
    data = x.data if x.dynamic else x.data[None]
    steps = data.shape[0] if x.dynamic else engine.chunk_steps
    batch = data.shape[1]
    channels = node.shape[0] if node.shape else 1
    current = np.ascontiguousarray(data, dtype=np.float32).reshape(
        data.shape[0], batch, channels, -1)
    if "membrane" not in state:
        v0 = node.arrays["v0"][row].astype(np.float32)
        state["membrane"] = np.ascontiguousarray(
            np.broadcast_to(v0[None, :, None], (batch, channels, current.shape[3])))
        state["memory"] = np.zeros((batch, channels, current.shape[3]), dtype=np.int32)
    out = np.empty((steps, batch, channels, current.shape[3]), dtype=np.float32)
    snm_scan(current, not x.dynamic, theta, THETA_NEG_CODES[node.attrs["theta_neg"]],
             node.attrs["max_spikes_per_step"], state["membrane"], state["memory"], out)
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
}


# --------------------------------------------------------------------------- engine


def nearest_calibrated(timesteps: list[int], steps: int) -> int:
    """Index of the calibrated T closest to ``steps`` on a log scale (ties: the larger T)."""
    distances = [(abs(math.log(t / steps)), -t) for t in timesteps]
    return distances.index(min(distances))


class SpikingNetwork:
    """A loaded spiking network, ready to run.

    Args:
        program: The compiled program (see :func:`snncompiler.runtime.load`).
        memory_budget: Bytes of activations one time chunk may use; sets the default chunk.

    Example:
        >>> net = SpikingNetwork(program)
        >>> readout = net.run(x, timesteps=32)   # (32, N, classes): readout after each step
        >>> readout[7].argmax(-1)                 # prediction at T = 8
    """

    def __init__(self, program: Program, *, memory_budget: int = DEFAULT_MEMORY_BUDGET):
        self.program = program
        self.memory_budget = memory_budget
        self._plan()
        self.parameter_row = nearest_calibrated(program.timesteps, program.default_timesteps)
        self.chunk_steps = 1
        self.reset()

    # ----------------------------------------------------------------- planning
    def _plan(self) -> None:
        program = self.program
        shapes = {spec.name: tuple(spec.shape) for spec in program.inputs}
        dynamic = {spec.name: False for spec in program.inputs}
        last_use: dict[str, int] = {}
        for index, node in enumerate(program.nodes):
            if node.op not in EXECUTORS:
                raise InputError(f"node {node.name!r}: unknown op {node.op!r}")
            shape = infer_shape(node, [shapes[name] for name in node.inputs])
            if tuple(node.shape) != shape:
                raise InputError(f"node {node.name!r}: stored shape {list(node.shape)} "
                                 f"but its inputs give {list(shape)}")
            shapes[node.output] = shape
            dynamic[node.output] = node.op == "snm" or any(dynamic[n] for n in node.inputs)
            for name in node.inputs:
                last_use[name] = index
        outputs = {spec.name for spec in program.outputs}
        self._free_after = [
            [n for n in node.inputs if last_use[n] == i and n not in outputs]
            for i, node in enumerate(program.nodes)
        ]
        self._shapes = shapes
        self._dynamic = dynamic
        self._static_nodes = [n for n in program.nodes if not dynamic[n.output]]
        self._dynamic_nodes = [n for n in program.nodes if dynamic[n.output]]
        self._largest_sample = max(math.prod(s) for s in shapes.values())

    @property
    def timesteps_calibrated(self) -> list[int]:
        return list(self.program.timesteps)

    def default_chunk(self, batch: int) -> int:
        """Time steps per chunk so that one chunk's largest activations fit the budget."""
        # A few live tensors of the largest size at once (input, output, scratch).
        per_step = 4 * batch * self._largest_sample * 4
        return max(1, self.memory_budget // max(per_step, 1))

    # ----------------------------------------------------------------- state
    def reset(self) -> None:
        """Forgets all neuron state: the next step is step 1 again."""
        self._state = {node.name: {} for node in self.program.nodes}
        self._sums: dict[str, np.ndarray] = {}
        self.t = 0

    def select_parameters(self, timesteps: int) -> int:
        """Uses the neuron parameters calibrated for the T closest to ``timesteps``."""
        self.parameter_row = nearest_calibrated(self.program.timesteps, timesteps)
        return self.program.timesteps[self.parameter_row]

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
        """
        steps = self._check_timesteps(timesteps)
        feeds = self._feeds(inputs)
        batch = next(iter(feeds.values())).shape[0]
        self._check_readout_memory(steps, batch)
        self.select_parameters(parameters_for or steps)
        self.reset()
        chunk = int(time_chunk) if time_chunk else self.default_chunk(batch)
        if chunk < 1:
            raise InputError(f"time_chunk must be at least 1, got {time_chunk}")
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
        static = self._static_values(feeds)
        values = self._chunk(static, 1)
        result = {spec.name: self._readout(values[spec.name], spec.name, 1)[0]
                  for spec in self.program.outputs}
        self.t += 1
        return next(iter(result.values())) if len(result) == 1 else result

    def _check_timesteps(self, timesteps) -> int:
        steps = self.program.default_timesteps if timesteps is None else timesteps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise InputError(f"timesteps must be a positive integer, got {timesteps!r}")
        return int(steps)

    def _check_readout_memory(self, steps: int, batch: int) -> None:
        needed = sum(4 * steps * batch * math.prod(s.shape) for s in self.program.outputs)
        if needed > MAX_READOUT_BYTES:
            raise InputError(
                f"T={steps} with a batch of {batch} needs {needed / 2**30:.1f} GiB for the "
                f"readout alone (limit {MAX_READOUT_BYTES / 2**30:.0f} GiB); use fewer "
                "timesteps or a smaller batch, or step() for streaming")
