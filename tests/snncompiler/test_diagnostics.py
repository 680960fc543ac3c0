"""Per-layer diagnostics: firing rates and SNN-versus-ANN error of every neuron layer."""

import numpy as np
import onnx
import pytest

from snncompiler.context import CompileConfig
from snncompiler.diagnostics import ann_activations, format_layers, layer_diagnostics
from snncompiler.npz import Dataset
from snncompiler.passes.dni import spike_output
from snncompiler.pipeline import compile_model
from snncompiler.runtime import Node, Program, TensorSpec
from snncompiler.runtime.engine import SpikingNetwork
from tests.graph_builder import GraphBuilder
from tests.onnx_models import run
from tests.snncompiler.test_evaluate import spy_on_runs


def one_neuron_layer(theta: float = 1.0, v0: float = 0.5) -> Program:
    """x (3,) -> snm -> y: each neuron sees its input as a constant current."""
    params = {"theta": np.full((2, 3), theta, np.float32), "v0": np.full((2, 3), v0, np.float32)}
    nodes = [
        Node("neuron", "snm", ("x",), "s", {"theta_neg": "zero", "max_spikes_per_step": 1},
             params, (3,)),
        Node("out", "affine", ("s",), "y", {},
             {"scale": np.ones((), np.float32), "shift": np.zeros((), np.float32)}, (3,)),
    ]
    return Program([TensorSpec("x", (3,))], [TensorSpec("y", (3,))], nodes, [4, 16], 4)


def test_constant_input_layer_matches_the_rounding_model():
    # A neuron with constant input a sends q(a) = theta/T * clip(floor(T a + v0), 0, T)
    # (dni.py), i.e. floor(T a + 1/2) spikes: rate = that / T, error = |q(a) - relu(a)|.
    x = np.array([[0.3, -0.2, 0.55], [1.4, 0.05, 0.8]], np.float32)
    net = SpikingNetwork(one_neuron_layer())
    layers = layer_diagnostics(net, x, [4, 16], ann=lambda b: {"s": np.maximum(b, 0)},
                               batch_size=1)
    (layer,) = layers
    assert layer.node == "neuron" and layer.tensor == "s" and layer.neurons == 3
    for j, t in enumerate((4, 16)):
        q = spike_output(x, 1.0, 0.5, t)
        assert layer.firing_rate[j] == pytest.approx(q.mean())  # theta = 1: value = count / T
        assert layer.mean_abs_error[j] == pytest.approx(np.abs(q - np.maximum(x, 0)).mean())
        assert layer.bias[j] == pytest.approx((q - np.maximum(x, 0)).mean())
        assert layer.relative_error[j] == pytest.approx(
            layer.mean_abs_error[j] / np.maximum(x, 0).mean())
    assert layer.ann_mean == pytest.approx(np.maximum(x, 0).mean())


def test_without_ann_only_rates_are_reported():
    x = np.array([[0.3, -0.2, 0.55]], np.float32)
    (layer,) = layer_diagnostics(SpikingNetwork(one_neuron_layer()), x, [4])
    assert layer.mean_abs_error is None and layer.relative_error is None
    assert layer.firing_rate == [pytest.approx(spike_output(x, 1.0, 0.5, 4).mean())]
    text = format_layers([layer])
    assert "neuron" in text and " - " in text


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    b = GraphBuilder((2, 6, 6), np.random.default_rng(3))
    b.conv(4)
    b.relu()
    b.conv(4)
    b.relu()
    b.flatten()
    b.gemm(3)
    model = b.model()
    path = tmp_path_factory.mktemp("diag") / "model.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(4).normal(size=(24, 2, 6, 6)).astype(np.float32)
    # One level per step (resolution 1): the levels, and so the error, then change with T.
    config = CompileConfig(timesteps=(4, 64), resolution=1, progress=False)
    program = compile_model(path, Dataset(x, None, "test"), config).program
    return model, x, SpikingNetwork(program)


def test_ann_activations_expose_the_relu_outputs(converted):
    model, x, _ = converted
    relus = [n.output[0] for n in model.graph.node if n.op_type == "Relu"]
    values = ann_activations(model, [*relus, "no_such_tensor"])(x)
    assert sorted(values) == sorted(relus)
    conv = model.graph.node[0].output[0]
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.append(onnx.helper.make_tensor_value_info(conv, 1, None))
    np.testing.assert_allclose(values[relus[0]], np.maximum(run(copy, x=x)[1], 0), atol=1e-6)


def test_error_of_a_converted_network_shrinks_with_t(converted):
    model, x, net = converted
    relus = [n.output[0] for n in model.graph.node if n.op_type == "Relu"]
    layers = layer_diagnostics(net, x, [4, 64], ann=ann_activations(model, relus), batch_size=10)
    assert [layer.tensor for layer in layers] == relus
    for layer in layers:
        assert layer.relative_error[1] < 0.5 * layer.relative_error[0]
        assert 0 < layer.firing_rate[1] <= 1
    assert "relative" in format_layers(layers)


def test_cli_eval_layers_reports_every_neuron_layer(tmp_path):
    import json

    from click.testing import CliRunner

    from snncompiler.cli import main
    from snncompiler.demo import demo_files
    from snncompiler.runtime import load

    spec, folder = demo_files()
    prep = ["--scale", str(spec["scale"]), "--mean", str(spec["mean"]), "--std", str(spec["std"])]
    out = tmp_path / "demo.snn"
    result = CliRunner().invoke(main, [
        str(folder / spec["model"]), "-o", str(out), "--calib", str(folder / spec["calibration"]),
        "-T", "4", "--calib-samples", "32", "--second-stage", "-q", *prep])
    assert result.exit_code == 0, result.output
    report = tmp_path / "eval.json"
    result = CliRunner().invoke(main, [
        "eval", str(out), "--data", str(folder / spec["test"]), "-T", "2,4", "--limit", "8",
        "--onnx", str(folder / spec["model"]), "--layers", "--json", str(report), "-q", *prep])
    assert result.exit_code == 0, result.output
    layers = json.loads(report.read_text())["layers"]
    neurons = load(out).program.neuron_nodes()
    assert [layer["node"] for layer in layers] == [n.name for n in neurons]
    assert all(layer["relative_error"] is not None for layer in layers)
    assert "relative" in result.output and layers[0]["node"] in result.output



def test_layers_are_simulated_in_batches_that_fit_the_memory_budget(converted):
    # Per sample: the network's state, and the ANN's activations and the net spike counts
    # of every neuron layer: fewer samples at once than asked, the same numbers.
    model, x, converted_net = converted
    relus = [n.output[0] for n in model.graph.node if n.op_type == "Relu"]
    ann = ann_activations(model, relus)
    program = converted_net.program
    whole = layer_diagnostics(SpikingNetwork(program), x, [4, 64], ann=ann, batch_size=24)
    net = SpikingNetwork(program)
    net.memory_budget = 3 * net.state_bytes()
    batches = spy_on_runs(net)
    parts = layer_diagnostics(net, x, [4, 64], ann=ann, batch_size=24)
    assert 1 <= max(batches) < 3 and sum(batches) == 2 * len(x)  # once per T
    for a, b in zip(parts, whole):
        assert a.firing_rate == pytest.approx(b.firing_rate, rel=1e-12)
        assert a.relative_error == pytest.approx(b.relative_error, rel=1e-12)
        assert a.bias == pytest.approx(b.bias, rel=1e-12, abs=1e-15)
