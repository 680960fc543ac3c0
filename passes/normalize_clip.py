"""Rewrite every Clip as ``Clip(x, 0, hi)``, Relu, or nothing, plus exact affine shifts."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from snncompiler.context import CompileContext

from .fold_batchnorm import _unique


def clip_bounds(node: gs.Node) -> tuple[float | None, float | None] | None:
    """``(lo, hi)`` of a Clip whose bounds are constants (None where absent), else None."""
    bounds = []
    for index in (1, 2):
        if index >= len(node.inputs) or node.inputs[index].is_empty():
            bounds.append(None)
        elif isinstance(node.inputs[index], gs.Constant):
            values = np.asarray(node.inputs[index].values, dtype=np.float64).reshape(-1)
            if values.size != 1:
                return None
            bounds.append(float(values[0]))
        else:
            return None
    return bounds[0], bounds[1]


def normalize_clip(graph: gs.Graph, ctx: CompileContext) -> int:
    """Gives every Clip the form the clipped neuron implements: lower bound 0.

    With constant bounds (lo, hi), exactly, in the ANN (so calibration still runs it)::

        Clip(x, 0, hi)        stays                      (ReLU6 and the like)
        Clip(x, lo, hi)       Clip(x - lo, 0, hi - lo) + lo
        Clip(x, 0, none)      Relu(x)
        Clip(x, lo, none)     Relu(x - lo) + lo
        Clip(x, none, hi)     hi - Relu(hi - x)
        Clip(x, none, none)   x (removed)

    The shifts become per-step ``affine`` ops, exact on spikes.

    Preconditions: none; a Clip with computed bounds, or with ``hi <= lo``, is left alone
    and the lowering refuses it by name.
    Preserves: every graph output and its name, up to float32 rounding of the shifts.

    Returns:
        The number of Clip nodes rewritten (those already of the form Clip(x, 0, hi) do not
        count).
    """
    del ctx  # the pass needs no configuration
    taken = set(graph.tensors())
    removed = []
    for node in list(graph.nodes):
        bounds = clip_bounds(node) if node.op == "Clip" else None
        if bounds is None:
            continue
        lo, hi = bounds
        if (lo == 0 and hi is not None and hi > 0) or (None not in (lo, hi) and hi <= lo):
            continue
        _Rewriter(graph, node, taken).replace(lo, hi)
        removed.append(node)
    gone = {id(node) for node in removed}
    graph.nodes = [node for node in graph.nodes if id(node) not in gone]
    return len(removed)


class _Rewriter:
    """Builds the replacement of one Clip; the activation keeps the Clip's name."""

    def __init__(self, graph: gs.Graph, node: gs.Node, taken: set[str]):
        self.graph, self.node, self.taken = graph, node, taken
        self.shape = node.outputs[0].shape
        self.dtype = node.outputs[0].dtype or np.float32

    def tensor(self, suffix: str) -> gs.Variable:
        return gs.Variable(_unique(f"{self.node.name}_{suffix}", self.taken), dtype=self.dtype,
                           shape=self.shape)

    def const(self, value: float, suffix: str) -> gs.Constant:
        return gs.Constant(_unique(f"{self.node.name}_{suffix}", self.taken),
                           np.asarray(value, dtype=np.float32))

    def add(self, op: str, inputs, output, suffix: str | None = None) -> None:
        name = self.node.name if suffix is None else _unique(f"{self.node.name}_{suffix}",
                                                              self.taken)
        self.graph.nodes.append(gs.Node(op, name, inputs=inputs, outputs=[output]))

    def replace(self, lo: float | None, hi: float | None) -> None:
        source, result = self.node.inputs[0], self.node.outputs[0]
        self.node.inputs.clear()
        self.node.outputs.clear()
        if lo is None and hi is None:
            self.add("Identity", [source], result)
        elif hi is None and lo == 0:
            self.add("Relu", [source], result)
        elif hi is None:
            shifted, relu_out = self.tensor("shifted"), self.tensor("relu")
            self.add("Sub", [source, self.const(lo, "lo")], shifted, "shift")
            self.add("Relu", [shifted], relu_out)
            self.add("Add", [relu_out, self.const(lo, "lo_back")], result, "unshift")
        elif lo is None:
            flipped, relu_out = self.tensor("flipped"), self.tensor("relu")
            self.add("Sub", [self.const(hi, "hi"), source], flipped, "flip")
            self.add("Relu", [flipped], relu_out)
            self.add("Sub", [self.const(hi, "hi_back"), relu_out], result, "unflip")
        else:
            shifted, clipped = self.tensor("shifted"), self.tensor("clipped")
            self.add("Sub", [source, self.const(lo, "lo")], shifted, "shift")
            self.add("Clip", [shifted, self.const(0.0, "zero"), self.const(hi - lo, "range")],
                     clipped)
            self.add("Add", [clipped, self.const(lo, "lo_back")], result, "unshift")
