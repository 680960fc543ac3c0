"""Calibration and evaluation on a Dask cluster give what one machine gives, bit for bit.

A real ``distributed.LocalCluster`` with two worker processes, on the shipped demo model
and a small part of its data (64 calibration images, 128 test images, T = 1 and 4).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from unittest import mock

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from snncompiler import distributed
from snncompiler.cli import main
from snncompiler.context import CompileConfig
from snncompiler.demo import demo_files
from snncompiler.errors import CalibrationError, ClusterError
from snncompiler.evaluate import evaluate
from snncompiler.npz import Preprocessing, load_npz
from snncompiler.passes import calibration_stats
from snncompiler.passes.calibration_stats import (
    ChannelHistogram,
    batch_maxima,
    bin_batch,
    grown_upper,
)
from snncompiler.pipeline import compile_model
from snncompiler.runtime import load
from snncompiler.runtime.format import save_program

pytest.importorskip("distributed")

CALIB, TEST, STEPS = 64, 128, (4, 1)
TIMING = ("seconds",)


@pytest.fixture(scope="module")
def demo():
    spec, folder = demo_files()
    preprocessing = Preprocessing(spec["scale"], spec["mean"], spec["std"])
    args = ["--scale", str(spec["scale"]), "--mean", str(spec["mean"]), "--std",
            str(spec["std"])]
    return {"model": folder / spec["model"], "calib": folder / spec["calibration"],
            "test": folder / spec["test"], "preprocessing": preprocessing, "args": args}


@pytest.fixture(scope="module")
def cluster():
    with distributed.open_cluster(workers=2) as found:
        yield found


@pytest.fixture(scope="module")
def local_snn(demo, tmp_path_factory):
    """The demo compiled here, the reference for the cluster's."""
    calibration = load_npz(demo["calib"], demo["preprocessing"], limit=CALIB)
    result = compile_model(demo["model"], calibration,
                           CompileConfig(timesteps=STEPS, progress=False))
    path = tmp_path_factory.mktemp("distributed") / "local.snn"
    save_program(result.program, path)
    return path


def local_evaluation(demo, snn, batch_size=128) -> dict:
    from snncompiler import frontend

    session = frontend.ort_session(frontend.load_model(demo["model"]))
    name = session.get_inputs()[0].name
    test = load_npz(demo["test"], demo["preprocessing"], limit=TEST)
    result = evaluate(load(snn), test, [1, 4], ann=lambda x: session.run(None, {name: x})[0],
                      batch_size=batch_size, progress=False)
    return without_timing(result.to_json())


def without_timing(report: dict) -> dict:
    return {key: value for key, value in report.items() if key not in TIMING}


# --------------------------------------------------------------------------- histograms


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(-40, 6), st.integers(0, 2**31)),
                min_size=1, max_size=6),
       st.integers(1, 4))
def test_histograms_merged_batch_by_batch_are_those_of_one_pass(shapes, parts):
    # Batches whose maxima grow (exponent), with tiny values beside large ones in bin 0,
    # so that the bin sums round differently if added in another order; a kernel limit of
    # a few values per call cuts each batch into parts.
    batches = []
    for images, exponent, seed in shapes:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(images, 3, 5)) * 2.0**exponent
        x[:, :, 0] = 2.0 ** rng.integers(-60, -20, size=(images, 3))
        batches.append(x.astype(np.float32))
    with mock.patch.object(calibration_stats, "_MAX_KERNEL_VALUES", 5 * parts):
        one = ChannelHistogram(3, 16)
        for batch in batches:
            one.update(batch)
        merged, upper = ChannelHistogram(3, 16), np.zeros(3)
        for batch in batches:
            maxima, values = batch_maxima(batch, 3)
            upper = grown_upper(upper, maxima.astype(np.float64))[0]
            binned = bin_batch(batch, upper, 16, maxima)  # on a worker
            merged.extend(maxima, values)
            np.testing.assert_array_equal(merged.upper, upper)
            merged.add_binned(binned)
    for field in ("counts", "sums", "upper", "max", "n_positive", "n_total"):
        np.testing.assert_array_equal(getattr(merged, field), getattr(one, field), field)


def test_a_batch_with_other_maxima_than_its_range_was_computed_from_is_refused():
    batch = np.ones((2, 1, 3), np.float32)
    with pytest.raises(CalibrationError, match="differs from the one its range was computed"):
        bin_batch(batch, np.ones(1), 8, np.full(1, 0.5, np.float32))


# --------------------------------------------------------------------------- the cluster


def test_compile_on_the_cluster_writes_the_same_bytes(demo, cluster, local_snn, tmp_path):
    out = tmp_path / "cluster.snn"
    result = CliRunner().invoke(main, [
        str(demo["model"]), "-o", str(out), "--calib", str(demo["calib"]), "-T", "4,1",
        "--calib-samples", str(CALIB), "-q", "--scheduler", cluster.client.scheduler.address,
        *demo["args"]])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == local_snn.read_bytes()


def test_eval_on_the_cluster_writes_the_same_json(demo, cluster, local_snn, tmp_path):
    reports = {}
    for where, extra in (("here", []), ("cluster", ["--scheduler",
                                                    cluster.client.scheduler.address])):
        path = tmp_path / f"{where}.json"
        result = CliRunner().invoke(main, [
            "eval", str(local_snn), "--data", str(demo["test"]), "-T", "1,4", "--onnx",
            str(demo["model"]), "--limit", str(TEST), "--batch-size", "32", "--json",
            str(path), "-q", *demo["args"], *extra])
        assert result.exit_code == 0, result.output
        reports[where] = without_timing(json.loads(path.read_text()))
    assert reports["cluster"] == reports["here"]
    assert reports["here"]["n"] == TEST and reports["here"]["agreement"][1] > 0.9


def test_a_worker_killed_mid_run_has_its_shards_rerun(demo, local_snn):
    # A cluster of its own: one of its workers is killed while it runs a shard; Dask runs
    # that shard again on the other worker (or the restarted one), and every shard counts
    # once.
    expected = local_evaluation(demo, local_snn)
    with distributed.open_cluster(workers=2) as own:
        pids = own.client.run(os.getpid)
        found = {}

        def run():
            found["result"] = own.evaluate(local_snn, demo["test"], [1, 4],
                                           preprocessing=demo["preprocessing"], limit=TEST,
                                           onnx=demo["model"], batch_size=8, progress=False)

        worker = threading.Thread(target=run)
        worker.start()
        victim, deadline = None, time.monotonic() + 60
        while victim is None and time.monotonic() < deadline and worker.is_alive():
            for address, keys in own.client.processing().items():
                if any(str(key).startswith("snnc-eval") for key in keys):
                    victim = address
                    break
            time.sleep(0.005)
        assert victim is not None, "no shard was seen running"
        os.kill(pids[victim], signal.SIGKILL)
        worker.join(timeout=120)
        assert not worker.is_alive()
        assert pids[victim] not in own.client.run(os.getpid).values()
    assert without_timing(found["result"].to_json()) == expected


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_scheduler_is_one_line_before_any_work(demo, tmp_path, monkeypatch):
    address = f"tcp://127.0.0.1:{closed_port()}"
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at"):
        distributed.Cluster.connect(address, timeout=0.5)
    with pytest.raises(ClusterError, match="'127.0.0.1' is not the address of a Dask"):
        distributed.Cluster.connect("127.0.0.1")  # no port: refused at once
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT", 0.5)
    # The .snn file does not exist: the scheduler is asked before anything is read.
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "absent.snn"), "--data",
                                       str(demo["test"]), "--scheduler", address])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: cannot reach the Dask scheduler at {address} within 0.5 s"), result.output


def test_scheduler_and_workers_together_are_refused(demo, tmp_path):
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "x.snn"), "--data",
                                       str(demo["test"]), "--scheduler", "tcp://a:1",
                                       "--workers", "2"])
    assert result.exit_code == 1 and "not both" in result.output
