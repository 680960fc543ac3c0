"""Pass: DNI calibration, the threshold and initial potential of every Relu from data."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
from tqdm.auto import tqdm

from snncompiler.context import CompileContext
from snncompiler.errors import CalibrationError

from .calibration_stats import collect_activation_stats
from .dni import choose_neuron_parameters
from .replace_activations import (
    ABS_SUFFIX,
    calibration_tensor,
    is_clip_neuron,
    is_leaky_neuron,
)


def calibrate_neurons(graph: gs.Graph, ctx: CompileContext) -> int:
    """Calibrates the neuron that will replace every Relu, Clip(x, 0, hi), LeakyRelu, PRelu.

    Runs the ANN as it stands (exported with ``gs.export_onnx``) in onnxruntime on
    ``ctx.calibration_batches()`` (on the workers of ``ctx.cluster`` if given), with the
    input of every Relu exposed as an output (for the other activations, the tensor
    :func:`~.replace_activations.calibration_tensor` names: a Clip's output; ``|f(x)|`` of
    a leaky one, through an added Abs node), keeps a bounded per-channel histogram of each
    (``ctx.activation_stats``) and chooses the thresholds and initial potentials for every
    T of ``ctx.config.timesteps`` (``ctx.neuron_params``, see
    :func:`~snncompiler.passes.dni.choose_neuron_parameters`). When the resolution is to be
    chosen (``config.resolution`` None), it does so for every candidate resolution, and for
    the coarser levels that the layer search may give single layers
    (``config.layer_resolutions``), from the same histograms (``ctx.resolution_params``;
    ``ctx.neuron_params`` gets the fewest candidate's)
    and keeps the ANN for ``choose_resolution`` (``ctx.resolution_ann``). One report line
    per activation goes to ``ctx.report``.

    Preconditions: the graph is still an ANN that onnxruntime can run (no SNM nodes yet),
    and calibration data was given. A Relu whose input is a constant is skipped: it is
    not an activation and will be folded away.
    Preserves: the graph is not modified; only ``ctx`` changes.

    Returns:
        The number of activation tensors calibrated (several Relus reading one tensor count
        once).

    Raises:
        CalibrationError: No calibration data, or data that does not fit the model.
    """
    names = []
    signed = set()  # tensors of |f(x)| that calibrate leaky (signed) neurons
    for node in graph.nodes:
        if node.op == "Relu" and isinstance(node.inputs[0], gs.Variable):
            name = node.inputs[0].name
        elif is_clip_neuron(node) or is_leaky_neuron(node):
            name = calibration_tensor(node)
            if is_leaky_neuron(node):
                signed.add(name)
        else:
            continue
        if name not in names:
            names.append(name)
    if not names:
        return 0
    if ctx.calibration_batches is None:
        raise CalibrationError("DNI needs calibration data: pass --calib FILE.npz")

    config = ctx.config
    model = gs.export_onnx(_with_abs_outputs(graph) if signed else graph)
    collect = ctx.cluster.activation_stats if ctx.cluster is not None \
        else collect_activation_stats
    stats = collect(
        model,
        names,
        ctx.calibration_batches(),
        bins=config.histogram_bins,
        progress=config.progress,
        total=ctx.calibration_size,
    )
    first_t = config.timesteps[0]
    choosing = len(config.resolutions) > 1
    if choosing:
        readout = graph.outputs[0].name
        ctx.resolution_ann = (model, readout)
    # DNI's search takes minutes on a deep network when the levels are chosen (every
    # candidate, every layer): a bar per layer says where it is.
    prepared = config.layer_resolutions if choosing else config.resolutions
    for name in tqdm(names, desc=f"thresholds ({len(prepared)} level counts)", unit="layer",
                     disable=not config.progress, leave=False):
        # Each histogram is dropped once its parameters are chosen: nothing later needs
        # them, and on a 224 px network they are hundreds of MB that the later stages of
        # the compile would otherwise hold on to.
        hist = stats.pop(name)
        # A signed neuron rounds values of both signs: v0 = theta / 2 rounds both to the
        # nearest level, which is optimal for constant inputs (see passes/dni.py), so the
        # v0 search of "dni" would only tie with it on |f(x)|.
        potential = config.initial_potential
        if name in signed and potential == "dni":
            potential = "half"
        by_resolution = {
            resolution: choose_neuron_parameters(
                hist,
                config.timesteps,
                percentiles=config.threshold_percentiles,
                threshold_search=config.threshold_search,
                initial_potential=potential,
                granularity=config.granularity,
                levels_per_step=[config.levels_per_step(t, resolution)
                                 for t in config.timesteps],
            )
            for resolution in prepared}
        if choosing:
            for resolution, candidate in by_resolution.items():
                ctx.resolution_params.setdefault(resolution, {})[name] = candidate
        params = by_resolution[config.resolutions[0]]
        ctx.neuron_params[name] = params
        inactive = int(params.inactive.sum())
        ctx.report.append(
            f"DNI {name}: {hist.channels} channels{' (signed)' if name in signed else ''}"
            + (f" ({inactive} never active)" if inactive else "")
            + f", T={first_t}: mean theta {params.theta[0].mean():.4g}, expected error "
            f"{params.expected_error[0].mean():.3g} (max thresholds, v0=0: "
            f"{params.baseline_error['p100/zero'][0].mean():.3g})"
        )
    return len(names)


def _with_abs_outputs(graph: gs.Graph) -> gs.Graph:
    """A copy of ``graph`` with ``|y|`` computed for the output ``y`` of every leaky neuron."""
    work = graph.copy()
    for node in list(work.nodes):
        if is_leaky_neuron(node):
            result = node.outputs[0]
            magnitude = gs.Variable(result.name + ABS_SUFFIX, dtype=result.dtype or np.float32,
                                    shape=result.shape)
            work.nodes.append(gs.Node("Abs", f"{node.name}{ABS_SUFFIX}", inputs=[result],
                                      outputs=[magnitude]))
    return work
