"""evaluate(): accuracy per T, and the work per image read off the same runs."""

import json

import numba
import numpy as np
import pytest

from snncompiler.diagnostics import layer_diagnostics
from snncompiler.errors import InputError
from snncompiler.evaluate import (
    evaluate,
    format_activity,
    format_table,
    layer_rows,
    parse_timesteps,
    si,
    simulation_batch,
)
from snncompiler.npz import Dataset
from snncompiler.runtime.engine import SpikingNetwork
from snncompiler.runtime.stats import activity
from tests.runtime.programs import conv_snm_pool_gemm, network, residual, two_layers_into_one_conv
from tests.runtime.test_fused import every_fused_op, inputs


def dataset(shape, n=5, classes=4, seed=0) -> Dataset:
    x = inputs(shape, batch=n, seed=seed)
    return Dataset(x, np.arange(n) % classes, "test.npz")


def observe(net, x, steps, parameters_for) -> dict[str, np.ndarray]:
    """Every dynamic tensor of a run, (T, N, ...), by name."""
    seen = {}

    def keep(node, value, t0):
        if value.dynamic:
            seen.setdefault(node.output, []).append(value.data)

    net.run(x, steps, parameters_for=parameters_for, observer=keep)
    return {name: np.concatenate(parts) for name, parts in seen.items()}


def reach(size: int, kernel: int = 3, pad: int = 1) -> np.ndarray:
    """Outputs of a stride-1 conv that input position i reaches along one axis."""
    return np.array([sum(0 <= i + pad - k < size for k in range(kernel)) for i in range(size)])


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text", ["4,,8", "0", "abc", "", ",", "4,", "-3", "+5", "1e3",
                                  "\u0663", "1_000", "2147483648"])
def test_timesteps_are_parsed_strictly(text):
    with pytest.raises(InputError, match="-T"):
        parse_timesteps(text)


def test_timesteps_keep_order_and_drop_repeats():
    assert parse_timesteps(" 8, 4,8 ,16") == [8, 4, 16]
    assert parse_timesteps("2147483647") == [2**31 - 1]


# --------------------------------------------------------------------------- work


@pytest.mark.parametrize("executor", ["fused", "nodes"])
def test_synaptic_ops_are_the_additions_counted_by_hand_from_the_spikes(executor):
    # residual(): x -> c1 -> n1 -> c2 -> add(skip) -> n2 -> gap -> fc, calibrated for T=32
    # only, so T = 3 and 10 share one run of 10 steps (counted at T = 10 only).
    program = residual()
    data = dataset((3, 6, 6), n=5)
    result = evaluate(network(program, executor), data, [3, 10],
                      batch_size=2, progress=False)
    assert result.synaptic_ops[0] is None and result.mean_firing_rate[0] is None

    # By hand, batch by batch as evaluate runs them: c2 adds a row of 3 weights per spike of
    # n1 and kernel tap that lands on an output (3x3, pad 1, 6x6: 2, 3, 3, 3, 3, 2 per
    # axis); fc adds a row of 4 per nonzero pooled input; a spike is a nonzero output of
    # a neuron (max_spikes_per_step = 1).
    taps = np.outer(reach(6), reach(6))
    c2 = fc = s1 = s2 = 0
    for first in range(0, 5, 2):
        seen = observe(SpikingNetwork(program), data.x[first:first + 2], 10, 32)
        c2 += 3 * ((seen["s1"] != 0) * taps).sum()
        fc += 4 * np.count_nonzero(seen["f"])
        s1 += np.count_nonzero(seen["s1"])
        s2 += np.count_nonzero(seen["s2"])
    assert c2 > 0 and fc > 0 and s1 > 0 and s2 > 0
    assert result.synaptic_ops[1] == pytest.approx((c2 + fc) / 5)
    assert result.mean_firing_rate[1] == pytest.approx((s1 + s2) / (5 * 10 * 2 * 108))
    # One ANN pass: two 3x3 convs of 3 -> 3 channels on 6x6, and a 3 -> 4 gemm.
    conv_macs = 3 * 3 * 3 * 3 * 6 * 6
    assert result.ann_macs == 2 * conv_macs + 3 * 4
    assert result.static_macs == conv_macs  # c1 reads the input: once per image
    assert result.synaptic_ops_per_ann_mac[1] == pytest.approx(
        result.synaptic_ops[1] / (result.ann_macs * 10))
    assert result.layer_activity_timesteps == 10
    n1, n2 = result.layer_activity
    assert (n1["layer"], n1["neurons"], n1["into"]) == ("n1", 108, ["c2"])
    assert (n2["layer"], n2["neurons"], n2["into"]) == ("n2", 108, ["fc"])
    assert n1["synaptic_ops"] == pytest.approx(c2 / 5)
    assert n2["synaptic_ops"] == pytest.approx(fc / 5)
    assert n1["firing_rate"] == pytest.approx(s1 / (5 * 10 * 108))
    assert n2["spikes"] == pytest.approx(s2 / 5)


def test_each_parameter_set_is_counted_at_its_own_largest_t():
    program = conv_snm_pool_gemm(timesteps=(10, 4))
    data = dataset((1, 8, 8), n=3)
    result = evaluate(SpikingNetwork(program), data, [3, 4, 10], progress=False)
    assert result.parameters_for == [4, 4, 10]
    assert result.synaptic_ops[0] is None
    for i, (steps, row) in enumerate([(4, 4), (10, 10)], start=1):
        # The gemm adds a row of 5 weights per nonzero pooled input (the conv is static).
        pooled = observe(SpikingNetwork(program), data.x, steps, row)["p"]
        assert result.synaptic_ops[i] == pytest.approx(5 * np.count_nonzero(pooled) / 3)
    assert result.ann_macs == 4 * 9 * 64 + 64 * 5 and result.static_macs == 4 * 9 * 64


def test_layer_rows_give_mixed_inputs_a_row_of_their_own():
    net = SpikingNetwork(two_layers_into_one_conv())
    net.run(inputs((2, 5, 5), batch=3), 7)
    report = activity(net)
    rows = layer_rows(report)
    assert [(r["layer"], r["into"]) for r in rows] == [
        ("n1", ["c2"]), ("n2", []), ("n1 + n2", ["c3"]), ("n3", ["fc"])]
    assert rows[1]["synaptic_ops"] is None and rows[2]["firing_rate"] is None
    # Every synaptic operation is in exactly one row.
    assert sum(r["synaptic_ops"] or 0 for r in rows) == pytest.approx(report.synaptic_ops)


def test_layer_firing_rates_agree_with_the_diagnostics():
    program = residual()
    x = inputs((3, 6, 6), batch=4, seed=2)
    result = evaluate(SpikingNetwork(program), Dataset(x, None, "x"), [12], progress=False)
    found = layer_diagnostics(SpikingNetwork(program), x, [12])
    assert [r["layer"] for r in result.layer_activity] == [d.node for d in found]
    for row, layer in zip(result.layer_activity, found):
        assert row["firing_rate"] == pytest.approx(layer.firing_rate[0])


def test_json_and_text_carry_the_work():
    result = evaluate(SpikingNetwork(conv_snm_pool_gemm(timesteps=(10, 4))),
                      dataset((1, 8, 8), n=3), [2, 4, 10], progress=False)
    data = json.loads(json.dumps(result.to_json()))
    assert set(data) >= {"timesteps", "snn_accuracy", "agreement", "ann_accuracy", "n",
                         "seconds", "parameters_for", "ann_macs", "static_macs",
                         "synaptic_ops", "synaptic_ops_per_ann_mac", "mean_firing_rate",
                         "layer_activity_timesteps", "layer_activity"}
    assert data["synaptic_ops"][0] is None and data["layer_activity"][0]["layer"] == "relu"
    text = format_activity(result)
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["T", "synaptic"])
    # Rows for T = 4 and 10 (T = 2 shares the run of T = 4), aligned under the header.
    rows = lines[header + 2:header + 4]
    assert [row.split()[0] for row in rows] == ["4", "10"]
    assert len({len(line) for line in lines[header:header + 4]}) == 1
    assert "counted with it" in text and "per layer at T=10" in text
    assert "relu" in text and "fc" in text
    # The accuracy table is unchanged by the work fields.
    assert format_table(result).splitlines()[0].split() == [
        "T", "SNN", "acc", "agreement", "ANN", "acc", "params", "for", "T"]


def test_activation_sparsity_is_the_fraction_of_zero_neuron_outputs():
    """NeuroBench's ActivationSparsity, counted from the spikes: zero outputs of the neuron
    layers over all neurons, steps and images; None where bursts make it differ from
    1 - firing rate."""
    program = conv_snm_pool_gemm(timesteps=(10, 4))
    data = dataset((1, 8, 8), n=3)
    result = evaluate(SpikingNetwork(program), data, [3, 4, 10], progress=False)
    assert result.activation_sparsity[0] is None
    for i, (steps, row) in enumerate([(4, 4), (10, 10)], start=1):
        spikes = observe(SpikingNetwork(program), data.x, steps, row)["s"]
        assert result.activation_sparsity[i] == pytest.approx(1 - np.count_nonzero(spikes)
                                                              / spikes.size)
        assert result.activation_sparsity[i] == pytest.approx(
            1 - result.mean_firing_rate[i])
    program.nodes[1].attrs["max_spikes_per_step"] = 2
    bursts = evaluate(SpikingNetwork(program), data, [4], progress=False)
    assert bursts.activation_sparsity is None and bursts.mean_firing_rate[0] is not None


@pytest.mark.parametrize(("value", "text"), [
    (0, "0"), (512, "512"), (1234, "1.23 k"), (999_999.9, "1 M"), (8.43e6, "8.43 M"),
    (61_900_000, "61.9 M"), (2.5e9, "2.5 G")])
def test_counts_are_shown_with_three_digits(value, text):
    assert si(value) == text


def test_an_empty_dataset_is_refused():
    empty = Dataset(np.zeros((0, 1, 8, 8), np.float32), None, "empty.npz")
    with pytest.raises(InputError, match="no samples"):
        evaluate(SpikingNetwork(conv_snm_pool_gemm()), empty, [4], progress=False)


def test_a_conv_fed_by_another_conv_gets_a_row_named_after_it():
    # every_fused_op(): n1 -> pool -> c2 -> affine -> add -> avgpool -> fc: fc's input comes
    # from c2, not from a neuron layer.
    net = SpikingNetwork(every_fused_op())
    net.run(inputs((2, 9, 9), batch=2), 5)
    rows = layer_rows(activity(net))
    assert [(r["layer"], r["into"]) for r in rows] == [("n1", ["c2"]), ("c2", ["fc"])]
    assert rows[1]["neurons"] is None and rows[1]["synaptic_ops"] > 0


# --------------------------------------------------------------------------- memory


def spy_on_runs(net) -> list[int]:
    """The batch of every ``net.run`` from now on."""
    batches = []
    run = net.run

    def spy(x, *args, **kwargs):
        batches.append(len(x))
        return run(x, *args, **kwargs)

    net.run = spy
    return batches


def test_simulation_batch_fits_the_state_into_the_memory_budget():
    net = SpikingNetwork(residual())
    state = net.state_bytes()
    net.memory_budget = 7 * state + state // 2
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert simulation_batch(net, 5) == 5  # all fit: none held back
        assert simulation_batch(net, 100) == 7
        assert simulation_batch(net, 100, extra_bytes=state) == 3
        net.memory_budget = state // 2
        assert simulation_batch(net, 100) == 1  # one sample at a time at least
        if numba.config.NUMBA_NUM_THREADS >= 2:
            numba.set_num_threads(2)
            net.memory_budget = 7 * state
            assert simulation_batch(net, 100) == 6  # a whole number of samples per thread
            net.memory_budget = state
            assert simulation_batch(net, 100) == 1
    finally:
        numba.set_num_threads(threads)


def test_a_batch_whose_state_does_not_fit_runs_in_parts_with_the_same_results():
    # evaluate's batch is planned for the readout and the activations; the neuron state
    # of every sample of a run comes on top, and a deep network's is the larger part.
    program = residual()
    data = dataset((3, 6, 6), n=7)
    whole = evaluate(SpikingNetwork(program), data, [3, 10], batch_size=7, progress=False)
    net = SpikingNetwork(program)
    net.memory_budget = 2 * net.state_bytes()
    batches = spy_on_runs(net)
    parts = evaluate(net, data, [3, 10], ann=lambda x: x.reshape(len(x), -1)[:, :4],
                     batch_size=7, progress=False)
    assert batches and max(batches) * net.state_bytes() <= net.memory_budget
    assert sum(batches) == 7  # one run of 10 steps: residual() has one parameter set
    assert parts.snn_accuracy == whole.snn_accuracy and parts.agreement is not None
    assert parts.synaptic_ops[1] == pytest.approx(whole.synaptic_ops[1], rel=1e-12)
    assert parts.mean_firing_rate[1] == pytest.approx(whole.mean_firing_rate[1], rel=1e-12)
    for a, b in zip(parts.layer_activity, whole.layer_activity):
        assert a["firing_rate"] == pytest.approx(b["firing_rate"], rel=1e-12)
