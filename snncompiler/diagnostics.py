"""Per-layer diagnostics: where a converted network loses accuracy (``snnc eval --layers``).

For every neuron layer and every requested T, from a run with the parameters calibrated for
that T:

- ``firing_rate``: spikes per neuron per step, ``sum_t |s(t)| / theta / (neurons * T)``
  (a negative spike counts as one spike, a burst of k as k);
- with the ANN: the SNN's rate ``r = sum_t s(t) / T`` (what the next layer integrates, in
  the activation's units) against the ANN's activation ``y`` (the output of the Relu the
  neuron replaced, from onnxruntime with those outputs exposed), over every neuron of every
  image: ``mean_abs_error = E|r - y|``, ``relative_error = E|r - y| / E|y|`` and
  ``bias = E[r - y]``.

The relative error of a healthy conversion shrinks about as 1/T and grows slowly with depth;
a layer whose error jumps above its predecessor's is where accuracy is lost (a threshold
that clips too much, a max-pool of noisy inputs, a bias the second stage did not remove).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from snncompiler.errors import InputError
from snncompiler.evaluate import simulation_batch
from snncompiler.runtime.engine import SpikingNetwork, nearest_calibrated


@dataclass
class LayerDiagnostics:
    """One neuron layer's numbers, one entry per T of ``timesteps``.

    Error fields are None when no ANN was given or the ANN has no tensor of this name.
    """

    node: str
    tensor: str
    neurons: int
    timesteps: list[int]
    firing_rate: list[float]
    mean_abs_error: list[float] | None = None
    relative_error: list[float] | None = None
    bias: list[float] | None = None
    ann_mean: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def ann_activations(model: onnx.ModelProto, names: Sequence[str]) -> Callable:
    """A function ``x -> {name: activation}`` running ``model`` in onnxruntime.

    The named tensors (those of ``names`` that some node of the model produces) become extra
    graph outputs of a copy of the model; the model given is not modified.
    """
    from snncompiler import frontend

    produced = {out for node in model.graph.node for out in node.output}
    wanted = [n for n in dict.fromkeys(names) if n in produced]
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in wanted:
        if name not in present:
            copy.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = frontend.ort_session(copy)
    feed_name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(wanted, session.run(wanted, {feed_name: x}))) if wanted else {}

    return run


def layer_diagnostics(
    net: SpikingNetwork,
    x: np.ndarray,
    timesteps: Sequence[int],
    *,
    ann: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None,
    batch_size: int = 128,
) -> list[LayerDiagnostics]:
    """Firing rate and SNN-versus-ANN error of every neuron layer at every T.

    Args:
        net: The spiking network (single input).
        x: Inputs ``(N, ...)``, preprocessed.
        timesteps: The T values to report; each runs with its own calibrated parameters.
        ann: Optional ``x -> {tensor name: ANN activation}`` (see :func:`ann_activations`);
            a neuron layer is compared with the ANN tensor of its output's name.
        batch_size: Images simulated at once, at most: fewer where they would not fit the
            network's memory budget (see :func:`snncompiler.evaluate.simulation_batch`).

    Returns:
        One entry per neuron layer, in the program's (topological) order.
    """
    program = net.program
    if len(program.inputs) != 1:
        raise InputError("layer diagnostics support networks with one input")
    if len(x) == 0 or batch_size < 1:
        raise InputError("layer diagnostics need at least one image and a positive batch size")
    steps = sorted(set(int(t) for t in timesteps))
    if not steps or steps[0] < 1:
        raise InputError(f"timesteps must be positive integers, got {list(timesteps)}")
    neurons = program.neuron_nodes()
    by_name = {n.name: n for n in neurons}
    size = {n.name: int(np.prod(n.shape)) for n in neurons}
    spikes = np.zeros((len(neurons), len(steps)))
    abs_err = np.zeros_like(spikes)
    signed = np.zeros_like(spikes)
    ann_abs = np.zeros(len(neurons))
    compared = np.zeros(len(neurons), dtype=bool)
    index = {n.name: i for i, n in enumerate(neurons)}
    # Beside the network's state, each sample holds its net spike counts (int32) and the
    # ANN's activations (float32) of every neuron layer, and one layer's error (float64).
    per_sample = 4 * sum(size.values()) * (2 if ann is not None else 1) + 8 * max(
        size.values(), default=0)
    batch_size = simulation_batch(net, batch_size, per_sample)

    for first in range(0, len(x), batch_size):
        batch = np.asarray(x[first:first + batch_size])
        reference = ann(batch) if ann is not None else {}
        for n in neurons:
            if n.output in reference:
                compared[index[n.name]] = True
                ann_abs[index[n.name]] += np.abs(reference[n.output]).sum(dtype=np.float64)
        for j, t in enumerate(steps):
            row = nearest_calibrated(program.timesteps, t)
            # What a layer sent over the run is its threshold times its net spike count,
            # and the spikes it sent are its counter: no step needs observing (an observer
            # would hold every layer's output of every step).
            net.run(batch, t, parameters_for=t)
            sent, counted = net.net_spikes(), net.counters()
            for name, count in sent.items():
                i = index[name]
                theta = by_name[name].arrays["theta"][row].astype(np.float64)
                # (C,) against (N, C, ...); a layer of one neuron has one threshold
                total = count * (theta.reshape(theta.shape + (1,) * (count.ndim - 2))
                                 if count.ndim > 1 else theta[0])
                spikes[i, j] += counted[name].sum(dtype=np.float64)
                tensor = by_name[name].output
                if tensor in reference:
                    total /= t  # in place: the layer's error is the largest array here
                    total -= reference[tensor].reshape(total.shape)
                    signed[i, j] += total.sum()
                    abs_err[i, j] += np.abs(total, out=total).sum()
            del sent
        del reference

    results = []
    for i, n in enumerate(neurons):
        count = len(x) * size[n.name]
        item = LayerDiagnostics(
            node=n.name, tensor=n.output, neurons=size[n.name], timesteps=steps,
            firing_rate=[float(v) for v in spikes[i] / (count * np.asarray(steps))])
        if compared[i]:
            mean_ann = ann_abs[i] / count
            item.mean_abs_error = [float(v) for v in abs_err[i] / count]
            item.relative_error = [float(v / count / max(mean_ann, 1e-12)) for v in abs_err[i]]
            item.bias = [float(v) for v in signed[i] / count]
            item.ann_mean = float(mean_ann)
        results.append(item)
    return results


def format_layers(layers: list[LayerDiagnostics]) -> str:
    """A plain-text table: one row per layer and T."""
    header = ["layer", "neurons", "T", "rate", "|SNN-ANN|", "relative", "bias"]
    rows = []
    for layer in layers:
        for j, t in enumerate(layer.timesteps):
            has_ann = layer.mean_abs_error is not None
            rows.append([
                layer.node if j == 0 else "", str(layer.neurons) if j == 0 else "", str(t),
                f"{layer.firing_rate[j]:.4f}",
                f"{layer.mean_abs_error[j]:.4g}" if has_ann else "-",
                f"{100 * layer.relative_error[j]:.2f}%" if has_ann else "-",
                f"{layer.bias[j]:+.3g}" if has_ann else "-",
            ])
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(c.ljust(w) if k == 0 else c.rjust(w) for k, (c, w) in
                       enumerate(zip(row, widths))) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("rate: spikes per neuron per step; |SNN-ANN|: mean |cumulative output / T - "
                 "ANN activation|; relative: that over the ANN's mean |activation|")
    return "\n".join(lines)
