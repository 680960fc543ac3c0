"""Pass: replace Clip(x, 0, hi) and LeakyRelu/PRelu by the SNM variants that track them."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from snncompiler.context import CompileContext
from snncompiler.errors import CalibrationError

from .normalize_clip import clip_bounds
from .replace_relu import SNM_DOMAIN

CLIP_OP = "SNMClip"
LEAKY_OP = "SNMLeaky"
LEAKY_OPS = ("LeakyRelu", "PRelu")
ABS_SUFFIX = "|abs"


def is_clip_neuron(node: gs.Node) -> bool:
    """A Clip of the form the clipped neuron implements (see ``normalize_clip``)."""
    bounds = clip_bounds(node) if node.op == "Clip" else None
    return bounds is not None and bounds[0] == 0 and bounds[1] is not None and bounds[1] > 0


def is_leaky_neuron(node: gs.Node) -> bool:
    return node.op in LEAKY_OPS and (node.op == "LeakyRelu" or isinstance(node.inputs[1],
                                                                          gs.Constant))


def calibration_tensor(node: gs.Node) -> str:
    """Name of the tensor whose histogram calibrates the neuron that replaces ``node``.

    A Clip(x, 0, hi) neuron is a ReLU neuron fed with ``min(x, hi)``: its positive values are
    the Clip's output. A leaky neuron quantises ``f(x)`` of either sign symmetrically, so it
    is calibrated on ``|f(x)|``, a tensor that ``calibrate_neurons`` adds for the purpose.
    """
    name = node.outputs[0].name
    return name + ABS_SUFFIX if node.op in LEAKY_OPS else name


def leaky_slope(node: gs.Node, channels: int) -> np.ndarray:
    """``(C,)`` negative slope of a LeakyRelu or PRelu, one per channel (axis 1).

    Raises:
        CalibrationError: A PRelu slope that varies along other axes than the channels.
    """
    if node.op == "LeakyRelu":
        return np.full(channels, float(node.attrs.get("alpha", 0.01)), dtype=np.float32)
    slope = np.asarray(node.inputs[1].values, dtype=np.float32)
    rank = len(node.inputs[0].shape)
    aligned = slope.reshape((1,) * (rank - slope.ndim) + slope.shape)
    if slope.ndim > rank or any(d != 1 for i, d in enumerate(aligned.shape) if i != 1):
        raise CalibrationError(
            f"node {node.name!r} (PRelu): slope of shape {list(slope.shape)} varies along "
            "other axes than the channels (axis 1); only per-channel slopes are supported")
    return np.ascontiguousarray(np.broadcast_to(aligned.reshape(-1), (channels,)))


def _channels(node: gs.Node) -> int:
    shape = node.inputs[0].shape
    if shape is None or len(shape) < 2 or not isinstance(shape[1], int):
        raise CalibrationError(
            f"node {node.name!r} ({node.op}): input {node.inputs[0].name!r} has shape {shape}; "
            "the channel axis (1) must be static")
    return shape[1]


def replace_activations(graph: gs.Graph, ctx: CompileContext) -> int:
    """Turns Clip(x, 0, hi) into ``SNMClip`` and LeakyRelu/PRelu into ``SNMLeaky`` nodes.

    Like ``replace_relu``: the node keeps its input and output tensors and gets constant
    inputs ``theta`` and ``v0`` (len(timesteps), C) from ``ctx.neuron_params`` (keyed by
    :func:`calibration_tensor`), or placeholders with ``ctx.dry_run``. ``SNMClip`` carries
    the bound as attribute ``upper``; ``SNMLeaky`` gets a fourth input, the ``(C,)`` slope.

    Preconditions: ``normalize_clip`` and ``calibrate_neurons`` ran; activation inputs have
    a static channel axis 1.
    Preserves: topology and tensor names; onnxruntime can no longer run the graph.

    Returns:
        Number of nodes replaced.
    """
    rows = len(ctx.config.timesteps)
    replaced = 0
    for node in list(graph.nodes):
        clip, leaky = is_clip_neuron(node), is_leaky_neuron(node)
        if not (clip or leaky):
            continue
        channels = _channels(node)
        key = calibration_tensor(node)
        if ctx.dry_run:
            theta = np.ones((rows, channels), dtype=np.float32)
            v0 = np.zeros((rows, channels), dtype=np.float32)
        elif key in ctx.neuron_params:
            theta, v0 = ctx.neuron_params[key].theta, ctx.neuron_params[key].v0
        else:
            raise CalibrationError(
                f"node {node.name!r} ({node.op}): no calibrated parameters for {key!r}; "
                "calibrate_neurons must run before replace_activations")
        attrs = {"theta_neg": ctx.config.theta_neg,
                 "max_spikes_per_step": ctx.config.burst_size}
        inputs = [node.inputs[0],
                  gs.Constant(f"{node.name}.theta", np.asarray(theta, dtype=np.float32)),
                  gs.Constant(f"{node.name}.v0", np.asarray(v0, dtype=np.float32))]
        if clip:
            attrs["upper"] = clip_bounds(node)[1]
            node.op = CLIP_OP
        else:
            inputs.append(gs.Constant(f"{node.name}.slope", leaky_slope(node, channels)))
            node.op = LEAKY_OP
        node.domain = SNM_DOMAIN
        node.attrs = attrs
        node.inputs = inputs
        replaced += 1
    return replaced
