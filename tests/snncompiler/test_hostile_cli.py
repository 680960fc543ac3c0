"""Bad data and arguments through ``snnc``: one line on stderr, exit code 1, no lost work.

Bugs (exceptions nobody planned for) end in ``internal error: ...`` and exit code 2, with
the traceback only under ``--debug`` or ``SNNC_DEBUG=1``. A tiny model keeps this fast:
x (N, 2, 4, 4) -> Conv -> Relu -> flatten -> Gemm -> 5 outputs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from snncompiler import cli
from snncompiler.cli import main
from snncompiler.errors import InputError
from snncompiler.runtime import Node, Program, TensorSpec
from snncompiler.runtime.format import save_program
from tests.onnx_models import view_flatten_model

CLASSES = 5


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def assert_one_line_error(result, *fragments, code=1):
    """Exit ``code``, and the whole output is one printable ``error: ...`` line."""
    assert result.exit_code == code, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and lines[0].isprintable(), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """model.onnx, calibration and test data, and a compiled model.snn (T = 4, 8)."""
    folder = tmp_path_factory.mktemp("cli")
    onnx.save(view_flatten_model(np.random.default_rng(0)), folder / "model.onnx")
    rng = np.random.default_rng(1)
    np.savez(folder / "calib.npz", x=rng.random((16, 2, 4, 4), dtype=np.float32))
    np.savez(folder / "test.npz", x=rng.random((12, 2, 4, 4), dtype=np.float32),
             y=np.arange(12) % CLASSES)
    result = invoke(folder / "model.onnx", "-o", folder / "model.snn", "--calib",
                    folder / "calib.npz", "-T", "8,4", "-q")
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if the command gets as far as compiling or evaluating."""

    def refuse(*args, **kwargs):
        raise AssertionError("the command should have been refused before doing any work")

    monkeypatch.setattr("snncompiler.pipeline.compile_model", refuse)
    monkeypatch.setattr("snncompiler.evaluate.evaluate", refuse)
    monkeypatch.setattr("snncompiler.demo.run_demo", refuse)


def data(folder: Path, name: str, **arrays) -> Path:
    path = folder / name
    np.savez(path, **arrays)
    return path


def eval_args(files, data_path, *extra):
    return ("eval", files / "model.snn", "--data", data_path, "-q", *extra)


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("args", [
    ["eval", "{snn}", "--data", "{dir}"],
    ["eval", "{dir}", "--data", "{test}"],
    ["inspect", "{dir}"],
    ["{model}", "-o", "{dir}", "--calib", "{calib}"],
    ["eval", "{snn}", "--data", "{test}", "--batch-size", "0"],
    ["eval", "{snn}"],
    ["eval", "{snn}", "--data", "{test}", "--no-such-option"],
    ["{model}", "--calib", "{calib}"],
    ["compile"],
], ids=["data-dir", "snn-dir", "inspect-dir", "output-dir", "batch-0", "no-data", "option",
        "no-output", "no-model"])
def test_usage_errors_are_one_line_with_exit_code_1(files, no_work, args):
    names = {"snn": files / "model.snn", "dir": files, "test": files / "test.npz",
             "model": files / "model.onnx", "calib": files / "calib.npz"}
    result = invoke(*[a.format(**names) for a in args])
    line = assert_one_line_error(result)
    assert "--help" in line and "Usage" not in result.output


@pytest.mark.parametrize("text", ["1,,x", "0", "-3", "", ",", "1,,2", "4,", "x", "1e3", "0x10",
                                  "+5", "\u0663", "1_000", "2147483648", "9" * 30])
@pytest.mark.parametrize("command", ["compile", "eval", "demo"])
def test_bad_timesteps_are_refused_before_any_work(files, no_work, command, text):
    if command == "compile":
        args = [files / "model.onnx", "-o", files / "new.snn", "--calib", files / "calib.npz"]
    elif command == "eval":
        args = ["eval", files / "model.snn", "--data", files / "test.npz"]
    else:
        args = ["demo"]
    assert_one_line_error(invoke(*args, "-T", text, "-q"), "-T")
    assert not (files / "new.snn").exists()


def test_timesteps_keep_the_users_order_and_drop_repeats():
    assert cli.parse_timesteps(" 8, 4,8 ,16") == [8, 4, 16]


# --------------------------------------------------------------------------- data


@pytest.mark.parametrize(("arrays", "fragment"), [
    ({"x": np.full((4, 2, 4, 4), np.nan, np.float32)}, "NaN or Inf"),
    ({"x": np.full((4, 2, 4, 4), np.inf, np.float32)}, "NaN or Inf"),
    ({"x": np.full((4, 2, 4, 4), 1e300)}, "NaN or Inf"),
    ({"x": np.zeros((0, 2, 4, 4), np.float32)}, "non-empty batch"),
    ({"x": np.zeros((4, 4, 4, 2), np.float32)}, "expects [N, 2, 4, 4]"),
    ({"x": np.zeros((4, 32), np.float32)}, "expects [N, 2, 4, 4]"),
    ({"x": np.zeros((4, 2, 4, 4), np.float32), "y": np.array([0, 1, 2, 12])},
     "labels go up to 12 but the model has 5 outputs (labels 0..4)"),
    ({"x": np.zeros((4, 2, 4, 4), np.float32), "y": np.array([0, -1, 2, 3])}, "negative"),
    ({"x": np.zeros((4, 2, 4, 4), np.float32), "y": np.zeros(4, np.float32)}, "integer labels"),
    ({"x": np.zeros((4, 2, 4, 4), np.float32), "y": np.zeros(3, int)}, "shape [4]"),
    ({"inputs": np.zeros((4, 2, 4, 4), np.float32)}, "no array named 'x'"),
], ids=["nan", "inf", "overflow", "empty", "nhwc", "flat", "label-range", "label-negative",
        "label-float", "label-count", "no-x"])
def test_bad_data_gets_one_line(files, tmp_path, arrays, fragment):
    path = data(tmp_path, "bad.npz", **arrays)
    assert_one_line_error(invoke(*eval_args(files, path)), fragment)
    if "y" not in arrays:  # calibration data goes through the same checks
        result = invoke(files / "model.onnx", "-o", tmp_path / "out.snn", "--calib", path, "-q")
        assert_one_line_error(result, fragment)
        assert not (tmp_path / "out.snn").exists()


def test_npy_instead_of_npz(files, tmp_path, no_work):
    np.save(tmp_path / "x.npy", np.zeros((4, 2, 4, 4), np.float32))
    assert_one_line_error(invoke(*eval_args(files, tmp_path / "x.npy")), "np.savez")


@pytest.mark.parametrize("which", ["snn", "data", "model", "calib"])
def test_missing_files_are_one_line(files, tmp_path, no_work, which):
    missing = tmp_path / "missing.bin"
    if which in ("snn", "data"):
        args = ["eval", missing if which == "snn" else files / "model.snn",
                "--data", missing if which == "data" else files / "test.npz"]
    else:
        args = [missing if which == "model" else files / "model.onnx", "-o", tmp_path / "o.snn",
                "--calib", missing if which == "calib" else files / "calib.npz"]
    assert_one_line_error(invoke(*args), "missing.bin")


def test_permission_denied_is_one_line(files, monkeypatch):
    real_open = open
    snn = str(files / "model.snn")

    def deny(file, *args, **kwargs):
        if str(file) == snn:
            raise PermissionError(13, "Permission denied", snn)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny)
    assert_one_line_error(invoke("inspect", snn), "model.snn: Permission denied")
    assert_one_line_error(invoke(*eval_args(files, files / "test.npz")), "Permission denied")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_one_line(files, tmp_path):
    path = data(tmp_path, "locked.npz", x=np.zeros((4, 2, 4, 4), np.float32))
    path.chmod(0)
    assert_one_line_error(invoke(*eval_args(files, path)), "Permission denied")


def test_hostile_snn_is_one_line(files, tmp_path):
    truncated = tmp_path / "cut.snn"
    truncated.write_bytes((files / "model.snn").read_bytes()[:300])
    for args in (["inspect", truncated], ["eval", truncated, "--data", files / "test.npz"]):
        assert_one_line_error(invoke(*args), "cut.snn")


def _hostile_snn(valid: bytes, kind: str) -> bytes:
    from tools.fuzz_campaign import npy, planted_pickle_npy, rezip, unzip

    entries = unzip(valid)
    if kind == "traversal":
        entries[1] = ("../" + entries[1][0], entries[1][1])
    elif kind == "pickle":
        entries[1] = (entries[1][0], planted_pickle_npy())
    elif kind == "newer":
        header = json.loads(entries[0][1])
        header["format_version"] = 99
        entries[0] = ("header.json", json.dumps(header).encode())
    else:  # a zip bomb: 64 MiB of zeros in a few tens of kilobytes
        shape = repr({"descr": "<f4", "fortran_order": False, "shape": (16 << 20,)})
        entries[1] = (entries[1][0], npy(shape, bytes(64 << 20)))
    return rezip(entries)


@pytest.mark.parametrize(("kind", "fragment"), [
    ("traversal", "not a .snn entry name"), ("pickle", "refusing to unpickle"),
    ("newer", "newer snncompiler"), ("bomb", "compression ratio")])
def test_hostile_snn_through_the_cli(files, tmp_path, monkeypatch, kind, fragment):
    monkeypatch.chdir(tmp_path)  # where the planted pickle would create PWNED
    path = tmp_path / "hostile.snn"
    path.write_bytes(_hostile_snn((files / "model.snn").read_bytes(), kind))
    assert_one_line_error(invoke("inspect", path), "hostile.snn", fragment)
    assert_one_line_error(invoke("eval", path, "--data", files / "test.npz"), fragment)
    assert not (tmp_path / "PWNED").exists()


def test_onnx_that_does_not_match_the_snn_is_refused(files, tmp_path, no_work):
    other = tmp_path / "other.onnx"
    from tests.onnx_models import gemm_bn_model  # x (N, 8) -> 6 outputs

    onnx.save(gemm_bn_model(np.random.default_rng(0)), other)
    result = invoke(*eval_args(files, files / "test.npz", "--onnx", other))
    assert_one_line_error(result, "other.onnx", "[N, 8]", "[N, 2, 4, 4]")


# --------------------------------------------------------------------------- T and memory


def test_absurd_t_is_refused_before_allocating(files, no_work):
    result = invoke(*eval_args(files, files / "test.npz", "-T", "2000000000"))
    assert_one_line_error(result, "T=2000000000", "GiB", "--max-memory")


def test_large_t_lowers_the_batch_to_fit_the_memory_limit(files, monkeypatch):
    seen = {}

    def fake_evaluate(net, dataset, steps, *, ann=None, batch_size=128, progress=True):
        seen["batch_size"], seen["chunk_budget"] = batch_size, net.memory_budget
        raise KeyboardInterrupt  # stop here: the plan is what this test checks

    monkeypatch.setattr("snncompiler.evaluate.evaluate", fake_evaluate)
    # T = 100000 and 5 outputs: 4 MB of readout per sample (float32, kept twice), so 32 MiB
    # hold a few samples at a time (the test data has 12).
    limit = 0.03125
    result = invoke(*eval_args(files, files / "test.npz", "-T", "100000", "--batch-size", "128",
                               "--max-memory", limit))
    assert result.exit_code == 130
    assert 1 <= seen["batch_size"] < 12
    assert seen["chunk_budget"] <= limit * 2**30 / 4
    assert f"batch size lowered from 128 to {seen['batch_size']}" in result.output
    sizes = {**cli.activation_sizes(compiled_program(files)), "state": state_bytes(files)}
    assert cli.eval_memory(sizes, 100000, seen["batch_size"], seen["chunk_budget"]) <= (
        limit * 2**30)
    assert cli.eval_memory(sizes, 100000, seen["batch_size"] + 1, seen["chunk_budget"]) > (
        limit * 2**30)


def state_bytes(files) -> int:
    from snncompiler import runtime

    return runtime.load(files / "model.snn").state_bytes()


def test_a_limit_below_one_samples_neuron_state_is_refused():
    sizes = {"inputs": 10, "outputs": 2, "largest": 10, "state": 64 * 2**20}
    with pytest.raises(InputError, match="MiB of neuron state"):
        cli.plan_batch(sizes, 4, 8, 32 * 2**20)
    assert cli.plan_batch(sizes, 4, 8, 2**30) >= 1


def compiled_program(files):
    from snncompiler.runtime.format import load_program

    return load_program(files / "model.snn")


def test_t_of_100000_with_a_batch_of_128_fits_the_default_limit(files):
    # What `snnc eval -T 100000` plans for the demo-sized batch: 8 bytes per readout value
    # (float32, twice) for 5 outputs is 0.48 GiB; with the time-chunk budget it stays
    # under the default limit, so nothing is lowered or refused.
    sizes = cli.activation_sizes(compiled_program(files))
    needed = cli.eval_memory(sizes, 100000, 128, cli.chunk_budget(cli.DEFAULT_MAX_MEMORY))
    assert 0.4 * 2**30 < needed < cli.DEFAULT_MAX_MEMORY


def test_demo_with_absurd_t_is_refused_before_compiling(no_work):
    assert_one_line_error(invoke("demo", "-T", "100000000", "-q"), "T=100000000", "GiB")


# --------------------------------------------------------------------------- internal errors


def test_bug_is_an_internal_error_with_exit_code_2(files, monkeypatch):
    def broken(path):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("snncompiler.inspect.inspect_snn", broken)
    result = invoke("inspect", files / "model.snn")
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith("internal error: ZeroDivisionError: division by zero")
    assert "report" in lines[0] and "--debug" in lines[0]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(files, monkeypatch, how):
    def broken(path):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("snncompiler.inspect.inspect_snn", broken)
    if how == "flag":
        result = invoke("--debug", "inspect", files / "model.snn")
    else:
        result = invoke("inspect", files / "model.snn", env={"SNNC_DEBUG": "1"})
    assert result.exit_code == 2
    assert "Traceback" in result.output and "internal error: ZeroDivisionError" in result.output


def test_debug_flag_still_defaults_to_compile(files, tmp_path):
    result = invoke("--debug", files / "model.onnx", "-o", tmp_path / "a.snn", "--calib",
                    files / "calib.npz", "-q", "-T", "4")
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- no lost work


def test_output_into_a_missing_folder_is_refused_before_calibrating(files, tmp_path, no_work):
    out = tmp_path / "nope" / "out.snn"
    result = invoke(files / "model.onnx", "-o", out, "--calib", files / "calib.npz", "-q")
    assert_one_line_error(result, "does not exist")
    result = invoke(*eval_args(files, files / "test.npz", "--json", tmp_path / "nope" / "r.json"))
    assert_one_line_error(result, "does not exist")


@pytest.mark.parametrize("victim", ["model.onnx", "calib.npz"])
def test_compile_never_overwrites_its_inputs(files, no_work, victim):
    before = (files / victim).read_bytes()
    result = invoke(files / "model.onnx", "-o", files / victim, "--calib", files / "calib.npz",
                    "--force", "-q")
    assert_one_line_error(result, "input")
    assert (files / victim).read_bytes() == before


@pytest.mark.parametrize("victim", ["model.snn", "test.npz", "model.onnx"])
def test_eval_json_never_overwrites_its_inputs(files, no_work, victim):
    before = (files / victim).read_bytes()
    result = invoke(*eval_args(files, files / "test.npz", "--onnx", files / "model.onnx",
                               "--json", files / victim, "--force"))
    assert_one_line_error(result, "input")
    assert (files / victim).read_bytes() == before


def test_existing_json_is_refused_before_evaluating(files, tmp_path, no_work):
    report = tmp_path / "r.json"
    report.write_text("{}")
    assert_one_line_error(invoke(*eval_args(files, files / "test.npz", "--json", report)),
                          "--force")
    assert report.read_text() == "{}"


def test_json_is_written_atomically_with_ordinary_permissions(files, tmp_path, monkeypatch):
    report = tmp_path / "r.json"
    report.write_text("old")
    calls = []

    def interrupted_replace(src, dst):
        calls.append(dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.os, "replace", interrupted_replace)
    result = invoke(*eval_args(files, files / "test.npz", "-T", "2", "--json", report, "--force"))
    assert result.exit_code == 130 and calls
    assert report.read_text() == "old" and sorted(tmp_path.iterdir()) == [report]
    monkeypatch.undo()
    result = invoke(*eval_args(files, files / "test.npz", "-T", "2", "--json", report, "--force"))
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["timesteps"] == [2]
    umask = os.umask(0)
    os.umask(umask)
    assert report.stat().st_mode & 0o777 == 0o666 & ~umask


def test_interrupted_calibration_leaves_nothing_behind(files, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("snncompiler.passes.calibrate_neurons.collect_activation_stats",
                        interrupt)
    out = tmp_path / "out"
    out.mkdir()
    result = invoke(files / "model.onnx", "-o", out / "model.snn", "--calib",
                    files / "calib.npz", "-q")
    assert_one_line_error(result, "interrupted", code=130)
    assert list(out.iterdir()) == []


def test_interrupted_write_leaves_nothing_behind(files, tmp_path, monkeypatch):
    from snncompiler.runtime import format as fmt

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fmt, "_write_archive", interrupt)
    result = invoke(files / "model.onnx", "-o", tmp_path / "model.snn", "--calib",
                    files / "calib.npz", "-q")
    assert_one_line_error(result, "interrupted", code=130)
    assert list(tmp_path.iterdir()) == []


def fake_demo(fail=False):
    """A stand-in for run_demo that writes its two files, or dies half-way."""

    def run(out, timesteps, *, progress=True, echo=print):
        folder = Path(out)
        (folder / "demo.snn").write_bytes(b"new snn")
        echo(f"compiled -> {folder / 'demo.snn'}")
        if fail:
            raise KeyboardInterrupt
        (folder / "results.json").write_text('{"new": true}')
        return {}

    return run


@pytest.mark.parametrize("existing", ["demo.snn", "results.json"])
def test_demo_refuses_to_overwrite_without_force(tmp_path, no_work, existing):
    (tmp_path / existing).write_text("keep me")
    assert_one_line_error(invoke("demo", "--out", tmp_path, "-q"), existing, "--force")
    assert (tmp_path / existing).read_text() == "keep me"


def test_demo_force_replaces_both_files(tmp_path, monkeypatch):
    (tmp_path / "demo.snn").write_text("old")
    monkeypatch.setattr("snncompiler.demo.run_demo", fake_demo())
    result = invoke("demo", "--out", tmp_path, "--force", "-q")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo.snn").read_bytes() == b"new snn"
    assert json.loads((tmp_path / "results.json").read_text()) == {"new": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.snn", "results.json"]
    assert f"compiled -> {tmp_path / 'demo.snn'}" in result.output  # not the staging folder


def test_interrupted_demo_leaves_the_out_folder_as_it_was(tmp_path, monkeypatch):
    (tmp_path / "demo.snn").write_text("old")
    monkeypatch.setattr("snncompiler.demo.run_demo", fake_demo(fail=True))
    result = invoke("demo", "--out", tmp_path, "--force", "-q")
    assert result.exit_code == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.snn"]
    assert (tmp_path / "demo.snn").read_text() == "old"
    fresh = tmp_path / "fresh"
    result = invoke("demo", "--out", fresh, "-q")
    assert result.exit_code == 130 and not fresh.exists()


# --------------------------------------------------------------------------- output


def test_inspect_escapes_what_a_hostile_file_says(tmp_path):
    program = Program([TensorSpec("x", (3,))], [TensorSpec("y", (3,))], [
        Node("\x1b]0;owned\x07\x1b[2J", "reshape", ("x",), "y", {"shape": [3]}, {}, (3,))],
        [4], 4, producer="evil\x1b[31m\nTraceback")
    save_program(program, tmp_path / "evil.snn")
    result = invoke("inspect", tmp_path / "evil.snn")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\\x1b[2J" in result.output
    assert all(line.isprintable() for line in result.output.splitlines())


def test_real_process_prints_one_line_even_when_onnxruntime_logs(tmp_path):
    # onnxruntime's C++ logger and onnx-graphsurgeon's print() write straight to the
    # process's streams, which click's runner does not see: run snnc for real.
    import subprocess
    import sys

    from tests.snncompiler.test_hostile_onnx import division_by_zero

    onnx.save(division_by_zero(), tmp_path / "div0.onnx")
    result = subprocess.run([sys.executable, "-m", "snncompiler.cli", "inspect",
                             str(tmp_path / "div0.onnx")], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "SNNC_DEBUG": ""})
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: onnxruntime cannot evaluate the constant subgraph")
