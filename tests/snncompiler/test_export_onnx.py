"""``snnc export``: one timestep as a plain ONNX graph, run by onnxruntime for T steps, against
``SpikingNetwork.run(x, T)`` (and ``step`` for inputs that change every step).

The step graph does what the runtime does in the same precision, the neurons' firing rule
included (operation for operation, at any burst size). What may differ is the order in
which onnxruntime's conv, gemm and pool kernels add their terms: a neuron may then fire one
step earlier or later, which :func:`assert_agrees` allows for at the steps before T. Every
program here covers some of the runtime's ops; together they cover all of them (the first
test checks it).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from click.testing import CliRunner

from snncompiler.cli import main
from snncompiler.export_onnx import EMITTERS, STATE_IN, STATE_OUT, export_step, readout_names
from snncompiler.runtime import Node, Program, TensorSpec
from snncompiler.runtime.engine import SpikingNetwork
from snncompiler.runtime.format import save_program
from snncompiler.runtime.neurons import snm_step_reference
from snncompiler.runtime.opset import ANALOG_ARITY, OPS
from tests.graph_builder import GraphBuilder
from tests.runtime import programs
from tests.snncompiler.conversion import convert

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "exporters"
README = Path(__file__).resolve().parents[2] / "README.md"
TOLERANCE = 1e-3
ANALOG_DEFAULTS = {"axis": 0, "alpha": 0.0, "beta": 0.0, "bias": 0.0, "size": 1}
GEOMETRY = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}


# --------------------------------------------------------------------------- helpers


def session(model: onnx.ModelProto) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(model.SerializeToString(),
                                        providers=["CPUExecutionProvider"])


def zero_states(model: onnx.ModelProto, batch: int) -> dict[str, np.ndarray]:
    """Every state input, all zeros, as before the first step."""
    states = {}
    for value in model.graph.input:
        if value.name.startswith(STATE_IN):
            tensor = value.type.tensor_type
            shape = [batch, *(d.dim_value for d in tensor.shape.dim[1:])]
            states[value.name] = np.zeros(shape, onnx.helper.tensor_dtype_to_np_dtype(
                tensor.elem_type))
    return states


def run_steps(model: onnx.ModelProto, frames: list[dict[str, np.ndarray]]) -> dict:
    """Runs the step graph once per entry of ``frames`` (the inputs of that step), feeding
    each step's states to the next: ``{readout name: (steps, N, ...)}``."""
    runner = session(model)
    names = [output.name for output in runner.get_outputs()]
    batch = len(next(iter(frames[0].values())))
    states = zero_states(model, batch)
    readouts = {name: [] for name in names if not name.startswith(STATE_OUT)}
    for t, frame in enumerate(frames, start=1):
        results = dict(zip(names, runner.run(None, {**frame, "t": np.array(t, np.int64),
                                                   **states})))
        for name in readouts:
            readouts[name].append(results[name])
        states = {STATE_IN + name[len(STATE_OUT):]: value for name, value in results.items()
                  if name.startswith(STATE_OUT)}
    return {name: np.stack(values) for name, values in readouts.items()}


def compare(program: Program, feeds, steps: int) -> dict[str, dict[str, float]]:
    """Exports ``program`` for T = ``steps``, checks the model, runs it and the runtime for
    ``steps`` steps on ``feeds`` (constant input); asserts the agreement (see
    :func:`assert_agrees`) and returns what it measured, by output."""
    model = export_step(program, timesteps_for=steps)
    onnx.checker.check_model(model, full_check=True)
    if not isinstance(feeds, dict):
        feeds = {program.inputs[0].name: feeds}
    expected = SpikingNetwork(program).run(feeds, steps)
    if not isinstance(expected, dict):
        expected = {program.outputs[0].name: expected}
    got = run_steps(model, [feeds] * steps)
    found = {}
    for spec, name in zip(program.outputs, readout_names(program)):
        found[spec.name] = assert_agrees(got[name], expected[spec.name])
    return found


def assert_agrees(got: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """The step graph's readouts (T, N, ...) against the runtime's.

    At T, the readout ``run(x, T)`` returns: within TOLERANCE of the largest readout and the
    same top-1 class (unless the runtime's two best classes are within that tolerance, a tie
    that rounding may break) on at least 99.9% of the inputs. At the steps before T, on at
    least 99% of them: a neuron whose potential lands within rounding of its threshold may
    fire one step earlier or later in one than in the other (onnxruntime's conv adds its
    terms in another order than ours), which moves that neuron's contribution to the
    readout for a step or two; the membrane keeps what was not sent, so it does not
    accumulate.

    Returns:
        ``difference`` (largest relative difference at T), ``top1`` (agreement at T) and
        ``steps_differing`` (fraction of (step, input) pairs beyond TOLERANCE).
    """
    assert got.shape == expected.shape and got.dtype == np.float32
    scale = max(float(np.abs(expected).max()), 1e-6)
    steps, batch = got.shape[:2]
    error = np.abs(got - expected).reshape(steps, batch, -1).max(axis=-1) / scale
    within = error <= TOLERANCE
    assert within[-1].mean() >= 0.999, error[-1].max()
    assert within.mean() >= 0.99, error.max()
    flat_got = got.reshape(steps, batch, -1)
    flat = expected.reshape(steps, batch, -1)
    same = flat_got.argmax(-1) == flat.argmax(-1)
    if flat.shape[-1] > 1:
        top2 = np.sort(flat[-1], axis=-1)[:, -2:]
        tie = top2[:, 1] - top2[:, 0] <= TOLERANCE * scale
        assert (same[-1] | tie).mean() >= 0.999
    return {"difference": float(error[-1].max()), "top1": float(same[-1].mean()),
            "steps_differing": float(1 - within.mean())}


def inputs(shape, n=16, seed=1, low=None):
    rng = np.random.default_rng(seed)
    if low is not None:
        return rng.uniform(low, low + 1.0, size=(n, *shape)).astype(np.float32)
    return rng.normal(size=(n, *shape)).astype(np.float32)


# --------------------------------------------------------------------------- programs


def snm(name, src, dst, shape, theta_neg="zero", max_spikes=1, rows=1, seed=0):
    rng = np.random.default_rng(seed)
    channels = shape[0] if shape else 1
    theta = rng.uniform(0.3, 0.9, size=(rows, channels)).astype(np.float32)
    v0 = (theta * rng.uniform(0.0, 0.9, size=(rows, channels))).astype(np.float32)
    return Node(name, "snm", (src,), dst, {"theta_neg": theta_neg,
                                           "max_spikes_per_step": max_spikes},
                {"theta": theta, "v0": v0}, shape)


def gemm(name, src, dst, n_in, n_out, seed=0, lead=()):
    rng = np.random.default_rng(seed)
    return Node(name, "gemm", (src,), dst, {},
                {"weight": rng.normal(0, 0.5, (n_in, n_out)).astype(np.float32),
                 "bias": rng.normal(0, 0.1, n_out).astype(np.float32)}, (*lead, n_out))


def grouped_conv_avgpool(count_include_pad: int = 0) -> Program:
    """x (4, 9, 9) -> grouped conv (2 groups, stride 2) -> affine -> SNM (bursts of 3,
    minus_theta) -> avgpool 3x3 stride 2, pads, ceil_mode -> depthwise conv, dilation 2 ->
    SNM -> flatten -> gemm (5)."""
    rng = np.random.default_rng(3)
    return Program([TensorSpec("x", (4, 9, 9))], [TensorSpec("y", (5,))], [
        Node("conv", "conv", ("x",), "a", {**GEOMETRY, "strides": [2, 2], "group": 2},
             {"weight": rng.normal(0, 0.5, (6, 2, 3, 3)).astype(np.float32),
              "bias": rng.normal(0.2, 0.1, 6).astype(np.float32)}, (6, 5, 5)),
        Node("bn", "affine", ("a",), "b", {},
             {"scale": rng.uniform(0.5, 1.5, (6, 1, 1)).astype(np.float32),
              "shift": rng.normal(0, 0.2, (1, 1)).astype(np.float32)}, (6, 5, 5)),
        snm("n1", "b", "s", (6, 5, 5), "minus_theta", max_spikes=3),
        Node("avg", "avgpool", ("s",), "p",
             {"kernel": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1,
              "count_include_pad": count_include_pad}, {}, (6, 3, 3)),
        Node("dw", "conv", ("p",), "d", {**GEOMETRY, "pads": [2, 2, 2, 2],
                                         "dilations": [2, 2], "group": 6},
             {"weight": rng.normal(0, 0.7, (6, 1, 3, 3)).astype(np.float32),
              "bias": rng.normal(0.1, 0.1, 6).astype(np.float32)}, (6, 3, 3)),
        snm("n2", "d", "s2", (6, 3, 3), seed=1),
        Node("flat", "reshape", ("s2",), "f", {"shape": [54]}, {}, (54,)),
        gemm("fc", "f", "y", 54, 5),
    ], [8], 8)


def max_pools() -> Program:
    """x (3, 8, 8) -> SNM (bursts of 2) -> maxpool 2x2 dilation 2 -> maxpool 3x3 stride 2,
    pads, ceil_mode; plus a max pool of the static input, added -> global average pool ->
    flatten -> gemm (4)."""
    pool = {"pads": [0, 0, 0, 0], "ceil_mode": 0, "dilations": [1, 1]}
    return Program([TensorSpec("x", (3, 8, 8))], [TensorSpec("y", (4,))], [
        snm("n1", "x", "s", (3, 8, 8), max_spikes=2),
        Node("dilated", "maxpool", ("s",), "p1",
             {**pool, "kernel": [2, 2], "strides": [1, 1], "dilations": [2, 2]}, {}, (3, 6, 6)),
        Node("ceil", "maxpool", ("p1",), "p2",
             {**pool, "kernel": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
              "ceil_mode": 1}, {}, (3, 4, 4)),
        Node("static", "maxpool", ("x",), "q", {**pool, "kernel": [2, 2], "strides": [2, 2]},
             {}, (3, 4, 4)),
        Node("sum", "add", ("p2", "q"), "r", {}, {}, (3, 4, 4)),
        Node("gap", "global_avgpool", ("r",), "g", {}, {}, (3, 1, 1)),
        Node("flat", "reshape", ("g",), "f", {"shape": [3]}, {}, (3,)),
        gemm("fc", "f", "y", 3, 4),
    ], [16], 16)


def index_maps(mode: str = "constant") -> Program:
    """x (3, 4, 4) -> SNM -> concat with x -> transpose -> pad (crops too, for "constant")
    -> resize (linear rows, nearest columns) -> reduce mean -> add a (4,) vector reduced
    from x (broadcast over rows) -> SNM -> gemm on rank-2 samples [output "y" (5, 4)] ->
    reduce sum [output "z" (1, 4)]."""
    pads = [1, 0, -1, 0, 2, 1] if mode == "constant" else [1, 1, 0, 0, 2, 1]
    padded = (5, 6, 6) if mode == "constant" else (5, 7, 7)
    h, w = padded[1:]
    rows = np.zeros((8, h), np.float32)
    rows[np.arange(8), np.arange(8) * h // 8] = 0.75
    rows[np.arange(8), np.minimum(np.arange(8) * h // 8 + 1, h - 1)] += 0.25
    cols = np.eye(w, dtype=np.float32)[np.arange(4) * w // 4]
    return Program([TensorSpec("x", (3, 4, 4))],
                   [TensorSpec("y", (5, 4)), TensorSpec("z", (1, 4))], [
        snm("n1", "x", "s", (3, 4, 4), "minus_theta", max_spikes=2),
        Node("cat", "concat", ("s", "x"), "c", {"axis": 0}, {}, (6, 4, 4)),
        Node("tr", "transpose", ("c",), "t", {"perm": [1, 2, 0]}, {}, (4, 4, 6)),
        Node("pd", "pad", ("t",), "p", {"pads": pads, "mode": mode, "value": 0.5}, {}, padded),
        Node("rs", "resize", ("p",), "r", {}, {"rows": rows, "cols": cols}, (5, 8, 4)),
        Node("mean", "reduce", ("r",), "m", {"mode": "mean", "axes": [1], "keepdims": 0}, {},
             (5, 4)),
        Node("vec", "reduce", ("x",), "v", {"mode": "mean", "axes": [0, 1], "keepdims": 0},
             {}, (4,)),
        Node("plus", "add", ("m", "v"), "a", {}, {}, (5, 4)),
        snm("n2", "a", "s2", (5, 4), max_spikes=3, seed=2),
        gemm("fc", "s2", "y", 4, 4, lead=(5,)),
        Node("sum", "reduce", ("y",), "z", {"mode": "sum", "axes": [0], "keepdims": 1}, {},
             (1, 4)),
    ], [16], 16)


ANALOG_CASES = {
    "sigmoid": {}, "tanh": {}, "exp": {}, "softplus": {}, "hard_swish": {},
    "softmax": {"axis": 0}, "log_softmax": {"axis": 2}, "elu": {"alpha": 0.7},
    "selu": {"alpha": 1.67, "beta": 1.05}, "hard_sigmoid": {"alpha": 0.2, "beta": 0.5},
    "lrn": {"axis": 0, "alpha": 0.3, "beta": 0.75, "bias": 1.0, "size": 3},
    "mul": {}, "div": {},
}


def analog(function: str) -> Program:
    """x (3, 4, 4) -> SNM (bursts of 2) -> analog ``function`` [output "y"], a second input
    (x, static) for the two-input functions; and the function of the static input alone
    [output "w"], which the runtime computes once."""
    attrs = {**ANALOG_DEFAULTS, **ANALOG_CASES[function], "function": function}
    binary = ANALOG_ARITY[function] == 2
    return Program([TensorSpec("x", (3, 4, 4))],
                   [TensorSpec("y", (3, 4, 4)), TensorSpec("w", (3, 4, 4))], [
        snm("n1", "x", "s", (3, 4, 4), max_spikes=2),
        Node("g", "analog", ("s", "x") if binary else ("s",), "y", attrs, {}, (3, 4, 4)),
        Node("h", "analog", ("x", "x") if binary else ("x",), "w", attrs, {}, (3, 4, 4)),
    ], [16], 16)


PROGRAMS = {
    "conv_snm_pool_gemm": programs.conv_snm_pool_gemm,
    "minus_theta": lambda: programs.conv_snm_pool_gemm(theta_neg="minus_theta"),
    "integrate_and_fire": lambda: programs.conv_snm_pool_gemm(theta_neg="off"),
    "residual": programs.residual,
    "two_layers_into_one_conv": programs.two_layers_into_one_conv,
    "tracking_bursts": lambda: programs.mobile_block(theta_neg="minus_theta", max_spikes=3,
                                                     timesteps=(4, 16)),
    "tracking_off": lambda: programs.mobile_block(theta_neg="off"),
    "dense_tracking": lambda: programs.dense_tracking(max_spikes=2),
    "grouped_conv_avgpool": grouped_conv_avgpool,
    "avgpool_counting_pads": lambda: grouped_conv_avgpool(count_include_pad=1),
    "max_pools": max_pools,
    "index_maps": index_maps,
    "index_maps_reflect": lambda: index_maps("reflect"),
    "index_maps_edge": lambda: index_maps("edge"),
    **{f"analog_{function}": (lambda f=function: analog(f)) for function in ANALOG_CASES},
}


# --------------------------------------------------------------------------- tests


def test_every_runtime_op_has_an_emitter_and_a_program_here():
    assert set(EMITTERS) == set(OPS)
    covered = {node.op for build in PROGRAMS.values() for node in build().nodes}
    assert covered == set(OPS)
    assert set(ANALOG_CASES) == set(ANALOG_ARITY)


@pytest.mark.parametrize("steps", [4, 12])
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_step_graph_matches_the_runtime(name, steps):
    program = PROGRAMS[name]()
    shape = program.inputs[0].shape
    # Positive inputs for the analog functions: div divides by the input.
    x = inputs(shape, low=0.25) if name.startswith("analog") else inputs(shape)
    compare(program, x, steps)


def spiking_layer(theta_neg: str, max_spikes: int, theta, v0) -> Program:
    """x (C, 8) -> SNM [output: its spikes]: the neuron alone, on any input sequence."""
    theta = np.asarray(theta, np.float32).reshape(1, -1)
    node = Node("n", "snm", ("x",), "s", {"theta_neg": theta_neg,
                                          "max_spikes_per_step": max_spikes},
                {"theta": theta, "v0": np.asarray(v0, np.float32).reshape(1, -1)},
                (theta.size, 8))
    return Program([TensorSpec("x", (theta.size, 8))], [TensorSpec("s", (theta.size, 8))],
                   [node], [8], 8)


def streamed(program: Program, frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The readouts of SpikingNetwork.step and of the step graph over ``frames``."""
    net = SpikingNetwork(program)
    expected = np.stack([net.step(frame) for frame in frames])
    got = run_steps(export_step(program), [{"x": frame} for frame in frames])["readout"]
    return got, expected


@pytest.mark.parametrize("theta_neg", ["zero", "minus_theta", "off"])
@pytest.mark.parametrize("max_spikes", [1, 3])
def test_burst_closed_form_equals_the_spike_loop_on_exact_values(theta_neg, max_spikes):
    """Thresholds and inputs on a grid of 1/8: every sum is exact, potentials land on
    multiples of theta (the boundaries of the closed form) again and again, and the step
    graph must give the runtime's spikes bit for bit, streaming a different input each
    step."""
    rng = np.random.default_rng(7)
    program = spiking_layer(theta_neg, max_spikes, [0.5, 0.25, 1.0], [0.25, 0.0, 0.5])
    frames = [rng.integers(-12, 13, size=(5, 3, 8)).astype(np.float32) / 8 for _ in range(24)]
    got, expected = streamed(program, frames)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("theta_neg", ["zero", "minus_theta", "off"])
def test_bursts_within_an_ulp_of_a_multiple_of_theta_agree_bit_for_bit(theta_neg):
    """Potentials one ulp either side of ``j * theta`` for j = -40 .. 40, where a loop of
    subtractions and the rounded quotient can disagree by a spike: the step graph and the
    runtime compute the same closed form, so they agree on every spike and membrane."""
    rng = np.random.default_rng(3)
    theta = rng.uniform(0.1, 1.0, 3).astype(np.float32)
    program = spiking_layer(theta_neg, 64, theta, np.zeros(3))
    frames = []
    for _ in range(12):
        multiple = rng.integers(-40, 41, size=(4, 3, 8)).astype(np.float32) * theta[:, None]
        nudge = rng.choice(np.array([-np.inf, 0.0, np.inf], np.float32), size=multiple.shape)
        frames.append(np.nextafter(multiple, nudge).astype(np.float32))
    got, expected = streamed(program, frames)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("theta_neg", ["zero", "minus_theta"])
def test_bursts_on_random_values_match_the_reference_neuron(theta_neg):
    """Random thresholds and currents, bursts of up to 4: the same spikes as the runtime
    (no potential falls within rounding of a multiple of theta with these seeds), and
    the runtime's own readable reference agrees."""
    rng = np.random.default_rng(11)
    theta = rng.uniform(0.2, 1.0, 3).astype(np.float32)
    program = spiking_layer(theta_neg, 4, theta, theta / 3)
    frames = [rng.normal(0, 1.5, size=(6, 3, 8)).astype(np.float32) for _ in range(20)]
    got, expected = streamed(program, frames)
    np.testing.assert_array_equal(got, expected)
    membrane = np.broadcast_to((theta / 3)[:, None], (6, 3, 8)).astype(np.float32)
    memory = np.zeros((6, 3, 8), np.int64)
    total = np.zeros((6, 3, 8))
    for t, frame in enumerate(frames, start=1):
        spikes, membrane, memory = snm_step_reference(frame, membrane, memory,
                                                      theta[:, None], theta_neg, 4)
        total += spikes
        np.testing.assert_allclose(got[t - 1], total / t, rtol=1e-6, atol=1e-6)


def fixture_network(name: str, tmp_path) -> tuple[SpikingNetwork, np.ndarray]:
    """A committed exporter fixture compiled for T = 4 (bursts of 4) and 16 on 16 random
    images; 64 more to compare on."""
    model = onnx.load(FIXTURES / name)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    x = inputs(shape, n=80, seed=5)
    return convert(model, x[:16], tmp_path, timesteps=(4, 16)), x[16:]


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.onnx")))
def test_exported_fixture_networks_match_the_runtime(name, tmp_path):
    net, x = fixture_network(name, tmp_path)
    for steps in (4, 16):
        compare(net.program, x, steps)


def test_a_224_pixel_network_matches_the_runtime(tmp_path):
    """An ImageNet-sized input, few channels: conv stride 2 + BN + ReLU + MaxPool, conv +
    ReLU + AveragePool, conv + ReLU, global average pool, gemm (10)."""
    builder = GraphBuilder((3, 224, 224), np.random.default_rng(0))
    builder.conv(4, stride=2)
    builder.batchnorm()
    builder.relu()
    builder.pool("MaxPool")
    builder.conv(6, stride=2)
    builder.relu()
    builder.pool("AveragePool")
    builder.conv(8, stride=2)
    builder.relu()
    builder.global_avgpool()
    builder.flatten()
    builder.gemm(10)
    x = inputs((3, 224, 224), n=24, seed=2)
    net = convert(builder.model(), x[:8], tmp_path, timesteps=(8,))
    compare(net.program, x[8:], 8)


# --------------------------------------------------------------------------- command line


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def snn_file(tmp_path):
    path = tmp_path / "model.snn"
    save_program(programs.conv_snm_pool_gemm(timesteps=(32, 8)), path)
    return path


def test_export_writes_a_valid_onnx_step(snn_file, tmp_path):
    out = tmp_path / "step.onnx"
    result = invoke("export", snn_file, "-o", out, "--timesteps-for", 6)
    assert result.exit_code == 0, result.output
    assert "step.onnx" in result.output and "T=8" in result.output
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert {p.key: p.value for p in model.metadata_props}["snncompiler.parameters_for_T"] == "8"
    names = [value.name for value in model.graph.input]
    assert names[:2] == ["x", "t"]
    states = [name[len(STATE_IN):] for name in names[2:]]
    outputs = [value.name for value in model.graph.output]
    assert outputs == ["readout", *(STATE_OUT + name for name in states)]
    assert all(value.type.tensor_type.shape.dim[0].dim_param == "N"
               for value in [*model.graph.input[2:], *model.graph.output])


def test_export_refuses_to_overwrite_without_force(snn_file, tmp_path):
    out = tmp_path / "step.onnx"
    out.write_text("keep")
    result = invoke("export", snn_file, "-o", out)
    assert result.exit_code == 1 and "--force" in result.output
    assert out.read_text() == "keep"
    assert invoke("export", snn_file, "-o", out, "--force").exit_code == 0
    onnx.checker.check_model(onnx.load(out))


@pytest.mark.parametrize("content", [b"PK\x03\x04 not really a zip", b"\x00" * 64, b""])
def test_broken_snn_is_one_line(tmp_path, content):
    bad = tmp_path / "bad.snn"
    bad.write_bytes(content)
    result = invoke("export", bad, "-o", tmp_path / "step.onnx")
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bad.snn" in lines[0]
    assert not (tmp_path / "step.onnx").exists()


def test_truncated_snn_is_one_line(snn_file, tmp_path):
    cut = tmp_path / "cut.snn"
    cut.write_bytes(snn_file.read_bytes()[:300])
    result = invoke("export", cut, "-o", tmp_path / "step.onnx")
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1, result.output
    assert "cut.snn" in result.output


@pytest.mark.parametrize(("kind", "fragment"), [
    ("traversal", "not a .snn entry name"), ("pickle", "refusing to unpickle"),
    ("newer", "newer snncompiler"), ("bomb", "compression ratio")])
def test_hostile_snn_is_one_line(snn_file, tmp_path, monkeypatch, kind, fragment):
    """The .snn reader's refusals (tests/snncompiler/test_hostile_cli.py) reach the user as
    one line, and nothing is written."""
    from tests.snncompiler.test_hostile_cli import _hostile_snn

    monkeypatch.chdir(tmp_path)  # where the planted pickle would create PWNED
    path = tmp_path / "hostile.snn"
    path.write_bytes(_hostile_snn(snn_file.read_bytes(), kind))
    result = invoke("export", path, "-o", tmp_path / "step.onnx")
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1, result.output
    assert result.output.startswith("error: ") and fragment in result.output
    assert not (tmp_path / "step.onnx").exists() and not (tmp_path / "PWNED").exists()


def test_readme_example_runs(snn_file, tmp_path, monkeypatch):
    """The README's onnxruntime loop, on a step exported by the CLI."""
    text = README.read_text()
    section = text[text.index("### One step as ONNX"):]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    assert invoke("export", snn_file, "-o", "step.onnx", "--timesteps-for", 8).exit_code == 0
    images = inputs((1, 8, 8), n=6)
    namespace = {"images": images}
    exec(compile(code, "README.md", "exec"), namespace)
    expected = SpikingNetwork(programs.conv_snm_pool_gemm(timesteps=(32, 8))).run(images, 8)
    assert_agrees(np.stack(namespace["readouts"]), expected)
