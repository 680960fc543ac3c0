"""Accuracy against T of DNISNM and its ablations, next to the ANN and the peer (issue 3).

One command from a fresh clone (Debian, Python 3.11; about 1.5 hours on 2 cores)::

    make fidelity

It installs what it needs (``.venv`` with matplotlib; ``.venv-torch`` with the pinned CPU
torch and SpikingJelly for the peer; Debian's ``dataset-fashion-mnist`` must be installed)
and runs, in order::

    .venv/bin/python benchmarks/fidelity.py                   # docs/results/fidelity_10k.json
    .venv-torch/bin/python benchmarks/peers/spikingjelly_ann2snn.py --timesteps 1,2,4,8,16,32,64
    .venv/bin/python benchmarks/fidelity.py --models demo ... # fidelity_neurons.json
    .venv/bin/python benchmarks/fidelity.py --report          # fidelity_tables.md, fidelity.png

The first run is every variant of :data:`VARIANTS` (the compiler's default, DNI + second
stage, and the ablation of issue 3) on both ANNs and all 10,000 test images, T = 1 ... 128;
the second is SpikingJelly on the same images; the third is the neuron ablation on the demo
CNN (one change at a time from DNI with the old threshold grid, 2,000 test images, T = 4,
8, 32; the Makefile has its full arguments). ``--report`` only reads the JSON files.
matplotlib only draws the plot; without it the Markdown is still written.

What it measures, on each benchmark ANN of ``benchmarks/models/models.json``: each variant
is compiled once, calibrated for every T of the grid at once (one row of neuron parameters
per T, from one pass of statistics; one row only when the variant's parameters do not
depend on T, see :func:`depends_on_t`), and evaluated at each T with that T's own row by the
project's engine (:func:`snncompiler.evaluate.evaluate`). Calibration: ``--calib`` images
drawn from the TRAIN split with a fixed seed; test: the first ``--limit`` images of the TEST
split (all 10,000 by default). Accuracy is top-1; agreement is top-1 agreement with the ANN.
"""

from __future__ import annotations

import argparse
import json
import os
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

_SINGLE = dict(max_spikes_per_step=1, resolution=1)  # the paper's neuron: one spike a step
# name -> (label, CompileConfig options). Every option that the ablation is about is spelled
# out, so the numbers do not move when the compiler's defaults do.
_DNI = dict(theta_neg="zero", initial_potential="dni", threshold_search=True,
            threshold_percentiles=PERCENTILE_GRID, granularity="channel", **_SINGLE)
# Bursts where a target T is below 16 levels (up to 4 spikes per step), thresholds chosen
# for them.
_BURSTS = dict(_DNI, max_spikes_per_step=4, resolution=16)
VARIANTS: dict[str, tuple[str, dict]] = {
    "if": ("IF neuron, 99.9% thresholds, v0 = 0 (classic baseline)",
           dict(_SINGLE, theta_neg="off", initial_potential="zero", threshold_search=False,
                threshold_percentiles=(99.9,), second_stage=False)),
    "snm": ("SNM alone: max thresholds, v0 = 0, theta_neg = -theta (authors' code)",
            dict(_SINGLE, theta_neg="minus_theta", initial_potential="zero",
                 threshold_search=False, threshold_percentiles=(100.0,), second_stage=False)),
    "snm_half": ("SNM, max thresholds, v0 = theta/2, theta_neg = -theta",
                 dict(_SINGLE, theta_neg="minus_theta", initial_potential="half",
                      threshold_search=False, threshold_percentiles=(100.0,),
                      second_stage=False)),
    "dni": ("SNM with DNI (theta_neg = 0)", dict(**_DNI, second_stage=False)),
    "dni_ss": ("SNM with DNI + second stage", dict(**_DNI, second_stage=True)),
}
# Low T: graded spikes and the checked second stage (the compiler's defaults since they
# were measured here), against single spikes.
LOW_T: dict[str, tuple[str, dict]] = {
    "bursts": ("DNI, bursts for 16 levels", dict(_BURSTS, second_stage=False)),
    "bursts_ss": ("DNI, bursts for 16 levels (up to 4 a step) + second stage",
                  dict(_BURSTS, second_stage=True)),
    "bursts8_ss": ("DNI, bursts for 8 levels + second stage",
                   dict(_BURSTS, resolution=8, second_stage=True)),
    # Room to catch up: the same thresholds, up to 64 spikes a step (see the compiler's
    # CompileConfig.burst_size), for 16 and for 64 levels.
    "catchup_ss": ("DNI, thresholds for 16 levels, up to 64 spikes a step + second stage",
                   dict(_BURSTS, max_spikes_per_step=64, second_stage=True)),
    "catchup64_ss": ("DNI, thresholds for 64 levels, up to 64 spikes a step + second stage",
                     dict(_BURSTS, max_spikes_per_step=64, resolution=64, second_stage=True)),
    "auto_ss": ("DNI, levels chosen per T (16 to 1024), up to 1024 spikes a step + second "
                "stage (default)",
                dict(_DNI, max_spikes_per_step=1024, resolution=None, level_search="network",
                     second_stage=True)),
    "auto_layer_ss": ("DNI, levels chosen per T and then per layer (4 to 1024), up to 1024 "
                      "spikes a step + second stage (--level-search layer)",
                      dict(_DNI, max_spikes_per_step=1024, resolution=None,
                           level_search="layer", second_stage=True)),
    # The same under the previous cap of 128, which allowed at most 32 * T levels.
    "auto128_ss": ("DNI, levels chosen per T (16 to 1024), up to 128 spikes a step + second "
                   "stage (the previous default)",
                   dict(_DNI, max_spikes_per_step=128, resolution=None,
                        level_search="network", second_stage=True)),
    "auto128_layer_ss": ("DNI, levels chosen per T and then per layer (4 to 1024), up to 128 "
                         "spikes a step + second stage",
                         dict(_DNI, max_spikes_per_step=128, resolution=None,
                              level_search="layer", second_stage=True)),
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
ALL_VARIANTS = {**VARIANTS, **LOW_T, **ABLATION}


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
    from snncompiler.machine import cpu_name, usable_cpus

    return {"platform": platform.platform(), "cpu": cpu_name(),
            "python": platform.python_version(), "cpus": usable_cpus(),
            "snncompiler": snncompiler.__version__, "numpy": np.__version__,
            "numba": numba.__version__, "onnxruntime": onnxruntime.__version__}


# ----------------------------------------------------------------------------- runs


def run_model(name: str, spec: dict, data, variants: list[str], grid: tuple[int, ...]) -> dict:
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
    out = {"ann_accuracy": float((ann_top1 == labels).mean()), "variants": {},
           "load_average_start": list(os.getloadavg())}
    print(f"{name}: ANN {100 * out['ann_accuracy']:.2f}% on {len(test)} test images", flush=True)
    for variant in variants:
        label, options = ALL_VARIANTS[variant]
        start = time.perf_counter()
        compile_options = {k: v for k, v in options.items() if k != "spiking_readout"}
        # A variant whose parameters do not depend on T gets one parameter row, so that
        # evaluate() reads every T of the grid off a single run of max(grid) steps.
        calibrated = tuple(grid) if depends_on_t(options) else (max(grid),)
        config = CompileConfig(timesteps=calibrated, progress=False, **compile_options)
        program = compile_model(spec["path"], calibration, config).program
        if options.get("spiking_readout"):
            calib_logits = session.run(None, {feed: calibration.x})[0]
            spiking_readout(program, calib_logits)
        compiled = time.perf_counter() - start
        result = evaluate(SpikingNetwork(program), test, grid, progress=False,
                          ann=lambda x: session.run(None, {feed: x})[0])
        entry = {"label": label, "options": {k: list(v) if isinstance(v, tuple) else v
                                             for k, v in options.items()},
                 "accuracy": result.snn_accuracy, "compile_seconds": compiled,
                 "agreement": result.agreement, "synaptic_ops": result.synaptic_ops,
                 "eval_seconds": time.perf_counter() - start - compiled}
        out["variants"][variant] = entry
        print(f"  {variant:16s} " + " ".join(f"{100 * a:6.2f}" for a in result.snn_accuracy)
              + f"   ({compiled:.0f} s + {entry['eval_seconds']:.0f} s)", flush=True)
    out["load_average_end"] = list(os.getloadavg())
    return out


def depends_on_t(options: dict) -> bool:
    """Whether a variant's neuron parameters change with the T they are calibrated for.

    Fixed-percentile thresholds with a zero or half-threshold start are the same at every
    T; the threshold search, the DNI start and the second stage all look at T.
    """
    return bool(options.get("threshold_search") or options.get("initial_potential") == "dni"
                or options.get("second_stage"))


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


# ----------------------------------------------------------------------------- report


# Issue 3: the largest gap to the ANN's top-1 allowed at these T, in points.
TARGET_GAPS = {4: 3.0, 8: 1.0, 32: 0.2}
# ... and the peer must be beaten at every T up to this one.
PEER_HORIZON = 64
DEFAULT_VARIANT = "dni_ss"
RESULTS_FILE = "fidelity_10k.json"  # the default run: every variant, all 10,000 test images


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _cells(values, fmt="{:.2f}") -> list[str]:
    return ["-" if v is None else fmt.format(v) for v in values]


def _percent(fractions) -> list[float | None]:
    return [None if f is None else 100 * f for f in fractions]


def _peer_rows(peers: dict | None, name: str, grid: list[int]) -> dict[str, list]:
    modes = (peers or {}).get("models", {}).get(name, {}).get("modes", {})
    return {mode: [None if values["accuracy"].get(str(t)) is None
                   else 100 * values["accuracy"][str(t)] for t in grid]
            for mode, values in modes.items()}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
            + ["| " + " | ".join(row) + " |" for row in rows] + [""])


def gap_verdict(name: str, t: int, gap: float, limit: float) -> str:
    """One verdict line: the gap to the ANN in points against its target. Accuracies are
    whole images, so the float residue of the difference is rounded away first (0.1 + 1e-15
    is a gap of 10 images of 10,000, as shown)."""
    gap = round(gap, 6)
    return (f"{name} T={t}: gap {gap:.2f} (target <= {limit}): "
            + ("met" if gap <= limit else f"missed by {gap - limit:.2f}"))


def targets_section(full: dict, peers: dict | None) -> list[str]:
    """The default variant on the full test set against the targets and against the peer."""
    grid = full["timesteps"]
    n_peer = (peers or {}).get("test", {}).get("images")
    lines = [f"## Targets: the default on {full['test']['images']:,} test images", ""]
    if peers is None:
        lines += ["SpikingJelly: no results (run benchmarks/peers/spikingjelly_ann2snn.py).", ""]
    elif n_peer != full["test"]["images"]:
        # Differences between accuracies on different images would mean little.
        lines += [f"SpikingJelly's results are for {n_peer} test images, not these: not "
                  "compared (rerun benchmarks/peers/spikingjelly_ann2snn.py).", ""]
        peers = None
    verdicts = []
    for name, model in full["models"].items():
        ann = 100 * model["ann_accuracy"]
        v = model["variants"][DEFAULT_VARIANT]
        ours = _percent(v["accuracy"])
        gaps = [ann - a for a in ours]
        peer = _peer_rows(peers, name, grid)
        best_peer = [max((r[i] for r in peer.values() if r[i] is not None), default=None)
                     for i in range(len(grid))]
        rows = [["ours: " + v["label"]] + _cells(ours),
                ["gap to the ANN (points)"] + _cells(gaps),
                ["target gap"] + [f"<= {TARGET_GAPS[t]}" if t in TARGET_GAPS else ""
                                  for t in grid],
                ["agreement with the ANN (%)"] + _cells(_percent(v["agreement"]))]
        rows += [[f"SpikingJelly ann2snn, mode {mode}"] + _cells(r) for mode, r in peer.items()]
        if peer:
            rows.append(["ours minus the better SpikingJelly mode"]
                        + _cells(None if b is None else o - b for o, b in zip(ours, best_peer)))
        lines += [f"### {name}: ANN {ann:.2f}%", ""]
        lines += _table(["", *(f"T={t}" for t in grid)], rows)
        for t, limit in TARGET_GAPS.items():
            if t in grid:
                verdicts.append(gap_verdict(name, t, gaps[grid.index(t)], limit))
        compared = [(t, o - b) for t, o, b in zip(grid, ours, best_peer)
                    if b is not None and t <= PEER_HORIZON]
        if compared:
            t_min, lead = min(compared, key=lambda c: c[1])
            verdicts.append(f"{name} against SpikingJelly at T = "
                            f"{', '.join(str(t) for t, _ in compared)}: "
                            + ("ahead at every T" if lead > 0 else "not ahead at every T")
                            + f", smallest lead {lead:.2f} points (T={t_min})")
    lines += ["Verdicts, computed from the tables:", ""] + [f"- {v}" for v in verdicts] + [""]
    return lines


def _in_order(model: dict) -> list[tuple[str, dict]]:
    """A model's variants in the order of :data:`ALL_VARIANTS`, whatever order they ran in."""
    return [(key, model["variants"][key]) for key in ALL_VARIANTS if key in model["variants"]]


def ablation_section(ablation: dict, title: str) -> list[str]:
    grid = ablation["timesteps"]
    lines = [f"## {title}, on {ablation['test']['images']:,} test images", ""]
    for name, model in ablation["models"].items():
        ann = 100 * model["ann_accuracy"]
        lines += [f"### {name}: ANN {ann:.2f}% on these images", "", "Accuracy (%):", ""]
        lines += _table(["variant", *(f"T={t}" for t in grid)],
                        [[v["label"]] + _cells(_percent(v["accuracy"]))
                         for _, v in _in_order(model)])
        lines += ["Top-1 agreement with the ANN (%):", ""]
        lines += _table(["variant", *(f"T={t}" for t in grid)],
                        [[v["label"]] + _cells(_percent(v["agreement"]))
                         for _, v in _in_order(model)])
    return lines


# Low T, on both benchmark ANNs: the largest gap to the ANN's top-1 allowed, in points, and
# the most synaptic operations allowed against the single-spike conversion at the same T.
LOW_T_GAPS = {2: 1.0, 4: 0.3, 8: 0.1}
LOW_T_OPS = 1.3
LOW_T_FILE = "fidelity_low_t.json"
LOW_T_DEFAULT, LOW_T_BASELINE = "auto_ss", "dni_ss"


def low_t_section(low: dict, full: dict | None) -> list[str]:
    """Gaps and synaptic operations of the low-T variants, with verdicts against the
    targets, and the default against the single-spike default of ``full`` (the run of the
    previous defaults, same images) at every T both have."""
    grid = low["timesteps"]
    lines = [f"## Low T: graded spikes and the checked second stage, on "
             f"{low['test']['images']:,} test images", ""]
    verdicts = []
    for name, model in low["models"].items():
        ann = 100 * model["ann_accuracy"]
        variants = dict(_in_order(model))
        base_ops = variants.get(LOW_T_BASELINE, {}).get("synaptic_ops")
        rows = []
        for key, v in variants.items():
            gaps = [ann - 100 * a for a in v["accuracy"]]
            ops = v.get("synaptic_ops") or [None] * len(grid)
            rows.append([v["label"], "gap"] + _cells(gaps))
            rows.append(["", "M synaptic ops / image"]
                        + _cells([None if o is None else o / 1e6 for o in ops], "{:.3f}"))
            if base_ops and key != LOW_T_BASELINE:
                rows.append(["", "ops / single-spike ops"] + _cells(
                    [None if o is None or b is None else o / b for o, b in zip(ops, base_ops)]))
        lines += [f"### {name}: ANN {ann:.2f}%", ""]
        lines += _table(["variant", "", *(f"T={t}" for t in grid)], rows)
        default = variants.get(LOW_T_DEFAULT)
        if default is None:
            continue
        for t, limit in LOW_T_GAPS.items():
            if t in grid:
                verdicts.append(gap_verdict(
                    name, t, ann - 100 * default["accuracy"][grid.index(t)], limit))
        if base_ops and default.get("synaptic_ops"):
            ratios = [o / b for o, b in zip(default["synaptic_ops"], base_ops)]
            worst = max(range(len(grid)), key=lambda i: ratios[i])
            verdicts.append(f"{name}: synaptic ops at most {ratios[worst]:.2f}x the single-spike "
                            f"conversion's (T={grid[worst]}; target <= {LOW_T_OPS}): "
                            + ("met" if ratios[worst] <= LOW_T_OPS else "missed"))
        old = (full or {}).get("models", {}).get(name, {}).get("variants", {}).get(
            LOW_T_BASELINE)
        if old and full["test"] == low["test"]:
            worse = [(t, 100 * (old["accuracy"][full["timesteps"].index(t)]
                                 - default["accuracy"][grid.index(t)]))
                     for t in grid if t in full["timesteps"]]
            lost = [(t, d) for t, d in worse if d > 0]
            verdicts.append(f"{name} against the previous default ({RESULTS_FILE}): "
                            + ("not worse at any T" if not lost else "worse at " + ", ".join(
                                f"T={t} by {d:.2f}" for t, d in lost)))
    lines += ["Verdicts, computed from the tables:", ""] + [f"- {v}" for v in verdicts] + [""]
    return lines


def plot_ops(low: dict, path: Path) -> None:
    """Accuracy against synaptic operations per image, one curve per variant (points are
    the T of the grid), next to accuracy against T."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    names, grid = list(low["models"]), low["timesteps"]
    fig, axes = plt.subplots(2, len(names), figsize=(6.5 * len(names), 9), squeeze=False)
    for column, name in enumerate(names):
        model = low["models"][name]
        ann = 100 * model["ann_accuracy"]
        for _, v in _in_order(model):
            accuracy = [100 * a for a in v["accuracy"]]
            axes[0][column].plot(grid, accuracy, "-o", ms=4, label=v["label"])
            if v.get("synaptic_ops"):
                axes[1][column].plot([o / 1e6 for o in v["synaptic_ops"]], accuracy, "-o", ms=4,
                                     label=v["label"])
                for t, o, a in zip(grid, v["synaptic_ops"], accuracy):
                    axes[1][column].annotate(f"T={t}", (o / 1e6, a), fontsize=6)
        for row, xlabel in ((0, "timesteps T"), (1, "synaptic operations per image (M)")):
            ax = axes[row][column]
            ax.axhline(ann, color="k", lw=0.8, label="ANN")
            ax.set_xscale("log", base=2)
            ax.set_ylim(ann - 6, ann + 1)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("top-1 accuracy (%)")
            ax.set_title(f"Fashion-MNIST {name}, {low['test']['images']:,} test images")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def write_report(results: Path) -> None:
    """``fidelity_tables.md`` and ``fidelity.png`` from the JSON files of the runs."""
    full = _read(results / RESULTS_FILE)
    peers = _read(results / "spikingjelly.json")
    lines = [f"<!-- written by benchmarks/fidelity.py --report from {RESULTS_FILE}, "
             f"fidelity_neurons.json, {LOW_T_FILE} and spikingjelly.json; the discussion is in "
             "fidelity.md "
             "-->", ""]
    if full:
        lines += targets_section(full, peers)
        lines += ablation_section(full, "Ablation: the variants of issue 3")
    low = _read(results / LOW_T_FILE)
    if low:
        lines += low_t_section(low, full)
    neurons = _read(results / "fidelity_neurons.json")
    if neurons:
        lines += ablation_section(neurons, "Neuron ablation: one change at a time")
    for data in (full, neurons):
        if data:
            m = data["machine"]
            cpu = f"{m['cpu']}, " if "cpu" in m else ""  # older files did not record it
            lines.append(f"Machine: {cpu}{m['platform']}, {m['cpus']} CPUs, Python {m['python']}, "
                         f"numpy {m['numpy']}, numba {m['numba']}, onnxruntime "
                         f"{m['onnxruntime']}, snncompiler {m['snncompiler']}.")
            break
    (results / "fidelity_tables.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {results / 'fidelity_tables.md'}")
    if full:
        plot(full, peers, results / "fidelity.png")
    if low:
        plot_ops(low, results / "fidelity_ops.png")


def plot(full: dict, peers: dict | None, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    names, grid, n = list(full["models"]), full["timesteps"], full["test"]["images"]
    # Row 1: the default against the peer; rows 2 and 3: every variant, over the whole range
    # (the baselines start near chance) and near the ANN.
    fig, axes = plt.subplots(3, len(names), figsize=(6.5 * len(names), 12), squeeze=False)
    for column, name in enumerate(names):
        model = full["models"][name]
        ann = 100 * model["ann_accuracy"]
        default = model["variants"][DEFAULT_VARIANT]
        against_peer = [(default["label"] + " (ours, default)", default["accuracy"], "-o")]
        against_peer += [(f"SpikingJelly ann2snn ({mode})",
                          [None if a is None else a / 100 for a in r], ":s")
                         for mode, r in _peer_rows(peers, name, grid).items()]
        variants = [(v["label"], v["accuracy"], "-o" if key.startswith("dni") else "--.")
                    for key, v in _in_order(model)]
        panels = [(0, against_peer, 0.0, f"{name}: {n:,} test images"),
                  (1, variants, 0.0, f"{name}: ablation, {n:,} test images"),
                  (2, variants, ann - 6, f"{name}: ablation, near the ANN")]
        for row, curves, low, title in panels:
            ax = axes[row][column]
            for label, accuracy, style in curves:
                ax.plot(grid, [np.nan if a is None else 100 * a for a in accuracy], style,
                        label=label, ms=4)
            ax.axhline(ann, color="k", lw=0.8, label="ANN")
            ax.set_xscale("log", base=2)
            ax.set_xticks(grid, [str(t) for t in grid])
            ax.set_ylim(low, 100 if low == 0 else ann + 1)
            ax.set_xlabel("timesteps T")
            ax.set_ylabel("top-1 accuracy (%)")
            ax.set_title(f"Fashion-MNIST {title}")
            ax.grid(alpha=0.3)
            if column == len(names) - 1:
                ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg,resnet")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma list of {', '.join(ALL_VARIANTS)}")
    parser.add_argument("--timesteps", default=",".join(map(str, GRID)))
    parser.add_argument("--calib", type=int, default=512, help="calibration images (train)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="first N test images")
    parser.add_argument("--out", type=Path, default=RESULTS / RESULTS_FILE)
    parser.add_argument("--report", action="store_true",
                        help="only write fidelity_tables.md and fidelity.png from the JSON "
                             "results in the folder of --out")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.report:
        grid = tuple(int(t) for t in args.timesteps.split(","))
        names = args.models.split(",")
        specs = model_entries(names)
        data = load_data(args.calib, args.seed, args.limit)
        results = {"timesteps": list(grid), "calibration": {"images": args.calib,
                   "seed": args.seed, "split": "train"},
                   "test": {"images": len(data[2]), "split": "test (first N)"},
                   "machine": machine(), "models": {}}
        if args.out.exists():  # keep other models' results when rerunning some
            previous = json.loads(args.out.read_text())
            if (previous.get("timesteps") == list(grid)
                    and previous.get("test") == results["test"]):
                results["models"] = previous.get("models", {})
        for name in names:
            model = run_model(name, specs[name], data, args.variants.split(","), grid)
            kept = results["models"].get(name, {}).get("variants", {})
            model["variants"] = {**kept, **model["variants"]}
            results["models"][name] = model
            args.out.write_text(json.dumps(results, indent=1) + "\n")
    write_report(args.out.parent)


if __name__ == "__main__":
    main()
