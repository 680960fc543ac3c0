"""Helpers to convert a test ONNX model and compare the SNN with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx

from snncompiler.context import CompileConfig
from snncompiler.npz import Dataset
from snncompiler.pipeline import compile_model
from snncompiler.runtime.engine import SpikingNetwork
from tests.onnx_models import run


def convert(model: onnx.ModelProto, x: np.ndarray, tmp_path, **config) -> SpikingNetwork:
    """Compiles ``model`` with ``x`` as calibration data and returns the runnable network."""
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    options = {"timesteps": (32,), "progress": False, **config}
    result = compile_model(path, Dataset(x, None, "test"), CompileConfig(**options))
    return SpikingNetwork(result.program)


def relative_errors(model, net, x, timesteps) -> dict[int, float]:
    """max |SNN readout at T - ANN| / max |ANN| for each T, from one run."""
    ann = run(model, x=x)[0]
    readout = net.run(x, max(timesteps))
    scale = max(float(np.abs(ann).max()), 1e-6)
    return {t: float(np.abs(readout[t - 1] - ann).max()) / scale for t in timesteps}
