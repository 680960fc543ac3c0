"""Lowering: the rewritten onnx-graphsurgeon graph becomes a runtime :class:`Program`.

One function per ONNX op, registered in :data:`LOWERINGS`. Each takes the gs node and a
:class:`Lowerer` and returns runtime nodes; any configuration it cannot convert raises
:class:`UnsupportedOpError` naming the node, the op and what would help. The lowerer
collects every such error, so the user sees all problems of a graph at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from snncompiler import __version__, interpolation
from snncompiler.context import CompileContext
from snncompiler.errors import InputError, SnnError, UnsupportedOpError
from snncompiler.runtime.graph import Node, Program, TensorSpec
from snncompiler.runtime.opset import infer_shape


def _fail(node: gs.Node, why: str, hint: str = "") -> UnsupportedOpError:
    message = f"node {node.name!r} ({node.op}): {why}"
    return UnsupportedOpError(f"{message}; {hint}" if hint else message)


class Lowerer:
    """Shape and constant lookups shared by the lowering functions.

    Attributes:
        allow_analog: ONNX op types the user allowed to run on the time-averaged signal
            (``--allow-analog``).
        notes: node name -> (conversion, how) for nodes whose conversion depends on where
            they sit (a Softmax at the readout or inside the network), for the report.
    """

    def __init__(self, allow_analog=()):
        self.allow_analog = frozenset(allow_analog)
        self.notes: dict[str, tuple[str, str]] = {}

    def sample_shape(self, tensor: gs.Tensor, node: gs.Node) -> tuple[int, ...]:
        shape = tensor.shape
        if shape is None or any(not isinstance(d, (int, np.integer)) for d in shape[1:]):
            raise _fail(node, f"tensor {tensor.name!r} has unknown shape {shape}",
                        "export the model with static shapes except the batch dimension")
        return tuple(int(d) for d in shape[1:])

    def constant(self, tensor: gs.Tensor, node: gs.Node, role: str) -> np.ndarray:
        if not isinstance(tensor, gs.Constant):
            raise _fail(node, f"{role} {tensor.name!r} is computed at run time",
                        f"the {role} must be a constant initializer")
        return np.asarray(tensor.values)

    @staticmethod
    def attr_ints(node: gs.Node, key: str, default) -> list[int]:
        return [int(v) for v in node.attrs.get(key, default)]


def _spatial_2d(node: gs.Node, kernel: list[int]) -> None:
    if len(kernel) != 2:
        raise _fail(node, f"{len(kernel)}-D kernels are not supported",
                    "only 2-D convolution and pooling (N, C, H, W) are supported")


def _explicit_pads(node: gs.Node, in_hw, kernel, strides, dilations) -> list[int]:
    """ONNX pads (top, left, bottom, right), resolving auto_pad."""
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad in ("NOTSET", ""):
        return Lowerer.attr_ints(node, "pads", [0, 0, 0, 0])
    if auto_pad == "VALID":
        return [0, 0, 0, 0]
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations):
        out = math.ceil(size / s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin + end


def lower_conv(node: gs.Node, lw: Lowerer) -> list[Node]:
    weight = lw.constant(node.inputs[1], node, "weight").astype(np.float32)
    if weight.ndim != 4:
        raise _fail(node, f"{weight.ndim - 2}-D convolution is not supported",
                    "only 2-D convolution (N, C, H, W) is supported")
    bias = (lw.constant(node.inputs[2], node, "bias").astype(np.float32)
            if len(node.inputs) > 2 and node.inputs[2].name else
            np.zeros(weight.shape[0], dtype=np.float32))
    kernel = lw.attr_ints(node, "kernel_shape", weight.shape[2:])
    strides = lw.attr_ints(node, "strides", [1, 1])
    dilations = lw.attr_ints(node, "dilations", [1, 1])
    in_shape = lw.sample_shape(node.inputs[0], node)
    pads = _explicit_pads(node, in_shape[1:], kernel, strides, dilations)
    return [Node(node.name, "conv", (node.inputs[0].name,), node.outputs[0].name,
                 {"strides": strides, "pads": pads, "dilations": dilations,
                  "group": int(node.attrs.get("group", 1))},
                 {"weight": weight, "bias": bias})]


def lower_gemm(node: gs.Node, lw: Lowerer) -> list[Node]:
    if node.attrs.get("transA", 0):
        raise _fail(node, "transA=1 is not supported", "transpose the weights instead")
    weight = lw.constant(node.inputs[1], node, "weight").astype(np.float64)
    if node.attrs.get("transB", 0):
        weight = weight.T
    weight = weight * float(node.attrs.get("alpha", 1.0))
    bias = np.zeros(weight.shape[1])
    if len(node.inputs) > 2 and node.inputs[2].name:
        c = lw.constant(node.inputs[2], node, "bias C").astype(np.float64)
        if c.size not in (1, weight.shape[1]) or (c.ndim == 2 and c.shape[0] != 1):
            raise _fail(node, f"bias C of shape {list(c.shape)} depends on the batch row",
                        "only a per-output bias is supported")
        bias = np.broadcast_to(c.reshape(-1), (weight.shape[1],)) * float(
            node.attrs.get("beta", 1.0))
    return [Node(node.name, "gemm", (node.inputs[0].name,), node.outputs[0].name, {},
                 {"weight": weight.astype(np.float32), "bias": bias.astype(np.float32)})]


def lower_matmul(node: gs.Node, lw: Lowerer) -> list[Node]:
    a, b = node.inputs
    if isinstance(a, gs.Constant) or not isinstance(b, gs.Constant):
        raise _fail(node, "MatMul is supported only as activation @ constant weight",
                    "a product of two activations (attention) has no spiking equivalent here")
    weight = np.asarray(b.values, dtype=np.float32)
    if weight.ndim != 2:
        raise _fail(node, f"weight of rank {weight.ndim}", "only 2-D weights are supported")
    return [Node(node.name, "gemm", (a.name,), node.outputs[0].name, {},
                 {"weight": weight, "bias": np.zeros(weight.shape[1], dtype=np.float32)})]


def _sample_constant(value: np.ndarray, out_rank: int, node: gs.Node) -> np.ndarray:
    """A constant broadcast against (N, *sample): drop its batch axis when it has one."""
    value = np.asarray(value, dtype=np.float32)
    if value.ndim == out_rank + 1:
        if value.shape[0] != 1:
            raise _fail(node, f"constant of shape {list(value.shape)} varies along the batch",
                        "only constants shared by all samples are supported")
        value = value[0]
    elif value.ndim > out_rank + 1:
        raise _fail(node, f"constant of shape {list(value.shape)} has too many axes")
    return value


def _affine_with_constant(node: gs.Node, lw: Lowerer) -> list[Node]:
    """Add/Sub/Mul/Div where one side is a constant: x*scale + shift."""
    a, b = node.inputs
    const_first = isinstance(a, gs.Constant)
    x, c = (b, a) if const_first else (a, b)
    out_rank = len(lw.sample_shape(node.outputs[0], node))
    if tuple(lw.sample_shape(x, node)) != lw.sample_shape(node.outputs[0], node):
        raise _fail(node, "the constant would broadcast the activation to a larger shape",
                    "broadcast the activation explicitly (Expand) before this op")
    value = _sample_constant(c.values, out_rank, node)
    one, zero = np.ones((), np.float32), np.zeros((), np.float32)
    op = node.op
    if op == "Add":
        scale, shift = one, value
    elif op == "Sub":
        scale, shift = (-one, value) if const_first else (one, -value)
    elif op == "Mul":
        scale, shift = value, zero
    elif op == "Div":
        if const_first:
            raise _fail(node, "division of a constant by an activation is not linear")
        if not np.all(value != 0):
            raise _fail(node, "division by a constant that holds zeros")
        scale, shift = (1.0 / value).astype(np.float32), zero
    else:  # pragma: no cover - registry only routes the four ops here
        raise _fail(node, "unexpected op")
    return [Node(node.name, "affine", (x.name,), node.outputs[0].name, {},
                 {"scale": np.asarray(scale, np.float32), "shift": np.asarray(shift, np.float32)})]


def lower_add(node: gs.Node, lw: Lowerer) -> list[Node]:
    a, b = node.inputs
    if isinstance(a, gs.Constant) or isinstance(b, gs.Constant):
        return _affine_with_constant(node, lw)
    return [Node(node.name, "add", (a.name, b.name), node.outputs[0].name)]


def lower_sub_mul_div(node: gs.Node, lw: Lowerer) -> list[Node]:
    if node.op == "Sub" and not any(isinstance(t, gs.Constant) for t in node.inputs):
        # a - b = a + (-1) * b: linear, so exact on spikes.
        a, b = node.inputs
        negated = f"{node.name}:negated"
        one = np.ones((), np.float32)
        return [Node(negated, "affine", (b.name,), negated, {},
                     {"scale": -one, "shift": np.zeros((), np.float32)}),
                Node(node.name, "add", (a.name, negated), node.outputs[0].name)]
    if not any(isinstance(t, gs.Constant) for t in node.inputs):
        if node.op in ANALOG_OPS and node.op in lw.allow_analog:
            return lower_analog(node, lw)
        hint = f"only {node.op} by a constant is supported"
        if node.op in ANALOG_OPS:
            hint += f", or pass --allow-analog {node.op} to compute it on the time-averaged signal"
        raise _fail(node, f"{node.op} of two activations is not linear in the spikes", hint)
    return _affine_with_constant(node, lw)


def lower_batchnorm(node: gs.Node, lw: Lowerer) -> list[Node]:
    if node.attrs.get("training_mode", 0):
        raise _fail(node, "training_mode=1", "export the model in eval mode")
    if len(node.outputs) > 1 and any(t.outputs for t in node.outputs[1:]):
        raise _fail(node, "running-statistics outputs are used", "export in eval mode")
    gamma, beta, mean, var = (lw.constant(t, node, role).astype(np.float64) for t, role in zip(
        node.inputs[1:5], ("scale", "bias", "mean", "variance")))
    eps = float(node.attrs.get("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    shift = beta - mean * scale
    rank = len(lw.sample_shape(node.inputs[0], node))
    channel_shape = (-1,) + (1,) * (rank - 1)
    return [Node(node.name, "affine", (node.inputs[0].name,), node.outputs[0].name, {},
                 {"scale": scale.reshape(channel_shape).astype(np.float32),
                  "shift": shift.reshape(channel_shape).astype(np.float32)})]


def _pool_attrs(node: gs.Node, lw: Lowerer) -> dict:
    kernel = lw.attr_ints(node, "kernel_shape", [])
    _spatial_2d(node, kernel)
    strides = lw.attr_ints(node, "strides", [1, 1])
    dilations = lw.attr_ints(node, "dilations", [1, 1])
    in_shape = lw.sample_shape(node.inputs[0], node)
    return {"kernel": kernel, "strides": strides,
            "pads": _explicit_pads(node, in_shape[1:], kernel, strides, dilations),
            "ceil_mode": int(node.attrs.get("ceil_mode", 0)), "dilations": dilations}


def lower_maxpool(node: gs.Node, lw: Lowerer) -> list[Node]:
    if len(node.outputs) > 1 and node.outputs[1].outputs:
        raise _fail(node, "the indices output is used", "only the pooled values are supported")
    return [Node(node.name, "maxpool", (node.inputs[0].name,), node.outputs[0].name,
                 _pool_attrs(node, lw))]


def lower_avgpool(node: gs.Node, lw: Lowerer) -> list[Node]:
    attrs = _pool_attrs(node, lw)
    if attrs.pop("dilations") != [1, 1]:
        raise _fail(node, "dilated average pooling is not supported")
    attrs["count_include_pad"] = int(node.attrs.get("count_include_pad", 0))
    return [Node(node.name, "avgpool", (node.inputs[0].name,), node.outputs[0].name, attrs)]


def lower_global_avgpool(node: gs.Node, lw: Lowerer) -> list[Node]:
    return [Node(node.name, "global_avgpool", (node.inputs[0].name,), node.outputs[0].name)]


def lower_reshape(node: gs.Node, lw: Lowerer) -> list[Node]:
    """Flatten and Reshape: any reshape that keeps the batch as the first axis."""
    if node.op == "Flatten" and int(node.attrs.get("axis", 1)) != 1:
        raise _fail(node, f"axis={node.attrs.get('axis')} merges the batch with other axes",
                    "only Flatten(axis=1) keeps samples apart")
    if node.op == "Reshape":
        lw.constant(node.inputs[1], node, "target shape")
    in_shape = lw.sample_shape(node.inputs[0], node)
    out_shape = lw.sample_shape(node.outputs[0], node)
    if math.prod(in_shape) != math.prod(out_shape):
        raise _fail(node, f"reshape {list(in_shape)} -> {list(out_shape)} moves values across "
                    "samples", "keep the batch as the first axis")
    return [Node(node.name, "reshape", (node.inputs[0].name,), node.outputs[0].name,
                 {"shape": list(out_shape)})]


def lower_snm(node: gs.Node, lw: Lowerer) -> list[Node]:
    theta = lw.constant(node.inputs[1], node, "theta").astype(np.float32)
    v0 = lw.constant(node.inputs[2], node, "v0").astype(np.float32)
    return [Node(node.name, "snm", (node.inputs[0].name,), node.outputs[0].name,
                 {"theta_neg": node.attrs["theta_neg"],
                  "max_spikes_per_step": int(node.attrs["max_spikes_per_step"])},
                 {"theta": theta, "v0": v0})]


# --------------------------------------------------------------------------- index maps


def _sample_axis(node: gs.Node, axis: int, rank: int, role: str = "axis") -> int:
    """A non-negative ONNX axis of a rank-``rank`` tensor, refused if it is the batch axis."""
    if not -rank <= axis < rank:
        raise _fail(node, f"{role} {axis} is out of range for rank {rank}")
    axis = axis + rank if axis < 0 else axis
    if axis == 0:
        raise _fail(node, f"{role} 0 is the batch axis", "samples must stay apart")
    return axis


def _optional_input(node: gs.Node, index: int) -> gs.Tensor | None:
    if index < len(node.inputs) and not node.inputs[index].is_empty():
        return node.inputs[index]
    return None


def lower_squeeze(node: gs.Node, lw: Lowerer) -> list[Node]:
    """Squeeze and Unsqueeze: a reshape, provided the batch axis is not touched."""
    in_shape = lw.sample_shape(node.inputs[0], node)
    out_shape = lw.sample_shape(node.outputs[0], node)
    axes_input = _optional_input(node, 1)
    if axes_input is not None:
        rank = 1 + len(out_shape if node.op == "Unsqueeze" else in_shape)
        for axis in lw.constant(axes_input, node, "axes").reshape(-1):
            _sample_axis(node, int(axis), rank, "axes entry")
    return [Node(node.name, "reshape", (node.inputs[0].name,), node.outputs[0].name,
                 {"shape": list(out_shape)})]


def lower_sum(node: gs.Node, lw: Lowerer) -> list[Node]:
    """Sum of n inputs: a chain of n - 1 adds; constants become one affine shift."""
    variables = [t for t in node.inputs if not isinstance(t, gs.Constant)]
    constants = [np.asarray(t.values, np.float32) for t in node.inputs
                 if isinstance(t, gs.Constant)]
    if not variables:
        raise _fail(node, "all inputs are constant", "fold the model's constants first")
    out_name = node.outputs[0].name
    out_rank = len(lw.sample_shape(node.outputs[0], node))
    nodes: list[Node] = []
    current = variables[0].name
    steps = len(variables) - 1 + bool(constants)
    for i, tensor in enumerate(variables[1:]):
        last = i == steps - 1
        name, output = (node.name, out_name) if last else (f"{node.name}:{i}",) * 2
        nodes.append(Node(name, "add", (current, tensor.name), output))
        current = output
    if constants:
        shift = _sample_constant(sum(constants), out_rank, node)
        nodes.append(Node(node.name, "affine", (current,), out_name, {},
                          {"scale": np.ones((), np.float32), "shift": shift}))
    elif not nodes:  # Sum of one input: a copy
        nodes.append(Node(node.name, "reshape", (current,), out_name,
                          {"shape": list(lw.sample_shape(node.outputs[0], node))}))
    return nodes


def lower_concat(node: gs.Node, lw: Lowerer) -> list[Node]:
    for tensor in node.inputs:
        if isinstance(tensor, gs.Constant):
            raise _fail(node, f"input {tensor.name!r} is a constant",
                        "only concatenation of activations is supported")
    rank = len(lw.sample_shape(node.outputs[0], node)) + 1
    axis = _sample_axis(node, int(node.attrs.get("axis", 1)), rank)
    return [Node(node.name, "concat", tuple(t.name for t in node.inputs), node.outputs[0].name,
                 {"axis": axis - 1})]


def lower_tile(node: gs.Node, lw: Lowerer) -> list[Node]:
    """Tile: copies along sample axes, one concat of r copies per axis repeated r times."""
    repeats = [int(r) for r in lw.constant(node.inputs[1], node, "repeats").reshape(-1)]
    if repeats[0] != 1:
        raise _fail(node, f"repeats {repeats} tile the batch axis", "tile only sample axes")
    tiled = [(axis, r) for axis, r in enumerate(repeats[1:]) if r != 1]
    if not tiled:
        return [Node(node.name, "reshape", (node.inputs[0].name,), node.outputs[0].name,
                     {"shape": list(lw.sample_shape(node.outputs[0], node))})]
    nodes, current = [], node.inputs[0].name
    for i, (axis, r) in enumerate(tiled):
        last = i == len(tiled) - 1
        name, output = (node.name, node.outputs[0].name) if last else (f"{node.name}:{i}",) * 2
        nodes.append(Node(name, "concat", (current,) * r, output, {"axis": axis}))
        current = output
    return nodes


def lower_transpose(node: gs.Node, lw: Lowerer) -> list[Node]:
    rank = len(lw.sample_shape(node.inputs[0], node)) + 1
    perm = lw.attr_ints(node, "perm", list(range(rank - 1, -1, -1)))
    if perm[0] != 0:
        raise _fail(node, f"perm {perm} moves the batch axis", "keep axis 0 first")
    return [Node(node.name, "transpose", (node.inputs[0].name,), node.outputs[0].name,
                 {"perm": [p - 1 for p in perm[1:]]})]


def lower_pad(node: gs.Node, lw: Lowerer) -> list[Node]:
    """Pad (constant, reflect or edge) of the sample axes; zero pads before a Conv are folded
    into the Conv by the ``fold_pad`` pass, so this is what remains."""
    mode = node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("constant", "reflect", "edge"):
        raise _fail(node, f"mode {mode!r} is not supported", "use constant, reflect or edge")
    rank = len(lw.sample_shape(node.inputs[0], node)) + 1
    pads = [int(p) for p in lw.constant(node.inputs[1], node, "pads").reshape(-1)]
    axes_input = _optional_input(node, 3)
    axes = list(range(rank))
    if axes_input is not None:
        axes = [int(a) % rank for a in lw.constant(axes_input, node, "axes").reshape(-1)]
    full = [0] * (2 * rank)
    for i, axis in enumerate(axes):
        full[axis], full[axis + rank] = pads[i], pads[i + len(axes)]
    if full[0] or full[rank]:
        raise _fail(node, f"pads {pads} pad the batch axis", "pad only the sample axes")
    value_input = _optional_input(node, 2)
    value = 0.0
    if value_input is not None:
        value = float(lw.constant(value_input, node, "constant_value").reshape(-1)[0])
    return [Node(node.name, "pad", (node.inputs[0].name,), node.outputs[0].name,
                 {"pads": full[1:rank] + full[rank + 1:], "mode": mode, "value": value})]


def lower_resize(node: gs.Node, lw: Lowerer) -> list[Node]:
    """Resize (nearest or linear) of the last two axes, as two interpolation matrices."""
    def text(key, default):
        value = node.attrs.get(key, default)
        return value.decode() if isinstance(value, bytes) else value

    mode = text("mode", "nearest")
    coordinate_mode = text("coordinate_transformation_mode", "half_pixel")
    nearest_mode = text("nearest_mode", "round_prefer_floor")
    if mode not in interpolation.MODES:
        raise _fail(node, f"mode {mode!r} is not supported", "use nearest or linear resizing")
    if coordinate_mode not in interpolation.COORDINATE_MODES:
        raise _fail(node, f"coordinate_transformation_mode {coordinate_mode!r} is not "
                    f"supported", f"use one of {', '.join(interpolation.COORDINATE_MODES)}")
    if node.attrs.get("antialias", 0) or node.attrs.get("axes") is not None:
        raise _fail(node, "antialias and axes are not supported")
    in_shape = lw.sample_shape(node.inputs[0], node)
    out_shape = lw.sample_shape(node.outputs[0], node)
    if len(in_shape) < 2 or in_shape[:-2] != out_shape[:-2]:
        raise _fail(node, f"resizes {list(in_shape)} -> {list(out_shape)}",
                    "only the last two (spatial) axes may be resized")
    scales_input = _optional_input(node, 2)
    scales = None
    if scales_input is not None:
        scales = lw.constant(scales_input, node, "scales").astype(np.float64).reshape(-1)
        if scales.size == 0:
            scales = None
    matrices = []
    for axis in (-2, -1):
        size_in, size_out = in_shape[axis], out_shape[axis]
        scale = scales[axis] if scales is not None else size_out / size_in
        matrices.append(interpolation.resize_matrix(size_in, size_out, float(scale), mode,
                                                    coordinate_mode, nearest_mode))
    return [Node(node.name, "resize", (node.inputs[0].name,), node.outputs[0].name, {},
                 {"rows": matrices[0], "cols": matrices[1]})]


def lower_reduce(node: gs.Node, lw: Lowerer) -> list[Node]:
    """ReduceMean and ReduceSum over sample axes (linear)."""
    rank = len(lw.sample_shape(node.inputs[0], node)) + 1
    axes = node.attrs.get("axes")
    axes_input = _optional_input(node, 1)
    if axes is None and axes_input is not None:
        axes = lw.constant(axes_input, node, "axes").reshape(-1).tolist()
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            return [Node(node.name, "reshape", (node.inputs[0].name,), node.outputs[0].name,
                         {"shape": list(lw.sample_shape(node.outputs[0], node))})]
        raise _fail(node, "no axes: it would reduce over the batch", "give the sample axes")
    axes = sorted(_sample_axis(node, int(a), rank, "axes entry") - 1 for a in axes)
    return [Node(node.name, "reduce", (node.inputs[0].name,), node.outputs[0].name,
                 {"mode": "mean" if node.op == "ReduceMean" else "sum", "axes": axes,
                  "keepdims": int(node.attrs.get("keepdims", 1))})]


# --------------------------------------------------------------------------- analog

# ONNX op -> (analog function, its attributes from the node's). Softmax and LogSoftmax at
# the readout are exact and need no opt-in; everywhere else these run in analog only when
# the user names them in --allow-analog.
def _no_params(node):
    return {}


ANALOG_OPS: dict[str, tuple[str, Callable[[gs.Node], dict]]] = {
    "Sigmoid": ("sigmoid", _no_params),
    "Tanh": ("tanh", _no_params),
    "Exp": ("exp", _no_params),
    "Softplus": ("softplus", _no_params),
    "HardSwish": ("hard_swish", _no_params),
    "Softmax": ("softmax", _no_params),
    "LogSoftmax": ("log_softmax", _no_params),
    "Elu": ("elu", lambda n: {"alpha": float(n.attrs.get("alpha", 1.0))}),
    "Selu": ("selu", lambda n: {"alpha": float(n.attrs.get("alpha", 1.67326319217681884765625)),
                                "beta": float(n.attrs.get("gamma", 1.05070102214813232421875))}),
    "HardSigmoid": ("hard_sigmoid", lambda n: {"alpha": float(n.attrs.get("alpha", 0.2)),
                                               "beta": float(n.attrs.get("beta", 0.5))}),
    "LRN": ("lrn", lambda n: {"alpha": float(n.attrs.get("alpha", 1e-4)),
                              "beta": float(n.attrs.get("beta", 0.75)),
                              "bias": float(n.attrs.get("bias", 1.0)),
                              "size": int(n.attrs["size"])}),
    "Mul": ("mul", _no_params),
    "Div": ("div", _no_params),
}
_ANALOG_DEFAULTS = {"axis": 0, "alpha": 0.0, "beta": 0.0, "bias": 0.0, "size": 1}
# Ops that pass a readout through unchanged in meaning: reshaping the time-averaged output.
_READOUT_PASSTHROUGH = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity")


def check_allow_analog(ops) -> tuple[str, ...]:
    """Validates ``--allow-analog`` names (ONNX op types); returns them as a tuple.

    Raises:
        InputError: A name that has no analog implementation, listing those that have.
    """
    ops = tuple(ops)
    unknown = [op for op in ops if op not in ANALOG_OPS]
    if unknown:
        raise InputError(f"--allow-analog: {', '.join(unknown)} has no analog form; ops that "
                         f"can run in analog: {', '.join(sorted(ANALOG_OPS))}")
    return ops


def _only_reaches_outputs(tensor: gs.Tensor) -> bool:
    """Whether ``tensor`` feeds graph outputs only, through reshapes at most."""
    for consumer in tensor.outputs:
        if consumer.op not in _READOUT_PASSTHROUGH:
            return False
        if not all(_only_reaches_outputs(t) for t in consumer.outputs):
            return False
    return True  # a tensor that nothing reads is a graph output (cleanup keeps no others)


def _analog_node(node: gs.Node, lw: Lowerer, function: str, params: dict) -> Node:
    rank = len(lw.sample_shape(node.outputs[0], node)) + 1
    attrs = {**_ANALOG_DEFAULTS, **params, "function": function}
    if node.op in ("Softmax", "LogSoftmax"):
        attrs["axis"] = _sample_axis(node, int(node.attrs.get("axis", -1)), rank) - 1
    for tensor in node.inputs:
        if isinstance(tensor, gs.Constant):
            raise _fail(node, f"input {tensor.name!r} is a constant",
                        "analog ops take activations")
    return Node(node.name, "analog", tuple(t.name for t in node.inputs), node.outputs[0].name,
                attrs)


def lower_analog(node: gs.Node, lw: Lowerer) -> list[Node]:
    """An op without a spiking form, computed on the running mean (``analog`` runtime op)."""
    function, params = ANALOG_OPS[node.op]
    at_readout = node.op in ("Softmax", "LogSoftmax") and _only_reaches_outputs(node.outputs[0])
    if at_readout:
        lw.notes[node.name] = ("readout", "applied to the time-averaged readout: exact, "
                               "argmax unchanged")
    elif node.op in lw.allow_analog:
        lw.notes[node.name] = ("analog", "WARNING: not spiking; computed on the time-averaged "
                               "signal (--allow-analog)")
    else:
        where = " inside the network" if node.op in ("Softmax", "LogSoftmax") else ""
        raise _fail(node, f"{node.op}{where} has no spiking form",
                    f"pass --allow-analog {node.op} to compute it on the time-averaged signal")
    return [_analog_node(node, lw, function, params(node))]


# --------------------------------------------------------------------------- neurons


def _neuron_arrays(node: gs.Node, lw: Lowerer) -> dict[str, np.ndarray]:
    return {"theta": lw.constant(node.inputs[1], node, "theta").astype(np.float32),
            "v0": lw.constant(node.inputs[2], node, "v0").astype(np.float32)}


def lower_snm_clip(node: gs.Node, lw: Lowerer) -> list[Node]:
    return [Node(node.name, "snm_clip", (node.inputs[0].name,), node.outputs[0].name,
                 {"theta_neg": node.attrs["theta_neg"],
                  "max_spikes_per_step": int(node.attrs["max_spikes_per_step"]),
                  "upper": float(node.attrs["upper"])},
                 _neuron_arrays(node, lw))]


def lower_snm_leaky(node: gs.Node, lw: Lowerer) -> list[Node]:
    if node.attrs["theta_neg"] == "off":
        raise _fail(node, "theta_neg=off: a leaky neuron must send negative spikes",
                    "use --theta-neg zero or minus_theta")
    return [Node(node.name, "snm_leaky", (node.inputs[0].name,), node.outputs[0].name,
                 {"theta_neg": node.attrs["theta_neg"],
                  "max_spikes_per_step": int(node.attrs["max_spikes_per_step"])},
                 {**_neuron_arrays(node, lw),
                  "slope": lw.constant(node.inputs[3], node, "slope").astype(np.float32)})]



@dataclass(frozen=True)
class OpSupport:
    """How an ONNX op converts: the lowering function and a one-line description."""

    lower: Callable[[gs.Node, Lowerer], list[Node]] | None
    conversion: str  # "exact", "neuron", "removed"
    how: str


LOWERINGS: dict[str, OpSupport] = {
    "Conv": OpSupport(lower_conv, "exact", "linear: convolution of spikes, bias every step"),
    "Gemm": OpSupport(lower_gemm, "exact", "linear: dense layer on spikes, bias every step"),
    "MatMul": OpSupport(lower_matmul, "exact", "linear: spikes @ constant weight"),
    "Add": OpSupport(lower_add, "exact", "linear: sum of spike trains, or + constant"),
    "Sub": OpSupport(lower_sub_mul_div, "exact", "linear: - constant (affine)"),
    "Mul": OpSupport(lower_sub_mul_div, "exact", "linear: * constant (affine)"),
    "Div": OpSupport(lower_sub_mul_div, "exact", "linear: / constant (affine)"),
    "BatchNormalization": OpSupport(lower_batchnorm, "exact",
                                    "folded into the previous Conv/Gemm, or the next one where "
                                    "exact, else per-channel affine"),
    "AveragePool": OpSupport(lower_avgpool, "exact", "linear: average pooling of spikes"),
    "GlobalAveragePool": OpSupport(lower_global_avgpool, "exact", "linear: spatial mean"),
    "MaxPool": OpSupport(lower_maxpool, "exact",
                         "signed max tracker: exact max pool of the running inputs"),
    "Flatten": OpSupport(lower_reshape, "exact", "reshape"),
    "Reshape": OpSupport(lower_reshape, "exact", "reshape"),
    "SNM": OpSupport(lower_snm, "neuron", "Signed Neuron with Memory"),
    "SNMClip": OpSupport(lower_snm_clip, "neuron", "clipped Signed Neuron with Memory"),
    "SNMLeaky": OpSupport(lower_snm_leaky, "neuron", "leaky Signed Neuron with Memory"),
    "Relu": OpSupport(None, "neuron",
                      "SNM neuron with DNI threshold and initial potential; error ~ 1/T"),
    "Clip": OpSupport(None, "neuron", "clipped SNM: tracks clip(integrated input, 0, hi * t) "
                      "with DNI threshold; error ~ 1/T"),
    "LeakyRelu": OpSupport(None, "neuron", "leaky SNM: signed spikes track the leaky ReLU of "
                           "the integrated input; error ~ 1/T"),
    "PRelu": OpSupport(None, "neuron", "leaky SNM with a per-channel slope; error ~ 1/T"),
    "Squeeze": OpSupport(lower_squeeze, "exact", "reshape"),
    "Unsqueeze": OpSupport(lower_squeeze, "exact", "reshape"),
    "Sum": OpSupport(lower_sum, "exact", "linear: sum of spike trains"),
    "Concat": OpSupport(lower_concat, "exact", "concatenation of spike trains"),
    "Transpose": OpSupport(lower_transpose, "exact", "transpose of spike trains"),
    "Tile": OpSupport(lower_tile, "exact", "copies of spike trains"),
    "Pad": OpSupport(lower_pad, "exact", "zero pad folded into the next Conv, else padding "
                     "of spike trains"),
    "Resize": OpSupport(lower_resize, "exact", "linear: nearest or linear resizing of spikes"),
    "ReduceMean": OpSupport(lower_reduce, "exact", "linear: mean of spike trains"),
    "ReduceSum": OpSupport(lower_reduce, "exact", "linear: sum of spike trains"),
    "Softmax": OpSupport(lower_analog, "readout", "applied to the time-averaged readout"),
    "LogSoftmax": OpSupport(lower_analog, "readout", "applied to the time-averaged readout"),
    **{op: OpSupport(lower_analog, "analog", "opt-in (--allow-analog): computed on the "
                     "time-averaged signal, not spiking")
       for op in ("Sigmoid", "Tanh", "Exp", "Softplus", "HardSwish", "Elu", "Selu",
                  "HardSigmoid", "LRN")},
    "Dropout": OpSupport(None, "removed", "removed (inference)"),
    "Identity": OpSupport(None, "removed", "removed"),
}


INTERNAL_OPS = ("SNM", "SNMClip", "SNMLeaky")
"""Ops of the ``snncompiler`` domain that passes create; never accepted from a model."""


def supported_ops() -> list[str]:
    return sorted(op for op in LOWERINGS if op not in INTERNAL_OPS)


def unsupported_error(node: gs.Node) -> UnsupportedOpError:
    return UnsupportedOpError(
        f"node {node.name!r}: op {node.op!r} is not supported; supported ops: "
        f"{', '.join(supported_ops())}. Rewrite or remove it before export, or open an issue "
        "with the model")


def lower_nodes(graph: gs.Graph, *, allow_analog=(), notes: dict | None = None,
                ) -> tuple[list[Node], dict[str, tuple], dict[str, str]]:
    """Lowers every node it can.

    Args:
        graph: The rewritten graph.
        allow_analog: ONNX op types allowed to run on the time-averaged signal.
        notes: If given, filled with node name -> (conversion, how) for nodes whose
            conversion depends on their place (see :class:`Lowerer`).

    Returns:
        ``(nodes, shapes, problems)``: runtime nodes, per-sample shape of every tensor made,
        and for each node that cannot be converted, its name -> the reason.
    """
    lw = Lowerer(allow_analog)
    nodes: list[Node] = []
    problems: dict[str, str] = {}
    shapes = {t.name: tuple(int(d) for d in t.shape[1:]) for t in graph.inputs}
    for gnode in graph.nodes:
        support = LOWERINGS.get(gnode.op)
        try:
            if support is None or (gnode.op in INTERNAL_OPS) != (gnode.domain == "snncompiler"):
                raise unsupported_error(gnode)
            if support.lower is None:
                raise _fail(gnode, "should have been rewritten by an earlier pass")
            for new in support.lower(gnode, lw):
                missing = [name for name in new.inputs if name not in shapes]
                if missing:
                    raise _fail(gnode, f"input {missing[0]!r} comes from a node that could "
                                "not be converted")
                new.shape = infer_shape(new, [shapes[name] for name in new.inputs])
                expected = lw.sample_shape(gnode.outputs[0], gnode)
                if new.output == gnode.outputs[0].name and tuple(new.shape) != expected:
                    raise _fail(gnode, f"runtime shape {list(new.shape)} disagrees with "
                                f"onnx shape inference {list(expected)}")
                shapes[new.output] = new.shape
                nodes.append(new)
        except SnnError as error:
            problems[gnode.name] = str(error)
            # Go on from ONNX's shapes, so that later nodes are judged on their own merits
            # and the report lists each problem once, where it is.
            for tensor in gnode.outputs:
                if tensor.name not in shapes and tensor.shape is not None and all(
                        isinstance(d, (int, np.integer)) for d in tensor.shape[1:]):
                    shapes[tensor.name] = tuple(int(d) for d in tensor.shape[1:])
    if notes is not None:
        notes.update(lw.notes)
    return nodes, shapes, problems


def problems_error(problems: dict[str, str]) -> UnsupportedOpError:
    lines = list(problems.values())
    head = f"{len(lines)} nodes cannot be converted:\n  " if len(lines) > 1 else ""
    return UnsupportedOpError(head + "\n  ".join(lines))


def lower_graph(graph: gs.Graph, ctx: CompileContext, *, source: str = "") -> Program:
    """Lowers a fully rewritten graph (no Relu, Identity or Dropout left) to a Program.

    Raises:
        UnsupportedOpError: One or more nodes cannot be converted; the message lists all.
    """
    notes: dict[str, tuple[str, str]] = {}
    nodes, shapes, problems = lower_nodes(graph, allow_analog=ctx.config.allow_analog,
                                          notes=notes)
    if problems:
        raise problems_error(problems)
    analog = sorted(name for name, (kind, _) in notes.items() if kind == "analog")
    for name in analog:
        ctx.report.append(f"WARNING: node {name!r} ({graph_op(graph, name)}) is not spiking: "
                          "it runs on the time-averaged signal (--allow-analog)")
    inputs = [TensorSpec(t.name, tuple(int(d) for d in t.shape[1:]),
                         np.dtype(t.dtype or np.float32).name) for t in graph.inputs]
    outputs = [TensorSpec(t.name, shapes[t.name]) for t in graph.outputs]
    return Program(
        inputs=inputs,
        outputs=outputs,
        nodes=nodes,
        timesteps=[int(t) for t in ctx.config.timesteps],
        default_timesteps=int(ctx.config.timesteps[0]),
        producer=f"snncompiler {__version__}",
        metadata={"source": source, "readout": ctx.readout, "analog": analog},
    )


def graph_op(graph: gs.Graph, name: str) -> str:
    return next((node.op for node in graph.nodes if node.name == name), "?")
