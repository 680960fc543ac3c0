"""Every supported linear op: lowered on the static path, the SNN equals onnxruntime at T=1
(see ``conversion.assert_static_path_matches_onnxruntime``); unsupported ops are refused.
"""

import numpy as np
import pytest

from snncompiler.errors import UnsupportedOpError
from tests.graph_builder import GraphBuilder
from tests.snncompiler.conversion import assert_static_path_matches_onnxruntime, convert

CASES = {
    "conv": lambda b: b.conv(5, kernel=3, stride=1, pad=1),
    "conv_strided_dilated": lambda b: b.conv(4, kernel=3, stride=2, pad=2, dilation=2),
    "conv_grouped": lambda b: b.conv(6, kernel=3, group=3),
    "conv_depthwise": lambda b: b.conv(3, kernel=3, group=3),
    "conv_1x1_no_bias": lambda b: b.conv(4, kernel=1, pad=0, bias=False),
    "batchnorm_alone": lambda b: b.batchnorm(),
    "maxpool": lambda b: b.pool("MaxPool"),
    "maxpool_pad_ceil": lambda b: b.pool("MaxPool", kernel=3, stride=2, pad=1, ceil_mode=1),
    "avgpool": lambda b: b.pool("AveragePool"),
    "avgpool_pad_include": lambda b: b.pool("AveragePool", kernel=3, stride=2, pad=1,
                                            count_include_pad=1),
    "avgpool_pad_exclude_ceil": lambda b: b.pool("AveragePool", kernel=3, stride=2, pad=1,
                                                 ceil_mode=1),
    "global_avgpool": lambda b: b.global_avgpool(),
    "add_const": lambda b: b.affine_constant("Add"),
    "sub_const": lambda b: b.affine_constant("Sub"),
    "mul_const": lambda b: b.affine_constant("Mul"),
    "div_const": lambda b: b.affine_constant("Div"),
    "flatten_gemm": lambda b: (b.flatten(), b.gemm(7)),
    "flatten_gemm_untransposed": lambda b: (b.flatten(), b.gemm(7, trans_b=0)),
    "flatten_matmul_add": lambda b: (b.flatten(), b.matmul_add(6)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_linear_op_matches_onnxruntime(case, tmp_path):
    assert_static_path_matches_onnxruntime(CASES[case], tmp_path)


def test_unsupported_op_names_the_node_the_op_and_the_supported_ops(tmp_path):
    builder = GraphBuilder((3, 5, 5), np.random.default_rng(0))
    builder.conv(3)
    builder.op("Sin")  # no spiking nor analog form
    x = np.zeros((2, 3, 5, 5), np.float32)
    with pytest.raises(UnsupportedOpError, match=r"'sin\d+'.*'Sin'.*supported ops:.*Conv"):
        convert(builder.model(), x, tmp_path)


def test_every_unsupported_node_is_listed_at_once(tmp_path):
    builder = GraphBuilder((3, 5, 5), np.random.default_rng(0))
    builder.op("Sigmoid")
    builder.op("Tanh")
    with pytest.raises(UnsupportedOpError, match=r"(?s)2 nodes.*Sigmoid.*Tanh"):
        convert(builder.model(), np.zeros((2, 3, 5, 5), np.float32), tmp_path)


def test_product_of_two_activations_is_refused(tmp_path):
    builder = GraphBuilder((3, 5, 5), np.random.default_rng(0))
    first = builder.current
    builder.relu()
    builder.op("Mul", [first])
    with pytest.raises(UnsupportedOpError, match="Mul of two activations"):
        convert(builder.model(), np.ones((2, 3, 5, 5), np.float32), tmp_path)


def test_calibration_batches_shrink_on_large_inputs():
    """onnxruntime's batch during calibration keeps one call's activations within the
    engine's budget: the configured size on small inputs, fewer images on a large one."""
    from snncompiler import frontend
    from snncompiler.pipeline import calibration_batch_size

    def graph(size):
        b = GraphBuilder((3, size, size), np.random.default_rng(0))
        b.conv(16)
        b.relu()
        return frontend.import_graph(b.model())

    assert calibration_batch_size(graph(8), 64) == 64
    large = calibration_batch_size(graph(512), 64)
    assert 1 <= large < 64
    assert large * 4 * (3 + 2 * 16) * 512 * 512 <= 256 * 2**20
