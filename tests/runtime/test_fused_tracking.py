"""Tracking neurons (snm_clip, snm_leaky) in the fused executor: the same bits as the node
executor's ``tracking_scan``.

Both executors run the convs (group 1 and grouped) with the same kernels, the reshapes and
max pools exactly, so every neuron layer of ``mobile_block`` sees the same input bits in
both: its spikes, its counters, and every readout but the gemm's (BLAS adds in another
order in the node executor) must be equal.
"""


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snncompiler.runtime import SpikingNetwork
from snncompiler.runtime import kernels as K
from snncompiler.runtime.neuron_variants import tracking_step, tracking_step_reference
from snncompiler.runtime.neurons import THETA_NEG_CODES
from snncompiler.runtime.stats import activity
from tests.runtime.programs import (
    assert_independent_of_chunking,
    dense_tracking,
    mobile_block,
    network,
)
from tests.runtime.test_fused import inputs
from tests.without_jit import assert_same_run_without_jit

EXACT_OUTPUTS = {"s3", "s4", "pooled"}  # mobile_block's outputs that no gemm computes
NEURONS = {"n1", "n2", "n3", "n4"}


def run_both(program, x, steps, **options):
    """(readouts, counters) of the fused and of the node executor."""
    results = {}
    for executor in ("fused", "nodes"):
        net = network(program, executor)
        results[executor] = net.run(x, steps, **options), net.counters()
    return results["fused"], results["nodes"]


def rows_by_node(net):
    plan = net._fused_plan(False)
    return {name: row for name, row in zip(plan.op_nodes, plan.ops)
            if row[K.OPCODE] in (K.TRACK, K.CONV, K.GEMM, K.MAXPOOL, K.MAXPOOL_SPIKES)}


def test_programs_with_tracking_neurons_take_the_fused_executor():
    net = SpikingNetwork(mobile_block())
    rows = rows_by_node(net)
    assert {name for name, row in rows.items() if row[K.OPCODE] == K.TRACK} == NEURONS
    # The 1x1 conv reads the list n2 writes as it sends its spikes; n1 feeds a depthwise
    # conv (no list) and a max pool that tracks floats: its counts are not an SNM's.
    assert rows["pw"][K.P + 17] == rows["n2"][K.P + K.TRACK_LIST_EVENTS] >= 0
    assert rows["n1"][K.P + K.TRACK_LIST_EVENTS] < 0
    assert rows["pool"][K.OPCODE] == K.MAXPOOL
    # A channels-last layer interleaves its channels; the (6, 16) one keeps them together.
    assert rows["n1"][K.P + K.TRACK_INNER] == 1 and rows["n4"][K.P + K.TRACK_INNER] == 16
    dense = rows_by_node(SpikingNetwork(dense_tracking()))
    assert dense["fc2"][K.P + 5] == dense["n1"][K.P + K.TRACK_LIST_EVENTS] >= 0


@pytest.mark.parametrize("theta_neg", ["zero", "minus_theta", "off"])
@pytest.mark.parametrize("max_spikes", [1, 3, 64])
def test_executors_give_the_same_bits(theta_neg, max_spikes):
    program = mobile_block(theta_neg=theta_neg, max_spikes=max_spikes, timesteps=(8, 16))
    x = 2 * inputs((3, 8, 8), batch=4)
    for parameters_for in (8, 16):  # each row of calibrated parameters
        (fast, fast_counts), (slow, slow_counts) = run_both(
            program, x, 13, time_chunk=5, parameters_for=parameters_for)
        for name in EXACT_OUTPUTS:
            np.testing.assert_array_equal(fast[name], slow[name], err_msg=name)
        np.testing.assert_allclose(fast["y"], slow["y"], rtol=1e-5, atol=1e-6)
        # fc's count may differ: the two executors' global average pools round apart.
        assert set(fast_counts) == set(slow_counts) == NEURONS | {"dw", "pw", "fc"}
        for name in NEURONS | {"dw", "pw"}:
            np.testing.assert_array_equal(fast_counts[name], slow_counts[name], err_msg=name)
            assert fast_counts[name].sum() > 0, name


@pytest.mark.parametrize("max_spikes", [1, 2])
def test_a_rank_one_layer_read_by_a_gemm(max_spikes):
    program = dense_tracking(max_spikes=max_spikes)
    x = 3 * inputs((10,), batch=6)
    (fast, fast_counts), (slow, slow_counts) = run_both(program, x, 20, parameters_for=8)
    np.testing.assert_array_equal(fast["s1"], slow["s1"])
    np.testing.assert_allclose(fast["y"], slow["y"], rtol=1e-5, atol=1e-6)
    for name in ("n1", "fc2"):
        np.testing.assert_array_equal(fast_counts[name], slow_counts[name], err_msg=name)
    assert (fast["s1"] < 0).any()  # the leaky layer sends negative values


@pytest.mark.parametrize("make", [mobile_block,
                                  lambda: mobile_block(theta_neg="minus_theta", max_spikes=2),
                                  dense_tracking])
def test_results_do_not_depend_on_chunks_streaming_batch_or_threads(make):
    program = make()
    x = 2 * inputs(program.inputs[0].shape, batch=6)
    assert_independent_of_chunking(program, x)


def test_activity_counts_the_tracking_neurons_like_the_node_executor():
    program = mobile_block(max_spikes=2)
    x = 2 * inputs((3, 8, 8), batch=3)
    reports = {}
    for executor in ("fused", "nodes"):
        net = network(program, executor)
        net.run(x, 9)
        reports[executor] = activity(net)
    fused, nodes = reports["fused"], reports["nodes"]
    assert [layer.name for layer in fused.neurons()] == ["n1", "n2", "n3", "n4"]
    for mine, theirs in zip(fused.neurons(), nodes.neurons()):
        assert mine == theirs and mine.firing_rate > 0


@st.composite
def tracking_layers(draw):
    channels = draw(st.integers(1, 4))
    inner = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    floats = st.floats(0.125, 2.0, width=32)
    theta = np.array(draw(st.lists(floats, min_size=channels, max_size=channels)))
    v0 = theta * draw(st.floats(0.0, 0.99))
    slope = np.array(draw(st.lists(st.floats(-0.5, 0.5), min_size=channels,
                                   max_size=channels)))
    upper = draw(st.sampled_from([np.inf, 0.0, 0.3, 1.0, 6.0]))
    theta_neg = draw(st.sampled_from(["zero", "minus_theta", "off"]))
    steps = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    return channels, inner, groups, theta, v0, slope, upper, theta_neg, steps, seed


@settings(max_examples=60, deadline=None)
@given(tracking_layers(), st.sampled_from([1, 2, 3, 64]))
def test_the_step_kernel_is_the_reference_step(layer, max_spikes):
    channels, inner, groups, theta, v0, slope, upper, theta_neg, steps, seed = layer
    rng = np.random.default_rng(seed)
    size = groups * channels * inner
    channel = (np.arange(size) // inner) % channels  # the channel of every neuron
    running, memory = np.zeros(size), np.zeros(size, np.int32)
    ref_running, ref_memory = np.zeros(size), np.zeros(size, np.int64)
    for t in range(1, steps + 1):
        z = rng.normal(0.2, 1.5, size).astype(np.float32)
        out = np.empty(size, np.float32)
        sent = tracking_step(z, theta, v0, slope, upper, np.float64(t),
                             THETA_NEG_CODES[theta_neg], max_spikes, inner, running, memory,
                             out)
        spikes, ref_running, ref_memory = tracking_step_reference(
            z, ref_running, ref_memory, t, theta[channel], v0[channel], slope[channel], upper,
            theta_neg, max_spikes)
        np.testing.assert_array_equal(out, spikes.astype(np.float32))
        np.testing.assert_array_equal(running, ref_running)
        np.testing.assert_array_equal(memory, ref_memory)
        assert sent == int(np.abs(np.rint(spikes / theta[channel])).sum())


def test_tracking_gives_the_same_bits_without_the_jit(tmp_path):
    assert_same_run_without_jit(mobile_block(theta_neg="minus_theta", max_spikes=2),
                                ("tests.runtime.programs",
                                 "mobile_block(theta_neg='minus_theta', max_spikes=2)"),
                                2 * inputs((3, 8, 8), batch=1), 3, tmp_path)
