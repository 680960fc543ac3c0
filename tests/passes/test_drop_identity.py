"""The drop_identity pass: Identity and inference-mode Dropout disappear, outputs stay."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from snncompiler.context import CompileConfig, CompileContext
from snncompiler.errors import UnsupportedOpError
from snncompiler.frontend import export_model, import_graph
from snncompiler.passes.drop_identity import drop_identity
from tests.onnx_models import inputs_for, make_model, run, value, weight


def compile_ctx() -> CompileContext:
    return CompileContext(CompileConfig(progress=False))


def assert_same_outputs(before, graph) -> None:
    x = inputs_for((4, 3))
    np.testing.assert_allclose(
        run(export_model(graph), x=x)[0], run(before, x=x)[0], rtol=1e-5, atol=1e-5
    )


def run_pass(model):
    """Imports, runs the pass with the pipeline's cleanup, and returns (count, graph)."""
    graph = import_graph(model)
    count = drop_identity(graph, compile_ctx())
    graph.cleanup().toposort()
    return count, graph


def chain_model():
    """x -> Identity -> Relu -> Dropout -> Add -> Identity -> y, plus a second consumer."""
    nodes = [
        helper.make_node("Identity", ["x"], ["i"]),
        helper.make_node("Relu", ["i"], ["r"]),
        helper.make_node("Dropout", ["r", "ratio"], ["d"]),
        helper.make_node("Add", ["d", "w"], ["a"]),
        helper.make_node("Mul", ["d", "a"], ["m"]),
        helper.make_node("Identity", ["m"], ["y"]),
    ]
    initializers = [weight("ratio", np.array(0.5, np.float32)), weight("w", np.ones(3))]
    return make_model(nodes, [value("x", ["N", 3])], [value("y", ["N", 3])], initializers)


def test_identity_and_dropout_are_removed_and_outputs_kept():
    model = chain_model()
    count, graph = run_pass(model)

    assert count == 3
    assert [node.op for node in graph.nodes] == ["Relu", "Add", "Mul"]
    # The last Identity wrote the graph output: Mul now writes it, under the same name.
    assert [tensor.name for tensor in graph.outputs] == ["y"]
    assert graph.nodes[-1].outputs[0].name == "y"
    assert_same_outputs(model, graph)


def test_chained_identities_into_an_output():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Identity", ["r"], ["i"]),
        helper.make_node("Identity", ["i"], ["y"]),
    ]
    model = make_model(nodes, [value("x", ["N", 3])], [value("y", ["N", 3])])
    count, graph = run_pass(model)
    assert count == 2
    assert [(node.op, node.outputs[0].name) for node in graph.nodes] == [("Relu", "y")]
    assert_same_outputs(model, graph)


def test_identity_between_graph_input_and_output_is_kept():
    # Removing it would rename the output to the input; the output's name must stay.
    nodes = [helper.make_node("Identity", ["x"], ["y"])]
    model = make_model(nodes, [value("x", ["N", 3])], [value("y", ["N", 3])])
    count, graph = run_pass(model)
    assert count == 0
    assert [node.op for node in graph.nodes] == ["Identity"]
    assert_same_outputs(model, graph)


def test_dropout_with_a_used_mask_is_refused():
    nodes = [
        helper.make_node("Dropout", ["x"], ["y", "mask"], name="drop"),
    ]
    model = make_model(
        nodes,
        [value("x", ["N", 3])],
        [value("y", ["N", 3]), value("mask", ["N", 3], elem_type=9)],  # 9: bool
    )
    with pytest.raises(UnsupportedOpError, match="Dropout 'drop': its mask output 'mask'"):
        drop_identity(import_graph(model), compile_ctx())


@pytest.mark.parametrize(("training", "removed"), [(False, True), (True, False)])
def test_dropout_training_mode(training, removed):
    nodes = [
        helper.make_node("Dropout", ["x", "ratio", "training"], ["d"], name="drop"),
        helper.make_node("Relu", ["d"], ["y"]),
    ]
    initializers = [
        weight("ratio", np.array(0.5, np.float32)),
        weight("training", np.array(training)),
    ]
    model = make_model(nodes, [value("x", ["N", 3])], [value("y", ["N", 3])], initializers)
    if removed:
        count, graph = run_pass(model)
        assert count == 1
        assert [node.op for node in graph.nodes] == ["Relu"]
        assert_same_outputs(model, graph)
    else:
        with pytest.raises(UnsupportedOpError, match="'drop': training_mode 'training'"):
            run_pass(model)
