"""Synaptic operations and firing rates (runtime.stats)."""

import numpy as np
import pytest

from snncompiler.runtime import InputError, SpikingNetwork
from snncompiler.runtime.stats import activity, dense_macs
from tests.runtime.programs import conv_snm_pool_gemm
from tests.runtime.test_fused import every_fused_op, inputs


def test_dense_macs_of_conv_and_gemm():
    program = conv_snm_pool_gemm()
    conv, gemm = program.node("conv"), program.node("fc")
    assert dense_macs(conv, (1, 8, 8)) == 4 * 1 * 3 * 3 * 8 * 8
    assert dense_macs(gemm, (64,)) == 64 * 5


@pytest.mark.parametrize("executor", ["fused", "nodes"])
def test_activity_of_a_run(executor):
    program = conv_snm_pool_gemm()
    net = SpikingNetwork(program, executor=executor)
    x = inputs((1, 8, 8), batch=4)
    steps = 10
    seen = []
    net.run(x, steps, observer=lambda node, value, t0: seen.append((node.name, value.data)))
    report = activity(net)
    assert (report.steps, report.images) == (steps, 4)
    assert report.ann_macs == 4 * 9 * 64 + 64 * 5
    assert report.static_macs == 4 * 9 * 64  # the first conv runs once, on the input
    # The gemm adds one weight row (5 values) per nonzero pooled input, per step.
    pooled = np.concatenate([data for name, data in seen if name == "pool"])
    expected = 5 * np.count_nonzero(pooled) / 4
    assert report.synaptic_ops == pytest.approx(expected)
    assert report.synaptic_ops_per_step() == pytest.approx(expected / steps)
    (layer,) = report.neurons()
    spikes = np.concatenate([data for name, data in seen if name == "relu"])
    assert layer.neurons == 4 * 8 * 8
    assert layer.firing_rate == pytest.approx(np.count_nonzero(spikes) / (4 * 256 * steps))
    assert [entry.kind for entry in report.layers] == ["static", "neurons", "synapses"]


def test_activity_counts_streaming_steps_and_restarts_on_reset():
    net = SpikingNetwork(every_fused_op())
    x = inputs((2, 9, 9), batch=3)
    net.select_parameters(6)  # what run(x, 6) uses
    for _ in range(6):
        net.step(x)
    streamed = activity(net)
    net.run(x, 6)
    whole = activity(net)
    assert streamed.steps == whole.steps == 6
    assert streamed.synaptic_ops == whole.synaptic_ops
    net.reset()
    with pytest.raises(InputError, match="run the network"):
        activity(net)
