"""The fused executor against the node executor, on programs that use every fused op."""


import numpy as np
import pytest

from snncompiler.runtime import InputError, Node, Program, SpikingNetwork, TensorSpec
from snncompiler.runtime import kernels as K
from tests.runtime.programs import conv_snm_pool_gemm, network, residual
from tests.without_jit import assert_same_run_without_jit


def conv(name, src, dst, rng, c_in, c_out, shape, stride=1, pad=1, kernel=3):
    return Node(name, "conv", (src,), dst,
                {"strides": [stride, stride], "pads": [pad] * 4, "dilations": [1, 1],
                 "group": 1},
                {"weight": rng.normal(0, 0.4, (c_out, c_in, kernel, kernel)).astype(np.float32),
                 "bias": rng.normal(0, 0.1, c_out).astype(np.float32)}, shape)


def every_fused_op(seed=0) -> Program:
    """x (2, 9, 9) -> conv -> SNM -> maxpool 3/2 pad 1 -> conv (stride 2) -> affine
    -> add (a static (10, 1, 1) branch, broadcast) -> [output "map"]
    -> avgpool -> flatten -> gemm [output "y"]; and global avg pool [output "g"].

    One neuron layer only, fed by the static segment: both executors then see the same
    spikes, and everything after them is linear (or the exact max-pool tracker), so the
    executors agree to float rounding.
    """
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.4, 1.2, size=(2, 12)).astype(np.float32)
    nodes = [
        conv("c1", "x", "a", rng, 2, 12, (12, 9, 9)),
        Node("n1", "snm", ("a",), "s", {"theta_neg": "zero", "max_spikes_per_step": 1},
             {"theta": theta, "v0": theta / 2}, (12, 9, 9)),
        Node("pool", "maxpool", ("s",), "p",
             {"kernel": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 0,
              "dilations": [1, 1]}, {}, (12, 5, 5)),
        conv("c2", "p", "b", rng, 12, 10, (10, 3, 3), stride=2),
        Node("bn", "affine", ("b",), "bn_out", {},
             {"scale": rng.uniform(0.5, 1.5, (10, 1, 1)).astype(np.float32),
              "shift": rng.normal(0, 0.1, (10, 1, 1)).astype(np.float32)}, (10, 3, 3)),
        Node("gx", "global_avgpool", ("x",), "xg", {}, {}, (2, 1, 1)),
        Node("side", "conv", ("xg",), "side_out",
             {"strides": [1, 1], "pads": [0] * 4, "dilations": [1, 1], "group": 1},
             {"weight": rng.normal(0, 0.5, (10, 2, 1, 1)).astype(np.float32),
              "bias": np.zeros(10, np.float32)}, (10, 1, 1)),
        Node("add", "add", ("bn_out", "side_out"), "map", {}, {}, (10, 3, 3)),
        Node("avg", "avgpool", ("map",), "m2",
             {"kernel": [2, 2], "strides": [1, 1], "pads": [0, 0, 0, 0], "ceil_mode": 0,
              "count_include_pad": 0}, {}, (10, 2, 2)),
        Node("flat", "reshape", ("m2",), "f", {"shape": [40]}, {}, (40,)),
        Node("fc", "gemm", ("f",), "y", {},
             {"weight": rng.normal(0, 0.3, (40, 7)).astype(np.float32),
              "bias": rng.normal(0, 0.1, 7).astype(np.float32)}, (7,)),
        Node("gap", "global_avgpool", ("map",), "g", {}, {}, (10, 1, 1)),
    ]
    return Program([TensorSpec("x", (2, 9, 9))],
                   [TensorSpec("y", (7,)), TensorSpec("map", (10, 3, 3)),
                    TensorSpec("g", (10, 1, 1))], nodes, [16, 4], 16)


def shared_spikes(seed=0) -> Program:
    """x (2, 7, 7) -> conv -> SNM n1 -> {conv 3x3 stride 2, conv 1x1 stride 2} -> add -> SNM
    -> global avg pool -> gemm -> SNM n3 (rank 1) -> gemm [output "y"].

    n1's spikes are read by two convs and n3's by a gemm: the planner lists both layers'
    spikes once, as they are sent (kernels.list_events).
    """
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.3, 0.8, size=(1, 8)).astype(np.float32)
    theta3 = rng.uniform(0.2, 0.5, size=(1, 6)).astype(np.float32)

    def snm(name, src, dst, th, shape):
        return Node(name, "snm", (src,), dst, {"theta_neg": "zero", "max_spikes_per_step": 1},
                    {"theta": th, "v0": th / 2}, shape)

    nodes = [
        conv("c1", "x", "a", rng, 2, 8, (8, 7, 7)),
        snm("n1", "a", "s1", theta, (8, 7, 7)),
        conv("body", "s1", "b", rng, 8, 8, (8, 4, 4), stride=2),
        conv("skip", "s1", "k", rng, 8, 8, (8, 4, 4), stride=2, pad=0, kernel=1),
        Node("add", "add", ("b", "k"), "r", {}, {}, (8, 4, 4)),
        snm("n2", "r", "s2", theta, (8, 4, 4)),
        Node("gap", "global_avgpool", ("s2",), "g", {}, {}, (8, 1, 1)),
        Node("flat", "reshape", ("g",), "f", {"shape": [8]}, {}, (8,)),
        Node("fc1", "gemm", ("f",), "h", {},
             {"weight": rng.normal(0, 0.6, (8, 6)).astype(np.float32),
              "bias": rng.normal(0.1, 0.1, 6).astype(np.float32)}, (6,)),
        snm("n3", "h", "s3", theta3, (6,)),
        Node("fc2", "gemm", ("s3",), "y", {},
             {"weight": rng.normal(0, 0.5, (6, 3)).astype(np.float32),
              "bias": np.zeros(3, np.float32)}, (3,)),
    ]
    return Program([TensorSpec("x", (2, 7, 7))], [TensorSpec("y", (3,))], nodes, [16], 16)


def inputs(shape, seed=1, batch=5):
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype(np.float32)


def test_the_runtime_has_one_executor_and_no_option_for_another():
    """The node-by-node reference is a class of its own for tests, not a user's option."""
    from snncompiler.runtime.reference import ReferenceNetwork

    with pytest.raises(TypeError, match="executor"):
        SpikingNetwork(every_fused_op(), executor="nodes")
    assert isinstance(network(every_fused_op(), "nodes"), ReferenceNetwork)
    assert type(network(every_fused_op(), "fused")) is SpikingNetwork


def test_every_op_of_the_schema_has_a_fused_emitter():
    from snncompiler.runtime import fused
    from snncompiler.runtime.opset import OPS

    assert fused.FUSED_OPS == set(OPS)


def test_executors_agree_on_every_fused_op():
    program = every_fused_op()
    x = inputs((2, 9, 9))
    fast = SpikingNetwork(program).run(x, 20, time_chunk=7)
    slow = network(program, "nodes").run(x, 20)
    assert set(fast) == {"y", "map", "g"}
    for name in fast:
        assert fast[name].shape == slow[name].shape == (20, 5, *program.outputs[
            [s.name for s in program.outputs].index(name)].shape)
        np.testing.assert_allclose(fast[name], slow[name], rtol=1e-4, atol=1e-5)


def test_the_observer_sees_the_same_values_from_both_executors():
    program = every_fused_op()
    x = inputs((2, 9, 9))
    seen = {"fused": {}, "nodes": {}}
    for executor, store in seen.items():
        network(program, executor).run(
            x, 9, time_chunk=4,
            observer=lambda node, value, t0, store=store: store.setdefault(
                node.name, []).append((t0, value.dynamic, np.array(value.data))))
    assert seen["fused"].keys() == seen["nodes"].keys()
    for name, chunks in seen["fused"].items():
        for (t0, dynamic, data), (t1, dynamic1, data1) in zip(chunks, seen["nodes"][name]):
            assert (t0, dynamic) == (t1, dynamic1) and data.shape == data1.shape, name
            np.testing.assert_allclose(data, data1, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("make", [every_fused_op, conv_snm_pool_gemm, residual,
                                  shared_spikes])
def test_fused_results_do_not_depend_on_chunks_or_streaming(make):
    program = make()
    net = SpikingNetwork(program)
    x = inputs(program.inputs[0].shape)
    whole = net.run(x, 11, time_chunk=11)
    for chunk in (1, 4):
        again = net.run(x, 11, time_chunk=chunk)
        for name in (whole if isinstance(whole, dict) else {"": whole}):
            pair = (whole, again) if name == "" else (whole[name], again[name])
            np.testing.assert_array_equal(*pair)
    net.reset()
    streamed = [net.step(x) for _ in range(11)]
    if isinstance(whole, dict):
        for name in whole:
            np.testing.assert_array_equal(np.stack([s[name] for s in streamed]), whole[name])
    else:
        np.testing.assert_array_equal(np.stack(streamed), whole)


def test_spikes_listed_as_sent_give_the_same_bits_as_listing_in_each_reader(monkeypatch):
    from snncompiler.runtime import fused

    program = shared_spikes()
    net = SpikingNetwork(program)
    plan = net._fused_plan(False)
    lists = {plan.op_nodes[k]: row for k, row in enumerate(plan.ops)
             if row[K.OPCODE] in (K.CONV, K.GEMM, K.SNM)}
    # n1 and n3 write lists; body, skip (one list, read twice) and fc2 read them.
    assert lists["n1"][K.P + 5] >= 0 and lists["n3"][K.P + 5] >= 0
    assert lists["n2"][K.P + 5] < 0 and lists["fc1"][K.P + 5] < 0
    assert lists["body"][K.P + 17] == lists["skip"][K.P + 17] == lists["n1"][K.P + 5]
    assert lists["fc2"][K.P + 5] == lists["n3"][K.P + 5]
    x = inputs((2, 7, 7), batch=6)
    listed = net.run(x, 13)
    counted = net.counters()
    assert counted["n3"].sum() > 0 and counted["fc2"].sum() > 0
    monkeypatch.setattr(fused, "_listed_spikes", lambda *args: [])
    plain = SpikingNetwork(program)
    assert all(row[K.P + 5] < 0 for row in plain._fused_plan(False).ops
               if row[K.OPCODE] == K.SNM)
    np.testing.assert_array_equal(plain.run(x, 13), listed)
    for name, values in plain.counters().items():
        np.testing.assert_array_equal(values, counted[name], err_msg=name)
    slow = network(program, "nodes").run(x, 13)
    np.testing.assert_allclose(listed, slow, rtol=1e-4, atol=1e-5)


def test_a_sample_does_not_depend_on_the_rest_of_the_batch():
    program = residual()
    x = inputs(program.inputs[0].shape, batch=7)
    net = SpikingNetwork(program)
    np.testing.assert_array_equal(net.run(x[2:5], 9), net.run(x, 9)[:, 2:5])


def test_counters_agree_between_executors():
    program = every_fused_op()
    x = inputs((2, 9, 9))
    counted = {}
    for executor in ("fused", "nodes"):
        net = network(program, executor)
        net.run(x, 12)
        counted[executor] = net.counters()
    assert set(counted["fused"]) == {"n1", "c2", "fc"}
    for name, values in counted["fused"].items():
        np.testing.assert_array_equal(values, counted["nodes"][name], err_msg=name)
    assert counted["fused"]["n1"].shape == (5,) and counted["fused"]["n1"].sum() > 0


def test_both_executors_run_a_conv_dense_from_the_same_input_density(monkeypatch):
    """residual()'s c2 reads sparse spikes (3 x 6 x 6): event-driven by default; with
    fused.dense_from at one nonzero entry, both executors run every step of it dense,
    adding every entry's weights, and count so."""
    from snncompiler.runtime import fused

    program = residual()
    x = inputs((3, 6, 6))
    reach = np.array([2, 3, 3, 3, 3, 2])  # outputs each input row (and column) reaches
    every_entry = 9 * 3 * int(np.outer(reach, reach).sum()) * 3  # steps x C x taps x O
    runs = {}
    for dense in (False, True):
        if dense:
            monkeypatch.setattr(fused, "dense_from", lambda *geometry, **kind: 1)
        for executor in ("fused", "nodes"):
            net = network(program, executor)
            runs[dense, executor] = net.run(x, 9), net.counters()["c2"]
    assert (runs[False, "fused"][1] < every_entry).all()
    for executor in ("fused", "nodes"):
        np.testing.assert_array_equal(runs[False, executor][1], runs[False, "fused"][1])
        np.testing.assert_array_equal(runs[True, executor][1], every_entry)
        np.testing.assert_allclose(runs[True, executor][0], runs[False, "fused"][0],
                                   rtol=1e-4, atol=1e-5)


def test_a_new_batch_size_needs_a_reset():
    program = conv_snm_pool_gemm()
    net = SpikingNetwork(program)
    net.step(inputs((1, 8, 8), batch=3))
    with pytest.raises(InputError, match="reset"):
        net.step(inputs((1, 8, 8), batch=2))
    net.reset()
    assert net.step(inputs((1, 8, 8), batch=2)).shape == (2, 5)


def test_kernels_give_the_same_bits_without_the_jit(tmp_path):
    """The kernels run as plain Python under NUMBA_DISABLE_JIT=1 (the SIMD helpers become
    numpy) and must give the jitted result bit for bit."""
    assert_same_run_without_jit(every_fused_op(),
                                ("tests.runtime.test_fused", "every_fused_op()"),
                                inputs((2, 9, 9), batch=2), 3, tmp_path)
