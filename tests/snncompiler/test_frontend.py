"""Tests of the ONNX front end: loading, validation, import with folding, export."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from snncompiler import frontend
from snncompiler.errors import ModelError, UnsupportedOpError
from snncompiler.frontend import TARGET_OPSET, export_model, import_graph, load_model
from tests.onnx_models import inputs_for, make_model, run, value, view_flatten_model, weight


def save(model: onnx.ModelProto, path) -> str:
    onnx.save_model(model, str(path))
    return str(path)


def relu_model(**input_kwargs) -> onnx.ModelProto:
    """x -> Relu -> y, with the input described by ``value(**input_kwargs)``."""
    shape = input_kwargs.pop("shape", ["N", 3])
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    output = value("y", shape, **input_kwargs)
    return make_model(nodes, [value("x", shape, **input_kwargs)], [output])


# --- folding -----------------------------------------------------------------------------


def test_view_pattern_folds_to_a_batch_free_reshape(tmp_path):
    original = view_flatten_model(np.random.default_rng(0))
    graph = import_graph(load_model(save(original, tmp_path / "view.onnx")))

    ops = [node.op for node in graph.nodes]
    assert ops == ["Conv", "Relu", "Reshape", "Gemm"]
    reshape = graph.nodes[2]
    assert isinstance(reshape.inputs[1], gs.Constant)
    # 0 copies the input's batch dim, so the constant holds at every batch size.
    np.testing.assert_array_equal(reshape.inputs[1].values, [0, -1])
    assert graph.inputs[0].shape == ["N", 2, 4, 4]
    assert graph.outputs[0].shape == ["N", 5]

    folded = export_model(graph)
    for batch in (1, 5):
        x = inputs_for((batch, 2, 4, 4), seed=batch)
        np.testing.assert_allclose(run(folded, x=x)[0], run(original, x=x)[0], rtol=1e-6)


def test_static_export_batch_is_made_dynamic(tmp_path):
    # torch.onnx.export without dynamic_axes bakes the batch into the flatten's shape.
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Unsqueeze", ["one", "axes"], ["batch"]),
        helper.make_node("Concat", ["batch", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["r", "target"], ["y"]),
    ]
    initializers = [
        weight("one", np.array(1)),
        weight("axes", np.array([0])),
        weight("minus_one", np.array([-1])),
    ]
    model = make_model(nodes, [value("x", [1, 2, 3])], [value("y", [1, 6])], initializers)
    graph = import_graph(load_model(save(model, tmp_path / "static.onnx")))

    assert graph.inputs[0].shape == ["N", 2, 3]
    assert graph.outputs[0].shape == ["N", 6]
    x = inputs_for((4, 2, 3))
    np.testing.assert_array_equal(run(export_model(graph), x=x)[0], np.maximum(x, 0).reshape(4, 6))


def test_batch_times_features_shape_becomes_minus_one():
    # h = x.view(x.size(0) * 2, -1) cannot use 0: its batch-dependent entry becomes -1.
    # h.view(x.size(0), -1) cannot either (h does not lead with the batch) and its -1 is
    # taken, so the static dims are spelled out from the inferred output shape.
    nodes = [
        helper.make_node("Shape", ["x"], ["batch"], start=0, end=1),
        helper.make_node("Mul", ["batch", "two"], ["rows"]),
        helper.make_node("Concat", ["rows", "three"], ["halves"], axis=0),
        helper.make_node("Reshape", ["x", "halves"], ["h"], name="split"),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Concat", ["batch", "minus_one"], ["rows_back"], axis=0),
        helper.make_node("Reshape", ["r", "rows_back"], ["y"], name="merge"),
    ]
    initializers = [
        weight("two", np.array([2])),
        weight("three", np.array([3])),
        weight("minus_one", np.array([-1])),
    ]
    model = make_model(nodes, [value("x", ["N", 6])], [value("y", ["N", 6])], initializers)
    graph = import_graph(model)

    shapes = {node.name: node.inputs[1].values for node in graph.nodes if node.op == "Reshape"}
    np.testing.assert_array_equal(shapes["split"], [-1, 3])
    np.testing.assert_array_equal(shapes["merge"], [-1, 6])
    assert graph.outputs[0].shape == ["N", 6]
    x = inputs_for((5, 6))
    np.testing.assert_array_equal(run(export_model(graph), x=x)[0], np.maximum(x, 0))


def test_output_whose_batch_is_not_leading_is_refused():
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["y"])]
    model = make_model(
        nodes, [value("x", ["N", 6])], [value("y", None)], [weight("flat", np.array([-1]))]
    )
    with pytest.raises(ModelError, match="graph output 'y' has shape \\[12\\] at batch 2"):
        import_graph(model)


def test_batch_dependent_constant_that_no_rewrite_fixes_is_refused():
    # Expand to a batch-sized shape: folding would bake the batch size into a constant.
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"]),
        helper.make_node("Add", ["x", "zeros"], ["y"]),
    ]
    model = make_model(nodes, [value("x", ["N", 3])], [value("y", ["N", 3])])
    with pytest.raises(ModelError, match="'Add_2' \\(Add\\): input 'zeros' depends on the batch"):
        import_graph(model)


def test_constant_node_becomes_an_initializer():
    nodes = [
        helper.make_node("Constant", [], ["c"], value=weight("c_value", np.full(3, 2.0))),
        helper.make_node("Add", ["x", "c"], ["y"]),
    ]
    graph = import_graph(make_model(nodes, [value("x", ["N", 3])], [value("y", ["N", 3])]))

    assert [node.op for node in graph.nodes] == ["Add"]
    assert isinstance(graph.nodes[0].inputs[1], gs.Constant)
    exported = export_model(graph)
    assert [tensor.name for tensor in exported.graph.initializer] == ["c"]
    np.testing.assert_array_equal(run(exported, x=np.zeros((2, 3), np.float32))[0], 2.0)


def test_nodes_get_unique_names():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Neg", ["a"], ["b"], name="act"),
        helper.make_node("Relu", ["b"], ["y"], name="act"),
    ]
    graph = import_graph(make_model(nodes, [value("x", ["N", 3])], [value("y", ["N", 3])]))
    assert [node.name for node in graph.nodes] == ["Relu_0", "act", "act_1"]


# --- loading -----------------------------------------------------------------------------


def test_opset_11_model_is_converted_to_17(tmp_path):
    # Opset 11 spells Unsqueeze axes as an attribute; opset 13+ as an input.
    nodes = [
        helper.make_node("Unsqueeze", ["x"], ["u"], axes=[1]),
        helper.make_node("ReduceSum", ["u"], ["y"], axes=[2], keepdims=0),
    ]
    original = make_model(nodes, [value("x", ["N", 3])], [value("y", ["N", 1])], opset=11)
    model = load_model(save(original, tmp_path / "old.onnx"))

    assert [(o.domain, o.version) for o in model.opset_import] == [("", TARGET_OPSET)]
    unsqueeze = next(node for node in model.graph.node if node.op_type == "Unsqueeze")
    assert len(unsqueeze.input) == 2
    x = inputs_for((4, 3))
    np.testing.assert_allclose(
        run(export_model(import_graph(model)), x=x)[0], run(original, x=x)[0], rtol=1e-6
    )


def test_inferred_shapes_are_kept(tmp_path):
    model = load_model(save(view_flatten_model(np.random.default_rng(1)), tmp_path / "m.onnx"))
    assert {info.name for info in model.graph.value_info} >= {"c", "r", "flat"}


def external_model(location: str) -> onnx.ModelProto:
    """x + w -> y, where w's data is declared to live in ``location``."""
    w = weight("w", np.ones(3))
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, entry in (("location", location), ("offset", "0"), ("length", "12")):
        w.external_data.add(key=key, value=entry)
    nodes = [helper.make_node("Add", ["x", "w"], ["y"])]
    return make_model(nodes, [value("x", ["N", 3])], [value("y", ["N", 3])], [w])


@pytest.fixture
def no_external_reads(monkeypatch):
    """Fails the test if the front end goes on to read external data at all."""

    def refuse(*args, **kwargs):
        raise AssertionError("external data was read")

    monkeypatch.setattr(frontend.external_data_helper, "load_external_data_for_model", refuse)


@pytest.mark.parametrize("location", ["../secret.bin", "sub/../../secret.bin", "SECRET_ABS"])
def test_external_data_outside_the_folder_is_refused(tmp_path, no_external_reads, location):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.full(3, 7.0, np.float32).tobytes())  # a sentinel that would load
    folder = tmp_path / "model"
    folder.mkdir()
    location = str(secret) if location == "SECRET_ABS" else location
    path = save(external_model(location), folder / "model.onnx")
    with pytest.raises(ModelError, match="outside the model's folder"):
        load_model(path)


def test_external_data_symlinked_out_of_the_folder_is_refused(tmp_path, no_external_reads):
    (tmp_path / "secret.bin").write_bytes(np.full(3, 7.0, np.float32).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    os.symlink(tmp_path / "secret.bin", folder / "weights.bin")
    path = save(external_model("weights.bin"), folder / "model.onnx")
    with pytest.raises(ModelError, match="'weights.bin', which is outside"):
        load_model(path)


def test_external_data_inside_the_folder_loads(tmp_path):
    (tmp_path / "weights.bin").write_bytes(np.full(3, 7.0, np.float32).tobytes())
    model = load_model(save(external_model("weights.bin"), tmp_path / "model.onnx"))
    np.testing.assert_array_equal(run(model, x=np.zeros((1, 3), np.float32))[0], [[7, 7, 7]])


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ModelError, match="nope.onnx: no such model file"):
        load_model(tmp_path / "nope.onnx")


def test_truncated_protobuf_is_refused(tmp_path):
    data = view_flatten_model(np.random.default_rng(0)).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="cut.onnx: not a readable ONNX model"):
        load_model(path)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(ModelError, match="holds no graph"):
        load_model(path)


def test_checker_errors_are_wrapped(tmp_path):
    nodes = [helper.make_node("NoSuchOp", ["x"], ["y"])]
    path = save(
        make_model(nodes, [value("x", ["N", 3])], [value("y", ["N", 3])]), tmp_path / "m.onnx"
    )
    with pytest.raises(ModelError, match="checker refused the model.*NoSuchOp"):
        load_model(path)


def test_inconsistent_shapes_are_refused(tmp_path):
    nodes = [helper.make_node("Add", ["x", "w"], ["y"])]
    model = make_model(
        nodes, [value("x", ["N", 3])], [value("y", ["N", 3])], [weight("w", np.ones(4))]
    )
    with pytest.raises(ModelError, match="shape inference found an inconsistency.*Add"):
        load_model(save(model, tmp_path / "m.onnx"))


def test_dangling_input_is_refused(tmp_path):
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="first"),
        helper.make_node("Add", ["a", "ghost"], ["y"], name="second"),
    ]
    model = make_model(nodes, [value("x", ["N", 3])], [value("y", ["N", 3])])
    message = "node 'second' \\(Add\\) reads 'ghost', which is neither"
    with pytest.raises(ModelError, match=message):
        import_graph(model)
    with pytest.raises(ModelError, match=message):
        load_model(save(model, tmp_path / "m.onnx"))


def test_cycle_is_refused():
    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["b"], name="second"),
        helper.make_node("Relu", ["a"], ["y"], name="third"),
    ]
    model = make_model(nodes, [value("x", ["N", 3])], [value("y", ["N", 3])])
    with pytest.raises(ModelError, match="cycle through 'first' \\(Add\\), 'second' \\(Relu\\)"):
        import_graph(model)


@pytest.mark.parametrize(
    ("shape", "spelled"),
    [(["N", 3, "H", "W"], "\\(N, 3, H, W\\)"), (["N", None], "\\(N, \\?\\)"), ([], "\\(\\)")],
)
def test_dynamic_dims_other_than_batch_are_refused(shape, spelled):
    with pytest.raises(ModelError, match=f"graph input 'x' has shape {spelled}; the batch"):
        import_graph(relu_model(shape=shape))


def test_float16_input_is_refused(tmp_path):
    path = save(relu_model(elem_type=TensorProto.FLOAT16), tmp_path / "half.onnx")
    with pytest.raises(ModelError, match="graph input 'x' is float16"):
        load_model(path)


def test_float64_weight_is_refused(tmp_path):
    nodes = [
        helper.make_node("Cast", ["x"], ["x64"], to=TensorProto.DOUBLE),
        helper.make_node("Add", ["x64", "w"], ["y"], name="add"),
    ]
    w = onnx.numpy_helper.from_array(np.ones(3), "w")  # float64
    model = make_model(
        nodes, [value("x", ["N", 3])], [value("y", ["N", 3], TensorProto.DOUBLE)], [w]
    )
    with pytest.raises(ModelError, match="weight 'w' \\(used by 'add' \\(Add\\)\\) is double"):
        load_model(save(model, tmp_path / "m.onnx"))


def test_quantized_model_is_refused(tmp_path):
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], name="quant"),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"]),
    ]
    initializers = [weight("scale", np.array(0.1)), weight("zero", np.array(0, np.uint8))]
    model = make_model(nodes, [value("x", ["N", 3])], [value("y", ["N", 3])], initializers)
    with pytest.raises(UnsupportedOpError, match="'quant' \\(QuantizeLinear\\) is a quantized"):
        load_model(save(model, tmp_path / "m.onnx"))


def test_import_graph_wants_target_opset():
    model = relu_model()
    model.opset_import[0].version = 13
    with pytest.raises(ModelError, match="expects opset 17, the model has 13"):
        import_graph(model)


# --- exporting ---------------------------------------------------------------------------


def test_export_model_targets_opset_17_and_an_ir_onnxruntime_reads():
    model = export_model(import_graph(relu_model()))
    assert [(o.domain, o.version) for o in model.opset_import] == [("", TARGET_OPSET)]
    assert model.ir_version == 8  # the IR version that introduced opset 17
    onnx.checker.check_model(model)
