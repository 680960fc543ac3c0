"""Fold a constant-zero Pad into the Conv(s) that read it."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from snncompiler.context import CompileContext


def fold_pad(graph: gs.Graph, ctx: CompileContext) -> int:
    """Moves a zero Pad of the spatial axes into the ``pads`` of every Conv reading it.

    A Conv pads its input with zeros, so ``Conv(Pad(x, p, 0), pads=q)`` is exactly
    ``Conv(x, pads=q + p)``. TensorFlow-style "SAME" padding exported as an explicit,
    often asymmetric, Pad before each strided Conv (EfficientNet, tf2onnx models) then costs
    nothing at run time.

    Preconditions (a Pad that misses one stays, and the lowering makes it a ``pad`` op):
        mode ``constant`` with value 0 (or none); pads and axes are constants; nothing is
        padded on the batch or channel axis and no pad is negative; the input is 4-D;
        every consumer is a Conv reading it as its data input, with explicit pads
        (``auto_pad`` NOTSET or VALID); the Pad's output is not a graph output.

    Preserves:
        Every graph output exactly (the Conv computes the same sums).

    Args:
        graph: Rewritten in place; folded Pads lose their consumers and ``cleanup()``
            removes them.
        ctx: Unused; part of the pass signature.

    Returns:
        The number of Pad nodes folded.
    """
    del ctx  # the pass needs no configuration
    folded = 0
    for pad in list(graph.nodes):
        if pad.op != "Pad":
            continue
        spatial = _spatial_zero_pads(pad)
        result = pad.outputs[0]
        consumers = list(result.outputs)
        if spatial is None or result in graph.outputs or not consumers:
            continue
        if not all(_takes_explicit_pads(conv, result) for conv in consumers):
            continue
        top, left, bottom, right = spatial
        for conv in consumers:
            conv.inputs[0] = pad.inputs[0]
            old = [int(v) for v in conv.attrs.get("pads", [0, 0, 0, 0])]
            conv.attrs["pads"] = [old[0] + top, old[1] + left, old[2] + bottom, old[3] + right]
            conv.attrs["auto_pad"] = "NOTSET"
        folded += 1
    return folded


def _constant(node: gs.Node, index: int):
    """The values of optional constant input ``index``; None if absent; False if not constant."""
    if index >= len(node.inputs) or node.inputs[index].is_empty():
        return None
    tensor = node.inputs[index]
    return np.asarray(tensor.values) if isinstance(tensor, gs.Constant) else False


def _spatial_zero_pads(pad: gs.Node) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of a zero Pad of the two spatial axes of a 4-D tensor."""
    mode = pad.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads, value, axes = _constant(pad, 1), _constant(pad, 2), _constant(pad, 3)
    shape = pad.inputs[0].shape
    if mode != "constant" or pads is None or pads is False or shape is None or len(shape) != 4:
        return None
    if value is False or (value is not None and np.any(value != 0)) or axes is False:
        return None
    axes = [int(a) % 4 for a in (range(4) if axes is None else axes.reshape(-1))]
    full = [0] * 8
    pads = [int(p) for p in pads.reshape(-1)]
    for i, axis in enumerate(axes):
        full[axis], full[axis + 4] = pads[i], pads[i + len(axes)]
    if full[0] or full[1] or full[4] or full[5] or min(full) < 0:
        return None
    return full[2], full[3], full[6], full[7]


def _takes_explicit_pads(conv: gs.Node, tensor: gs.Tensor) -> bool:
    auto_pad = conv.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    return (conv.op == "Conv" and conv.inputs[0] is tensor
            and all(t is not tensor for t in conv.inputs[1:])
            and auto_pad in ("NOTSET", "VALID", ""))
