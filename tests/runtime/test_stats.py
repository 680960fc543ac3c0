"""Synaptic operations and firing rates (runtime.stats)."""

from dataclasses import replace

import numpy as np
import pytest

from snncompiler.runtime import InputError, SpikingNetwork
from snncompiler.runtime.stats import (
    Activity,
    LayerActivity,
    activity,
    combine,
    dense_macs,
    spike_sources,
)
from tests.runtime.programs import conv_snm_pool_gemm, network, residual, two_layers_into_one_conv
from tests.runtime.test_fused import every_fused_op, inputs


def test_dense_macs_of_conv_and_gemm():
    program = conv_snm_pool_gemm()
    conv, gemm = program.node("conv"), program.node("fc")
    assert dense_macs(conv, (1, 8, 8)) == 4 * 1 * 3 * 3 * 8 * 8
    assert dense_macs(gemm, (64,)) == 64 * 5


@pytest.mark.parametrize("executor", ["fused", "nodes"])
def test_activity_of_a_run(executor):
    program = conv_snm_pool_gemm()
    net = network(program, executor)
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


def test_spike_sources_look_through_pools_reshapes_and_adds():
    net = SpikingNetwork(two_layers_into_one_conv())
    net.run(inputs((2, 5, 5), batch=2), 4)
    sources = {layer.name: layer.sources for layer in activity(net).layers
               if layer.kind == "synapses"}
    assert sources == {"c2": ("n1",), "c3": ("n1", "n2"), "fc": ("n3",)}
    assert spike_sources(net.program, "f") == ("n3",)
    # The static input of the first conv is no spike source.
    assert spike_sources(net.program, "x") == ()
    assert spike_sources(net.program, "a1", net.is_dynamic) == ()


def test_combine_weights_each_batch_by_its_images():
    net = SpikingNetwork(residual())
    x = inputs((3, 6, 6), batch=5)
    net.run(x, 8)
    whole = activity(net)
    assert whole.synaptic_ops > 0 and whole.mean_firing_rate() > 0
    parts = []
    for batch in (x[:2], x[2:]):
        net.run(batch, 8)
        parts.append(activity(net))
    combined = combine(parts)
    assert (combined.images, combined.steps) == (5, 8)
    assert combined.synaptic_ops == pytest.approx(whole.synaptic_ops)
    for got, want in zip(combined.layers, whole.layers):
        assert (got.name, got.kind, got.sources) == (want.name, want.kind, want.sources)
        assert got.per_image == pytest.approx(want.per_image)
        assert got.firing_rate == pytest.approx(want.firing_rate)
    assert combined.mean_firing_rate() == pytest.approx(whole.mean_firing_rate())
    net.run(x, 4)
    with pytest.raises(InputError, match="same steps"):
        combine([whole, activity(net)])
    with pytest.raises(InputError, match="no activity"):
        combine([])


def test_mean_firing_rate_weighs_layers_by_their_neurons():
    net = SpikingNetwork(conv_snm_pool_gemm())
    net.run(inputs((1, 8, 8), batch=3), 6)
    report = activity(net)
    (layer,) = report.neurons()
    assert report.mean_firing_rate() == pytest.approx(layer.firing_rate)
    # Total spikes over total neuron-steps: a small busy layer next to a big silent one.
    layers = [LayerActivity("small", "snm", "neurons", 40.0, 0, 10, 1.0),
              LayerActivity("big", "snm", "neurons", 0.0, 0, 90, 0.0),
              LayerActivity("fc", "gemm", "synapses", 123.0, 500, sources=("small",))]
    report = Activity(4, 1, layers, 123.0, 0, 500)
    assert report.mean_firing_rate() == pytest.approx(40 / (100 * 4))  # not (1 + 0) / 2
    assert Activity(4, 1, layers[2:], 123.0, 0, 500).mean_firing_rate() == 0.0


@pytest.mark.parametrize("op, attrs, arrays", [
    ("snm_clip", {"upper": 0.8}, {}),
    ("snm_leaky", {}, {"slope": np.full(4, 0.1, np.float32)}),
])
def test_clipped_and_leaky_neurons_report_their_firing_rate(op, attrs, arrays):
    program = conv_snm_pool_gemm()
    relu = program.node("relu")
    program.nodes[program.nodes.index(relu)] = replace(
        relu, op=op, attrs={**relu.attrs, **attrs}, arrays={**relu.arrays, **arrays})
    net = SpikingNetwork(program)
    seen = []
    net.run(inputs((1, 8, 8), batch=3), 12,
            observer=lambda node, value, t0: seen.append((node.name, value.data)))
    spikes = np.concatenate([data for name, data in seen if name == "relu"])
    (layer,) = activity(net).neurons()
    assert np.count_nonzero(spikes) > 0
    assert layer.op == op
    assert layer.firing_rate == pytest.approx(np.count_nonzero(spikes) / (3 * 256 * 12))


def test_bursts_count_every_spike():
    program = conv_snm_pool_gemm()
    relu = program.node("relu")
    program.nodes[program.nodes.index(relu)] = replace(
        relu, attrs={**relu.attrs, "max_spikes_per_step": 3})
    net = network(program, "nodes")
    seen = []
    net.run(inputs((1, 8, 8), batch=2) * 4, 6,
            observer=lambda node, value, t0: seen.append((node.name, value.data)))
    out = np.concatenate([data for name, data in seen if name == "relu"])
    theta = relu.arrays["theta"][0][None, None, :, None, None]
    bursts = np.rint(np.abs(out) / theta)
    assert bursts.max() > 1  # the input is strong enough for bursts
    (layer,) = activity(net).neurons()
    assert layer.per_image == pytest.approx(bursts.sum() / 2)
