"""Helpers to convert a test ONNX model and compare the SNN with onnxruntime."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx

from snncompiler.context import CompileConfig
from snncompiler.npz import Dataset
from snncompiler.pipeline import compile_model
from snncompiler.runtime.engine import SpikingNetwork
from tests.graph_builder import GraphBuilder
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


def assert_static_path_matches_onnxruntime(build: Callable[[GraphBuilder], object],
                                           tmp_path) -> None:
    """Builds a neuron-free graph on a (3, 7, 7) input and checks the SNN at T=1.

    Without a neuron nothing spikes, so the network is the ANN itself, computed by the
    runtime's own kernels on the static path: any lowering or kernel mistake is a mismatch.
    """
    builder = GraphBuilder((3, 7, 7), np.random.default_rng(0))
    build(builder)
    model = builder.model()
    x = np.random.default_rng(1).normal(size=(4, 3, 7, 7)).astype(np.float32)
    net = convert(model, x, tmp_path)
    np.testing.assert_allclose(net.run(x, 1)[0], run(model, x=x)[0], rtol=1e-4, atol=1e-5)


def assert_converges(model: onnx.ModelProto, x: np.ndarray, tmp_path, steps: Sequence[int],
                     **config) -> tuple[SpikingNetwork, dict[int, float]]:
    """Converts for the longest of ``steps`` and checks that the SNN converges to onnxruntime.

    Thresholds are set at the calibration maximum and the test inputs are the calibration
    inputs, so no activation is clipped: the only error left is the discreteness of T steps.
    At the longest T the relative error (see :func:`relative_errors`) must be below 5% and
    below the error at the shortest T.

    Returns:
        The network and the errors by T, for further checks.
    """
    options = {"threshold_percentiles": (100.0,), "initial_potential": "half",
               "timesteps": (max(steps),), **config}
    net = convert(model, x, tmp_path, **options)
    errors = relative_errors(model, net, x, steps)
    shortest, longest = min(steps), max(steps)
    assert errors[longest] < 0.05, errors
    # A random net may be silent (every ReLU dead): then there is no error to shrink.
    assert errors[longest] < errors[shortest] or errors[shortest] < 1e-6, errors
    return net, errors
