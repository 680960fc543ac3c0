"""Post-lowering step: the fewest threshold levels that make the SNN faithful, per target T.

Why. With room to catch up (``CompileConfig.burst_size``), what a neuron has sent after T
steps is its whole input rounded to its threshold, so the SNN computes the ANN with every
activation rounded to one of ``resolution`` levels (``CompileConfig.levels_per_step``),
whatever T is. How many levels a network needs depends on the network: a small CNN is
within a tenth of a point of its ANN with 16, while the rounding errors of a 33-layer
EfficientNet add up to a wrong class for one image in ten at 64
(docs/results/deep_fidelity.md). More levels cost synaptic operations (smaller
thresholds fire on more steps), so no constant suits both.

How. ``calibrate_neurons`` prepared DNI's parameters for every candidate resolution from
the same histograms (``ctx.resolution_params``). For each target T, from the fewest levels
up, the candidate's thresholds and initial potentials are written into that T's row and
the program runs for T steps on the held-out half of the second stage's calibration images
(:func:`~.balance_potentials.second_stage_images`; all of them if there are fewer than
two). The first candidate whose readout is within ``config.output_tolerance`` of the
ANN's, ``||SNN - ANN|| / ||ANN||`` over those images, is kept; if none is, the candidate
with the smallest error. Past the tolerance, more levels are still taken while they lower
the error and cost at most ``FREE_OPS`` more synaptic operations: once a network's neurons
send a burst at most steps (levels >= T), finer thresholds change the size of the bursts,
not their number, and a burst is one event. Only candidates that leave the neurons room to
catch up at that T are tried (``CompileConfig.has_room``).

Then, with ``level_search="layer"`` (not the default), layer by layer. Layers differ in what their
rounding costs the readout and in the operations their spikes cause downstream, so one
count for every layer spends operations where they buy little. Starting from the network's
choice, a greedy search moves one layer at a time one candidate coarser, taking the move that
saves the most synaptic operations per squared readout error added, as long as the error
stays within the tolerance (the coarsest being ``config.coarse_levels``); then, like the
network's choice, one candidate finer at a time while that lowers the error and the
operations stay within ``FREE_OPS`` of where the first phase ended. Each move is measured by
simulating the program, as above; the search is lazy (a move's measured gain is reused
until it reaches the top of the queue, then measured again in the current state), and it
stops when it has spent ``config.level_search_budget`` neuron updates. A T whose first round
of trials would not fit keeps the network's choice (on EfficientNet-Lite0 that is every T:
33 layers of 6 million neurons). Each T's choice, the errors and operations that led to it,
and the layers' levels go to the report and to the ``.snn`` header.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

import numpy as np
from tqdm.auto import tqdm

from snncompiler.context import CompileContext
from snncompiler.errors import CalibrationError
from snncompiler.frontend import ort_session
from snncompiler.runtime.graph import Program

from .balance_potentials import readout_error, second_stage_images, spike_sums
from .replace_activations import ABS_SUFFIX

# "Costs nothing": at most this fraction more synaptic operations than the fewest levels
# within tolerance. A judgement, not a measurement: it takes finer levels where they leave the
# number of events alone (levels >= T) and stops where they add events.
FREE_OPS = 0.05


def calibration_key(node) -> str:
    """The activation tensor whose DNI parameters a lowered neuron node holds (the key of
    ``ctx.neuron_params``): a ReLU neuron's input, a clipped neuron's output (the Clip's),
    a leaky neuron's ``|f(x)|``."""
    if node.op == "snm":
        return node.inputs[0]
    return node.output + (ABS_SUFFIX if node.op == "snm_leaky" else "")


def choose_resolution(program: Program, ctx: CompileContext) -> int:
    """Sets every neuron's parameters of each target T to the fewest candidate levels whose
    readout is within tolerance on held-out images (see the module docstring).

    Runs only when ``ctx.resolution_params`` holds several candidates, and only on a
    program with one input and one output (others keep the fewest candidate, with a report
    line saying so).
    Preconditions: its neuron nodes hold the parameters of the fewest candidate, one row per
    entry of ``program.timesteps``.
    Preserves: weights, biases and every attribute; only ``theta`` and ``v0`` rows change.

    Returns:
        The number of target T given more levels than the fewest candidate.
    """
    candidates = [r for r in sorted(ctx.resolution_params) if r in ctx.config.resolutions]
    if len(candidates) < 2:
        return 0
    if len(program.inputs) != 1 or len(program.outputs) != 1:
        # No single readout to compare: keep the fewest levels, and say so.
        ctx.report.append(f"resolution: {candidates[0]} levels at every T, not chosen (the "
                          "choice compares one readout of a one-input model; pass "
                          "--resolution N to set it)")
        return 0
    neurons = program.neuron_nodes()
    for node in neurons:
        if calibration_key(node) not in ctx.resolution_params[candidates[0]]:
            raise CalibrationError(f"node {node.name!r} ({node.op}): no calibrated "
                                   f"parameters for {calibration_key(node)!r}")
    fit, check = second_stage_images(ctx, program.inputs[0].name)
    images = check if len(check) else fit
    reference = _reference(ctx, program.inputs[0].name, images)
    tolerance = ctx.config.output_tolerance
    for node in neurons:  # writable float32 copies, whose rows _write_levels replaces
        for name in ("theta", "v0"):
            node.arrays[name] = np.array(node.arrays[name], dtype=np.float32)
    raised, lines = 0, []
    for row, steps in enumerate(program.timesteps):
        roomy = [r for r in candidates if ctx.config.has_room(steps, r)] or candidates[:1]
        bar = tqdm(total=len(roomy) * steps * len(images), unit="img-step",
                   desc=f"resolution, T={steps}", disable=not ctx.config.progress,
                   leave=False)
        tried: dict[int, tuple[float, float]] = {}
        for resolution in roomy:
            _write_levels(neurons, ctx.resolution_params, row, (resolution,) * len(neurons))
            found = spike_sums(program, images, steps, [], bar=bar)
            error = math.sqrt(readout_error(np.concatenate(found.readouts), reference))
            tried[resolution] = (error, found.synaptic_ops / len(images))
            if not _worth_trying_more(tried, tolerance):
                break
        bar.close()
        chosen = _choice(tried, tolerance)
        if chosen != resolution:
            _write_levels(neurons, ctx.resolution_params, row, (chosen,) * len(neurons))
        ctx.chosen_resolution[steps] = chosen
        raised += chosen != candidates[0]
        line = (f"T={steps}: {chosen} levels (readout error, synaptic ops per image: "
                + ", ".join(f"{r}: {e:.3g}, {ops:.3g}" for r, (e, ops) in tried.items())
                + (f"; {', '.join(map(str, sorted(set(candidates) - set(roomy))))} "
                   "leave no room to catch up" if len(roomy) < len(candidates) else "")
                + ")")
        if ctx.config.level_search == "layer" and len(neurons) > 1:
            line += "; " + _search_layers(program, ctx, row, steps, images, reference,
                                          tried[chosen], chosen)
        lines.append(line)
    ctx.report.append(f"resolution (tolerance {tolerance:g} on {len(images)} held-out "
                      "images): " + "; ".join(lines))
    return raised


def _search_layers(program: Program, ctx: CompileContext, row: int, steps: int,
                   images: np.ndarray, reference: np.ndarray, start: tuple[float, float],
                   chosen: int) -> str:
    """The layer search of the module docstring for row ``row`` (target ``steps``): writes
    each layer's levels into the row and ``ctx.layer_levels``; returns the report's words."""
    neurons = program.neuron_nodes()
    ladder = [r for r in sorted(ctx.resolution_params) if ctx.config.has_room(steps, r)]
    per_trial = len(images) * steps * sum(int(np.prod(n.shape)) for n in neurons)
    budget = ctx.config.level_search_budget
    if per_trial * len(neurons) > budget:
        return (f"layers not searched (one trial per layer would simulate "
                f"{per_trial * len(neurons):.3g} neuron updates, over the budget of "
                f"{budget:.3g})")
    bar = tqdm(unit="img-step",
               desc=f"levels per layer, T={steps}", disable=not ctx.config.progress,
               leave=False)
    measured: dict[tuple[int, ...], tuple[float, float]] = {}
    spent = []

    def measure(levels: tuple[int, ...]) -> tuple[float, float] | None:
        """(readout error, synaptic ops per image) with ``levels``; None once the budget
        is spent."""
        if levels not in measured:
            if (len(measured) + 1) * per_trial > budget:
                spent.append(levels)
                return None
            _write_levels(neurons, ctx.resolution_params, row, levels)
            found = spike_sums(program, images, steps, [], bar=bar)
            measured[levels] = (
                math.sqrt(readout_error(np.concatenate(found.readouts), reference)),
                found.synaptic_ops / len(images))
        return measured[levels]

    start_levels = (chosen,) * len(neurons)
    measured[start_levels] = start
    levels, state = start_levels, start
    tolerance = ctx.config.output_tolerance
    if start[0] <= tolerance:
        levels, state = greedy_moves(
            levels, state, ladder, -1, measure,
            keeps=lambda new, old: new[0] <= tolerance and new[1] < old[1],
            gain=lambda new, old: (old[1] - new[1]) / max(new[0] ** 2 - old[0] ** 2, 1e-30))
    spend = (1 + FREE_OPS) * state[1]
    levels, state = greedy_moves(
        levels, state, ladder, +1, measure,
        keeps=lambda new, old: new[0] < old[0] and new[1] <= spend,
        gain=lambda new, old: (old[0] ** 2 - new[0] ** 2) / max(new[1] - old[1], 1.0))
    bar.close()
    _write_levels(neurons, ctx.resolution_params, row, levels)
    ctx.layer_levels[steps] = {calibration_key(n): level for n, level in zip(neurons, levels)}
    return (f"per layer: {'/'.join(map(str, levels))} levels, readout error {state[0]:.3g}, "
            f"synaptic ops {state[1]:.3g} per image ({'budget spent, ' if spent else ''}"
            f"{len(measured) - 1} trials)")


def greedy_moves(levels: tuple[int, ...], state: tuple[float, float], ladder: list[int],
                 direction: int,
                 measure: Callable[[tuple[int, ...]], tuple[float, float] | None], *,
                 keeps: Callable, gain: Callable) -> tuple[tuple[int, ...], tuple[float, float]]:
    """Moves one layer at a time one rung of ``ladder`` in ``direction`` (-1 coarser, +1
    finer), always the move of largest ``gain(new, old)`` among those that ``keeps(new,
    old)``, until none is left; ``new`` and ``old`` are (error, ops) pairs. A layer whose
    move, when measured, does not keep is not moved again.

    Lazy: a move's gain, measured in an earlier state, stands for it until it comes to the
    top of the queue; it is then measured again and taken if it still leads. ``measure``
    returning None (budget spent) ends the search where it stands, which always keeps.
    """
    def moved(current: tuple[int, ...], layer: int) -> tuple[int, ...] | None:
        rung = ladder.index(current[layer]) + direction if current[layer] in ladder else -1
        if not 0 <= rung < len(ladder):
            return None
        return current[:layer] + (ladder[rung],) + current[layer + 1:]

    queue = []
    for layer in range(len(levels)):
        trial = moved(levels, layer)
        found = measure(trial) if trial is not None else None
        if found is None:
            if trial is not None:
                return levels, state
            continue
        if keeps(found, state):
            queue.append((-gain(found, state), layer))
    heapq.heapify(queue)
    while queue:
        _, layer = heapq.heappop(queue)
        trial = moved(levels, layer)
        if trial is None:
            continue
        found = measure(trial)
        if found is None:
            break
        if not keeps(found, state):
            continue
        fresh = gain(found, state)
        if queue and fresh < -queue[0][0]:
            heapq.heappush(queue, (-fresh, layer))
            continue
        levels, state = trial, found
        heapq.heappush(queue, (-math.inf, layer))  # its next rung, measured when popped
    return levels, state


def _write_levels(neurons, params: dict, row: int, levels: tuple[int, ...]) -> None:
    """Writes into row ``row`` of each neuron node the parameters of its entry of ``levels``
    (``params``: resolution -> {calibration key -> DNI parameters})."""
    for node, level in zip(neurons, levels):
        chosen = params[level][calibration_key(node)]
        node.arrays["theta"][row] = chosen.theta[row]
        node.arrays["v0"][row] = chosen.v0[row]


def _choice(tried: dict[int, tuple[float, float]], tolerance: float) -> int:
    """The resolution to keep of those ``tried`` (fewest levels first: their readout error
    and synaptic ops per image). The fewest within ``tolerance``; then each next one as long
    as it lowers the error and costs at most ``FREE_OPS`` more synaptic operations than that
    fewest; if none is within tolerance, the one with the smallest error."""
    levels = list(tried)
    within = [r for r in levels if tried[r][0] <= tolerance]
    if not within:
        return min(levels, key=lambda r: tried[r][0])
    chosen = within[0]
    budget = (1 + FREE_OPS) * tried[chosen][1]
    for resolution in levels[levels.index(chosen) + 1:]:
        error, ops = tried[resolution]
        if error >= tried[chosen][0] or ops > budget:
            break
        chosen = resolution
    return chosen


def _worth_trying_more(tried: dict[int, tuple[float, float]], tolerance: float) -> bool:
    """Whether a candidate with more levels than those ``tried`` could still be chosen."""
    return _choice(tried, tolerance) == list(tried)[-1] or all(
        error > tolerance for error, _ in tried.values())


def _reference(ctx: CompileContext, name: str, images: np.ndarray) -> np.ndarray:
    """The ANN's readout on ``images`` (onnxruntime, in calibration-sized batches)."""
    model, readout = ctx.resolution_ann
    session = ort_session(model)
    # The calibration's own batch size, which the pipeline sized for the model's memory.
    size = len(next(iter(next(ctx.calibration_batches()).values())))
    return np.concatenate([session.run([readout], {name: images[i:i + size]})[0]
                           for i in range(0, len(images), size)]).astype(np.float64)
