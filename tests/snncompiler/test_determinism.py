"""Same inputs, same bits: compiling and running the demo model are deterministic.

Bit-identical, not allclose: across two compiles, across numba thread counts (1 and 2),
across runs, and across the ways the engine may split the work (time chunks, batches,
streaming with ``step()``), which is what lets ``snnc eval`` pick a smaller batch or time
chunk to fit its memory limit without changing a single prediction.
"""

from __future__ import annotations

import contextlib

import numba
import numpy as np
import pytest

from snncompiler.context import CompileConfig
from snncompiler.demo import demo_files
from snncompiler.npz import Preprocessing, load_npz
from snncompiler.pipeline import compile_model
from snncompiler.runtime import load
from snncompiler.runtime.format import save_program

STEPS = 8


@contextlib.contextmanager
def numba_threads(count: int):
    if count > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"numba was started with {numba.config.NUMBA_NUM_THREADS} thread(s)")
    before = numba.get_num_threads()
    numba.set_num_threads(count)
    try:
        yield
    finally:
        numba.set_num_threads(before)


@pytest.fixture(scope="module")
def demo():
    spec, folder = demo_files()
    preprocessing = Preprocessing(spec["scale"], spec["mean"], spec["std"])
    calibration = load_npz(folder / spec["calibration"], preprocessing, limit=64)
    test = load_npz(folder / spec["test"], preprocessing, limit=16)
    return folder / spec["model"], calibration, test


def compile_to(path, demo, threads: int) -> bytes:
    model, calibration, _ = demo
    with numba_threads(threads):
        result = compile_model(model, calibration,
                               CompileConfig(timesteps=(STEPS, 4), progress=False))
    save_program(result.program, path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def compiled(demo, tmp_path_factory):
    folder = tmp_path_factory.mktemp("determinism")
    return folder, compile_to(folder / "first.snn", demo, threads=1)


def test_two_compiles_give_identical_files(demo, compiled):
    folder, first = compiled
    assert compile_to(folder / "second.snn", demo, threads=2) == first


def test_runs_are_bit_identical_across_runs_and_thread_counts(demo, compiled):
    folder, _ = compiled
    x = demo[2].x
    net = load(folder / "first.snn")
    with numba_threads(1):
        one = net.run(x, STEPS)
        again = net.run(x, STEPS)
    with numba_threads(2):
        two = net.run(x, STEPS)
    assert one.dtype == np.float32 and one.shape == (STEPS, len(x), 10)
    np.testing.assert_array_equal(one, again)
    np.testing.assert_array_equal(one, two)
    # A fresh load of the same file, too (no state survives in the module).
    np.testing.assert_array_equal(load(folder / "first.snn").run(x, STEPS), one)


def test_splitting_the_work_changes_no_bit(demo, compiled):
    folder, _ = compiled
    x = demo[2].x
    net = load(folder / "first.snn")
    whole = net.run(x, STEPS)
    np.testing.assert_array_equal(net.run(x, STEPS, time_chunk=1), whole)
    np.testing.assert_array_equal(net.run(x, STEPS, time_chunk=3), whole)
    halves = [net.run(part, STEPS) for part in np.array_split(x, [5])]
    np.testing.assert_array_equal(np.concatenate(halves, axis=1), whole)
    net.select_parameters(STEPS)
    net.reset()
    streamed = np.stack([net.step(x) for _ in range(STEPS)])
    np.testing.assert_array_equal(streamed, whole)
