"""Fold inference-mode BatchNormalization into the Conv or Gemm that feeds it."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from snncompiler.context import CompileContext
from snncompiler.errors import UnsupportedOpError


def fold_batchnorm(graph: gs.Graph, ctx: CompileContext) -> int:
    """Folds BatchNormalization into the preceding Conv (any groups) or Gemm where exact.

    With ``s = scale / sqrt(var + epsilon)`` the normalisation is ``y = s * (x - mean) + B``
    per channel (axis 1). Folded into ``x = W * a + b`` it becomes::

        Conv:  W'[m] = s[m] * W[m]                 b' = s * (b - mean) + B
        Gemm:  B' = B * s (per output feature)     C' = s * (beta * C - mean) + B, beta' = 1

    computed in float64 and cast back to float32. The new weights are new constants, so a
    weight shared with another node is left as it was.

    Preconditions (a BN that misses one stays, and the lowering makes it a per-channel
    affine):
        The BN's scale, B, mean and var are constants of one value per channel; its input
        is produced by a Conv or Gemm whose weights (and bias/C, if any) are constants;
        that output feeds only this BN and is not a graph output. A Gemm's C must be a
        scalar or one value per output feature, since a per-row C would pin the batch.

    Preserves:
        Every graph output and its name; values equal up to float32 rounding.

    Args:
        graph: Rewritten in place. Folded BN nodes are removed from the node list.
        ctx: Unused; part of the pass signature.

    Returns:
        The number of BatchNormalization nodes folded.

    Raises:
        UnsupportedOpError: A BatchNormalization in training mode.
    """
    del ctx  # the pass needs no configuration
    folded = []
    taken = set(graph.tensors())
    for bn in list(graph.nodes):
        if bn.op != "BatchNormalization":
            continue
        _check_inference(bn, graph)
        if _fold_one(bn, graph, taken):
            folded.append(bn)
    gone = {id(node) for node in folded}
    graph.nodes = [node for node in graph.nodes if id(node) not in gone]
    return len(folded)


def _check_inference(bn: gs.Node, graph: gs.Graph) -> None:
    statistics_used = any(t.outputs or t in graph.outputs for t in bn.outputs[1:])
    if bn.attrs.get("training_mode", 0) or statistics_used:
        raise UnsupportedOpError(
            f"BatchNormalization '{bn.name}' runs in training mode (training_mode=1 or its "
            "running statistics are used); export the model in eval mode (model.eval())"
        )


def _bn_scale_shift(bn: gs.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel (s, B - s * mean) in float64, or None when the parameters are not constant."""
    params = bn.inputs[1:5]
    if len(params) != 4 or not all(isinstance(p, gs.Constant) for p in params):
        return None
    scale, bias, mean, var = (np.asarray(p.values, dtype=np.float64) for p in params)
    if not scale.ndim == bias.ndim == mean.ndim == var.ndim == 1:
        return None
    s = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    return s, bias - s * mean


def _fold_one(bn: gs.Node, graph: gs.Graph, taken: set[str]) -> bool:
    source = bn.inputs[0]
    if len(source.inputs) != 1 or len(source.outputs) != 1 or source in graph.outputs:
        return False
    producer = source.inputs[0]
    if producer.op not in ("Conv", "Gemm") or len(producer.outputs) != 1:
        return False
    affine = _bn_scale_shift(bn)
    if affine is None:
        return False
    s, shift = affine
    fold = _fold_conv if producer.op == "Conv" else _fold_gemm
    new_inputs = fold(producer, s, shift)
    if new_inputs is None:
        return False

    for index, values in new_inputs.items():
        name = _unique(f"{producer.name}_bn_{'weight' if index == 1 else 'bias'}", taken)
        constant = gs.Constant(name, values.astype(np.float32))
        if index < len(producer.inputs):
            producer.inputs[index] = constant
        else:
            producer.inputs.append(constant)
    result = bn.outputs[0]
    bn.inputs.clear()
    bn.outputs.clear()
    # The producer now writes the BN's output tensor, so its name (maybe a graph output) stays.
    producer.outputs[0] = result
    return True


def _optional(node: gs.Node, index: int) -> gs.Tensor | None:
    if index < len(node.inputs) and not node.inputs[index].is_empty():
        return node.inputs[index]
    return None


def _fold_conv(conv: gs.Node, s: np.ndarray, shift: np.ndarray) -> dict | None:
    weight, bias = conv.inputs[1], _optional(conv, 2)
    if not isinstance(weight, gs.Constant) or (
        bias is not None and not isinstance(bias, gs.Constant)
    ):
        return None
    w = np.asarray(weight.values, dtype=np.float64)
    channels = w.shape[0]  # output channels lead, whatever the groups
    if s.shape != (channels,):
        return None
    b = np.zeros(channels) if bias is None else np.asarray(bias.values, dtype=np.float64)
    if b.shape != (channels,):
        return None
    return {1: w * s.reshape((channels,) + (1,) * (w.ndim - 1)), 2: s * b + shift}


def _fold_gemm(gemm: gs.Node, s: np.ndarray, shift: np.ndarray) -> dict | None:
    weight, c_input = gemm.inputs[1], _optional(gemm, 2)
    if not isinstance(weight, gs.Constant) or weight.values.ndim != 2:
        return None
    if c_input is not None and not isinstance(c_input, gs.Constant):
        return None
    trans_b = gemm.attrs.get("transB", 0)
    b = np.asarray(weight.values, dtype=np.float64)
    features = b.shape[0] if trans_b else b.shape[1]
    if s.shape != (features,):
        return None
    c = np.zeros(features)
    if c_input is not None:
        c_values = np.asarray(c_input.values, dtype=np.float64)
        if c_values.size == 1:
            c = np.full(features, c_values.item())
        elif c_values.shape in ((features,), (1, features)):
            c = c_values.reshape(features)
        else:
            return None  # C varies per row: it cannot become a per-feature bias
        c = c * float(gemm.attrs.get("beta", 1.0))
    # Y = alpha * A @ B + C: scaling B's output-feature axis scales alpha * A @ B too.
    b = b * (s[:, None] if trans_b else s[None, :])
    gemm.attrs["beta"] = 1.0
    return {1: b, 2: s * c + shift}


def _unique(base: str, taken: set[str]) -> str:
    name, suffix = base, 1
    while name in taken:
        name, suffix = f"{base}_{suffix}", suffix + 1
    taken.add(name)
    return name
