"""Accuracy of a spiking network against T, next to the ANN it came from."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from snncompiler.errors import InputError
from snncompiler.npz import Dataset, check_input_shape
from snncompiler.runtime.engine import SpikingNetwork, nearest_calibrated


@dataclass
class EvalResult:
    """What ``snnc eval`` prints and writes as JSON.

    ``snn_accuracy`` and ``agreement`` (top-1 agreement with the ANN) are per entry of
    ``timesteps``; accuracies are None without labels, agreement None without the ANN.
    """

    timesteps: list[int]
    snn_accuracy: list[float] | None
    agreement: list[float] | None
    ann_accuracy: float | None
    n: int
    seconds: float
    parameters_for: list[int]

    def to_json(self) -> dict:
        return asdict(self)


def parse_timesteps(text: str) -> list[int]:
    """``"1,2,4,8"`` -> [1, 2, 4, 8]; raises InputError on anything else."""
    try:
        values = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise InputError(f"timesteps must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise InputError(f"timesteps must be positive integers, got {text!r}")
    return sorted(set(values))


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
    timesteps = sorted(set(int(t) for t in timesteps))
    # Group the requested T by the calibrated parameter set they use: one run per group.
    groups: dict[int, list[int]] = {}
    for t in timesteps:
        groups.setdefault(nearest_calibrated(program.timesteps, t), []).append(t)
    start = time.perf_counter()
    snn_correct = np.zeros(len(timesteps))
    agree = np.zeros(len(timesteps))
    ann_correct = 0
    column = {t: i for i, t in enumerate(timesteps)}
    bar = tqdm(total=len(dataset) * len(groups), desc="evaluating", unit="img",
               disable=not progress, leave=False)
    for first in range(0, len(dataset), batch_size):
        x = dataset.x[first : first + batch_size]
        y = None if dataset.y is None else dataset.y[first : first + batch_size]
        ann_top1 = None
        if ann is not None:
            ann_top1 = np.asarray(ann(x)).reshape(len(x), -1).argmax(axis=1)
            if y is not None:
                ann_correct += int((ann_top1 == y).sum())
        for row, group in groups.items():
            readout = net.run(x, max(group), parameters_for=program.timesteps[row])
            for t in group:
                top1 = readout[t - 1].reshape(len(x), -1).argmax(axis=1)
                if y is not None:
                    snn_correct[column[t]] += (top1 == y).sum()
                if ann_top1 is not None:
                    agree[column[t]] += (top1 == ann_top1).sum()
            bar.update(len(x))
    bar.close()
    n = len(dataset)
    return EvalResult(
        timesteps=list(timesteps),
        snn_accuracy=None if dataset.y is None else [float(v / n) for v in snn_correct],
        agreement=None if ann is None else [float(v / n) for v in agree],
        ann_accuracy=None if ann is None or dataset.y is None else ann_correct / n,
        n=n,
        seconds=time.perf_counter() - start,
        parameters_for=[program.timesteps[nearest_calibrated(program.timesteps, t)]
                        for t in timesteps],
    )


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
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"({result.n} samples, {result.seconds:.1f} s)")
    return "\n".join(lines)
