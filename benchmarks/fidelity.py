"""Accuracy against T of DNISNM and its ablations, next to the ANN (issue 3).

From a fresh clone (Debian, Python 3.11)::

    apt-get install dataset-fashion-mnist              # the idx files, in /usr/share/datasets
    python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/pip install matplotlib
    .venv/bin/python benchmarks/fidelity.py            # ours: docs/results/fidelity.json
    .venv-torch/bin/python benchmarks/peers/spikingjelly_ann2snn.py   # peer (see its header)
    .venv/bin/python benchmarks/fidelity.py --report   # docs/results/fidelity.md and .png

matplotlib only draws the plot; it is not a dependency of the project. Without it the
Markdown is still written.

What it measures, on each benchmark ANN of ``benchmarks/models/models.json``: every variant
of :data:`VARIANTS` is compiled once, calibrated for every T of the grid at once (one row of
neuron parameters per T, from one pass of statistics), and evaluated at each T with that T's
own row (:func:`snncompiler.evaluate.evaluate`). Calibration: ``--calib`` images drawn from
the TRAIN split with a fixed seed; test: the first ``--limit`` images of the TEST split
(all 10,000 by default). Accuracy is top-1; agreement is top-1 agreement with the ANN.

``--backend torch`` runs the compiled programs with ``benchmarks/snn_torch.py`` (the same
semantics in PyTorch, several times faster on a small CPU); ``--check N`` then also runs the
project's engine on N test images and records how often the two agree.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODELS_JSON = REPO / "benchmarks" / "models" / "models.json"
RESULTS = REPO / "docs" / "results"
GRID = (1, 2, 4, 8, 16, 32, 64, 128)
# Threshold candidates of DNI: percentiles of each channel's positive activations.
PERCENTILE_GRID = (90.0, 95.0, 97.0, 98.0, 99.0, 99.5, 99.7, 99.9, 99.95, 99.99, 100.0)
NARROW_GRID = (99.0, 99.5, 99.9, 99.95, 99.99, 100.0)

# name -> (label, CompileConfig options). Every option that the ablation is about is spelled
# out, so the numbers do not move when the compiler's defaults do.
_DNI = dict(theta_neg="zero", initial_potential="dni", threshold_search=True,
            threshold_percentiles=PERCENTILE_GRID, granularity="channel", max_spikes_per_step=1)
VARIANTS: dict[str, tuple[str, dict]] = {
    "if": ("IF neuron, 99.9% thresholds, v0 = 0 (classic baseline)",
           dict(theta_neg="off", initial_potential="zero", threshold_search=False,
                threshold_percentiles=(99.9,), second_stage=False)),
    "snm": ("SNM alone: max thresholds, v0 = 0, theta_neg = -theta (authors' code)",
            dict(theta_neg="minus_theta", initial_potential="zero", threshold_search=False,
                 threshold_percentiles=(100.0,), second_stage=False)),
    "snm_half": ("SNM, max thresholds, v0 = theta/2, theta_neg = -theta",
                 dict(theta_neg="minus_theta", initial_potential="half", threshold_search=False,
                      threshold_percentiles=(100.0,), second_stage=False)),
    "dni": ("SNM with DNI (theta_neg = 0)", dict(**_DNI, second_stage=False)),
    "dni_ss": ("SNM with DNI + second stage", dict(**_DNI, second_stage=True)),
}
# The neuron ablation: one change at a time from "dni_narrow" (DNI with the threshold grid
# the compiler had before this benchmark), as measured for docs/results/fidelity.md.
_NARROW = dict(_DNI, threshold_percentiles=NARROW_GRID, second_stage=False)
ABLATION: dict[str, tuple[str, dict]] = {
    "dni_narrow": ("DNI, thresholds among percentiles 99 to 100 only", _NARROW),
    "dni_minus_theta": ("DNI (99-100), theta_neg = -theta", dict(_NARROW, theta_neg="minus_theta")),
    "dni_layer": ("DNI (99-100), one threshold per layer", dict(_NARROW, granularity="layer")),
    "dni_burst2": ("DNI (99-100), bursts of up to 2 spikes per step",
                   dict(_NARROW, max_spikes_per_step=2)),
    "dni_burst4": ("DNI (99-100), bursts of up to 4 spikes per step",
                   dict(_NARROW, max_spikes_per_step=4)),
    "dni_ss_spiking_readout": ("DNI + second stage, spiking readout (ON/OFF SNM pair per logit)",
                               dict(_DNI, second_stage=True, spiking_readout=True)),
}
ALL_VARIANTS = {**VARIANTS, **ABLATION}


# ----------------------------------------------------------------------------- data


def model_entries(names: list[str]) -> dict[str, dict]:
    """``models.json`` entries by name, with the ONNX path made absolute."""
    entries = json.loads(MODELS_JSON.read_text())
    missing = [n for n in names if n not in entries]
    if missing:
        sys.exit(f"no entry {missing} in {MODELS_JSON}; train them with "
                 "benchmarks/train_fashion_mnist.py")
    return {n: {**entries[n], "path": REPO / entries[n]["onnx"]} for n in names}


def preprocess(images: np.ndarray, spec: dict) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), as the models were trained."""
    p = spec["preprocessing"]
    x = images.astype(np.float32) * np.float32(p["scale"])
    return ((x - np.float32(p["mean"])) / np.float32(p["std"]))[:, None]


def load_data(calib: int, seed: int, limit: int | None):
    """``(calib_images, test_images, test_labels)`` as uint8; calibration from TRAIN."""
    from snncompiler.datasets import load_fashion_mnist

    x_train, _ = load_fashion_mnist("train")
    pick = np.random.default_rng(seed).choice(len(x_train), calib, replace=False)
    x_test, y_test = load_fashion_mnist("test")
    return x_train[pick], x_test[:limit], y_test[:limit]


def machine() -> dict:
    import numba
    import onnxruntime

    import snncompiler

    return {"platform": platform.platform(), "processor": platform.processor(),
            "python": platform.python_version(), "cpus": _cpus(),
            "snncompiler": snncompiler.__version__, "numpy": np.__version__,
            "numba": numba.__version__, "onnxruntime": onnxruntime.__version__}


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# ----------------------------------------------------------------------------- runs


def run_model(name: str, spec: dict, data, variants: list[str], grid: tuple[int, ...],
              backend: str, check: int) -> dict:
    from snncompiler import frontend
    from snncompiler.context import CompileConfig
    from snncompiler.evaluate import evaluate
    from snncompiler.npz import Dataset
    from snncompiler.pipeline import compile_model
    from snncompiler.runtime.engine import SpikingNetwork

    calib_u8, test_u8, labels = data
    calibration = Dataset(preprocess(calib_u8, spec), None, "train sample")
    test = Dataset(preprocess(test_u8, spec), labels, "test")
    session = frontend.ort_session(frontend.load_model(spec["path"]))
    feed = session.get_inputs()[0].name
    logits = np.concatenate([session.run(None, {feed: test.x[i:i + 500]})[0]
                             for i in range(0, len(test), 500)])
    ann_top1 = logits.argmax(axis=1)
    out = {"ann_accuracy": float((ann_top1 == labels).mean()), "variants": {}}
    print(f"{name}: ANN {100 * out['ann_accuracy']:.2f}% on {len(test)} test images", flush=True)
    for variant in variants:
        label, options = ALL_VARIANTS[variant]
        start = time.perf_counter()
        compile_options = {k: v for k, v in options.items() if k != "spiking_readout"}
        config = CompileConfig(timesteps=tuple(grid), progress=False, **compile_options)
        program = compile_model(spec["path"], calibration, config).program
        if options.get("spiking_readout"):
            calib_logits = session.run(None, {feed: calibration.x})[0]
            spiking_readout(program, calib_logits)
        compiled = time.perf_counter() - start
        if backend == "engine":
            result = evaluate(SpikingNetwork(program), test, grid, progress=False,
                              ann=lambda x: session.run(None, {feed: x})[0])
            accuracy, agreement, predictions = result.snn_accuracy, result.agreement, None
        else:
            accuracy, predictions = _torch_eval(program, test.x, labels, grid)
            agreement = [float((p == ann_top1).mean()) for p in predictions]
        entry = {"label": label, "options": {k: list(v) if isinstance(v, tuple) else v
                                             for k, v in options.items()},
                 "accuracy": accuracy, "compile_seconds": compiled,
                 "agreement": agreement,
                 "eval_seconds": time.perf_counter() - start - compiled}
        if predictions is not None and check:
            entry["engine_check"] = _engine_check(program, test.x[:check], predictions, grid)
        out["variants"][variant] = entry
        print(f"  {variant:16s} " + " ".join(f"{100 * a:6.2f}" for a in accuracy)
              + f"   ({compiled:.0f} s + {entry['eval_seconds']:.0f} s)", flush=True)
    return out


def spiking_readout(program, logits: np.ndarray) -> None:
    """Makes the output layer spike, without any runtime change (an ablation, not a feature).

    Logits are signed and an SNM only sends what is above 0, so each logit ``z`` gets two
    neurons: ON integrates ``z``, OFF integrates ``-z``, and the readout is their running
    spike sum ``ON - OFF`` (``relu(z) - relu(-z) = z``). Thresholds: the largest ``|z|`` of
    each class on the calibration data; ``v0 = theta / 2``. The readout is then a multiple
    of ``theta / t``: at small T many logits tie, and the argmax takes the first of them.
    """
    from snncompiler.runtime.graph import Node, TensorSpec

    out = program.outputs[0]
    theta = np.maximum(np.abs(logits).max(axis=0), 1e-6).astype(np.float32)
    theta = np.ascontiguousarray(np.broadcast_to(theta, (len(program.timesteps), len(theta))))
    params = {"theta": theta, "v0": theta / 2}
    attrs = {"theta_neg": "zero", "max_spikes_per_step": 1}
    negate = {"scale": np.float32(-1.0) * np.ones((), np.float32),
              "shift": np.zeros((), np.float32)}
    name, shape = out.name, tuple(out.shape)
    program.nodes += [
        Node("readout_on", "snm", (name,), f"{name}.on", attrs, dict(params), shape),
        Node("readout_flip", "affine", (name,), f"{name}.flip", {}, dict(negate), shape),
        Node("readout_off", "snm", (f"{name}.flip",), f"{name}.off", attrs, dict(params), shape),
        Node("readout_off_neg", "affine", (f"{name}.off",), f"{name}.offneg", {}, dict(negate),
             shape),
        Node("readout", "add", (f"{name}.on", f"{name}.offneg"), f"{name}.spiking", {}, {},
             shape),
    ]
    program.outputs = [TensorSpec(f"{name}.spiking", shape)]


def _torch_eval(program, x, labels, grid, batch: int = 1000):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from snn_torch import TorchNetwork

    net = TorchNetwork(program)
    predictions = [np.empty(len(x), dtype=np.int64) for _ in grid]
    for first in range(0, len(x), batch):
        part = x[first:first + batch]
        for i, t in enumerate(grid):
            predictions[i][first:first + len(part)] = net.run(part, t)[t].argmax(axis=1)
    return [float((p == labels).mean()) for p in predictions], predictions


def _engine_check(program, x, predictions, grid) -> dict:
    """How often the project's engine and the torch twin predict the same class."""
    from snncompiler.runtime.engine import SpikingNetwork

    net = SpikingNetwork(program)
    same = np.zeros(len(grid))
    for first in range(0, len(x), 100):
        part = x[first:first + 100]
        for i, t in enumerate(grid):
            top1 = net.run(part, t, parameters_for=t)[t - 1].argmax(axis=1)
            same[i] += (top1 == predictions[i][first:first + len(part)]).sum()
    return {"images": len(x), "same_prediction": [float(v / len(x)) for v in same]}


# ----------------------------------------------------------------------------- report


def write_report(ours: dict, peers: dict | None, path_md: Path, path_png: Path) -> None:
    grid = ours["timesteps"]
    lines = ["<!-- written by benchmarks/fidelity.py --report; the discussion is in "
             "fidelity.md -->", ""]
    for name, model in ours["models"].items():
        ann = model["ann_accuracy"]
        lines += [f"### {name}: ANN {100 * ann:.2f}%", "",
                  "| variant | " + " | ".join(f"T={t}" for t in grid) + " |",
                  "|---|" + "---:|" * len(grid)]
        rows = [(v["label"], v["accuracy"]) for v in model["variants"].values()]
        for mode, values in (peers or {}).get("models", {}).get(name, {}).get("modes",
                                                                            {}).items():
            rows.append((f"SpikingJelly ann2snn, mode {mode}",
                         [values["accuracy"].get(str(t)) for t in grid]))
        for label, accuracy in rows:
            cells = ["-" if a is None else f"{100 * a:.2f}" for a in accuracy]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    path_md.write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    models = ours["models"]
    # Top row: the whole range (the baselines start near chance); bottom row: near the ANN.
    fig, axes = plt.subplots(2, len(models), figsize=(6.5 * len(models), 8.4), squeeze=False)
    for column, (name, model) in enumerate(models.items()):
        ann = 100 * model["ann_accuracy"]
        for row, low in ((0, 0.0), (1, ann - 6)):
            ax = axes[row][column]
            for key, v in model["variants"].items():
                style = "-o" if key in ("dni", "dni_ss") else "--."
                ax.plot(grid, [np.nan if a is None else 100 * a for a in v["accuracy"]], style,
                        label=v["label"], ms=4)
            for mode, values in (peers or {}).get("models", {}).get(name, {}).get(
                    "modes", {}).items():
                acc = [values["accuracy"].get(str(t)) for t in grid]
                ax.plot(grid, [np.nan if a is None else 100 * a for a in acc], ":s", ms=3,
                        label=f"SpikingJelly ann2snn ({mode})")
            ax.axhline(ann, color="k", lw=0.8, label="ANN")
            ax.set_xscale("log", base=2)
            ax.set_xticks(grid, [str(t) for t in grid])
            ax.set_ylim(low, 100 if row == 0 else ann + 1)
            ax.set_xlabel("timesteps T")
            ax.set_ylabel("top-1 accuracy (%)")
            ax.set_title(f"Fashion-MNIST {name}" + (" (near the ANN)" if row else ""))
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path_png, dpi=110)
    print(f"wrote {path_png}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg,resnet")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma list of {', '.join(ALL_VARIANTS)}")
    parser.add_argument("--timesteps", default=",".join(map(str, GRID)))
    parser.add_argument("--calib", type=int, default=512, help="calibration images (train)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="first N test images")
    parser.add_argument("--backend", choices=("engine", "torch"), default="engine")
    parser.add_argument("--check", type=int, default=0,
                        help="with --backend torch: also run the engine on N images")
    parser.add_argument("--out", type=Path, default=RESULTS / "fidelity.json")
    parser.add_argument("--report", action="store_true",
                        help="only write the .md and .png from the JSON results")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    peers_path = args.out.parent / "spikingjelly.json"
    if not args.report:
        grid = tuple(int(t) for t in args.timesteps.split(","))
        names = args.models.split(",")
        specs = model_entries(names)
        data = load_data(args.calib, args.seed, args.limit)
        results = {"timesteps": list(grid), "calibration": {"images": args.calib,
                   "seed": args.seed, "split": "train"},
                   "test": {"images": len(data[2]), "split": "test (first N)"},
                   "backend": args.backend, "machine": machine(), "models": {}}
        if args.out.exists():  # keep other models' results when rerunning some
            previous = json.loads(args.out.read_text())
            if previous.get("timesteps") == list(grid):
                results["models"] = previous.get("models", {})
        for name in names:
            model = run_model(name, specs[name], data, args.variants.split(","), grid,
                              args.backend, args.check)
            kept = results["models"].get(name, {}).get("variants", {})
            model["variants"] = {**kept, **model["variants"]}
            results["models"][name] = model
            args.out.write_text(json.dumps(results, indent=1) + "\n")
    ours = json.loads(args.out.read_text())
    peers = json.loads(peers_path.read_text()) if peers_path.exists() else None
    write_report(ours, peers, args.out.with_name("fidelity_tables.md"),
                 args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
