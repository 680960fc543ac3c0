"""A fast twin of the runtime engine in PyTorch, for benchmarks only.

The project's engine (``snncompiler.runtime``) is numpy + numba and is what users run. On a
2-core CPU it simulates a Fashion-MNIST VGG at a few hundred image-steps per second, which
makes a 10,000-image, 8-value T grid, 10-variant ablation take days. This module runs the
same compiled :class:`~snncompiler.runtime.graph.Program` with torch's convolutions, with
the engine's semantics written out again:

- values are *static* until the first neuron (computed once, direct coding) and
  *dynamic* after it (one tensor per step);
- ``snm``: the kernel of ``runtime/neurons.py`` step for step in float32 (same order of
  operations per neuron, so for equal input currents the spikes are bit-identical);
- ``maxpool``: the exact signed tracker of ``runtime/pooling.py``, running sums in float64;
- readout: running sum of each output in float64, divided by t.

Only the accumulation order inside convolutions differs from numpy, so a current that lands
within float32 rounding of a threshold may spike one step apart. ``benchmarks/fidelity.py
--check N`` runs both on N images and reports the agreement of their predictions; the
results document quotes it. Nothing in the package imports this file.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from snncompiler.runtime.engine import nearest_calibrated
from snncompiler.runtime.graph import Program

_NEG_CODES = {"zero": 0, "minus_theta": 1, "off": 2}


def _pad(x: torch.Tensor, pads, value: float) -> torch.Tensor:
    top, left, bottom, right = pads
    if not (top or left or bottom or right):
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


def _align(x: torch.Tensor, rank: int) -> torch.Tensor:
    """(B, *sample) viewed with the sample padded to ``rank`` axes, like the engine's add."""
    sample = x.shape[1:]
    return x.reshape(x.shape[0], *([1] * (rank - len(sample))), *sample)


class TorchNetwork:
    """Runs a Program in torch; ``run(x, T, parameters_for)`` mirrors SpikingNetwork.run."""

    def __init__(self, program: Program):
        if len(program.inputs) != 1 or len(program.outputs) != 1:
            raise ValueError("one input and one output only")
        self.program = program
        self.arrays = {
            node.name: {k: torch.from_numpy(np.ascontiguousarray(v))
                        for k, v in node.arrays.items()}
            for node in program.nodes
        }
        dynamic = {program.inputs[0].name: False}
        for node in program.nodes:
            dynamic[node.output] = node.op.startswith("snm") or any(dynamic[n] for n in node.inputs)
        self.static_nodes = [n for n in program.nodes if not dynamic[n.output]]
        self.dynamic_nodes = [n for n in program.nodes if dynamic[n.output]]

    # ------------------------------------------------------------------ ops
    def _linear(self, node, inputs):
        a, arr = node.attrs, self.arrays[node.name]
        x = inputs[0]
        op = node.op
        if op == "conv":
            x = _pad(x, a["pads"], 0.0)
            return F.conv2d(x, arr["weight"], arr["bias"], tuple(a["strides"]), 0,
                            tuple(a["dilations"]), a["group"])
        if op == "gemm":
            return x @ arr["weight"] + arr["bias"]
        if op == "affine":
            return x * arr["scale"] + arr["shift"]
        if op == "add":
            rank = len(node.shape)
            return _align(inputs[0], rank) + _align(inputs[1], rank)
        if op == "reshape":
            return x.reshape(x.shape[0], *node.shape)
        if op == "global_avgpool":
            return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)
        if op == "avgpool":
            if a["ceil_mode"] or a["pads"][:2] != a["pads"][2:]:
                raise NotImplementedError(f"{node.name}: avgpool with ceil_mode/asymmetric pads")
            return F.avg_pool2d(x, tuple(a["kernel"]), tuple(a["strides"]), tuple(a["pads"][:2]),
                                count_include_pad=bool(a["count_include_pad"]))
        if op == "maxpool":
            return self._maxpool(node, x)
        raise NotImplementedError(f"{node.name}: op {op!r} has no torch twin")

    def _maxpool(self, node, x):
        a = node.attrs
        x = _pad(x, a["pads"], -math.inf)
        return F.max_pool2d(x, tuple(a["kernel"]), tuple(a["strides"]), 0,
                            tuple(a["dilations"]), ceil_mode=bool(a["ceil_mode"]))

    # ------------------------------------------------------------------ run
    @torch.no_grad()
    def run(self, x: np.ndarray, timesteps: int, parameters_for: int | None = None,
            readout_at: list[int] | None = None) -> dict[int, np.ndarray]:
        """Simulates ``timesteps`` steps; returns ``{t: readout after t steps}``."""
        program = self.program
        row = nearest_calibrated(program.timesteps, parameters_for or timesteps)
        readout_at = sorted(set(readout_at or [timesteps]))
        values = {program.inputs[0].name: torch.from_numpy(np.ascontiguousarray(x, np.float32))}
        for node in self.static_nodes:
            values[node.output] = self._linear(node, [values[n] for n in node.inputs])
        state: dict[str, dict] = {node.name: {} for node in self.dynamic_nodes}
        out_name = program.outputs[0].name
        total = None
        result = {}
        for t in range(1, timesteps + 1):
            step = dict(values)
            for node in self.dynamic_nodes:
                inputs = [step[n] for n in node.inputs]
                if node.op == "snm":
                    step[node.output] = self._snm(node, inputs[0], state[node.name], row)
                elif node.op == "maxpool":
                    st = state[node.name]
                    running = st.get("running")
                    running = inputs[0].double() if running is None else running + inputs[0]
                    st["running"] = running
                    pooled = self._maxpool(node, running)
                    previous = st.get("pooled", torch.zeros_like(pooled))
                    st["pooled"] = pooled
                    step[node.output] = (pooled - previous).float()
                else:
                    step[node.output] = self._linear(node, inputs)
            value = step[out_name].double()
            total = value if total is None else total + value
            if t in readout_at:
                result[t] = (total / t).float().numpy()
        return result

    def _snm(self, node, z, st, row):
        arr = self.arrays[node.name]
        channels = node.shape[0] if node.shape else 1
        shape = (1, channels) + (1,) * (len(node.shape) - 1)
        theta = arr["theta"][row].reshape(shape)
        k = int(node.attrs["max_spikes_per_step"])
        code = _NEG_CODES[node.attrs["theta_neg"]]
        if "v" not in st:
            v0 = arr["v0"][row].reshape(shape)
            st["v"] = v0.expand_as(z).clone()
            st["m"] = torch.zeros(z.shape, dtype=torch.int32)
        v, m = st["v"], st["m"]
        v += z
        sent = torch.zeros(z.shape, dtype=torch.int32)
        for i in range(k):
            fire = (v >= theta) & (sent == i)
            v -= torch.where(fire, theta, 0.0)
            sent += fire.int()
        if code != 2:
            neg = torch.zeros_like(theta) if code == 0 else -theta
            for i in range(k):
                fire = (sent == -i) & (v < neg) & (m + sent > 0)
                v += torch.where(fire, theta, 0.0)
                sent -= fire.int()
        m += sent
        return sent.float() * theta
