"""The memory budget bounds the time chunks of a run with an observer, record rows included.

An observer gets every dynamic node's output at every step: the fused executor keeps them
in record rows, one per step and sample of a chunk. On a 224-pixel network one step of a
batch of 16 holds tens of MB of them, so a chunk with an observer covers fewer samples
(``SpikingNetwork.chunk_shape``) when a step of the whole batch would not fit.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from snncompiler.runtime import SpikingNetwork
from tests.runtime.programs import every_op
from tests.without_jit import REPO

# The child runs a network on a batch of 16 at 224 x 224 pixels without an observer, then
# with one, and compares its peak RSS (getrusage) after each. The runs without an observer
# set the baseline: the interpreter, the compiled kernels and what a run holds whatever its
# observer (the network's state, the static rows, the kernels' scratch, the readout). They
# are two, as from the second run on the previous run's state is kept for reuse while the
# static segment is computed: that is the steady state. A fixed mmap threshold makes glibc
# give freed arrays back at once, so that a run reuses memory no better or worse than a
# fresh process would.
CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from snncompiler.runtime import SpikingNetwork
    from tests.runtime.programs import wide_input_net

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

    budget, batch, steps = (int(v) for v in sys.argv[1:])
    program = wide_input_net()
    x = np.random.default_rng(0).normal(size=(batch, *program.inputs[0].shape))
    x = x.astype(np.float32)
    net = SpikingNetwork(program, memory_budget=budget)
    for _ in range(2):
        plain = net.run(x, steps)
    baseline = peak()
    calls = []
    observed = net.run(x, steps, observer=lambda node, value, t0: calls.append(
        [node.name, t0, value.dynamic, value.samples.start, value.samples.stop]))
    print(json.dumps({
        "baseline": baseline, "peak": peak(), "calls": calls,
        "same": bool(np.array_equal(plain, observed)),
        "chunk": net.chunk_shape(batch, observer=True),
        "record": 4 * net._fused_plan(True).record_size,
    }))
""")


def test_a_run_with_an_observer_stays_within_the_budget():
    budget, batch, steps = 4 * 2**20, 16, 3
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(budget), str(batch), str(steps)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # One step of the whole batch's record rows would be ten times the budget ...
    assert result["record"] * batch > 8 * budget
    # ... so a chunk is one step of one sample (2.4 MB of record rows).
    assert tuple(result["chunk"]) == (1, 1) and result["record"] < budget
    grown = result["peak"] - result["baseline"]
    assert grown <= budget, f"the observer's run grew the peak RSS by {grown / 2**20:.1f} MiB"
    assert result["same"]  # the same readout, bit for bit
    # Every dynamic node is observed at every step, for every sample, one at a time.
    dynamic = [call for call in result["calls"] if call[2]]
    for name in ("n1", "c2", "n2", "gap", "flat", "fc"):
        mine = [(t0, start, stop) for node, t0, _, start, stop in dynamic if node == name]
        assert mine == [(t, n, n + 1) for t in range(steps) for n in range(batch)], name


def test_sample_blocks_show_the_observer_what_whole_batches_do():
    """Under a budget that fits a few samples per chunk, the observed blocks put together
    are the whole batch's values, and the readout keeps its bits."""
    program = every_op()
    x = np.random.default_rng(2).normal(size=(7, 3, 6, 6)).astype(np.float32)
    wide = SpikingNetwork(program)
    plan = wide._fused_plan(True)
    per_sample_step = 4 * (plan.record_size + plan.readout_size)
    narrow = SpikingNetwork(program, memory_budget=3 * per_sample_step)
    assert wide.chunk_shape(7, observer=True)[1] == 7
    assert narrow.chunk_shape(7, observer=True) == (1, 3)
    assert narrow.chunk_shape(7, observer=True, time_chunk=2) == (2, 1)
    # Without an observer a chunk holds readout rows only: the whole batch, more steps.
    steps = 3 * per_sample_step // (7 * 4 * plan.readout_size)
    assert narrow.chunk_shape(7) == (steps, 7) and steps > 1

    def collect(net, **options):
        seen: dict[str, np.ndarray] = {}

        def observe(node, value, t0):
            if not value.dynamic:
                return
            full = seen.setdefault(node.name, np.full((9, 7, *node.shape), np.nan, np.float32))
            full[t0:t0 + value.data.shape[0], value.samples] = value.data

        return net.run(x, 9, observer=observe, **options), seen

    whole, expected = collect(wide)
    for options in ({}, {"time_chunk": 4}):
        readout, seen = collect(narrow, **options)
        for name in whole:
            np.testing.assert_array_equal(readout[name], whole[name], err_msg=name)
        assert seen.keys() == expected.keys()
        for name, values in seen.items():
            np.testing.assert_array_equal(values, expected[name], err_msg=name)
