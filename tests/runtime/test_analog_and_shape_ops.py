"""The analog op's running-mean law, LRN's definition, and the index-map ops over time."""

import numpy as np
import pytest

from snncompiler.runtime.analog import FUNCTIONS, apply
from snncompiler.runtime.engine import SpikingNetwork
from snncompiler.runtime.errors import FormatError
from snncompiler.runtime.graph import Node, Program, TensorSpec
from snncompiler.runtime.opset import infer_shape
from snncompiler.runtime.shape_ops import pad

ANALOG_DEFAULTS = {"axis": 0, "alpha": 0.0, "beta": 0.0, "bias": 0.0, "size": 1}


def theta_rows(channels):
    theta = np.full((1, channels), 0.25, np.float32)
    return {"theta": theta, "v0": theta / 2}


def spiking_program(tail: list[Node], out_name: str, out_shape, channels=3, hw=4):
    """x (C, H, W) -> snm -> tail; the tail reads tensor "s"."""
    head = Node("sn", "snm", ("x",), "s", {"theta_neg": "zero", "max_spikes_per_step": 1},
                theta_rows(channels), (channels, hw, hw))
    return Program([TensorSpec("x", (channels, hw, hw))], [TensorSpec(out_name, out_shape)],
                   [head, *tail], [16], 16)


def observed(net, x, steps, name, chunk=None):
    seen = []
    net.run(x, steps, time_chunk=chunk,
            observer=lambda node, value, t: seen.append(value.data) if node.output == name
            else None)
    return np.concatenate(seen) if seen[0].ndim == x.ndim + 1 else seen[0]


@pytest.mark.parametrize("function, attrs", [
    ("sigmoid", {}), ("tanh", {}), ("softmax", {"axis": 0}), ("log_softmax", {"axis": 2}),
    ("elu", {"alpha": 0.7}), ("hard_sigmoid", {"alpha": 0.2, "beta": 0.5}),
    ("lrn", {"axis": 0, "alpha": 0.3, "beta": 0.75, "bias": 1.0, "size": 3}),
])
@pytest.mark.parametrize("chunk", [None, 3])
def test_running_mean_of_the_output_is_the_function_of_the_running_mean(function, attrs,
                                                                         chunk):
    node = Node("g", "analog", ("s",), "y", {**ANALOG_DEFAULTS, **attrs, "function": function},
                {}, (3, 4, 4))
    net = SpikingNetwork(spiking_program([node], "y", (3, 4, 4)))
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 4)).astype(np.float32)
    spikes = observed(net, x, 20, "s", chunk)
    readout = net.run(x, 20, time_chunk=chunk)
    means = np.cumsum(spikes, 0, dtype=np.float64) / np.arange(1, 21).reshape(-1, 1, 1, 1, 1)
    expected = apply(function, [means], {**ANALOG_DEFAULTS, **attrs}, 2)
    np.testing.assert_allclose(readout, expected, rtol=2e-4, atol=2e-5)


def test_two_input_analog_mixes_static_and_dynamic_inputs():
    node = Node("g", "analog", ("s", "x"), "y",
                {**ANALOG_DEFAULTS, "function": "mul"}, {}, (3, 4, 4))
    net = SpikingNetwork(spiking_program([node], "y", (3, 4, 4)))
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 4)).astype(np.float32)
    spikes = observed(net, x, 12, "s")
    means = np.cumsum(spikes, 0, dtype=np.float64) / np.arange(1, 13).reshape(-1, 1, 1, 1, 1)
    np.testing.assert_allclose(net.run(x, 12), means * x, rtol=2e-4, atol=2e-5)


def test_lrn_follows_the_onnx_definition():
    x = np.random.default_rng(2).normal(size=(2, 5, 3, 3))
    size, alpha, beta, bias = 3, 0.4, 0.75, 2.0
    got = FUNCTIONS["lrn"](x, {"axis": 1, "alpha": alpha, "beta": beta, "bias": bias,
                               "size": size})
    expected = np.empty_like(x)
    for c in range(5):
        window = range(max(0, c - (size - 1) // 2), min(5, c + size // 2 + 1))
        square_sum = sum(x[:, i] ** 2 for i in window)
        expected[:, c] = x[:, c] / (bias + alpha / size * square_sum) ** beta
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_pad_crops_with_negative_pads():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    # Sample axes (C, H, W): begins (0, 1, -1), ends (0, -1, 2).
    got = pad(x, [0, 1, -1, 0, -1, 2], "constant", 9.0)
    cropped = x[:, :, :3, 1:]
    expected = np.pad(cropped, ((0, 0), (0, 0), (1, 0), (0, 2)), constant_values=9.0)
    np.testing.assert_array_equal(got, expected)


def test_pad_crops_an_axis_to_nothing_and_pads_it_as_onnx_does():
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    # W: crop the last value, then pad 2 before: the crop is taken before the padding.
    np.testing.assert_array_equal(pad(x, [0, 2, 0, -1], "constant", 7.0)[0, 0],
                                  [7, 7, 0, 1, 2])
    # H: crop 4 of 3 rows (more than the axis holds) and pad 2: nothing of x is left, every
    # value is the constant, and the shape is still size + begin + end.
    got = pad(x, [2, 0, -4, 0], "constant", 7.0)
    np.testing.assert_array_equal(got, np.full((2, 1, 4), 7.0, np.float32))


@pytest.mark.parametrize("mode", ["edge", "reflect"])
def test_only_constant_padding_extends_an_axis_cropped_to_nothing(mode):
    node = Node("pd", "pad", ("s",), "y", {"pads": [0, 2, 0, 0, -4, 0], "mode": mode,
                                           "value": 0.0}, {}, (3, 2, 4))
    with pytest.raises(FormatError, match=f"{mode} padding of axis 1 cropped to nothing"):
        infer_shape(node, [(3, 4, 4)])
    constant = Node("pd", "pad", ("s",), "y", {**node.attrs, "mode": "constant"}, {}, ())
    assert infer_shape(constant, [(3, 4, 4)]) == (3, 2, 4)


INDEX_MAPS = [
    [Node("cat", "concat", ("s", "x"), "y", {"axis": 0}, {}, (6, 4, 4))],
    [Node("tr", "transpose", ("s",), "y", {"perm": [2, 0, 1]}, {}, (4, 3, 4))],
    [Node("pd", "pad", ("s",), "y", {"pads": [0, 1, 0, 0, 2, -1], "mode": "constant",
                                     "value": 0.5}, {}, (3, 7, 3))],
    [Node("pd", "pad", ("s",), "y", {"pads": [0, 1, 2, 0, 2, 1], "mode": "reflect",
                                     "value": 0.0}, {}, (3, 7, 7))],
    [Node("rs", "resize", ("s",), "y", {},
          {"rows": np.repeat(np.eye(4, dtype=np.float32), 2, axis=0),
           "cols": np.full((2, 4), 0.25, np.float32)}, (3, 8, 2))],
    [Node("rd", "reduce", ("s",), "y", {"mode": "sum", "axes": [0, 2], "keepdims": 1}, {},
          (1, 4, 1))],
]


@pytest.mark.parametrize("index", range(len(INDEX_MAPS)))
def test_index_maps_commute_with_the_running_mean(index):
    """A linear op on the spikes of every step, averaged = the op of the averaged spikes."""
    tail = INDEX_MAPS[index]
    out_shape = tail[-1].shape
    net = SpikingNetwork(spiking_program(tail, "y", out_shape))
    x = np.random.default_rng(4).normal(size=(2, 3, 4, 4)).astype(np.float32)
    readout = net.run(x, 10)
    np.testing.assert_array_equal(net.run(x, 10, time_chunk=3), readout)
    # The same op on the static path, applied to the running mean of the spikes.
    spikes = observed(net, x, 10, "s")
    mean = (np.cumsum(spikes, 0, dtype=np.float64)[-1] / 10).astype(np.float32)
    reads_x = any("x" in node.inputs for node in tail)
    inputs = [TensorSpec("s", (3, 4, 4))] + ([TensorSpec("x", (3, 4, 4))] if reads_x else [])
    static = Program(inputs, [TensorSpec("y", out_shape)], tail, [16], 16)
    feeds = {"s": mean, "x": x} if reads_x else mean
    np.testing.assert_allclose(readout[-1], SpikingNetwork(static).run(feeds, 1)[0],
                               rtol=1e-5, atol=1e-5)
