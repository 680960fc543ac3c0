"""Models as exporters write them convert, and the SNN converges to onnxruntime's output.

The fixtures in tests/fixtures/exporters/ are tiny random-weight CNNs written by the scripts
in tools/export_fixtures/ (run by hand, versions pinned there): PyTorch's TorchScript
exporter at opsets 9, 11, 13, 17, its dynamo exporter at opsets 18 and 21, TensorFlow/Keras
through tf2onnx (NHWC input, Transpose nodes) and MXNet 1.9.1's exporter.
"""

from pathlib import Path

import numpy as np
import onnx
import pytest

from snncompiler.inspect import conversion_rows
from tests.onnx_models import run
from tests.snncompiler.conversion import convert

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "exporters"

EXPORTED = {
    "torch_torchscript_opset9.onnx": "PyTorch TorchScript exporter, opset 9 (Upsample)",
    "torch_torchscript_opset11.onnx": "PyTorch TorchScript exporter, opset 11",
    "torch_torchscript_opset13.onnx": "PyTorch TorchScript exporter, opset 13",
    "torch_torchscript_opset17.onnx": "PyTorch TorchScript exporter, opset 17",
    "torch_dynamo_opset18.onnx": "PyTorch dynamo exporter, opset 18",
    "torch_dynamo_opset21.onnx": "PyTorch dynamo exporter, opset 21",
    "tf2onnx_keras_opset15.onnx": "Keras 3 through tf2onnx, opset 15, NHWC input",
    "mxnet_gluon.onnx": "MXNet 1.9.1 mx.onnx exporter (stamped opset 21)",
}


def input_name(name: str) -> str:
    return onnx.load(FIXTURES / name).graph.input[0].name


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_fixture_is_small_and_every_node_converts(name):
    path = FIXTURES / name
    assert path.stat().st_size < 200_000
    rows = conversion_rows(path)
    assert not [row for row in rows if row[2] == "UNSUPPORTED"], rows


def reference(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and the exporting framework's own outputs, saved next to the fixture."""
    data = np.load(FIXTURES / name.replace(".onnx", ".npz"))
    return data["x"], data["y"]


# onnxruntime refuses opset 9's way of writing ceil_mode (an end pad as large as the
# kernel); the compiler rewrites it (passes/normalize_pool_pads.py).
ORT_REFUSES = {"torch_torchscript_opset9.onnx"}


@pytest.mark.parametrize("name", sorted(EXPORTED.keys() - ORT_REFUSES))
def test_onnxruntime_agrees_with_the_exporting_framework(name):
    x, y = reference(name)
    np.testing.assert_allclose(run(onnx.load(FIXTURES / name), **{input_name(name): x})[0], y,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_exported_model_converges(name, tmp_path):
    """The SNN converges to the model's output (onnxruntime's, equal to the framework's)."""
    model = onnx.load(FIXTURES / name)
    x, y = reference(name)
    net = convert(model, x, tmp_path, threshold_percentiles=(100.0,), initial_potential="half",
                  timesteps=(256,))
    readout = net.run(x, 256)
    scale = float(np.abs(y).max())
    errors = {t: float(np.abs(readout[t - 1] - y).max()) / scale for t in (8, 256)}
    assert errors[256] < 0.05, errors
    assert errors[256] < errors[8], errors
