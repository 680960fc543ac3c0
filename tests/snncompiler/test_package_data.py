"""The demo data shipped in ``snncompiler/data`` is complete and consistent with itself.

The files are made by ``benchmarks/train_fashion_mnist.py --model demo``; these tests need
only onnx and onnxruntime, not torch.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from snncompiler.datasets import DEFAULT_ROOT, FASHION_MNIST_CLASSES, load_fashion_mnist

DATA = Path(str(files("snncompiler") / "data"))
FIELDS = {
    "model",
    "calibration",
    "test",
    "scale",
    "mean",
    "std",
    "classes",
    "ann_accuracy_1000",
    "trained_by",
}
has_dataset = pytest.mark.skipif(
    not DEFAULT_ROOT.is_dir(), reason="dataset-fashion-mnist not installed"
)


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((DATA / "demo.json").read_text())


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def preprocess(x: np.ndarray, meta: dict) -> np.ndarray:
    """The preprocessing demo.json documents: (x * scale - mean) / std, as float32."""
    return ((x.astype(np.float64) * meta["scale"] - meta["mean"]) / meta["std"]).astype(np.float32)


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_demo_json_fields(meta):
    assert set(meta) == FIELDS
    for key in ("model", "calibration", "test"):
        assert (DATA / meta[key]).is_file(), meta[key]
    assert meta["scale"] == 1 / 255
    # Fashion-MNIST train statistics of pixels scaled to [0, 1].
    assert meta["mean"] == pytest.approx(0.2860, abs=1e-4)
    assert meta["std"] == pytest.approx(0.3530, abs=1e-4)
    assert meta["classes"] == list(FASHION_MNIST_CLASSES)
    assert 0.89 <= meta["ann_accuracy_1000"] <= 1.0
    assert meta["trained_by"] == "benchmarks/train_fashion_mnist.py --model demo"


@pytest.mark.parametrize("key,count", [("calibration", 300), ("test", 1000)])
def test_npz_arrays(meta, key, count):
    arrays = load_npz(DATA / meta[key])
    assert set(arrays) == {"x", "y"}
    x, y = arrays["x"], arrays["y"]
    assert x.dtype == np.uint8 and x.shape == (count, 1, 28, 28)
    assert y.dtype == np.int64 and y.shape == (count,)
    assert y.min() >= 0 and y.max() < len(FASHION_MNIST_CLASSES)
    assert x.max() > 200  # raw pixels, not preprocessed or rescaled


@has_dataset
def test_test_npz_is_head_of_test_split(meta):
    arrays = load_npz(DATA / meta["test"])
    x, y = load_fashion_mnist("test")
    np.testing.assert_array_equal(arrays["x"][:, 0], x[:1000])
    np.testing.assert_array_equal(arrays["y"], y[:1000])


@has_dataset
def test_calibration_comes_from_train_split(meta):
    # Calibrating on test images would leak the test set into the thresholds.
    arrays = load_npz(DATA / meta["calibration"])
    x, y = load_fashion_mnist("train")
    train = {image.tobytes(): label for image, label in zip(x, y)}
    for image, label in zip(arrays["x"][:, 0], arrays["y"]):
        assert train.get(image.tobytes()) == label


def test_demo_model_structure(meta):
    model = onnx.load(str(DATA / meta["model"]))
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    (graph_input,) = model.graph.input
    assert graph_input.name == "input"
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert [o.name for o in model.graph.output] == ["logits"]
    ops = {node.op_type for node in model.graph.node}
    # The demo is there to exercise these conversions, BN folding included.
    assert {"Conv", "BatchNormalization", "Relu", "MaxPool", "Add", "Gemm"} <= ops


def test_demo_accuracy_reproduces(meta):
    arrays = load_npz(DATA / meta["test"])
    sess = session(DATA / meta["model"])
    (logits,) = sess.run(["logits"], {"input": preprocess(arrays["x"], meta)})
    assert logits.shape == (1000, 10)
    accuracy = float((logits.argmax(1) == arrays["y"]).mean())
    assert accuracy == pytest.approx(meta["ann_accuracy_1000"], abs=1e-9)


def test_demo_model_has_dynamic_batch(meta):
    arrays = load_npz(DATA / meta["test"])
    sess = session(DATA / meta["model"])
    x = preprocess(arrays["x"][:3], meta)
    (three,) = sess.run(["logits"], {"input": x})
    (one,) = sess.run(["logits"], {"input": x[:1]})
    assert three.shape == (3, 10) and one.shape == (1, 10)
    np.testing.assert_allclose(one[0], three[0], rtol=1e-5, atol=1e-5)
