"""Data streamed from its .npz (``load_npz(stream=True)``, as ``snnc compile`` and ``snnc
eval`` read it): the same values and the same program as data loaded whole, and a compile
and an evaluation whose memory does not grow with the number of images."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

from snncompiler.context import CompileConfig
from snncompiler.errors import InputError
from snncompiler.npz import Preprocessing, StreamedRows, feeds, load_npz
from snncompiler.pipeline import compile_model
from snncompiler.runtime.format import save_program
from tests.graph_builder import GraphBuilder
from tests.passes.test_balance_potentials import deep_model
from tests.without_jit import REPO

PREPROCESSING = Preprocessing(scale=1 / 255, mean=0.5, std=0.25)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "deflated"])
@pytest.mark.parametrize("dtype", ["u1", ">f4", "<f8"])
def test_streamed_rows_equal_the_rows_loaded_whole(tmp_path, save, dtype):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(150, 2, 5, 3)).astype(dtype)
    save(tmp_path / "data.npz", x=x, y=np.arange(150))
    preprocessing = PREPROCESSING if dtype == "u1" else Preprocessing()
    whole = load_npz(tmp_path / "data.npz", preprocessing, limit=130)
    streamed = load_npz(tmp_path / "data.npz", preprocessing, limit=130, stream=True)
    assert isinstance(streamed.x, StreamedRows)
    assert streamed.x.shape == whole.x.shape and len(streamed) == 130
    assert streamed.x.dtype == whole.x.dtype == np.float32
    np.testing.assert_array_equal(streamed.y, whole.y)
    # In order, backwards, overlapping, past the end, empty: what slicing an array gives.
    for first, stop in [(0, 64), (64, 128), (128, 192), (10, 20), (0, 130), (5, 5), (-10, None)]:
        np.testing.assert_array_equal(streamed.x[first:stop], whole.x[first:stop])
    batches = [feed["in"] for feed in feeds(streamed.x, "in", 32)]
    np.testing.assert_array_equal(np.concatenate(batches), whole.x)


@pytest.mark.parametrize("limit", [None, 1, 7, 100, -3])
def test_a_limit_keeps_the_rows_that_slicing_keeps(tmp_path, limit):
    x = np.arange(70, dtype=np.float32).reshape(10, 7)
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(10))
    streamed = load_npz(tmp_path / "data.npz", limit=limit, stream=True)
    np.testing.assert_array_equal(streamed.x[0:len(streamed)], x[:limit])
    np.testing.assert_array_equal(streamed.y, np.arange(10)[:limit])


def test_only_contiguous_slices_are_taken(tmp_path):
    np.savez(tmp_path / "data.npz", x=np.zeros((4, 3), np.float32))
    streamed = load_npz(tmp_path / "data.npz", stream=True)
    for index in (0, slice(0, 4, 2), [0, 1]):
        with pytest.raises(TypeError, match="contiguous slices"):
            streamed.x[index]


def test_a_fortran_ordered_array_is_loaded_whole(tmp_path):
    x = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(4, 6))
    np.savez(tmp_path / "data.npz", x=x)
    data = load_npz(tmp_path / "data.npz", stream=True)
    assert isinstance(data.x, np.ndarray)
    np.testing.assert_array_equal(data.x, x)


@pytest.mark.parametrize("bad", ["nan", "uint8 without preprocessing"])
def test_every_row_is_checked_when_loaded(tmp_path, bad):
    x = np.zeros((300, 4), np.float32)
    if bad == "nan":
        x[290, 1] = np.nan  # in the last check batch
    else:
        x = x.astype(np.uint8)
    np.savez(tmp_path / "data.npz", x=x)
    with pytest.raises(InputError, match="NaN or Inf" if bad == "nan" else "--scale"):
        load_npz(tmp_path / "data.npz", stream=True)


def test_a_file_cut_short_after_loading_is_an_input_error(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.ones((100, 64), np.float32))
    streamed = load_npz(path, stream=True)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(InputError, match="data.npz"):
        streamed.x[50:100]


def test_a_streamed_calibration_compiles_the_same_program(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(deep_model(seed=5), path)
    x = np.random.default_rng(1).normal(size=(70, 2, 8, 8)).astype(np.float32)
    np.savez_compressed(tmp_path / "calib.npz", x=x)
    config = CompileConfig(timesteps=(2, 8), progress=False, second_stage_samples=24,
                           calib_batch_size=16)
    whole = compile_model(path, load_npz(tmp_path / "calib.npz"), config).program
    streamed = compile_model(path, load_npz(tmp_path / "calib.npz", stream=True), config).program
    assert streamed.calibration == whole.calibration
    for node, same in zip(streamed.nodes, whole.nodes):
        assert node.arrays.keys() == same.arrays.keys()
        for name in node.arrays:
            np.testing.assert_array_equal(node.arrays[name], same.arrays[name])


# The child runs `snnc compile` (from the .npz as calibration data) or `snnc eval` (of it,
# with labels) on a small network with 64 x 64 inputs (48 KB an image), and prints its peak
# RSS: VmHWM, the high-water mark of its own memory map (snncompiler.machine.peak_rss_bytes;
# getrusage's ru_maxrss would also count the parent's resident set at the fork).
CHILD = textwrap.dedent("""
    import sys
    from click.testing import CliRunner
    from snncompiler.cli import main
    from snncompiler.machine import peak_rss_bytes

    command, model, data, snn = sys.argv[1:]
    if command == "compile":
        args = [model, "-o", snn, "--calib", data, "-T", "4", "--resolution", "16",
                "--second-stage-samples", "16", "-q", "--force"]
    else:
        args = ["eval", snn, "--data", data, "-T", "2,4", "--onnx", model, "--batch-size",
                "64", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    print(peak_rss_bytes())
""")


@pytest.fixture(scope="module")
def wide_files(tmp_path_factory):
    """A model with 64 x 64 inputs, its .snn, and .npz files of 64 and 2048 images."""
    folder = tmp_path_factory.mktemp("wide")
    b = GraphBuilder((3, 64, 64), np.random.default_rng(0))
    b.conv(4, stride=4)
    b.relu()
    b.global_avgpool()
    b.flatten()
    b.gemm(3)
    onnx.save(b.model(), folder / "model.onnx")
    for count in (64, 2048):  # 3 MB and 100 MB of float32 images
        x = np.random.default_rng(count).normal(size=(count, 3, 64, 64)).astype(np.float32)
        np.savez(folder / f"data{count}.npz", x=x, y=np.arange(count) % 3)
    config = CompileConfig(timesteps=(4,), resolution=16, second_stage=False, progress=False)
    program = compile_model(folder / "model.onnx", load_npz(folder / "data64.npz"), config)
    save_program(program.program, folder / "model.snn")
    return folder


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM (Linux)")
@pytest.mark.parametrize("command", ["compile", "eval"])
def test_memory_does_not_grow_with_the_images(wide_files, command):
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "PYTHONPATH": str(REPO)}
    # compile writes a .snn of its own; eval reads the one the fixture compiled
    snn = wide_files / ("compiled.snn" if command == "compile" else "model.snn")
    peaks = {}
    for count in (64, 2048):
        done = subprocess.run(
            [sys.executable, "-c", CHILD, command, str(wide_files / "model.onnx"),
             str(wide_files / f"data{count}.npz"), str(snn)],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
        assert done.returncode == 0, done.stderr
        peaks[count] = int(done.stdout.split()[-1])
    # Loaded whole, the larger file would add its 100 MB (and its preprocessed copy).
    assert peaks[2048] - peaks[64] < 25 * 2**20, json.dumps(peaks)
