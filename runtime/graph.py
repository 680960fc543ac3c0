"""The in-memory form of a compiled spiking network: a flat, topologically ordered node list.

This is what the compiler's lowering produces, what the ``.snn`` writer stores and the reader
returns, and what the engine plans and runs. It holds only numpy arrays and JSON-able
values, so it can be validated field by field and stored without pickling.

Shapes never include the batch dimension (the only dynamic one) nor time: a node's
``shape`` is the shape of one sample of its output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from snncompiler.runtime.opset import NEURON_OPS


@dataclass
class Value:
    """A tensor during execution: ``data`` is (N, ...) if static, (Tc, N, ...) if dynamic.

    ``samples`` says which samples of the batch ``data`` holds: all of them, except in the
    values a run with an observer hands over when it splits the batch to keep its time
    chunks within the memory budget (see ``SpikingNetwork.run``).
    """

    data: np.ndarray
    dynamic: bool
    samples: slice = field(default_factory=lambda: slice(None))

    def folded(self, fn) -> Value:
        """``fn``, a function of a batch ``(B, ...)``, applied to every step at once by
        folding time into the batch."""
        if not self.dynamic:
            return Value(fn(self.data), False)
        steps, batch = self.data.shape[:2]
        out = fn(self.data.reshape(steps * batch, *self.data.shape[2:]))
        return Value(out.reshape(steps, batch, *out.shape[1:]), True)


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name and per-sample shape (batch excluded)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"


@dataclass
class Node:
    """One runtime op.

    Attributes:
        name: Unique node name (usually the ONNX node's name), used in every error message.
        op: Runtime op name, a key of :data:`snncompiler.runtime.opset.OPS`.
        inputs: Names of the tensors this node reads.
        output: Name of the single tensor this node writes.
        attrs: JSON-able attributes (ints, floats, strings, lists of those).
        arrays: Named parameter arrays (weights, thresholds, ...).
        shape: Per-sample output shape, batch and time excluded.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    output: str
    attrs: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    shape: tuple[int, ...] = ()


@dataclass
class Program:
    """A compiled spiking network.

    Attributes:
        inputs: Graph inputs, fed unchanged at every step (direct coding).
        outputs: Graph outputs, read out as the running mean of their value over time.
        nodes: Nodes in topological order.
        timesteps: The target T values the neuron parameters were calibrated for; every
            ``snm`` node holds one row of ``theta`` and ``v0`` per entry.
        default_timesteps: The T used when a caller does not give one.
        producer: Free text naming the tool and version that wrote the program.
        calibration: JSON-able summary of how the neurons were calibrated.
        metadata: Free JSON-able extras (source model name, opset, ...).
    """

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    nodes: list[Node]
    timesteps: list[int]
    default_timesteps: int
    producer: str = "snncompiler"
    calibration: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes[:20])
        raise KeyError(f"no node named {name!r}; nodes include: {known}")

    def neuron_nodes(self) -> list[Node]:
        """Nodes that carry calibrated neuron parameters (``snm`` and its variants)."""
        return [n for n in self.nodes if n.op in NEURON_OPS]
