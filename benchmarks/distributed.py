"""Evaluation on a Dask cluster: speed-up against workers on this machine, and the per-image
costs behind an estimate for ImageNet-sized runs (docs/results/distributed.md).

    .venv/bin/pip install -e ".[dask]"
    .venv/bin/python benchmarks/distributed.py                       # about 1.5 minutes here
    .venv/bin/python benchmarks/distributed.py --images 256 --timesteps 32 --workers 1,2

What it does:

1. compiles the shipped demo CNN (T = ``--timesteps``, the 300 packaged calibration
   images) here and on a LocalCluster of 2 workers, and checks that both write the same
   bytes (times both);
2. evaluates it on the first ``--images`` packaged test images with the ANN (``snnc eval
   --onnx``): here, in one process with numba's default threads, then on a LocalCluster of
   each size of ``--workers`` (one process and one thread each), after a warm-up in which
   each worker loads the network, the data, the ANN and numba's cached kernels (what its
   first batch would do); checks that every result equals the local one (timing
   aside), and records the CPU time the workers got per second of the run (on a shared
   machine, what the other jobs left them);
3. times EfficientNet-Lite0 (224 px) in the runtime on one core, if a compiled ``.snn``
   and test views exist (``--efficientnet``, ``--efficientnet-data``): runs of 2 views at
   T = 16 and T = 32 with the parameters of its largest calibrated T (the cost of a step
   grows over the first steps, as activity builds up: a step beyond 32 is taken to cost
   what steps 17 to 32 cost on average), and the ANN in onnxruntime (one thread) on the
   same views, if ``--efficientnet-onnx`` exists;
4. prints the figures and the estimate for ``--target-images`` images (ImageNet val:
   50,000) at T = 32 and 64, and writes them as JSON (``--out``).

The machine is shared (the load average is recorded): times move with it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, where its name would hide
# Dask's own ``distributed`` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEEP_SNN = Path("/tmp/deep/work/efficientnet_lite0-default.snn")
DEEP_DATA = REPO / "out" / "deep" / "efficientnet_lite0_test.npz"
DEEP_ONNX = REPO / "out" / "deep" / "efficientnet_lite0.onnx"


def demo_inputs():
    from snncompiler.demo import demo_files
    from snncompiler.npz import Preprocessing

    spec, folder = demo_files()
    return spec, folder, Preprocessing(spec["scale"], spec["mean"], spec["std"])


def compile_both(out: Path, timesteps: int) -> dict:
    """The demo compiled here and on 2 workers: times, and whether the bytes are equal."""
    from snncompiler.context import CompileConfig
    from snncompiler.distributed import open_cluster
    from snncompiler.npz import load_npz
    from snncompiler.pipeline import compile_model
    from snncompiler.runtime.format import save_program

    spec, folder, preprocessing = demo_inputs()
    calibration = load_npz(folder / spec["calibration"], preprocessing)
    config = CompileConfig(timesteps=(timesteps,), progress=False)
    found = {}
    for where in ("here", "2 workers"):
        with open_cluster(workers=2 if where != "here" else None) as cluster:
            start = time.perf_counter()
            result = compile_model(folder / spec["model"], calibration, config, cluster=cluster)
            found[where] = time.perf_counter() - start
        save_program(result.program, out / f"{where.replace(' ', '_')}.snn")
    same = (out / "here.snn").read_bytes() == (out / "2_workers.snn").read_bytes()
    return {"seconds_here": found["here"], "seconds_2_workers": found["2 workers"],
            "same_bytes": same, "snn": str(out / "here.snn")}


def evaluate_all(snn: str, images: int, timesteps: int, sizes: list[int]) -> dict:
    """Local and cluster evaluation of the demo .snn on ``images`` test images."""
    from snncompiler import frontend
    from snncompiler.distributed import _evaluate_batch, open_cluster
    from snncompiler.evaluate import evaluate
    from snncompiler.npz import load_npz
    from snncompiler.runtime import load
    from snncompiler.runtime.engine import DEFAULT_MEMORY_BUDGET

    spec, folder, preprocessing = demo_inputs()
    data, onnx = folder / spec["test"], folder / spec["model"]
    test = load_npz(data, preprocessing, limit=images)
    session = frontend.ort_session(frontend.load_model(onnx))
    name = session.get_inputs()[0].name
    net = load(snn)

    def ann(x):
        return session.run(None, {name: x})[0]

    evaluate(net, test, [timesteps], ann=ann, batch_size=64, progress=False)  # warm-up
    start = time.perf_counter()
    reference = evaluate(net, test, [timesteps], ann=ann, progress=False).to_json()
    runs = {"here": {"seconds": time.perf_counter() - start, "same": True}}
    reference.pop("seconds")
    for size in sizes:
        with open_cluster(workers=size) as cluster:
            # Warm-up: every worker loads the network, the data, the ANN and numba's cached
            # kernels once, as the first batch it is given would.
            cluster.client.run(_evaluate_batch, os.path.abspath(snn), DEFAULT_MEMORY_BUDGET,
                               os.path.abspath(data), preprocessing, images,
                               os.path.abspath(onnx), [timesteps], 0, 8)
            cpu = cluster.client.run(time.process_time)
            start = time.perf_counter()
            result = cluster.evaluate(snn, data, [timesteps], preprocessing=preprocessing,
                                      limit=images, onnx=onnx, progress=False).to_json()
            seconds = time.perf_counter() - start
            after = cluster.client.run(time.process_time)
        result.pop("seconds")
        # CPU seconds the workers got per second: what the shared machine let them use.
        used = sum(after[worker] - cpu[worker] for worker in cpu) / seconds
        runs[f"{size} workers"] = {"seconds": seconds, "same": result == reference,
                                   "worker_cores_used": used,
                                   "images_per_worker_cpu_second": images / (used * seconds)}
    one = runs.get("1 workers", runs["here"])["seconds"]
    for run in runs.values():
        run["images_per_second"] = images / run["seconds"]
        run["speedup_vs_here"] = runs["here"]["seconds"] / run["seconds"]
        run["speedup_vs_1_worker"] = one / run["seconds"]
    return {"images": images, "timesteps": timesteps, "batch_size": 128,
            "ms_per_image_step_1_worker": 1000 * one / (images * timesteps), "runs": runs}


def time_efficientnet(snn: Path, data: Path, onnx: Path) -> dict | None:
    """Seconds per view of EfficientNet-Lite0 on one core, at T = 16 and 32."""
    if not snn.is_file() or not data.is_file():
        return None
    import numba

    from snncompiler import runtime

    numba.set_num_threads(1)
    net = runtime.load(snn)
    calibrated = max(net.program.timesteps)
    with np.load(data) as archive:
        x = np.ascontiguousarray(archive["x"][:2], dtype=np.float32)
    net.run(x[:1], 1, parameters_for=calibrated)  # warm-up: numba's cached kernels
    per_view = {}
    for steps in (16, 32):
        start = time.perf_counter()
        net.run(x, steps, parameters_for=calibrated)
        per_view[steps] = (time.perf_counter() - start) / len(x)
    found = {"snn": str(snn), "views": len(x), "parameters_for": calibrated,
             "seconds_per_view": {str(k): v for k, v in per_view.items()},
             # Steps 17..32 cost more than the first ones (activity builds up): their mean
             # is what a step beyond 32 is taken to cost.
             "seconds_per_later_step": (per_view[32] - per_view[16]) / 16}
    if onnx.is_file():
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        session.run(None, feed)
        start = time.perf_counter()
        session.run(None, feed)
        found["ann_seconds_per_view"] = (time.perf_counter() - start) / len(x)
    return found


def estimate(deep: dict, images: int) -> list[dict]:
    """Core-hours and cluster sizes for ``images`` views at T = 32 and 64: one run of T steps
    per view and the ANN once per view (for the agreement), shards scaling perfectly (a
    shard of 128 views is minutes of work against milliseconds of Dask overhead)."""
    rows = []
    per_view_ann = deep.get("ann_seconds_per_view", 0.0)
    for steps in (32, 64):
        per_view = deep["seconds_per_view"]["32"] + (steps - 32) * deep["seconds_per_later_step"]
        core_seconds = images * (per_view + per_view_ann)
        rows.append({
            "timesteps": steps, "seconds_per_view": per_view + per_view_ann,
            "core_hours": core_seconds / 3600,
            "hours_on": {str(cores): core_seconds / cores / 3600
                         for cores in (16, 64, 256, 1024)},
            "cores_for_1_hour": math.ceil(core_seconds / 3600),
            "cores_for_10_minutes": math.ceil(core_seconds / 600)})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--timesteps", type=int, default=128)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--efficientnet", type=Path, default=DEEP_SNN)
    parser.add_argument("--efficientnet-data", type=Path, default=DEEP_DATA)
    parser.add_argument("--efficientnet-onnx", type=Path, default=DEEP_ONNX)
    parser.add_argument("--target-images", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results" /
                        "distributed.json")
    args = parser.parse_args(argv)
    sizes = [int(v) for v in args.workers.split(",")]
    results = {"python": platform.python_version(), "cpus": os.cpu_count(),
               "load_start": [round(v, 2) for v in os.getloadavg()]}
    with tempfile.TemporaryDirectory() as scratch:
        results["compile"] = compile_both(Path(scratch), args.timesteps)
        results["eval"] = evaluate_all(results["compile"]["snn"], args.images,
                                       args.timesteps, sizes)
    results["compile"].pop("snn")
    deep = time_efficientnet(args.efficientnet, args.efficientnet_data,
                             args.efficientnet_onnx)
    results["efficientnet_lite0"] = deep
    two = results["eval"]["runs"].get("2 workers")
    efficiency = two["speedup_vs_1_worker"] / 2 if two else None
    results["scaling_efficiency_2_workers"] = efficiency
    if deep is not None:
        results["estimate"] = {"images": args.target_images,
                               "rows": estimate(deep, args.target_images)}
    results["load_end"] = [round(v, 2) for v in os.getloadavg()]

    compiled = results["compile"]
    print(f"compile (demo, T={args.timesteps}, 300 images): here "
          f"{compiled['seconds_here']:.1f} s, 2 workers {compiled['seconds_2_workers']:.1f} s, "
          f"same bytes: {compiled['same_bytes']}")
    print(f"eval (demo, {args.images} images, T={args.timesteps}, with the ANN):")
    for where, run in results["eval"]["runs"].items():
        used = (f"  workers used {run['worker_cores_used']:.2f} cores, "
                f"{run['images_per_worker_cpu_second']:.0f} img per CPU-s"
                if "worker_cores_used" in run else "")
        print(f"  {where:>10}: {run['seconds']:6.2f} s  {run['images_per_second']:7.1f} img/s  "
              f"x{run['speedup_vs_here']:.2f} vs here  x{run['speedup_vs_1_worker']:.2f} vs "
              f"1 worker  same result: {run['same']}{used}")
    print(f"  {results['eval']['ms_per_image_step_1_worker']:.3f} ms per image-step on one "
          "worker" + ("" if efficiency is None else
                      f"; 2 workers do {efficiency:.2f} of twice one worker's work"))
    if deep is None:
        print("EfficientNet-Lite0: no compiled .snn or test views found (see --efficientnet)")
    else:
        print(f"EfficientNet-Lite0 on one core: {deep['seconds_per_view']['16']:.2f} s per view "
              f"at T=16, {deep['seconds_per_view']['32']:.2f} s at T=32, "
              f"{deep['seconds_per_later_step']:.4f} s per step after 16"
              + (f", ANN {deep['ann_seconds_per_view']:.4f} s per view"
                 if "ann_seconds_per_view" in deep else ""))
        for row in results["estimate"]["rows"]:
            hours = ", ".join(f"{cores} cores {h:.2f} h" for cores, h in row["hours_on"].items())
            print(f"  {args.target_images} views at T={row['timesteps']}: "
                  f"{row['seconds_per_view']:.2f} s per view, "
                  f"{row['core_hours']:.1f} core-hours ({hours}); "
                  f"{row['cores_for_1_hour']} cores for 1 hour, "
                  f"{row['cores_for_10_minutes']} for 10 minutes")
    print(f"load average {results['load_start']} -> {results['load_end']}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if compiled["same_bytes"] and all(
        run["same"] for run in results["eval"]["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
