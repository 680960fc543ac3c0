"""Fold an inference-mode BatchNormalization into the Conv or Gemm that reads it."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from snncompiler.context import CompileContext

from .fold_batchnorm import _bn_scale_shift, _check_inference, _optional, _unique


def fold_batchnorm_forward(graph: gs.Graph, ctx: CompileContext) -> int:
    """Folds a BatchNormalization into the next Conv or Gemm where that is exact.

    This is for the BN that :func:`~snncompiler.passes.fold_batchnorm.fold_batchnorm` cannot
    fold backwards, typically one after a ReLU (``Conv -> Relu -> BN -> Conv``). With the BN
    ``y = s * x + shift`` per channel, the next linear op ``W * y + b`` becomes::

        Conv:  W'[o, i] = W[o, i] * s[c(o, i)]    b' = b + sum_(i,kh,kw) W[o, i] * shift[c(o, i)]
        Gemm:  B'[k, :] = B[k, :] * s[k]          C' = beta * C + alpha * shift @ B

    with ``c(o, i)`` the input channel that weight slice reads (groups included), in float64.

    It is exact only when every input of the sum is a BN output. A Conv's zero padding is
    not: a padded cell is 0 after the BN, but ``s * 0 + shift`` once folded. So a Conv with
    any padding takes the fold only when every shift is 0; otherwise the BN stays and the
    lowering makes it a per-channel affine.

    Preconditions (a BN that misses one stays):
        The BN's parameters are constants of one value per channel; its output is not a
        graph output and is read only by one Conv (as data, with explicit pads) or one Gemm
        (as A, ``transA = 0``, 2-D input) whose weights and bias are constants.

    Preserves:
        Every graph output and its name; values equal up to float32 rounding.

    Args:
        graph: Rewritten in place; folded BNs lose their consumer and ``cleanup()`` removes
            them.
        ctx: Unused; part of the pass signature.

    Returns:
        The number of BatchNormalization nodes folded.

    Raises:
        UnsupportedOpError: A BatchNormalization in training mode.
    """
    del ctx  # the pass needs no configuration
    taken = set(graph.tensors())
    folded = 0
    for bn in list(graph.nodes):
        if bn.op != "BatchNormalization":
            continue
        _check_inference(bn, graph)
        result = bn.outputs[0]
        affine = _bn_scale_shift(bn)
        if affine is None or result in graph.outputs or len(result.outputs) != 1:
            continue
        consumer = result.outputs[0]
        if consumer.inputs[0] is not result or any(t is result for t in consumer.inputs[1:]):
            continue
        if consumer.op == "Conv":
            new_inputs = _into_conv(consumer, *affine)
        elif consumer.op == "Gemm":
            new_inputs = _into_gemm(consumer, *affine)
        else:
            continue
        if new_inputs is None:
            continue
        for index, values in new_inputs.items():
            role = "weight" if index == 1 else "bias"
            constant = gs.Constant(_unique(f"{consumer.name}_bn_in_{role}", taken),
                                   values.astype(np.float32))
            if index < len(consumer.inputs):
                consumer.inputs[index] = constant
            else:
                consumer.inputs.append(constant)
        consumer.inputs[0] = bn.inputs[0]
        folded += 1
    return folded


def _into_conv(conv: gs.Node, s: np.ndarray, shift: np.ndarray) -> dict | None:
    weight, bias = conv.inputs[1], _optional(conv, 2)
    if not isinstance(weight, gs.Constant) or (bias is not None
                                               and not isinstance(bias, gs.Constant)):
        return None
    w = np.asarray(weight.values, dtype=np.float64)
    if w.ndim < 3:
        return None
    out_channels, group_channels = w.shape[:2]
    group = int(conv.attrs.get("group", 1))
    if group_channels * group != s.shape[0] or out_channels % group:
        return None
    if _has_padding(conv) and np.any(shift != 0):
        return None  # zero padding would become shift at the borders: not exact
    # Input channel read by weight slice [o, i]: group of o, then i within the group.
    group_of = np.arange(out_channels) // (out_channels // group)
    channel = group_of[:, None] * group_channels + np.arange(group_channels)[None, :]
    extra = (1,) * (w.ndim - 2)
    b = np.zeros(out_channels) if bias is None else np.asarray(bias.values, dtype=np.float64)
    if b.shape != (out_channels,):
        return None
    new_w = w * s[channel].reshape(*channel.shape, *extra)
    new_b = b + (w * shift[channel].reshape(*channel.shape, *extra)).reshape(
        out_channels, -1).sum(axis=1)
    return {1: new_w, 2: new_b}


def _has_padding(conv: gs.Node) -> bool:
    auto_pad = conv.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID", ""):
        return True  # SAME_*: padding that depends on the size; assume some
    return auto_pad != "VALID" and any(int(p) for p in conv.attrs.get("pads", []))


def _into_gemm(gemm: gs.Node, s: np.ndarray, shift: np.ndarray) -> dict | None:
    weight, c_input = gemm.inputs[1], _optional(gemm, 2)
    shape = gemm.inputs[0].shape
    if gemm.attrs.get("transA", 0) or shape is None or len(shape) != 2:
        return None
    if not isinstance(weight, gs.Constant) or weight.values.ndim != 2:
        return None
    if c_input is not None and not isinstance(c_input, gs.Constant):
        return None
    b = np.asarray(weight.values, dtype=np.float64)
    if gemm.attrs.get("transB", 0):
        b = b.T  # (K, outputs) from here on; written back transposed
    if b.shape[0] != s.shape[0]:
        return None
    alpha, beta = float(gemm.attrs.get("alpha", 1.0)), float(gemm.attrs.get("beta", 1.0))
    c = np.zeros(b.shape[1])
    if c_input is not None:
        c_values = np.asarray(c_input.values, dtype=np.float64)
        if c_values.size == 1:
            c = np.full(b.shape[1], c_values.item())
        elif c_values.shape in ((b.shape[1],), (1, b.shape[1])):
            c = c_values.reshape(-1)
        else:
            return None  # C varies per row
    new_b = b * s[:, None]
    new_c = beta * c + alpha * (shift @ b)
    gemm.attrs["beta"] = 1.0
    return {1: new_b.T if gemm.attrs.get("transB", 0) else new_b, 2: new_c}
