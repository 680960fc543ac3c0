"""The ops of issue 4 ("universality"), each referenced to onnxruntime.

Linear ops: lowered on the static path, the SNN equals onnxruntime at T=1 (nothing spikes,
so the runtime's own kernels compute the ANN). Neuron ops and ops mixed with neurons: the
SNN converges to onnxruntime as T grows (error shrinking roughly as 1/T).
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snncompiler.errors import InputError, UnsupportedOpError
from tests.graph_builder import GraphBuilder
from tests.snncompiler.conversion import (
    assert_converges,
    assert_static_path_matches_onnxruntime,
    convert,
)


def ints(name, values, builder):
    return builder._const(name, np.asarray(values, dtype=np.int64))


def floats(name, values, builder):
    return builder._const(name, np.asarray(values, dtype=np.float32))


def squeeze_unsqueeze(b):
    c, h, w = b.shape
    b.op("Unsqueeze", [ints("ax", [2], b)], (c, 1, h, w))
    b.op("Squeeze", [ints("ax", [-3], b)], (c, h, w))


def sum_of_three(b):
    first = b.current
    b.conv(b.shape[0])
    second = b.current
    b.conv(b.shape[0])
    b.op("Sum", [first, second, floats("k", np.full((b.shape[0], 1, 1), 0.5), b)])


def concat_channels(b):
    first, channels = b.current, b.shape[0]
    b.conv(4)
    _, h, w = b.shape
    b.op("Concat", [first], (4 + channels, h, w), axis=1)


def concat_width(b):
    first = b.current
    c, h, w = b.shape
    b.op("Concat", [first], (c, h, 2 * w), axis=-1)


def pad_before_conv(b):
    c, h, w = b.shape
    b.op("Pad", [ints("p", [0, 0, 0, 1, 0, 0, 1, 2], b)], (c, h + 1, w + 3))
    b.conv(4, kernel=3, stride=2, pad=0)


def pad_value(b, mode="constant"):
    c, h, w = b.shape
    extra = [floats("v", 0.75, b)] if mode == "constant" else []
    b.op("Pad", [ints("p", [0, 0, 1, 2, 0, 0, 2, 1], b), *extra], (c, h + 3, w + 3), mode=mode)


def pad_crop(b):
    c, h, w = b.shape
    b.op("Pad", [ints("p", [0, 1, -1, 0, 0, 0, 0, -2], b)], (c + 1, h - 1, w - 2))


def nhwc_round_trip(b):
    c, h, w = b.shape
    b.op("Transpose", (), (h, w, c), perm=[0, 2, 3, 1])
    b.op("Transpose", (), (c, w, h), perm=[0, 3, 2, 1])


def resize(b, mode="nearest", coordinate="asymmetric", nearest="floor", scales=(2.0, 2.0)):
    c, h, w = b.shape
    out = (c, int(h * scales[0]), int(w * scales[1]))
    b.op("Resize", ["", floats("s", [1, 1, *scales], b)], out, mode=mode,
         coordinate_transformation_mode=coordinate, nearest_mode=nearest)


def tile(b):
    c, h, w = b.shape
    b.op("Tile", [ints("r", [1, 1, 2, 3], b)], (c, 2 * h, 3 * w))


def reduce_mean(b):
    c, h, w = b.shape
    b.op("ReduceMean", (), (c,), axes=[2, 3], keepdims=0)


def reduce_sum_keep(b):
    c, h, w = b.shape
    b.op("ReduceSum", [ints("ax", [1, -1], b)], (1, h, 1), keepdims=1)


def softmax_at_output(b, op="Softmax"):
    b.flatten()
    b.gemm(6)
    b.op(op, axis=-1)


def sub_of_activations(b):
    first = b.current
    b.conv(b.shape[0])
    b.op("Sub", [first])


def bn_into_conv(b, pad):
    b.batchnorm()
    b.conv(4, kernel=3, pad=pad)


def bn_into_gemm(b):
    b.flatten()
    b.op("BatchNormalization", [floats("g", np.linspace(0.5, 1.5, b.shape[0]), b),
                                floats("be", np.linspace(-1, 1, b.shape[0]), b),
                                floats("m", np.linspace(-0.3, 0.3, b.shape[0]), b),
                                floats("vr", np.linspace(0.5, 2.0, b.shape[0]), b)])
    b.gemm(5)


LINEAR_CASES = {
    "squeeze_unsqueeze": squeeze_unsqueeze,
    "sum_of_three": sum_of_three,
    "concat_channels": concat_channels,
    "concat_width": concat_width,
    "pad_folded_into_conv": pad_before_conv,
    "pad_constant_value": pad_value,
    "pad_reflect": lambda b: pad_value(b, "reflect"),
    "pad_edge": lambda b: pad_value(b, "edge"),
    "pad_crop": pad_crop,
    "transpose_nhwc": nhwc_round_trip,
    "resize_nearest_asymmetric": resize,
    "resize_nearest_half_pixel_fractional": lambda b: resize(
        b, coordinate="half_pixel", nearest="round_prefer_floor", scales=(1.6, 0.75)),
    "resize_nearest_align_corners": lambda b: resize(
        b, coordinate="align_corners", nearest="round_prefer_ceil", scales=(1.3, 1.9)),
    "resize_linear_half_pixel": lambda b: resize(b, mode="linear", coordinate="half_pixel"),
    "resize_linear_pytorch_fractional": lambda b: resize(
        b, mode="linear", coordinate="pytorch_half_pixel", scales=(1.5, 0.6)),
    "resize_linear_align_corners": lambda b: resize(b, mode="linear",
                                                    coordinate="align_corners"),
    "tile": tile,
    "reduce_mean": reduce_mean,
    "reduce_sum_keepdims": reduce_sum_keep,
    "softmax_at_output": softmax_at_output,
    "log_softmax_at_output": lambda b: softmax_at_output(b, "LogSoftmax"),
    "sub_of_activations": sub_of_activations,
    "bn_into_unpadded_conv": lambda b: bn_into_conv(b, 0),
    "bn_before_padded_conv_stays_affine": lambda b: bn_into_conv(b, 1),
    "bn_into_gemm": bn_into_gemm,
}


@pytest.mark.parametrize("case", sorted(LINEAR_CASES))
def test_linear_op_matches_onnxruntime(case, tmp_path):
    assert_static_path_matches_onnxruntime(LINEAR_CASES[case], tmp_path)


def test_zero_pad_is_folded_into_the_conv(tmp_path):
    builder = GraphBuilder((3, 7, 7), np.random.default_rng(0))
    pad_before_conv(builder)
    x = np.zeros((2, 3, 7, 7), np.float32)
    program = convert(builder.model(), x, tmp_path).program
    assert [n.op for n in program.nodes] == ["conv"]
    assert program.nodes[0].attrs["pads"] == [0, 1, 1, 2]


@pytest.mark.parametrize("pad, ops", [(0, ["conv"]), (1, ["affine", "conv"])])
def test_bn_folds_forward_only_where_exact(pad, ops, tmp_path):
    builder = GraphBuilder((3, 7, 7), np.random.default_rng(0))
    bn_into_conv(builder, pad)
    x = np.zeros((2, 3, 7, 7), np.float32)
    assert [n.op for n in convert(builder.model(), x, tmp_path).program.nodes] == ops


# --------------------------------------------------------------------------- neurons


def clip_block(b, lo=0.0, hi=1.0):
    b.conv(4)
    inputs = [floats("lo", lo, b) if lo is not None else "",
              floats("hi", hi, b) if hi is not None else ""]
    b.op("Clip", inputs)


def leaky_block(b, alpha=0.1):
    b.conv(4)
    b.op("LeakyRelu", alpha=alpha)


def prelu_block(b):
    b.conv(4)
    b.op("PRelu", [floats("slope", np.linspace(-0.2, 0.4, 4).reshape(4, 1, 1), b)])


def relu_bn_conv(b):
    b.conv(4)
    b.relu()
    b.batchnorm()
    b.conv(4, pad=1)
    b.relu()


def inception(b):
    """Two branches (conv and pooled) concatenated, then resized and padded."""
    source = b.current
    c, h, w = b.shape
    b.conv(3)
    b.relu()
    left = b.current
    b.op("MaxPool", (), (c, h, w), src=source, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
         strides=[1, 1])
    b.op("Concat", [left], (c + 3, h, w), axis=1)
    b.op("Resize", ["", floats("s", [1, 1, 2, 2], b)], (c + 3, 2 * h, 2 * w), mode="nearest")
    b.op("Pad", [ints("p", [0, 0, 1, 1, 0, 0, 1, 1], b)], (c + 3, 2 * h + 2, 2 * w + 2))
    b.conv(4, pad=0, stride=2)
    b.relu()


NEURON_CASES = {
    "relu6": lambda b: clip_block(b, 0.0, 0.6),
    "hardtanh": lambda b: clip_block(b, -0.5, 0.5),
    "clip_min_only": lambda b: clip_block(b, 0.2, None),
    "clip_max_only": lambda b: clip_block(b, None, 0.3),
    "leaky_relu": leaky_block,
    "prelu": prelu_block,
    "relu_bn_conv": relu_bn_conv,
    "inception_concat_resize_pad": inception,
}


@pytest.mark.parametrize("theta_neg", ["zero", "minus_theta"])
@pytest.mark.parametrize("case", sorted(NEURON_CASES))
def test_snn_with_neuron_converges_to_onnxruntime(case, theta_neg, tmp_path):
    rng = np.random.default_rng(7)
    builder = GraphBuilder((2, 6, 6), rng)
    NEURON_CASES[case](builder)
    builder.conv(3)
    builder.relu()
    softmax_at_output(builder)
    model = builder.model()
    x = rng.normal(size=(12, 2, 6, 6)).astype(np.float32)
    assert_converges(model, x, tmp_path, (8, 32, 256), theta_neg=theta_neg)


def test_clip_neuron_is_exact_on_multiples_of_theta_over_t(tmp_path):
    """MatMul -> Clip(0, 1) -> MatMul on inputs whose activations are k / T, some above 1."""
    steps = 8
    builder = GraphBuilder((4,), np.random.default_rng(0))
    builder.op("MatMul", [builder._const("w1", np.eye(4, dtype=np.float32))], (4,))
    builder.op("Clip", [floats("lo", 0.0, builder), floats("hi", 1.0, builder)])
    w2 = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    builder.op("MatMul", [builder._const("w2", w2)], (3,))
    model = builder.model()
    levels = np.arange(-2, steps + 4) / steps  # clipped below 0 and above 1
    x = np.stack([np.roll(levels, i)[:4] for i in range(len(levels))]).astype(np.float32)
    net = convert(model, x, tmp_path, timesteps=(steps,), threshold_percentiles=(100.0,),
                  initial_potential="zero")
    assert [n.op for n in net.program.nodes][1] == "snm_clip"
    ann = np.clip(x, 0, 1) @ w2
    np.testing.assert_allclose(net.run(x, steps)[-1], ann, atol=1e-5)


def test_leaky_neuron_gets_signed_spikes_and_half_theta(tmp_path):
    builder = GraphBuilder((2, 5, 5), np.random.default_rng(0))
    leaky_block(builder, alpha=0.25)
    builder.global_avgpool()
    model = builder.model()
    x = np.random.default_rng(2).normal(size=(8, 2, 5, 5)).astype(np.float32)
    net = convert(model, x, tmp_path, timesteps=(16,))
    neuron = net.program.node(next(n.name for n in net.program.nodes if n.op == "snm_leaky"))
    np.testing.assert_allclose(neuron.arrays["slope"], 0.25)
    np.testing.assert_allclose(neuron.arrays["v0"], neuron.arrays["theta"] / 2, rtol=1e-6)


def test_leaky_neuron_refuses_theta_neg_off(tmp_path):
    builder = GraphBuilder((2, 5, 5), np.random.default_rng(0))
    leaky_block(builder)
    with pytest.raises(UnsupportedOpError, match="a leaky neuron must send negative spikes"):
        convert(builder.model(), np.ones((2, 2, 5, 5), np.float32), tmp_path, theta_neg="off")


# --------------------------------------------------------------------------- analog


def sigmoid_gate(b):
    """x * sigmoid(conv(x)): a gate, which needs --allow-analog Sigmoid,Mul."""
    gate_input = b.current
    b.conv(b.shape[0])
    b.op("Sigmoid")
    b.op("Mul", [gate_input])


def test_non_spiking_ops_are_refused_by_default_with_the_opt_in_named(tmp_path):
    builder = GraphBuilder((2, 5, 5), np.random.default_rng(0))
    builder.conv(2)
    builder.relu()
    sigmoid_gate(builder)
    x = np.ones((2, 2, 5, 5), np.float32)
    with pytest.raises(UnsupportedOpError, match=r"(?s)2 nodes.*Sigmoid has no spiking form; "
                       r"pass --allow-analog Sigmoid.*--allow-analog Mul"):
        convert(builder.model(), x, tmp_path)


def test_softmax_inside_the_network_needs_the_opt_in(tmp_path):
    builder = GraphBuilder((2, 5, 5), np.random.default_rng(0))
    builder.op("Softmax", axis=1)
    builder.conv(2)
    with pytest.raises(UnsupportedOpError, match="Softmax inside the network"):
        convert(builder.model(), np.ones((2, 2, 5, 5), np.float32), tmp_path)


def test_unknown_analog_op_is_an_input_error(tmp_path):
    builder = GraphBuilder((2, 5, 5), np.random.default_rng(0))
    builder.conv(2)
    with pytest.raises(InputError, match=r"Conv has no analog form; ops that can run.*Sigmoid"):
        convert(builder.model(), np.ones((2, 2, 5, 5), np.float32), tmp_path,
                allow_analog=("Conv",))


@pytest.mark.parametrize("gate", ["sigmoid_gate", "lrn", "tanh"])
def test_allowed_analog_ops_converge_and_are_reported(gate, tmp_path):
    rng = np.random.default_rng(3)
    builder = GraphBuilder((2, 6, 6), rng)
    builder.conv(4)
    builder.relu()
    if gate == "sigmoid_gate":
        sigmoid_gate(builder)
        allowed = ("Sigmoid", "Mul")
    elif gate == "lrn":
        builder.op("LRN", size=3, alpha=0.5, beta=0.75, bias=1.0)
        allowed = ("LRN",)
    else:
        builder.op("Tanh")
        allowed = ("Tanh",)
    builder.conv(3)
    builder.relu()
    builder.global_avgpool()
    model = builder.model()
    x = rng.normal(size=(8, 2, 6, 6)).astype(np.float32)
    net, _ = assert_converges(model, x, tmp_path, (8, 256), allow_analog=allowed)
    assert net.program.metadata["analog"]


def test_softmax_readout_is_softmax_of_the_averaged_logits(tmp_path):
    rng = np.random.default_rng(5)
    builder = GraphBuilder((2, 5, 5), rng)
    builder.conv(3)
    builder.relu()
    builder.flatten()
    builder.gemm(4)
    logits_name = builder.current
    builder.op("Softmax", axis=1)
    model = builder.model()
    x = rng.normal(size=(6, 2, 5, 5)).astype(np.float32)
    net = convert(model, x, tmp_path, timesteps=(16,))
    probabilities = net.run(x, 16)
    seen = {}
    net.run(x, 16, observer=lambda node, v, t: seen.setdefault(node.output, v.data))
    logits = np.cumsum(seen[logits_name], axis=0) / np.arange(1, 17)[:, None, None]
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(probabilities.sum(-1), 1, rtol=1e-5)


# --------------------------------------------------------------------------- property

BLOCKS = {
    "relu6": lambda b: clip_block(b, 0.0, 0.8),
    "hardtanh": lambda b: clip_block(b, -0.4, 0.4),
    "leaky": leaky_block,
    "prelu": prelu_block,
    "relu_bn_conv": relu_bn_conv,
    "concat": lambda b: (concat_channels(b), b.relu()),
    "pad_conv": lambda b: (pad_before_conv(b), b.relu()),
    "transpose": nhwc_round_trip,
    "maxpool_ceil": lambda b: b.pool("MaxPool", kernel=3, stride=2, pad=1, ceil_mode=1),
    "avgpool_exclude": lambda b: b.pool("AveragePool", kernel=3, stride=2, pad=1),
}


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks=st.lists(st.sampled_from(sorted(BLOCKS)), min_size=1, max_size=3),
       theta_neg=st.sampled_from(["zero", "minus_theta"]), seed=st.integers(0, 2**16))
def test_random_graphs_of_the_new_ops_converge(blocks, theta_neg, seed, tmp_path):
    rng = np.random.default_rng(seed)
    builder = GraphBuilder((2, 8, 8), rng)
    builder.conv(3)
    builder.relu()
    for kind in blocks:
        if builder.shape[1] >= 4 or kind not in ("maxpool_ceil", "avgpool_exclude", "pad_conv"):
            BLOCKS[kind](builder)
    builder.global_avgpool()
    builder.flatten()
    builder.gemm(4)
    model = builder.model()
    x = rng.normal(size=(12, 2, 8, 8)).astype(np.float32)
    assert_converges(model, x, tmp_path, (8, 64, 256), theta_neg=theta_neg)
