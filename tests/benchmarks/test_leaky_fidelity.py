"""The leaky-neuron benchmark: the ANN it makes and the report it writes."""

import numpy as np
import onnx

from benchmarks import leaky_fidelity as bench
from tests.graph_builder import GraphBuilder
from tests.onnx_models import run


def small_model(activation) -> onnx.ModelProto:
    b = GraphBuilder((1, 6, 6), np.random.default_rng(0))
    for channels in (3, 2):
        b.conv(channels)
        activation(b)
    b.flatten()
    b.gemm(4)
    return b.model()


def test_every_relu_becomes_a_leaky_relu_of_the_given_slope(tmp_path):
    path = tmp_path / "relu.onnx"
    onnx.save(small_model(lambda b: b.relu()), path)
    leaky = bench.leaky_model(path, 0.25)
    assert [n.op_type for n in leaky.graph.node].count("LeakyRelu") == 2
    assert "Relu" not in [n.op_type for n in leaky.graph.node]
    # The same weights (same seed) with LeakyRelu built in: the same outputs.
    built = small_model(lambda b: b.op("LeakyRelu", alpha=0.25))
    x = np.random.default_rng(1).normal(size=(3, 1, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(run(leaky, x=x)[0], run(built, x=x)[0])
    assert not np.allclose(run(leaky, x=x)[0], run(onnx.load(path), x=x)[0])


def test_report_lists_every_variant_with_gap_and_agreement(tmp_path):
    results = {
        "alpha": 0.1, "timesteps": [2, 4], "calibration": {"images": 8},
        "test": {"images": 10}, "machine": {"platform": "p", "cpus": 2},
        "models": {"vgg": {"ann_accuracy": 0.9, "variants": {
            "default": {"accuracy": [0.85, 0.9], "agreement": [0.9, 1.0],
                        "second_stage": ["T=2: reverted (x)", "T=4: kept 3 of 4"]},
            "default_no_ss": {"accuracy": [0.8, 0.9], "agreement": [0.8, 1.0],
                              "second_stage": None}}}}}
    path = tmp_path / "leaky.md"
    bench.write_report(results, path)
    text = path.read_text()
    assert "| vgg (90.00%) | default | 5.00 (90.0%) | 0.00 (100.0%) |" in text
    assert "| vgg (90.00%) | default_no_ss | 10.00 (80.0%) | 0.00 (100.0%) |" in text
    assert "- vgg, default: T=2: reverted (x); T=4: kept 3 of 4" in text
