"""The DNI calibration pass and the onnxruntime statistics collector behind it."""

import tracemalloc

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from snncompiler.context import CompileConfig, CompileContext
from snncompiler.errors import CalibrationError
from snncompiler.passes.calibrate_neurons import calibrate_neurons
from snncompiler.passes.calibration_stats import collect_activation_stats


def tiny_model(batch="N", height=8, infer_shapes=True) -> onnx.ModelProto:
    """x (N, 3, 8, 8) -> Conv 4x3x3x3 -> Relu -> Flatten -> Gemm 256x10 -> Relu -> y."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32) * 0.1, "b1"),
        numpy_helper.from_array(rng.normal(size=(256, 10)).astype(np.float32) * 0.1, "w2"),
        numpy_helper.from_array(rng.normal(size=10).astype(np.float32) * 0.1, "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["conv"], "conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu1"], "relu1"),
        helper.make_node("Flatten", ["relu1"], ["flat"], "flatten"),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["gemm"], "gemm"),
        helper.make_node("Relu", ["gemm"], ["y"], "relu2"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, height, height])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model) if infer_shapes else model


def batches(count: int, size: int = 4, seed: int = 1):
    """A generator of random feeds, made one at a time as calibration data would be."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield {"x": rng.normal(size=(size, 3, 8, 8)).astype(np.float32)}


def context(data=True, **config) -> CompileContext:
    config = CompileConfig(**{"timesteps": (4, 16), "progress": False, **config})
    return CompileContext(
        config,
        calibration_batches=(lambda: batches(6)) if data else None,
        calibration_size=24 if data else None,
    )


def capture_histograms(monkeypatch) -> dict:
    """A dict that receives the histograms calibrate_neurons collects (it drops them once
    it has chosen the parameters)."""
    collected = {}

    def collect(*args, **kwargs):
        collected.update(collect_activation_stats(*args, **kwargs))
        return dict(collected)

    monkeypatch.setattr("snncompiler.passes.calibrate_neurons.collect_activation_stats",
                        collect)
    return collected


@pytest.mark.parametrize("infer_shapes", [True, False])
def test_pass_fills_context_and_leaves_graph_alone(infer_shapes, monkeypatch):
    graph = gs.import_onnx(tiny_model(infer_shapes=infer_shapes))
    before = [(n.op, n.name, [t.name for t in n.inputs]) for n in graph.nodes]
    ctx = context(histogram_bins=256)
    collected = capture_histograms(monkeypatch)
    assert calibrate_neurons(graph, ctx) == 2

    assert [(n.op, n.name, [t.name for t in n.inputs]) for n in graph.nodes] == before
    assert set(ctx.neuron_params) == set(collected) == {"conv", "gemm"}
    for name, channels in (("conv", 4), ("gemm", 10)):
        params = ctx.neuron_params[name]
        assert params.theta.shape == params.v0.shape == (2, channels)
        assert params.theta.dtype == params.v0.dtype == np.float32
        assert np.all(params.theta > 0) and np.all(np.isfinite(params.theta))
        assert np.all((params.v0 >= 0) & (params.v0 < params.theta))
        assert collected[name].counts.shape == (channels, 256)
    assert collected["conv"].n_total.tolist() == [24 * 64] * 4
    assert collected["gemm"].n_total.tolist() == [24] * 10
    assert len(ctx.report) == 2 and ctx.report[0].startswith("DNI conv: 4 channels")


def test_statistics_match_onnxruntime(monkeypatch):
    # relu2's output is the graph output y = relu(gemm): its positive part is what the
    # histogram of "gemm" must have seen.
    model = tiny_model()
    collected = capture_histograms(monkeypatch)
    calibrate_neurons(gs.import_onnx(model), context())
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = np.concatenate([session.run(["y"], feed)[0] for feed in batches(6)])
    hist = collected["gemm"]
    np.testing.assert_array_equal(hist.max, y.max(axis=0))
    np.testing.assert_array_equal(hist.n_positive, (y > 0).sum(axis=0))
    np.testing.assert_allclose(hist.sum_positive, y.sum(axis=0, dtype=np.float64), rtol=1e-6)


def test_pass_needs_data_only_when_there_is_a_relu():
    with pytest.raises(CalibrationError, match=r"DNI needs calibration data: pass --calib"):
        calibrate_neurons(gs.import_onnx(tiny_model()), context(data=False))
    graph = gs.import_onnx(tiny_model())
    for node in graph.nodes:
        if node.op == "Relu":
            node.op = "Sigmoid"
    assert calibrate_neurons(graph, context(data=False)) == 0


def test_pass_uses_layer_granularity_from_the_config():
    ctx = context(granularity="layer", initial_potential="half")
    calibrate_neurons(gs.import_onnx(tiny_model()), ctx)
    params = ctx.neuron_params["conv"]
    assert np.all(params.theta == params.theta[:, :1])
    np.testing.assert_array_equal(params.v0, params.theta / 2)


def test_collector_errors_name_the_problem():
    model = tiny_model(batch=4)
    with pytest.raises(CalibrationError, match="iterator was empty"):
        collect_activation_stats(model, ["conv"], iter([]), progress=False)
    with pytest.raises(CalibrationError, match=r"missing inputs \['x'\]"):
        collect_activation_stats(model, ["conv"], [{"image": np.zeros(1)}], progress=False)
    feed = {"x": np.zeros((4, 3, 8, 8), np.float32), "mask": np.zeros(4)}
    with pytest.raises(CalibrationError, match=r"unknown inputs \['mask'\]"):
        collect_activation_stats(model, ["conv"], [feed], progress=False)
    bad = {"x": np.zeros((4, 3, 9, 9), np.float32)}
    with pytest.raises(CalibrationError, match=r"'x' has shape \[4, 3, 9, 9\], .*\[4, 3, 8, 8\]"):
        collect_activation_stats(model, ["conv"], [bad], progress=False)
    with pytest.raises(CalibrationError, match=r"no node of the model produces them"):
        collect_activation_stats(model, ["nope"], batches(1), progress=False)


def test_onnxruntime_failures_become_calibration_errors():
    # Free spatial dims pass the shape check; the Gemm then gets 4*5*5 = 100 features, not 256.
    model = tiny_model(height="H", infer_shapes=False)
    feed = {"x": np.zeros((2, 3, 5, 5), np.float32)}
    with pytest.raises(CalibrationError, match=r"onnxruntime failed on calibration batch 0"):
        collect_activation_stats(model, ["gemm"], [feed], progress=False)


def test_memory_does_not_depend_on_the_number_of_batches():
    model = tiny_model()

    def peak(count: int):
        tracemalloc.start()
        stats = collect_activation_stats(
            model, ["conv", "gemm"], batches(count, size=16), bins=64, progress=False
        )
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return stats, top

    peak(1)  # the first run allocates onnxruntime's and numpy's one-off caches
    few, few_peak = peak(5)
    many, many_peak = peak(50)
    for name in ("conv", "gemm"):
        assert many[name].counts.shape == few[name].counts.shape
    assert many["conv"].n_total[0] == 10 * few["conv"].n_total[0]
    # Ten times the data, about the same peak (batches are dropped as they are used).
    assert many_peak < 1.5 * few_peak
