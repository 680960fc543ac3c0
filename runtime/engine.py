"""The timestep engine: plans a Program once, then runs it chunk by chunk over time.

Values flowing between nodes are either *static*, ``(N, ...)``, constant over time (what is
computed from the directly coded input alone: the first linear segment runs once, with
numpy, :mod:`snncompiler.runtime.nodes`), or *dynamic*, one value per step. Stateful ops
keep their state between chunks, so any chunking, including ``step()`` one step at a time,
gives the same result.

The dynamic part runs in the fused executor: :func:`snncompiler.runtime.fused.plan` lays it
out once as arrays, and one numba call per time chunk
(:func:`snncompiler.runtime.kernels.run_steps`) runs all dynamic nodes sample by sample and
step by step, with event-driven ``conv``/``gemm`` on spikes. It runs every op of the schema;
its results do not depend on the time chunk, the batch or the thread count, bit for bit.

The numpy reference that the tests hold the fused executor to,
:class:`snncompiler.runtime.reference.ReferenceNetwork`, runs the dynamic part node by node
instead; nothing in the runtime or the compiler uses it.

Readout: each graph output accumulates its value; the readout after t steps is the sum of
its values over steps 1..t divided by t.
"""

from __future__ import annotations

import math
import warnings

import numba
import numpy as np

from snncompiler.runtime import fused, kernels
from snncompiler.runtime.errors import InputError
from snncompiler.runtime.graph import Program, Value
from snncompiler.runtime.nodes import EXECUTORS
from snncompiler.runtime.opset import OPS, infer_shape

DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes of activations per time chunk
MAX_READOUT_BYTES = 4 * 2**30
# A run longer than this warns with the readout's size: legitimate for long simulations, so
# not refused, but more often a slip (T=10**6 for 10**3) that ties the process up for hours.
LONG_RUN_STEPS = 100_000
COUNTING_OPCODES = (kernels.CONV, kernels.CONV_GROUPED, kernels.GEMM, kernels.SNM,
                    kernels.TRACK)

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
        memory_budget: Bytes of activations one time chunk may use (see
            :meth:`chunk_shape`); sets the default chunk.

    Example:
        >>> net = SpikingNetwork(program)
        >>> readout = net.run(x, timesteps=32)   # (32, N, classes): readout after each step
        >>> readout[7].argmax(-1)                 # prediction at T = 8
    """

    def __init__(self, program: Program, *, memory_budget: int = DEFAULT_MEMORY_BUDGET):
        self.program = program
        self.memory_budget = _positive_int("memory_budget", memory_budget)
        self._plan()
        self._fused_plans: dict[bool, fused.FusedPlan] = {}
        self._scratch: dict[str, np.ndarray] | None = None  # per-block rows of the kernels
        self.parameter_row = nearest_calibrated(program.timesteps, program.default_timesteps)
        self.reset()

    # ----------------------------------------------------------------- planning
    def _plan(self) -> None:
        program = self.program
        shapes = {spec.name: tuple(spec.shape) for spec in program.inputs}
        dynamic = {spec.name: False for spec in program.inputs}
        for node in program.nodes:
            if node.op not in OPS:
                raise InputError(f"node {node.name!r}: unknown op {node.op!r}; known ops: "
                                 f"{', '.join(sorted(OPS))}")
            shape = infer_shape(node, [shapes[name] for name in node.inputs])
            if tuple(node.shape) != shape:
                raise InputError(f"node {node.name!r}: stored shape {list(node.shape)} "
                                 f"but its inputs give {list(shape)}")
            shapes[node.output] = shape
            dynamic[node.output] = OPS[node.op].spiking or any(dynamic[n] for n in node.inputs)
        self._shapes = shapes
        self._dynamic = dynamic
        self._static_nodes = [n for n in program.nodes if not dynamic[n.output]]
        self._dynamic_nodes = [n for n in program.nodes if dynamic[n.output]]

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

    def chunk_shape(self, batch: int, *, observer: bool = False,
                    time_chunk: int | None = None) -> tuple[int, int]:
        """(steps, samples) of one time chunk, so that what a chunk holds fits the budget.

        The fused executor holds, per step and sample of a chunk, a readout row and, for an
        observer, a record row: every dynamic node's output. A chunk covers the whole batch
        for as many steps as fit (``time_chunk``, when given); with an observer, fewer
        samples when even that does not fit.
        """
        plan = self._fused_plan(observer)
        per_sample_step = max(4 * (plan.readout_size + plan.record_size), 1)
        steps = time_chunk or max(1, self.memory_budget // (per_sample_step * batch))
        samples = batch
        if observer:
            samples = min(batch, max(1, self.memory_budget // (per_sample_step * steps)))
        return steps, samples

    def state_bytes(self) -> int:
        """Bytes that one sample's neuron and tracker state and static row take while it is
        simulated (held for the whole batch of a run, on top of the chunk budget): what a
        caller divides its memory by to choose a batch size."""
        plan = self._fused_plan(False)
        f, i, d = plan.state_sizes
        return 4 * f + 4 * i + 8 * d + 4 * plan.static_size

    # ----------------------------------------------------------------- state
    def reset(self) -> None:
        """Forgets all neuron state: the next step is step 1 again."""
        self._state = {node.name: {} for node in self.program.nodes}
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
        return counted

    def net_spikes(self) -> dict[str, np.ndarray]:
        """Every neuron layer's net spike count since :meth:`reset`, per neuron:
        ``{node name: (N, *shape) int32}``.

        A neuron sends ``+-theta`` per spike, so its output summed over the steps run is its
        threshold times this count: what the layer sent, without observing every step.
        """
        found = {}
        if self._fused_state is not None:
            plan = self._fused_plan(False)  # the state layout does not depend on recording
            istate = self._fused_state["istate"]
            for node in self.program.neuron_nodes():
                offset = plan.memories[node.name]
                size = math.prod(node.shape)
                found[node.name] = fused.from_storage(
                    istate[:, offset:offset + size], tuple(node.shape)).copy()
        return found

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

    def _static_values(self, feeds, observer=None) -> dict[str, Value]:
        values = {name: Value(array, False) for name, array in feeds.items()}
        self._execute(self._static_nodes, values, observer)
        return values

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
                     record: np.ndarray, first: int = 0) -> None:
        """Advances samples ``first .. first + readout.shape[1] - 1`` of the batch whose
        static rows are ``rows`` by ``readout.shape[0]`` steps from step ``self.t``."""
        batch = rows.shape[0]
        # run() resets first and step() refuses a batch that differs from its earlier steps,
        # so the state, when there is one, is this batch's.
        state = self._fused_state
        if state is None:
            state = self._fresh_fused_state(plan, batch)
        counts = state["counts"].setdefault(
            id(plan), (plan, np.zeros((batch, len(plan.ops)), dtype=np.int64)))[1]
        samples = slice(first, first + readout.shape[1])
        blocks = min(readout.shape[1], kernels.BLOCKS_PER_THREAD * numba.get_num_threads())
        if self._scratch is None or self._scratch["arena"].shape[0] < blocks or any(
                self._scratch[k].shape[1] < size for k, size in plan.scratch.items()):
            self._scratch = {name: np.zeros((blocks, plan.scratch[name]),
                                            dtype=fused.SCRATCH_DTYPES[name])
                             for name in fused.SCRATCH}
        scratch = [self._scratch[name][:blocks] for name in fused.SCRATCH]
        # Blocks are handed to threads one at a time, so a thread slowed down by another
        # process does not hold the others up; results never depend on it.
        with numba.parallel_chunksize(1):
            kernels.run_steps(plan.ops, plan.params, plan.dparams, plan.index, plan.every,
                              rows[samples], state["fstate"][samples],
                              state["istate"][samples], state["dstate"][samples],
                              self.parameter_row, self.t, readout, record, *scratch,
                              counts[samples])

    def _run_steps(self, feeds, steps: int, time_chunk: int | None, observer) -> dict:
        """``steps`` steps of the dynamic part from ``self.t``: each output's readout after
        every step, ``(steps, N, ...)``."""
        plan = self._fused_plan(observer is not None)
        static = self._static_values(feeds, observer)
        batch = next(iter(feeds.values())).shape[0]
        rows = self._static_rows(plan, static, batch)
        chunk, samples = self.chunk_shape(batch, observer=observer is not None,
                                          time_chunk=time_chunk)
        readout = np.empty((steps, batch, plan.readout_size), dtype=np.float32)
        while self.t < steps:
            todo = min(chunk, steps - self.t)
            for first in range(0, batch, samples):
                block = slice(first, min(batch, first + samples))
                count = block.stop - first
                # The kernel writes a contiguous readout: the chunk's rows of the whole
                # batch, or of a block of it copied in after.
                out = (readout[self.t:self.t + todo] if count == batch else
                       np.empty((todo, count, plan.readout_size), dtype=np.float32))
                record = np.empty((todo, count, plan.record_size), dtype=np.float32)
                self._fused_steps(plan, rows, out, record, first)
                if count < batch:
                    readout[self.t:self.t + todo, block] = out
                if observer is not None:
                    self._observe_record(plan, record, observer, block)
            self.t += todo
        return self._fused_outputs(plan, readout, static)

    def _observe_record(self, plan: fused.FusedPlan, record: np.ndarray, observer,
                        samples: slice) -> None:
        steps, batch = record.shape[:2]
        recorded: dict[str, np.ndarray] = {}
        for node in self._dynamic_nodes:
            if node.name in plan.record:
                column, size = plan.record[node.name]
                data = fused.from_storage(record[:, :, column:column + size], node.shape)
            else:  # a free reshape: no row of its own
                data = recorded[node.inputs[0]].reshape(steps, batch, *node.shape)
            recorded[node.output] = data
            observer(node, Value(data, True, samples), self.t)

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
                every chunk (for diagnostics), in node order: ``value.data`` is (N, ...) if
                static (once), else (Tc, n, ...), the steps ``t0 ..`` of the samples
                ``value.samples`` of the batch: the whole batch unless one step of every
                node's output for it does not fit the memory budget (see
                :meth:`chunk_shape`); then, for each time chunk, blocks of samples in order.

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
        result = self._run_steps(feeds, steps, time_chunk, observer)
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
        result = self._one_step(feeds, batch)
        self.t += 1
        return next(iter(result.values())) if len(result) == 1 else result

    def _one_step(self, feeds, batch: int) -> dict[str, np.ndarray]:
        """One step of the dynamic part from ``self.t``: each output's readout after it."""
        static = self._static_values(feeds)
        plan = self._fused_plan(False)
        readout = np.empty((1, batch, plan.readout_size), dtype=np.float32)
        self._fused_steps(plan, self._static_rows(plan, static, batch), readout,
                          np.empty((1, batch, 0), dtype=np.float32))
        return {name: out[0] for name, out in self._fused_outputs(plan, readout, static).items()}

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
