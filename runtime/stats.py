"""What a run did: synaptic operations and firing rates per layer, next to the ANN's MACs.

A layer on spikes is event-driven: it adds one weight row per nonzero input and per output
that input reaches, and multiplies nothing else (the spike value is the threshold, folded
into one multiply per event at most). Its *synaptic operations* are those additions, which
the engine counts as it runs (:meth:`SpikingNetwork.counters`). The layers of the static
segment (computed once from the directly coded input) do their dense multiply-accumulates
once per image, whatever T.

Example:
    >>> net.run(images, timesteps=32)
    >>> report = activity(net)
    >>> report.synaptic_ops, report.ann_macs      # per image, over the 32 steps / one pass
    >>> [(layer.name, layer.firing_rate) for layer in report.neurons()]

Over a data set, simulated batch by batch, :func:`combine` averages the batches' reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from snncompiler.runtime.errors import InputError
from snncompiler.runtime.opset import NEURON_OPS

SYNAPTIC_OPS = ("conv", "gemm")
_ORIGINS = (*NEURON_OPS, *SYNAPTIC_OPS, "analog")
"""Ops whose output is a signal of its own; every other op only routes, pools or adds the
signals it reads (what :func:`spike_sources` looks through)."""


@dataclass(frozen=True)
class LayerActivity:
    """One layer's activity, averaged over the images of the run.

    Attributes:
        name, op: The node.
        kind: ``"synapses"`` (conv/gemm on spikes, event-driven), ``"static"`` (conv/gemm of
            the static segment, dense, once per image) or ``"neurons"``.
        per_image: Additions (synapses), multiply-accumulates (static) or spikes (neurons)
            per image over the steps simulated.
        dense_macs: The layer's multiply-accumulates in one ANN pass, per image (0 for
            neurons).
        neurons: Neurons in the layer (0 for the others).
        firing_rate: Spikes per neuron and step (0 for the others).
        sources: For ``synapses``: the layers whose signal its input is, through pools,
            reshapes and adds (see :func:`spike_sources`); usually one neuron layer.
    """

    name: str
    op: str
    kind: str
    per_image: float
    dense_macs: int
    neurons: int = 0
    firing_rate: float = 0.0
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Activity:
    """A run's activity per image (see :func:`activity`).

    Attributes:
        steps: Steps simulated since the last reset.
        images: Images in the batch.
        layers: One entry per conv, gemm and neuron layer, in program order.
        synaptic_ops: Additions done by the event-driven layers, per image, over ``steps``.
        static_macs: Multiply-accumulates of the static segment, per image (done once).
        ann_macs: Multiply-accumulates of one ANN pass (every conv and gemm), per image.
    """

    steps: int
    images: int
    layers: list[LayerActivity]
    synaptic_ops: float
    static_macs: int
    ann_macs: int

    def neurons(self) -> list[LayerActivity]:
        return [layer for layer in self.layers if layer.kind == "neurons"]

    def synaptic_ops_per_step(self) -> float:
        return self.synaptic_ops / max(self.steps, 1)

    def mean_firing_rate(self) -> float:
        """Spikes per neuron and step over every counted neuron layer (big layers weigh
        more: it is the network's rate, not the mean of the layers' rates); 0 if none."""
        neurons = sum(layer.neurons for layer in self.neurons())
        spikes = sum(layer.per_image for layer in self.neurons())
        return spikes / (neurons * self.steps) if neurons else 0.0


def dense_macs(node, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one ``conv`` or ``gemm`` node on one sample (0 otherwise)."""
    if node.op == "conv":
        out_channels, per_group, kh, kw = node.arrays["weight"].shape
        return out_channels * per_group * kh * kw * math.prod(node.shape[1:])
    if node.op == "gemm":
        n_in, n_out = node.arrays["weight"].shape
        return math.prod(input_shape[:-1]) * n_in * n_out
    return 0


def ann_macs(program, shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Multiply-accumulates per sample of every conv and gemm node of one ANN pass."""
    return {node.name: dense_macs(node, shapes[node.inputs[0]])
            for node in program.nodes if node.op in SYNAPTIC_OPS}


def spike_sources(program, tensor: str, is_dynamic=lambda name: True) -> tuple[str, ...]:
    """The nodes whose signal reaches ``tensor`` through ops that only route, pool or add
    (reshape, max pool, add, affine, ...): neuron layers, conv/gemm layers or analog ops, in
    program order. Tensors that ``is_dynamic`` says are constant over time are not followed.
    """
    producers = {node.output: node for node in program.nodes}
    found, todo, seen = set(), [tensor], set()
    while todo:
        name = todo.pop()
        node = producers.get(name)
        if name in seen or node is None or not is_dynamic(name):
            continue
        seen.add(name)
        if node.op in _ORIGINS:
            found.add(node.name)
        else:
            todo.extend(node.inputs)
    return tuple(node.name for node in program.nodes if node.name in found)


def activity(net) -> Activity:
    """Synaptic operations and firing rates of the steps ``net`` ran since its last reset.

    Args:
        net: A :class:`snncompiler.runtime.SpikingNetwork` after :meth:`run` or some
            :meth:`step` calls.

    Raises:
        InputError: Nothing was simulated since the last reset.
    """
    counted = net.counters()
    steps = net.t
    if steps == 0:
        raise InputError("no steps simulated since the last reset: run the network first")
    images = max((len(v) for v in counted.values()), default=0)
    shapes = net.tensor_shapes
    macs = ann_macs(net.program, shapes)
    layers = []
    synaptic = 0.0
    static = 0
    for node in net.program.nodes:
        if node.op in SYNAPTIC_OPS:
            if net.is_dynamic(node.inputs[0]):
                per_image = float(counted[node.name].mean()) if node.name in counted else 0.0
                synaptic += per_image
                sources = spike_sources(net.program, node.inputs[0], net.is_dynamic)
                layers.append(LayerActivity(node.name, node.op, "synapses", per_image,
                                            macs[node.name], sources=sources))
            else:
                static += macs[node.name]
                layers.append(LayerActivity(node.name, node.op, "static",
                                            float(macs[node.name]), macs[node.name]))
        elif node.name in counted:
            neurons = math.prod(shapes[node.output])
            spikes = float(counted[node.name].mean())
            layers.append(LayerActivity(node.name, node.op, "neurons", spikes, 0, neurons,
                                        spikes / (neurons * steps)))
    return Activity(steps, images, layers, synaptic, static, sum(macs.values()))


def combine(reports: Sequence[Activity]) -> Activity:
    """The activity of several runs of one network for the same number of steps (the batches
    of a data set), per image over all their images.

    Raises:
        InputError: No reports, or reports of different networks or numbers of steps.
    """
    if not reports:
        raise InputError("no activity to combine")
    first = reports[0]
    names = [layer.name for layer in first.layers]
    for report in reports[1:]:
        if report.steps != first.steps or [layer.name for layer in report.layers] != names:
            raise InputError("can only combine the activity of runs of the same network for "
                             f"the same steps (got {first.steps} and {report.steps} steps)")
    images = sum(report.images for report in reports)

    def mean(values) -> float:
        # Weighted by images: a report's numbers are per image of its own batch.
        return sum(v * report.images for v, report in zip(values, reports)) / max(images, 1)

    layers = []
    for k, layer in enumerate(first.layers):
        per_image = mean(report.layers[k].per_image for report in reports)
        rate = per_image / (layer.neurons * first.steps) if layer.kind == "neurons" else 0.0
        layers.append(replace(layer, per_image=per_image, firing_rate=rate))
    return Activity(first.steps, images, layers,
                    mean(report.synaptic_ops for report in reports), first.static_macs,
                    first.ann_macs)
