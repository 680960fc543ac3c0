"""``snnc report``: a self-contained HTML page from ``snnc eval --json``, checked in a browser.

The browser test loads the page in headless Chromium. The page's own script records, after
loading, every error it saw and the rendered size of every plot in ``#self-check``;
``--dump-dom`` prints the DOM after the load, and the test reads that record. Without
Chromium the test is skipped, except under CI (the ``CI`` environment variable), where it
fails: ``.ci/run`` installs Chromium so that CI really runs it.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from snncompiler.cli import main
from snncompiler.errors import InputError
from snncompiler.report import Series, check_results, line_plot
from tests.onnx_models import view_flatten_model

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A tiny model compiled for T = 8, 2 and evaluated at T = 1, 2, 4, 8: results.json
    (with --layers and --onnx), plain.json (neither) and model.snn."""
    folder = tmp_path_factory.mktemp("report")
    onnx.save(view_flatten_model(np.random.default_rng(0)), folder / "model.onnx")
    rng = np.random.default_rng(1)
    np.savez(folder / "calib.npz", x=rng.random((16, 2, 4, 4), dtype=np.float32))
    np.savez(folder / "test.npz", x=rng.random((24, 2, 4, 4), dtype=np.float32),
             y=np.arange(24) % 5)
    result = invoke(folder / "model.onnx", "-o", folder / "model.snn", "--calib",
                    folder / "calib.npz", "-T", "8,2", "-q")
    assert result.exit_code == 0, result.output
    for name, extra in (("results.json", ["--layers", "--onnx", folder / "model.onnx"]),
                        ("plain.json", [])):
        result = invoke("eval", folder / "model.snn", "--data", folder / "test.npz", "-T",
                        "1,2,4,8", "--json", folder / name, "-q", *extra)
        assert result.exit_code == 0, result.output
    return folder


def report(folder: Path, results: str, *options) -> str:
    out = folder / results.replace(".json", ".html")
    result = invoke("report", folder / results, "-o", out, "--force", *options)
    assert result.exit_code == 0, result.output
    return out.read_text()


def plot_ids(page: str) -> list[str]:
    return re.findall(r'<svg class="plot" id="([^"]+)"', page)


def test_full_report_has_every_section_and_plot(evaluated):
    page = report(evaluated, "results.json", "--snn", evaluated / "model.snn")
    assert plot_ids(page) == ["plot-accuracy", "plot-work", "plot-firing", "plot-error"]
    for section in ("accuracy", "work", "layers", "calibration", "setup"):
        assert f"<section id={section}>" in page
    data = json.loads((evaluated / "results.json").read_text())
    assert f"{100 * data['ann_accuracy']:.2f}%" in page
    assert "mean &theta; T=8" in page and "model.onnx" in page  # calibration, source model
    assert "CPUs" in page and "onnxruntime" in page
    assert "Relu_1" in page  # the layer table


def test_report_without_layers_or_snn_says_what_is_missing(evaluated):
    page = report(evaluated, "plain.json")
    assert plot_ids(page) == ["plot-accuracy", "plot-work", "plot-firing"]
    assert "pass --snn MODEL.snn" in page.replace("Pass", "pass")


def test_page_references_nothing_outside_itself(evaluated):
    page = report(evaluated, "results.json", "--snn", evaluated / "model.snn")
    assert not re.search(r"(?i)\b(src|href|xmlns|action)\s*=|url\(|@import|https?:|//", page)
    assert "default-src 'none'" in page  # and the policy forbids any load anyway


def test_names_from_files_are_escaped(evaluated, tmp_path):
    data = json.loads((evaluated / "results.json").read_text())
    data["layers"][0]["node"] = "<script>alert(1)</script>"
    data["layer_activity"][0]["into"] = ["</table><img>"]
    (tmp_path / "hostile.json").write_text(json.dumps(data))
    page = report(tmp_path, "hostile.json")
    assert "<script>alert" not in page and "</table><img>" not in page
    assert html.escape("<script>alert(1)</script>") in page


def test_existing_output_needs_force_and_inputs_are_never_overwritten(evaluated, tmp_path):
    out = tmp_path / "report.html"
    out.write_text("keep")
    assert_one_line_error(invoke("report", evaluated / "results.json", "-o", out), "--force")
    assert out.read_text() == "keep"
    results = evaluated / "results.json"
    before = results.read_bytes()
    assert_one_line_error(invoke("report", results, "-o", results, "--force"), "input")
    assert results.read_bytes() == before


def _valid(evaluated) -> dict:
    return json.loads((evaluated / "results.json").read_text())


def _broken(evaluated, how: str):
    data = _valid(evaluated)
    if how == "list":
        return [data]
    if how == "missing":
        del data["timesteps"]
    elif how == "unsorted":
        data["timesteps"] = [8, 1, 2, 4]
    elif how == "accuracy":
        data["snn_accuracy"][0] = 1.5
    elif how == "length":
        data["agreement"] = data["agreement"][:2]
    elif how == "layers":
        data["layers"][0]["firing_rate"] = "fast"
    elif how == "bool":
        data["n"] = True
    return data


@pytest.mark.parametrize(("how", "fragment"), [
    ("list", "expected a JSON object"), ("missing", "'timesteps' is missing"),
    ("unsorted", "timesteps"), ("accuracy", "snn_accuracy[0]"), ("length", "agreement"),
    ("layers", "layers[0].firing_rate"), ("bool", "n:")])
def test_results_that_are_not_eval_output_are_one_line(evaluated, tmp_path, how, fragment):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_broken(evaluated, how)))
    result = invoke("report", bad, "-o", tmp_path / "r.html")
    assert_one_line_error(result, "bad.json", "not the output of snnc eval --json", fragment)
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("content", [b"", b"not json", b"\xff\xfe\x00garbage",
                                     b'{"timesteps": [1], "n": NaN}', b"[" * 100_000])
def test_unreadable_results_are_one_line(tmp_path, content):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    assert_one_line_error(invoke("report", bad, "-o", tmp_path / "r.html"), "bad.json")


def test_broken_snn_is_one_line(evaluated, tmp_path):
    cut = tmp_path / "cut.snn"
    cut.write_bytes((evaluated / "model.snn").read_bytes()[:200])
    result = invoke("report", evaluated / "results.json", "-o", tmp_path / "r.html", "--snn",
                    cut)
    assert_one_line_error(result, "cut.snn")


def test_check_results_names_the_field():
    with pytest.raises(InputError, match=r"x.json: .*seconds"):
        check_results({"timesteps": [1], "n": 3, "seconds": -1.0, "parameters_for": [1],
                       "snn_accuracy": None, "agreement": None, "ann_accuracy": None},
                      "x.json")


def test_line_plot_leaves_out_what_a_log_axis_cannot_show():
    svg = line_plot([Series("a", [(1, 10.0), (2, 0.0), (4, 1000.0)]),
                     Series("empty", [(1, float("nan"))]),
                     Series("ref", [(1, 5.0), (4, 20.0)], 1, dashed=True)],
                    plot_id="p", title="t", x_label="T", y_label="ops", x_log2=True,
                    y_log10=True)
    assert svg.count("<polyline") == 2 and svg.count("<circle") == 2  # no markers when dashed
    assert ">10<" in svg and ">1000<" in svg  # decade ticks
    single = line_plot([Series("one", [(3, 0.5)])], plot_id="q", title="t", x_label="x",
                       y_label="y")
    assert single.count("<circle") == 1 and "nan" not in single


# --------------------------------------------------------------------------- browser


def chromium() -> str:
    """The Chromium binary; skips the test without one, but fails it under CI."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed, and CI must run the browser test "
                    "(.ci/run installs it: apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")


def self_check(page: Path, profile: Path) -> dict:
    """Loads ``page`` in headless Chromium and returns what its script recorded."""
    done = subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                           "--dump-dom", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180, check=False)
    found = re.search(r'<pre id="self-check"[^>]*>(.*?)</pre>', done.stdout, re.DOTALL)
    assert found and found.group(1), (done.returncode, done.stderr[-2000:])
    return json.loads(html.unescape(found.group(1)))


def test_page_loads_in_a_browser_without_errors_and_every_plot_has_a_size(evaluated,
                                                                          tmp_path):
    page = report(evaluated, "results.json", "--snn", evaluated / "model.snn")
    path = tmp_path / "report.html"
    path.write_text(page)
    record = self_check(path, tmp_path / "profile")
    assert record["errors"] == []
    assert [plot["id"] for plot in record["plots"]] == plot_ids(page)
    for plot in record["plots"]:
        assert plot["width"] > 100 and plot["height"] > 50, plot
    # The check itself sees errors: a broken script and a blocked load are recorded.
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace("</body>", "<script>missing_function();</script>"
                                              "<img src='https://example.invalid/x.png'>"
                                              "</body>"))
    errors = self_check(broken, tmp_path / "profile")["errors"]
    assert any("missing_function" in error for error in errors), errors
    assert any("example.invalid" in error for error in errors), errors


def test_activation_sparsity_is_shown_when_eval_gives_it(evaluated, tmp_path):
    data = json.loads((evaluated / "results.json").read_text())
    assert data["activation_sparsity"] is None  # bursts: not exactly 1 - firing rate
    page = report(evaluated, "results.json")
    assert "<th class=num>activation sparsity</th>" not in page
    data["activation_sparsity"] = [None if v is None else 0.75 for v in data["synaptic_ops"]]
    (tmp_path / "sparse.json").write_text(json.dumps(data))
    page = report(tmp_path, "sparse.json")
    assert "<th class=num>activation sparsity</th>" in page and "0.7500" in page
