"""The numpy reference of the runtime: the dynamic part run node by node, for tests.

:class:`ReferenceNetwork` is a :class:`~snncompiler.runtime.engine.SpikingNetwork` whose
dynamic part runs with the node executor (:mod:`snncompiler.runtime.nodes`: one numpy
function per op over a whole time chunk, time folded into the batch) instead of the fused
numba kernels. The tests hold the fused executor to it: the same readouts up to float
rounding where the two add in another order, the same spike counts and counters. Nothing in
the runtime, the compiler or the CLI uses it; its memory is not bounded (it keeps a few
tensors of the largest size per step and sample of a chunk, and an observer sees the whole
chunk).
"""

from __future__ import annotations

import math

import numpy as np

from snncompiler.runtime.engine import SpikingNetwork
from snncompiler.runtime.graph import Value


class ReferenceNetwork(SpikingNetwork):
    """:class:`SpikingNetwork` with the node executor for its dynamic part (tests only)."""

    def chunk_shape(self, batch: int, *, observer: bool = False,
                    time_chunk: int | None = None) -> tuple[int, int]:
        """(steps, samples) of one time chunk: a few live tensors of the largest size per
        step and sample (input, output, scratch), always for the whole batch."""
        largest = max(math.prod(shape) for shape in self._shapes.values())
        steps = time_chunk or max(1, self.memory_budget // (4 * 4 * largest * batch))
        return steps, batch

    def state_bytes(self) -> int:
        largest = max(math.prod(shape) for shape in self._shapes.values())
        return 4 * 4 * largest * max(1, len(self.program.neuron_nodes()))

    def reset(self) -> None:
        super().reset()
        self._sums: dict[str, np.ndarray] = {}
        self.chunk_steps = 1  # the steps of the chunk being run, as the node executors read

    def counters(self) -> dict[str, np.ndarray]:
        return {node.name: np.asarray(self._state[node.name]["count"], np.int64)
                for node in self.program.nodes if "count" in self._state[node.name]}

    def net_spikes(self) -> dict[str, np.ndarray]:
        found = {}
        for node in self.program.neuron_nodes():
            memory = self._state[node.name].get("memory")
            if memory is not None:
                found[node.name] = memory.reshape(len(memory), *node.shape).copy()
        return found

    def _chunk(self, static: dict[str, Value], steps: int, observer=None) -> dict[str, Value]:
        self.chunk_steps = steps
        values = dict(static)
        self._execute(self._dynamic_nodes, values, observer)
        return values

    def _run_steps(self, feeds, steps: int, time_chunk: int | None, observer) -> dict:
        chunk, _ = self.chunk_shape(next(iter(feeds.values())).shape[0], time_chunk=time_chunk)
        static = self._static_values(feeds, observer)
        outputs = {spec.name: [] for spec in self.program.outputs}
        while self.t < steps:
            todo = min(chunk, steps - self.t)
            values = self._chunk(static, todo, observer)
            for name in outputs:
                outputs[name].append(self._readout(values[name], name, todo))
            self.t += todo
        return {name: np.concatenate(parts) for name, parts in outputs.items()}

    def _one_step(self, feeds, batch: int) -> dict[str, np.ndarray]:
        values = self._chunk(self._static_values(feeds), 1)
        return {spec.name: self._readout(values[spec.name], spec.name, 1)[0]
                for spec in self.program.outputs}

    def _readout(self, value: Value, name: str, steps: int) -> np.ndarray:
        """Readout after each step of the chunk: running sum over all steps so far / t."""
        if not value.dynamic:
            data = np.broadcast_to(value.data[None], (steps, *value.data.shape))
        else:
            data = value.data
        running = np.cumsum(data, axis=0, dtype=np.float64)
        if name in self._sums:
            running += self._sums[name]
        self._sums[name] = running[-1]
        elapsed = self.t + np.arange(1, steps + 1, dtype=np.float64)
        return (running / elapsed.reshape(-1, *([1] * (running.ndim - 1)))).astype(np.float32)
