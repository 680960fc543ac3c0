"""The fused executor's plan: the time-dependent part of a program as arrays.

The engine's node executor runs one node at a time over a whole time chunk of the batch,
so every activation of the chunk travels through main memory between nodes. The fused
executor instead runs every dynamic node for one sample and one step, then the next step,
then the next sample (:func:`snncompiler.runtime.kernels.run_steps`): a sample's state and
activations stay in the cache, nothing is allocated per step, and linear ops on spikes are
event-driven (see :mod:`snncompiler.runtime.kernels`).

:func:`plan` turns a program into that form once: one integer row per op, a float32
parameter block (weights rearranged for the kernels), a float64 one (the tracking
neurons' parameters, as the node executor reads them), and the offset of every tensor in a
per-sample arena (a slot is reused once its tensor is dead), in the static row or in the
state rows. Tensors of rank 3 are stored channels-last (:func:`storage_order`); a
``reshape`` costs nothing when both sides keep their logical order, else it is a gather.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from snncompiler.runtime import kernels as K
from snncompiler.runtime.linear import avgpool_divisor
from snncompiler.runtime.neuron_variants import tracking_parameters
from snncompiler.runtime.neurons import THETA_NEG_CODES

FUSED_OPS = frozenset({"conv", "gemm", "affine", "add", "avgpool", "global_avgpool", "maxpool",
                       "reshape", "snm", "snm_clip", "snm_leaky"})
"""The ops the fused executor runs; a program with another dynamic op uses the node path."""

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
        params: float32 parameters; dparams: float64 parameters (tracking neurons);
            index: int64 index maps.
        every: uint32 0, 1, 2, ...: the event list of a dense input (kernels.conv_events).
        static: Static tensors the dynamic nodes read: name -> (offset, size) in the row.
        static_size: Length of a static row.
        scratch: Length of each per-block scratch row, by name (see kernels.run_steps).
        state_sizes: Lengths of the fstate, istate and dstate rows.
        membranes: (offset in fstate, v0 (rows, C), shape) of every SNM layer (the
            tracking neurons read their v0 at every step and start from zero state).
        readout: Output name -> (column, size) in the readout row (storage order).
        record: Node name -> (column, size) in the record row (when planned with record).
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
    readout: dict[str, tuple[int, int]] = field(default_factory=dict)
    readout_size: int = 0
    record: dict[str, tuple[int, int]] = field(default_factory=dict)
    record_size: int = 0


SCRATCH = ("arena", "acc", "events", "starts", "runs_at", "taps", "best", "listed_events",
           "listed_starts")
SCRATCH_DTYPES = {"arena": np.float32, "acc": np.float32, "events": np.uint32,
                  "starts": np.uint64, "runs_at": np.uint64, "taps": np.int64,
                  "best": np.float64, "listed_events": np.uint32, "listed_starts": np.uint64}


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


def supports(program, dynamic: dict[str, bool]) -> bool:
    """Whether every dynamic node of ``program`` has a fused kernel."""
    return all(node.op in FUSED_OPS for node in program.nodes if dynamic[node.output])


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
machine, docs/results/dense_or_events.md)."""

MAX_LISTED = 2**32
"""Event lists hold uint32 indices: a per-sample input of more entries cannot be listed."""


def dense_from(channels: int, height: int, width: int, out_channels: int, kernel,
               strides) -> int:
    """How many nonzero entries make a conv of this geometry cheaper to run dense.

    The event-driven path lists the C*H*W entries, then adds the weights of the nonzero
    ones: each reaches about KH*KW / (sh*sw) outputs, ceil(O/8) 8-lane additions each. The
    dense path skips the listing and adds every entry's weights, zeros included. Dense wins
    when the zeros it adds cost less than the listing: from a nonzero fraction of
    1 - LISTING_COST / (additions per entry): 94% for a 3x3 conv to 16 channels, 0 (always)
    for a 1x1 stride-2 conv to 8 channels.
    """
    entries = channels * height * width
    additions = kernel[0] * kernel[1] / (strides[0] * strides[1]) * math.ceil(out_channels / 8)
    fraction = 1.0 - LISTING_COST / additions
    return max(0, math.ceil(fraction * entries))


def per_neuron(values: np.ndarray, shape) -> np.ndarray:
    """(rows, C) per-channel values -> (rows, size): every neuron's, in storage order."""
    channels = shape[0] if shape else 1
    per_channel = math.prod(shape) // channels
    logical = np.repeat(values.astype(np.float32), per_channel, axis=1)
    return logical[:, storage_order(shape)]


def _reshape_is_free(source: tuple, target: tuple) -> bool:
    return source == target or (len(source) != 3 and len(target) != 3)


def _broadcast_index(shape: tuple, out: tuple) -> np.ndarray:
    """Storage position in a tensor of ``shape`` of each storage position of its broadcast
    to ``out`` (numpy broadcasting of the per-sample shapes)."""
    padded = (1,) * (len(out) - len(shape)) + tuple(shape)
    logical = np.arange(math.prod(shape)).reshape(padded)
    logical = np.broadcast_to(logical, out).reshape(-1)
    return storage_position(shape)[logical][storage_order(out)]


class _Builder:
    """Accumulates op rows, parameters, index maps and state and scratch sizes."""

    def __init__(self):
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
        self.snm_memory: dict[str, int] = {}  # SNM node -> offset of its counts in istate
        self.lists: dict[str, tuple[int, int, int]] = {}  # neuron output -> its event list
        self.every = 1  # length of the dense event list 0, 1, 2, ...

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
        program: The program; every dynamic node's op must be in :data:`FUSED_OPS`.
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

    arena = _Arena()
    slots: dict[str, Slot] = {}
    build = _Builder()
    producers = {node.output: node for node in nodes}
    for name in _listed_spikes(nodes, root, shapes, producers):
        shape = tuple(shapes[name])
        build.event_list(name, size_of[name], shape[1] * shape[2] if len(shape) == 3 else 1)
    readout: dict[str, tuple[int, int]] = {}
    readout_size = 0
    recorded: dict[str, tuple[int, int]] = {}
    record_size = 0
    for position, node in enumerate(nodes):
        ins = [slots[name] if name in slots else Slot(1, *static[name]) for name in node.inputs]
        if node.output in root:
            slots[node.output] = ins[0]
        else:
            last = max(last_read.get(node.output, position), position)
            out = Slot(0, arena.allocate(size_of[node.output], position, last),
                       size_of[node.output])
            slots[node.output] = out
            in_shapes = [tuple(shapes[name]) for name in node.inputs]
            if node.op == "gemm" and len(in_shapes[0]) == 3:
                # gemm reads its input in logical order: gather it out of channels-last.
                plain = Slot(0, arena.allocate(ins[0].size, position, position), ins[0].size)
                order = storage_position(in_shapes[0])[np.arange(ins[0].size)]
                build.emit(K.GATHER, node.name, ins[:1], plain,
                           [ins[0].size, build.indices(order)])
                ins = [plain]
            source = root.get(node.inputs[0], node.inputs[0]) if node.inputs else None
            _emit(build, node, in_shapes, ins, out, producers, build.lists.get(source))
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
    build.need(arena=arena.size)
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


def _spike_counts(node, producers, build: _Builder) -> tuple[int, np.ndarray] | None:
    """(memory offset, theta) of the SNM layer a max pool reads, when the pool can work on
    its spike counts (see kernels.maxpool_spikes_step); else None."""
    source = producers.get(node.inputs[0])
    if source is None or source.op != "snm" or source.attrs["max_spikes_per_step"] > 2:
        return None
    theta = source.arrays["theta"]
    if not np.all(theta > 0):
        return None
    return build.snm_memory[source.name], theta


def _emit(build: _Builder, node, in_shapes: list[tuple], ins: list[Slot], out: Slot,
          producers: dict, listed: tuple[int, int, int] | None) -> None:
    """Appends the op row of one dynamic node that is not a free reshape.

    ``listed``: where the event list of the node's first input is, when a neuron layer
    writes one (see :func:`_listed_spikes`).
    """
    read_list = [listed[0], listed[1]] if listed is not None else [-1, -1]
    a = node.attrs
    shape = tuple(node.shape)
    in_shape = in_shapes[0]
    if node.op == "conv":
        channels, height, width = in_shape
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
                       p + read_list + [dense_from(channels, height, width, out_channels,
                                                   (kh, kw), a["strides"])])
        elif K.is_depthwise(channels, out_channels, group):
            build.need(starts=height * width + 1, taps=2 * kh * kw)
            build.emit(K.CONV_GROUPED, node.name, ins, out, p)
        else:
            build.need(acc=out.size)
            build.emit(K.CONV_GROUPED, node.name, ins, out, p)
    elif node.op == "gemm":
        n_in, n_out = node.arrays["weight"].shape
        build.need(events=n_in, starts=2, runs_at=2, taps=1)
        build.emit(K.GEMM, node.name, ins, out,
                   [math.prod(in_shape[:-1]), n_in, n_out, build.param(node.arrays["weight"]),
                    build.param(node.arrays["bias"]), *read_list])
    elif node.op == "snm":
        membrane = build.take(0, out.size)
        build.membranes.append((membrane, node.arrays["v0"], shape))
        build.snm_memory[node.name] = build.take(1, out.size)
        writes = build.lists.get(node.output, (-1, -1, 1))
        build.emit(K.SNM, node.name, ins, out,
                   [build.param(per_neuron(node.arrays["theta"], shape)),
                    THETA_NEG_CODES[a["theta_neg"]], a["max_spikes_per_step"], membrane,
                    build.snm_memory[node.name], *writes])
    elif node.op in ("snm_clip", "snm_leaky"):
        _emit_tracking(build, node, ins, out)
    elif node.op == "maxpool":
        channels, height, width = in_shape
        geometry = [channels, height, width, *a["kernel"], *a["strides"], a["pads"][0],
                    a["pads"][1], *a["dilations"], shape[1], shape[2]]
        counts = _spike_counts(node, producers, build)
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
    elif node.op == "avgpool":
        channels, height, width = in_shape
        divisor = avgpool_divisor((height, width), a["kernel"], a["strides"], a["pads"],
                                  a["count_include_pad"], shape[1:])
        build.emit(K.AVGPOOL, node.name, ins, out,
                   [channels, height, width, *a["kernel"], *a["strides"], a["pads"][0],
                    a["pads"][1], shape[1], shape[2], build.param(divisor)])
    elif node.op == "global_avgpool":
        build.emit(K.GLOBAL_AVGPOOL, node.name, ins, out,
                   [in_shape[0], math.prod(in_shape[1:]), int(len(in_shape) == 3)])
    elif node.op == "add":
        where = -1
        if in_shapes[0] != shape or in_shapes[1] != shape:
            where = build.indices(np.concatenate([_broadcast_index(in_shapes[0], shape),
                                                  _broadcast_index(in_shapes[1], shape)]))
        build.emit(K.ADD, node.name, ins, out, [ins[0].size, ins[1].size, where])
    elif node.op == "affine":
        order = storage_order(shape)
        scale = np.broadcast_to(node.arrays["scale"].astype(np.float32), shape).reshape(-1)
        shift = np.broadcast_to(node.arrays["shift"].astype(np.float32), shape).reshape(-1)
        build.emit(K.AFFINE, node.name, ins, out,
                   [build.param(scale[order]), build.param(shift[order])])
    elif node.op == "reshape":
        # Same logical order on both sides, different storage: gather.
        order = storage_position(in_shape)[storage_order(shape)]
        build.emit(K.GATHER, node.name, ins, out, [ins[0].size, build.indices(order)])
    else:  # pragma: no cover - guarded by supports()
        raise ValueError(f"node {node.name!r}: no fused kernel for op {node.op!r}")


def _emit_tracking(build: _Builder, node, ins: list[Slot], out: Slot) -> None:
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
    p[K.TRACK_MEMORY] = build.take(1, out.size)
    p[K.TRACK_LIST_EVENTS], p[K.TRACK_LIST_STARTS], p[K.TRACK_LIST_PIXELS] = (
        events, starts, pixels)
    build.emit(K.TRACK, node.name, ins, out, p)
