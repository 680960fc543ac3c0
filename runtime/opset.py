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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import ceil, floor, prod

from snncompiler.runtime.errors import FormatError

NEGATIVE_THRESHOLDS = ("zero", "minus_theta", "off")


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
    ),
}


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
            if max(pad_begin, pad_end) >= span:
                raise fail("padding must be smaller than the pooling window")
            rounding = ceil if attrs["ceil_mode"] else floor
            out = rounding((x[1 + axis] + pad_begin + pad_end - span) / s) + 1
            if attrs["ceil_mode"] and (out - 1) * s >= x[1 + axis] + pad_begin:
                out -= 1  # the last window must start inside the input or its left padding
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
    if op == "snm":
        channels = x[0] if x else 1
        for key in ("theta", "v0"):
            if arrays[key].shape[1] != channels:
                raise fail(f"{key} has {arrays[key].shape[1]} channels, input has {channels}")
        return x
    raise fail(f"unknown op {op!r}; known ops: {', '.join(sorted(OPS))}")
