"""The deep-fidelity harness: its statistics, and the verdicts its report draws from them."""

import json

import numpy as np
import pytest

from benchmarks import deep_fidelity as bench


def test_wilson_interval_matches_the_formula():
    # 5 of 10, z = 1.96: centre (0.5 + 0.19208) / 1.38416 = 0.5, half-width
    # 1.96 * sqrt(0.025 + 0.009604) / 1.38416 = 0.26341.
    assert bench.wilson(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    # 0 of 10: the lower end stays at 0, the upper is z^2 / (n + z^2) = 3.8416 / 13.8416.
    assert bench.wilson(0, 10) == pytest.approx((0.0, 0.27754), abs=1e-5)
    assert bench.wilson(0, 0) == (0.0, 1.0)


def test_bootstrap_resamples_whole_photos():
    constant = bench.bootstrap_mean([0.3] * 6, ["a", "a", "b", "b", "c", "c"])
    assert constant == pytest.approx((0.3, 0.3))
    # Two photos, each with two equal views: a resample's mean is 0, 0.5 or 1, never 0.25.
    values, photos = [0.0, 0.0, 1.0, 1.0], ["a", "a", "b", "b"]
    low, high = bench.bootstrap_mean(values, photos)
    assert (low, high) == (0.0, 1.0)
    one_photo = bench.bootstrap_mean([0.0, 1.0, 0.5], ["a", "a", "a"])
    assert one_photo == pytest.approx((0.5, 0.5))  # one photo: nothing to resample


def test_bootstrap_interval_is_reproducible_and_brackets_the_mean():
    rng = np.random.default_rng(1)
    values = rng.random(40)
    photos = np.repeat(np.arange(20), 2).astype(str)
    first = bench.bootstrap_mean(values, photos)
    assert first == bench.bootstrap_mean(values, photos)
    assert first[0] < values.mean() < first[1]


def test_top5_overlap_counts_shared_classes():
    ann = np.arange(10.0)[None]  # top 5: classes 5..9
    assert bench.top5_overlap(ann, ann) == pytest.approx([1.0])
    assert bench.top5_overlap(-ann, ann) == pytest.approx([0.0])  # top 5: classes 0..4
    three = ann.copy()
    three[0, [5, 6]] = -1.0  # classes 5 and 6 drop out, 3 and 4 come in: 3 of 5 shared
    assert bench.top5_overlap(three, ann) == pytest.approx([0.6])
    assert bench.top5_overlap(np.ones((1, 3)), np.ones((1, 3))) == pytest.approx([1.0])


def test_relative_error_is_the_l2_ratio():
    ann = np.array([[3.0, 4.0], [1.0, 0.0]])
    assert bench.relative_error(ann, ann) == pytest.approx([0.0, 0.0])
    assert bench.relative_error(np.zeros_like(ann), ann) == pytest.approx([1.0, 1.0])
    assert bench.relative_error(ann + [[3.0, 4.0], [0.0, 2.0]], ann) == pytest.approx([1.0, 2.0])


def test_summary_of_one_t():
    ann = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    snn = ann.copy()
    snn[3] = [0.0, 1.0]  # the last view disagrees
    found = bench.summarise(snn, ann, np.array(["a", "a", "b", "b"]))
    assert found["agreement"] == 0.75
    assert found["agreement_ci"] == pytest.approx(bench.wilson(3, 4))
    assert found["relative_logit_error"] == pytest.approx(np.sqrt(2) / 4)
    assert [m["view"] for m in found["disagreements"]] == [3]
    assert found["disagreements"][0]["error"] == pytest.approx(np.sqrt(2))


def test_flip_error_is_the_smallest_relative_error_that_ties_the_two_best_classes():
    rng = np.random.default_rng(0)
    ann = rng.normal(size=(50, 7))
    bound = bench.flip_error(ann)
    top = np.argsort(ann, axis=1)
    for row, limit in zip(range(len(ann)), bound):
        first, second = top[row, -1], top[row, -2]
        # Moving the two best logits half their gap towards each other ties them, with a
        # perturbation of exactly the bound (relative to the logits' norm) ...
        step = np.zeros(7)
        gap = ann[row, first] - ann[row, second]
        step[first], step[second] = -gap / 2, gap / 2
        assert np.linalg.norm(step) / np.linalg.norm(ann[row]) == pytest.approx(limit)
        # ... and random perturbations a little smaller never change the class.
        for _ in range(20):
            noise = rng.normal(size=7)
            noise *= 0.99 * limit * np.linalg.norm(ann[row]) / np.linalg.norm(noise)
            assert (ann[row] + noise).argmax() == first


@pytest.mark.parametrize("agree, expected", [
    (100, "met"),  # Wilson 100/100: [0.963, 1]
    (92, "met by the estimate, but the 95% interval reaches below the target"),  # [0.850, 0.959]
    (88, "missed by the estimate, but the 95% interval reaches the target"),  # [0.802, 0.930]
    (50, "missed"),  # [0.404, 0.596]
])
def test_verdict_weighs_the_interval(agree, expected):
    assert bench.verdict(agree / 100, 100, 0.90) == expected


def _record(agreement: dict[int, float], views: int = 100) -> dict:
    per_t = {}
    for t, a in agreement.items():
        per_t[str(t)] = {
            "agreement": a, "agreement_ci": bench.wilson(round(a * views), views),
            "top5_overlap": 0.9, "top5_overlap_ci": (0.85, 0.95),
            "relative_logit_error": 0.1, "relative_logit_error_ci": (0.08, 0.12),
            "synaptic_ops": 1e9, "synaptic_ops_per_ann_mac": 0.5, "firing_rate": 0.1,
            "simulate_seconds": 10.0}
    rows = [{"node": f"n{i}", "relative_error": [0.1 * (i + 1), 0.05 * (i + 1)]}
            for i in range(3)]
    machine = {"cpu": "test cpu", "cpus": 2, "load_average": [1.0, 1.0, 1.0],
               "platform": "test", "python": "3", "snncompiler": "0", "numpy": "0",
               "numba": "0", "onnxruntime": "0"}
    return {"model": "m", "variant": "default", "compile_args": [], "views": views,
            "photos": views // 2, "calibration_views": 64, "timesteps": sorted(agreement),
            "ann_macs": 1e8, "static_macs": 1e6,
            "compile": {"seconds": 1.0, "peak_rss_mib": 100.0, "command": "snnc m.onnx"},
            "ann_seconds": 1.0, "per_t": per_t,
            "layers": {"timesteps": [8, 64], "views": 4, "rows": rows},
            "machine": machine, "date": "today"}


def test_report_states_one_verdict_per_target_measured(tmp_path):
    results = {"m": _record({4: 0.5, 8: 0.95, 16: 0.93, 64: 1.0}),
               "m:burst": _record({8: 0.80})}
    path = tmp_path / "deep.json"
    path.write_text(json.dumps({"results": results}))
    text = bench.write_report(path).read_text()
    verdicts = [line for line in text.splitlines() if line.startswith("- m")]
    assert verdicts == [
        "- m, T=8: agreement 95.0% [88.8, 97.8] on 100 views, target 90%: met by the "
        "estimate, but the 95% interval reaches below the target",
        "- m, T=16: agreement 93.0% [86.3, 96.6] on 100 views, target 97%: missed",
        "- m:burst, T=8: agreement 80.0% [71.1, 86.7] on 100 views, target 90%: missed",
    ]  # T=4 and T=64 have no target; T=32 was not measured
    assert "| 64 | 100.0 [96.3, 100.0] |" in text


def test_compile_args_must_be_named_and_leave_the_harness_flags_alone():
    args, extra = bench.parse_args(["--variant", "burst4", "--compile-args=--max-spikes 4"])
    assert extra == ["--max-spikes", "4"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--compile-args=--no-second-stage"])  # no --variant
    with pytest.raises(SystemExit):
        bench.parse_args(["--variant", "x", "--compile-args=-T 4"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--variant", "x", "--compile-args=--calib-samples=3"])


def test_recorded_command_names_files_of_the_checkout_relative_to_it(tmp_path):
    inside = bench.REPO / "out" / "deep" / "m.onnx"
    assert bench._in_repo(str(inside)) == "out/deep/m.onnx"
    assert bench._in_repo(str(tmp_path / "m.onnx")) == str(tmp_path / "m.onnx")
    assert bench._in_repo("--max-spikes") == "--max-spikes"
    assert bench._in_repo("4,8") == "4,8"
