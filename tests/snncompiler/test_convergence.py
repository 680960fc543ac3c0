"""The core property: on random graphs of supported ops, the SNN converges to onnxruntime.

Nothing is clipped (see ``conversion.assert_converges``): the only error left is the
discreteness of T steps, which must shrink roughly as 1/T.
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.graph_builder import GraphBuilder
from tests.snncompiler.conversion import assert_converges, convert

BLOCKS = ("conv_relu", "conv_bn_relu", "maxpool", "avgpool", "residual", "depthwise_relu",
          "affine", "conv_maxpool_relu")


def add_block(builder: GraphBuilder, kind: str, channels: int) -> None:
    c, h, _ = builder.shape
    if kind == "conv_relu":
        builder.conv(channels)
        builder.relu()
    elif kind == "conv_bn_relu":
        builder.conv(channels)
        builder.batchnorm()
        builder.relu()
    elif kind == "maxpool" and h >= 4:
        builder.pool("MaxPool")
    elif kind == "avgpool" and h >= 4:
        builder.pool("AveragePool", kernel=3, stride=2, pad=1)
    elif kind == "residual":
        builder.residual()
    elif kind == "depthwise_relu":
        builder.conv(c, group=c)
        builder.relu()
    elif kind == "affine":
        builder.affine_constant("Mul")
    elif kind == "conv_maxpool_relu" and h >= 4:
        builder.conv(channels)
        builder.pool("MaxPool")
        builder.relu()


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    blocks=st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=4),
    channels=st.integers(2, 6),
    tail=st.sampled_from(["gap_gemm", "flatten_gemm", "flatten_relu_gemm"]),
    theta_neg=st.sampled_from(["zero", "minus_theta"]),
    seed=st.integers(0, 2**16),
)
def test_snn_converges_to_onnxruntime_as_t_grows(blocks, channels, tail, theta_neg, seed,
                                                 tmp_path):
    rng = np.random.default_rng(seed)
    builder = GraphBuilder((2, 8, 8), rng)
    builder.conv(channels)
    builder.relu()
    for kind in blocks:
        add_block(builder, kind, channels)
    if tail == "gap_gemm":
        builder.global_avgpool()
        builder.flatten()
        builder.gemm(5)
    else:
        builder.flatten()
        if tail == "flatten_relu_gemm":
            builder.gemm(8)
            builder.relu()
        builder.gemm(5)
    model = builder.model()
    x = rng.normal(size=(16, 2, 8, 8)).astype(np.float32)
    _, errors = assert_converges(model, x, tmp_path, (8, 64, 512), theta_neg=theta_neg)
    assert errors[512] < 0.5 * errors[64] + 0.01, errors


def test_conversion_is_exact_when_activations_are_multiples_of_theta_over_t(tmp_path):
    """Gemm -> Relu -> Gemm on inputs whose pre-activations are k * theta / T exactly."""
    steps = 8
    w1 = np.eye(4, dtype=np.float32)
    w2 = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    builder = GraphBuilder((4,), np.random.default_rng(0))
    builder.op("MatMul", [builder._const("w1", w1)], (4,))
    builder.relu()
    builder.op("MatMul", [builder._const("w2", w2)], (3,))
    model = builder.model()
    # Per channel the max is 1 (theta = 1) and every value is a multiple of 1/8.
    levels = np.arange(0, steps + 1) / steps
    x = np.stack([np.roll(levels, i)[:4] for i in range(steps + 1)]).astype(np.float32)
    x[0] = 1.0
    net = convert(model, x, tmp_path, timesteps=(steps,))
    ann = np.maximum(x @ w1, 0) @ w2
    np.testing.assert_allclose(net.run(x, steps)[-1], ann, atol=1e-5)
