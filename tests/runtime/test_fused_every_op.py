"""The fused executor runs every op of the schema, against the node executor (the reference).

The index maps (concat, transpose, pad, resize, reduce, a reshape between layouts) are
WEIGHTED_GATHER rows built from the ops' own numpy functions (shape_ops.LinearMap); the
analog functions are ANALOG rows (analog.analog_step). What must be exact, and why the
rest is not:

- Ops that move values (concat, transpose, pad, nearest resize, reshape) give the same
  bits, and so does everything downstream that does the same float operations.
- Linear resize and reduce add each output's terms in logical order, in float32; numpy
  adds with BLAS (resize) or pairwise (a reduce along the last axis): float32 rounding,
  ``rtol=1e-5`` at these magnitudes.
- ``mul``, ``div``, ``hard_sigmoid`` and ``hard_swish`` do numpy's float64 operations in its
  order: the same bits (against the node executor in one time chunk: over several it adds
  a chunk's running sums to the earlier ones, not step by step). The other functions call
  the C library's exp, log, tanh, expm1 and pow (through numba) where numpy has vectorised
  routines of its own, within an ulp of float64, and softmax sums along an axis in order
  where numpy pairs: the float32 outputs agree to ``rtol=1e-6``.
"""

from math import prod

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from snncompiler.runtime import FormatError, Node, SpikingNetwork
from snncompiler.runtime import kernels as K
from snncompiler.runtime.analog import FUNCTION_CODES
from snncompiler.runtime.opset import ANALOG_ARITY, OPS, infer_shape
from snncompiler.runtime.shape_ops import (
    LINEAR_MAPS,
    concat,
    pad,
    reduce,
    resize,
    transpose,
)
from tests.runtime.programs import analog, assert_independent_of_chunking, every_op, network
from tests.runtime.test_analog_and_shape_ops import spiking_program
from tests.without_jit import assert_same_run_without_jit

ROUNDING = {"rtol": 1e-5, "atol": 1e-6}  # float32 sums in another order
LIBRARY = {"rtol": 1e-6, "atol": 1e-7}  # float64 exp, log, ... within an ulp
EXACT_FUNCTIONS = {"mul", "div", "hard_sigmoid", "hard_swish"}


def images(shape, batch=4, seed=1, scale=2.0):
    return (scale * np.random.default_rng(seed).normal(size=(batch, *shape))).astype(np.float32)


def every_step(program, x, steps, executor, chunk=None):
    """(readout, {node: its output at every step}) of one run."""
    seen: dict[str, list] = {}

    def observe(node, value, t0):
        if value.dynamic:
            seen.setdefault(node.name, []).append(np.array(value.data))

    net = network(program, executor)
    readout = net.run(x, steps, time_chunk=chunk, observer=observe)
    return readout, {name: np.concatenate(parts) for name, parts in seen.items()}


def assert_executors_agree(program, x, steps, tolerance=None):
    """Every dynamic node's output at every step, and the readout: the fused executor in
    chunks of 3 steps against the node executor in one chunk."""
    fast, fast_steps = every_step(program, x, steps, "fused", chunk=3)
    slow, slow_steps = every_step(program, x, steps, "nodes")
    assert fast_steps.keys() == slow_steps.keys()
    check = (np.testing.assert_array_equal if tolerance is None else
             lambda a, b, err_msg: np.testing.assert_allclose(a, b, err_msg=err_msg,
                                                              **tolerance))
    for name, values in fast_steps.items():
        assert values.shape == slow_steps[name].shape, name
        check(values, slow_steps[name], err_msg=name)
    check(fast, slow, err_msg="readout")


# --------------------------------------------------------------------------- every op


def test_a_program_with_every_op_runs_fused_row_by_row():
    program = every_op()
    assert {node.op for node in program.nodes} == set(OPS)
    net = SpikingNetwork(program)
    plan = net._fused_plan(False)
    codes = {}
    for name, row in zip(plan.op_nodes, plan.ops):
        codes.setdefault(name, []).append(row[K.OPCODE])
    dynamic = [node.name for node in program.nodes if net.is_dynamic(node.output)]
    assert {"c1", "xm"}.isdisjoint(dynamic)  # the static segment
    free = {"flat"}  # a reshape that keeps the storage order: no row
    assert set(codes) == set(dynamic) - free
    for name in ("cat", "pad", "tr", "up", "rows", "lin", "rd"):
        assert K.WEIGHTED_GATHER in codes[name], name
    assert codes["lin"].count(K.WEIGHTED_GATHER) == 2  # columns, then rows
    for name in ("soft", "scale", "act"):
        assert codes[name][0] == K.ANALOG, name
    assert codes["act"][1:] == [K.READOUT]


def test_every_op_agrees_with_the_node_executor():
    program = every_op()
    x = images((3, 6, 6), batch=5)
    counted, readouts = {}, {}
    for executor in ("fused", "nodes"):
        net = network(program, executor)
        readouts[executor] = net.run(x, 20, time_chunk=7 if executor == "fused" else None)
        counted[executor] = net.counters()
    fast, slow = readouts["fused"], readouts["nodes"]
    np.testing.assert_array_equal(fast["s3"], slow["s3"])
    assert (fast["s3"] != 0).any()
    for name in ("y", "mix", "rd"):
        np.testing.assert_allclose(fast[name], slow[name], err_msg=name, **ROUNDING)
    # Every neuron layer and conv counts the same: they see the same bits.
    for name in ("n1", "n2", "n3", "c2"):
        np.testing.assert_array_equal(counted["fused"][name], counted["nodes"][name], name)
        assert counted["fused"][name].sum() > 0, name


@pytest.mark.parametrize("make", [every_op, lambda: every_op(seed=3)])
def test_results_do_not_depend_on_chunks_streaming_batch_or_threads(make):
    program = make()
    x = images((3, 6, 6), batch=6)
    assert_independent_of_chunking(program, x)


def test_the_gather_and_analog_kernels_give_the_same_bits_without_the_jit(tmp_path):
    assert_same_run_without_jit(every_op(), ("tests.runtime.programs", "every_op()"),
                                images((3, 6, 6), batch=1), 3, tmp_path)


# --------------------------------------------------------------------------- index maps


def grid(*shape):
    return np.arange(prod(shape), dtype=np.float32).reshape(shape) / 7


MOVES = {  # ops that only move values, on the spikes s (3, 4, 4) and the static input x
    "concat_channels_static": [Node("cat", "concat", ("s", "x"), "y", {"axis": 0}, {},
                                    (6, 4, 4))],
    "concat_width": [Node("cat", "concat", ("x", "s", "s"), "y", {"axis": 2}, {},
                          (3, 4, 12))],
    "transpose": [Node("tr", "transpose", ("s",), "y", {"perm": [2, 0, 1]}, {}, (4, 3, 4))],
    "pad_and_crop": [Node("pd", "pad", ("s",), "y", {"pads": [1, 1, -1, 0, 2, 1],
                                                     "mode": "constant", "value": 0.5},
                          {}, (4, 7, 4))],
    "pad_reflect": [Node("pd", "pad", ("s",), "y", {"pads": [0, 1, 2, 0, 2, 1],
                                                    "mode": "reflect", "value": 0.0},
                         {}, (3, 7, 7))],
    "pad_edge": [Node("pd", "pad", ("s",), "y", {"pads": [0, 3, 0, 0, 0, 2],
                                                 "mode": "edge", "value": 0.0}, {}, (3, 7, 6))],
    "nearest_resize": [Node("rs", "resize", ("s",), "y", {},
                            {"rows": np.eye(4, dtype=np.float32)[[0, 0, 1, 2, 3, 3]],
                             "cols": np.eye(4, dtype=np.float32)[[1, 3]]}, (3, 6, 2))],
    "reshape_to_rows": [Node("rows", "reshape", ("s",), "y", {"shape": [3, 16]}, {},
                             (3, 16))],
    "reshape_rows_back": [Node("rows", "reshape", ("s",), "r", {"shape": [6, 8]}, {}, (6, 8)),
                          Node("back", "reshape", ("r",), "y", {"shape": [2, 4, 6]}, {},
                               (2, 4, 6))],
}

SUMS = {  # ops that add: float32 rounding against numpy
    "linear_resize": [Node("rs", "resize", ("s",), "y", {},
                           {"rows": np.full((3, 4), 0.25, np.float32),
                            "cols": grid(5, 4)}, (3, 3, 5))],
    "mean_of_the_channels": [Node("rd", "reduce", ("s",), "y",
                                  {"mode": "mean", "axes": [0], "keepdims": 0}, {}, (4, 4))],
    "sum_over_width": [Node("rd", "reduce", ("s",), "y",
                            {"mode": "sum", "axes": [2], "keepdims": 1}, {}, (3, 4, 1))],
    "mean_of_everything": [Node("rd", "reduce", ("s",), "y",
                                {"mode": "mean", "axes": [0, 1, 2], "keepdims": 0}, {}, ())],
}


@pytest.mark.parametrize("case", sorted(MOVES))
def test_ops_that_move_values_give_the_node_executors_bits(case):
    tail = MOVES[case]
    program = spiking_program(tail, "y", tail[-1].shape)
    SpikingNetwork(program)._fused_plan(False)  # plans every op
    assert_executors_agree(program, images((3, 4, 4)), 10)


@pytest.mark.parametrize("case", sorted(SUMS))
def test_ops_that_add_agree_to_float_rounding(case):
    tail = SUMS[case]
    assert_executors_agree(spiking_program(tail, "y", tail[-1].shape), images((3, 4, 4)), 10,
                           ROUNDING)


def apply_map(lmap, parts):
    """A LinearMap in numpy (float64): what a WEIGHTED_GATHER row computes."""
    values = np.empty(lmap.sources.size)
    for j, part in enumerate(parts):
        mine = lmap.inputs == j
        values[mine] = part.reshape(-1)[lmap.sources[mine]]
    if lmap.starts is None:
        return values.reshape(lmap.shape)
    if lmap.weights is not None:
        values *= lmap.weights
    size = prod(lmap.shape)
    owner = np.repeat(np.arange(size), np.diff(lmap.starts))
    out = np.bincount(owner, weights=values, minlength=size).astype(np.float64)
    if lmap.bias is not None:
        out += lmap.bias
    return out.reshape(lmap.shape)


def staged(node, shapes, parts):
    """The op's stages applied one after the other."""
    for lmap in LINEAR_MAPS[node.op](node, shapes):
        parts = [apply_map(lmap, parts)]
    return parts[0]


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


@st.composite
def index_map_cases(draw):
    """(node, input shapes, the reference on (1, ...) batches) of a random valid op."""
    shape = draw(shapes)
    rank = len(shape)
    op = draw(st.sampled_from(sorted(LINEAR_MAPS)))
    if op == "concat":
        axis = draw(st.integers(0, rank - 1))
        extra = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2))
        in_shapes = [shape] + [shape[:axis] + (n,) + shape[axis + 1:] for n in extra]
        attrs, arrays = {"axis": axis}, {}
        reference = lambda parts: concat(parts, axis)  # noqa: E731
    elif op == "transpose":
        in_shapes = [shape]
        perm = draw(st.permutations(range(rank)))
        attrs, arrays = {"perm": list(perm)}, {}
        reference = lambda parts: transpose(parts[0], perm)  # noqa: E731
    elif op == "pad":
        in_shapes = [shape]
        attrs = {"pads": draw(st.lists(st.integers(-2, 3), min_size=2 * rank,
                                       max_size=2 * rank)),
                 "mode": draw(st.sampled_from(["constant", "reflect", "edge"])),
                 "value": draw(st.sampled_from([0.0, -1.5, 2.0]))}
        arrays = {}
        reference = lambda parts: pad(parts[0], attrs["pads"], attrs["mode"],  # noqa: E731
                                      attrs["value"])
    elif op == "resize":
        shape = (*shape, draw(st.integers(1, 4))) if rank == 1 else shape
        in_shapes = [shape]
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        matrices = []
        for size in shape[-2:]:
            out = draw(st.integers(1, 5))
            if draw(st.booleans()):  # nearest: one-hot rows
                matrix = np.eye(size, dtype=np.float32)[rng.integers(0, size, out)]
            else:
                matrix = (rng.random((out, size)) * (rng.random((out, size)) < 0.5))
            matrices.append(matrix.astype(np.float32))
        attrs, arrays = {}, {"rows": matrices[0], "cols": matrices[1]}
        reference = lambda parts: resize(parts[0], *matrices)  # noqa: E731
    else:
        in_shapes = [shape]
        axes = draw(st.lists(st.integers(0, rank - 1), min_size=1, unique=True))
        attrs = {"mode": draw(st.sampled_from(["mean", "sum"])), "axes": axes,
                 "keepdims": draw(st.sampled_from([0, 1]))}
        arrays = {}
        reference = lambda parts: reduce(parts[0], attrs["mode"], axes,  # noqa: E731
                                         attrs["keepdims"])
    node = Node("op", op, tuple(f"in{j}" for j in range(len(in_shapes))), "out", attrs,
                arrays)
    try:
        node.shape = infer_shape(node, in_shapes)
    except FormatError:
        assume(False)
    return node, in_shapes, reference


@settings(max_examples=150, deadline=None)
@given(index_map_cases(), st.integers(0, 2**16))
def test_linear_maps_compute_the_numpy_reference(case, seed):
    node, in_shapes, reference = case
    rng = np.random.default_rng(seed)
    parts = [rng.normal(size=shape).astype(np.float32) for shape in in_shapes]
    expected = reference([p[None] for p in parts])[0]
    got = staged(node, in_shapes, parts)
    assert got.shape == tuple(node.shape) == expected.shape
    if node.op in ("concat", "transpose", "pad") or LINEAR_MAPS[node.op](
            node, in_shapes)[0].starts is None:
        np.testing.assert_array_equal(got.astype(np.float32), expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- analog

ANALOG_CASES = {
    "sigmoid": {}, "tanh": {}, "exp": {}, "softplus": {}, "elu": {"alpha": 0.7},
    "selu": {"alpha": 1.67, "beta": 1.05}, "hard_sigmoid": {"alpha": 0.2, "beta": 0.5},
    "hard_swish": {}, "softmax": {"axis": 0}, "log_softmax": {"axis": 2},
    "lrn": {"axis": 0, "alpha": 0.3, "beta": 0.75, "bias": 1.0, "size": 3},
}


def test_every_analog_function_has_a_kernel_and_a_case():
    assert set(FUNCTION_CODES) == set(ANALOG_ARITY)
    assert set(ANALOG_CASES) | {"mul", "div"} == set(ANALOG_ARITY)


def spread(name="spread"):
    """Affine 8 s - 1 of the spikes s (0 or 0.25): running means over [-1, 1]."""
    return Node(name, "affine", ("s",), "z", {},
                {"scale": np.float32([8.0]), "shift": np.float32([-1.0])}, (3, 4, 4))


@pytest.mark.parametrize("function", sorted(ANALOG_CASES))
def test_one_input_analog_functions_agree_with_the_node_executor(function):
    tail = [spread(), analog("g", function, ("z",), "y", (3, 4, 4), **ANALOG_CASES[function])]
    tolerance = None if function in EXACT_FUNCTIONS else LIBRARY
    assert_executors_agree(spiking_program(tail, "y", (3, 4, 4)), images((3, 4, 4)), 16,
                           tolerance)


@pytest.mark.parametrize("function", ["mul", "div"])
@pytest.mark.parametrize("other, shape", [
    ("x", (3, 4, 4)),  # static, same shape
    ("z", (3, 4, 4)),  # dynamic, same shape
    ("w", (4, 1)),  # static, broadcast
    ("c", (1, 4)),  # dynamic, broadcast
])
def test_two_input_analog_functions_give_the_node_executors_bits(function, other, shape):
    nodes = [spread(),
             Node("w", "reduce", ("x",), "w", {"mode": "mean", "axes": [0, 2], "keepdims": 0},
                  {}, (4,)),
             Node("w1", "reshape", ("w",), "w41", {"shape": [4, 1]}, {}, (4, 1)),
             Node("c", "reduce", ("z",), "c", {"mode": "sum", "axes": [0, 1], "keepdims": 1},
                  {}, (1, 1, 4)),
             Node("c1", "reshape", ("c",), "c14", {"shape": [1, 4]}, {}, (1, 4))]
    source = {"x": "x", "z": "z", "w": "w41", "c": "c14"}[other]
    nodes.append(analog("g", function, ("z", source), "y", (3, 4, 4)))
    program = spiking_program(nodes, "y", (3, 4, 4))
    x = images((3, 4, 4)) + 4.0  # no division by (almost) zero
    net = SpikingNetwork(program)
    assert net.is_dynamic(source) == (other in "zc")
    assert_executors_agree(program, x, 12)
