"""Accuracy of a spiking network against T, next to the ANN it came from, and the work it
did: synaptic operations per image against the ANN's multiply-accumulates, firing rates.

The work is read off the engine's counters of the runs the accuracy needs (no extra
simulation): one run per calibrated parameter set, of the largest T that uses it, so it is
reported for those T (:func:`snncompiler.runtime.stats.activity` says what is counted).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numba
import numpy as np
from tqdm.auto import tqdm

from snncompiler.errors import InputError
from snncompiler.npz import Dataset, check_input_shape
from snncompiler.runtime import stats
from snncompiler.runtime.engine import SpikingNetwork, nearest_calibrated

MAX_TIMESTEPS = 2**31 - 1
"""Largest T: the ``.snn`` format stores every integer in this range."""

_DIGITS = re.compile(r"[0-9]+")  # ASCII only: int() would also take "٣", "1_000" and "+5"


@dataclass
class EvalResult:
    """What ``snnc eval`` prints and writes as JSON.

    ``snn_accuracy`` and ``agreement`` (top-1 agreement with the ANN) are per entry of
    ``timesteps``; accuracies are None without labels, agreement None without the ANN.

    The work, per image: ``synaptic_ops`` (additions done by the event-driven layers over
    T steps), ``synaptic_ops_per_ann_mac`` (that over ``ann_macs * T``) and
    ``mean_firing_rate`` (spikes per neuron and step, all neuron layers together) are per
    entry of ``timesteps`` and None for a T that is not the largest of its parameter set
    (it shares that T's run, whose counters cover all its steps). ``ann_macs`` is one ANN
    pass (every conv and gemm); ``static_macs`` the part of it the SNN computes once per
    image from the directly coded input. ``layer_activity`` has one entry per neuron layer
    at T = ``layer_activity_timesteps`` (the largest T): its firing rate, and the synaptic
    operations of the conv/gemm layers its spikes go ``into``.

    ``activation_sparsity`` is NeuroBench's ActivationSparsity: the fraction of the neuron
    layers' outputs (every neuron at every step of every image) that are zero. It is
    ``1 - mean_firing_rate`` when no neuron sends more than one spike per step (each spike
    is then one nonzero output), and None otherwise (a burst is one nonzero output but
    several spikes) and where ``mean_firing_rate`` is None; see docs/metrics.md.
    """

    timesteps: list[int]
    snn_accuracy: list[float] | None
    agreement: list[float] | None
    ann_accuracy: float | None
    n: int
    seconds: float
    parameters_for: list[int]
    ann_macs: int | None = None
    static_macs: int | None = None
    synaptic_ops: list[float | None] | None = None
    synaptic_ops_per_ann_mac: list[float | None] | None = None
    mean_firing_rate: list[float | None] | None = None
    layer_activity_timesteps: int | None = None
    layer_activity: list[dict] | None = None
    activation_sparsity: list[float | None] | None = None

    def to_json(self) -> dict:
        return asdict(self)


def parse_timesteps(text: str) -> list[int]:
    """``-T`` values in the user's order, repeats dropped: ``"8,4,8"`` -> [8, 4].

    The one parser of T lists (``snnc``, ``snnc eval``, ``snnc demo``): strict, so that a
    typo is refused before any work rather than read as something else.

    Raises:
        InputError: Anything but comma-separated decimal integers in 1..MAX_TIMESTEPS.
    """
    items = [item.strip() for item in str(text).split(",")]
    for item in items:
        if not _DIGITS.fullmatch(item):
            shown = f"{item!r} is not" if item else "an empty item is not"
            raise InputError(f"-T {text!r}: {shown} a positive integer; give T as a comma "
                             "list such as -T 1,2,4,8")
        value = int(item)
        if not 1 <= value <= MAX_TIMESTEPS:
            raise InputError(f"-T {text!r}: {value} is out of range; T goes from 1 to "
                             f"{MAX_TIMESTEPS}")
    return list(dict.fromkeys(int(item) for item in items))


def evaluate(
    net: SpikingNetwork,
    dataset: Dataset,
    timesteps: Sequence[int],
    *,
    ann: Callable[[np.ndarray], np.ndarray] | None = None,
    batch_size: int = 128,
    progress: bool = True,
) -> EvalResult:
    """Runs the network once per calibrated parameter set and reads every T off the run.

    Args:
        net: The spiking network (single input, single output).
        dataset: Inputs and optional labels.
        timesteps: T values to report (each readout after t steps).
        ann: Optional function returning the ANN's outputs for a batch (onnxruntime).
        batch_size: Images simulated at once.
        progress: Show a progress bar.
    """
    program = net.program
    if len(program.inputs) != 1 or len(program.outputs) != 1:
        raise InputError("evaluation supports networks with one input and one output")
    check_input_shape(dataset, program.inputs[0].name, program.inputs[0].shape)
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    if len(dataset) == 0:
        raise InputError(f"{dataset.source}: no samples to evaluate")
    timesteps = sorted(set(int(t) for t in timesteps))
    start = time.perf_counter()
    bar = tqdm(total=len(dataset) * len(parameter_groups(program, timesteps)),
               desc="evaluating", unit="img", disable=not progress, leave=False)
    runs = [evaluate_batch(net, dataset.x[first : first + batch_size], timesteps, ann=ann,
                           bar=bar)
            for first in range(0, len(dataset), batch_size)]
    bar.close()
    return summarize(program, runs, timesteps, dataset.y, seconds=time.perf_counter() - start)


@dataclass
class BatchRun:
    """One batch's evaluation, kept per sample, so that batches evaluated anywhere (on the
    workers of a cluster) merge into the same result as one run (:func:`summarize`).

    Attributes:
        snn_top1: ``(len(timesteps), n)`` the SNN's top-1 class after each T.
        ann_top1: ``(n,)`` the ANN's top-1 class, or None without the ANN.
        activity: The work of the batch's run of each parameter row (the keys of
            :func:`parameter_groups`).
    """

    snn_top1: np.ndarray
    ann_top1: np.ndarray | None
    activity: dict[int, stats.Activity]


def parameter_groups(program, timesteps: Sequence[int]) -> dict[int, list[int]]:
    """The T of ``timesteps`` (sorted) grouped by the parameter row they use: one run each,
    of the group's largest T."""
    groups: dict[int, list[int]] = {}
    for t in timesteps:
        groups.setdefault(nearest_calibrated(program.timesteps, t), []).append(t)
    return groups


def simulation_batch(net: SpikingNetwork, batch: int, extra_bytes: int = 0) -> int:
    """Samples of a batch of ``batch`` to simulate at once: all of them, or fewer where
    their neuron state (:meth:`SpikingNetwork.state_bytes`, held for every sample of a run)
    and ``extra_bytes`` each would take more than the network's memory budget.

    ``snnc eval`` sets that budget to a quarter of ``--max-memory`` (256 MiB at most), and
    plans its batch for the readout and the activations alone: a deep network's state
    (EfficientNet-Lite0: 72 MB per image) is what bounds it. Fewer than all are rounded
    down to a multiple of numba's threads where that leaves one per thread: the threads
    share a run's samples, and one left over would run alone while the others wait.
    """
    fit = max(1, net.memory_budget // max(net.state_bytes() + extra_bytes, 1))
    if fit >= batch:
        return batch
    threads = numba.get_num_threads()
    return fit - fit % threads if fit >= threads else fit


def evaluate_batch(net: SpikingNetwork, x: np.ndarray, timesteps: list[int], *,
                   ann: Callable[[np.ndarray], np.ndarray] | None = None,
                   bar=None) -> BatchRun:
    """Runs one batch ``x`` for the sorted ``timesteps`` (one run per parameter row), and
    the ANN on it if given. ``bar``: a tqdm bar counting images per run.

    A batch whose neuron state would not fit the network's memory budget runs in parts
    of :func:`simulation_batch` samples (the ANN too), their work combined: the same
    predictions, and the same work up to the rounding of a mean of means.
    """
    size = simulation_batch(net, len(x))
    parts = [_evaluate_part(net, x[first:first + size], timesteps, ann, bar)
             for first in range(0, len(x), size)]
    if len(parts) == 1:
        return parts[0]
    return BatchRun(
        np.concatenate([part.snn_top1 for part in parts], axis=1),
        None if ann is None else np.concatenate([part.ann_top1 for part in parts]),
        {row: stats.combine([part.activity[row] for part in parts])
         for row in parts[0].activity})


def _evaluate_part(net: SpikingNetwork, x: np.ndarray, timesteps: list[int],
                   ann: Callable[[np.ndarray], np.ndarray] | None, bar) -> BatchRun:
    """:func:`evaluate_batch` of samples that are simulated at once."""
    program = net.program
    ann_top1 = None
    if ann is not None:
        ann_top1 = np.asarray(ann(x)).reshape(len(x), -1).argmax(axis=1)
    column = {t: i for i, t in enumerate(timesteps)}
    snn_top1 = np.zeros((len(timesteps), len(x)), dtype=np.int64)
    activity = {}
    for row, group in parameter_groups(program, timesteps).items():
        readout = net.run(x, max(group), parameters_for=program.timesteps[row])
        for t in group:
            snn_top1[column[t]] = readout[t - 1].reshape(len(x), -1).argmax(axis=1)
        activity[row] = stats.activity(net)
        if bar is not None:
            bar.update(len(x))
    return BatchRun(snn_top1, ann_top1, activity)


def summarize(program, runs: list[BatchRun], timesteps: list[int], labels: np.ndarray | None,
              *, seconds: float) -> EvalResult:
    """The result of evaluating the batches of ``runs``, in order, on data with ``labels``.

    Counts of correct samples are whole numbers and the work is combined batch after batch,
    so that the result does not depend on where each batch ran.
    """
    groups = parameter_groups(program, timesteps)
    snn = np.concatenate([run.snn_top1 for run in runs], axis=1)
    ann = None if runs[0].ann_top1 is None else np.concatenate([run.ann_top1 for run in runs])
    n = snn.shape[1]
    work = {max(group): stats.combine([run.activity[row] for run in runs])
            for row, group in groups.items()}
    return EvalResult(
        timesteps=list(timesteps),
        snn_accuracy=None if labels is None else [float((top1 == labels).sum() / n)
                                                  for top1 in snn],
        agreement=None if ann is None else [float((top1 == ann).sum() / n) for top1 in snn],
        ann_accuracy=None if ann is None or labels is None else int((ann == labels).sum()) / n,
        n=n,
        seconds=seconds,
        parameters_for=[program.timesteps[nearest_calibrated(program.timesteps, t)]
                        for t in timesteps],
        **_work_fields(work, timesteps),
        activation_sparsity=_activation_sparsity(program, work, timesteps),
    )


def _work_fields(work: dict[int, stats.Activity], timesteps: list[int]) -> dict:
    """EvalResult's work fields from the activity of the run of each T in ``work``."""
    largest = work[max(timesteps)]
    macs = largest.ann_macs

    def per_t(value: Callable[[stats.Activity], float]) -> list[float | None]:
        return [float(value(work[t])) if t in work else None for t in timesteps]

    return dict(
        ann_macs=macs,
        static_macs=largest.static_macs,
        synaptic_ops=per_t(lambda a: a.synaptic_ops),
        synaptic_ops_per_ann_mac=per_t(
            lambda a: a.synaptic_ops / (macs * a.steps) if macs else 0.0),
        mean_firing_rate=per_t(lambda a: a.mean_firing_rate()),
        layer_activity_timesteps=largest.steps,
        layer_activity=layer_rows(largest),
    )


def _activation_sparsity(program, work: dict[int, stats.Activity],
                         timesteps: list[int]) -> list[float | None] | None:
    """NeuroBench's ActivationSparsity per T, where it is 1 - the firing rate exactly: the
    neurons send one spike per step at most (see EvalResult)."""
    neurons = program.neuron_nodes()
    if not neurons or any(n.attrs["max_spikes_per_step"] != 1 for n in neurons):
        return None
    return [1.0 - work[t].mean_firing_rate() if t in work else None for t in timesteps]


def layer_rows(report: stats.Activity) -> list[dict]:
    """One row per neuron layer: its firing rate and the synaptic operations of the
    conv/gemm layers its spikes go ``into``, per image.

    A conv/gemm layer whose input mixes several layers' signals (an add of two neuron
    layers) or comes from no neuron layer gets a row of its own, named after its sources,
    so that the rows' synaptic operations add up to the network's.
    """
    rows, by_neuron = [], {}
    for layer in report.layers:
        if layer.kind == "neurons":
            row = {"layer": layer.name, "neurons": layer.neurons,
                   "firing_rate": layer.firing_rate, "spikes": layer.per_image,
                   "synaptic_ops": None, "into": []}
            by_neuron[layer.name] = row
            rows.append(row)
        elif layer.kind == "synapses":
            if len(layer.sources) == 1 and layer.sources[0] in by_neuron:
                row = by_neuron[layer.sources[0]]
            else:
                row = {"layer": " + ".join(layer.sources) or layer.name, "neurons": None,
                       "firing_rate": None, "spikes": None, "synaptic_ops": None, "into": []}
                rows.append(row)
            row["synaptic_ops"] = (row["synaptic_ops"] or 0.0) + layer.per_image
            row["into"].append(layer.name)
    return rows


def format_table(result: EvalResult) -> str:
    """A plain-text table: one row per T."""
    header = ["T", "SNN acc", "agreement", "ANN acc", "params for T"]
    rows = []
    for i, t in enumerate(result.timesteps):
        rows.append([
            str(t),
            "-" if result.snn_accuracy is None else f"{100 * result.snn_accuracy[i]:.2f}%",
            "-" if result.agreement is None else f"{100 * result.agreement[i]:.2f}%",
            "-" if result.ann_accuracy is None else f"{100 * result.ann_accuracy:.2f}%",
            str(result.parameters_for[i]),
        ])
    lines = _aligned(header, rows)
    lines.append(f"({result.n} samples, {result.seconds:.1f} s)")
    return "\n".join(lines)


def format_activity(result: EvalResult) -> str:
    """The work per image, one row per T that has its own run, then the per-layer table at
    the largest T; plain text aligned like :func:`format_table`."""
    if result.synaptic_ops is None:
        return ""
    macs = result.ann_macs or 0
    header = ["T", "synaptic ops", "ANN MACs x T", "ops / MAC", "firing rate"]
    rows = [[str(t), si(ops), si(macs * t), f"{ratio:.3f}", f"{rate:.4f}"]
            for t, ops, ratio, rate in zip(result.timesteps, result.synaptic_ops,
                                           result.synaptic_ops_per_ann_mac,
                                           result.mean_firing_rate)
            if ops is not None]
    lines = ["synaptic ops: additions per image by the event-driven layers over T steps; the "
             "ANN does",
             f"{si(macs)} MACs per image and pass; firing rate: spikes per neuron and step"]
    lines += _aligned(header, rows)
    if len(rows) < len(result.timesteps):
        lines.append("(T that share a run with a larger T are counted with it)")
    if result.static_macs:
        lines.append(f"plus {si(result.static_macs)} MACs per image once, for the layers on "
                     "the input (before the first step)")
    header = ["layer", "neurons", "firing rate", "synaptic ops", "into"]
    rows = [[row["layer"],
             "-" if row["neurons"] is None else str(row["neurons"]),
             "-" if row["firing_rate"] is None else f"{row['firing_rate']:.4f}",
             "-" if row["synaptic_ops"] is None else si(row["synaptic_ops"]),
             ", ".join(row["into"]) or "-"]
            for row in result.layer_activity]
    lines.append("")
    lines.append(f"per layer at T={result.layer_activity_timesteps} (synaptic ops: per image, "
                 "in the layers its spikes go into)")
    lines += _aligned(header, rows, left={0, 4})
    return "\n".join(lines)


def si(value: float) -> str:
    """A count in 3 significant digits with a k, M or G suffix: 1234567 -> "1.23 M"."""
    rounded = float(f"{value:.3g}")  # so that 999999.9 is "1 M", not "1e+03 k"
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(rounded) >= scale:
            return f"{rounded / scale:.3g}{suffix}"
    return f"{rounded:.3g}"


def _aligned(header: list[str], rows: list[list[str]], left=frozenset()) -> list[str]:
    """Rows under a header and a dashed rule; the columns whose index is in ``left`` are
    left-aligned, the others right-aligned."""
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if c in left else cell.rjust(w)
                       for c, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines
