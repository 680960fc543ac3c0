"""Tiny ONNX models built with ``onnx.helper``, shared by the front-end and pass tests.

Every builder takes a seeded ``numpy.random.Generator`` so that the weights are random but
reproducible, and returns a plain ``onnx.ModelProto`` at opset 17 unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from snncompiler.frontend import ort_session

FLOAT = TensorProto.FLOAT


def value(name: str, shape: Sequence[int | str] | None, elem_type: int = FLOAT):
    """A graph input/output description."""
    return helper.make_tensor_value_info(name, elem_type, shape)


def weight(name: str, array) -> onnx.TensorProto:
    """An initializer; floats become float32 and integers int64 unless already typed."""
    array = np.asarray(array)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    elif array.dtype.kind == "i" and array.dtype != np.int64:
        array = array.astype(np.int64)
    return numpy_helper.from_array(array, name)


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
    opset: int = 17,
) -> onnx.ModelProto:
    """A model with the lowest IR version its opset needs (onnxruntime accepts it)."""
    graph = helper.make_graph(list(nodes), "test", list(inputs), list(outputs), list(initializers))
    opsets = [helper.make_opsetid("", opset)]
    return helper.make_model(
        graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)
    )


def run(model: onnx.ModelProto, **feeds: np.ndarray) -> list[np.ndarray]:
    """Runs the model on onnxruntime (optimisations off) and returns every output."""
    return ort_session(model).run(None, feeds)


def inputs_for(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def bn_weights(prefix: str, channels: int, rng: np.random.Generator) -> list[onnx.TensorProto]:
    """Scale, bias, mean and a variance kept away from 0 so folding stays well conditioned."""
    return [
        weight(f"{prefix}_scale", rng.uniform(0.5, 1.5, channels)),
        weight(f"{prefix}_bias", rng.normal(0.0, 0.5, channels)),
        weight(f"{prefix}_mean", rng.normal(0.0, 0.5, channels)),
        weight(f"{prefix}_var", rng.uniform(0.5, 2.0, channels)),
    ]


def batchnorm(x: str, y: str, prefix: str, **attrs) -> onnx.NodeProto:
    names = [f"{prefix}_{part}" for part in ("scale", "bias", "mean", "var")]
    return helper.make_node("BatchNormalization", [x, *names], [y], name=prefix, **attrs)


def conv_bn_model(
    rng: np.random.Generator,
    channels: int = 4,
    out_channels: int = 6,
    groups: int = 1,
    bias: bool = True,
    second_consumer: bool = False,
) -> onnx.ModelProto:
    """x (N, C, 5, 5) -> Conv 3x3 -> BatchNormalization -> Relu -> y.

    With ``second_consumer`` the Conv output also feeds an Add after the Relu, so the BN
    must not be folded into the Conv (the Add needs the unnormalised values).
    """
    conv_inputs = ["x", "w"] + (["b"] if bias else [])
    nodes = [
        helper.make_node("Conv", conv_inputs, ["c"], name="conv", pads=[1, 1, 1, 1], group=groups),
        batchnorm("c", "n", "bn", epsilon=1e-3),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
    ]
    if second_consumer:
        nodes.append(helper.make_node("Add", ["r", "c"], ["y"], name="add"))
    else:
        nodes[-1].output[0] = "y"
    initializers = [weight("w", rng.normal(0, 0.3, (out_channels, channels // groups, 3, 3)))]
    if bias:
        initializers.append(weight("b", rng.normal(0, 0.3, out_channels)))
    initializers += bn_weights("bn", out_channels, rng)
    return make_model(
        nodes,
        [value("x", ["N", channels, 5, 5])],
        [value("y", ["N", out_channels, 5, 5])],
        initializers,
    )


def gemm_bn_model(
    rng: np.random.Generator,
    trans_b: int = 1,
    c_shape: tuple[int, ...] | None = (6,),
    alpha: float = 1.0,
    beta: float = 1.0,
) -> onnx.ModelProto:
    """x (N, 8) -> Gemm (6 features) -> BatchNormalization -> y; ``c_shape=None``: no C."""
    b_shape = (6, 8) if trans_b else (8, 6)
    gemm_inputs = ["x", "B"] + (["C"] if c_shape is not None else [])
    nodes = [
        helper.make_node(
            "Gemm", gemm_inputs, ["g"], name="gemm", transB=trans_b, alpha=alpha, beta=beta
        ),
        batchnorm("g", "y", "bn"),
    ]
    initializers = [weight("B", rng.normal(0, 0.3, b_shape))]
    if c_shape is not None:
        initializers.append(weight("C", rng.normal(0, 0.3, c_shape)))
    initializers += bn_weights("bn", 6, rng)
    return make_model(nodes, [value("x", ["N", 8])], [value("y", ["N", 6])], initializers)


def view_flatten_model(rng: np.random.Generator) -> onnx.ModelProto:
    """x (N, 2, 4, 4) -> Conv -> Relu -> ``view(size(0), -1)`` -> Gemm -> y (N, 5).

    The flatten is spelled the way ``torch.onnx.export`` spells ``x.view(x.size(0), -1)``:
    Shape -> Gather(0) -> Unsqueeze -> Concat([-1]) -> Reshape.
    """
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Shape", ["r"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["r", "target"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], transB=1),
    ]
    initializers = [
        weight("w", rng.normal(0, 0.3, (3, 2, 3, 3))),
        weight("b", rng.normal(0, 0.3, 3)),
        weight("zero", np.array(0, dtype=np.int64)),
        weight("axes", np.array([0], dtype=np.int64)),
        weight("minus_one", np.array([-1], dtype=np.int64)),
        weight("fc_w", rng.normal(0, 0.3, (5, 48))),
        weight("fc_b", rng.normal(0, 0.3, 5)),
    ]
    return make_model(nodes, [value("x", ["N", 2, 4, 4])], [value("y", ["N", 5])], initializers)
