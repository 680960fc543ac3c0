"""The op-by-op timer replays a run: the same op rows, steps and counts as SpikingNetwork."""

import numpy as np

from benchmarks import op_time
from snncompiler.runtime import SpikingNetwork
from tests.runtime import programs


def test_each_op_counts_what_a_run_counts_and_the_warm_up_step_is_not_counted():
    net = SpikingNetwork(programs.mobile_block(seed=3, max_spikes=4))
    x = np.random.default_rng(3).normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    seconds, counts, plan = op_time.time_ops(net, x, steps=16)
    net.run(x, 16)
    counted = net.counters()
    assert counted  # the block has neuron layers and convs that count
    timed = {}  # by node: a node that is an output also has a readout row, which counts 0
    for k, name in enumerate(plan.op_nodes):
        timed[name] = timed.get(name, 0) + int(counts[k])
    for name, total in counted.items():
        assert timed[name] == total[0], name
    assert (seconds > 0).all() and len(seconds) == len(plan.ops)
