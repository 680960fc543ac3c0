"""Rewrite pooling whose end padding reaches the window size as ceil_mode pooling."""

from __future__ import annotations

import math

import onnx_graphsurgeon as gs

from snncompiler.context import CompileContext


def normalize_pool_pads(graph: gs.Graph, ctx: CompileContext) -> int:
    """Spells ``ceil_mode`` the modern way where an old exporter padded instead.

    Opset 9 has no ``ceil_mode``, so PyTorch writes ``max_pool2d(ceil_mode=True)`` as a
    MaxPool whose end padding is large enough for the extra window, possibly as large as the
    kernel. onnxruntime refuses such pads at opset 10 and later. Padding never wins a max
    and is never counted by an average pool without ``count_include_pad``, so the end pad
    can shrink to the smallest value that, with ``ceil_mode=1``, gives the same output size:
    the windows, clipped to the input, are then the same.

    Preconditions: 2-D pooling with static input shape and explicit pads (``auto_pad``
    NOTSET). Others are left alone.
    Preserves: every output exactly.

    Returns:
        The number of pooling nodes rewritten.
    """
    del ctx  # the pass needs no configuration
    rewritten = 0
    for node in graph.nodes:
        include_pad = node.op == "AveragePool" and node.attrs.get("count_include_pad", 0)
        if node.op not in ("MaxPool", "AveragePool") or include_pad:
            continue
        kernel = [int(k) for k in node.attrs.get("kernel_shape", [])]
        pads = [int(p) for p in node.attrs.get("pads", [0] * 2 * len(kernel))]
        shape = node.inputs[0].shape
        auto_pad = node.attrs.get("auto_pad", "NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if len(kernel) != 2 or shape is None or auto_pad not in ("NOTSET", ""):
            continue
        strides = [int(s) for s in node.attrs.get("strides", [1, 1])]
        dilations = [int(d) for d in node.attrs.get("dilations", [1, 1])]
        spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
        if all(pads[2 + i] < spans[i] for i in range(2)) or not isinstance(shape[2], int):
            continue
        new_pads = _ceil_mode_pads(shape[2:], spans, strides, pads, node.attrs.get(
            "ceil_mode", 0))
        if new_pads is not None:
            node.attrs["pads"] = new_pads
            node.attrs["ceil_mode"] = 1
            rewritten += 1
    return rewritten


def _output_size(size, span, stride, begin, end, ceil_mode) -> int:
    rounding = math.ceil if ceil_mode else math.floor
    out = rounding((size + begin + end - span) / stride) + 1
    if ceil_mode and (out - 1) * stride >= size + begin:
        out -= 1
    return out


def _ceil_mode_pads(sizes, spans, strides, pads, ceil_mode) -> list[int] | None:
    new_ends = []
    for i in range(2):
        want = _output_size(sizes[i], spans[i], strides[i], pads[i], pads[2 + i], ceil_mode)
        fits = [end for end in range(spans[i]) if _output_size(
            sizes[i], spans[i], strides[i], pads[i], end, 1) == want]
        if pads[i] >= spans[i] or not fits:
            return None
        new_ends.append(fits[0])
    return [pads[0], pads[1], *new_ends]
