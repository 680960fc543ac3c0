"""The fold_batchnorm pass: BN folds into Conv/Gemm where exact and stays where not."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from snncompiler.context import CompileConfig, CompileContext
from snncompiler.errors import UnsupportedOpError
from snncompiler.frontend import export_model, import_graph
from snncompiler.passes.fold_batchnorm import fold_batchnorm
from tests.onnx_models import (
    batchnorm,
    bn_weights,
    conv_bn_model,
    gemm_bn_model,
    inputs_for,
    make_model,
    run,
    value,
    weight,
)

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def compile_ctx() -> CompileContext:
    return CompileContext(CompileConfig(progress=False))


def fold(graph: gs.Graph) -> tuple[int, onnx.ModelProto]:
    count = fold_batchnorm(graph, compile_ctx())
    graph.cleanup().toposort()
    return count, export_model(graph)


def ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def assert_same_outputs(before: onnx.ModelProto, after: onnx.ModelProto, shape) -> None:
    for batch in (1, 3):
        x = inputs_for((batch, *shape), seed=batch)
        for got, want in zip(run(after, x=x), run(before, x=x)):
            np.testing.assert_allclose(got, want, **TOLERANCE)


@pytest.mark.parametrize(("channels", "out_channels", "groups"), [(4, 6, 1), (4, 6, 2), (6, 6, 6)])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_bn_folds(channels, out_channels, groups, bias):
    model = conv_bn_model(np.random.default_rng(groups), channels, out_channels, groups, bias)
    count, folded = fold(import_graph(model))

    assert count == 1
    assert ops(folded) == ["Conv", "Relu"]
    assert len(folded.graph.node[0].input) == 3  # a bias appears where there was none
    assert_same_outputs(model, folded, (channels, 5, 5))


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (6,), (1, 6), (1,)])
def test_gemm_bn_folds(trans_b, c_shape):
    model = gemm_bn_model(np.random.default_rng(7), trans_b, c_shape, alpha=0.5, beta=2.0)
    count, folded = fold(import_graph(model))

    assert count == 1
    assert ops(folded) == ["Gemm"]
    assert_same_outputs(model, folded, (8,))


def test_bn_stays_when_the_conv_output_has_another_consumer():
    model = conv_bn_model(np.random.default_rng(1), second_consumer=True)
    count, folded = fold(import_graph(model))

    assert count == 0
    assert ops(folded) == ["Conv", "BatchNormalization", "Relu", "Add"]
    assert_same_outputs(model, folded, (4, 5, 5))


def test_bn_stays_when_the_conv_weight_is_not_constant():
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        batchnorm("c", "y", "bn"),
    ]
    model = make_model(
        nodes,
        [value("x", ["N", 2, 3, 3]), value("w", [3, 2, 1, 1])],
        [value("y", ["N", 3, 3, 3])],
        bn_weights("bn", 3, rng),
    )
    # Straight through graphsurgeon: import_graph wants every input to lead with the batch.
    count, folded = fold(gs.import_onnx(model))
    assert count == 0
    assert "BatchNormalization" in ops(folded)


def test_bn_after_a_non_linear_op_stays():
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), batchnorm("r", "y", "bn")]
    model = make_model(
        nodes, [value("x", ["N", 3, 2, 2])], [value("y", ["N", 3, 2, 2])], bn_weights("bn", 3, rng)
    )
    count, folded = fold(import_graph(model))
    assert count == 0
    assert ops(folded) == ["Relu", "BatchNormalization"]


def test_shared_weight_is_not_changed_in_place():
    # Two Convs read one weight; each BN folds into its own copy of it.
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c1"], name="conv1"),
        helper.make_node("Conv", ["x", "w"], ["c2"], name="conv2"),
        batchnorm("c1", "y1", "bn1"),
        batchnorm("c2", "y2", "bn2"),
    ]
    initializers = [weight("w", rng.normal(0, 0.3, (3, 2, 1, 1)))]
    initializers += bn_weights("bn1", 3, rng) + bn_weights("bn2", 3, rng)
    model = make_model(
        nodes,
        [value("x", ["N", 2, 3, 3])],
        [value("y1", ["N", 3, 3, 3]), value("y2", ["N", 3, 3, 3])],
        initializers,
    )
    count, folded = fold(import_graph(model))
    assert count == 2
    assert ops(folded) == ["Conv", "Conv"]
    assert_same_outputs(model, folded, (2, 3, 3))


def test_training_mode_bn_is_refused():
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        batchnorm("c", "y", "bn", training_mode=1),
    ]
    initializers = [weight("w", rng.normal(0, 0.3, (3, 2, 1, 1)))] + bn_weights("bn", 3, rng)
    model = make_model(
        nodes, [value("x", ["N", 2, 3, 3])], [value("y", ["N", 3, 3, 3])], initializers
    )
    with pytest.raises(UnsupportedOpError, match="BatchNormalization 'bn' runs in training"):
        fold_batchnorm(gs.import_onnx(model), compile_ctx())


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    groups=st.sampled_from([1, 2]),
    kernel=st.sampled_from([1, 3]),
    epsilon=st.sampled_from([1e-5, 1e-3, 0.1]),
)
def test_conv_bn_folding_law(seed, groups, kernel, epsilon):
    """conv(x; W', b') == bn(conv(x; W, b)) for random weights and statistics."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], group=groups),
        batchnorm("c", "y", "bn", epsilon=epsilon),
    ]
    initializers = [
        weight("w", rng.normal(0, 0.5, (4, 4 // groups, kernel, kernel))),
        weight("b", rng.normal(0, 0.5, 4)),
        *bn_weights("bn", 4, rng),
    ]
    out = 4 - kernel + 1
    model = make_model(
        nodes, [value("x", ["N", 4, 4, 4])], [value("y", ["N", 4, out, out])], initializers
    )
    count, folded = fold(gs.import_onnx(model))
    assert count == 1
    assert_same_outputs(model, folded, (4, 4, 4))
