"""Remove Identity and Dropout nodes, which compute nothing at inference time."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from snncompiler.context import CompileContext
from snncompiler.errors import UnsupportedOpError

_DROPPED_OPS = ("Identity", "Dropout")


def drop_identity(graph: gs.Graph, ctx: CompileContext) -> int:
    """Removes Identity and Dropout nodes, rewiring their consumers to their input.

    Dropout is read with inference semantics (it passes its input through). When a dropped
    node's output is a graph output, the node that produces its input is made to write the
    graph output instead, so the output keeps its name. Where that is impossible (the input
    is a graph input, a constant, or another graph output) the node is kept.

    Preconditions:
        The graph is as :func:`snncompiler.frontend.import_graph` returns it. A Dropout's
        optional ``mask`` output is unused, and its ``training_mode`` input, if any, is a
        constant false.

    Preserves:
        Every graph output, exactly: same names, same values (no arithmetic is changed).

    Args:
        graph: Rewritten in place. Removed nodes are detached; ``cleanup()`` drops them.
        ctx: Unused; part of the pass signature.

    Returns:
        The number of nodes removed.

    Raises:
        UnsupportedOpError: A Dropout whose mask is used or that may run in training mode.
    """
    del ctx  # the pass needs no configuration
    removed = []
    for node in list(graph.nodes):
        if node.op not in _DROPPED_OPS:
            continue
        if node.op == "Dropout":
            _check_inference_dropout(node, graph)
        source, result = node.inputs[0], node.outputs[0]
        if result in graph.outputs:
            if not _hand_output_to_producer(node, source, result, graph):
                continue
        else:
            for consumer in list(result.outputs):
                for index, tensor in enumerate(consumer.inputs):
                    if tensor is result:
                        consumer.inputs[index] = source
            node.inputs.clear()
            node.outputs.clear()
        removed.append(node)
    # By identity: gs compares nodes by value, and detached nodes of one op look alike.
    gone = {id(node) for node in removed}
    graph.nodes = [node for node in graph.nodes if id(node) not in gone]
    return len(removed)


def _check_inference_dropout(node: gs.Node, graph: gs.Graph) -> None:
    if len(node.outputs) > 1 and (node.outputs[1].outputs or node.outputs[1] in graph.outputs):
        raise UnsupportedOpError(
            f"Dropout '{node.name}': its mask output '{node.outputs[1].name}' is used; only "
            "inference-mode Dropout (mask unused) can be removed"
        )
    if len(node.inputs) > 2 and not node.inputs[2].is_empty():
        mode = node.inputs[2]
        if not isinstance(mode, gs.Constant) or bool(mode.values.any()):
            raise UnsupportedOpError(
                f"Dropout '{node.name}': training_mode '{mode.name}' is not a constant false; "
                "export the model in eval mode (model.eval())"
            )


def _hand_output_to_producer(
    node: gs.Node, source: gs.Tensor, result: gs.Tensor, graph: gs.Graph
) -> bool:
    """Makes the producer of ``source`` write the graph output ``result`` directly.

    Returns False (and changes nothing) when ``source`` cannot be renamed away: it is a
    graph input or output, a constant, or has no producer.
    """
    if (
        isinstance(source, gs.Constant)
        or len(source.inputs) != 1
        or source in graph.inputs
        or source in graph.outputs
    ):
        return False
    producer = source.inputs[0]
    slot = next(i for i, tensor in enumerate(producer.outputs) if tensor is source)
    for consumer in list(source.outputs):
        if consumer is node:
            continue
        for index, tensor in enumerate(consumer.inputs):
            if tensor is source:
                consumer.inputs[index] = result
    node.inputs.clear()
    node.outputs.clear()
    producer.outputs[slot] = result
    return True
