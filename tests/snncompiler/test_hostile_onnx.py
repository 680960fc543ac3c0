"""Broken and hostile ONNX files: each refused with one printable line, by the front end and
by the command line (exit code 1, no traceback, nothing written).

The front-end cases that ``test_frontend.py`` already pins (truncated protobuf, cycle in
``import_graph``, dangling input, float16 input, float64 weight, QuantizeLinear, external
data outside the folder) are repeated here only through the command line.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from snncompiler import frontend
from snncompiler.cli import main
from snncompiler.errors import ModelError, SnnError, UnsupportedOpError
from snncompiler.frontend import import_graph, load_model
from tests.onnx_models import make_model, value, view_flatten_model, weight


def relu(name="relu", **attrs) -> onnx.ModelProto:
    return make_model([helper.make_node("Relu", ["x"], ["y"], name=name, **attrs)],
                      [value("x", ["N", 3])], [value("y", ["N", 3])])


def cast_add(tensor: onnx.TensorProto) -> onnx.ModelProto:
    """x + Cast(w): a weight of another float type, cast at run time."""
    nodes = [helper.make_node("Cast", ["w"], ["w32"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["x", "w32"], ["y"], name="add")]
    return make_model(nodes, [value("x", ["N", 3])], [value("y", ["N", 3])], [tensor])


def quantized(kind: str) -> onnx.ModelProto:
    """Float model with quantized ops inside, as the ONNX quantization tools write them."""
    scale, zero = weight("s", np.array(0.1)), numpy_helper.from_array(np.array(0, np.int8), "z")
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.int8), "w")
    x, y = [value("x", ["N", 1, 4, 4])], [value("y", ["N", 2, 2, 2])]
    if kind == "QLinearConv":
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="quant"),
                 helper.make_node("QLinearConv", ["q", "s", "z", "w", "s", "z", "s", "z"], ["c"],
                                  name="qconv"),
                 helper.make_node("DequantizeLinear", ["c", "s", "z"], ["y"], name="dequant")]
    else:  # weight-only int8: DequantizeLinear of an int8 initializer feeding a float Conv
        nodes = [helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wf"], name="dequant"),
                 helper.make_node("Conv", ["x", "wf"], ["y"], name="conv")]
    return make_model(nodes, x, y, [scale, zero, w])


def bfloat16_weight() -> onnx.TensorProto:
    tensor = numpy_helper.from_array(np.ones(3, np.float32), "w")
    tensor.data_type = TensorProto.BFLOAT16
    tensor.raw_data = np.full(3, 0x3F80, np.uint16).tobytes()  # 1.0 in bfloat16
    return tensor


def missing_initializer() -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    return make_model(nodes, [value("x", ["N", 1, 4, 4])], [value("y", ["N", 2, 2, 2])])


def cycle() -> onnx.ModelProto:
    nodes = [helper.make_node("Add", ["x", "b"], ["a"], name="first"),
             helper.make_node("Relu", ["a"], ["b"], name="second"),
             helper.make_node("Relu", ["a"], ["y"], name="third")]
    return make_model(nodes, [value("x", ["N", 3])], [value("y", ["N", 3])])


def declared_shape_disagrees() -> onnx.ModelProto:
    return make_model([helper.make_node("Relu", ["x"], ["y"])], [value("x", ["N", 3])],
                      [value("y", ["N", 7])])


def external(location: str) -> onnx.ModelProto:
    model = cast_add(numpy_helper.from_array(np.ones(3, np.float32), "w"))
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    return model


def tampered(change) -> onnx.ModelProto:
    """relu(x) + w with the weight's storage changed by ``change(tensor)``."""
    w = numpy_helper.from_array(np.arange(3, dtype=np.float32), "w")
    change(w)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "w"], ["y"])]
    return make_model(nodes, [value("x", ["N", 3])], [value("y", ["N", 3])], [w])


def _too_long(tensor):
    tensor.raw_data = tensor.raw_data * 2


def _segmented(tensor):
    tensor.segment.begin, tensor.segment.end = 0, 3


def _typed_too_long(tensor):
    tensor.ClearField("raw_data")
    tensor.float_data.extend([1.0] * 6)


def _unknown_type(tensor):
    tensor.data_type = 99


def mixed_types() -> onnx.ModelProto:
    """The view-style flatten with an int32 -1 next to the int64 batch: Concat's types clash.

    onnx's checker and shape inference let it through; onnxruntime, folding the shape,
    does not (and onnx-graphsurgeon's "basic" partitioning then retried the same subgraph
    until Python's recursion limit).
    """
    model = view_flatten_model(np.random.default_rng(0))
    for tensor in model.graph.initializer:
        if tensor.name == "minus_one":
            tensor.CopyFrom(numpy_helper.from_array(np.array([-1], np.int32), "minus_one"))
    return model


def invalid_utf8(field: bytes) -> bytes:
    """A model whose node name or input name is not UTF-8 (protobuf then hands over bytes)."""
    model = relu(name="NAMEZ")
    model.graph.node[0].input[0] = model.graph.input[0].name = "INPUTZ"
    return model.SerializeToString().replace(field, b"\xd2" + field[1:])


def constant_output() -> onnx.ModelProto:
    """y = Relu(w): the output folds to a constant, with x unused."""
    nodes = [helper.make_node("Relu", ["w"], ["y"], name="relu")]
    return make_model(nodes, [value("x", ["N", 3])], [value("y", [3])],
                      [weight("w", np.ones(3))])


def unknown_input_type() -> onnx.ModelProto:
    model = relu()
    model.graph.input[0].type.tensor_type.elem_type = 99
    return model


def division_by_zero() -> onnx.ModelProto:
    """A Reshape shape computed as [1, 3] / [0, 1] in int64: folding it fails in onnxruntime,
    which also logs the failure on stderr unless told not to."""
    nodes = [helper.make_node("Div", ["a", "b"], ["shape"], name="div"),
             helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape")]
    return make_model(nodes, [value("x", ["N", 3])], [value("y", ["N", 3])],
                      [weight("a", np.array([1, 3])), weight("b", np.array([0, 1]))])


def value_info_disagrees() -> onnx.ModelProto:
    """An opset-16 model whose value_info calls the float weight 'w' int8: the version
    converter's own shape inference refuses it (found by tools/fuzz_campaign.py)."""
    model = tampered(lambda tensor: None)
    model.opset_import[0].version = 16
    model.graph.value_info.append(value("w", [3], TensorProto.INT8))
    return model


def empty_list_attribute() -> onnx.ModelProto:
    """A call of a model-local function with an empty INTS attribute (the checker does not
    look at those): onnx-graphsurgeon cannot write such an attribute back (found by
    tools/fuzz_campaign.py)."""
    body = [helper.make_node("Relu", ["fx"], ["fy"])]
    function = helper.make_function("local", "Act", ["fx"], ["fy"], body,
                                    [helper.make_opsetid("", 17)])
    node = helper.make_node("Act", ["x"], ["y"], name="act", domain="local")
    node.attribute.append(helper.make_attribute("k", [], attr_type=onnx.AttributeProto.INTS))
    model = make_model([node], [value("x", ["N", 3])], [value("y", ["N", 3])])
    model.functions.append(function)
    model.opset_import.append(helper.make_opsetid("local", 1))
    return model


def truncated(folder) -> bytes:
    data = view_flatten_model(np.random.default_rng(0)).SerializeToString()
    return data[: len(data) // 2]


# (name, builder, expected error, message pattern). Builders take the folder to write in.
HOSTILE = [
    ("truncated", lambda f: truncated(f), ModelError, "not a readable ONNX model"),
    ("empty", lambda f: b"", ModelError, "holds no graph"),
    ("not_onnx", lambda f: b"\x93NUMPY\x01\x00garbage", ModelError, "not a readable ONNX"),
    ("cycle", lambda f: cycle(), ModelError, "cycle|topologically sorted"),
    ("dangling", lambda f: make_model([helper.make_node("Add", ["x", "ghost"], ["y"],
                                                        name="add")],
                                      [value("x", ["N", 3])], [value("y", ["N", 3])]),
     ModelError, "reads 'ghost'"),
    ("missing_initializer", lambda f: missing_initializer(), ModelError, "reads 'w'"),
    ("inconsistent_shapes", lambda f: declared_shape_disagrees(), ModelError,
     "shape inference found an inconsistency"),
    ("float16_input", lambda f: make_model([helper.make_node("Relu", ["x"], ["y"])],
                                           [value("x", ["N", 3], TensorProto.FLOAT16)],
                                           [value("y", ["N", 3], TensorProto.FLOAT16)]),
     ModelError, "'x' is float16"),
    ("float16_weight", lambda f: cast_add(numpy_helper.from_array(np.ones(3, np.float16), "w")),
     ModelError, "weight 'w' .* is float16"),
    ("bfloat16_weight", lambda f: cast_add(bfloat16_weight()), ModelError, "is bfloat16"),
    ("int8_input", lambda f: make_model([helper.make_node("Cast", ["x"], ["y"], to=1)],
                                        [value("x", ["N", 3], TensorProto.INT8)],
                                        [value("y", ["N", 3])]), ModelError, "'x' is int8"),
    ("qlinearconv", lambda f: quantized("QLinearConv"), UnsupportedOpError, "quantized op"),
    ("int8_weights", lambda f: quantized("weights"), UnsupportedOpError,
     "'dequant' \\(DequantizeLinear\\) is a quantized op"),
    ("checker", lambda f: relu(mode=1), ModelError, "checker refused.*mode"),
    ("raw_data_too_long", lambda f: tampered(_too_long), ModelError,
     "weight 'w' holds 24 bytes of data; its shape \\[3\\] of float needs 12"),
    ("typed_data_too_long", lambda f: tampered(_typed_too_long), ModelError,
     "weight 'w' holds 6 values; its shape \\[3\\] needs 3"),
    ("segmented", lambda f: tampered(_segmented), ModelError, "weight 'w' is stored in segments"),
    ("unknown_data_type", lambda f: tampered(_unknown_type), ModelError, "data type 99"),
    ("invalid_utf8_name", lambda f: invalid_utf8(b"NAMEZ"), ModelError,
     "NodeProto.name is not valid UTF-8"),
    ("invalid_utf8_input", lambda f: invalid_utf8(b"INPUTZ"), ModelError, "not valid UTF-8"),
    ("constant_output", lambda f: constant_output(), ModelError,
     "graph output 'y' does not depend on the graph inputs"),
    ("unknown_input_type", lambda f: unknown_input_type(), ModelError,
     "graph input 'x' is of unknown type 99"),
    ("division_by_zero", lambda f: division_by_zero(), ModelError,
     "onnxruntime cannot evaluate the constant subgraph"),
    ("value_info_disagrees", lambda f: value_info_disagrees(), ModelError,
     "could not convert opset 16 to 17.*elem type"),
    ("empty_list_attribute", lambda f: empty_list_attribute(), ModelError,
     "node 'act' \\(Act\\): attribute 'k' is an empty list"),
    ("mixed_types", lambda f: mixed_types(), ModelError,
     "onnxruntime cannot evaluate the constant subgraph .*Concat"),
    ("external_parent", lambda f: external("../secret.bin"), ModelError, "outside the model"),
    ("external_absolute", lambda f: external(str(f.parent / "secret.bin")), ModelError,
     "outside the model"),
    ("external_symlink", lambda f: external("link.bin"), ModelError, "outside the model"),
    ("external_missing", lambda f: external("nothere.bin"), ModelError, "external data"),
]


@pytest.fixture
def folder(tmp_path):
    """A model folder next to a secret the models must never read."""
    (tmp_path / "secret.bin").write_bytes(np.full(3, 7, np.float32).tobytes())
    model_folder = tmp_path / "model"
    model_folder.mkdir()
    os.symlink(tmp_path / "secret.bin", model_folder / "link.bin")
    return model_folder


def write(folder, build) -> str:
    built = build(folder)
    path = folder / "model.onnx"
    path.write_bytes(built if isinstance(built, bytes) else built.SerializeToString())
    return str(path)


def _load(path):
    return import_graph(load_model(path))


@pytest.mark.parametrize(("name", "build", "error", "match"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_model_is_refused_by_the_front_end(folder, monkeypatch, name, build, error,
                                                   match):
    opened = []
    real_open = open

    def spy(file, *args, **kwargs):
        opened.append(os.path.realpath(file) if isinstance(file, (str, os.PathLike)) else file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    with pytest.raises(error, match=match) as caught:
        _load(write(folder, build))
    assert "\n" not in str(caught.value)
    assert str(folder.parent / "secret.bin") not in opened


def test_messages_are_one_printable_line_whatever_the_file_says(tmp_path):
    # A node name with a terminal escape and a newline, and a checker message (which is
    # several lines long in onnx): both must come out as one printable line.
    evil = make_model([helper.make_node("Add", ["x", "ghost"], ["y"], name="\x1b[2J\nboom")],
                      [value("x", ["N", 3])], [value("y", ["N", 3])])
    for model, shown in ((evil, "node '\\x1b[2J boom' (Add)"), (relu(mode=1), "mode for")):
        path = tmp_path / "m.onnx"
        onnx.save(model, path)
        with pytest.raises(SnnError) as caught:
            _load(path)
        message = str(caught.value)
        assert message.isprintable() and shown in message, repr(message)


def test_external_data_in_a_fifo_is_refused_without_blocking(folder):
    os.mkfifo(folder / "pipe.bin")  # opening it for reading would block forever
    with pytest.raises(ModelError, match="external data"):
        load_model(write(folder, lambda f: external("pipe.bin")))


def test_external_data_is_resolved_before_onnxruntime_sees_the_model(folder):
    (folder / "w.bin").write_bytes(np.full(3, 2, np.float32).tobytes())
    model = load_model(write(folder, lambda f: external("w.bin")))
    # onnxruntime resolves external data against its working folder: none may be left.
    assert not [t.name for t in frontend._all_tensors(model)
                if t.data_location == TensorProto.EXTERNAL]


# --------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "calib.npz"
    np.savez(path, x=np.zeros((4, 3), np.float32))
    return str(path)


@pytest.mark.parametrize(("name", "build", "error", "match"), HOSTILE, ids=[h[0] for h in HOSTILE])
@pytest.mark.parametrize("command", ["compile", "inspect"])
def test_hostile_model_through_the_cli(folder, calibration, command, name, build, error, match):
    path = write(folder, build)
    out = folder / "out.snn"
    args = ([path, "-o", str(out), "--calib", calibration, "-q"] if command == "compile"
            else ["inspect", path])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert lines[0].isprintable()
    assert not out.exists()
