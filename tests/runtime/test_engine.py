"""The engine: chunking, streaming, readout and the exact max-pool tracker."""

import numpy as np
import pytest

from snncompiler.runtime import InputError, Node, Program, SpikingNetwork, TensorSpec, linear
from snncompiler.runtime.engine import nearest_calibrated
from snncompiler.runtime.graph import NEURON_OPS
from snncompiler.runtime.nodes import EXECUTORS
from snncompiler.runtime.opset import OPS
from tests.runtime import programs
from tests.runtime.programs import conv_snm_pool_gemm, network, residual


def inputs(shape, seed=1, batch=3):
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype(np.float32)


def test_every_op_of_the_schema_has_an_executor():
    assert set(EXECUTORS) == set(OPS)


@pytest.mark.parametrize("make", [conv_snm_pool_gemm, residual])
def test_results_do_not_depend_on_the_time_chunk(make):
    program = make()
    net = SpikingNetwork(program)
    x = inputs(program.inputs[0].shape)
    whole = net.run(x, 40, time_chunk=40)
    for chunk in (1, 3, 7):
        np.testing.assert_array_equal(net.run(x, 40, time_chunk=chunk), whole)


@pytest.mark.parametrize("make", [conv_snm_pool_gemm, residual])
def test_streaming_steps_equal_a_run(make):
    program = make()
    net = SpikingNetwork(program)
    x = inputs(program.inputs[0].shape)
    whole = net.run(x, 12)
    net.reset()
    streamed = np.stack([net.step(x) for _ in range(12)])
    np.testing.assert_allclose(streamed, whole, rtol=1e-6, atol=1e-6)
    assert net.t == 12


def test_readout_is_the_running_mean_of_the_output_current():
    program = conv_snm_pool_gemm()
    seen = []
    net = SpikingNetwork(program)
    x = inputs(program.inputs[0].shape)
    readout = net.run(x, 10, time_chunk=4,
                      observer=lambda node, value, t0: node.name == "fc" and seen.append(value))
    currents = np.concatenate([v.data for v in seen])
    expected = np.cumsum(currents, axis=0) / np.arange(1, 11)[:, None, None]
    np.testing.assert_allclose(readout, expected, rtol=1e-5, atol=1e-6)


def test_maxpool_tracker_is_exact_at_every_step():
    """The running sum of the pooled output equals max-pool of the running input."""
    program = conv_snm_pool_gemm()
    spikes, pooled = [], []

    def observe(node, value, t0):
        if node.name == "relu":
            spikes.append(value.data)
        if node.name == "pool":
            pooled.append(value.data)

    SpikingNetwork(program).run(inputs((1, 8, 8)), 25, time_chunk=6, observer=observe)
    running_in = np.cumsum(np.concatenate(spikes), axis=0)
    running_out = np.cumsum(np.concatenate(pooled), axis=0)
    for t in range(25):
        expected = linear.maxpool2d(running_in[t], [2, 2], [2, 2], [0, 0, 0, 0], [1, 1], (4, 4))
        np.testing.assert_allclose(running_out[t], expected, atol=1e-4)


def test_first_linear_segment_is_computed_once():
    calls = []
    program = conv_snm_pool_gemm()
    SpikingNetwork(program).run(inputs((1, 8, 8)), 16, time_chunk=4,
                                observer=lambda node, value, t0: calls.append(
                                    (node.name, value.dynamic)))
    assert calls.count(("conv", False)) == 1
    assert calls.count(("fc", True)) == 4  # once per chunk, after the neurons


def test_parameter_sets_are_chosen_by_nearest_t():
    assert nearest_calibrated([4, 8, 32], 8) == 1
    assert nearest_calibrated([4, 8, 32], 20) == 2  # log-nearest: 20/8 > 32/20
    assert nearest_calibrated([4, 8, 32], 1) == 0
    net = SpikingNetwork(conv_snm_pool_gemm(timesteps=(32, 4)))
    assert net.select_parameters(5) == 4


@pytest.mark.parametrize("bad", [0, -3, 2.5, "8", None])
def test_bad_timesteps_are_refused(bad):
    net = SpikingNetwork(conv_snm_pool_gemm())
    if bad is None:
        assert net.run(inputs((1, 8, 8)), bad).shape[0] == 32  # default T
        return
    with pytest.raises(InputError, match="timesteps"):
        net.run(inputs((1, 8, 8)), bad)


def test_absurd_timesteps_are_refused_before_allocating():
    net = SpikingNetwork(conv_snm_pool_gemm())
    with pytest.raises(InputError, match="GiB"):
        net.run(inputs((1, 8, 8)), 10**9)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.zeros((2, 8, 8), np.float32), "shape"),
        (np.zeros((2, 8, 8, 1), np.float32), "shape"),
        (np.zeros((0, 1, 8, 8), np.float32), "empty"),
        (np.full((2, 1, 8, 8), np.nan, np.float32), "NaN"),
        (np.zeros((2, 1, 8, 8), np.uint8), "dtype"),
    ],
)
def test_bad_inputs_are_refused_with_a_message(x, match):
    with pytest.raises(InputError, match=match):
        SpikingNetwork(conv_snm_pool_gemm()).run(x, 4)


def test_a_program_with_an_inconsistent_shape_is_refused():
    program = conv_snm_pool_gemm()
    program.nodes[2].shape = (4, 3, 3)
    with pytest.raises(Exception, match="pool"):
        SpikingNetwork(program)


def test_static_only_network_reads_out_a_constant():
    w = np.eye(3, dtype=np.float32)
    program = Program([TensorSpec("x", (3,))], [TensorSpec("y", (3,))],
                      [Node("fc", "gemm", ("x",), "y", {}, {"weight": w,
                            "bias": np.zeros(3, np.float32)}, (3,))], [8], 8)
    x = inputs((3,))
    out = SpikingNetwork(program).run(x, 5)
    np.testing.assert_allclose(out, np.broadcast_to(x, (5, *x.shape)))


@pytest.mark.parametrize("executor", ["fused", "nodes"])
@pytest.mark.parametrize("build", [programs.conv_snm_pool_gemm, programs.mobile_block])
def test_net_spikes_times_theta_is_what_each_neuron_layer_sent(build, executor):
    """A neuron sends +-theta per spike, so its summed output is theta times its net count:
    the second stage reads layer means off these counts instead of observing every step."""
    program = build()
    net = network(program, executor)
    x = np.random.default_rng(3).normal(size=(5, *program.inputs[0].shape)).astype(np.float32)
    sent = {}

    def observe(node, value, t0):
        if node.op in NEURON_OPS:
            data = value.data if value.dynamic else value.data[None]
            sent[node.name] = sent.get(node.name, 0) + data.astype(np.float64).sum(axis=0)

    net.run(x, 12, observer=observe)
    counts = net.net_spikes()
    assert set(counts) == {n.name for n in program.neuron_nodes()}
    for node in program.neuron_nodes():
        theta = node.arrays["theta"][net.parameter_row]
        channels = theta.shape[0]
        scale = theta.reshape(channels, *([1] * (len(node.shape) - 1)))
        np.testing.assert_allclose(counts[node.name] * scale, sent[node.name], rtol=1e-5,
                                   atol=1e-4)


def test_state_bytes_grows_with_the_input_and_counts_every_neuron():
    """What a caller sizes its batches by: the fused state of one sample, at least a float32
    membrane and an int32 count per SNM neuron."""
    small, large = programs.wide_input_net(size=32), programs.wide_input_net(size=64)
    neurons = sum(int(np.prod(n.shape)) for n in small.neuron_nodes())
    assert SpikingNetwork(small).state_bytes() >= 8 * neurons
    assert SpikingNetwork(large).state_bytes() > 3 * SpikingNetwork(small).state_bytes()
