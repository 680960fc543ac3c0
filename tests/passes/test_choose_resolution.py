"""Choosing the resolution per T: the fewest levels whose readout is within tolerance."""

import numpy as np
import onnx
import pytest

from snncompiler.context import CompileConfig
from snncompiler.npz import Dataset
from snncompiler.passes.balance_potentials import readout_error
from snncompiler.passes.choose_resolution import calibration_key
from snncompiler.pipeline import compile_model
from snncompiler.runtime.engine import SpikingNetwork
from tests.onnx_models import run
from tests.passes.test_balance_potentials import deep_model

TIMESTEPS = (2, 8)


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("resolution") / "model.onnx"
    model = deep_model(seed=3)
    onnx.save(model, path)
    x = np.random.default_rng(2).normal(size=(40, 2, 8, 8)).astype(np.float32)
    return path, model, x


def compile_with(model_and_data, **options):
    path, _, x = model_and_data
    config = CompileConfig(**{"timesteps": TIMESTEPS, "progress": False,
                              "second_stage": False, "second_stage_samples": 16, **options})
    return compile_model(path, Dataset(x, None, "test"), config)


def held_out_error(program, model, x, steps: int) -> float:
    """The readout error on the images the choice checks: the second half of the first 16."""
    images = x[8:16]
    snn = SpikingNetwork(program).run(images, steps, parameters_for=steps)[-1]
    reference = run(model, **{model.graph.input[0].name: images})[0]
    return float(np.sqrt(readout_error(snn.astype(np.float64), reference)))


def chosen(result) -> list[int]:
    return result.program.calibration["resolution"]


def test_a_loose_tolerance_keeps_the_fewest_levels(model_and_data):
    result = compile_with(model_and_data, output_tolerance=10.0)
    assert chosen(result) == [16, 16]
    fixed = compile_with(model_and_data, resolution=16)
    for node, same in zip(result.program.neuron_nodes(), fixed.program.neuron_nodes()):
        np.testing.assert_array_equal(node.arrays["theta"], same.arrays["theta"])
        np.testing.assert_array_equal(node.arrays["v0"], same.arrays["v0"])


def test_the_choice_is_the_fewest_levels_within_tolerance(model_and_data):
    _, model, x = model_and_data
    candidates = (2, 8, 32, 128)
    errors = {}
    for levels in candidates:
        program = compile_with(model_and_data, resolution=levels).program
        errors[levels] = [held_out_error(program, model, x, t) for t in TIMESTEPS]
    # A tolerance between the errors of 32 and 8 levels at T = 8 (bursts of 4 and of 1).
    tolerance = (errors[8][1] + errors[32][1]) / 2
    assert errors[32][1] < tolerance < errors[8][1]
    result = compile_with(model_and_data, resolution_candidates=candidates,
                          output_tolerance=tolerance)
    for row in range(len(TIMESTEPS)):
        within = [r for r in candidates if errors[r][row] <= tolerance]
        expected = within[0] if within else min(candidates, key=lambda r: errors[r][row])
        assert chosen(result)[row] == expected
        fixed = compile_with(model_and_data, resolution=expected).program
        for node, same in zip(result.program.neuron_nodes(), fixed.neuron_nodes()):
            np.testing.assert_array_equal(node.arrays["theta"][row], same.arrays["theta"][row])
    assert any("resolution (tolerance" in line for line in result.report)


def test_the_key_of_every_neuron_kind():
    class Node:
        def __init__(self, op):
            self.op, self.inputs, self.output = op, ("x",), "y"

    assert calibration_key(Node("snm")) == "x"
    assert calibration_key(Node("snm_clip")) == "y"
    assert calibration_key(Node("snm_leaky")).startswith("y")
    assert calibration_key(Node("snm_leaky")) != "y"


def test_a_model_with_two_outputs_keeps_the_fewest_levels(tmp_path):
    rng = np.random.default_rng(0)
    weights = {name: rng.normal(size=shape).astype(np.float32)
               for name, shape in (("w1", (6, 8)), ("w2", (8, 3)), ("w3", (8, 2)))}
    nodes = [onnx.helper.make_node("Gemm", ["x", "w1"], ["h"]),
             onnx.helper.make_node("Relu", ["h"], ["r"]),
             onnx.helper.make_node("Gemm", ["r", "w2"], ["y1"]),
             onnx.helper.make_node("Gemm", ["r", "w3"], ["y2"])]
    graph = onnx.helper.make_graph(
        nodes, "two_outputs",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 6])],
        [onnx.helper.make_tensor_value_info(y, onnx.TensorProto.FLOAT, ["N", n])
         for y, n in (("y1", 3), ("y2", 2))],
        [onnx.numpy_helper.from_array(w, name) for name, w in weights.items()])
    path = tmp_path / "two.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]),
              path)
    x = rng.normal(size=(20, 6)).astype(np.float32)
    result = compile_model(path, Dataset(x, None, "test"),
                           CompileConfig(timesteps=(4,), progress=False, second_stage=False,
                                         output_tolerance=1e-9))
    assert chosen(result) == [16]
    assert any("not chosen" in line for line in result.report)
