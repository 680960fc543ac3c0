"""DNI's second stage: initial potentials shifted so each channel's mean output is the ANN's."""

import numpy as np
import onnx
import pytest

from snncompiler.context import CompileConfig
from snncompiler.npz import Dataset
from snncompiler.passes.balance_potentials import (
    V0_MAX,
    V0_MIN,
    _first_images,
    snn_channel_means,
)
from snncompiler.passes.dni import spike_output
from snncompiler.pipeline import compile_model
from tests.graph_builder import GraphBuilder
from tests.onnx_models import run


def deep_model(seed: int = 0) -> onnx.ModelProto:
    """x (2, 8, 8) -> 3 x (conv, relu) with a max pool -> flatten -> gemm (5)."""
    b = GraphBuilder((2, 8, 8), np.random.default_rng(seed))
    b.conv(6)
    b.relu()
    b.pool("MaxPool")
    b.conv(6)
    b.relu()
    b.conv(6)
    b.relu()
    b.flatten()
    b.gemm(5)
    return b.model()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model = deep_model()
    path = tmp_path_factory.mktemp("balance") / "model.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(1).normal(size=(48, 2, 8, 8)).astype(np.float32)

    def compile_with(**options):
        config = CompileConfig(**{"timesteps": (4, 8), "progress": False, **options})
        return compile_model(path, Dataset(x, None, "test"), config)

    plain = compile_with(second_stage=False)
    balanced = compile_with(second_stage=True, second_stage_samples=32)
    return model, x, plain, balanced, compile_with


def relu_inputs(model, x):
    """The input of every Relu, by onnxruntime on ``x``: name -> (N, C, ...) array."""
    names = [n.input[0] for n in model.graph.node if n.op_type == "Relu"]
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for name in names:
        copy.graph.output.append(onnx.helper.make_tensor_value_info(name, 1, None))
    return dict(zip(names, run(copy, x=x)[1:]))


def mean_errors(program, reference, model, x, steps):
    """Sum over neuron layers and channels of |SNN mean output - E[q(a)]| on ``x``.

    ``q`` is the first stage's constant-input neuron with ``reference``'s (DNI) parameters,
    the target of the second stage (balance_potentials.target_means).
    """
    row = program.timesteps.index(steps)
    inputs = relu_inputs(model, x)
    neurons = {n.name: n for n in reference.neuron_nodes()}
    snn = snn_channel_means(program, x, steps, list(neurons))
    total = 0.0
    for name, node in neurons.items():
        a = np.moveaxis(inputs[node.inputs[0]], 1, -1)
        q = spike_output(a, node.arrays["theta"][row], node.arrays["v0"][row], steps)
        target = q.reshape(-1, q.shape[-1]).mean(axis=0)
        total += float(np.abs(snn[name] - target).sum())
    return total


def test_second_stage_brings_mean_outputs_to_the_target(setup):
    model, x, plain, balanced, _ = setup
    for steps in (4, 8):
        before = mean_errors(plain.program, plain.program, model, x[:32], steps)
        after = mean_errors(balanced.program, plain.program, model, x[:32], steps)
        assert after < 0.5 * before, (steps, before, after)


def test_only_initial_potentials_change_and_stay_in_range(setup):
    _, _, plain, balanced, _ = setup
    assert balanced.pass_counts["balance_potentials"] > 0
    changed = False
    for a, b in zip(plain.program.nodes, balanced.program.nodes):
        assert a.name == b.name and a.arrays.keys() == b.arrays.keys()
        for key in a.arrays:
            if key != "v0":
                np.testing.assert_array_equal(a.arrays[key], b.arrays[key])
        if b.op == "snm":
            theta, v0 = b.arrays["theta"], b.arrays["v0"]
            assert (v0 >= V0_MIN * theta - 1e-6).all() and (v0 <= V0_MAX * theta + 1e-6).all()
            changed |= not np.array_equal(a.arrays["v0"], v0)
    assert changed
    assert balanced.program.calibration["second_stage"] == {"samples": 32, "sweeps": 2}
    assert plain.program.calibration["second_stage"] is None
    assert any(line.startswith("second stage:") for line in balanced.report)


def test_integrate_and_fire_keeps_v0_below_theta(setup):
    *_, compile_with = setup
    result = compile_with(theta_neg="off", second_stage=True, second_stage_samples=16,
                          second_stage_sweeps=1, timesteps=(4,))
    for node in result.program.neuron_nodes():
        assert (node.arrays["v0"] < node.arrays["theta"]).all()


def test_second_stage_options_are_validated():
    assert CompileConfig().second_stage in (True, False)
    with pytest.raises(ValueError, match="second_stage_samples"):
        CompileConfig(second_stage_samples=0)


def test_first_images_cuts_the_stream():
    batches = ({"x": np.full((4, 1), i)} for i in range(5))
    cut = list(_first_images(batches, 10))
    assert [len(f["x"]) for f in cut] == [4, 4, 2]
    assert cut[-1]["x"][0, 0] == 2


def test_compiler_and_dni_share_the_threshold_grid():
    from snncompiler.passes.dni import DEFAULT_PERCENTILES

    assert CompileConfig().threshold_percentiles == DEFAULT_PERCENTILES
