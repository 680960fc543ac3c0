"""The fused executor's plan: the time-dependent part of a program as arrays.

The fused executor runs every dynamic node for one sample and one step, then the next step,
then the next sample (:func:`snncompiler.runtime.kernels.run_steps`): a sample's state and
activations stay in the cache, nothing is allocated per step, and linear ops on spikes are
event-driven (see :mod:`snncompiler.runtime.kernels`). It runs every op of the schema.

:func:`plan` turns a program into that form once: one integer row per op, a float32
parameter block (weights rearranged for the kernels), a float64 one (the parameters of the
tracking neurons and of the analog functions, as the node executor reads them), int64
index maps, and the offset of every tensor in a per-sample arena (a slot is reused once its
tensor is dead), in the static row or in the state rows. Each op has one emitter that
writes its rows (:data:`EMITTERS`); the index maps (concat, transpose, pad, resize, reduce)
share one, which lays out the op's :class:`snncompiler.runtime.shape_ops.LinearMap` as
``WEIGHTED_GATHER`` rows. Tensors of rank 3 are stored channels-last
(:func:`storage_order`); a ``reshape`` costs nothing when both sides store in the same
order, else it is a gather.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from snncompiler.runtime import kernels as K
from snncompiler.runtime.analog import ALONG_AXIS, FUNCTION_CODES
from snncompiler.runtime.linear import avgpool_divisor
from snncompiler.runtime.neuron_variants import tracking_parameters
from snncompiler.runtime.neurons import THETA_NEG_CODES
from snncompiler.runtime.pointwise import is_pointwise
from snncompiler.runtime.shape_ops import LINEAR_MAPS, LinearMap, identity_map

LISTING_NEURONS = frozenset({"snm", "snm_clip", "snm_leaky"})
"""Neuron ops whose kernels can list their spikes as they send them (see _listed_spikes)."""


# --------------------------------------------------------------------------- layouts


def storage_order(shape) -> np.ndarray:
    """For each storage position of a tensor of ``shape``, its logical (C-order) index.

    Rank-3 tensors (C, H, W) are stored channels-last, (H, W, C); others as they are.
    """
    size = math.prod(shape)
    if len(shape) == 3:
        return np.arange(size).reshape(shape).transpose(1, 2, 0).reshape(-1)
    return np.arange(size)


def storage_position(shape) -> np.ndarray:
    """For each logical index of a tensor of ``shape``, its storage position."""
    order = storage_order(shape)
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    return position


def to_storage(data: np.ndarray, shape) -> np.ndarray:
    """(..., *shape) in logical order -> (..., size) in storage order (a copy if needed)."""
    lead = data.shape[:data.ndim - len(shape)]
    if len(shape) == 3:
        axes = tuple(range(len(lead)))
        data = data.transpose(*axes, len(lead) + 1, len(lead) + 2, len(lead))
    return np.ascontiguousarray(data).reshape(*lead, math.prod(shape))


def from_storage(data: np.ndarray, shape) -> np.ndarray:
    """(..., size) in storage order -> (..., *shape) in logical order (a view if possible)."""
    lead = data.shape[:-1]
    if len(shape) == 3:
        c, h, w = shape
        axes = tuple(range(len(lead)))
        return data.reshape(*lead, h, w, c).transpose(*axes, len(lead) + 2, len(lead),
                                                      len(lead) + 1)
    return data.reshape(*lead, *shape)


# --------------------------------------------------------------------------- plan


@dataclass
class Slot:
    """Where one tensor of one sample lives: ``space`` 0 the arena, 1 the static row."""

    space: int
    offset: int
    size: int


@dataclass
class FusedPlan:
    """A program's dynamic part as arrays for :func:`snncompiler.runtime.kernels.run_steps`.

    Attributes:
        ops: (n_ops, kernels.ROW) int64 op rows.
        op_nodes: The node each op row belongs to.
        params: float32 parameters; dparams: float64 parameters (tracking neurons, analog
            functions); index: int64 index maps (gathers, broadcasting, analog lines).
        every: uint32 0, 1, 2, ...: the event list of a dense input (kernels.conv_events).
        static: Static tensors the dynamic nodes read: name -> (offset, size) in the row.
        static_size: Length of a static row.
        scratch: Length of each per-block scratch row, by name (see kernels.run_steps;
            ``arena`` holds the tensors of one sample and step).
        state_sizes: Lengths of the fstate, istate and dstate rows.
        membranes: (offset in fstate, v0 (rows, C), shape) of every SNM layer (the
            tracking neurons read their v0 at every step and start from zero state).
        readout: Output name -> (column, size) in the readout row (storage order).
        record: Node name -> (column, size) in the record row (when planned with record).
        memories: Neuron node name -> offset in istate of its net spike counts (storage
            order, the node's size).
    """

    ops: np.ndarray
    op_nodes: list[str]
    params: np.ndarray
    dparams: np.ndarray
    index: np.ndarray
    every: np.ndarray
    static: dict[str, tuple[int, int]]
    static_size: int
    scratch: dict[str, int]
    state_sizes: tuple[int, int, int]
    membranes: list[tuple[int, np.ndarray, tuple]] = field(default_factory=list)
    memories: dict[str, int] = field(default_factory=dict)
    readout: dict[str, tuple[int, int]] = field(default_factory=dict)
    readout_size: int = 0
    record: dict[str, tuple[int, int]] = field(default_factory=dict)
    record_size: int = 0


SCRATCH = ("arena", "acc", "events", "starts", "runs_at", "taps", "best", "line",
           "listed_events", "listed_starts")
SCRATCH_DTYPES = {"arena": np.float32, "acc": np.float32, "events": np.uint32,
                  "starts": np.uint64, "runs_at": np.uint64, "taps": np.int64,
                  "best": np.float64, "line": np.float64, "listed_events": np.uint32,
                  "listed_starts": np.uint64}


class _Arena:
    """First-fit allocation of per-sample slots; a slot is free after its last reader."""

    def __init__(self):
        self.live: list[tuple[int, int, int]] = []  # (offset, size, last position)
        self.size = 0

    def allocate(self, size: int, position: int, last: int) -> int:
        self.live = [s for s in self.live if s[2] >= position]
        offset = 0
        for start, length, _ in sorted(self.live):
            if start - offset >= size:
                break
            offset = max(offset, start + length)
        self.live.append((offset, size, last))
        self.size = max(self.size, offset + size)
        return offset


def conv_weight_layout(weight: np.ndarray, group: int) -> np.ndarray:
    """ONNX (O, C/g, KH, KW) -> the flat layout of the fused conv kernel of ``group``.

    Group 1 (:func:`snncompiler.runtime.kernels.conv_listed`): [kh, kw, c, o], so that an
    input's weight row is its storage index times O plus a shift per input pixel. Depthwise
    (:func:`snncompiler.runtime.kernels.conv_depthwise`): [kh, kw, c], a tap's weights
    channels-last like the input. Other groups: :func:`grouped_weight_layout`.
    """
    out_channels, per_group_in = weight.shape[:2]
    if group == 1 or K.is_depthwise(per_group_in * group, out_channels, group):
        return np.ascontiguousarray(weight.transpose(2, 3, 1, 0), dtype=np.float32).reshape(-1)
    return grouped_weight_layout(weight, group)


def grouped_weight_layout(weight: np.ndarray, group: int) -> np.ndarray:
    """ONNX (O, C/g, KH, KW) -> flat [c, kh, kw, o within the group of c]
    (:func:`snncompiler.runtime.kernels.conv_grouped`)."""
    out_channels, per_group_in, kh, kw = weight.shape
    w = weight.reshape(group, out_channels // group, per_group_in, kh, kw)
    return np.ascontiguousarray(w.transpose(0, 2, 3, 4, 1), dtype=np.float32).reshape(-1)


LISTING_COST = 1.0
"""What listing one input entry costs, in 8-lane additions of the conv kernel: the median
ratio of the two that ``benchmarks/dense_or_events.py`` measures (about 1 on the dev
machine when chosen; 0.87 and 0.73 in its last two runs, docs/results/dense_or_events.md;
kept for the reason given under POINTWISE_COST)."""

POINTWISE_COST = 0.6
"""What one 8-lane addition of the dense 1x1 kernel (:mod:`snncompiler.runtime.pointwise`)
costs, in additions of the event-driven path: it shares each weight load between pixels
and keeps a block of weights in the L1 cache. The median that
``benchmarks/dense_or_events.py`` measures on EfficientNet-Lite0's 1x1 convs, rounded
(docs/results/dense_or_events.md: 0.59 and 0.66 with two pixels a load, 0.59 with three;
kept, as a change moves which convs run dense and so the float rounding of results)."""

MAX_LISTED = 2**32
"""Event lists hold uint32 indices: a per-sample input of more entries cannot be listed."""


def dense_from(channels: int, height: int, width: int, out_channels: int, kernel,
               strides, *, pointwise: bool = False) -> int:
    """How many nonzero entries make a conv of this geometry cheaper to run dense.

    The event-driven path lists the C*H*W entries, then adds the weights of the nonzero
    ones: each reaches about KH*KW / (sh*sw) outputs, ceil(O/8) 8-lane additions each. The
    dense path skips the listing and adds every entry's weights, zeros included. Dense wins
    when the zeros it adds cost less than the listing: from a nonzero fraction of
    1 - LISTING_COST / (additions per entry): 94% for a 3x3 conv to 16 channels, 0 (always)
    for a 1x1 stride-2 conv to 8 channels. ``pointwise``: a 1x1 conv that keeps every pixel
    (:func:`snncompiler.runtime.pointwise.is_pointwise`), whose dense additions cost
    ``POINTWISE_COST`` each: from POINTWISE_COST - LISTING_COST / (additions per entry).
    """
    entries = channels * height * width
    additions = kernel[0] * kernel[1] / (strides[0] * strides[1]) * math.ceil(out_channels / 8)
    fraction = (POINTWISE_COST if pointwise else 1.0) - LISTING_COST / additions
    return max(0, math.ceil(fraction * entries))


def per_neuron(values: np.ndarray, shape) -> np.ndarray:
    """(rows, C) per-channel values -> (rows, size): every neuron's, in storage order."""
    channels = shape[0] if shape else 1
    per_channel = math.prod(shape) // channels
    logical = np.repeat(values.astype(np.float32), per_channel, axis=1)
    return logical[:, storage_order(shape)]


def _in_logical_order(shape: tuple) -> bool:
    """Whether a tensor's storage order is its logical order (not rank 3, or (C, 1, 1)...)."""
    return len(shape) != 3 or np.array_equal(storage_order(shape), np.arange(math.prod(shape)))


def _reshape_is_free(source: tuple, target: tuple) -> bool:
    """A reshape shares its input's slot when both sides store in the same order."""
    return source == target or (_in_logical_order(source) and _in_logical_order(target))


def _broadcast_index(shape: tuple, out: tuple) -> np.ndarray:
    """Storage position in a tensor of ``shape`` of each storage position of its broadcast
    to ``out`` (numpy broadcasting of the per-sample shapes)."""
    padded = (1,) * (len(out) - len(shape)) + tuple(shape)
    logical = np.arange(math.prod(shape)).reshape(padded)
    logical = np.broadcast_to(logical, out).reshape(-1)
    return storage_position(shape)[logical][storage_order(out)]


class _Builder:
    """Accumulates op rows, parameters, index maps and state and scratch sizes, with what an
    emitter needs to know of the rest of the plan (see :data:`EMITTERS`)."""

    def __init__(self, root: dict[str, str], producers: dict):
        self.rows: list[list[int]] = []
        self.op_nodes: list[str] = []
        self.params: list[np.ndarray] = []
        self.param_size = 0
        self.dparams: list[np.ndarray] = []
        self.dparam_size = 0
        self.index: list[np.ndarray] = []
        self.index_size = 0
        self.state = [0, 0, 0]
        self.scratch = dict.fromkeys(SCRATCH, 1)
        self.membranes: list[tuple[int, np.ndarray, tuple]] = []
        self.memories: dict[str, int] = {}  # neuron node -> offset of its counts in istate
        self.lists: dict[str, tuple[int, int, int]] = {}  # neuron output -> its event list
        self.every = 1  # length of the dense event list 0, 1, 2, ...
        self.root = root  # a free reshape's output -> the tensor whose slot it shares
        self.producers = producers  # dynamic tensor -> its node
        self.arena = _Arena()
        self.position = 0  # of the node being emitted

    def param(self, array) -> int:
        array = np.ascontiguousarray(array, dtype=np.float32).reshape(-1)
        self.params.append(array)
        self.param_size += array.size
        return self.param_size - array.size

    def dparam(self, array) -> int:
        array = np.ascontiguousarray(array, dtype=np.float64).reshape(-1)
        self.dparams.append(array)
        self.dparam_size += array.size
        return self.dparam_size - array.size

    def indices(self, array) -> int:
        array = np.asarray(array, dtype=np.int64).reshape(-1)
        self.index.append(array)
        self.index_size += array.size
        return self.index_size - array.size

    def take(self, kind: int, size: int) -> int:
        """Reserves ``size`` values of state: 0 float32, 1 int32, 2 float64."""
        self.state[kind] += size
        return self.state[kind] - size

    def temporary(self, size: int) -> Slot:
        """An arena slot for a value that only the node being emitted uses."""
        return Slot(0, self.arena.allocate(size, self.position, self.position), size)

    def listed(self, tensor: str) -> tuple[int, int, int] | None:
        """Where the event list of ``tensor`` is, when a neuron layer writes one."""
        return self.lists.get(self.root.get(tensor, tensor))

    def event_list(self, tensor: str, size: int, pixels: int) -> None:
        """Reserves an event list of ``tensor`` (``size`` entries over ``pixels`` pixels)
        in the listed scratch: (offset of its events, of its starts, pixels)."""
        _check_listable(tensor, size)
        events = self.scratch["listed_events"] if self.lists else 0
        starts = self.scratch["listed_starts"] if self.lists else 0
        self.lists[tensor] = (events, starts, pixels)
        self.scratch["listed_events"] = events + size
        self.scratch["listed_starts"] = starts + pixels + 1

    def need(self, **sizes: int) -> None:
        for name, size in sizes.items():
            self.scratch[name] = max(self.scratch[name], int(size))

    def emit(self, code: int, node: str, inputs: list[Slot], out: Slot | None, p: list[int]):
        row = [0] * K.ROW
        row[K.OPCODE] = code
        for column, slot in zip((K.IN0_SPACE, K.IN1_SPACE), inputs):
            row[column], row[column + 1] = slot.space, slot.offset
        if out is not None:
            row[K.OUT], row[K.SIZE] = out.offset, out.size
        if len(p) > K.N_PARAMS:  # pragma: no cover - a programming error
            raise ValueError(f"node {node!r}: {len(p)} op parameters, at most {K.N_PARAMS}")
        row[K.P:K.P + len(p)] = [int(v) for v in p]
        self.rows.append(row)
        self.op_nodes.append(node)


def plan(program, shapes: dict[str, tuple], dynamic: dict[str, bool], *,
         record: bool = False) -> FusedPlan:
    """Lays out the dynamic nodes of ``program`` for the fused executor.

    Args:
        program: The program (every op of the schema has an emitter, :data:`EMITTERS`).
        shapes: Per-sample shape of every tensor; dynamic: whether each tensor is dynamic.
        record: Add RECORD rows so that every dynamic node's output of every step is kept
            (for an observer). The state and arena layouts do not depend on it.
    """
    nodes = [n for n in program.nodes if dynamic[n.output]]
    outputs = [spec.name for spec in program.outputs]
    size_of = {name: math.prod(shape) for name, shape in shapes.items()}
    # A free reshape shares its input's slot, so a slot lives until the last read of any
    # tensor that shares it.
    root: dict[str, str] = {}
    for node in nodes:
        if node.op == "reshape" and _reshape_is_free(shapes[node.inputs[0]], shapes[node.output]):
            root[node.output] = root.get(node.inputs[0], node.inputs[0])
    last_read: dict[str, int] = {}
    for position, node in enumerate(nodes):
        for name in node.inputs:
            last_read[root.get(name, name)] = position
    static: dict[str, tuple[int, int]] = {}
    static_size = 0
    for node in nodes:
        for name in node.inputs:
            if not dynamic[name] and name not in static:
                static[name] = (static_size, size_of[name])
                static_size += size_of[name]

    slots: dict[str, Slot] = {}
    producers = {node.output: node for node in nodes}
    build = _Builder(root, producers)
    for name in _listed_spikes(nodes, root, shapes, producers):
        shape = tuple(shapes[name])
        build.event_list(name, size_of[name], shape[1] * shape[2] if len(shape) == 3 else 1)
    readout: dict[str, tuple[int, int]] = {}
    readout_size = 0
    recorded: dict[str, tuple[int, int]] = {}
    record_size = 0
    for position, node in enumerate(nodes):
        build.position = position
        ins = [slots[name] if name in slots else Slot(1, *static[name]) for name in node.inputs]
        if node.output in root:
            slots[node.output] = ins[0]
        else:
            last = max(last_read.get(node.output, position), position)
            out = Slot(0, build.arena.allocate(size_of[node.output], position, last),
                       size_of[node.output])
            slots[node.output] = out
            EMITTERS[node.op](build, node, [tuple(shapes[name]) for name in node.inputs], ins,
                              out)
            if record:
                recorded[node.name] = (record_size, out.size)
                build.emit(K.RECORD, node.name, [out], Slot(0, 0, out.size), [record_size])
                record_size += out.size
        out = slots[node.output]
        if node.output in outputs and node.output not in readout:
            readout[node.output] = (readout_size, out.size)
            build.emit(K.READOUT, node.name, [out], Slot(0, 0, out.size),
                       [build.take(2, out.size), readout_size])
            readout_size += out.size
    build.need(arena=build.arena.size)
    return FusedPlan(
        ops=np.array(build.rows, dtype=np.int64).reshape(-1, K.ROW),
        op_nodes=build.op_nodes,
        params=np.concatenate(build.params) if build.params else np.zeros(0, np.float32),
        dparams=np.concatenate(build.dparams) if build.dparams else np.zeros(0, np.float64),
        index=np.concatenate(build.index) if build.index else np.zeros(0, np.int64),
        every=np.arange(build.every, dtype=np.uint32),
        static=static,
        static_size=static_size,
        scratch=build.scratch,
        state_sizes=tuple(build.state),
        membranes=build.membranes,
        memories=build.memories,
        readout=readout,
        readout_size=readout_size,
        record=recorded,
        record_size=record_size,
    )


def _check_listable(name: str, size: int) -> None:
    if size >= MAX_LISTED:
        raise ValueError(f"tensor {name!r}: {size} entries per sample; the event-driven "
                         f"kernels list at most {MAX_LISTED - 1}")


def _listed_spikes(nodes, root: dict[str, str], shapes: dict[str, tuple],
                   producers: dict) -> list[str]:
    """The neuron outputs that a conv (group 1) or a one-row gemm reads as they are stored:
    those layers list their spikes once as they send them, for every such reader, instead
    of each reader listing them again (ResNet blocks read their input twice)."""
    listed = []
    for node in nodes:
        if not node.inputs or node.op not in ("conv", "gemm"):
            continue
        source = root.get(node.inputs[0], node.inputs[0])
        producer = producers.get(source)
        if producer is None or producer.op not in LISTING_NEURONS or source in listed:
            continue
        in_shape = tuple(shapes[node.inputs[0]])
        if node.op == "conv" and node.attrs["group"] == 1 and len(in_shape) == 3:
            listed.append(source)
        elif (node.op == "gemm" and len(in_shape) != 3 and len(shapes[source]) != 3
              and math.prod(in_shape[:-1]) == 1):
            listed.append(source)
    return listed


# --------------------------------------------------------------------------- emitters
# One function per op, ``(builder, node, input shapes, input slots, output slot)``, appends
# the op's rows; EMITTERS at the end says which is whose. The node is dynamic, and not a
# free reshape (that shares its input's slot and has no row).


def _read_list(build: _Builder, tensor: str) -> list[int]:
    """Offsets of the event list and starts a conv or gemm reads its input from (-1: none,
    the kernel lists its input itself)."""
    listed = build.listed(tensor)
    return [listed[0], listed[1]] if listed is not None else [-1, -1]


def _emit_conv(build: _Builder, node, in_shapes, ins: list[Slot], out: Slot) -> None:
    a = node.attrs
    shape = tuple(node.shape)
    channels, height, width = in_shapes[0]
    weight = node.arrays["weight"]
    out_channels, _, kh, kw = weight.shape
    group = a["group"]
    p = [channels, height, width, out_channels, kh, kw, *a["strides"], a["pads"][0],
         a["pads"][1], *a["dilations"], group, shape[1], shape[2],
         build.param(conv_weight_layout(weight, group)), build.param(node.arrays["bias"])]
    if group == 1:
        build.need(events=channels * height * width, starts=height * width + 1,
                   runs_at=2 * kh * kw, taps=kh * kw)
        _check_listable(node.inputs[0], channels * height * width)
        build.every = max(build.every, channels * height * width)
        build.emit(K.CONV, node.name, ins, out,
                   p + _read_list(build, node.inputs[0])
                   + [dense_from(channels, height, width, out_channels, (kh, kw),
                                 a["strides"], pointwise=is_pointwise(
                                     height, width, kh, kw, *a["strides"], a["pads"][0],
                                     a["pads"][1], *a["dilations"], shape[1], shape[2]))])
    elif K.is_depthwise(channels, out_channels, group):
        build.need(starts=height * width + 1, taps=2 * kh * kw)
        build.emit(K.CONV_GROUPED, node.name, ins, out, p)
    else:
        build.need(acc=out.size)
        build.emit(K.CONV_GROUPED, node.name, ins, out, p)


def _emit_gemm(build: _Builder, node, in_shapes, ins: list[Slot], out: Slot) -> None:
    in_shape = in_shapes[0]
    read_list = _read_list(build, node.inputs[0])
    if len(in_shape) == 3:
        # gemm reads its input in logical order: gather it out of channels-last.
        plain = build.temporary(ins[0].size)
        _emit_linear(build, node.name, [identity_map((ins[0].size,))], in_shapes, ins, plain)
        ins = [plain]
    n_in, n_out = node.arrays["weight"].shape
    build.need(events=n_in, starts=2, runs_at=2, taps=1)
    build.emit(K.GEMM, node.name, ins, out,
               [math.prod(in_shape[:-1]), n_in, n_out, build.param(node.arrays["weight"]),
                build.param(node.arrays["bias"]), *read_list])


def _emit_snm(build: _Builder, node, in_shapes, ins: list[Slot], out: Slot) -> None:
    shape = tuple(node.shape)
    membrane = build.take(0, out.size)
    build.membranes.append((membrane, node.arrays["v0"], shape))
    build.memories[node.name] = build.take(1, out.size)
    writes = build.lists.get(node.output, (-1, -1, 1))
    build.emit(K.SNM, node.name, ins, out,
               [build.param(per_neuron(node.arrays["theta"], shape)),
                THETA_NEG_CODES[node.attrs["theta_neg"]], node.attrs["max_spikes_per_step"],
                membrane, build.memories[node.name], *writes])


def _emit_tracking(build: _Builder, node, in_shapes, ins: list[Slot], out: Slot) -> None:
    """The TRACK row of a ``snm_clip`` or ``snm_leaky`` node: its per-channel parameters in
    float64, as the node executor reads them (neuron_variants.tracking_parameters), and
    zero state (a running sum and a spike count per neuron)."""
    shape = tuple(node.shape)
    channels = shape[0] if shape else 1
    slope, upper = tracking_parameters(node)
    events, starts, pixels = build.lists.get(node.output, (-1, -1, 1))
    p = [0] * K.TRACK_SLOTS
    p[K.TRACK_THETA] = build.dparam(node.arrays["theta"])
    p[K.TRACK_V0] = build.dparam(node.arrays["v0"])
    p[K.TRACK_SLOPE] = build.dparam(slope)
    p[K.TRACK_UPPER] = build.dparam([upper])
    p[K.TRACK_CHANNELS] = channels
    # Channels-last tensors interleave the channels; the others keep a channel's together.
    p[K.TRACK_INNER] = 1 if len(shape) == 3 else math.prod(shape) // channels
    p[K.TRACK_THETA_NEG] = THETA_NEG_CODES[node.attrs["theta_neg"]]
    p[K.TRACK_MAX_SPIKES] = node.attrs["max_spikes_per_step"]
    p[K.TRACK_RUNNING] = build.take(2, out.size)
    p[K.TRACK_MEMORY] = build.memories[node.name] = build.take(1, out.size)
    p[K.TRACK_LIST_EVENTS], p[K.TRACK_LIST_STARTS], p[K.TRACK_LIST_PIXELS] = (
        events, starts, pixels)
    build.emit(K.TRACK, node.name, ins, out, p)


def _spike_counts(node, build: _Builder) -> tuple[int, np.ndarray] | None:
    """(memory offset, theta) of the SNM layer a max pool reads, when the pool can work on
    its spike counts (see kernels.maxpool_spikes_step); else None."""
    source = build.producers.get(node.inputs[0])
    if source is None or source.op != "snm" or source.attrs["max_spikes_per_step"] > 2:
        return None
    theta = source.arrays["theta"]
    if not np.all(theta > 0):
        return None
    return build.memories[source.name], theta


def _emit_maxpool(build: _Builder, node, in_shapes, ins: list[Slot], out: Slot) -> None:
    a = node.attrs
    shape = tuple(node.shape)
    channels, height, width = in_shapes[0]
    geometry = [channels, height, width, *a["kernel"], *a["strides"], a["pads"][0],
                a["pads"][1], *a["dilations"], shape[1], shape[2]]
    counts = _spike_counts(node, build)
    if counts is not None:
        memory, theta = counts
        build.need(taps=a["kernel"][0] * a["kernel"][1])
        build.emit(K.MAXPOOL_SPIKES, node.name, ins, out,
                   [*geometry, memory, build.take(0, out.size), build.param(theta)])
    else:
        build.need(best=channels)
        build.emit(K.MAXPOOL, node.name, ins, out,
                   [*geometry, build.take(2, channels * height * width),
                    build.take(2, out.size)])


def _emit_avgpool(build: _Builder, node, in_shapes, ins: list[Slot], out: Slot) -> None:
    a = node.attrs
    shape = tuple(node.shape)
    channels, height, width = in_shapes[0]
    divisor = avgpool_divisor((height, width), a["kernel"], a["strides"], a["pads"],
                              a["count_include_pad"], shape[1:])
    build.emit(K.AVGPOOL, node.name, ins, out,
               [channels, height, width, *a["kernel"], *a["strides"], a["pads"][0],
                a["pads"][1], shape[1], shape[2], build.param(divisor)])


def _emit_global_avgpool(build: _Builder, node, in_shapes, ins: list[Slot],
                         out: Slot) -> None:
    in_shape = in_shapes[0]
    build.emit(K.GLOBAL_AVGPOOL, node.name, ins, out,
               [in_shape[0], math.prod(in_shape[1:]), int(len(in_shape) == 3)])


def _emit_add(build: _Builder, node, in_shapes, ins: list[Slot], out: Slot) -> None:
    shape = tuple(node.shape)
    where = -1
    if in_shapes[0] != shape or in_shapes[1] != shape:
        where = build.indices(np.concatenate([_broadcast_index(in_shapes[0], shape),
                                              _broadcast_index(in_shapes[1], shape)]))
    build.emit(K.ADD, node.name, ins, out, [ins[0].size, ins[1].size, where])


def _emit_affine(build: _Builder, node, in_shapes, ins: list[Slot], out: Slot) -> None:
    shape = tuple(node.shape)
    order = storage_order(shape)
    scale = np.broadcast_to(node.arrays["scale"].astype(np.float32), shape).reshape(-1)
    shift = np.broadcast_to(node.arrays["shift"].astype(np.float32), shape).reshape(-1)
    build.emit(K.AFFINE, node.name, ins, out,
               [build.param(scale[order]), build.param(shift[order])])


def _emit_reshape(build: _Builder, node, in_shapes, ins: list[Slot], out: Slot) -> None:
    # Same logical order on both sides, different storage: a gather.
    _emit_linear(build, node.name, [identity_map(tuple(node.shape))], in_shapes, ins, out)


def _emit_index_map(build: _Builder, node, in_shapes, ins: list[Slot], out: Slot) -> None:
    """concat, transpose, pad, resize, reduce: their linear maps (shape_ops.LINEAR_MAPS),
    computed from their numpy references."""
    _emit_linear(build, node.name, LINEAR_MAPS[node.op](node, in_shapes), in_shapes, ins, out)


def _emit_linear(build: _Builder, name: str, stages: list[LinearMap], in_shapes, ins,
                 out: Slot) -> None:
    """The WEIGHTED_GATHER rows of linear maps that read the inputs ``ins`` (of logical
    shapes ``in_shapes``), each stage the previous one's output, the last into ``out``."""
    for k, stage in enumerate(stages):
        target = out if k == len(stages) - 1 else build.temporary(math.prod(stage.shape))
        _emit_gather(build, name, stage, in_shapes, ins, target)
        in_shapes, ins = [stage.shape], [target]


def _emit_gather(build: _Builder, name: str, lmap: LinearMap, in_shapes, ins,
                 out: Slot) -> None:
    """One WEIGHTED_GATHER row: ``lmap`` in storage order, its sources as addresses."""
    addresses = np.empty(lmap.sources.size, dtype=np.int64)
    for j, (shape, slot) in enumerate(zip(in_shapes, ins)):
        mine = lmap.inputs == j
        local = slot.offset + storage_position(shape)[lmap.sources[mine]]
        addresses[mine] = local if slot.space == 0 else ~local
    order = storage_order(lmap.shape)  # output k (storage) is output order[k] (logical)
    p = [-1] * K.GATHER_SLOTS
    if lmap.starts is None:
        addresses = addresses[order]
    else:
        counts = np.diff(lmap.starts)[order]
        starts = np.concatenate([[0], np.cumsum(counts)])
        terms = np.repeat(lmap.starts[:-1][order] - starts[:-1], counts) + np.arange(starts[-1])
        addresses = addresses[terms]
        p[K.GATHER_STARTS] = build.indices(starts)
        if lmap.weights is not None:
            p[K.GATHER_WEIGHTS] = build.param(lmap.weights[terms])
        if lmap.bias is not None:
            p[K.GATHER_BIAS] = build.param(lmap.bias[order])
    p[K.GATHER_SOURCES] = build.indices(addresses)
    p[K.GATHER_TERMS] = addresses.size
    build.emit(K.WEIGHTED_GATHER, name, [], out, p)


def _emit_analog(build: _Builder, node, in_shapes, ins: list[Slot], out: Slot) -> None:
    """The ANALOG row: a float64 running sum of every dynamic input and y(t - 1) of every
    output as state, as the node executor keeps them (analog.run_analog)."""
    a = node.attrs
    shape = tuple(node.shape)
    p = [-1] * K.ANALOG_SLOTS
    p[K.ANALOG_FUNCTION] = FUNCTION_CODES[a["function"]]
    p[K.ANALOG_IN1_SIZE] = 0
    for slot, size, sums in zip(ins, (K.ANALOG_IN0_SIZE, K.ANALOG_IN1_SIZE),
                                (K.ANALOG_IN0_SUMS, K.ANALOG_IN1_SUMS)):
        p[size] = slot.size
        if slot.space == 0:  # dynamic (a static input's mean is itself)
            p[sums] = build.take(2, slot.size)
    p[K.ANALOG_PREVIOUS] = build.take(2, out.size)
    if any(in_shape != shape for in_shape in in_shapes):
        p[K.ANALOG_BROADCAST] = build.indices(np.concatenate(
            [_broadcast_index(in_shape, shape) for in_shape in in_shapes]))
    p[K.ANALOG_LENGTH] = 1
    if a["function"] in ALONG_AXIS:
        axis = a["axis"]
        logical = np.moveaxis(np.arange(out.size).reshape(shape), axis, -1).reshape(-1)
        p[K.ANALOG_LINES] = build.indices(storage_position(shape)[logical])
        p[K.ANALOG_LENGTH] = shape[axis]
        build.need(line=3 * shape[axis] + a["size"])
    p[K.ANALOG_CONSTANTS] = build.dparam([a["alpha"], a["beta"], a["bias"]])
    p[K.ANALOG_SIZE] = a["size"]
    build.emit(K.ANALOG, node.name, ins, out, p)


EMITTERS = {
    "conv": _emit_conv,
    "gemm": _emit_gemm,
    "affine": _emit_affine,
    "add": _emit_add,
    "avgpool": _emit_avgpool,
    "global_avgpool": _emit_global_avgpool,
    "maxpool": _emit_maxpool,
    "reshape": _emit_reshape,
    "snm": _emit_snm,
    "snm_clip": _emit_tracking,
    "snm_leaky": _emit_tracking,
    "concat": _emit_index_map,
    "transpose": _emit_index_map,
    "pad": _emit_index_map,
    "resize": _emit_index_map,
    "reduce": _emit_index_map,
    "analog": _emit_analog,
}
"""Op -> the function that appends its rows to a plan: every op of the schema."""

FUSED_OPS = frozenset(EMITTERS)
"""The ops the fused executor runs: all of :data:`snncompiler.runtime.opset.OPS`."""
