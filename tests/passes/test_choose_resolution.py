"""Choosing the resolution per T: the fewest levels whose readout is within tolerance, more
while they are free, and only levels that leave the neurons room to catch up; then the
layer search, which moves single layers within the same tolerance."""

import math

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snncompiler.context import CompileConfig
from snncompiler.npz import Dataset
from snncompiler.passes.balance_potentials import readout_error
from snncompiler.passes.choose_resolution import FREE_OPS, _choice, calibration_key, greedy_moves
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
    # A cap of 128, under which T=2's largest candidate leaves no room (the rule is tested
    # on both sides of it).
    config = CompileConfig(**{"timesteps": TIMESTEPS, "progress": False,
                              "second_stage": False, "second_stage_samples": 16,
                              "level_search": "network", "max_spikes_per_step": 128,
                              **options})
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
        # 128 levels at T = 2 are bursts of 64: no room under the cap of 128 (4 x 64 > 128).
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
    # Under a cap of 4, thresholds for bursts of 1 (a quarter of it): 2 levels at T=2, 8 at T=8.
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


# ----------------------------------------------------------------------------- layer search

LADDER = [4, 8, 16, 32, 64]


def separable(costs):
    """A made-up network whose layers add up: ``costs[layer][level] = (squared error, ops)``;
    the measure of a tuple of levels is (sqrt of the summed squared errors, summed ops)."""
    def measure(levels):
        return (math.sqrt(sum(costs[i][level][0] for i, level in enumerate(levels))),
                sum(costs[i][level][1] for i, level in enumerate(levels)))
    return measure


def plain_greedy(levels, state, direction, measure, keeps, gain):
    """The search without laziness: every move measured in every state."""
    while True:
        best = None
        for layer in range(len(levels)):
            rung = LADDER.index(levels[layer]) + direction
            if not 0 <= rung < len(LADDER):
                continue
            trial = levels[:layer] + (LADDER[rung],) + levels[layer + 1:]
            found = measure(trial)
            if keeps(found, state) and (best is None or gain(found, state) > best[0]):
                best = (gain(found, state), trial, found)
        if best is None:
            return levels, state
        _, levels, state = best


def coarsen_rules(tolerance):
    return dict(keeps=lambda new, old: new[0] <= tolerance and new[1] < old[1],
                gain=lambda new, old: (old[1] - new[1]) / max(new[0] ** 2 - old[0] ** 2, 1e-30))


@st.composite
def layered_costs(draw):
    layers = draw(st.integers(1, 5))
    costs = []
    for _ in range(layers):
        # Coarser levels: more squared error, fewer operations (both strictly monotone).
        errors = sorted(draw(st.lists(st.integers(0, 10_000), min_size=5, max_size=5,
                                      unique=True)), reverse=True)
        ops = sorted(draw(st.lists(st.integers(1, 10_000), min_size=5, max_size=5,
                                   unique=True)))
        costs.append({level: (e * 1e-6, float(o)) for level, e, o in zip(LADDER, errors, ops)})
    return costs


@settings(max_examples=150, deadline=None)
@given(costs=layered_costs(), tolerance=st.floats(0.001, 0.2))
def test_coarsening_stays_within_tolerance_saves_operations_and_matches_the_plain_search(
        costs, tolerance):
    measure = separable(costs)
    start_levels = (64,) * len(costs)
    start = measure(start_levels)
    rules = coarsen_rules(max(tolerance, start[0]))
    levels, state = greedy_moves(start_levels, start, LADDER, -1, measure, **rules)
    assert state == measure(levels)
    assert state[0] <= max(tolerance, start[0]) and state[1] <= start[1]
    # No single further coarsening keeps within the tolerance while saving operations.
    for layer, level in enumerate(levels):
        if level != LADDER[0]:
            trial = levels[:layer] + (LADDER[LADDER.index(level) - 1],) + levels[layer + 1:]
            assert not rules["keeps"](measure(trial), state)
    # A layer's gain does not depend on the others here, so laziness changes nothing.
    plain = plain_greedy(start_levels, start, -1, measure, **rules)
    assert plain[1] == pytest.approx(state)


def test_the_search_takes_the_cheapest_error_first_and_stops_when_the_budget_is_spent():
    # Layer 0 saves 100 ops per coarsening for little error, layer 1 saves 1 for much.
    costs = [{level: ((64 / level) ** 2 * 1e-6, 100.0 * level) for level in LADDER},
             {level: ((64 / level) ** 2 * 1e-4, 1.0 * level) for level in LADDER}]
    measure = separable(costs)
    start = (64, 64)
    levels, _ = greedy_moves(start, measure(start), LADDER, -1, measure,
                             **coarsen_rules(0.05))
    assert levels[0] < levels[1]
    calls = []

    def budgeted(trial):
        calls.append(trial)
        return measure(trial) if len(calls) <= 3 else None

    cut, state = greedy_moves(start, measure(start), LADDER, -1, budgeted, **coarsen_rules(0.05))
    assert len(calls) == 4 and state == measure(cut)


@pytest.mark.parametrize("tolerance", ["between", "tight"])
def test_the_layer_search_keeps_the_tolerance_and_saves_operations(
        model_and_data, measured, tolerance):
    value = {"tight": 1e-9, "between": (measured[8][1][0] + measured[32][1][0]) / 2}[tolerance]
    _, model, x = model_and_data
    network = compile_with(model_and_data, resolution_candidates=CANDIDATES,
                           output_tolerance=value)
    layered = compile_with(model_and_data, resolution_candidates=CANDIDATES,
                           output_tolerance=value, level_search="layer", coarse_levels=(1,))
    line = next(line for line in layered.report if line.startswith("resolution (tolerance"))
    assert line.count("per layer:") == len(TIMESTEPS)
    headers = layered.program.calibration["layers"]
    levels = [headers[calibration_key(node)]["levels"]
              for node in layered.program.neuron_nodes()]
    for row, steps in enumerate(TIMESTEPS):
        before = held_out(network.program, model, x, steps)
        after = held_out(layered.program, model, x, steps)
        if before[0] <= value:
            assert after[0] <= value and after[1] <= before[1]
        else:  # only finer levels, and only where they lower the error almost for free
            assert after[0] <= before[0] and after[1] <= (1 + FREE_OPS) * before[1]
            assert all(layer[row] >= chosen(network)[row] for layer in levels)
        # The header's levels are the parameters each layer holds at that row.
        fixed = {r: compile_with(model_and_data, resolution=r).program for r in
                 {layer[row] for layer in levels}}
        for node, layer in zip(layered.program.neuron_nodes(), levels):
            header = headers[calibration_key(node)]
            same = next(n for n in fixed[layer[row]].neuron_nodes() if n.name == node.name)
            np.testing.assert_array_equal(node.arrays["theta"][row], same.arrays["theta"][row])
            assert header["mean_theta"][row] == pytest.approx(node.arrays["theta"][row].mean())
    if tolerance == "between":  # the search moved layers apart at some T
        assert any(len({layer[row] for layer in levels}) > 1 for row in range(len(TIMESTEPS)))


def test_no_layer_search_over_its_budget(model_and_data):
    network = compile_with(model_and_data, resolution_candidates=CANDIDATES)
    skipped = compile_with(model_and_data, resolution_candidates=CANDIDATES,
                           level_search="layer", level_search_budget=0)
    line = next(line for line in skipped.report if line.startswith("resolution (tolerance"))
    assert line.count("layers not searched") == len(TIMESTEPS)
    for node, same in zip(skipped.program.neuron_nodes(), network.program.neuron_nodes()):
        np.testing.assert_array_equal(node.arrays["theta"], same.arrays["theta"])
        np.testing.assert_array_equal(node.arrays["v0"], same.arrays["v0"])
