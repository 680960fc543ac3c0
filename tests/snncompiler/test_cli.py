"""The snnc command line, through click's test runner, on the shipped demo model."""

import json
from dataclasses import replace

import click
import numpy as np
import pytest
from click.testing import CliRunner

from snncompiler.cli import main
from snncompiler.context import CompileConfig
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


def _eval_demo(demo, compiled, tmp_path, *options):
    """``snnc eval`` of the compiled demo at T = 1, 4, 8: the result and its --json data."""
    spec, folder = demo
    out, _ = compiled
    report = tmp_path / "results.json"
    result = CliRunner().invoke(main, [
        "eval", str(out), "--data", str(folder / spec["test"]), "-T", "1,4,8",
        "--json", str(report), "-q", *options, *preprocessing_args(spec)])
    assert result.exit_code == 0, result.output
    return result, json.loads(report.read_text())


def test_eval_prints_a_table_and_writes_json(demo, compiled, tmp_path):
    spec, folder = demo
    result, data = _eval_demo(demo, compiled, tmp_path, "--onnx", str(folder / spec["model"]),
                              "--limit", "64")
    assert "SNN acc" in result.output and "agreement" in result.output
    assert data["timesteps"] == [1, 4, 8] and data["n"] == 64
    assert set(data) >= {"snn_accuracy", "agreement", "ann_accuracy"}
    assert all(0 <= a <= 1 for a in data["snn_accuracy"] + data["agreement"])
    # The ANN's accuracy is recomputed from onnxruntime, not read from a file.
    assert 0.5 < data["ann_accuracy"] <= 1.0


def test_eval_reports_the_work_per_image(demo, compiled, tmp_path):
    out, _ = compiled
    result, data = _eval_demo(demo, compiled, tmp_path, "--limit", "40", "--batch-size", "16")
    # Calibrated for T = 8 and 4: T = 1 runs with the set for 4, in the run of T = 4.
    assert data["parameters_for"] == [4, 4, 8]
    assert data["synaptic_ops"][0] is None and data["mean_firing_rate"][0] is None
    macs = data["ann_macs"]
    assert macs > data["static_macs"] > 0
    for i, t in ((1, 4), (2, 8)):
        assert data["synaptic_ops"][i] > 0 and 0 < data["mean_firing_rate"][i] < 1
        assert data["synaptic_ops_per_ann_mac"][i] == pytest.approx(
            data["synaptic_ops"][i] / (macs * t))
    assert data["layer_activity_timesteps"] == 8
    layers = data["layer_activity"]
    assert [row["layer"] for row in layers] == [n.name for n in load(out).program.neuron_nodes()]
    assert sum(row["synaptic_ops"] or 0 for row in layers) == pytest.approx(data["synaptic_ops"][2])
    lines = result.output.splitlines()
    table = lines.index(next(line for line in lines if line.split()[:2] == ["T", "synaptic"]))
    assert [line.split()[0] for line in lines[table + 2:table + 4]] == ["4", "8"]
    assert "per layer at T=8" in result.output
    assert all(row["layer"] in result.output for row in layers)


def test_compile_option_defaults_are_the_compile_config_defaults():
    default = CompileConfig()
    options = {param.name: param for param in main.commands["compile"].params}
    assert options["timesteps"].default == ",".join(map(str, default.timesteps))
    for option, field in [("theta_neg", "theta_neg"), ("initial_potential", "initial_potential"),
                          ("granularity", "granularity"), ("max_spikes", "max_spikes_per_step"),
                          ("second_stage", "second_stage"),
                          ("output_tolerance", "output_tolerance"),
                          ("level_search", "level_search"),
                          ("second_stage_samples", "second_stage_samples")]:
        assert options[option].default == getattr(default, field), option
    resolution = options["resolution"]
    assert resolution.callback(None, resolution, resolution.default) == default.resolution


@pytest.mark.parametrize("given, parsed", [("auto", None), ("AUTO", None), ("16", 16),
                                           ("1", 1)])
def test_resolution_is_auto_or_a_number(given, parsed):
    resolution = {p.name: p for p in main.commands["compile"].params}["resolution"]
    assert resolution.callback(None, resolution, given) == parsed


@pytest.mark.parametrize("given", ["0", "-3", "many", "1.5"])
def test_a_bad_resolution_is_refused(given):
    resolution = {p.name: p for p in main.commands["compile"].params}["resolution"]
    with pytest.raises(click.BadParameter, match="neither 'auto' nor a whole number"):
        resolution.callback(None, resolution, given)


def test_compile_without_options_compiles_with_the_compile_config(demo, tmp_path, monkeypatch):
    spec, folder = demo
    seen = {}

    def capture(model, calibration, config, **options):
        seen["config"] = config
        raise KeyboardInterrupt  # the configuration is all this test needs

    monkeypatch.setattr("snncompiler.pipeline.compile_model", capture)
    result = CliRunner().invoke(main, [
        str(folder / spec["model"]), "-o", str(tmp_path / "a.snn"), "--calib",
        str(folder / spec["calibration"]), "--calib-samples", "4", "-q",
        *preprocessing_args(spec)])
    assert result.exit_code == 130
    assert seen["config"] == replace(CompileConfig(), progress=False)


def test_the_layer_search_and_tolerance_reach_the_compile_config(demo, tmp_path, monkeypatch):
    spec, folder = demo
    seen = {}

    def capture(model, calibration, config, **options):
        seen["config"] = config
        raise KeyboardInterrupt

    monkeypatch.setattr("snncompiler.pipeline.compile_model", capture)
    result = CliRunner().invoke(main, [
        str(folder / spec["model"]), "-o", str(tmp_path / "a.snn"), "--calib",
        str(folder / spec["calibration"]), "--calib-samples", "4", "-q",
        "--level-search", "layer", "--output-tolerance", "0.03", *preprocessing_args(spec)])
    assert result.exit_code == 130
    assert seen["config"].level_search == "layer"
    assert seen["config"].output_tolerance == 0.03
    refused = CliRunner().invoke(main, [
        str(folder / spec["model"]), "-o", str(tmp_path / "b.snn"), "--calib",
        str(folder / spec["calibration"]), "--level-search", "channel"])
    assert refused.exit_code == 1
    assert "--level-search" in refused.output and "'channel' is not one of" in refused.output


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
    # Each T has its own parameter set, so each is counted.
    assert all(ops > 0 for ops in data["synaptic_ops"]) and data["ann_macs"] > 0
    assert "synaptic ops" in result.output and "per layer at T=16" in result.output
