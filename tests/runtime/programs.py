"""Small hand-built runtime programs shared by the runtime tests."""

import numba
import numpy as np

from snncompiler.runtime import Node, Program, SpikingNetwork, TensorSpec
from snncompiler.runtime.reference import ReferenceNetwork

EXECUTORS = ("fused", "nodes")
"""The runtime's executor and the numpy reference that the tests hold it to."""


def network(program: Program, executor: str = "fused", **options) -> SpikingNetwork:
    """``program`` ready to run on the fused executor (``"fused"``, what users get) or on
    the node-by-node numpy reference (``"nodes"``, :mod:`snncompiler.runtime.reference`)."""
    kind = {"fused": SpikingNetwork, "nodes": ReferenceNetwork}[executor]
    return kind(program, **options)


def conv_snm_pool_gemm(seed: int = 0, theta_neg: str = "zero", timesteps=(32,)) -> Program:
    """input (1, 8, 8) -> conv 3x3 (4 ch) -> SNM -> maxpool 2x2 -> flatten -> gemm (5)."""
    rng = np.random.default_rng(seed)
    rows = len(timesteps)
    theta = rng.uniform(0.5, 1.5, size=(rows, 4)).astype(np.float32)
    nodes = [
        Node("conv", "conv", ("x",), "a",
             {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1},
             {"weight": rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32),
              "bias": rng.normal(0, 0.1, 4).astype(np.float32)}, (4, 8, 8)),
        Node("relu", "snm", ("a",), "s",
             {"theta_neg": theta_neg, "max_spikes_per_step": 1},
             {"theta": theta, "v0": theta / 2}, (4, 8, 8)),
        Node("pool", "maxpool", ("s",), "p",
             {"kernel": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0], "ceil_mode": 0,
              "dilations": [1, 1]}, {}, (4, 4, 4)),
        Node("flat", "reshape", ("p",), "f", {"shape": [64]}, {}, (64,)),
        Node("fc", "gemm", ("f",), "y", {},
             {"weight": rng.normal(0, 0.2, (64, 5)).astype(np.float32),
              "bias": rng.normal(0, 0.1, 5).astype(np.float32)}, (5,)),
    ]
    return Program([TensorSpec("x", (1, 8, 8))], [TensorSpec("y", (5,))], nodes,
                   list(timesteps), timesteps[0])


def _same_size_conv(rng, channels: int, size: int, weight_std: float, bias_mean: float):
    """A factory of 3x3, stride-1, same-padding convs of ``channels`` -> ``channels``."""

    def conv(name, src, dst):
        return Node(name, "conv", (src,), dst,
                    {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1},
                    {"weight": rng.normal(0, weight_std, (channels, channels, 3, 3)
                                          ).astype(np.float32),
                     "bias": rng.normal(bias_mean, 0.1, channels).astype(np.float32)},
                    (channels, size, size))

    return conv


def _snm_layer(theta: np.ndarray, shape: tuple):
    """A factory of SNM layers with thresholds ``theta`` and ``v0 = theta / 2``."""

    def snm(name, src, dst):
        return Node(name, "snm", (src,), dst, {"theta_neg": "zero", "max_spikes_per_step": 1},
                    {"theta": theta, "v0": theta / 2}, shape)

    return snm


def _pool_and_classify(rng, src: str, channels: int, classes: int) -> list[Node]:
    return [
        Node("gap", "global_avgpool", (src,), "g", {}, {}, (channels, 1, 1)),
        Node("flat", "reshape", ("g",), "f", {"shape": [channels]}, {}, (channels,)),
        Node("fc", "gemm", ("f",), "y", {},
             {"weight": rng.normal(0, 0.5, (channels, classes)).astype(np.float32),
              "bias": np.zeros(classes, np.float32)}, (classes,)),
    ]


def residual(seed: int = 0) -> Program:
    """input (3, 6, 6) -> conv -> SNM -> conv -> add(skip) -> SNM -> global avg -> gemm."""
    rng = np.random.default_rng(seed)
    conv = _same_size_conv(rng, 3, 6, weight_std=0.3, bias_mean=0.0)
    snm = _snm_layer(np.full((1, 3), 0.8, np.float32), (3, 6, 6))
    nodes = [
        conv("c1", "x", "a1"), snm("n1", "a1", "s1"), conv("c2", "s1", "a2"),
        Node("add", "add", ("a2", "s1"), "r", {}, {}, (3, 6, 6)), snm("n2", "r", "s2"),
        *_pool_and_classify(rng, "s2", 3, 4),
    ]
    return Program([TensorSpec("x", (3, 6, 6))], [TensorSpec("y", (4,))], nodes, [32], 32)


def two_layers_into_one_conv(seed: int = 0) -> Program:
    """x (2, 5, 5) -> c1 -> n1 -> c2 -> n2 -> add(s1, s2) -> c3 -> n3 -> gap -> fc (3).

    c3 adds the spikes of two neuron layers at once (through the add), so its synaptic
    operations belong to neither alone.
    """
    rng = np.random.default_rng(seed)
    conv = _same_size_conv(rng, 2, 5, weight_std=0.5, bias_mean=0.2)
    snm = _snm_layer(np.full((1, 2), 0.6, np.float32), (2, 5, 5))
    nodes = [
        conv("c1", "x", "a1"), snm("n1", "a1", "s1"), conv("c2", "s1", "a2"),
        snm("n2", "a2", "s2"), Node("add", "add", ("s1", "s2"), "r", {}, {}, (2, 5, 5)),
        conv("c3", "r", "a3"), snm("n3", "a3", "s3"),
        *_pool_and_classify(rng, "s3", 2, 3),
    ]
    return Program([TensorSpec("x", (2, 5, 5))], [TensorSpec("y", (3,))], nodes, [16], 16)


def _tracking_layer(rng, op: str, src: str, dst: str, shape: tuple, rows: int,
                    theta_neg: str, max_spikes: int, upper: float = 1.5) -> Node:
    """A ``snm_clip`` or ``snm_leaky`` layer with random per-channel theta, v0 and slope."""
    channels = shape[0]
    theta = rng.uniform(0.3, 0.9, size=(rows, channels)).astype(np.float32)
    v0 = (theta * rng.uniform(0, 0.9, size=(rows, channels))).astype(np.float32)
    attrs = {"theta_neg": theta_neg, "max_spikes_per_step": max_spikes}
    arrays = {"theta": theta, "v0": v0}
    if op == "snm_clip":
        attrs["upper"] = upper
    else:
        arrays["slope"] = rng.uniform(-0.3, 0.4, channels).astype(np.float32)
    return Node(dst.replace("s", "n"), op, (src,), dst, attrs, arrays, shape)


def mobile_block(seed: int = 0, theta_neg: str = "zero", max_spikes: int = 1,
                 timesteps=(16,)) -> Program:
    """An EfficientNet-like block of tracking neurons:

    x (3, 8, 8) -> conv 3x3 (8) -> snm_clip n1 -> depthwise conv 3x3 stride 2 -> snm_clip n2
    -> conv 1x1 (6) -> snm_leaky n3 [output "s3"] -> reshape (6, 16) -> snm_clip n4
    [output "s4"]; n1 -> maxpool 2x2 [output "pooled"]; s3 -> global avg pool -> gemm
    [output "y"].

    The convs run the same kernels in both executors, so every neuron layer sees the same
    input bits; only the gemm adds in another order (BLAS in the node executor).
    ``theta_neg`` "off" gives the leaky layer "zero" (it has no "off").
    """
    rng = np.random.default_rng(seed)
    rows = len(timesteps)
    leaky_neg = "zero" if theta_neg == "off" else theta_neg

    def track(op, src, dst, shape, neg=theta_neg, upper=1.5):
        return _tracking_layer(rng, op, src, dst, shape, rows, neg, max_spikes, upper)

    geometry = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}
    nodes = [
        Node("stem", "conv", ("x",), "a1", geometry,
             {"weight": rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32),
              "bias": rng.normal(0.2, 0.2, 8).astype(np.float32)}, (8, 8, 8)),
        track("snm_clip", "a1", "s1", (8, 8, 8), upper=6.0),
        Node("dw", "conv", ("s1",), "a2", {**geometry, "strides": [2, 2], "group": 8},
             {"weight": rng.normal(0, 0.6, (8, 1, 3, 3)).astype(np.float32),
              "bias": rng.normal(0, 0.1, 8).astype(np.float32)}, (8, 4, 4)),
        track("snm_clip", "a2", "s2", (8, 4, 4), upper=0.7),
        Node("pw", "conv", ("s2",), "a3", {**geometry, "pads": [0, 0, 0, 0]},
             {"weight": rng.normal(0, 0.6, (6, 8, 1, 1)).astype(np.float32),
              "bias": rng.normal(0, 0.2, 6).astype(np.float32)}, (6, 4, 4)),
        track("snm_leaky", "a3", "s3", (6, 4, 4), neg=leaky_neg),
        Node("rows", "reshape", ("s3",), "r", {"shape": [6, 16]}, {}, (6, 16)),
        track("snm_clip", "r", "s4", (6, 16), upper=0.5),
        Node("pool", "maxpool", ("s1",), "pooled",
             {"kernel": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0], "ceil_mode": 0,
              "dilations": [1, 1]}, {}, (8, 4, 4)),
        *_pool_and_classify(rng, "s3", 6, 5),
    ]
    return Program([TensorSpec("x", (3, 8, 8))],
                   [TensorSpec("y", (5,)), TensorSpec("s3", (6, 4, 4)),
                    TensorSpec("s4", (6, 16)), TensorSpec("pooled", (8, 4, 4))],
                   nodes, list(timesteps), timesteps[0])


def dense_tracking(seed: int = 0, max_spikes: int = 1) -> Program:
    """x (10,) -> gemm (12) -> snm_leaky n1 [output "s1"] -> gemm (4) [output "y"]: a
    rank-1 tracking layer fed by the static segment whose spikes a gemm reads."""
    rng = np.random.default_rng(seed)
    nodes = [
        Node("fc1", "gemm", ("x",), "h", {},
             {"weight": rng.normal(0, 0.5, (10, 12)).astype(np.float32),
              "bias": rng.normal(0, 0.2, 12).astype(np.float32)}, (12,)),
        _tracking_layer(rng, "snm_leaky", "h", "s1", (12,), 2, "minus_theta", max_spikes),
        Node("fc2", "gemm", ("s1",), "y", {},
             {"weight": rng.normal(0, 0.5, (12, 4)).astype(np.float32),
              "bias": np.zeros(4, np.float32)}, (4,)),
    ]
    return Program([TensorSpec("x", (10,))], [TensorSpec("y", (4,)), TensorSpec("s1", (12,))],
                   nodes, [8, 32], 32)


ANALOG_ATTRS = {"axis": 0, "alpha": 0.0, "beta": 0.0, "bias": 0.0, "size": 1}


def analog(name: str, function: str, inputs: tuple, output: str, shape: tuple,
           **attrs) -> Node:
    """An ``analog`` node; the attributes its function does not read are 0 (1 for size)."""
    return Node(name, "analog", inputs, output, {**ANALOG_ATTRS, **attrs, "function": function},
                {}, shape)


def every_op(seed: int = 0) -> Program:
    """Every op of the schema, all on dynamic values but the static ``a`` and ``xm``:

    x (3, 6, 6) -> conv (4) -> a; a -> snm n1 -> s1; concat(s1, a) (8, 6, 6) -> pad (8, 7, 7)
    -> transpose (H, W) -> nearest resize (8, 14, 7) -> conv stride 2 (6, 7, 4) -> snm_clip
    n2 -> s2 -> maxpool (6, 3, 2) -> reshape (6, 6) -> snm_leaky n3 [output "s3"];
    s3 -> linear resize (4, 3) -> softmax over axis 1 -> mul by xm (3,) = the mean of x
    over H, W (static) -> add the linear resize -> affine [output "mix"];
    s3 -> reduce sum over axis 0 [output "rd"]; s2 -> avgpool -> global avgpool -> reshape
    (6,) -> gemm (5) -> tanh [output "y"].

    Up to s3 both executors do the same float operations (conv kernels, index maps,
    neurons, max-pool tracker), so "s3" is exact; after it come the ops that add in
    another order in the node executor (linear resize, reduce, softmax, global avgpool,
    BLAS gemm) or call numpy's exp and tanh.
    """
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.3, 0.8, size=(1, 4)).astype(np.float32)
    geometry = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}
    linear_rows = np.zeros((4, 6), np.float32)
    for i, (h, w) in enumerate([(0, 0.75), (1, 0.5), (3, 0.25), (4, 1.0)]):
        linear_rows[i, h], linear_rows[i, h + 1] = w, 1 - w
    nodes = [
        Node("c1", "conv", ("x",), "a", geometry,
             {"weight": rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32),
              "bias": rng.normal(0.1, 0.1, 4).astype(np.float32)}, (4, 6, 6)),
        Node("n1", "snm", ("a",), "s1", {"theta_neg": "zero", "max_spikes_per_step": 1},
             {"theta": theta, "v0": theta / 2}, (4, 6, 6)),
        Node("cat", "concat", ("s1", "a"), "c", {"axis": 0}, {}, (8, 6, 6)),
        Node("pad", "pad", ("c",), "p", {"pads": [0, 1, 0, 0, 0, 1], "mode": "constant",
                                         "value": 0.25}, {}, (8, 7, 7)),
        Node("tr", "transpose", ("p",), "t", {"perm": [0, 2, 1]}, {}, (8, 7, 7)),
        Node("up", "resize", ("t",), "u", {},
             {"rows": np.repeat(np.eye(7, dtype=np.float32), 2, axis=0),
              "cols": np.eye(7, dtype=np.float32)}, (8, 14, 7)),
        Node("c2", "conv", ("u",), "b", {**geometry, "strides": [2, 2]},
             {"weight": rng.normal(0, 0.3, (6, 8, 3, 3)).astype(np.float32),
              "bias": rng.normal(0.1, 0.1, 6).astype(np.float32)}, (6, 7, 4)),
        _tracking_layer(rng, "snm_clip", "b", "s2", (6, 7, 4), 1, "zero", 1),
        Node("pool", "maxpool", ("s2",), "m",
             {"kernel": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0], "ceil_mode": 0,
              "dilations": [1, 1]}, {}, (6, 3, 2)),
        Node("rows", "reshape", ("m",), "r", {"shape": [6, 6]}, {}, (6, 6)),
        _tracking_layer(rng, "snm_leaky", "r", "s3", (6, 6), 1, "minus_theta", 2),
        Node("lin", "resize", ("s3",), "l", {},
             {"rows": linear_rows, "cols": np.repeat(np.eye(3, dtype=np.float32), 2, axis=1)
              / 2}, (4, 3)),
        analog("soft", "softmax", ("l",), "sm", (4, 3), axis=1),
        Node("xm", "reduce", ("x",), "xmean", {"mode": "mean", "axes": [1, 2], "keepdims": 0},
             {}, (3,)),
        analog("scale", "mul", ("sm", "xmean"), "sx", (4, 3)),
        Node("add", "add", ("sx", "l"), "sum", {}, {}, (4, 3)),
        Node("aff", "affine", ("sum",), "mix", {},
             {"scale": rng.uniform(0.5, 1.5, (3,)).astype(np.float32),
              "shift": rng.normal(0, 0.1, (4, 1)).astype(np.float32)}, (4, 3)),
        Node("rd", "reduce", ("s3",), "rd", {"mode": "sum", "axes": [0], "keepdims": 0}, {},
             (6,)),
        Node("avg", "avgpool", ("s2",), "v",
             {"kernel": [2, 2], "strides": [1, 1], "pads": [0, 0, 0, 0], "ceil_mode": 0,
              "count_include_pad": 0}, {}, (6, 6, 3)),
        Node("gap", "global_avgpool", ("v",), "g", {}, {}, (6, 1, 1)),
        Node("flat", "reshape", ("g",), "f", {"shape": [6]}, {}, (6,)),
        Node("fc", "gemm", ("f",), "h", {},
             {"weight": rng.normal(0, 0.5, (6, 5)).astype(np.float32),
              "bias": rng.normal(0, 0.2, 5).astype(np.float32)}, (5,)),
        analog("act", "tanh", ("h",), "y", (5,)),
    ]
    return Program([TensorSpec("x", (3, 6, 6))],
                   [TensorSpec("y", (5,)), TensorSpec("mix", (4, 3)), TensorSpec("s3", (6, 6)),
                    TensorSpec("rd", (6,))], nodes, [16], 16)


def wide_input_net(size: int = 224, channels: int = 4, seed: int = 0) -> Program:
    """x (3, size, size) -> conv 3x3 (channels) -> SNM n1 -> conv 3x3 -> SNM n2 -> global
    avg pool -> flatten -> gemm (10): large activations per step, a small readout."""
    rng = np.random.default_rng(seed)
    theta = np.full((1, channels), 0.5, np.float32)
    geometry = {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}
    shape = (channels, size, size)
    nodes = [
        Node("c1", "conv", ("x",), "a1", geometry,
             {"weight": rng.normal(0, 0.4, (channels, 3, 3, 3)).astype(np.float32),
              "bias": np.full(channels, 0.1, np.float32)}, shape),
        _snm_layer(theta, shape)("n1", "a1", "s1"),
        _same_size_conv(rng, channels, size, weight_std=0.3, bias_mean=0.1)("c2", "s1", "a2"),
        _snm_layer(theta, shape)("n2", "a2", "s2"),
        *_pool_and_classify(rng, "s2", channels, 10),
    ]
    return Program([TensorSpec("x", (3, size, size))], [TensorSpec("y", (10,))], nodes, [8], 8)


def assert_independent_of_chunking(program, x, steps: int = 11) -> None:
    """The readouts and counters of ``steps`` steps on ``x`` are the same bits whatever the
    time chunk, streamed with step(), for a subset of the batch and with one thread."""
    net = SpikingNetwork(program)
    whole = net.run(x, steps, time_chunk=steps)
    counts = net.counters()
    for chunk in (1, 4):
        again = net.run(x, steps, time_chunk=chunk)
        for name in whole:
            np.testing.assert_array_equal(again[name], whole[name], err_msg=name)
        for name, values in net.counters().items():
            np.testing.assert_array_equal(values, counts[name], err_msg=name)
    net.reset()
    streamed = [net.step(x) for _ in range(steps)]
    for name in whole:
        np.testing.assert_array_equal(np.stack([s[name] for s in streamed]), whole[name])
    part = net.run(x[2:5], steps)
    for name in whole:
        np.testing.assert_array_equal(part[name], whole[name][:, 2:5], err_msg=name)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = SpikingNetwork(program).run(x, steps)
    finally:
        numba.set_num_threads(before)
    for name in whole:
        np.testing.assert_array_equal(one[name], whole[name], err_msg=name)
