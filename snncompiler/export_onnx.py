"""One timestep of a spiking network as a plain ONNX graph (``snnc export``).

The exported graph holds standard ONNX ops only (opset 17), so the network runs wherever ONNX
runs, one step per call, with its state passed in and out by the caller::

    inputs:  the program's inputs (names and per-sample shapes as in the .snn file, batch first),
             t                   int64 scalar, the number of this step: 1 at the first step,
             state_in_<name>...  one per state tensor, all zeros before the first step;
    outputs: readout             the running mean of the program's output after this step,
                                 exactly what SpikingNetwork.step returns (one
                                 readout_<output name> per output when there are several),
             state_out_<name>... the state after this step, same order and names: feed
                                 state_out_<name> as state_in_<name> of the next step.

Every state has the batch as its symbolic first dimension ``N``. The graph applies what is
not zero at the start itself: an SNM membrane starts at ``v0``, added when ``t == 1``. The
neuron parameters are one row of the program's: those calibrated for one T.

The static segment (the layers on the directly coded input, up to the first neuron) is
recomputed at every step; the runtime computes it once per input. Both give the same values.

What each op becomes (the runtime's semantics, :mod:`snncompiler.runtime.opset`):

- conv, gemm, affine, add, avgpool, global_avgpool, reshape, concat, transpose, pad, resize,
  reduce: the ONNX op or a few (stateless, applied to every step's signal);
- snm: float32 membrane ``V`` and spike count ``M`` (a float count: exact below 2**24), the
  burst of up to k spikes in the closed form of :func:`_signed_spikes`;
- snm_clip, snm_leaky: float64 running input ``S`` and count ``M``, as the runtime keeps
  them; the tracked value ``f_t(S)`` uses ``upper * t``;
- maxpool on a dynamic signal: the signed tracker, float64 running input ``A`` and pooled
  ``P``, emitting ``P(t) - P(t-1)`` (on the spikes of an SNM layer: on its counts ``M``,
  see :func:`_maxpool`);
- analog: float64 running sums of its dynamic inputs and the previous value ``y(t-1)``,
  emitting ``t * y(t) - (t - 1) * y(t-1)``;
- the readout of every dynamic output: a float64 running sum, divided by ``t``.

Numerics. The graph does what the runtime does, in the same precision, except for the order
in which a conv, gemm or pool adds its terms (onnxruntime's kernels against ours) and the
burst closed form, which equals the runtime's spike loop in exact arithmetic and, for
neurons that send one spike a step at most, in floating point too (see
:func:`_signed_spikes`). A neuron whose potential lands within rounding of its threshold may
then fire one step earlier or later in one than in the other; the spike is not lost (the
membrane keeps the difference), so the readouts differ by ``theta / t`` of that neuron's
path to the output and close up again. ``tests/snncompiler/test_export_onnx.py`` measures it.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from snncompiler.errors import InputError
from snncompiler.runtime.engine import SpikingNetwork, nearest_calibrated
from snncompiler.runtime.graph import Node, Program
from snncompiler.runtime.linear import avgpool_divisor
from snncompiler.runtime.neuron_variants import tracking_parameters

OPSET = 17
BATCH = "N"
STEP_INPUT = "t"
STATE_IN = "state_in_"
STATE_OUT = "state_out_"
MAX_PROTO_BYTES = 2**31 - 1  # protobuf's limit on one serialized message

FLOAT, DOUBLE, INT64 = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64
_NUMPY = {FLOAT: np.float32, DOUBLE: np.float64, INT64: np.int64}


def readout_names(program: Program) -> list[str]:
    """The readout outputs of the exported step: ``readout``, or one per program output."""
    if len(program.outputs) == 1:
        return ["readout"]
    return [f"readout_{spec.name}" for spec in program.outputs]


def calibrated_for(program: Program, timesteps_for: int | None = None) -> int:
    """The calibrated T whose neuron parameters a step for ``timesteps_for`` uses: the
    nearest, as ``SpikingNetwork.run(x, T)`` picks it (default: the program's default T)."""
    if timesteps_for is None:
        timesteps_for = program.default_timesteps
    return program.timesteps[nearest_calibrated(program.timesteps, timesteps_for)]


def export_step(program: Program, *, timesteps_for: int | None = None) -> onnx.ModelProto:
    """One timestep of ``program`` as an ONNX model (see the module docstring).

    Args:
        program: A validated program (:func:`snncompiler.runtime.format.load_program`).
        timesteps_for: Use the neuron parameters calibrated for the T nearest to this one,
            as ``SpikingNetwork.run(x, T)`` does; default: the program's default T.

    Raises:
        InputError: ``timesteps_for`` is not a positive integer, a program input's name is
            one the step graph uses itself, or the model is too large for one ONNX file.
    """
    if timesteps_for is not None and (isinstance(timesteps_for, bool) or not isinstance(
            timesteps_for, int) or timesteps_for < 1):
        raise InputError(f"timesteps_for must be a positive integer, got {timesteps_for!r}")
    net = SpikingNetwork(program)  # plans: shapes, static or dynamic
    row = nearest_calibrated(program.timesteps, timesteps_for or program.default_timesteps)
    builder = _StepBuilder(program, net, row)
    model = builder.model()
    model.metadata_props.extend([
        onnx.StringStringEntryProto(key="snncompiler.parameters_for_T",
                                    value=str(program.timesteps[row])),
        onnx.StringStringEntryProto(key="snncompiler.producer", value=program.producer),
        onnx.StringStringEntryProto(key="snncompiler.protocol", value=_PROTOCOL),
    ])
    size = model.ByteSize()
    if size > MAX_PROTO_BYTES:
        raise InputError(f"the step graph takes {size / 2**30:.1f} GiB, more than one ONNX "
                         "file can hold (2 GiB)")
    return model


_PROTOCOL = ("call once per step with t = 1, 2, ...; state_in_* are zeros at t = 1, then the "
             "state_out_* of the previous call; readout is the running mean of the output")


# --------------------------------------------------------------------------- builder


class _StepBuilder:
    """Collects the nodes, initializers and state of the step graph."""

    def __init__(self, program: Program, net: SpikingNetwork, row: int):
        self.program = program
        self.shapes = net.tensor_shapes
        self.is_dynamic = net.is_dynamic
        self.row = row
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.states: list[tuple[str, tuple[int, ...], int, str]] = []  # key, shape, type, out
        self.count = 0
        self._cache: dict[str, str] = {}
        self._renamed: dict[str, str] = {}  # tensor -> the graph output it became
        self.spike_counts: dict[str, tuple[str, str]] = {}  # see _snm
        reserved = {STEP_INPUT, *readout_names(program)}
        self.names = {spec.name for spec in program.inputs}
        for spec in program.inputs:
            if spec.name in reserved or spec.name.startswith((STATE_IN, STATE_OUT)):
                raise InputError(f"the program's input {spec.name!r} has a name the step graph "
                                 "uses itself (t, readout*, state_in_*, state_out_*)")

    # ----------------------------------------------------------------- graph pieces
    def fresh(self, base: str) -> str:
        """An internal tensor name, never one of the graph's inputs or outputs: those are
        the program's inputs (reserved in ``names``), ``t``, ``readout*`` and ``state_*``,
        none of which starts like ``n<number>/``."""
        self.count += 1
        name = f"n{self.count}/{base}"
        while name in self.names:  # pragma: no cover - only a program input could clash
            self.count += 1
            name = f"n{self.count}/{base}"
        self.names.add(name)
        return name

    def const(self, array, dtype: int = FLOAT, base: str = "const") -> str:
        """An initializer holding ``array`` as ``dtype``."""
        name = self.fresh(base)
        self.initializers.append(numpy_helper.from_array(
            np.ascontiguousarray(np.asarray(array, dtype=_NUMPY[dtype])), name))
        return name

    def scalar(self, value: float, dtype: int) -> str:
        """A shared scalar constant."""
        key = f"{dtype}:{value!r}"
        if key not in self._cache:
            self._cache[key] = self.const(value, dtype, "scalar")
        return self._cache[key]

    def op(self, op_type: str, *inputs: str, base: str | None = None, **attrs) -> str:
        """Appends one node and returns its output's name."""
        out = self.fresh(base or op_type)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def cast(self, name: str, dtype: int) -> str:
        return self.op("Cast", name, to=dtype)

    def step_value(self, what: str) -> str:
        """Shared tensors of the step: ``first`` (t == 1, bool), ``t`` and ``t-1`` in float64."""
        if what not in self._cache:
            if what == "first":
                value = self.op("Equal", STEP_INPUT, self.scalar(1, INT64), base="first_step")
            elif what == "t":
                value = self.cast(STEP_INPUT, DOUBLE)
            else:  # "t-1"
                value = self.op("Sub", self.step_value("t"), self.scalar(1.0, DOUBLE))
            self._cache[what] = value
        return self._cache[what]

    def state(self, key: str, shape: tuple[int, ...], dtype: int) -> str:
        """Declares a state tensor; returns the name of its value before this step."""
        if any(key == known for known, *_ in self.states):
            raise InputError(f"two states are both named {key!r}; rename the node")
        self.states.append((key, tuple(shape), dtype, ""))
        return STATE_IN + key

    def update(self, key: str, value: str) -> None:
        """Sets the value of state ``key`` after this step."""
        index = next(i for i, (known, *_) in enumerate(self.states) if known == key)
        self.states[index] = (*self.states[index][:3], value)

    def name_output(self, value: str, name: str, produced: set[str]) -> None:
        """Makes tensor ``value`` available as graph output ``name``: renames it (see
        :meth:`apply_renames`) when a node of this graph produces it and no other output
        took it (an Identity would copy it at every step), else adds an Identity."""
        if value in self._renamed:  # already an output: copy that one
            value = self._renamed[value]
        elif value in produced:
            self._renamed[value] = name
            return
        self.nodes.append(helper.make_node("Identity", [value], [name], name=name))

    def apply_renames(self) -> None:
        """Renames the tensors :meth:`name_output` made graph outputs, wherever they occur."""
        for node in self.nodes:
            node.input[:] = [self._renamed.get(item, item) for item in node.input]
            node.output[:] = [self._renamed.get(item, item) for item in node.output]

    def per_channel(self, values: np.ndarray, shape: tuple[int, ...], dtype: int) -> str:
        """A per-channel array (C,) shaped to broadcast against ``(N, *shape)``: the channel
        is the first sample axis, as in the runtime's neurons."""
        values = np.asarray(values)
        if not shape:
            return self.const(values.reshape(()), dtype, "per_channel")
        return self.const(values.reshape((shape[0],) + (1,) * (len(shape) - 1)), dtype,
                          "per_channel")

    # ----------------------------------------------------------------- the whole graph
    def model(self) -> onnx.ModelProto:
        tensors = {spec.name: spec.name for spec in self.program.inputs}
        for node in self.program.nodes:
            inputs = [tensors[name] for name in node.inputs]
            tensors[node.output] = EMITTERS[node.op](self, node, inputs)
        outputs = []
        readouts = []
        for spec, name in zip(self.program.outputs, readout_names(self.program)):
            value = tensors[spec.name]
            if self.is_dynamic(spec.name):
                key = f"{spec.name}.readout_sum"
                total = self.op("Add", self.state(key, spec.shape, DOUBLE),
                                self.cast(value, DOUBLE))
                self.update(key, total)
                value = self.cast(self.op("Div", total, self.step_value("t")), FLOAT)
            # else: constant over time, its running mean is itself
            readouts.append((value, name))
            outputs.append(_info(name, FLOAT, spec.shape))
        produced = {out for node in self.nodes for out in node.output}
        for value, name in readouts:
            self.name_output(value, name, produced)
        for key, shape, dtype, value in self.states:
            self.name_output(value, STATE_OUT + key, produced)
            outputs.append(_info(STATE_OUT + key, dtype, shape))
        self.apply_renames()
        inputs = [_info(spec.name, FLOAT, spec.shape) for spec in self.program.inputs]
        inputs.append(helper.make_tensor_value_info(STEP_INPUT, INT64, []))
        inputs += [_info(STATE_IN + key, dtype, shape) for key, shape, dtype, _ in self.states]
        graph = helper.make_graph(self.nodes, "snn_step", inputs, outputs, self.initializers,
                                  doc_string=_PROTOCOL)
        opsets = [helper.make_opsetid("", OPSET)]
        return helper.make_model(graph, opset_imports=opsets, producer_name="snncompiler",
                                 ir_version=helper.find_min_ir_version_for(opsets))


def _info(name: str, dtype: int, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, [BATCH, *shape])


# --------------------------------------------------------------------------- neurons


def _signed_spikes(b: _StepBuilder, v: str, theta: str, theta_neg: str, k: int, dtype: int,
                   memory: str | None = None) -> str:
    """The signed number of spikes a neuron with potential ``v`` sends this step: the
    runtime's firing rule (neurons.signed_spikes), operation for operation.

    That rule is the closed form of the spike loop: send +theta while fewer than k were
    sent and ``v >= theta`` (v -= theta each time); if none was sent and negative spikes
    are on, send -theta while fewer than k were sent, ``v < neg`` and (SNM only) spikes
    are left to take back, ``j < M`` (v += theta). Here ``neg = -c * theta`` with c = 0
    ("zero") or 1 ("minus_theta").

    Claim: with ``V`` the potential before the loop, theta > 0 and ``f = floor(V / theta)``,

        up   = min(k, f)               if V >= theta, else 0
        down = min(k, M, -c - f)       if V < neg,    else 0

    and the loop sends ``up - down``. Proof (exact arithmetic): after j positive spikes the
    potential is ``V - j theta``, and the (j+1)-th fires iff ``j < k`` and
    ``V - j theta >= theta``, i.e. ``j + 1 <= V / theta``. That holds for j = 0 .. f - 1 and
    fails after, so the loop stops at ``min(k, f)`` spikes, which for V >= theta is
    ``min(k, floor((V - theta) / theta) + 1)``, at least 1; for V < theta none fires.
    Since ``neg <= 0 < theta``, ``V < neg`` excludes ``V >= theta``, so the negative loop runs
    exactly when ``V < neg`` (and up = 0). After j negative spikes the potential is
    ``V + j theta``; the (j+1)-th fires iff ``j < k``, ``j < M`` and ``j < (neg - V) / theta``.
    The integers j >= 0 below x > 0 number ceil(x), and
    ``ceil((neg - V) / theta) = ceil(-c - V / theta) = -c - f``, so the loop sends
    ``min(k, M, -c - f)``. The SNM's M is never negative, so ``min(., M)`` is the loop's
    "spikes left" test, giving 0 when M == 0; the tracking neurons have no such test.

    Floating point: which side fires is decided by comparing ``V`` itself, and the count of
    a negative burst is clipped to at least 1 (the rounded quotient may sit on the wrong
    side of an integer; for a positive one ``V >= theta`` already makes the quotient at
    least 1). The runtime computes the same operations in the same precision, so graph and
    runtime agree bit for bit at any k.
    """
    zero, one, most = (b.scalar(value, dtype) for value in (0.0, 1.0, float(k)))
    # "if c: a else 0" as cast(c) * a, a finite (the clips keep an overflowed quotient
    # finite): onnxruntime's Where is several times slower than a Mul.
    f = b.op("Floor", b.op("Div", v, theta))
    up = b.op("Mul", b.cast(b.op("GreaterOrEqual", v, theta), dtype),
              b.op("Clip", f, zero, most), base="up")
    if theta_neg == "off":
        return up
    if theta_neg == "zero":
        neg, deficit = zero, b.op("Neg", f)
    else:
        neg, deficit = b.op("Neg", theta), b.op("Sub", b.scalar(-1.0, dtype), f)
    down = b.op("Clip", deficit, one, most)
    if memory is not None:
        down = b.op("Min", down, memory)
    down = b.op("Mul", b.cast(b.op("Less", v, neg), dtype), down, base="down")
    return b.op("Sub", up, down, base="spikes")


def _snm(b: _StepBuilder, node: Node, ins: list[str]) -> str:
    """SNM (runtime.neurons): V += z; spikes; V -= spikes * theta; M += spikes."""
    shape = tuple(node.shape)
    theta = b.per_channel(node.arrays["theta"][b.row], shape, FLOAT)
    v0 = b.per_channel(node.arrays["v0"][b.row], shape, FLOAT)
    membrane, memory = f"{node.name}.membrane", f"{node.name}.memory"
    start = b.op("Where", b.step_value("first"), v0, b.scalar(0.0, FLOAT), base="v0_at_t1")
    v = b.op("Add", b.op("Add", b.state(membrane, shape, FLOAT), start), ins[0])
    sent = _signed_spikes(b, v, theta, node.attrs["theta_neg"],
                          node.attrs["max_spikes_per_step"], FLOAT,
                          memory=b.state(memory, shape, FLOAT))
    out = b.op("Mul", sent, theta, base=node.name)
    counts = b.op("Add", STATE_IN + memory, sent)
    b.update(membrane, b.op("Sub", v, out))
    b.update(memory, counts)
    if node.attrs["max_spikes_per_step"] <= 2:
        b.spike_counts[node.output] = (counts, theta)  # for a max pool of the spikes
    return out


def _tracking(b: _StepBuilder, node: Node, ins: list[str]) -> str:
    """snm_clip and snm_leaky (runtime.neuron_variants), in float64 like the runtime:
    S += z; V = v0 + f_t(S) - theta * M; spikes; M += spikes."""
    shape = tuple(node.shape)
    slope, upper = tracking_parameters(node)
    theta = b.per_channel(node.arrays["theta"][b.row], shape, DOUBLE)
    v0 = b.per_channel(node.arrays["v0"][b.row], shape, DOUBLE)
    running, memory = f"{node.name}.running", f"{node.name}.memory"
    total = b.op("Add", b.state(running, shape, DOUBLE), b.cast(ins[0], DOUBLE))
    # S if S >= 0 else slope * S, bit for bit: one of the two terms is (+-)0.
    zero = b.scalar(0.0, DOUBLE)
    value = b.op("Add", b.op("Max", total, zero),
                 b.op("Mul", b.per_channel(slope, shape, DOUBLE), b.op("Min", total, zero)))
    if math.isfinite(upper):
        value = b.op("Min", value, b.op("Mul", b.scalar(upper, DOUBLE), b.step_value("t")))
    spikes_so_far = b.state(memory, shape, DOUBLE)
    v = b.op("Sub", b.op("Add", v0, value), b.op("Mul", theta, spikes_so_far))
    sent = _signed_spikes(b, v, theta, node.attrs["theta_neg"],
                          node.attrs["max_spikes_per_step"], DOUBLE)
    b.update(running, total)
    b.update(memory, b.op("Add", spikes_so_far, sent))
    return b.cast(b.op("Mul", sent, theta), FLOAT)


# --------------------------------------------------------------------------- linear ops


def _conv(b, node, ins):
    a = node.attrs
    weight = node.arrays["weight"]
    return b.op("Conv", ins[0], b.const(weight, base="weight"), b.const(node.arrays["bias"]),
                base=node.name, kernel_shape=list(weight.shape[2:]), strides=a["strides"],
                pads=a["pads"], dilations=a["dilations"], group=a["group"])


def _gemm(b, node, ins):
    product = b.op("MatMul", ins[0], b.const(node.arrays["weight"], base="weight"))
    return b.op("Add", product, b.const(node.arrays["bias"], base="bias"), base=node.name)


def _affine(b, node, ins):
    scaled = b.op("Mul", ins[0], b.const(node.arrays["scale"], base="scale"))
    return b.op("Add", scaled, b.const(node.arrays["shift"], base="shift"), base=node.name)


def _aligned(b, name: str, sample_rank: int, rank: int) -> str:
    """``name`` (N, *sample) with its sample part padded to ``rank`` axes by leading ones,
    as the runtime broadcasts two samples (the batch axis stays first)."""
    if sample_rank >= rank:
        return name
    axes = b.const(np.arange(1, 1 + rank - sample_rank), INT64, "axes")
    return b.op("Unsqueeze", name, axes)


def _add(b, node, ins):
    rank = len(node.shape)
    a, c = (_aligned(b, name, len(b.shapes[tensor]), rank)
            for name, tensor in zip(ins, node.inputs))
    return b.op("Add", a, c, base=node.name)


def _pool_input(b, node, x: str, in_shape, dilations, value: float, dtype: int):
    """``x`` padded explicitly (with ``value``) so that a pool without padding, in floor mode,
    gives the node's windows; returns the padded tensor and the pool's output size before
    cropping. Explicit padding carries ONNX's ceil_mode and any end padding the runtime
    accepts, whatever the onnxruntime version's rules for them."""
    a = node.attrs
    begins, ends, sizes = [], [], []
    for axis in range(2):
        span = (a["kernel"][axis] - 1) * dilations[axis] + 1
        size, out, stride = in_shape[1 + axis], node.shape[1 + axis], a["strides"][axis]
        begin = a["pads"][axis]
        end = max(0, (out - 1) * stride + span - size - begin)
        begins.append(begin)
        ends.append(end)
        sizes.append((size + begin + end - span) // stride + 1)
    if any(begins) or any(ends):
        pads = b.const([0, 0, *begins, 0, 0, *ends], INT64, "pads")
        x = b.op("Pad", x, pads, b.scalar(value, dtype), mode="constant")
    return x, sizes


def _cropped(b, node, pooled: str, sizes) -> str:
    """The first ``node.shape[1:]`` windows, when floor mode gave more."""
    if list(sizes) == list(node.shape[1:]):
        return pooled
    return b.op("Slice", pooled, b.const([0, 0], INT64, "starts"),
                b.const(list(node.shape[1:]), INT64, "ends"), b.const([2, 3], INT64, "axes"))


def _max_pool(b, node, x: str, dtype: int) -> str:
    """ONNX MaxPool with the runtime's windows; padding never wins the max."""
    a = node.attrs
    in_shape = b.shapes[node.inputs[0]]
    x, sizes = _pool_input(b, node, x, in_shape, a["dilations"], -math.inf, dtype)
    pooled = b.op("MaxPool", x, kernel_shape=a["kernel"], strides=a["strides"],
                  dilations=a["dilations"])
    return _cropped(b, node, pooled, sizes)


def _maxpool(b, node, ins):
    """The signed max-pool tracker (runtime.pooling) on a dynamic input, in float64:
    A += x; P = maxpool(A); emit P - P(previous step).

    On the spikes of an SNM layer that sends at most 2 spikes a step, the pool works on the
    layer's spike counts M instead, as the runtime's fused kernel does: the running input
    is then ``theta * M`` exactly (every spike value ``s * theta``, |s| <= 2, is exact in
    float32 and the float64 sums are exact), so ``P = theta * maxpool(M)`` (theta > 0) and
    the output ``theta * (maxpool(M) - the previous one)``, the same float32 number (one
    correctly rounded product) with no float64 running sum to keep."""
    if not b.is_dynamic(node.inputs[0]):
        return _max_pool(b, node, ins[0], FLOAT)
    if node.inputs[0] in b.spike_counts:
        counts, theta = b.spike_counts[node.inputs[0]]
        pooled = f"{node.name}.pooled_count"
        now = _max_pool(b, node, counts, FLOAT)
        out = b.op("Mul", b.op("Sub", now, b.state(pooled, node.shape, FLOAT)), theta)
        b.update(pooled, now)
        return out
    running, pooled = f"{node.name}.running", f"{node.name}.pooled"
    total = b.op("Add", b.state(running, b.shapes[node.inputs[0]], DOUBLE),
                 b.cast(ins[0], DOUBLE))
    now = _max_pool(b, node, total, DOUBLE)
    out = b.cast(b.op("Sub", now, b.state(pooled, node.shape, DOUBLE)), FLOAT)
    b.update(running, total)
    b.update(pooled, now)
    return out


def _avgpool(b, node, ins):
    """The window sums (a depthwise conv with weights 1 on the padded input) divided by the
    runtime's divisor (runtime.linear.avgpool_divisor: the input cells of each window, plus
    the explicit padding with count_include_pad, never the ceil-mode extra)."""
    a = node.attrs
    in_shape = b.shapes[node.inputs[0]]
    x, sizes = _pool_input(b, node, ins[0], in_shape, (1, 1), 0.0, FLOAT)
    channels = in_shape[0]
    ones = b.const(np.ones((channels, 1, *a["kernel"])), base="ones")
    sums = _cropped(b, node, b.op("Conv", x, ones, kernel_shape=a["kernel"],
                                  strides=a["strides"], group=channels), sizes)
    divisor = avgpool_divisor(in_shape[1:], a["kernel"], a["strides"], a["pads"],
                              a["count_include_pad"], node.shape[1:])
    return b.op("Div", sums, b.const(divisor, base="divisor"), base=node.name)


def _global_avgpool(b, node, ins):
    axes = list(range(2, len(node.shape) + 1))
    return b.op("ReduceMean", ins[0], axes=axes, keepdims=1, base=node.name)


def _reshape(b, node, ins):
    return b.op("Reshape", ins[0], b.const([-1, *node.shape], INT64, "shape"), base=node.name)


def _concat(b, node, ins):
    return b.op("Concat", *ins, axis=node.attrs["axis"] + 1, base=node.name)


def _transpose(b, node, ins):
    return b.op("Transpose", ins[0], perm=[0, *(p + 1 for p in node.attrs["perm"])],
                base=node.name)


def _pad(b, node, ins):
    """Negative pads crop first (Slice), as the runtime does; then Pad."""
    a = node.attrs
    shape = b.shapes[node.inputs[0]]
    rank = len(shape)
    begins, ends = a["pads"][:rank], a["pads"][rank:]
    x = ins[0]
    if any(p < 0 for p in a["pads"]):
        starts = [max(0, -p) for p in begins]
        stops = [size - max(0, -p) for size, p in zip(shape, ends)]
        x = b.op("Slice", x, b.const(starts, INT64, "starts"), b.const(stops, INT64, "ends"),
                 b.const(np.arange(1, rank + 1), INT64, "axes"))
    widths = [0, *(max(0, p) for p in begins), 0, *(max(0, p) for p in ends)]
    if not any(widths):
        return b.op("Identity", x, base=node.name)
    return b.op("Pad", x, b.const(widths, INT64, "pads"), b.scalar(float(a["value"]), FLOAT),
                mode=a["mode"], base=node.name)


def _one_hot_index(matrix: np.ndarray) -> np.ndarray | None:
    """Column of the single 1 of every row, or None when a row is not one-hot."""
    index = matrix.argmax(axis=1)
    return index if np.array_equal(matrix, np.eye(matrix.shape[1])[index]) else None


def _resize(b, node, ins):
    """``rows @ x @ cols.T`` on the last two axes; a gather when both are one-hot (nearest)."""
    rows, cols = node.arrays["rows"], node.arrays["cols"]
    rank = len(node.shape) + 1
    row_index, col_index = _one_hot_index(rows), _one_hot_index(cols)
    if row_index is not None and col_index is not None:
        x = b.op("Gather", ins[0], b.const(row_index, INT64, "rows"), axis=rank - 2)
        return b.op("Gather", x, b.const(col_index, INT64, "cols"), axis=rank - 1,
                    base=node.name)
    x = b.op("MatMul", ins[0], b.const(cols.T, base="cols"))
    return b.op("MatMul", b.const(rows, base="rows"), x, base=node.name)


def _reduce(b, node, ins):
    a = node.attrs
    axes = [axis + 1 for axis in a["axes"]]
    if a["mode"] == "mean":
        return b.op("ReduceMean", ins[0], axes=axes, keepdims=a["keepdims"], base=node.name)
    return b.op("ReduceSum", ins[0], b.const(axes, INT64, "axes"), keepdims=a["keepdims"],
                base=node.name)


# --------------------------------------------------------------------------- analog


def _analog(b, node, ins):
    """g of the running mean of the input(s), emitted as differences (runtime.analog):
    y(t) = g(S(t) / t); out = t y(t) - (t - 1) y(t - 1). In float64, like the runtime."""
    rank = len(node.shape)
    dynamic = [b.is_dynamic(name) for name in node.inputs]
    means = []
    for i, (x, tensor) in enumerate(zip(ins, node.inputs)):
        value = b.cast(x, DOUBLE)
        if dynamic[i]:
            key = f"{node.name}.sum{i}"
            value = b.op("Add", b.state(key, b.shapes[tensor], DOUBLE), value)
            b.update(key, value)
            value = b.op("Div", value, b.step_value("t"))
        means.append(_aligned(b, value, len(b.shapes[tensor]), rank))
    y = ANALOG[node.attrs["function"]](b, means, node.attrs, tuple(node.shape))
    if not any(dynamic):
        return b.cast(y, FLOAT)
    previous = f"{node.name}.previous"
    out = b.op("Sub", b.op("Mul", b.step_value("t"), y),
               b.op("Mul", b.step_value("t-1"), b.state(previous, node.shape, DOUBLE)))
    b.update(previous, y)
    return b.cast(out, FLOAT)


def _d(b, value: float) -> str:
    return b.scalar(float(value), DOUBLE)


def _expm1_negative_part(b, x):
    """expm1(min(x, 0)), as exp(.) - 1 (the runtime's expm1 is more exact near 0)."""
    return b.op("Sub", b.op("Exp", b.op("Min", x, _d(b, 0))), _d(b, 1))


def _elu(b, x, alpha):
    negative = b.op("Mul", _d(b, alpha), _expm1_negative_part(b, x))
    return b.op("Where", b.op("Greater", x, _d(b, 0)), x, negative)


def _softmax(b, x, axis, log: bool):
    shifted = b.op("Sub", x, b.op("ReduceMax", x, axes=[axis], keepdims=1))
    exp = b.op("Exp", shifted)
    total = b.op("ReduceSum", exp, b.const([axis], INT64, "axes"), keepdims=1)
    return b.op("Sub", shifted, b.op("Log", total)) if log else b.op("Div", exp, total)


def _lrn(b, x, a, shape):
    """x / (bias + alpha / size * sum of squares over the channel window) ** beta, the window
    ``[c - floor((size-1)/2), c + ceil((size-1)/2)]`` as a band matrix on the moved axis."""
    axis = a["axis"] + 1
    size = a["size"]
    rank = len(shape)
    channels = shape[axis - 1]
    lower, upper = (size - 1) // 2, size // 2
    index = np.arange(channels)
    band = ((index[:, None] >= index[None, :] - lower)
            & (index[:, None] <= index[None, :] + upper)).astype(np.float64)
    perm = [i for i in range(rank + 1) if i != axis] + [axis]
    back = list(np.argsort(perm))
    squares = b.op("Transpose", b.op("Mul", x, x), perm=perm)
    window = b.op("Transpose", b.op("MatMul", squares, b.const(band, DOUBLE, "band")), perm=back)
    scale = b.op("Add", _d(b, a["bias"]), b.op("Mul", _d(b, a["alpha"] / size), window))
    return b.op("Div", x, b.op("Pow", scale, _d(b, a["beta"])))


def _hard_sigmoid(b, x, alpha, beta):
    line = b.op("Add", b.op("Mul", _d(b, alpha), x), _d(b, beta))
    return b.op("Min", b.op("Max", line, _d(b, 0)), _d(b, 1))


ANALOG = {
    "sigmoid": lambda b, xs, a, shape: b.op("Div", _d(b, 1), b.op("Add", _d(b, 1),
                                                           b.op("Exp", b.op("Neg", xs[0])))),
    "tanh": lambda b, xs, a, shape: b.op("Tanh", xs[0]),
    "exp": lambda b, xs, a, shape: b.op("Exp", xs[0]),
    # logaddexp(0, x) = max(x, 0) + log(1 + exp(-|x|))
    "softplus": lambda b, xs, a, shape: b.op("Add", b.op("Max", xs[0], _d(b, 0)), b.op(
        "Log", b.op("Add", _d(b, 1), b.op("Exp", b.op("Neg", b.op("Abs", xs[0])))))),
    "hard_swish": lambda b, xs, a, shape: b.op("Mul", xs[0], _hard_sigmoid(b, xs[0], 1 / 6, 0.5)),
    "softmax": lambda b, xs, a, shape: _softmax(b, xs[0], a["axis"] + 1, log=False),
    "log_softmax": lambda b, xs, a, shape: _softmax(b, xs[0], a["axis"] + 1, log=True),
    "elu": lambda b, xs, a, shape: _elu(b, xs[0], a["alpha"]),
    "selu": lambda b, xs, a, shape: b.op("Mul", _d(b, a["beta"]), _elu(b, xs[0], a["alpha"])),
    "hard_sigmoid": lambda b, xs, a, shape: _hard_sigmoid(b, xs[0], a["alpha"], a["beta"]),
    "lrn": lambda b, xs, a, shape: _lrn(b, xs[0], a, shape),
    "mul": lambda b, xs, a, shape: b.op("Mul", xs[0], xs[1]),
    "div": lambda b, xs, a, shape: b.op("Div", xs[0], xs[1]),
}
"""The analog functions of runtime.analog on float64 tensors ``(N, *sample)``; ``axis``
attributes count sample axes, hence the +1."""


EMITTERS = {
    "conv": _conv,
    "gemm": _gemm,
    "affine": _affine,
    "add": _add,
    "avgpool": _avgpool,
    "global_avgpool": _global_avgpool,
    "maxpool": _maxpool,
    "reshape": _reshape,
    "snm": _snm,
    "snm_clip": _tracking,
    "snm_leaky": _tracking,
    "concat": _concat,
    "transpose": _transpose,
    "pad": _pad,
    "resize": _resize,
    "reduce": _reduce,
    "analog": _analog,
}
"""Runtime op -> emitter ``(builder, node, input names) -> output name``; one per op of
:data:`snncompiler.runtime.opset.OPS` (a test checks that none is missing)."""
