"""The runtime's op set: what each op expects (schema) and the shape it produces.

The schema is the single contract between the compiler's lowering, the ``.snn`` reader
(which validates every node against it) and the engine (which plans with it). Shapes here
are per sample: batch and time excluded.

Op semantics (x is the input current at one timestep, all ops but ``snm`` and ``maxpool``
are stateless and applied at every step, bias included):

- ``conv``     2-D convolution, ``weight`` (O, I/group, KH, KW), ``bias`` (O,).
- ``gemm``     ``x @ weight + bias`` over the last axis, ``weight`` (IN, OUT), ``bias`` (OUT,).
- ``affine``   ``x * scale + shift``, both broadcastable to the sample shape (BN, Add/Mul
               by constants).
- ``add``      elementwise sum of two tensors, numpy broadcasting over sample shapes.
- ``avgpool``  2-D average pool; ``global_avgpool`` mean over all spatial axes.
- ``maxpool``  2-D max pool. On a signal that changes over time it is the exact signed
               tracker: it emits ``maxpool(A(t)) - maxpool(A(t-1))`` where ``A`` is the
               running sum of its input, so the running sum of its output is the max pool
               of the running sum of its input at every step.
- ``reshape``  to ``shape`` (per sample).
- ``snm``      Signed Neuron with Memory, see :mod:`snncompiler.runtime.neurons`.
- ``snm_clip``, ``snm_leaky``  SNM variants that track ``clip(A, 0, upper * t)`` (ReLU6,
               Clip) and a leaky ReLU with per-channel ``slope`` (LeakyRelu, PRelu) of the
               integrated input ``A``, see :mod:`snncompiler.runtime.neuron_variants`.
- ``concat``, ``transpose``, ``pad``, ``resize``, ``reduce``  linear index maps and sums,
               see :mod:`snncompiler.runtime.shape_ops`; ``axis``, ``perm``, ``pads`` and
               ``axes`` count sample axes (the batch excluded).
- ``analog``   a non-spiking function applied to the running mean of its input(s), emitting
               the difference of successive outputs, so that the running mean of its
               output is the function of the running mean at every step; see
               :mod:`snncompiler.runtime.analog`.

Ops whose schema says ``spiking`` emit a signal that changes over time even when their
input is static (the engine must plan their output as dynamic); ``variadic`` ops take
``n_inputs`` or more inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import ceil, floor, prod

from snncompiler.runtime.errors import FormatError

NEGATIVE_THRESHOLDS = ("zero", "minus_theta", "off")
PAD_MODES = ("constant", "reflect", "edge")
REDUCE_MODES = ("mean", "sum")

# The functions the ``analog`` op knows, with their number of inputs. Their definitions (and
# which of the attributes alpha, beta, bias, size and axis each reads) are in
# :mod:`snncompiler.runtime.analog`; this table is the schema's list of choices.
ANALOG_ARITY = {
    "sigmoid": 1,
    "tanh": 1,
    "softmax": 1,
    "log_softmax": 1,
    "softplus": 1,
    "exp": 1,
    "elu": 1,
    "selu": 1,
    "hard_sigmoid": 1,
    "hard_swish": 1,
    "lrn": 1,
    "mul": 2,
    "div": 2,
}


@dataclass(frozen=True)
class AttrSpec:
    kind: str  # "int", "float", "str", "ints" (list of ints)
    length: int | None = None  # for "ints": required length
    choices: tuple = ()
    minimum: float | None = None


@dataclass(frozen=True)
class ArraySpec:
    ndim: int | None  # None: any rank
    dtype: str = "float32"


@dataclass(frozen=True)
class OpSchema:
    n_inputs: int
    attrs: dict[str, AttrSpec] = field(default_factory=dict)
    arrays: dict[str, ArraySpec] = field(default_factory=dict)
    stateful: bool = False
    spiking: bool = False  # output is dynamic whatever the input (a neuron)
    variadic: bool = False  # n_inputs is the least number of inputs


_POOL_ATTRS = {
    "kernel": AttrSpec("ints", 2, minimum=1),
    "strides": AttrSpec("ints", 2, minimum=1),
    "pads": AttrSpec("ints", 4, minimum=0),
    "ceil_mode": AttrSpec("int", choices=(0, 1)),
}

OPS: dict[str, OpSchema] = {
    "conv": OpSchema(
        1,
        attrs={
            "strides": AttrSpec("ints", 2, minimum=1),
            "pads": AttrSpec("ints", 4, minimum=0),
            "dilations": AttrSpec("ints", 2, minimum=1),
            "group": AttrSpec("int", minimum=1),
        },
        arrays={"weight": ArraySpec(4), "bias": ArraySpec(1)},
    ),
    "gemm": OpSchema(1, arrays={"weight": ArraySpec(2), "bias": ArraySpec(1)}),
    "affine": OpSchema(1, arrays={"scale": ArraySpec(None), "shift": ArraySpec(None)}),
    "add": OpSchema(2),
    "avgpool": OpSchema(
        1, attrs={**_POOL_ATTRS, "count_include_pad": AttrSpec("int", choices=(0, 1))}
    ),
    "global_avgpool": OpSchema(1),
    "maxpool": OpSchema(
        1, attrs={**_POOL_ATTRS, "dilations": AttrSpec("ints", 2, minimum=1)}, stateful=True
    ),
    "reshape": OpSchema(1, attrs={"shape": AttrSpec("ints", minimum=1)}),
    "snm": OpSchema(
        1,
        attrs={
            "theta_neg": AttrSpec("str", choices=NEGATIVE_THRESHOLDS),
            "max_spikes_per_step": AttrSpec("int", minimum=1),
        },
        arrays={"theta": ArraySpec(2), "v0": ArraySpec(2)},
        stateful=True,
        spiking=True,
    ),
    "snm_clip": OpSchema(
        1,
        attrs={
            "theta_neg": AttrSpec("str", choices=NEGATIVE_THRESHOLDS),
            "max_spikes_per_step": AttrSpec("int", minimum=1),
            "upper": AttrSpec("float", minimum=0.0),
        },
        arrays={"theta": ArraySpec(2), "v0": ArraySpec(2)},
        stateful=True,
        spiking=True,
    ),
    "snm_leaky": OpSchema(
        1,
        attrs={
            "theta_neg": AttrSpec("str", choices=("zero", "minus_theta")),
            "max_spikes_per_step": AttrSpec("int", minimum=1),
        },
        arrays={"theta": ArraySpec(2), "v0": ArraySpec(2), "slope": ArraySpec(1)},
        stateful=True,
        spiking=True,
    ),
    "concat": OpSchema(1, attrs={"axis": AttrSpec("int", minimum=0)}, variadic=True),
    "transpose": OpSchema(1, attrs={"perm": AttrSpec("ints", minimum=0)}),
    "pad": OpSchema(
        1,
        attrs={
            "pads": AttrSpec("ints"),
            "mode": AttrSpec("str", choices=PAD_MODES),
            "value": AttrSpec("float"),
        },
    ),
    "resize": OpSchema(1, arrays={"rows": ArraySpec(2), "cols": ArraySpec(2)}),
    "reduce": OpSchema(
        1,
        attrs={
            "mode": AttrSpec("str", choices=REDUCE_MODES),
            "axes": AttrSpec("ints", minimum=0),
            "keepdims": AttrSpec("int", choices=(0, 1)),
        },
    ),
    "analog": OpSchema(
        1,
        attrs={
            "function": AttrSpec("str", choices=tuple(ANALOG_ARITY)),
            "axis": AttrSpec("int", minimum=0),
            "alpha": AttrSpec("float"),
            "beta": AttrSpec("float"),
            "bias": AttrSpec("float"),
            "size": AttrSpec("int", minimum=1),
        },
        stateful=True,
        variadic=True,
    ),
}

NEURON_OPS = tuple(name for name, schema in OPS.items() if schema.spiking)
"""Ops that carry per-T neuron parameters ``theta`` and ``v0``, one row per calibrated T."""


def broadcast_shapes(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """Numpy broadcasting of two per-sample shapes, or None if they do not broadcast."""
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y))
    return tuple(out)


def infer_shape(node, input_shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """Per-sample output shape of ``node`` given its inputs' per-sample shapes.

    Raises:
        FormatError: The node's parameters do not fit its inputs; the message is in edge
            form (``node.input: [shape] -> expected ...``).
    """
    op, attrs, arrays = node.op, node.attrs, node.arrays

    def fail(why: str) -> FormatError:
        shapes = ", ".join(str(list(s)) for s in input_shapes)
        return FormatError(f"node {node.name!r} ({op}): inputs {shapes}: {why}")

    x = tuple(input_shapes[0])
    if op == "conv":
        w = arrays["weight"].shape
        if len(x) != 3:
            raise fail("conv expects (C, H, W) samples")
        group = attrs["group"]
        if x[0] != w[1] * group or w[0] % group:
            raise fail(f"weight {list(w)} with group={group} does not fit {x[0]} channels")
        if arrays["bias"].shape != (w[0],):
            raise fail(f"bias {list(arrays['bias'].shape)} does not fit weight {list(w)}")
        sizes = []
        for axis in range(2):
            span = (w[2 + axis] - 1) * attrs["dilations"][axis] + 1
            padded = x[1 + axis] + attrs["pads"][axis] + attrs["pads"][axis + 2]
            if padded < span:
                raise fail("kernel larger than the padded input")
            sizes.append((padded - span) // attrs["strides"][axis] + 1)
        return (w[0], *sizes)
    if op == "gemm":
        w = arrays["weight"].shape
        if not x or x[-1] != w[0]:
            raise fail(f"weight {list(w)} needs a last axis of {w[0]}")
        if arrays["bias"].shape != (w[1],):
            raise fail(f"bias {list(arrays['bias'].shape)} does not fit weight {list(w)}")
        return (*x[:-1], w[1])
    if op == "affine":
        out = x
        for key in ("scale", "shift"):
            shape = arrays[key].shape
            if len(shape) > len(x) or broadcast_shapes(x, shape) != x:
                raise fail(f"{key} {list(shape)} does not broadcast to the input")
        return out
    if op == "add":
        out = broadcast_shapes(x, tuple(input_shapes[1]))
        if out is None:
            raise fail("inputs do not broadcast")
        return out
    if op in ("avgpool", "maxpool"):
        if len(x) != 3:
            raise fail(f"{op} expects (C, H, W) samples")
        dilations = attrs.get("dilations", [1, 1])
        sizes = []
        for axis in range(2):
            k, s = attrs["kernel"][axis], attrs["strides"][axis]
            pad_begin, pad_end = attrs["pads"][axis], attrs["pads"][axis + 2]
            span = (k - 1) * dilations[axis] + 1
            if x[1 + axis] + pad_begin + pad_end < span:
                raise fail("pooling window larger than the padded input")
            if pad_begin >= span:
                raise fail("padding must be smaller than the pooling window")
            rounding = ceil if attrs["ceil_mode"] else floor
            out = rounding((x[1 + axis] + pad_begin + pad_end - span) / s) + 1
            if attrs["ceil_mode"] and (out - 1) * s >= x[1 + axis] + pad_begin:
                out -= 1  # the last window must start inside the input or its left padding
            # A larger end padding is how opset 9 exporters spell ceil_mode; it is fine as
            # long as every window still holds an input cell.
            if (out - 1) * s - pad_begin > x[1 + axis] - 1:
                raise fail("the end padding leaves a pooling window without any input cell")
            sizes.append(int(out))
        return (x[0], *sizes)
    if op == "global_avgpool":
        if len(x) < 2:
            raise fail("global_avgpool expects (C, spatial...) samples")
        return (x[0],) + (1,) * (len(x) - 1)
    if op == "reshape":
        shape = tuple(attrs["shape"])
        if prod(shape) != prod(x):
            raise fail(f"cannot reshape {prod(x)} values to {list(shape)}")
        return shape
    if op in NEURON_OPS:
        channels = x[0] if x else 1
        for key in ("theta", "v0"):
            if arrays[key].shape[1] != channels:
                raise fail(f"{key} has {arrays[key].shape[1]} channels, input has {channels}")
        if op == "snm_leaky" and arrays["slope"].shape != (channels,):
            raise fail(f"slope {list(arrays['slope'].shape)} needs one value per channel "
                       f"({channels})")
        return x
    if op in _SHAPE_RULES:
        return _SHAPE_RULES[op](attrs, arrays, [tuple(s) for s in input_shapes], fail)
    raise fail(f"unknown op {op!r}; known ops: {', '.join(sorted(OPS))}")


# --------------------------------------------------------------------------- shape rules
# Shape rules of the index-map and analog ops: (attrs, arrays, input shapes, fail) -> shape.


def _concat_shape(attrs, arrays, shapes, fail):
    axis = attrs["axis"]
    first = shapes[0]
    if axis >= len(first):
        raise fail(f"axis {axis} is out of range for rank {len(first)}")
    for shape in shapes[1:]:
        if len(shape) != len(first) or any(
                a != b for i, (a, b) in enumerate(zip(shape, first)) if i != axis):
            raise fail(f"inputs differ outside the concatenation axis {axis}")
    return (*first[:axis], sum(s[axis] for s in shapes), *first[axis + 1:])


def _transpose_shape(attrs, arrays, shapes, fail):
    perm, x = list(attrs["perm"]), shapes[0]
    if sorted(perm) != list(range(len(x))):
        raise fail(f"perm {perm} is not a permutation of the {len(x)} sample axes")
    return tuple(x[p] for p in perm)


def _pad_shape(attrs, arrays, shapes, fail):
    pads, x = list(attrs["pads"]), shapes[0]
    if len(pads) != 2 * len(x):
        raise fail(f"pads {pads} needs {2 * len(x)} entries (begin and end of every axis)")
    out = []
    for axis, size in enumerate(x):
        begin, end = pads[axis], pads[axis + len(x)]
        if attrs["mode"] == "reflect" and max(begin, end) >= size:
            raise fail(f"reflect padding of {max(begin, end)} needs more than {size} values")
        if size + begin + end < 1:
            raise fail(f"axis {axis} of size {size} is cropped to nothing")
        if attrs["mode"] != "constant" and size + min(0, begin) + min(0, end) < 1:
            raise fail(f"{attrs['mode']} padding of axis {axis} cropped to nothing: "
                       "only constant padding makes values up")
        out.append(size + begin + end)
    return tuple(out)


def _resize_shape(attrs, arrays, shapes, fail):
    x = shapes[0]
    rows, cols = arrays["rows"].shape, arrays["cols"].shape
    if len(x) < 2 or rows[1] != x[-2] or cols[1] != x[-1]:
        raise fail(f"rows {list(rows)} and cols {list(cols)} do not fit the last two axes")
    return (*x[:-2], rows[0], cols[0])


def _reduce_shape(attrs, arrays, shapes, fail):
    axes, x = list(attrs["axes"]), shapes[0]
    if not axes or len(set(axes)) != len(axes) or max(axes) >= len(x):
        raise fail(f"axes {axes} must be distinct sample axes below {len(x)}")
    if attrs["keepdims"]:
        return tuple(1 if i in axes else size for i, size in enumerate(x))
    return tuple(size for i, size in enumerate(x) if i not in axes)


def _analog_shape(attrs, arrays, shapes, fail):
    arity = ANALOG_ARITY[attrs["function"]]
    if len(shapes) != arity:
        raise fail(f"{attrs['function']} takes {arity} input(s), got {len(shapes)}")
    out = shapes[0]
    for shape in shapes[1:]:
        out = broadcast_shapes(out, shape)
        if out is None:
            raise fail("inputs do not broadcast")
    if attrs["function"] in ("softmax", "log_softmax", "lrn") and attrs["axis"] >= len(out):
        raise fail(f"axis {attrs['axis']} is out of range for rank {len(out)}")
    return out


_SHAPE_RULES = {
    "concat": _concat_shape,
    "transpose": _transpose_shape,
    "pad": _pad_shape,
    "resize": _resize_shape,
    "reduce": _reduce_shape,
    "analog": _analog_shape,
}
