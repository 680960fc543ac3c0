"""Pass: DNI calibration, the threshold and initial potential of every Relu from data."""

from __future__ import annotations

import onnx_graphsurgeon as gs

from snncompiler.context import CompileContext
from snncompiler.errors import CalibrationError

from .calibration_stats import collect_activation_stats
from .dni import choose_neuron_parameters


def calibrate_neurons(graph: gs.Graph, ctx: CompileContext) -> int:
    """Calibrates the neuron that will replace every Relu (DNI).

    Runs the ANN as it stands (exported with ``gs.export_onnx``) in onnxruntime on
    ``ctx.calibration_batches()``, with the input of every Relu exposed as an output, keeps
    a bounded per-channel histogram of each (``ctx.activation_stats``) and chooses the
    thresholds and initial potentials for every T of ``ctx.config.timesteps``
    (``ctx.neuron_params``, see :func:`~snncompiler.passes.dni.choose_neuron_parameters`).
    One report line per activation goes to ``ctx.report``.

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
    for node in graph.nodes:
        if node.op == "Relu" and isinstance(node.inputs[0], gs.Variable):
            if node.inputs[0].name not in names:
                names.append(node.inputs[0].name)
    if not names:
        return 0
    if ctx.calibration_batches is None:
        raise CalibrationError("DNI needs calibration data: pass --calib FILE.npz")

    config = ctx.config
    model = gs.export_onnx(graph)
    stats = collect_activation_stats(
        model,
        names,
        ctx.calibration_batches(),
        bins=config.histogram_bins,
        progress=config.progress,
        total=ctx.calibration_size,
    )
    first_t = config.timesteps[0]
    for name in names:
        hist = stats[name]
        params = choose_neuron_parameters(
            hist,
            config.timesteps,
            percentiles=config.threshold_percentiles,
            threshold_search=config.threshold_search,
            initial_potential=config.initial_potential,
            granularity=config.granularity,
            max_spikes_per_step=config.max_spikes_per_step,
        )
        ctx.activation_stats[name] = hist
        ctx.neuron_params[name] = params
        inactive = int(params.inactive.sum())
        ctx.report.append(
            f"DNI {name}: {hist.channels} channels"
            + (f" ({inactive} never active)" if inactive else "")
            + f", T={first_t}: mean theta {params.theta[0].mean():.4g}, expected error "
            f"{params.expected_error[0].mean():.3g} (max thresholds, v0=0: "
            f"{params.baseline_error['p100/zero'][0].mean():.3g})"
        )
    return len(names)
