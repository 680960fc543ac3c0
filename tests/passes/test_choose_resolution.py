"""Choosing the resolution per T: the fewest levels whose readout is within tolerance, more
while they are free, and only levels that leave the neurons room to catch up."""

import numpy as np
import onnx
import pytest

from snncompiler.context import CompileConfig
from snncompiler.npz import Dataset
from snncompiler.passes.balance_potentials import readout_error
from snncompiler.passes.choose_resolution import FREE_OPS, _choice, calibration_key
from snncompiler.pipeline import compile_model
from snncompiler.runtime.engine import SpikingNetwork
from snncompiler.runtime.stats import activity
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


def held_out(program, model, x, steps: int) -> tuple[float, float]:
    """The readout error and synaptic ops per image on the images the choice checks: the
    second half of the first 16."""
    images = x[8:16]
    net = SpikingNetwork(program)
    snn = net.run(images, steps, parameters_for=steps)[-1]
    reference = run(model, **{model.graph.input[0].name: images})[0]
    error = float(np.sqrt(readout_error(snn.astype(np.float64), reference)))
    return error, activity(net).synaptic_ops


def chosen(result) -> list[int]:
    return result.program.calibration["resolution"]


def expected_choice(measured: dict[int, tuple[float, float]], tolerance: float) -> int:
    """The rule of choose_resolution's docstring, on the (error, ops) of every candidate."""
    levels = sorted(measured)
    within = [r for r in levels if measured[r][0] <= tolerance]
    if not within:
        return min(levels, key=lambda r: measured[r][0])
    choice = within[0]
    for r in levels[levels.index(choice) + 1:]:
        if measured[r][0] >= measured[choice][0] or \
                measured[r][1] > (1 + FREE_OPS) * measured[within[0]][1]:
            break
        choice = r
    return choice


CANDIDATES = (2, 8, 32, 128)


@pytest.fixture(scope="module")
def measured(model_and_data):
    """Every candidate's held-out error and synaptic ops at each T, compiled on its own."""
    _, model, x = model_and_data
    found = {}
    for levels in CANDIDATES:
        program = compile_with(model_and_data, resolution=levels).program
        found[levels] = [held_out(program, model, x, t) for t in TIMESTEPS]
    return found


@pytest.mark.parametrize("tolerance", ["loose", "between", "tight"])
def test_the_choice_follows_the_rule_on_errors_and_operations_measured_apart(
        model_and_data, measured, tolerance):
    # "between": between the errors of 32 and 8 levels at T = 8 (bursts of 4 and of 1).
    value = {"loose": 10.0, "tight": 1e-9,
             "between": (measured[8][1][0] + measured[32][1][0]) / 2}[tolerance]
    if tolerance == "between":
        assert measured[32][1][0] < value < measured[8][1][0]
    result = compile_with(model_and_data, resolution_candidates=CANDIDATES,
                          output_tolerance=value)
    for row, steps in enumerate(TIMESTEPS):
        # 128 levels at T = 2 are bursts of 64: no room under the cap of 64.
        roomy = [r for r in CANDIDATES if not (steps == 2 and r == 128)]
        expected = expected_choice({r: measured[r][row] for r in roomy}, value)
        assert chosen(result)[row] == expected
        fixed = compile_with(model_and_data, resolution=expected).program
        for node, same in zip(result.program.neuron_nodes(), fixed.neuron_nodes()):
            np.testing.assert_array_equal(node.arrays["theta"][row], same.arrays["theta"][row])
            np.testing.assert_array_equal(node.arrays["v0"][row], same.arrays["v0"][row])
    line = next(line for line in result.report if line.startswith("resolution (tolerance"))
    assert "128 leave no room to catch up" in line.split("T=8:")[0]


def test_the_rule_on_made_up_measurements():
    # (readout error, synaptic ops per image), fewest levels first
    free = {16: (0.10, 100.0), 32: (0.04, 110.0), 64: (0.03, 114.0), 128: (0.02, 130.0)}
    assert _choice(free, 0.05) == 64  # better, and within 5% of 32's ops; 128 is not
    assert _choice(free, 0.5) == 16  # 32 costs 10% more
    worse = {16: (0.04, 100.0), 32: (0.045, 100.0), 64: (0.01, 100.0)}
    assert _choice(worse, 0.05) == 16  # stops at the first that does not help
    assert _choice({16: (0.3, 1.0), 32: (0.2, 9.0), 64: (0.25, 1.0)}, 0.05) == 32


def test_candidates_without_room_are_not_tried(model_and_data):
    result = compile_with(model_and_data, resolution_candidates=(2, 8, 32),
                          max_spikes_per_step=4, output_tolerance=1e-9)
    # Under a cap of 4, thresholds for bursts of 2 at most: 4 levels at T=2, 16 at T=8.
    assert chosen(result)[0] == 2 and chosen(result)[1] in (2, 8)
    line = next(line for line in result.report if line.startswith("resolution (tolerance"))
    early, late = line.split("T=8:")
    assert "8, 32 leave no room" in early and "32 leave no room" in late


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
