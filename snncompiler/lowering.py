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

from snncompiler import __version__
from snncompiler.context import CompileContext
from snncompiler.errors import SnnError, UnsupportedOpError
from snncompiler.runtime.graph import Node, Program, TensorSpec
from snncompiler.runtime.opset import infer_shape


def _fail(node: gs.Node, why: str, hint: str = "") -> UnsupportedOpError:
    message = f"node {node.name!r} ({node.op}): {why}"
    return UnsupportedOpError(f"{message}; {hint}" if hint else message)


class Lowerer:
    """Shape and constant lookups shared by the lowering functions."""

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
    if not any(isinstance(t, gs.Constant) for t in node.inputs):
        raise _fail(node, f"{node.op} of two activations is not linear in the spikes",
                    f"only {node.op} by a constant is supported")
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
                                    "folded into the previous Conv/Gemm, else per-channel affine"),
    "AveragePool": OpSupport(lower_avgpool, "exact", "linear: average pooling of spikes"),
    "GlobalAveragePool": OpSupport(lower_global_avgpool, "exact", "linear: spatial mean"),
    "MaxPool": OpSupport(lower_maxpool, "exact",
                         "signed max tracker: exact max pool of the running inputs"),
    "Flatten": OpSupport(lower_reshape, "exact", "reshape"),
    "Reshape": OpSupport(lower_reshape, "exact", "reshape"),
    "SNM": OpSupport(lower_snm, "neuron", "Signed Neuron with Memory"),
    "Relu": OpSupport(None, "neuron",
                      "SNM neuron with DNI threshold and initial potential; error ~ 1/T"),
    "Dropout": OpSupport(None, "removed", "removed (inference)"),
    "Identity": OpSupport(None, "removed", "removed"),
}


def supported_ops() -> list[str]:
    return sorted(op for op in LOWERINGS if op != "SNM")


def unsupported_error(node: gs.Node) -> UnsupportedOpError:
    return UnsupportedOpError(
        f"node {node.name!r}: op {node.op!r} is not supported; supported ops: "
        f"{', '.join(supported_ops())}. Rewrite or remove it before export, or open an issue "
        "with the model")


def lower_nodes(graph: gs.Graph) -> tuple[list[Node], dict[str, tuple], dict[str, str]]:
    """Lowers every node it can.

    Returns:
        ``(nodes, shapes, problems)``: runtime nodes, per-sample shape of every tensor made,
        and for each node that cannot be converted, its name -> the reason.
    """
    lw = Lowerer()
    nodes: list[Node] = []
    problems: dict[str, str] = {}
    shapes = {t.name: tuple(int(d) for d in t.shape[1:]) for t in graph.inputs}
    for gnode in graph.nodes:
        support = LOWERINGS.get(gnode.op)
        try:
            if support is None or (gnode.op == "SNM") != (gnode.domain == "snncompiler"):
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
    nodes, shapes, problems = lower_nodes(graph)
    if problems:
        raise problems_error(problems)
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
        metadata={"source": source, "readout": ctx.readout},
    )
