"""How faithfully the SNN reproduces pretrained ImageNet CNNs, against T, on offline photos.

    .venv-torch/bin/python tools/deep_models/export.py          # once: out/deep/*.onnx, *.npz
    .venv/bin/python benchmarks/deep_fidelity.py [--models efficientnet_lite0,...]
        [--timesteps 4,8,16,32,64] [--limit N] [--calib-limit 128]
        [--variant NAME --compile-args="--no-second-stage --max-spikes 4"]
        [--out docs/results/deep_fidelity.json] [--report | --report-only]

For each model of ``--data`` (``<model>.onnx``, ``<model>_calib.npz``, ``<model>_test.npz``,
written by ``tools/deep_models/export.py``; the model ``demo`` is the shipped Fashion-MNIST
CNN, for quick checks):

1. **Compile** with ``snnc`` in a child process, calibrated for every T of ``--timesteps``
   at once (one DNI parameter set per T from one pass of statistics), on the first
   ``--calib-limit`` calibration views (already preprocessed: no ``--scale``), with the
   default options plus ``--compile-args``. The child's wall time and peak resident memory
   (its own ``VmHWM``, see :func:`compile_snn`) are recorded. The second stage simulates
   the first ``--second-stage-samples`` of those views for every T (half fit its shifts,
   half check them): most of the compile time.
2. **Run** the first ``--limit`` test views: onnxruntime on the ANN, and the SNN for each T
   with that T's own parameters (``net.run(x, T, parameters_for=T)``); the engine's counters
   give the synaptic operations (as ``snnc eval`` reports them).
3. **Per layer** (``snnc eval --layers``, :mod:`snncompiler.diagnostics`): on the first
   ``--layer-limit`` views, at ``--layer-timesteps``, each neuron layer's time-averaged
   output against the ANN's activation at the same tensor: ``E|r - y| / E|y|``.

Measures, per T, over the test views:

- **top-1 agreement**: the share of views whose SNN top-1 class is the ANN's; 95% Wilson
  interval over views (``agreement_ci``), and a bootstrap over photos (``agreement_ci_photos``:
  the two views of a photo are not independent);
- **top-5 overlap**: ``|top5(SNN) & top5(ANN)| / 5``, averaged over views;
- **relative logit error**: ``||SNN logits - ANN logits||_2 / ||ANN logits||_2`` per view,
  averaged over views;
- the two means with 95% percentile intervals from a bootstrap over photos (all views of a
  resampled photo go together; 2000 resamples, fixed seed);
- synaptic operations per image (additions by the event-driven layers over T steps), their
  ratio to the ANN's MACs x T, and the firing rate.

The results are merged into ``--out`` under ``<model>`` (``<model>:<variant>`` with
``--variant``), so ablations and models can be run one at a time. ``--report`` then writes
``deep_fidelity.md`` (verdicts against the targets of :data:`TARGETS`, computed here) and the
per-layer plot ``deep_fidelity_layers.png`` (needs matplotlib in ``.venv``; without it the
Markdown is still written) beside the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "out" / "deep"
RESULTS = REPO / "docs" / "results"
DEFAULT_TIMESTEPS = (4, 8, 16, 32, 64)
TARGETS = {8: 0.90, 16: 0.97, 32: 0.99}
"""Top-1 agreement with the ANN that the conversion should reach at these T."""
DEFAULT_VARIANT = "default"
BOOTSTRAP_RESAMPLES = 2000
# Flags the harness sets itself; --compile-args may not change them.
_OWN_FLAGS = ("-o", "--output", "--calib", "--calib-samples", "-T", "--timesteps", "--force",
              "--scale", "--mean", "--std")


# ----------------------------------------------------------------------------- statistics


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% for z = 1.96)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def bootstrap_mean(values, groups, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values``, resampling whole groups (photos).

    Each resample draws as many groups as there are, with replacement, and takes the mean
    over all the values of the groups drawn.
    """
    values = np.asarray(values, dtype=np.float64)
    _, index = np.unique(np.asarray(groups), return_inverse=True)
    sums = np.bincount(index, weights=values)
    counts = np.bincount(index).astype(np.float64)
    draw = np.random.default_rng(seed).integers(0, len(sums), size=(resamples, len(sums)))
    means = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def top5_overlap(snn: np.ndarray, ann: np.ndarray) -> np.ndarray:
    """Per row, ``|top5(snn) & top5(ann)| / 5`` (of the k = min(5, classes) largest)."""
    k = min(5, snn.shape[1])
    top_snn = np.argpartition(-snn, k - 1, axis=1)[:, :k]
    top_ann = np.argpartition(-ann, k - 1, axis=1)[:, :k]
    return np.array([len(set(a) & set(b)) / k for a, b in zip(top_snn, top_ann)])


def relative_error(snn: np.ndarray, ann: np.ndarray) -> np.ndarray:
    """Per row, ``||snn - ann||_2 / ||ann||_2``."""
    scale = np.maximum(np.linalg.norm(ann, axis=1), 1e-12)
    return np.linalg.norm(snn - ann, axis=1) / scale


def flip_error(ann: np.ndarray) -> np.ndarray:
    """Per row, the smallest relative logit error that can change the ANN's top-1 class:
    ``(top1 - top2) / (sqrt(2) ||ann||_2)`` (moving the two best logits towards each other by
    half their gap each is the shortest way to tie them)."""
    top = np.sort(ann, axis=1)
    scale = np.maximum(np.linalg.norm(ann, axis=1), 1e-12)
    return (top[:, -1] - top[:, -2]) / (np.sqrt(2.0) * scale)


def summarise(snn: np.ndarray, ann: np.ndarray, photos) -> dict:
    """The fidelity figures of one T: agreement, top-5 overlap, relative logit error, and
    the disagreeing views with how close the ANN itself was to a tie on them."""
    agree = snn.argmax(axis=1) == ann.argmax(axis=1)
    overlap = top5_overlap(snn, ann)
    error = relative_error(snn, ann)
    ties = flip_error(ann)
    return {
        "disagreements": [{"view": int(i), "flip_error": float(ties[i]),
                           "error": float(error[i])} for i in np.flatnonzero(~agree)],
        "views_flippable_at_mean_error": float((ties < error.mean()).mean()),
        "agreement": float(agree.mean()), "agreement_ci": wilson(int(agree.sum()), len(agree)),
        "agreement_ci_photos": bootstrap_mean(agree, photos),
        "top5_overlap": float(overlap.mean()), "top5_overlap_ci": bootstrap_mean(overlap, photos),
        "relative_logit_error": float(error.mean()),
        "relative_logit_error_ci": bootstrap_mean(error, photos),
    }


def verdict(agreement: float, n: int, target: float) -> str:
    """How an agreement measured on ``n`` views stands against ``target``."""
    low, high = wilson(round(agreement * n), n)
    if low >= target:
        return "met"
    if agreement >= target:
        return "met by the estimate, but the 95% interval reaches below the target"
    if high >= target:
        return "missed by the estimate, but the 95% interval reaches the target"
    return "missed"


# ----------------------------------------------------------------------------- data


def prepare_demo(folder: Path) -> None:
    """The shipped Fashion-MNIST CNN and its images, preprocessed, as ``demo*`` files."""
    from snncompiler import demo
    from snncompiler.npz import Preprocessing, load_npz

    spec, shipped = demo.demo_files()
    prep = Preprocessing(spec["scale"], spec["mean"], spec["std"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "demo.onnx").write_bytes((shipped / spec["model"]).read_bytes())
    np.savez(folder / "demo_calib.npz", x=load_npz(shipped / spec["calibration"], prep).x)
    test = load_npz(shipped / spec["test"], prep)
    np.savez(folder / "demo_test.npz", x=test.x, photo=np.arange(len(test.x)).astype(str))


def model_files(folder: Path, model: str) -> tuple[Path, Path, Path]:
    if model == "demo" and not (folder / "demo.onnx").exists():
        prepare_demo(folder)
    files = (folder / f"{model}.onnx", folder / f"{model}_calib.npz",
             folder / f"{model}_test.npz")
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        sys.exit(f"error: missing {', '.join(missing)}; run tools/deep_models/export.py first")
    return files


def test_views(path: Path, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` test views and the photo each is of (its index when unnamed)."""
    with np.load(path, allow_pickle=False) as data:
        x = np.ascontiguousarray(data["x"][:limit], dtype=np.float32)
        photos = data["photo"][:limit] if "photo" in data else np.arange(len(x)).astype(str)
    return x, photos


# ----------------------------------------------------------------------------- compile


def compile_snn(onnx: Path, calib: Path, calib_limit: int, timesteps, out: Path,
                extra: list[str], second_stage_samples: int) -> dict:
    """``snnc`` in a child process: its wall time, peak resident memory and command line.

    The peak is the child's own (``snncompiler.machine.peak_rss_bytes``, which it prints as
    it exits): the ``ru_maxrss`` that ``wait4`` returns also counts this process's peak at
    the spawn, which Linux keeps across exec, so after a model's evaluation here it read
    that evaluation's memory (EfficientNet-Lite2's compile: 2423 MiB after Lite1's
    evaluation).
    """
    command = [sys.executable, "-c", _COMPILE_CHILD, "compile", str(onnx), "-o", str(out),
               "--calib", str(calib), "--calib-samples", str(calib_limit),
               "--second-stage-samples", str(second_stage_samples),
               "-T", ",".join(map(str, timesteps)), "--force", "-q", *extra]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    with child.stdout:
        output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)  # Popen.wait would not return the rusage
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.exit(f"error: compiling {onnx.name} failed ({shlex.join(command)}):\n{output}")
    lines = output.strip().splitlines()
    peaks = [line for line in lines if line.startswith(_PEAK_MARK)]
    peak = int(peaks[-1].split()[-1]) if peaks else usage.ru_maxrss * 1024  # KiB on Linux
    print("\n".join(line for line in lines if not line.startswith(_PEAK_MARK)), flush=True)
    return {"seconds": seconds, "peak_rss_mib": peak / 2**20,
            "command": shlex.join(["snnc", *map(_in_repo, command[4:])])}


_PEAK_MARK = "child peak resident bytes:"
# `snnc` as the child runs it, printing its own peak resident memory as it exits.
_COMPILE_CHILD = f"""
import sys
from snncompiler.cli import main
from snncompiler.machine import peak_rss_bytes
try:
    main(sys.argv[1:], prog_name="snnc")
finally:
    print("{_PEAK_MARK}", peak_rss_bytes(), flush=True)
"""


def _in_repo(argument: str) -> str:
    """A path inside the checkout as relative to it (the report reads the same from any
    clone); any other argument as it is."""
    path = Path(argument)
    if not path.is_absolute():
        return argument
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return argument


# ----------------------------------------------------------------------------- run


def ann_logits(onnx: Path, x: np.ndarray, batch: int) -> np.ndarray:
    from snncompiler import frontend

    session = frontend.ort_session(frontend.load_model(onnx))
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + batch]})[0].reshape(
        len(x[i:i + batch]), -1) for i in range(0, len(x), batch)])


def conversion(snn: Path) -> dict:
    """How the network was calibrated, from its header (the compiler's defaults change)."""
    from snncompiler import runtime

    header = runtime.load(snn).program.calibration
    return {key: value for key, value in header.items() if key != "layers"}


def run_snn(snn: Path, x: np.ndarray, timesteps, batch: int, max_memory: int):
    """Logits and activity per T, each T run with its own parameters, batch by batch."""
    from snncompiler import cli, runtime
    from snncompiler.runtime import stats

    net = runtime.load(snn, memory_budget=cli.chunk_budget(max_memory))
    sizes = cli.activation_sizes(net.program)
    logits, work, seconds = {}, {}, {}
    for t in timesteps:
        size = cli.plan_batch(sizes, t, batch, max_memory)
        parts, reports, start = [], [], time.perf_counter()
        for first in range(0, len(x), size):
            chunk = x[first:first + size]
            readout = net.run(chunk, t, parameters_for=t)
            parts.append(readout[-1].reshape(len(chunk), -1))
            reports.append(stats.activity(net))
        seconds[t] = time.perf_counter() - start
        logits[t], work[t] = np.concatenate(parts), stats.combine(reports)
        print(f"  T={t}: {seconds[t]:.1f} s ({seconds[t] / (len(x) * t):.3f} s per view and "
              "step)", flush=True)
    return logits, work, seconds


def layer_errors(snn: Path, onnx: Path, x: np.ndarray, timesteps, batch: int) -> list[dict]:
    """``snnc eval --layers``: each neuron layer's error against the ANN, at each T."""
    from snncompiler import diagnostics, frontend, runtime

    net = runtime.load(snn)
    names = [node.output for node in net.program.neuron_nodes()]
    ann = diagnostics.ann_activations(frontend.load_model(onnx), names)
    found = diagnostics.layer_diagnostics(net, x, timesteps, ann=ann, batch_size=batch)
    return [layer.to_json() for layer in found]


def run_model(model: str, args, extra: list[str]) -> dict:
    onnx, calib, test = model_files(Path(args.data), model)
    x, photos = test_views(test, args.limit)
    with np.load(calib, allow_pickle=False) as data:
        calib_views = min(len(data["x"]), args.calib_limit)
    timesteps = sorted(args.timesteps)
    snn = Path(args.work) / f"{model}-{args.variant}.snn"
    snn.parent.mkdir(parents=True, exist_ok=True)
    print(f"{model} ({args.variant}): compiling on {calib_views} calibration views", flush=True)
    compiled = compile_snn(onnx, calib, args.calib_limit, timesteps, snn, extra,
                           args.second_stage_samples)
    print(f"  compiled in {compiled['seconds']:.0f} s, peak {compiled['peak_rss_mib']:.0f} MiB; "
          f"running {len(x)} views of {len(set(photos.tolist()))} photos", flush=True)
    start = time.perf_counter()
    ann = ann_logits(onnx, x, args.batch)
    ann_seconds = time.perf_counter() - start
    logits, work, seconds = run_snn(snn, x, timesteps, args.batch, args.max_memory_bytes)
    per_t = {}
    for t in timesteps:
        activity = work[t]
        per_t[str(t)] = {
            **summarise(logits[t], ann, photos),
            "synaptic_ops": activity.synaptic_ops,
            "synaptic_ops_per_ann_mac": (activity.synaptic_ops / (activity.ann_macs * t)
                                         if activity.ann_macs else None),
            "firing_rate": activity.mean_firing_rate(),
            "simulate_seconds": seconds[t],
        }
    layer_t = sorted(t for t in args.layer_timesteps if t in timesteps) or [timesteps[-1]]
    layers = []
    if args.layer_limit > 0:  # 0: no per-layer errors (an ablation that only needs the table)
        start = time.perf_counter()
        layers = layer_errors(snn, onnx, x[:args.layer_limit], layer_t, args.batch)
        print(f"  per-layer errors at T={layer_t} in {time.perf_counter() - start:.0f} s",
              flush=True)
    return {
        "model": model, "variant": args.variant, "compile_args": extra,
        "views": len(x), "photos": len(set(photos.tolist())), "calibration_views": calib_views,
        "timesteps": timesteps, "conversion": conversion(snn),
        "ann_macs": work[timesteps[-1]].ann_macs,
        "static_macs": work[timesteps[-1]].static_macs, "compile": compiled,
        "ann_seconds": ann_seconds, "per_t": per_t,
        "layers": {"timesteps": layer_t, "views": min(len(x), args.layer_limit),
                   "rows": layers},
        "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def machine() -> dict:
    import numba
    import onnxruntime

    import snncompiler
    from snncompiler.machine import cpu_name, usable_cpus

    return {"platform": platform.platform(), "cpu": cpu_name(), "cpus": usable_cpus(),
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(), "snncompiler": snncompiler.__version__,
            "numpy": np.__version__, "numba": numba.__version__,
            "onnxruntime": onnxruntime.__version__}


# ----------------------------------------------------------------------------- report


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _interval(pair, scale: float = 100.0, digits: int = 1) -> str:
    return f"[{pair[0] * scale:.{digits}f}, {pair[1] * scale:.{digits}f}]"


def _si(value: float | None) -> str:
    from snncompiler.evaluate import si

    return "-" if value is None else si(value)


def verdict_lines(results: dict) -> list[str]:
    """One line per result and target T it was measured at."""
    lines = []
    for key, record in results.items():
        for t, target in TARGETS.items():
            row = record["per_t"].get(str(t))
            if row is None:
                continue
            lines.append(
                f"- {key}, T={t}: agreement {_pct(row['agreement'])}% "
                f"{_interval(row['agreement_ci'])} on {record['views']} views, target "
                f"{100 * target:g}%: {verdict(row['agreement'], record['views'], target)}")
    return lines


def disagreements(record: dict) -> list[str]:
    """Per T, the views whose SNN class is not the ANN's, and how near a tie the ANN was."""
    lines = []
    for t in record["timesteps"]:
        row = record["per_t"][str(t)]
        if "disagreements" not in row:
            continue
        missed = row["disagreements"]
        views = ", ".join(f"{m['view']} ({m['flip_error']:.4f}, {m['error']:.3f})"
                          for m in missed) or "none"
        lines.append(f"- T={t}: {len(missed)} views disagree: {views}; "
                     f"{100 * row['views_flippable_at_mean_error']:.1f}% of all views could "
                     "change class at the mean relative logit error")
    if lines:
        lines = ["Disagreements, per T: view (the smallest relative logit error that can "
                 "change the ANN's class there, the SNN's relative logit error there).", "",
                 *lines, ""]
    return lines


def model_table(record: dict) -> list[str]:
    lines = ["| T | top-1 agreement % [95%] | top-5 overlap % [95%] | rel. logit error [95%] "
             "| synaptic ops / image | ops / (MAC x T) | firing rate | s / view |",
             "|---:|---|---|---|---:|---:|---:|---:|"]
    for t in record["timesteps"]:
        row = record["per_t"][str(t)]
        ratio = row["synaptic_ops_per_ann_mac"]
        lines.append(
            f"| {t} | {_pct(row['agreement'])} {_interval(row['agreement_ci'])} "
            f"| {_pct(row['top5_overlap'])} {_interval(row['top5_overlap_ci'])} "
            f"| {row['relative_logit_error']:.3f} "
            f"{_interval(row['relative_logit_error_ci'], 1.0, 3)} "
            f"| {_si(row['synaptic_ops'])} | {'-' if ratio is None else f'{ratio:.3f}'} "
            f"| {row['firing_rate']:.4f} | {row['simulate_seconds'] / record['views']:.1f} |")
    return lines


def conversion_line(settings: dict | None) -> str:
    if not settings:
        return "Conversion settings: not recorded."
    shown = ("method", "theta_neg", "max_spikes_per_step", "resolution", "levels_per_step",
             "granularity", "initial_potential", "second_stage", "samples")
    return "Conversion settings (from the .snn header): " + ", ".join(
        f"{key} {json.dumps(settings[key])}" for key in shown if key in settings) + "."


def layer_summary(record: dict) -> str:
    layers = record["layers"]
    rows = [r for r in layers["rows"] if r.get("relative_error")]
    if not rows:
        return "no layer could be compared with the ANN"
    parts = []
    for j, t in enumerate(layers["timesteps"]):
        errors = [r["relative_error"][j] for r in rows]
        worst = int(np.argmax(errors))
        parts.append(f"T={t}: first layer {100 * errors[0]:.1f}%, last {100 * errors[-1]:.1f}%, "
                     f"largest {100 * errors[worst]:.1f}% (layer {worst + 1} of {len(rows)})")
    return "; ".join(parts) + f" (on {layers['views']} views)"


def write_report(json_path: Path) -> Path:
    """``deep_fidelity.md`` (and the plot) beside ``json_path``, from it alone."""
    found = json.loads(json_path.read_text())
    results = found["results"]
    data = found.get("data", {})
    md = json_path.with_suffix(".md")
    plot_path = json_path.with_name(json_path.stem + "_layers.png")
    plotted = plot_layers(results, plot_path)
    lines = ["# Deep CNNs: SNN against ANN on offline photos", "",
             f"Written by `benchmarks/deep_fidelity.py --report` from `{json_path.name}`; "
             "the models and photos come from `tools/deep_models/export.py`. See the "
             "docstring of `benchmarks/deep_fidelity.py` for how every figure is measured.",
             "", "## Verdicts", "",
             "Targets: top-1 agreement with the ANN of "
             + ", ".join(f"{100 * v:g}% at T={t}" for t, v in TARGETS.items())
             + ". A target is met when the whole 95% Wilson interval is at or above it.", "",
             *verdict_lines(results), "", "## Data", ""]
    lines += data_lines(data)
    for key, record in results.items():
        m = record["machine"]
        compiled = record["compile"]
        lines += ["", f"## {key}", "",
                  f"{record['views']} test views of {record['photos']} photos; compiled by "
                  f"`{compiled['command']}` on {record['calibration_views']} calibration views "
                  f"in {compiled['seconds']:.0f} s, peak memory {compiled['peak_rss_mib']:.0f} "
                  f"MiB. The ANN does {_si(record['ann_macs'])} MACs per image "
                  f"({_si(record['static_macs'])} of them computed once, on the input).", "",
                  *model_table(record), "", *disagreements(record),
                  conversion_line(record.get("conversion")), "",
                  f"Per layer, relative error E|r - y| / E|y|: {layer_summary(record)}.", "",
                  f"Run {record['date']} on {m['cpu']} ({m['cpus']} CPUs, load average "
                  f"{', '.join(f'{v:.1f}' for v in m['load_average'] or [])}), {m['platform']}, "
                  f"Python {m['python']}, snncompiler {m['snncompiler']}, numpy {m['numpy']}, "
                  f"numba {m['numba']}, onnxruntime {m['onnxruntime']}."]
    if plotted:
        lines += ["", "## Error against depth", "", f"![per-layer error]({plot_path.name})"]
    md.write_text("\n".join(lines) + "\n")
    return md


def data_lines(data: dict) -> list[str]:
    if not data:
        return ["(no manifest: run tools/deep_models/export.py)"]
    split = data.get("split", {})
    lines = ["Photos that ship inside packages, none downloaded; split by photo name (sha256) "
             f"into {split.get('calibration_photos')} calibration and "
             f"{split.get('test_photos')} test photos (disjoint); "
             f"{split.get('test_views_per_photo')} test views per photo (centre crop, its "
             f"mirror image), {split.get('calibration_views_per_photo')} random views per "
             "calibration photo. Sources: "
             + "; ".join(f"{k}: {v}" for k, v in data.get("photo_sources", {}).items()) + ".",
             "", "Exported with torch " + str(data.get("torch")) + "; photo packages: "
             + ", ".join(f"{k} {v}" for k, v in data.get("photo_packages", {}).items()) + "."]
    for name, model in data.get("models", {}).items():
        prep = model["preprocessing"]
        lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in model["packages"].items())
                     + f"; input {model['input']}, shorter side to {prep['short_side']}, centre "
                     f"crop {prep['size']}, (pixel - {prep['mean'][0]:g}) / {prep['std'][0]:g}")
    return lines


def plot_layers(results: dict, path: Path) -> bool:
    """Relative error of each neuron layer against its depth; False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print("note: matplotlib is not installed; no plot", file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    for key, record in results.items():
        rows = [r for r in record["layers"]["rows"] if r.get("relative_error")]
        if not rows:  # run with --layer-limit 0: no line, and no empty entry in the legend
            continue
        for j, t in enumerate(record["layers"]["timesteps"]):
            axis.plot(range(1, len(rows) + 1), [r["relative_error"][j] for r in rows],
                      marker=".", label=f"{key}, T={t}")
    axis.set_yscale("log")
    axis.set_xlabel("neuron layer (depth)")
    axis.set_ylabel("E|SNN rate - ANN activation| / E|ANN activation|")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


# ----------------------------------------------------------------------------- main


def _timesteps(text: str) -> list[int]:
    from snncompiler.evaluate import parse_timesteps

    return parse_timesteps(text)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="efficientnet_lite0",
                        help="Comma list of models in --data (or 'demo').")
    parser.add_argument("--timesteps", type=_timesteps, default=list(DEFAULT_TIMESTEPS))
    parser.add_argument("--limit", type=int, default=None, help="Use the first N test views.")
    parser.add_argument("--calib-limit", type=int, default=128,
                        help="Calibration views the compiler sees (the first N).")
    parser.add_argument("--second-stage-samples", type=int, default=32,
                        help="Calibration views the second stage simulates (half fit, half "
                             "check): most of the compile time on these networks.")
    parser.add_argument("--layer-limit", type=int, default=16,
                        help="Test views for the per-layer errors.")
    parser.add_argument("--layer-timesteps", type=_timesteps, default=[8, max(DEFAULT_TIMESTEPS)],
                        help="T of the per-layer errors (those among --timesteps).")
    parser.add_argument("--variant", default=DEFAULT_VARIANT,
                        help="Name of this configuration in the results.")
    parser.add_argument("--compile-args", default="",
                        help='Extra snnc options, e.g. --compile-args="--no-second-stage".')
    parser.add_argument("--batch", type=int, default=16, help="Views simulated at once.")
    parser.add_argument("--max-memory", type=float, default=2.0,
                        help="GiB a simulation may use (as snnc eval --max-memory).")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--work", default=str(REPO / "out" / "deep_fidelity"),
                        help="Folder for the compiled .snn files.")
    parser.add_argument("--out", default=str(RESULTS / "deep_fidelity.json"))
    parser.add_argument("--report", action="store_true",
                        help="Also write the Markdown report and the plot from --out.")
    parser.add_argument("--report-only", action="store_true",
                        help="Only write the report from --out; run nothing.")
    args = parser.parse_args(argv)
    extra = shlex.split(args.compile_args)
    clash = [a for a in extra if a.split("=", 1)[0] in _OWN_FLAGS]
    if clash:
        parser.error(f"--compile-args may not set {clash}: the harness sets them")
    if args.variant == DEFAULT_VARIANT and extra:
        parser.error("--compile-args changes the conversion: name it with --variant")
    args.max_memory_bytes = int(args.max_memory * 2**30)
    return args, extra


def main(argv=None) -> None:
    args, extra = parse_args(argv)
    out = Path(args.out)
    if not args.report_only:
        found = json.loads(out.read_text()) if out.exists() else {"results": {}}
        manifest = Path(args.data) / "manifest.json"
        if manifest.exists():
            found["data"] = json.loads(manifest.read_text())
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            record = run_model(model, args, extra)
            key = model if args.variant == DEFAULT_VARIANT else f"{model}:{args.variant}"
            found["results"][key] = record
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(found, indent=1) + "\n")  # after each model
            print("wrote", out, flush=True)
    if args.report or args.report_only:
        print("wrote", write_report(out))


if __name__ == "__main__":
    main()
