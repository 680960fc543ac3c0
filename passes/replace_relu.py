"""Pass: replace every Relu by a Signed Neuron with Memory (SNM)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from snncompiler.context import CompileContext
from snncompiler.errors import CalibrationError

SNM_OP = "SNM"
SNM_DOMAIN = "snncompiler"


def _channels(tensor: gs.Variable, node: gs.Node) -> int:
    shape = tensor.shape
    if shape is None or len(shape) < 2 or not isinstance(shape[1], int):
        raise CalibrationError(
            f"node {node.name!r} (Relu): input {tensor.name!r} has shape {shape}; the channel "
            "axis (1) must be static")
    return shape[1]


def replace_relu(graph: gs.Graph, ctx: CompileContext) -> int:
    """Turns each ``Relu`` into an ``SNM`` node (domain ``snncompiler``).

    The SNM node keeps the Relu's input and output tensors and gets two constant inputs,
    ``theta`` and ``v0``, each (len(timesteps), channels), taken from
    ``ctx.neuron_params`` (filled by ``calibrate_neurons``). With ``ctx.dry_run`` it uses
    placeholder parameters (theta 1, v0 0) so the graph can be checked without data.

    Preconditions: the Relu inputs have a static channel axis 1.
    Preserves: graph topology and every tensor name. The graph is no longer runnable by
    onnxruntime afterwards (SNM is not an ONNX op), so this runs after calibration.

    Returns:
        Number of Relu nodes replaced.
    """
    replaced = 0
    rows = len(ctx.config.timesteps)
    for node in [n for n in graph.nodes if n.op == "Relu"]:
        source = node.inputs[0]
        if ctx.dry_run:
            channels = _channels(source, node)
            theta = np.ones((rows, channels), dtype=np.float32)
            v0 = np.zeros((rows, channels), dtype=np.float32)
        elif source.name in ctx.neuron_params:
            params = ctx.neuron_params[source.name]
            theta, v0 = params.theta, params.v0
        else:
            raise CalibrationError(
                f"node {node.name!r} (Relu): no calibrated parameters for {source.name!r}; "
                "calibrate_neurons must run before replace_relu")
        node.op = SNM_OP
        node.domain = SNM_DOMAIN
        node.attrs = {
            "theta_neg": ctx.config.theta_neg,
            "max_spikes_per_step": ctx.config.burst_size,
        }
        node.inputs = [
            source,
            gs.Constant(f"{node.name}.theta", np.asarray(theta, dtype=np.float32)),
            gs.Constant(f"{node.name}.v0", np.asarray(v0, dtype=np.float32)),
        ]
        replaced += 1
    return replaced
