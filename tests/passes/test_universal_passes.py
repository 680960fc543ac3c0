"""The ANN rewrites of issue 4: fold_pad, fold_batchnorm_forward, normalize_clip.

Each runs on a tiny model; onnxruntime before and after must agree, and the node list must
have changed as intended (or not at all where the rewrite would not be exact).
"""

from __future__ import annotations

import numpy as np
import pytest

from snncompiler.context import CompileConfig, CompileContext
from snncompiler.frontend import export_model, import_graph
from snncompiler.passes.fold_batchnorm_forward import fold_batchnorm_forward
from snncompiler.passes.fold_pad import fold_pad
from snncompiler.passes.normalize_clip import normalize_clip
from tests.graph_builder import GraphBuilder
from tests.onnx_models import run


def rewrite(builder: GraphBuilder, rewrite_pass):
    """(count, ops before, ops after), having checked onnxruntime agrees before and after."""
    before = builder.model()
    graph = import_graph(before)
    count = rewrite_pass(graph, CompileContext(CompileConfig(progress=False)))
    graph.cleanup().toposort()
    after = export_model(graph)
    for batch in (1, 3):
        x = np.random.default_rng(batch).normal(size=(batch, *builder.input_shape))
        x = x.astype(np.float32)
        np.testing.assert_allclose(run(after, x=x)[0], run(before, x=x)[0], rtol=1e-5,
                                   atol=1e-5)
    return count, [n.op_type for n in before.graph.node], [n.op_type for n in after.graph.node]


def ints(builder, values):
    return builder._const("i", np.asarray(values, np.int64))


def floats(builder, values):
    return builder._const("f", np.asarray(values, np.float32))


# --------------------------------------------------------------------------- fold_pad


def pad(builder, pads, *extra, **attrs):
    c, h, w = builder.shape
    out = (c + pads[1] + pads[5], h + pads[2] + pads[6], w + pads[3] + pads[7])
    builder.op("Pad", [ints(builder, pads), *extra], out, **attrs)


@pytest.mark.parametrize("conv_pad", [0, 1])
def test_zero_pad_folds_into_the_conv(conv_pad):
    builder = GraphBuilder((2, 6, 6), np.random.default_rng(0))
    pad(builder, [0, 0, 1, 0, 0, 0, 0, 2])
    builder.conv(3, stride=2, pad=conv_pad)
    count, before, after = rewrite(builder, fold_pad)
    assert count == 1 and before == ["Pad", "Conv"] and after == ["Conv"]


def test_pad_read_by_two_convs_folds_into_both():
    builder = GraphBuilder((2, 6, 6), np.random.default_rng(0))
    pad(builder, [0, 0, 1, 1, 0, 0, 1, 1])
    padded = builder.current
    first = builder.conv(2, pad=0)
    builder.op("Conv", [builder._const("w", np.ones((2, 2, 3, 3), np.float32))], src=padded)
    builder.op("Add", [first])
    count, _, after = rewrite(builder, fold_pad)
    assert count == 1 and "Pad" not in after


@pytest.mark.parametrize("case", ["nonzero value", "channel pad", "negative", "maxpool next",
                                  "reflect"])
def test_pad_that_is_not_a_conv_zero_pad_stays(case):
    builder = GraphBuilder((2, 6, 6), np.random.default_rng(0))
    if case == "nonzero value":
        pad(builder, [0, 0, 1, 1, 0, 0, 1, 1], floats(builder, 0.5))
    elif case == "channel pad":
        pad(builder, [0, 1, 1, 1, 0, 0, 1, 1])
    elif case == "negative":
        pad(builder, [0, 0, -1, 1, 0, 0, 1, 1])
    elif case == "reflect":
        pad(builder, [0, 0, 1, 1, 0, 0, 1, 1], mode="reflect")
    else:
        pad(builder, [0, 0, 1, 1, 0, 0, 1, 1])
        builder.pool("MaxPool", kernel=3, stride=1)
        count, _, after = rewrite(builder, fold_pad)
        assert count == 0 and "Pad" in after
        return
    builder.conv(3, pad=0)
    count, _, after = rewrite(builder, fold_pad)
    assert count == 0 and "Pad" in after


# --------------------------------------------------------------------------- BN forward


def relu_bn(builder, shift=True):
    """conv -> relu -> BN; with ``shift=False`` the BN only scales (B = mean = 0)."""
    builder.conv(4)
    builder.relu()
    rng = np.random.default_rng(9)
    zeros = np.zeros(4)
    params = (rng.uniform(0.5, 1.5, 4), rng.normal(0, 0.3, 4) if shift else zeros,
              rng.normal(0, 0.3, 4) if shift else zeros, rng.uniform(0.5, 2.0, 4))
    builder.op("BatchNormalization", [floats(builder, p) for p in params], epsilon=1e-5)


@pytest.mark.parametrize("pad, shift, folds", [(0, True, True), (1, True, False),
                                               (1, False, True)])
def test_bn_after_relu_folds_into_the_next_conv_only_where_exact(pad, shift, folds):
    builder = GraphBuilder((2, 6, 6), np.random.default_rng(1))
    relu_bn(builder, shift)
    builder.conv(3, pad=pad, group=1)
    count, _, after = rewrite(builder, fold_batchnorm_forward)
    assert count == int(folds)
    assert ("BatchNormalization" in after) != folds


def test_bn_folds_into_a_grouped_conv():
    builder = GraphBuilder((2, 6, 6), np.random.default_rng(2))
    relu_bn(builder)
    builder.conv(8, pad=0, group=2)
    count, _, after = rewrite(builder, fold_batchnorm_forward)
    assert count == 1 and after == ["Conv", "Relu", "Conv"]


@pytest.mark.parametrize("trans_b", [0, 1])
def test_bn_folds_into_the_next_gemm(trans_b):
    builder = GraphBuilder((2, 4, 4), np.random.default_rng(3))
    builder.conv(3)
    builder.relu()
    builder.flatten()
    builder.batchnorm()
    builder.gemm(5, trans_b=trans_b)
    count, _, after = rewrite(builder, fold_batchnorm_forward)
    assert count == 1 and "BatchNormalization" not in after


# --------------------------------------------------------------------------- clip


def clip(builder, lo, hi):
    inputs = [floats(builder, lo) if lo is not None else "",
              floats(builder, hi) if hi is not None else ""]
    builder.op("Clip", inputs)


@pytest.mark.parametrize("lo, hi, ops", [
    (0.0, 6.0, ["Conv", "Clip"]),
    (-1.0, 1.0, ["Conv", "Sub", "Clip", "Add"]),
    (0.0, None, ["Conv", "Relu"]),
    (0.5, None, ["Conv", "Sub", "Relu", "Add"]),
    (None, 0.5, ["Conv", "Sub", "Relu", "Sub"]),
    (None, None, ["Conv", "Identity"]),
])
def test_every_clip_gets_a_lower_bound_of_zero(lo, hi, ops):
    builder = GraphBuilder((2, 5, 5), np.random.default_rng(4))
    builder.conv(3)
    clip(builder, lo, hi)
    count, _, after = rewrite(builder, normalize_clip)
    assert after == ops
    assert count == int(ops != ["Conv", "Clip"])


# --------------------------------------------------------------------------- calibration


def test_clip_and_leaky_neurons_are_calibrated_on_what_they_send():
    from snncompiler.passes.calibrate_neurons import calibrate_neurons

    builder = GraphBuilder((2, 5, 5), np.random.default_rng(5))
    builder.conv(3)
    clip(builder, 0.0, 0.4)
    clip_out = builder.current
    builder.conv(3)
    builder.op("LeakyRelu", alpha=0.2)
    leaky_out = builder.current
    model = builder.model()
    x = np.random.default_rng(6).normal(size=(16, 2, 5, 5)).astype(np.float32)
    config = CompileConfig(progress=False, threshold_percentiles=(100.0,), timesteps=(8, 32))
    ctx = CompileContext(config, calibration_batches=lambda: iter([{"x": x}]))
    assert calibrate_neurons(import_graph(model), ctx) == 2
    clip_params, leaky_params = ctx.neuron_params[clip_out], ctx.neuron_params[
        leaky_out + "|abs"]
    # A Clip(0, 0.4) neuron's largest value per step (a full burst) is the bound; a leaky
    # one's is max |f(a)|.
    levels = np.array([[config.levels_per_step(t)] for t in config.timesteps])
    assert levels.ravel().tolist() == [2, 1]
    np.testing.assert_allclose(clip_params.theta * levels, 0.4, rtol=1e-6)
    outputs = run(model, x=x)[0]
    assert leaky_params.theta.shape == (2, 3)
    np.testing.assert_allclose(leaky_params.theta[0] * levels[0],
                               np.abs(outputs).max(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(leaky_params.v0, leaky_params.theta / 2, rtol=1e-6)
