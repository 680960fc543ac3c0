"""The compiler: front end, the pass pipeline, lowering. One visible list of passes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import onnx_graphsurgeon as gs

from snncompiler import frontend
from snncompiler.context import CompileConfig, CompileContext
from snncompiler.errors import CalibrationError, InputError
from snncompiler.lowering import (
    INTERNAL_OPS,
    LOWERINGS,
    check_allow_analog,
    lower_graph,
    problems_error,
    unsupported_error,
)
from snncompiler.npz import Dataset, check_input_shape, feeds
from snncompiler.passes.balance_potentials import balance_potentials, record_second_stage_stats
from snncompiler.passes.calibrate_neurons import calibrate_neurons
from snncompiler.passes.choose_resolution import choose_resolution
from snncompiler.passes.drop_identity import drop_identity
from snncompiler.passes.fold_batchnorm import fold_batchnorm
from snncompiler.passes.fold_batchnorm_forward import fold_batchnorm_forward
from snncompiler.passes.fold_pad import fold_pad
from snncompiler.passes.mark_readout import mark_readout
from snncompiler.passes.normalize_clip import normalize_clip
from snncompiler.passes.normalize_pool_pads import normalize_pool_pads
from snncompiler.passes.replace_activations import replace_activations
from snncompiler.passes.replace_relu import replace_relu
from snncompiler.runtime.engine import DEFAULT_MEMORY_BUDGET
from snncompiler.runtime.graph import Program

if TYPE_CHECKING:
    from snncompiler.distributed import Cluster

Pass = Callable[[gs.Graph, CompileContext], int]

# The order matters: calibration runs the graph in onnxruntime, so it must come after the
# exact ANN rewrites and before Relu becomes SNM (which onnxruntime cannot run).
PIPELINE: tuple[Pass, ...] = (
    drop_identity,
    normalize_pool_pads,
    fold_batchnorm,
    fold_pad,
    fold_batchnorm_forward,
    normalize_clip,
    calibrate_neurons,
    record_second_stage_stats,
    replace_relu,
    replace_activations,
    mark_readout,
)
NEEDS_DATA = {calibrate_neurons, record_second_stage_stats}


@dataclass
class CompileResult:
    program: Program
    pass_counts: dict[str, int]
    report: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_passes(graph: gs.Graph, ctx: CompileContext,
               passes: tuple[Pass, ...] = PIPELINE) -> dict[str, int]:
    """Runs ``passes`` in order, with cleanup and toposort after each; returns counts."""
    counts = {}
    for rewrite in passes:
        if ctx.dry_run and rewrite in NEEDS_DATA:
            continue
        counts[rewrite.__name__] = rewrite(graph, ctx)
        graph.cleanup().toposort()
    return counts


def check_convertible(graph: gs.Graph, config: CompileConfig) -> Program:
    """Converts a copy of ``graph`` with placeholder neurons: fails fast, before calibration.

    Raises:
        UnsupportedOpError: listing every node that cannot be converted.
    """
    unknown = {n.name: str(unsupported_error(n)) for n in graph.nodes
               if n.op not in LOWERINGS or n.op in INTERNAL_OPS}
    if unknown:
        raise problems_error(unknown)
    ctx = CompileContext(config, dry_run=True)
    copy = graph.copy()
    run_passes(copy, ctx)
    return lower_graph(copy, ctx)


def compile_model(model_path: str | Path, calibration: Dataset | None,
                  config: CompileConfig | None = None, *,
                  cluster: Cluster | None = None) -> CompileResult:
    """Converts an ONNX ANN into a spiking Program with DNISNM.

    Args:
        model_path: The ONNX file.
        calibration: Preprocessed calibration inputs (only ``x`` is used).
        config: Conversion choices.
        cluster: Run the work over calibration images (the statistics, the second stage's
            simulations) on this Dask cluster (:mod:`snncompiler.distributed`); the
            program is the same, bit for bit.

    Raises:
        ModelError, UnsupportedOpError, CalibrationError, InputError.
    """
    start = time.perf_counter()
    config = config or CompileConfig()
    check_allow_analog(config.allow_analog)
    model = frontend.load_model(model_path)
    graph = frontend.import_graph(model)
    check_convertible(graph, config)
    if calibration is None:
        raise CalibrationError("DNI needs calibration data: pass --calib FILE.npz")
    if len(graph.inputs) != 1:
        raise InputError(f"the model has {len(graph.inputs)} inputs; calibration from one "
                         ".npz file supports single-input models")
    source = graph.inputs[0]
    check_input_shape(calibration, source.name, tuple(source.shape[1:]))
    batch = calibration_batch_size(graph, config.calib_batch_size)
    ctx = CompileContext(
        config,
        calibration_batches=lambda: feeds(calibration.x, source.name, batch),
        calibration_size=len(calibration),
        cluster=cluster,
    )
    counts = run_passes(graph, ctx)
    program = lower_graph(graph, ctx, source=Path(model_path).name)
    # After lowering, like the second stage: both simulate the program they change.
    counts["choose_resolution"] = choose_resolution(program, ctx)
    if config.second_stage:
        # After lowering: the second stage simulates the program it corrects.
        counts["balance_potentials"] = balance_potentials(program, ctx)
    program.calibration = calibration_summary(ctx, calibration)
    return CompileResult(program, counts, ctx.report, time.perf_counter() - start)


def calibration_batch_size(graph: gs.Graph, largest: int) -> int:
    """Images per onnxruntime call during calibration: ``largest``, or fewer where the
    activations of one image (every tensor of the graph, an upper bound on what a call
    exposes and holds) times the batch would exceed the engine's memory budget, so that
    compile memory stays bounded on large inputs (a 224 px network has tens of MB of
    activations per image)."""
    per_image = sum(math.prod(int(d) for d in tensor.shape[1:])
                    for tensor in graph.tensors().values()
                    if isinstance(tensor, gs.Variable) and tensor.shape
                    and all(isinstance(d, int) for d in tensor.shape[1:]))
    return max(1, min(largest, DEFAULT_MEMORY_BUDGET // max(4 * per_image, 1)))


def resolution_of(ctx: CompileContext, timesteps: int) -> int:
    """The resolution that target ``timesteps`` was calibrated for: chosen or fixed."""
    return ctx.chosen_resolution.get(timesteps) or ctx.config.resolutions[0]


def calibration_summary(ctx: CompileContext, calibration: Dataset) -> dict:
    """The JSON-able record of how neurons were calibrated, stored in the .snn header."""
    config = ctx.config
    layers = {}
    for name, params in ctx.neuron_params.items():
        levels = [ctx.layer_levels.get(t, {}).get(name, resolution_of(ctx, t))
                  for t in config.timesteps]
        # Each T's row holds the parameters of the levels chosen for it.
        rows = [ctx.resolution_params.get(level, {}).get(name, params) for level in levels]
        layers[name] = {
            "channels": int(params.theta.shape[1]),
            "levels": levels,
            "mean_theta": [float(p.theta[row].mean()) for row, p in enumerate(rows)],
            "expected_error": [float(p.expected_error[row].mean())
                               for row, p in enumerate(rows)],
        }
    return {
        "method": "DNI" if config.initial_potential == "dni" else config.initial_potential,
        "samples": len(calibration),
        "source": Path(calibration.source).name,
        "timesteps": list(config.timesteps),
        "theta_neg": config.theta_neg,
        "max_spikes_per_step": config.max_spikes_per_step,
        "granularity": config.granularity,
        "initial_potential": config.initial_potential,
        "threshold_percentiles": list(config.threshold_percentiles),
        "threshold_search": config.threshold_search,
        "second_stage": ({"samples": config.second_stage_samples,
                          "sweeps": config.second_stage_sweeps,
                          "checked": list(ctx.second_stage_outcomes)}
                         if config.second_stage else None),
        "resolution": [resolution_of(ctx, t) for t in config.timesteps],
        "levels_per_step": [config.levels_per_step(t, resolution_of(ctx, t))
                            for t in config.timesteps],
        "layers": layers,
    }
