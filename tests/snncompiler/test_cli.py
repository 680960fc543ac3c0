"""The snnc command line, through click's test runner, on the shipped demo model."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from snncompiler.cli import main
from snncompiler.demo import demo_files
from snncompiler.runtime import load


@pytest.fixture(scope="module")
def demo():
    spec, folder = demo_files()
    return spec, folder


def preprocessing_args(spec):
    return ["--scale", str(spec["scale"]), "--mean", str(spec["mean"]), "--std", str(spec["std"])]


@pytest.fixture(scope="module")
def compiled(demo, tmp_path_factory):
    spec, folder = demo
    out = tmp_path_factory.mktemp("cli") / "demo.snn"
    result = CliRunner().invoke(main, [
        str(folder / spec["model"]), "-o", str(out), "--calib", str(folder / spec["calibration"]),
        "-T", "8,4", "--calib-samples", "100", "-q", *preprocessing_args(spec)])
    assert result.exit_code == 0, result.output
    return out, result


def test_compile_writes_a_loadable_snn(compiled):
    out, result = compiled
    assert "wrote" in result.output and "calibrated for T=[8, 4]" in result.output
    net = load(out)
    assert net.program.timesteps == [8, 4] and net.program.default_timesteps == 8
    assert net.program.calibration["samples"] == 100


def test_compile_refuses_to_overwrite_without_force(demo, compiled):
    spec, folder = demo
    out, _ = compiled
    before = out.read_bytes()
    args = [str(folder / spec["model"]), "-o", str(out), "--calib",
            str(folder / spec["calibration"]), "-q", *preprocessing_args(spec)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "--force" in result.output
    assert out.read_bytes() == before


def test_eval_prints_a_table_and_writes_json(demo, compiled, tmp_path):
    spec, folder = demo
    out, _ = compiled
    report = tmp_path / "results.json"
    result = CliRunner().invoke(main, [
        "eval", str(out), "--data", str(folder / spec["test"]), "-T", "1,4,8",
        "--onnx", str(folder / spec["model"]), "--json", str(report), "--limit", "64", "-q",
        *preprocessing_args(spec)])
    assert result.exit_code == 0, result.output
    assert "SNN acc" in result.output and "agreement" in result.output
    data = json.loads(report.read_text())
    assert data["timesteps"] == [1, 4, 8] and data["n"] == 64
    assert set(data) >= {"snn_accuracy", "agreement", "ann_accuracy"}
    assert all(0 <= a <= 1 for a in data["snn_accuracy"] + data["agreement"])
    # The ANN's accuracy is recomputed from onnxruntime, not read from a file.
    assert 0.5 < data["ann_accuracy"] <= 1.0


def test_inspect_onnx_lists_every_node_and_a_verdict(demo):
    spec, folder = demo
    result = CliRunner().invoke(main, ["inspect", str(folder / spec["model"])])
    assert result.exit_code == 0, result.output
    assert "MaxPool" in result.output and "neuron" in result.output
    assert "The model converts." in result.output


def test_inspect_snn_shows_the_header(compiled):
    out, _ = compiled
    result = CliRunner().invoke(main, ["inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert "calibrated for T: [8, 4]" in result.output and "snm" in result.output


def test_uint8_data_without_preprocessing_is_refused(demo, tmp_path):
    spec, folder = demo
    result = CliRunner().invoke(main, [str(folder / spec["model"]), "-o", str(tmp_path / "a.snn"),
                                       "--calib", str(folder / spec["calibration"]), "-q"])
    assert result.exit_code == 1
    assert "--scale" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "a.snn").exists()


def test_wrong_layout_gets_a_one_line_error(demo, tmp_path):
    spec, folder = demo
    data = tmp_path / "nhwc.npz"
    np.savez(data, x=np.zeros((4, 28, 28, 1), np.float32))
    result = CliRunner().invoke(main, [str(folder / spec["model"]), "-o", str(tmp_path / "a.snn"),
                                       "--calib", str(data), "-q"])
    assert result.exit_code == 1
    assert "expects [N, 1, 28, 28]" in result.output and "Traceback" not in result.output


def test_missing_model_file_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, [str(tmp_path / "none.onnx"), "-o", str(tmp_path / "a.snn"),
                                       "--calib", str(tmp_path / "none.npz")])
    assert result.exit_code == 1 and "none" in result.output and "Traceback" not in result.output


def test_demo_runs_offline_and_reports_every_t(tmp_path, monkeypatch):
    # A reduced demo (two T values) keeps the suite fast; `make demo` runs the full one.
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "-T", "4,16", "-q"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["timesteps"] == [4, 16] and data["n"] == 1000
    assert data["snn_accuracy"][1] > 0.8 and data["agreement"][1] > 0.85
