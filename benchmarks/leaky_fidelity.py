"""Leaky neurons and the second stage: the Fashion-MNIST ANNs with LeakyRelu for ReLU.

    .venv/bin/python benchmarks/leaky_fidelity.py [--models vgg,resnet] [--alpha 0.1]
        [--timesteps 2,4,8,16] [--calib 512] [--limit 2000]
        [--out docs/results/leaky_fidelity.json]

No leaky ANN ships with the repo, so this makes one: every Relu of a benchmark ANN
(``benchmarks/models/models.json``) becomes ``LeakyRelu(alpha)``, the weights untouched.
That is another ANN (its accuracy is printed), and onnxruntime's outputs of that ANN are
the reference, as for every conversion. Each is compiled with the compiler's defaults and
with single spikes (``max_spikes_per_step=1, resolution=1``, where the second stage has
most to correct), each with and without the second stage, calibrated on ``--calib``
training images, and run on the first ``--limit`` test images at every T with that T's
parameters. Writes the JSON and a Markdown table next to it (gap to the ANN in points,
top-1 agreement, what the second stage kept).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

try:  # imported as benchmarks.leaky_fidelity (the tests)
    from benchmarks.fidelity import RESULTS, load_data, machine, model_entries, preprocess
except ImportError:  # run as a script: its folder is on the path
    from fidelity import RESULTS, load_data, machine, model_entries, preprocess

VARIANTS = {
    "default": {},
    "default_no_ss": {"second_stage": False},
    "single": {"max_spikes_per_step": 1, "resolution": 1},
    "single_no_ss": {"max_spikes_per_step": 1, "resolution": 1, "second_stage": False},
}


def leaky_model(path: Path, alpha: float) -> onnx.ModelProto:
    """The ONNX model at ``path`` with every Relu replaced by ``LeakyRelu(alpha)``."""
    model = onnx.load(str(path))
    swapped = 0
    for node in model.graph.node:
        if node.op_type == "Relu":
            node.op_type = "LeakyRelu"
            node.attribute.append(onnx.helper.make_attribute("alpha", float(alpha)))
            swapped += 1
    if not swapped:
        sys.exit(f"{path}: no Relu to replace")
    onnx.checker.check_model(model)
    return model


def run_model(name: str, spec: dict, data, alpha: float, grid: list[int]) -> dict:
    from snncompiler import frontend
    from snncompiler.context import CompileConfig
    from snncompiler.evaluate import evaluate
    from snncompiler.npz import Dataset
    from snncompiler.pipeline import compile_model
    from snncompiler.runtime.engine import SpikingNetwork

    calib_u8, test_u8, labels = data
    calibration = Dataset(preprocess(calib_u8, spec), None, "train sample")
    test = Dataset(preprocess(test_u8, spec), labels, "test")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{name}_leaky.onnx"
        onnx.save(leaky_model(spec["path"], alpha), path)
        session = frontend.ort_session(frontend.load_model(path))
        feed = session.get_inputs()[0].name

        def ann(x):
            return session.run(None, {feed: x})[0]

        logits = np.concatenate([ann(test.x[i:i + 500]) for i in range(0, len(test), 500)])
        out = {"ann_accuracy": float((logits.argmax(axis=1) == labels).mean()), "variants": {}}
        print(f"{name} with LeakyRelu({alpha}): ANN {100 * out['ann_accuracy']:.2f}%",
              flush=True)
        for variant, options in VARIANTS.items():
            start = time.perf_counter()
            config = CompileConfig(timesteps=tuple(grid), progress=False, **options)
            program = compile_model(path, calibration, config).program
            compiled = time.perf_counter() - start
            ops = sorted({n.op for n in program.neuron_nodes()})
            result = evaluate(SpikingNetwork(program), test, grid, progress=False, ann=ann)
            stage = (program.calibration or {}).get("second_stage") or {}
            out["variants"][variant] = {
                "options": options, "neurons": ops, "accuracy": result.snn_accuracy,
                "agreement": result.agreement, "synaptic_ops": result.synaptic_ops,
                "second_stage": stage.get("checked"), "compile_seconds": compiled}
            print(f"  {variant:14s} {ops} " + " ".join(
                f"{100 * a:6.2f}" for a in result.snn_accuracy) + f"  ({compiled:.0f} s)",
                flush=True)
    return out


def write_report(results: dict, path: Path) -> None:
    grid = results["timesteps"]
    lines = [
        "# Leaky neurons and the second stage",
        "",
        f"Written by `benchmarks/leaky_fidelity.py`: the Fashion-MNIST ANNs of "
        f"`benchmarks/models/` with every Relu replaced by LeakyRelu({results['alpha']}) "
        "(another ANN, weights untouched; onnxruntime's outputs of it are the reference), "
        f"calibrated on {results['calibration']['images']} training images, tested on the "
        f"first {results['test']['images']} test images. Machine: "
        f"{results['machine']['platform']}, {results['machine']['cpus']} CPUs.",
        "",
        "Gap to the ANN in points of top-1 accuracy (top-1 agreement with the ANN):",
        "",
        "| ANN | variant | " + " | ".join(f"T={t}" for t in grid) + " |",
        "|---|---|" + "---:|" * len(grid),
    ]
    for name, model in results["models"].items():
        ann = model["ann_accuracy"]
        for variant, v in model["variants"].items():
            cells = [f"{100 * (ann - a):.2f} ({100 * g:.1f}%)"
                     for a, g in zip(v["accuracy"], v["agreement"])]
            lines.append(f"| {name} ({100 * ann:.2f}%) | {variant} | " + " | ".join(cells)
                         + " |")
    lines += ["", "What the second stage kept, per T (held-out check):", ""]
    for name, model in results["models"].items():
        for variant, v in model["variants"].items():
            if v["second_stage"]:
                lines.append(f"- {name}, {variant}: " + "; ".join(v["second_stage"]))
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg,resnet")
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--timesteps", default="2,4,8,16")
    parser.add_argument("--calib", type=int, default=512, help="calibration images (train)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=2000, help="first N test images")
    parser.add_argument("--out", type=Path, default=RESULTS / "leaky_fidelity.json")
    args = parser.parse_args()
    grid = [int(t) for t in args.timesteps.split(",")]
    names = args.models.split(",")
    specs = model_entries(names)
    data = load_data(args.calib, args.seed, args.limit)
    results = {"alpha": args.alpha, "timesteps": grid,
               "calibration": {"images": args.calib, "seed": args.seed, "split": "train"},
               "test": {"images": len(data[2]), "split": "test (first N)"},
               "machine": machine(), "models": {}}
    for name in names:
        results["models"][name] = run_model(name, specs[name], data, args.alpha, grid)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    write_report(results, args.out.with_suffix(".md"))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
