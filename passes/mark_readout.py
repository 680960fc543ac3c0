"""Pass: decide how each graph output is read out."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from snncompiler.context import CompileContext
from snncompiler.errors import UnsupportedOpError


def mark_readout(graph: gs.Graph, ctx: CompileContext) -> int:
    """Records the readout of every graph output in ``ctx.readout``.

    The output layer does not spike: its membrane accumulates the input current and the
    readout after t steps is the mean over steps 1..t (DNISNM doc, "Input encoding and
    readout"). This is exact for the linear ops that usually end a network.

    Preconditions: every graph output is produced by a node (not a graph input or constant).
    Preserves: the graph (only ``ctx`` changes).

    Returns:
        Number of outputs marked.
    """
    for tensor in graph.outputs:
        if isinstance(tensor, gs.Constant) or not tensor.inputs:
            raise UnsupportedOpError(
                f"graph output {tensor.name!r} is not computed by any node (a constant or a "
                "graph input); there is nothing to simulate")
        ctx.readout[tensor.name] = "membrane"
    return len(graph.outputs)
