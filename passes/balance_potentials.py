"""DNI's second stage: shift initial potentials so every channel's mean SNN output is the ANN's.

Why. The first stage (``dni.py``) is exact for a neuron whose input is constant over time,
which only the first neuron layer has. Deeper layers integrate spike trains that carry the
earlier layers' rounding, and a rectifier turns zero-mean noise into a positive bias
(``E[relu(a + e)] > relu(a)`` near 0); max pooling of noisy inputs adds more. These biases
add up from layer to layer. A shift of a neuron's initial potential by ``d`` changes what it
sends over T steps by about ``d / T`` per step while it is neither silent nor saturated, so

    v0[c] += T * (target[c] - E_snn[output_c])

moves channel c's mean output towards its target, without touching weights or biases. The
target is ``E[q(a_c)]``, what the first stage's neuron would send for the ANN's activations
``a_c`` if its input were constant (:func:`second_stage_targets`): for the first layer the
shift is then 0, and deeper layers lose only the bias that the time-varying input adds.
(Matching ``E[relu(a_c)]`` instead also undoes the clipping that the first stage chose on
purpose; it measured worse, see docs/results/fidelity.md.)

How. For each calibrated T (its own row of parameters), the compiled program runs on the
first ``second_stage_samples`` calibration images for T steps with the runtime engine; an
observer sums every neuron layer's output per channel. All layers are corrected from the
same run, then the run is repeated (``second_stage_sweeps`` in all): the first sweep
corrects each layer for the bias it shows with the earlier layers uncorrected, the next
ones for what is left once they are corrected. This is the layer-by-layer correction in
topological order done a few times for the price of a few simulations, instead of one
simulation per layer. The targets come from the ANN's activations on the same images, so
both sides of the difference see the same samples: :func:`record_second_stage_stats` keeps
the ANN before its Relus are replaced, and :func:`balance_potentials` runs it in onnxruntime
on those images, batch by batch, for the thresholds and initial potentials that the program
holds when it runs (:func:`second_stage_targets`). Per channel and row only a sum is kept,
so memory does not grow with the images; the sums are exact (whole-number spike counts),
not read off a histogram.

Neurons. Every kind is corrected, each towards its own constant-input output of the ANN
tensor that it tracks (:func:`target_tensor`). ReLU neurons (``snm``): ``q`` of the Relu's
input. Clipped neurons (``snm_clip``, from ``Clip(x, 0, hi)`` and ReLU6): for a constant
input ``a`` they send what the ReLU neuron sends for ``clip(a, 0, hi)``, so ``q`` of the
Clip's output. Leaky neurons (``snm_leaky``, from LeakyRelu and PRelu): their count follows
``f(a)`` of either sign, down to ``-k * T``, and below zero it depends on ``theta_neg``
(``dni.signed_spike_count``), so their target is that count of the activation's output.

Checked on held-out images. A correction estimated on some images can be wrong for
others, and the sweeps correct every layer at once from one run, so a deep network can be
over-corrected: a layer is shifted for a bias that the shifts of the layers before it
already remove. The images are therefore split: the first half (rounded up) estimates the
shifts, the second half checks them. A channel keeps its shift only where it brings that
channel's mean nearer its target on the held-out images, and the whole row (one target T)
is reverted if the network's readout ends up further from the ANN's outputs there
(relative squared error) than without any shift, or if the shifts cost top-1 agreement
with the ANN there beyond chance (for a readout of several entries; :func:`loses_top1`).
The squared error alone does not guard the top-1: on a leaky Fashion-MNIST VGG at T = 4
with single spikes it fell while the agreement fell by about 12 points, the shifts having
raised one class's logit on most images (docs/results/leaky_fidelity.md). A flip of one or
two near-tied images is chance, not a cost: a rule that reverted on any fall threw away, on
the ReLU Fashion-MNIST VGG, corrections that lowered the error, for one held-out image in
128. Each T's outcome goes to the report.

Range. ``v0`` is clipped to ``[V0_MIN, V0_MAX] * theta``. Outside ``[0, theta)`` the
neuron still computes ``floor((v0 + sum z) / theta)``: with signed spikes an early spike
that the input does not justify is taken back. A plain IF neuron (``theta_neg="off"``)
cannot take a spike back, so its ``v0`` stays below ``theta``. A clipped neuron's ``v0``
stays at 0 or above: it has no "M > 0" test on negative spikes, so a negative ``v0`` would
let its count, and its output, fall below 0. A leaky neuron's ``v0`` stays in
``[theta_neg, theta)``, where a zero input sends nothing, as ``f(0) = 0``.

Where. With a Dask cluster (``ctx.cluster``) the simulations run on its workers
(:meth:`~snncompiler.distributed.Cluster.channel_means`); the targets are computed here,
on the client: one pass of the ANN over ``second_stage_samples`` images is cheap next to
the simulations, and computed in one place they need no merging.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs
from numba import njit
from tqdm.auto import tqdm

from snncompiler import evaluate
from snncompiler.context import CompileContext
from snncompiler.errors import CalibrationError
from snncompiler.frontend import ort_session
from snncompiler.runtime.engine import SpikingNetwork, nearest_calibrated
from snncompiler.runtime.graph import Program
from snncompiler.runtime.stats import activity

from .replace_activations import is_clip_neuron, is_leaky_neuron

if TYPE_CHECKING:
    import onnx

# Bounds of the corrected initial potential, in units of the neuron's threshold.
V0_MIN = -1.0
V0_MAX = 2.0

# What the SNN's mean output is matched to, see second_stage_targets ("model" measured
# better than "relu"; kept as a constant so the ablation can be rerun, not as a user option).
TARGET = "model"

# Images simulated at once, at most; fewer where their neuron state would take more than
# the engine's memory budget (a 224 px network holds tens of MB of state per image).
_BATCH = 64


def target_tensor(node) -> str | None:
    """The ANN tensor whose values give a lowered neuron's target, or None for other nodes.

    A ReLU neuron (``snm``): the Relu's input. A clipped neuron (``snm_clip``): the Clip's
    output ``clip(x, 0, hi)``, which it tracks and was calibrated on, so the same ``q``
    applies. A leaky neuron (``snm_leaky``): the activation's output ``f(x)``, whose sign
    its count follows.
    """
    if node.op == "snm":
        return node.inputs[0]
    return node.output if node.op in ("snm_clip", "snm_leaky") else None


def signed_band(node) -> float | None:
    """``band`` of :func:`snncompiler.passes.dni.spike_output` for a neuron node: ``c`` of
    ``theta_neg = -c * theta`` for a leaky neuron, None for the others (their count stops at
    zero)."""
    if node.op != "snm_leaky":
        return None
    return 0.0 if node.attrs["theta_neg"] == "zero" else 1.0


@dataclass(frozen=True)
class SecondStageAnn:
    """The ANN that the second stage's targets come from (:func:`record_second_stage_stats`).

    Attributes:
        model: The graph as it was before its Relus were replaced, with every tensor of
            ``tensors`` that is not a graph input added as a graph output.
        tensors: The tensors of the neurons the second stage may correct
            (:func:`target_tensor`).
        readout: The ANN's output, which the held-out check compares the SNN's readout
            with; None for a model with several outputs.
    """

    model: onnx.ModelProto
    tensors: tuple[str, ...]
    readout: str | None


def record_second_stage_stats(graph: gs.Graph, ctx: CompileContext) -> int:
    """Pass: keeps the ANN that the second stage's targets are computed from, after lowering.

    Runs only with ``ctx.config.second_stage``. Stores in ``ctx.second_stage_ann`` the
    graph exported as it stands, with the input of every Relu and the output of every
    ``Clip(x, 0, hi)``, LeakyRelu and PRelu added as graph outputs
    (:class:`SecondStageAnn`). Nothing is run here: the targets depend on the thresholds and
    initial potentials that the program holds when :func:`balance_potentials` runs, which a
    step after lowering may change.

    Preconditions: the graph is still an ANN that onnxruntime can run (before
    ``replace_relu``).
    Preserves: the graph is not modified.

    Returns:
        The number of tensors kept for the targets.
    """
    if not ctx.config.second_stage:
        return 0
    names = list(dict.fromkeys(
        [node.inputs[0].name for node in graph.nodes
         if node.op == "Relu" and isinstance(node.inputs[0], gs.Variable)]
        + [node.outputs[0].name for node in graph.nodes
           if is_clip_neuron(node) or is_leaky_neuron(node)]))
    if not names:
        return 0
    work = graph.copy()
    tensors = work.tensors()
    # A graph input is read from the feed; a tensor that is already an output stays one.
    skip = {t.name for t in work.inputs} | {t.name for t in work.outputs}
    for name in names:
        if name not in skip:
            tensor = tensors[name]
            tensor.dtype = tensor.dtype or np.float32
            work.outputs.append(tensor)
    readout = graph.outputs[0].name if len(graph.outputs) == 1 else None
    ctx.second_stage_ann = SecondStageAnn(gs.export_onnx(work), tuple(names), readout)
    return len(names)


@dataclass
class Targets:
    """What :func:`balance_potentials` matches, per parameter row ``r`` of the program.

    Attributes:
        fit: ``fit[r][node]``: ``(C,)`` float64, the target of each channel of the neuron
            node (:func:`second_stage_targets`) over the images that fit the shifts.
        check: The same over the held-out images; None when there are none.
        reference: The ANN's output on the held-out images, ``(n, ...)``; None when there
            are none, or the model has several outputs.
    """

    fit: list[dict[str, np.ndarray]]
    check: list[dict[str, np.ndarray]] | None
    reference: np.ndarray | None


def second_stage_targets(ann: SecondStageAnn, neurons: list, timesteps: list[int],
                         batches: Iterable[dict[str, np.ndarray]], fit: int, *,
                         bar=None) -> Targets:
    """Every channel's target, ``E[q(a)]`` (or ``E[relu(a)]``, see :data:`TARGET`), for
    every parameter row, over the images that fit the shifts and over the held-out ones.

    ``q(a)`` is the output of the first stage's neuron for a constant input ``a``
    (``dni.spike_output``, signed for a leaky neuron: :func:`signed_band`), with the node's
    threshold and initial potential of the row,
    and ``a`` runs over the values of the channel in the ANN (:func:`target_tensor`): the
    first stage chose to clip and round, so the second stage removes only the bias that
    comes on top of that, from inputs that vary over time. ``"relu"`` targets the ANN's own
    mean, and so also undoes the first stage's clipping.

    onnxruntime runs ``ann.model`` on ``batches`` in turn; each activation is summed into
    its channels and dropped before the next batch, so memory does not grow with the
    images. Nothing is binned: ``q(a) = theta / T * n(a)`` for a whole number ``n(a)``, so
    what is summed is ``n(a)`` (:func:`add_level_counts`), exactly and in any order, and
    multiplied by ``theta / T`` at the end. The parameters are read from ``neurons`` when
    this is called.

    Args:
        ann: The ANN (:func:`record_second_stage_stats`).
        neurons: The program's neuron nodes whose tensor is in ``ann.tensors``.
        timesteps: T of each parameter row.
        batches: Feeds ``{input_name: images}`` of the second stage's images, in order.
        fit: The number of images, from the first, that fit the shifts; the rest check them.
        bar: A tqdm bar counting images.

    Raises:
        CalibrationError: A tensor whose channel axis does not fit its neuron's parameters.
    """
    session = ort_session(ann.model)
    produced = {o.name for o in session.get_outputs()}
    fetched = list(dict.fromkeys(
        ([ann.readout] if ann.readout is not None else [])
        + [target_tensor(n) for n in neurons if target_tensor(n) in produced]))
    params = {n.name: _row_parameters(n, timesteps) for n in neurons}
    sums = ({}, {})  # node -> [channel sums, values per channel]; fitting, held-out images
    reference = []
    first = 0
    for feed in batches:
        found = dict(zip(fetched, session.run(fetched, feed))) if fetched else {}
        images = len(next(iter(feed.values())))
        cut = min(max(fit - first, 0), images)  # the batch's images that fit the shifts
        for node in neurons:
            name = target_tensor(node)
            x = _channels_view(found[name] if name in found else feed[name], node, name)
            for part, total in ((x[:cut], sums[0]), (x[cut:], sums[1])):
                if len(part):
                    entry = total.setdefault(node.name, [0, 0])
                    entry[0] = entry[0] + _channel_sums(part, *params[node.name])
                    entry[1] += part.shape[0] * part.shape[2]
        if ann.readout is not None and cut < images:
            reference.append(found[ann.readout][cut:])
        first += images
        # Drop this batch's activations before the next batch runs.
        del found, feed
        if bar is not None:
            bar.update(images)
    means = [_target_means(total, params, len(timesteps)) if total else None
             for total in sums]
    return Targets(means[0], means[1], np.concatenate(reference) if reference else None)


def _row_parameters(node, timesteps: list[int]) -> tuple:
    """``(theta, v0, steps, most, signed, band)`` of :func:`add_level_counts` for a neuron
    node's rows."""
    band = signed_band(node)
    return (node.arrays["theta"].astype(np.float64), node.arrays["v0"].astype(np.float64),
            np.asarray(timesteps, dtype=np.float64),
            float(node.attrs["max_spikes_per_step"]), band is not None, band or 0.0)


def _channels_view(tensor: np.ndarray, node, name: str) -> np.ndarray:
    """``tensor`` as a float32 ``(N, C, L)`` array, C checked against the node's rows."""
    channels = node.arrays["theta"].shape[1]
    if tensor.ndim < 2 or tensor.shape[1] != channels:
        raise CalibrationError(
            f"node {node.name!r}: tensor {name!r} has shape {list(tensor.shape)} in the ANN, "
            f"its neuron parameters expect (N, {channels}, ...)")
    return np.ascontiguousarray(tensor, dtype=np.float32).reshape(len(tensor), channels, -1)


def _channel_sums(x: np.ndarray, theta, v0, steps, most, signed, band) -> np.ndarray:
    """What :func:`second_stage_targets` sums of ``(N, C, L)`` ``x``: per row and channel
    ``sum n(a)`` (int64, ``(R, C)``), or for :data:`TARGET` ``"relu"`` ``sum relu(a)``
    (float64, ``(C,)``; a leaky neuron's ``f(a)`` itself)."""
    if TARGET == "relu":
        return (x if signed else np.maximum(x, 0)).sum(axis=(0, 2), dtype=np.float64)
    counts = np.zeros(theta.shape, dtype=np.int64)
    add_level_counts(x, theta, v0, steps, most, signed, band, counts)
    return counts


def _target_means(sums: dict, params: dict, rows: int) -> list[dict[str, np.ndarray]]:
    """Per row, node -> ``(C,)`` mean of ``q(a)`` (or ``relu(a)``) from the channel sums."""
    means = [{} for _ in range(rows)]
    for name, (total, values) in sums.items():
        theta, steps = params[name][0], params[name][2]
        for row in range(rows):
            means[row][name] = (total / values if TARGET == "relu"
                                else theta[row] / steps[row] * total[row] / values)
    return means


@njit(cache=True, nogil=True)
def add_level_counts(x, theta, v0, steps, most, signed, band, counts):
    """``counts[r, c] += sum n(x[i, c, l])`` over images i and positions l, for every row r:
    ``n(a) = clip(floor((T * a + v0) / theta), 0, k * T)``, the spikes per T steps that
    ``dni.spike_output`` multiplies by ``theta / T``; with ``signed`` (a leaky neuron),
    ``dni.signed_spike_count``. The same float64 operations as those.

    Args:
        x: ``(N, C, L)`` float32 activations.
        theta, v0: ``(R, C)`` float64 parameters, one row per target T.
        steps: ``(R,)`` float64, each row's T; most: k, the most spikes per step (float64).
        signed, band: Whether the count goes below zero, and ``c`` of
            ``theta_neg = -c * theta`` (float64; read only when ``signed``).
        counts: ``(R, C)`` int64, added to.
    """
    for r in range(theta.shape[0]):
        top = most * steps[r]
        for c in range(x.shape[1]):
            total = 0
            for i in range(x.shape[0]):
                for j in range(x.shape[2]):
                    a = np.float64(x[i, c, j])
                    n = np.floor((steps[r] * a + v0[r, c]) / theta[r, c])
                    if not signed or a >= 0.0:
                        n = min(max(n, 0.0), top)
                    else:
                        first = np.floor((a + v0[r, c]) / theta[r, c])
                        n = min(max(max(n + band, first + band - (top - most)), -top), 0.0)
                    total += int(n)
            counts[r, c] += total


def second_stage_images(ctx: CompileContext, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The first ``second_stage_samples`` calibration images of input ``name``, split into
    the images that estimate the shifts (the first half, rounded up) and the held-out ones
    that check them."""
    images = np.concatenate([feed[name] for feed in _first_images(
        ctx.calibration_batches(), _sample_count(ctx))])
    fit = (len(images) + 1) // 2
    return images[:fit], images[fit:]


def balance_potentials(program: Program, ctx: CompileContext) -> int:
    """Post-lowering step: shifts each neuron channel's ``v0`` (``snm``, ``snm_clip``,
    ``snm_leaky``) by ``T * (target - SNN mean)``.

    See the module docstring. Every calibrated T is corrected in its own parameter row,
    towards targets computed first (:func:`second_stage_targets`) for the thresholds and
    initial potentials the program holds when this runs.

    Preconditions: ``record_second_stage_stats`` ran (``ctx.second_stage_ann``), the
    program has one input, and ``program.timesteps`` lists the rows of every neuron's ``v0``.
    Preserves: weights, biases and thresholds; only ``v0`` arrays of neuron nodes change.

    Returns:
        The number of (row, channel) initial potentials changed.
    """
    config = ctx.config
    ann = ctx.second_stage_ann
    if ann is None or not config.second_stage:
        return 0
    neurons = [n for n in program.nodes if target_tensor(n) in ann.tensors]
    if not neurons:
        return 0
    if len(program.inputs) != 1:
        raise CalibrationError("the second stage supports single-input models")
    if ctx.calibration_batches is None:
        raise CalibrationError("the second stage needs calibration data: pass --calib FILE.npz")
    fit, check = second_stage_images(ctx, program.inputs[0].name)
    names = [n.name for n in neurons]
    before = {n.name: n.arrays["v0"].copy() for n in neurons}
    for node in neurons:
        node.arrays["v0"] = np.array(node.arrays["v0"], dtype=np.float32)
    with tqdm(total=len(fit) + len(check), desc="second stage targets", unit="images",
              disable=not config.progress, leave=False) as bar:
        targets = second_stage_targets(
            ann, neurons, program.timesteps,
            _first_images(ctx.calibration_batches(), _sample_count(ctx)), len(fit), bar=bar)
    ctx.second_stage_reference = targets.reference
    outcomes = []
    for row, steps in enumerate(program.timesteps):
        fit_targets = targets.fit[row]
        check_targets = targets.check[row] if targets.check is not None else None
        start = {n.name: n.arrays["v0"][row].copy() for n in neurons}
        # Image-steps simulated for this T: the sweeps on the fitting images, then the
        # held-out images before and after (and once more if some shifts are reverted).
        bar = tqdm(total=steps * (config.second_stage_sweeps * len(fit) + 3 * len(check)),
                   desc=f"second stage, T={steps}", unit="img-step",
                   disable=not config.progress, leave=False)
        simulate = functools.partial(
            ctx.cluster.channel_means if ctx.cluster is not None else snn_channel_means,
            program, steps=steps, names=names, bar=bar)
        if check_targets is not None:
            means, readout = simulate(check, readout=True)
            start_error = _channel_errors(means, check_targets)
            start_net = readout_error(readout, targets.reference)
            start_agrees = top1_agrees(readout, targets.reference)
        for _ in range(config.second_stage_sweeps):
            means = simulate(fit)
            for node in neurons:
                _shift(node, row, steps, fit_targets[node.name] - means[node.name])
        if check_targets is None:
            bar.close()
            outcomes.append(f"T={steps}: not checked (fewer than 2 images)")
            continue
        means, readout = simulate(check, readout=True)
        errors = _channel_errors(means, check_targets)
        kept, reverted = 0, False
        for node in neurons:
            worse = errors[node.name] >= start_error[node.name]
            node.arrays["v0"][row][worse] = start[node.name][worse]
            kept += int((node.arrays["v0"][row] != start[node.name]).sum())
            reverted |= bool(worse.any())
        if reverted:  # the readout of what is kept
            _, readout = simulate(check, readout=True)
        bar.close()
        net = readout_error(readout, targets.reference)
        agrees = top1_agrees(readout, targets.reference)
        change = ("" if net is None else f"held-out output error {start_net:.4g} -> {net:.4g}"
                  + ("" if agrees is None else f", top-1 agreement {start_agrees.mean():.1%}"
                     f" -> {agrees.mean():.1%}"))
        if net is not None and (net >= start_net or loses_top1(start_agrees, agrees)):
            for node in neurons:
                node.arrays["v0"][row] = start[node.name]
            outcomes.append(f"T={steps}: reverted ({change})")
            continue
        total = sum(errors[n].size for n in names)
        outcomes.append(f"T={steps}: kept {kept} of {total} channel shifts"
                        + (f", {change}" if change else ""))
    changed = sum(int((before[n.name] != n.arrays["v0"]).sum()) for n in neurons)
    shift = np.concatenate([
        ((n.arrays["v0"] - before[n.name]) / n.arrays["theta"]).ravel() for n in neurons])
    ctx.report.append(
        f"second stage: {len(neurons)} neuron layers, {len(fit)} images to fit and "
        f"{len(check)} to check, {config.second_stage_sweeps} sweeps per T; v0 moved by "
        f"{np.abs(shift).mean():.3f} theta on average (largest {np.abs(shift).max():.3f}); "
        + "; ".join(outcomes))
    ctx.second_stage_outcomes = outcomes
    return changed


def _channel_errors(means: dict[str, np.ndarray], targets: dict[str, np.ndarray]):
    return {name: np.abs(means[name] - targets[name]) for name in targets}


def readout_error(readout: np.ndarray | None, reference: np.ndarray | None) -> float | None:
    """``sum |readout - reference|^2 / sum |reference|^2``: the SNN's output after T steps
    against the ANN's (None when either is missing)."""
    if readout is None or reference is None:
        return None
    reference = reference.reshape(readout.shape).astype(np.float64)
    return float(((readout - reference) ** 2).sum() / max((reference ** 2).sum(), 1e-30))


def top1_agrees(readout: np.ndarray | None, reference: np.ndarray | None) -> np.ndarray | None:
    """Per image, whether its largest readout entry is the reference's (None when either is
    missing or an image's readout has a single entry)."""
    if readout is None or reference is None or readout[0].size < 2:
        return None
    found = readout.reshape(len(readout), -1).argmax(axis=1)
    return found == reference.reshape(len(readout), -1).argmax(axis=1)


# How many standard deviations of chance the images that lose the ANN's class must exceed
# those that gain it by before the shifts are judged to cost top-1 agreement (about 2.3%
# one-sided, for a normal approximation).
LOSS_SIGNIFICANCE = 2.0


def loses_top1(before: np.ndarray | None, after: np.ndarray | None) -> bool:
    """Whether the shifts cost top-1 agreement beyond chance on the held-out images: of the
    images whose agreement changed, ``lost`` went from agreeing to not and ``gained`` the
    other way; if the shifts did nothing on average, ``lost - gained`` would be 0 give or
    take ``sqrt(lost + gained)`` (McNemar's paired test). So a handful of near-tied images
    that flip either way does not count, while a class that takes over many images does.
    """
    if before is None or after is None:
        return False
    lost = int((before & ~after).sum())
    gained = int((~before & after).sum())
    return bool(lost - gained > LOSS_SIGNIFICANCE * np.sqrt(lost + gained))


def snn_channel_means(program: Program, images: np.ndarray, steps: int,
                      names: list[str], *, readout: bool = False, bar=None):
    """Mean output per step of each channel of the named neuron nodes, over ``steps`` steps.

    Runs the engine with the parameter row calibrated for ``steps`` on ``images`` (in
    batches). What a neuron sent over the run is its threshold times its net spike count
    (:meth:`SpikingNetwork.net_spikes`), so no step needs observing. With ``readout``, also
    returns the network's readout after ``steps`` steps, (N, ...) float64 (None for a
    network with several outputs). ``bar``: a tqdm bar counting image-steps.
    """
    found = spike_sums(program, images, steps, names, bar=bar)
    return channel_means(program, found, steps, names, readout=readout)


@dataclass
class SpikeSums:
    """What the named neuron nodes sent over a run on some images, before averaging.

    Attributes:
        sums: Per node, ``(C,)`` net spikes per channel summed over the images and the
            channel's positions: whole numbers (held in float64, exact below 2**53), so
            that the sums of shards of the images add up to the sum over all of them
            exactly, in any order.
        values: Per node, the outputs per channel counted (images x positions).
        readouts: The network's readout after the run, (n, ...) float64, per batch of
            images in order (empty for a network with several outputs).
        synaptic_ops: The event-driven layers' additions over the run, summed over the
            images (``runtime.stats``).
    """

    sums: dict[str, np.ndarray]
    values: dict[str, int]
    readouts: list[np.ndarray]
    synaptic_ops: float = 0.0

    @staticmethod
    def merge(parts: list[SpikeSums]) -> SpikeSums:
        """The sums over the images of ``parts``, which are shards of them in order."""
        first = parts[0]
        return SpikeSums({name: sum(p.sums[name] for p in parts) for name in first.sums},
                         {name: sum(p.values[name] for p in parts) for name in first.values},
                         [r for p in parts for r in p.readouts],
                         sum(p.synaptic_ops for p in parts))


def spike_sums(program: Program, images: np.ndarray, steps: int, names: list[str], *,
               bar=None) -> SpikeSums:
    """Runs ``program`` on ``images`` for ``steps`` steps, batch by batch
    (:func:`snn_channel_means`), and sums the net spikes of the named neuron nodes.

    A batch's results do not depend on the other images of the run, so shards of
    ``images`` cut at multiples of :func:`simulation_batch` give the same sums and
    readouts.
    """
    net = SpikingNetwork(program)
    batch = simulation_batch(net)
    channels = {n.name: n.arrays["theta"].shape[1] for n in program.nodes if n.name in names}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    last = []
    synaptic_ops = 0.0
    for first in range(0, len(images), batch):
        out = net.run(images[first:first + batch], steps, parameters_for=steps)
        synaptic_ops += activity(net).synaptic_ops * len(images[first:first + batch])
        if not isinstance(out, dict):
            last.append(out[-1].astype(np.float64))
        spikes = net.net_spikes()
        for name in names:
            per_channel = spikes[name].reshape(len(spikes[name]), channels[name], -1)
            sums[name] = sums.get(name, 0.0) + per_channel.sum(axis=(0, 2), dtype=np.int64)
            counts[name] = counts.get(name, 0) + per_channel.size // channels[name]
        if bar is not None:
            bar.update(steps * len(images[first:first + batch]))
    return SpikeSums(sums, counts, last, synaptic_ops)


def simulation_batch(net: SpikingNetwork) -> int:
    """Images :func:`spike_sums` simulates at once: ``_BATCH``, fewer where their neuron
    state would take more than the engine's memory budget (the rule of ``snnc eval``,
    :func:`snncompiler.evaluate.simulation_batch`)."""
    return evaluate.simulation_batch(net, _BATCH)


def channel_means(program: Program, found: SpikeSums, steps: int, names: list[str], *,
                  readout: bool = False):
    """:func:`snn_channel_means` from the :func:`spike_sums` of its images."""
    row = nearest_calibrated(program.timesteps, steps)
    theta = {n.name: n.arrays["theta"][row].astype(np.float64) for n in program.nodes
             if n.name in names}
    means = {name: theta[name] * found.sums[name] / (found.values[name] * steps)
             for name in names}
    if not readout:
        return means
    return means, (np.concatenate(found.readouts) if found.readouts else None)


def _shift(node, row: int, steps: int, error: np.ndarray) -> None:
    theta = node.arrays["theta"][row].astype(np.float64)
    v0 = node.arrays["v0"][row].astype(np.float64) + steps * error
    # A clipped neuron tracks clip(S, 0, hi * t) of its running input S: a negative S counts
    # as 0, so from v0 >= theta every neuron of the channel would fire, however negative its
    # input (where the ANN sends 0); its v0 stays below theta, like an IF neuron's, which
    # cannot take back a spike. A plain SNM neuron's negative input pulls v0 down with it. A
    # leaky neuron's f(S) is near 0 for a negative S when its slope is small, so it is held
    # like the clipped neuron, on both sides: from v0 < theta_neg it would send a negative
    # spike for a zero input.
    below_theta = node.attrs["theta_neg"] == "off" or node.op != "snm"
    upper = theta if below_theta else V0_MAX * theta
    # The clipped neuron has no "M > 0" test on negative spikes (neuron_variants.py): its
    # count stays >= 0, like the ANN's clip(x, 0, hi), only while v0 >= 0.
    band = signed_band(node)
    lower = (V0_MIN * theta if node.op == "snm" else
             -band * theta if band is not None else 0.0)
    v0 = np.clip(v0, lower, upper).astype(np.float32)
    if below_theta:
        v0 = np.minimum(v0, np.nextafter(theta.astype(np.float32), np.float32(0)))
    node.arrays["v0"][row] = v0


def _sample_count(ctx: CompileContext) -> int:
    size = ctx.calibration_size or ctx.config.second_stage_samples
    return min(ctx.config.second_stage_samples, size)


def _first_images(batches, count: int) -> Iterator[dict[str, np.ndarray]]:
    """The feeds of ``batches``, cut after ``count`` images."""
    left = count
    for feed in batches:
        if left <= 0:
            return
        size = len(next(iter(feed.values())))
        yield {k: np.asarray(v)[:left] for k, v in feed.items()} if size > left else feed
        left -= size
