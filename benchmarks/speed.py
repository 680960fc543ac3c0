"""Speed and memory of the spiking runtime against onnxruntime and SpikingJelly (issue 5).

From a fresh clone, ``make speed`` sets up both venvs and runs the whole benchmark
(``--models vgg,resnet,demo --spikingjelly``). By hand::

    python3 -m venv .venv && .venv/bin/pip install -e .
    .venv/bin/python benchmarks/speed.py                   # ours and onnxruntime
    .venv/bin/python benchmarks/speed.py --spikingjelly    # + SpikingJelly (see below)
    .venv/bin/python benchmarks/speed.py --only calibration --models vgg,resnet,demo
    .venv/bin/python benchmarks/speed.py --only deep --threads 1   # EfficientNet-Lite0 alone

It prints the table and writes ``docs/results/speed.md`` and ``speed.json`` (``--only
calibration`` prints that table alone and writes only where ``--json`` says; ``--only deep``
puts its figures into the ``speed.json`` there and renders ``speed.md`` again, the other
figures as they were). SpikingJelly
runs in the torch venv (``.venv-torch``, set up by ``make speed``, or by hand as
``benchmarks/peers/spikingjelly_speed.py`` says), as a subprocess: the project's venv has no
torch.

What it measures, for each benchmark ANN of ``benchmarks/models/models.json`` that exists
(``--models``, default vgg and resnet; the demo CNN stands in when neither does), on a batch
of ``--batch`` test images (the packaged Fashion-MNIST test set), each measurement in a
fresh process so that its peak RSS is its own:

- onnxruntime: 32 passes of the ANN on the batch (``--threads`` intra-op threads);
- ours: ``SpikingNetwork.run(x, T)`` for every T of ``--timesteps`` (numba with the same
  thread count), the program compiled by ``snnc``'s pipeline (DNI for T=32, calibrated on
  the 300 packaged calibration images); plus the synaptic operations per image
  (:func:`snncompiler.runtime.stats.activity`). onnxruntime's and our timed runs alternate
  in one process (:func:`worker_pair`), so that the shared machine's changes of speed hit
  both alike; onnxruntime's peak RSS comes from a process of its own;
- streaming: T calls of ``step()``, peak RSS at T=8 and T=256 (it must not grow);
- multi-step memory: peak RSS of ``run`` at T=32 and T=256 (the fused executor keeps one
  step of activations per sample in flight; only the returned readout grows with T);
- calibration: ``collect_activation_stats`` (the DNI statistics pass) against plain
  onnxruntime inference over the same images, and its peak RSS for 250 and 1000 images;
- SpikingJelly: its converted SNN at T=32 on the same batch (``--spikingjelly``);
- deep networks (``--deep``, default EfficientNet-Lite0, 224 px): the pair of runs above at
  T=32 and the peak RSS of each side alone, on the first ``--deep-views`` test views that
  ``tools/deep_models/export.py`` writes into ``out/deep`` (git-ignored: ``make
  out/deep/manifest.json`` exports them); a network whose files are missing is skipped with
  a line that says so. Its ``.snn`` is compiled here: default options at T=32, calibrated
  on the first 64 calibration views, without the second stage (which would take most of
  the time and moves initial potentials, not the amount of work).

Timings are the best of ``--repeat`` runs (``--peer-repeat`` for SpikingJelly) after a
warm-up run (numba's compiled kernels are
cached on disk; the warm-up loads them). The machine's load average is recorded next to
the figures: on a shared machine they move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODELS_JSON = REPO / "benchmarks" / "models" / "models.json"
RESULTS = REPO / "docs" / "results"
TORCH_PYTHON = REPO / ".venv-torch" / "bin" / "python"
PEER = REPO / "benchmarks" / "peers" / "spikingjelly_speed.py"
TARGET_RATIO = 0.5  # our T=32 time / 32 onnxruntime passes
TARGET_PEER = 3.0  # SpikingJelly T=32 time / ours
TARGET_STREAMING = 0.05  # relative growth of step() peak RSS from T=8 to T=256
TARGET_CALIBRATION = 2.0  # calibration time / plain onnxruntime inference
TARGET_DEEP = 1.0  # our T=32 time / 32 onnxruntime passes, on a deep network
DEEP = REPO / "out" / "deep"  # tools/deep_models/export.py writes here
DEEP_CALIB_VIEWS = 64


# --------------------------------------------------------------------------- workers
# Each worker runs in its own process (``speed.py --worker NAME --args JSON``) and prints
# one JSON object on its last line.


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited on exec)."""
    from snncompiler.machine import peak_rss_bytes

    return peak_rss_bytes() / 2**20


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _best(fn, repeat: int) -> tuple[float, list[float]]:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), times


def _ort_session(path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _ort_passes(onnx: str, x: np.ndarray, passes: int, threads: int):
    """A function that runs ``passes`` onnxruntime passes of the ANN on ``x``."""
    session = _ort_session(onnx, threads)
    feed = {session.get_inputs()[0].name: x}

    def run():
        for _ in range(passes):
            session.run(None, feed)

    return run


def worker_ort(onnx: str, inputs: str, passes: int, threads: int, repeat: int) -> dict:
    best, times = _best(_ort_passes(onnx, np.load(inputs), passes, threads), repeat)
    return {"seconds": best, "all_seconds": times, "passes": passes, "threads": threads,
            "peak_rss_mb": _peak_rss_mb()}


def worker_pair(onnx: str, snn: str, inputs: str, passes: int, timesteps: list[int],
                threads: int, repeat: int) -> dict:
    """onnxruntime and ours in one process, their runs interleaved: each round times the
    ``passes`` onnxruntime passes, then ours at every T, so that a change of the shared
    machine's speed hits both alike. Returns ``{"ort": ..., "snn": ...}``: the best time
    and every time of each, with our synaptic operations per image and firing rate (the
    peak RSS of onnxruntime alone comes from :func:`worker_ort`)."""
    import numba

    from snncompiler import runtime
    from snncompiler.runtime.stats import activity

    numba.set_num_threads(threads)
    x = np.load(inputs)
    net = runtime.load(snn)
    runs = {"ort": _ort_passes(onnx, x, passes, threads),
            **{str(t): lambda t=t: net.run(x, t) for t in timesteps}}
    times = {key: [] for key in runs}
    for fn in runs.values():
        fn()  # warm-up: numba loads its cached kernels, onnxruntime its arenas
    for _ in range(repeat):
        for key, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    net.run(x, 32)
    report = activity(net)
    snn_result = {
        "executor": "fused", "threads": threads,
        "seconds": {t: min(v) for t, v in times.items() if t != "ort"},
        "all_seconds": {t: v for t, v in times.items() if t != "ort"},
        "synaptic_ops_per_image": report.synaptic_ops, "ann_macs_per_image": report.ann_macs,
        "static_macs_per_image": report.static_macs, "steps_for_ops": report.steps,
        "mean_firing_rate": report.mean_firing_rate()}
    return {"ort": {"seconds": min(times["ort"]), "all_seconds": times["ort"],
                    "passes": passes, "threads": threads},
            "snn": snn_result}


def worker_memory(snn: str, inputs: str, steps: int, threads: int, streaming: bool) -> dict:
    import numba

    from snncompiler import runtime

    numba.set_num_threads(threads)
    x = np.load(inputs)
    net = runtime.load(snn)
    net.run(x[:2], 2)
    before = _rss_mb()
    start = time.perf_counter()
    if streaming:
        net.select_parameters(steps)
        net.reset()
        for _ in range(steps):
            net.step(x)
    else:
        net.run(x, steps)
    return {"steps": steps, "streaming": streaming, "seconds": time.perf_counter() - start,
            "rss_before_mb": before, "peak_rss_mb": _peak_rss_mb()}


def worker_calibration(onnx: str, inputs: str, images: int, threads: int, batch: int,
                       modes: list[str], repeat: int = 1) -> dict:
    """The calibration statistics pass and/or plain inference, over the same batches.

    ``modes``: "plain", "calibration" or both; both at ``threads`` (onnxruntime's intra-op
    threads; for calibration also the threads that histogram). Each mode runs once first,
    whose time is kept as ``first_seconds`` (it loads numba's cached kernels), like the
    peak RSS after it (``peak_rss_first_mb``, meaningful with one mode alone); then
    ``repeat`` rounds in which the modes alternate, so that a change of the shared
    machine's speed hits both alike, the best of each kept. Returns a result per mode.
    """
    import onnx as onnx_lib

    x = np.load(inputs)[:images]
    session = _ort_session(onnx, threads)
    name = session.get_inputs()[0].name
    batches = [{name: x[i:i + batch]} for i in range(0, len(x), batch)]
    before = _rss_mb()
    runs = {}
    if "plain" not in modes:
        del session  # not kept alive beside the pass: its peak RSS is the pass's own
    else:

        def plain():
            for feed in batches:
                session.run(None, feed)

        runs["plain"] = plain
    if "calibration" in modes:
        from snncompiler.passes.calibration_stats import collect_activation_stats

        model = onnx_lib.load(onnx)
        relu_inputs = [node.input[0] for node in model.graph.node if node.op_type == "Relu"]

        def calibration():
            collect_activation_stats(model, relu_inputs, batches, progress=False,
                                     threads=threads)

        runs["calibration"] = calibration
    results = {}
    for mode, run in runs.items():
        start = time.perf_counter()
        run()
        # Memory is compared after one pass over the images: later runs may add a few MB
        # of allocator arenas (batches are made in one thread and freed in another), which
        # depends on the number of runs, not of images.
        results[mode] = {"images": images, "plain": mode == "plain", "threads": threads,
                         "first_seconds": time.perf_counter() - start, "all_seconds": [],
                         "rss_before_mb": before, "peak_rss_first_mb": _peak_rss_mb()}
    for _ in range(repeat):
        for mode, run in runs.items():
            start = time.perf_counter()
            run()
            results[mode]["all_seconds"].append(time.perf_counter() - start)
    for result in results.values():
        result["seconds"] = min(result["all_seconds"], default=result["first_seconds"])
        result["peak_rss_mb"] = _peak_rss_mb()
    return results


WORKERS = {"ort": worker_ort, "pair": worker_pair,
           "memory": worker_memory, "calibration": worker_calibration}


def _subprocess(python: Path | str, argv: list[str], timeout: int = 3600) -> dict:
    done = subprocess.run([str(python), *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fastest(runs: list[dict], seconds) -> dict:
    """The fastest of the runs of one engine at several thread counts (each run records
    its ``threads``), with the others' times kept for the record."""
    best = min(runs, key=seconds)
    return {**best, "by_threads": {str(run["threads"]): seconds(run) for run in runs}}


def _work(name: str, **kwargs) -> dict:
    return _subprocess(sys.executable, [__file__, "--worker", name, "--args",
                                        json.dumps(kwargs)])


def _calibration(onnx: str, images: str, thread_counts: list[int], repeat: int) -> dict:
    """Calibration against plain inference on 1000 images, alternating in one process, at
    every thread count, the fastest of each kept; then the peak RSS of calibration alone,
    in processes of its own, on 1000 and on 250 images at the faster setting."""
    common = {"onnx": onnx, "inputs": images, "batch": 64}
    timed = [_work("calibration", images=1000, threads=threads,
                   modes=["plain", "calibration"], repeat=repeat, **common)
             for threads in thread_counts]
    result = {"plain": _fastest([t["plain"] for t in timed], lambda w: w["seconds"]),
              "large": _fastest([t["calibration"] for t in timed], lambda w: w["seconds"])}
    for key, count in (("large", 1000), ("small", 250)):
        alone = _work("calibration", images=count, threads=result["large"]["threads"],
                      modes=["calibration"], repeat=0, **common)["calibration"]
        if key == "small":
            result["small"] = alone
        else:
            result["large"].update(peak_rss_first_mb=alone["peak_rss_first_mb"],
                                   peak_rss_mb=alone["peak_rss_mb"])
    return result


def _paired(onnx: str, snn: str, inputs: str, timesteps: list[int], thread_counts: list[int],
            repeat: int) -> dict:
    """onnxruntime's 32 passes and ours at every T, interleaved in one process
    (:func:`worker_pair`) at every thread count, the faster setting of each kept; then
    onnxruntime's peak RSS in a process of its own, at its faster setting."""
    pairs = [_work("pair", onnx=onnx, snn=snn, inputs=inputs, passes=32, timesteps=timesteps,
                   repeat=repeat, threads=threads) for threads in thread_counts]
    result = {"ort": _fastest([p["ort"] for p in pairs], lambda w: w["seconds"]),
              "snn": _fastest([p["snn"] for p in pairs], lambda w: w["seconds"]["32"])}
    result["ort"]["peak_rss_mb"] = _work(
        "ort", onnx=onnx, inputs=inputs, passes=32, repeat=1,
        threads=result["ort"]["threads"])["peak_rss_mb"]
    return result


def _deep_files(names: list[str], folder: Path) -> dict[str, tuple[Path, Path, Path]]:
    """The ONNX model, calibration and test views of each deep network of ``names`` in
    ``folder``; a line for each one skipped because a file is missing."""
    found = {}
    for name in names:
        files = (folder / f"{name}.onnx", folder / f"{name}_calib.npz",
                 folder / f"{name}_test.npz")
        missing = [str(path) for path in files if not path.exists()]
        if missing:
            print(f"{name}: skipped, {', '.join(missing)} missing (out/ is not in git: "
                  "`make out/deep/manifest.json` exports the deep networks and their views, "
                  "see tools/deep_models/export.py)", flush=True)
        else:
            found[name] = files
    return found


def _deep(names: list[str], folder: Path, views: int, thread_counts: list[int], repeat: int,
          scratch: Path) -> dict | None:
    """The deep networks' part: None when none of them is there."""
    found = _deep_files(names, folder)
    if not found:
        return None
    results = {"views": views, "calib_views": DEEP_CALIB_VIEWS, "repeat": repeat,
               "threads": thread_counts, "machine": _machine(),
               "load_start": [round(v, 2) for v in os.getloadavg()], "models": {},
               "notes": DEEP_NOTES}
    for name, (onnx, calib, test) in found.items():
        inputs, calib_views, snn = (scratch / f"{name}_test.npy", scratch / f"{name}_calib.npy",
                                    scratch / f"{name}.snn")
        for source, count, path in ((test, views, inputs), (calib, DEEP_CALIB_VIEWS, calib_views)):
            with np.load(source, allow_pickle=False) as data:
                np.save(path, np.ascontiguousarray(data["x"][:count], dtype=np.float32))
        seconds = _compile(onnx, calib_views, snn, second_stage=False)
        print(f"{name}: compiled ({seconds:.1f} s)", flush=True)
        x = np.load(inputs, mmap_mode="r")
        r = {"onnx": os.path.relpath(onnx, REPO), "input": list(x.shape[1:]),
             "views": len(x), "compile_seconds": seconds,
             **_paired(str(onnx), str(snn), str(inputs), [32], thread_counts, repeat)}
        r["memory"] = {"run_32": _work("memory", snn=str(snn), inputs=str(inputs), steps=32,
                                       streaming=False, threads=r["snn"]["threads"])}
        results["models"][name] = r
        print("\n".join(deep_rows({"models": {name: r}})[-1:]), flush=True)
    results["load_end"] = [round(v, 2) for v in os.getloadavg()]
    return results


# --------------------------------------------------------------------------- setup


def _models(names: list[str]) -> dict[str, dict]:
    specs = json.loads(MODELS_JSON.read_text())
    chosen = {n: specs[n] for n in names if n in specs and (REPO / specs[n]["onnx"]).exists()}
    for name in names:
        if name not in chosen:
            print(f"{name}: not in {MODELS_JSON.name} or not trained yet, skipped")
    if not chosen:
        print(f"none of {names} is trained yet: benchmarking the demo CNN instead")
        chosen = {"demo": specs["demo"]}
    return chosen


def _data(spec: dict, batch: int, folder: Path, name: str) -> tuple[Path, Path, Path]:
    """Preprocessed test batch, calibration images and all test images as .npy files."""
    from snncompiler.demo import demo_files
    from snncompiler.npz import Preprocessing, load_npz

    _, data = demo_files()
    preprocessing = Preprocessing(**spec["preprocessing"])
    test = load_npz(data / "fashion_mnist_test.npz", preprocessing).x
    calib = load_npz(data / "fashion_mnist_calib.npz", preprocessing).x
    if batch > len(test):
        raise SystemExit(f"--batch {batch}: only {len(test)} packaged test images")
    paths = folder / f"{name}_batch.npy", folder / f"{name}_calib.npy", folder / f"{name}_all.npy"
    for path, array in zip(paths, (test[:batch], calib, test)):
        np.save(path, np.ascontiguousarray(array, dtype=np.float32))
    return paths


def _compile(onnx: Path, calib: Path, out: Path, **config) -> float:
    """``snnc``'s pipeline for T=32 on the views in ``calib`` (``config``: more options)."""
    from snncompiler.context import CompileConfig
    from snncompiler.npz import Dataset
    from snncompiler.pipeline import compile_model
    from snncompiler.runtime.format import save_program

    dataset = Dataset(x=np.load(calib), y=None, source=str(calib))
    result = compile_model(onnx, dataset,
                           CompileConfig(timesteps=(32,), progress=False, **config))
    save_program(result.program, out, overwrite=True)
    return result.seconds


def _machine() -> dict:
    import numba
    import onnxruntime

    from snncompiler.machine import cpu_name

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "onnxruntime": onnxruntime.__version__}


# --------------------------------------------------------------------------- report


def _ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def _fmt(value, digits=2, unit=""):
    return "—" if value is None else f"{value:.{digits}f}{unit}"


def render(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# Speed and memory of the spiking runtime",
        "",
        "Written by `benchmarks/speed.py` (issue 5); rerun it to refresh. Batch of "
        f"{results['batch']} Fashion-MNIST test images. Every engine (onnxruntime intra-op "
        "threads, numba, torch) is timed with 1 and with "
        f"{results['threads']} threads and the table keeps its faster setting (threads in "
        "brackets): on a loaded machine spinning thread pools can lose a lot. Times: best "
        f"of {results['repeat']} runs after a warm-up run.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}; Python {m['python']}, "
        f"numpy {m['numpy']}, numba {m['numba']}, onnxruntime {m['onnxruntime']}"
        + (f", torch {results['peer']['torch']}, SpikingJelly {results['peer']['spikingjelly']}"
           if results.get("peer") else "") + ".",
        f"Load average (1, 5, 15 min) at the start: {results['load_start']}, at the end: "
        f"{results['load_end']}. The machine is shared: figures move with its load.",
        "",
        "## Time against the targets",
        "",
        "| model | ORT 1 pass | ORT x32 | ours T=32 | ours / ORT x32 (target <= "
        f"{TARGET_RATIO}) | SpikingJelly T=32 | SpikingJelly / ours (target >= "
        f"{TARGET_PEER:g}) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        ort32 = r["ort"]["seconds"]
        ours = r["snn"]["seconds"].get("32")
        peer = r.get("spikingjelly", {}).get("seconds")
        peer_threads = f" ({r['spikingjelly']['threads']})" if peer else ""
        lines.append(
            f"| {name} | {_fmt(ort32 / 32 * 1000, 1, ' ms')} | {_fmt(ort32, 3, ' s')} "
            f"({r['ort']['threads']}) | {_fmt(ours, 3, ' s')} ({r['snn']['threads']}) | "
            f"**{_fmt(_ratio(ours, ort32))}** | {_fmt(peer, 3, ' s')}{peer_threads} | "
            f"**{_fmt(_ratio(peer, ours), 1)}** |")
    lines += ["", "## Time against T (ours)", "",
              "| model | " + " | ".join(f"T={t}" for t in results["timesteps"])
              + " | per image-step at T=32 | synaptic ops / image (T=32) | ANN MACs / image "
              "(x32) | mean firing rate | ours: G synaptic ops/s | ORT: G MAC/s |",
              "|---|" + "---|" * (len(results["timesteps"]) + 6)]
    for name, r in results["models"].items():
        s = r["snn"]
        per_step = s["seconds"].get("32")
        per_step = per_step / (32 * results["batch"]) * 1e6 if per_step else None
        images = results["batch"]
        ours_rate = _ratio(s["synaptic_ops_per_image"] * images / 1e9, s["seconds"].get("32"))
        ort_rate = _ratio(s["ann_macs_per_image"] * 32 * images / 1e9, r["ort"]["seconds"])
        lines.append(
            f"| {name} | " + " | ".join(_fmt(s["seconds"].get(str(t)), 3, " s")
                                         for t in results["timesteps"])
            + f" | {_fmt(per_step, 1, ' us')} | {s['synaptic_ops_per_image'] / 1e6:.2f} M | "
            f"{s['ann_macs_per_image'] * 32 / 1e6:.2f} M | {s['mean_firing_rate']:.3f} | "
            f"{_fmt(ours_rate, 2)} | {_fmt(ort_rate, 2)} |")
    lines += ["", "## Memory (peak RSS of a fresh process, MB)", "",
              "| model | ORT x32 | ours run T=32 | ours run T=256 | step() T=8 | step() T=256 "
              f"| step() growth (target <= {TARGET_STREAMING:.0%}) | SpikingJelly T=32 |",
              "|---|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        mem = r["memory"]
        growth = _ratio(mem["step_256"]["peak_rss_mb"] - mem["step_8"]["peak_rss_mb"],
                        mem["step_8"]["peak_rss_mb"])
        lines.append(
            f"| {name} | {r['ort']['peak_rss_mb']:.0f} | {mem['run_32']['peak_rss_mb']:.0f} | "
            f"{mem['run_256']['peak_rss_mb']:.0f} | {mem['step_8']['peak_rss_mb']:.0f} | "
            f"{mem['step_256']['peak_rss_mb']:.0f} | **{_fmt(growth * 100, 1, '%')}** | "
            f"{_fmt(r.get('spikingjelly', {}).get('peak_rss_mb'), 0)} |")
    lines += ["", *calibration_table(results)]
    lines += ["", "## Notes", "", *results["notes"], ""]
    if results.get("deep"):
        lines += [*deep_section(results["deep"]), ""]
    return "\n".join(lines)


def deep_section(deep: dict) -> list[str]:
    """The "Deep networks" section: its own machine and load lines (it may be measured
    apart from the rest, ``--only deep``), the table and its notes."""
    m = deep["machine"]
    threads = " and ".join(map(str, deep["threads"]))
    threads += " thread" if deep["threads"] == [1] else " threads"
    return [
        "## Deep networks",
        "",
        "Written by `benchmarks/speed.py` (`--deep`; `--only deep` measures this section "
        "alone). Pretrained ImageNet CNNs that `tools/deep_models/export.py` writes into "
        "`out/deep` (git-ignored; `make out/deep/manifest.json`), on their first "
        f"{deep['views']} test views (photos from packages, preprocessed at the model's input "
        "size). The `.snn`: `snnc`'s pipeline, default options at T=32, calibrated on the "
        f"first {deep['calib_views']} calibration views, without the second stage. As above, "
        "onnxruntime's 32 passes and ours at T=32 alternate in one process: best of "
        f"{deep['repeat']} rounds after a warm-up, at {threads} (threads in brackets); "
        "peak RSS: each alone, in a fresh process, on the same views.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}; Python {m['python']}, "
        f"numpy {m['numpy']}, numba {m['numba']}, onnxruntime {m['onnxruntime']}. "
        f"Load average (1, 5, 15 min) at the start of this part: {deep['load_start']}, at "
        f"its end: {deep['load_end']}.",
        "",
        *deep_rows(deep),
        "",
        *deep_thread_rows(deep),
        "",
        *deep["notes"],
    ]


def deep_thread_rows(deep: dict) -> list[str]:
    """Each thread count's pair of runs (the table above keeps each side's fastest), and the
    speed-up of each side from the fewest threads to the most."""
    counts = [str(t) for t in deep["threads"]]
    lines = ["| model | threads | ORT x32 | ours T=32 | ours / ORT x32 |", "|---|---|---|---|---|"]
    speedups = []
    for name, r in deep["models"].items():
        ort, ours = r["ort"]["by_threads"], r["snn"]["by_threads"]
        for threads in counts:
            lines.append(f"| {name} | {threads} | {_fmt(ort[threads], 3, ' s')} | "
                         f"{_fmt(ours[threads], 3, ' s')} | "
                         f"{_fmt(_ratio(ours[threads], ort[threads]))} |")
        if len(counts) > 1:
            speedups.append(f"{name}: ours {_fmt(_ratio(ours[counts[0]], ours[counts[-1]]))}x, "
                            f"onnxruntime {_fmt(_ratio(ort[counts[0]], ort[counts[-1]]))}x")
    if speedups:
        lines += ["", f"Speed-up from {counts[0]} to {counts[-1]} threads: "
                  + "; ".join(speedups) + "."]
    return lines


def deep_rows(deep: dict) -> list[str]:
    """The deep networks' table: a header, then one row per network."""
    lines = ["| model | input | views | ORT 1 pass / image | ORT x32 | ours T=32 | ours / ORT "
             f"x32 (target <= {TARGET_DEEP:g}) | ours per image-step | synaptic ops / image "
             "(T=32) | ops / MAC (T=32) | mean firing rate | ours: G synaptic ops/s | ORT: G "
             "MAC/s | peak RSS ORT x32 | peak RSS ours T=32 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in deep["models"].items():
        s, views = r["snn"], r["views"]
        ours, ort32 = s["seconds"]["32"], r["ort"]["seconds"]
        ops, macs = s["synaptic_ops_per_image"], s["ann_macs_per_image"]
        lines.append(
            f"| {name} | {'x'.join(map(str, r['input']))} | {views} | "
            f"{_fmt(ort32 / (32 * views) * 1000, 1, ' ms')} | {_fmt(ort32, 3, ' s')} "
            f"({r['ort']['threads']}) | {_fmt(ours, 3, ' s')} ({s['threads']}) | "
            f"**{_fmt(_ratio(ours, ort32))}** | {_fmt(ours / (32 * views) * 1000, 2, ' ms')} | "
            f"{ops / 1e9:.2f} G | {_fmt(_ratio(ops, 32 * macs), 3)} | "
            f"{s['mean_firing_rate']:.3f} | {_fmt(_ratio(ops * views / 1e9, ours), 2)} | "
            f"{_fmt(_ratio(macs * 32 * views / 1e9, ort32), 2)} | "
            f"{r['ort']['peak_rss_mb']:.0f} MB | "
            f"{r['memory']['run_32']['peak_rss_mb']:.0f} MB |")
    return lines


def calibration_table(results: dict) -> list[str]:
    """The "Calibration" section: calibration time against plain inference, and memory."""
    lines = ["## Calibration (DNI statistics pass)", "",
             "| model | images | plain onnxruntime | calibration | ratio (target <= "
             f"{TARGET_CALIBRATION:g}) | first calibration run | peak RSS 250 images | "
             "peak RSS 1000 images |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        c = r["calibration"]
        lines.append(
            f"| {name} | {c['large']['images']} | {_fmt(c['plain']['seconds'], 3, ' s')} "
            f"({c['plain']['threads']}) | {_fmt(c['large']['seconds'], 3, ' s')} "
            f"({c['large']['threads']}) | "
            f"**{_fmt(_ratio(c['large']['seconds'], c['plain']['seconds']))}** | "
            f"{_fmt(c['large'].get('first_seconds'), 3, ' s')} | "
            f"{_first_peak(c['small']):.0f} | {_first_peak(c['large']):.0f} |")
    return lines


def _first_peak(run: dict) -> float:
    """Peak RSS after one pass over the images (results from before it was kept: the end)."""
    return run.get("peak_rss_first_mb", run["peak_rss_mb"])


NOTES = [
    "- *ours*: `SpikingNetwork.run` with the fused executor (`runtime/fused.py`, "
    "`runtime/kernels.py`): every dynamic node runs for one sample and one step at a time, "
    "so a sample's state stays in the cache; conv and gemm on spikes are event-driven "
    "(an SNM layer lists its spikes as it sends them, once for all its readers; additions "
    "only for the nonzero inputs, 32 output channels kept in SIMD registers); a conv step "
    "whose input is dense enough runs dense instead (`fused.dense_from`, fitted by "
    "`benchmarks/dense_or_events.py`); the first conv runs once on the directly coded "
    "input. Its results do not depend on the time chunk, the batch or the thread count.",
    "- *synaptic ops*: additions done by the event-driven layers (nonzero inputs x outputs "
    "reached), per image over 32 steps, from `runtime.stats.activity`; *ANN MACs x32*: what "
    "32 dense passes of the same layers would do; *mean firing rate*: spikes per neuron and "
    "step over all neuron layers together (`Activity.mean_firing_rate`, as `snnc eval` "
    "reports it).",
    "- *SpikingJelly*: `ann2snn.Converter` (default rate-coding recipe, `mode='max'`) on the "
    "ANN rebuilt in torch from the ONNX weights (`benchmarks/peers/spikingjelly_ann2snn.py`), "
    "stepped with `snn(x)` T times under `torch.no_grad()` (its converted modules are "
    "single-step). It converts max pooling and the neurons differently (no signed spikes), "
    "so it does somewhat different work; the comparison is of the time to simulate T steps "
    "of each tool's conversion of the same ANN.",
    "- *What bounds ours / ORT*: the event-driven layers do several times fewer operations "
    "than 32 dense passes (*synaptic ops* against *ANN MACs x32*), but each costs more: a "
    "dense GEMM loads a weight once for many outputs and runs near the CPU's peak "
    "(*ORT: G MAC/s*), while an event loads one weight row per output it reaches "
    "(*ours: G synaptic ops/s*); and every step also lists the nonzero inputs, updates "
    "every neuron and every max-pool tracker, work that one ANN pass does not have. "
    "0.5x would need *ours: G synaptic ops/s* higher by the ratio over 0.5 at the same work "
    "(2.3x to 3.2x on the Intel VM, where onnxruntime's AVX-512 GEMMs run 98 to 133 G "
    "MAC/s; 1.6x to 1.7x on the AMD VM of the earlier runs, 190a296). At 16 to 64 "
    "channels and these firing rates an output pixel reads a few events per kernel row: "
    "short runs of unpredictable length, so finding them and branching out of them costs "
    "about as much as the additions (compare *events at 10%* with *dense* in "
    "`docs/results/dense_or_events.md`: a tenth of the inputs costs well over a tenth of "
    "the time of all of them).",
    "- *step() memory*: peak RSS after T streaming steps of the whole batch; the network's "
    "state is allocated at the first step and nothing grows with T.",
    "- *calibration*: `snncompiler.passes.calibration_stats.collect_activation_stats` over "
    "every Relu's input (fetched as its output: same positive values), batches of 64 test "
    "images, against `InferenceSession.run` "
    "on the same batches; both at 1 and at the full thread count (`threads=` of the pass: "
    "onnxruntime's intra-op threads and the histogram threads; it also runs onnxruntime one "
    "batch ahead in a thread of its own), the two alternating in one process, best of the "
    "runs after a first one; *first calibration run* is that first run (numba loads its "
    "cached kernels); the peak RSS is taken after it, in a process that runs the pass "
    "alone. Setting up the pass's session is counted in its time, not in plain "
    "onnxruntime's.",
    "- *interleaving*: the machine is shared and its speed changes from minute to minute "
    "(`speed.json` keeps every repeat, under `all_seconds`); the ratios come from "
    "runs that alternate within one process, so both sides of a ratio see the same "
    "machine.",
]


DEEP_NOTES = [
    "- *ours per image-step*: ours T=32 over 32 steps and the views; *ops / MAC*: synaptic "
    "ops per image over 32 steps against 32 ANN passes' MACs (every conv and gemm). The other "
    "columns as in the tables above.",
    "- *peak RSS ours*: `SpikingNetwork.run` of all the views at T=32; the neuron state of "
    "every view of a run is held at once (EfficientNet-Lite0: 72 MB per 224 px view, "
    "`SpikingNetwork.state_bytes`). `snnc eval` runs a batch in parts whose state fits the "
    "engine's memory budget (`snncompiler.evaluate.simulation_batch`).",
    "- Earlier, by hand: paired runs of the `pair` worker on 8 views and the `.snn` that "
    "`make deep` compiles (with the second stage, `-T 4,8,16,32`) gave 3.94x at 1 thread and "
    "3.85x at 2 (`speed_efficientnet_lite0_1thread.json`, `..._2threads.json`, load average "
    "1.4 to 1.9), after the burst neurons were vectorised (10.0x and 7.85x before). That "
    "network was calibrated otherwise (256 views, the second stage) and fired more (0.54 "
    "spikes per neuron and step, 7.65 G synaptic ops per image): not the same work.",
    "- History of this measurement at 1 thread: 2.87x with the defaults of commit 31064ea "
    "(bursts of at most 4, 16 levels); 10.06x at efcb5ea, where the neurons may send up to 64 "
    "spikes a step and this network got 128 levels at T=32, about the same synaptic "
    "operations but burst kernels that paid one pass over a block of neurons per spike of its "
    "busiest neuron; 3.34x at 73cc62d, where every neuron computes its burst in closed form, "
    "one division per neuron and step (runtime/neurons.py, `signed_spikes`); since a5ac72a "
    "the compiler may choose up to 512 levels (docs/algorithm.md, *Choosing L*; "
    "deep_fidelity.md: 512 at T=32 for this network): larger bursts (the *mean firing rate* "
    "was 1.2 at 73cc62d), but a burst is one event, so the synaptic operations and the time "
    "barely moved (3.40x); then the 1x1 convs whose input is dense (the residual stream into "
    "every expansion) run as a matrix product, two pixels per weight load "
    "(runtime/pointwise.py; more synaptic ops are counted, as every entry of a dense step "
    "is), and the neuron layers count and weight their spikes in one pass instead of two "
    "(2.60x, 2.58x at 2 threads); then the depthwise convs keep four vectors of channels in "
    "flight and the event lists are written in one pass where a pixel is whole 8-entry "
    "groups (b2f9d09, af534fe; the same bits; 2.54x, 2.45x at 2 threads); then the dense "
    "1x1 convs take three pixels per weight load instead of two (585b15c; the same bits): "
    "2.46x, 2.42x at 2 threads on the AMD EPYC VM of the earlier runs (190a296), with a cap "
    "of 64 spikes a step (512 levels). The figures above come from an Intel Xeon VM and the "
    "default cap of 1024 (874fcf2: 1024 levels at T=32, 1.5% more synaptic operations): "
    "4.60x, 4.58x at 2 threads. Most of that change is the machine's: onnxruntime runs 94 G "
    "MAC/s here against 83 on the AMD VM, and our kernels 14.7 G synaptic ops/s against "
    "24.",
    "- *What bounds it*: the event-driven layers do about two thirds of the additions of 32 "
    "dense passes (*ops / MAC*), since at the hundreds of levels this network gets most "
    "neurons send a burst at most steps (*mean firing rate* above 1 spike per neuron and "
    "step, a burst being one event); each addition costs several times one of onnxruntime's "
    "MACs (*ours: G synaptic ops/s* against *ORT: G MAC/s*). 1.0x would need that many "
    "times fewer events per image at the same cost per event, or additions that much "
    "cheaper. Where the time goes, op by op at 1 thread (`benchmarks/op_time.py`, "
    "`op_time_efficientnet_lite0.md`, on the Intel VM): the ReLU6 neurons about half (3.2 ns "
    "per neuron and step: a float64 running sum and a count per neuron, read and written "
    "every step; 1.2 ns on the AMD VM, where they took a third), the 1x1 convs about a third "
    "(20 G additions per second on the dense residual stream, 14 G on spikes), the depthwise "
    "convs about 12% (3 to 4 G additions per second). The network's state (72 MB a view) "
    "does not fit in the cache, so every step streams it from memory; running a few layers "
    "at a time on tiles of rows, so that what one writes the next reads from the cache, is "
    "the step that would lift that bound.",
]


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--args", help=argparse.SUPPRESS)
    parser.add_argument("--models", default="vgg,resnet")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--timesteps", default="8,16,32,64")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--peer-repeat", type=int, default=1,
                        help="timed runs of SpikingJelly after its warm-up (it is slow)")
    parser.add_argument("--spikingjelly", action="store_true",
                        help=f"also time SpikingJelly with {TORCH_PYTHON.relative_to(REPO)}")
    parser.add_argument("--deep", default="efficientnet_lite0",
                        help="deep networks of --deep-data to time at T=32 (comma list; empty: "
                             "none); skipped when their files are missing")
    parser.add_argument("--deep-data", type=Path, default=DEEP,
                        help="where tools/deep_models/export.py wrote them")
    parser.add_argument("--deep-views", type=int, default=8,
                        help="test views of each deep network per run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", choices=["calibration", "deep"],
                        help="measure only this part: calibration prints its table and writes "
                             "nothing unless --json is given; deep adds its figures to "
                             "--out's speed.json and renders speed.md again")
    parser.add_argument("--json", type=Path, help="with --only: write the results here")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](**json.loads(args.args))))
        return
    if args.only == "calibration":
        calibration_only(args)
        return
    if args.only == "deep":
        deep_only(args)
        return

    timesteps = sorted({int(t) for t in args.timesteps.split(",")} | {32})
    results = {"batch": args.batch, "threads": args.threads, "repeat": args.repeat,
               "timesteps": timesteps, "machine": _machine(),
               "load_start": [round(v, 2) for v in os.getloadavg()], "models": {},
               "notes": NOTES}
    thread_counts = sorted({1, args.threads})
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for name, spec in _models(args.models.split(",")).items():
            onnx = str(REPO / spec["onnx"])
            batch, calib, every = _data(spec, args.batch, folder, name)
            snn = folder / f"{name}.snn"
            print(f"{name}: compiling ({_compile(REPO / spec['onnx'], calib, snn):.1f} s)",
                  flush=True)
            r = {"onnx": spec["onnx"],
                 **_paired(onnx, str(snn), str(batch), timesteps, thread_counts, args.repeat)}
            common = {"threads": r["snn"]["threads"]}
            print(f"  onnxruntime x32 {r['ort']['seconds']:.3f} s ({r['ort']['threads']} "
                  f"threads), ours T=32 {r['snn']['seconds']['32']:.3f} s "
                  f"({r['snn']['threads']} threads)", flush=True)
            r["memory"] = {
                f"{kind}_{steps}": _work("memory", snn=str(snn), inputs=str(batch), steps=steps,
                                         streaming=kind == "step", **common)
                for kind in ("step", "run") for steps in ((8, 256) if kind == "step"
                                                          else (32, 256))}
            r["calibration"] = _calibration(onnx, str(every), thread_counts, args.repeat)
            if args.spikingjelly:
                r["spikingjelly"] = _fastest([_subprocess(TORCH_PYTHON, [
                    str(PEER), "--onnx", onnx, "--inputs", str(batch), "--calib", str(calib),
                    "--timesteps", "32", "--threads", str(threads),
                    "--repeat", str(args.peer_repeat)]) for threads in thread_counts],
                    lambda w: w["seconds"])
                results["peer"] = {k: r["spikingjelly"][k] for k in ("torch", "spikingjelly")}
                print(f"  SpikingJelly T=32 {r['spikingjelly']['seconds']:.3f} s", flush=True)
            results["models"][name] = r
        deep = _deep(_names(args.deep), args.deep_data, args.deep_views, thread_counts,
                     args.repeat, folder)
        if deep is not None:
            results["deep"] = deep
    results["load_end"] = [round(v, 2) for v in os.getloadavg()]
    text = render(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.md").write_text(text)
    (args.out / "speed.json").write_text(json.dumps(results, indent=1) + "\n")
    print(text)


def deep_only(args) -> None:
    """``--only deep``: the deep networks alone, put into ``--out``'s speed.json (the other
    figures kept) and speed.md rendered from it again."""
    with tempfile.TemporaryDirectory() as scratch:
        deep = _deep(_names(args.deep), args.deep_data, args.deep_views,
                     sorted({1, args.threads}), args.repeat, Path(scratch))
    if deep is None:
        print("no deep network to measure: nothing written")
        return
    path = args.out / "speed.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results["deep"] = deep
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    if results.get("models"):
        (args.out / "speed.md").write_text(render(results))
    else:
        (args.out / "speed.md").write_text("\n".join(
            ["# Speed and memory of the spiking runtime", "", *deep_section(deep), ""]))
    print("\n".join(deep_section(deep)))


def calibration_only(args) -> None:
    """``--only calibration``: the calibration table of every model asked, nothing else."""
    thread_counts = sorted({1, args.threads})
    results = {"threads": args.threads, "repeat": args.repeat, "machine": _machine(),
               "load_start": [round(v, 2) for v in os.getloadavg()], "models": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for name, spec in _models(args.models.split(",")).items():
            _, _, every = _data(spec, args.batch, Path(scratch), name)
            results["models"][name] = {"onnx": spec["onnx"], "calibration": _calibration(
                str(REPO / spec["onnx"]), str(every), thread_counts, args.repeat)}
            print(f"{name}: done", flush=True)
    results["load_end"] = [round(v, 2) for v in os.getloadavg()]
    print(f"Load average (1, 5, 15 min) at the start: {results['load_start']}, at the end: "
          f"{results['load_end']}; times: best of {args.repeat} runs after a first one.\n")
    print("\n".join(calibration_table(results)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
