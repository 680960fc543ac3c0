"""Survey: do the topology-only models that ship inside the onnx package convert?

    .venv/bin/python tools/survey_light_models.py [--simulate squeezenet,resnet50]
        [--timesteps 8,32,128] [--samples 2] [--out docs/results/light_models.md]

``onnx/backend/test/data/light/`` holds ResNet-50, VGG-19, DenseNet-121, Inception v1/v2,
SqueezeNet, ShuffleNet, AlexNet and ZFNet-512 with their weights replaced by
``ConstantOfShape`` fills (every weight 0.02): the topology is real, the weights mean
nothing. For each model this reports whether it converts (``snnc inspect``'s dry run: the
whole pipeline with placeholder neurons, then lowering), and for each node that does not,
the reason. Where every missing op has an analog form, it also reports the verdict with
``--allow-analog``. Models named in ``--simulate`` are also compiled (calibrated on random
images) and simulated, and the SNN's output is compared with onnxruntime's on those images;
that is slow at 224 x 224, so it is opt-in.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from snncompiler import frontend
from snncompiler.context import CompileConfig
from snncompiler.errors import SnnError
from snncompiler.inspect import conversion_rows
from snncompiler.lowering import ANALOG_OPS
from snncompiler.npz import Dataset
from snncompiler.pipeline import compile_model
from snncompiler.runtime.engine import SpikingNetwork

MODELS = {
    "resnet50": ("light_resnet50.onnx", "ResNet-50"),
    "vgg19": ("light_vgg19.onnx", "VGG-19"),
    "densenet121": ("light_densenet121.onnx", "DenseNet-121"),
    "inception_v1": ("light_inception_v1.onnx", "Inception v1 (GoogLeNet)"),
    "inception_v2": ("light_inception_v2.onnx", "Inception v2 (BN-Inception)"),
    "squeezenet": ("light_squeezenet.onnx", "SqueezeNet 1.0"),
    "shufflenet": ("light_shufflenet.onnx", "ShuffleNet"),
    "alexnet": ("light_bvlc_alexnet.onnx", "AlexNet (BVLC)"),
    "zfnet512": ("light_zfnet512.onnx", "ZFNet-512"),
}
ROOT = Path(__file__).resolve().parents[1]


def light_folder() -> Path:
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def survey(path: Path) -> dict:
    """Conversion verdict of one model, without and (where it helps) with analog ops."""
    start = time.perf_counter()
    try:
        rows = conversion_rows(path)
    except SnnError as error:
        return {"error": str(error), "seconds": time.perf_counter() - start}
    kinds = Counter(row[2] for row in rows)
    missing: dict[str, str] = {}
    for _, op, kind, why in rows:
        if kind == "UNSUPPORTED":
            missing.setdefault(op, why.split("): ", 1)[-1])
    result = {"rows": rows, "kinds": kinds, "missing": missing, "ops": Counter(r[1] for r in rows)}
    if missing and all(op in ANALOG_OPS for op in missing):
        analog_rows = conversion_rows(path, tuple(sorted(missing)))
        result["analog"] = tuple(sorted(missing))
        result["analog_converts"] = not any(r[2] == "UNSUPPORTED" for r in analog_rows)
    result["seconds"] = time.perf_counter() - start
    return result


def simulate(path: Path, allow_analog, timesteps, samples: int) -> dict:
    """SNN against onnxruntime on random images: relative error and top-1 agreement per T."""
    model = frontend.load_model(path)
    session = frontend.ort_session(model)
    spec = session.get_inputs()[0]
    shape = [int(d) for d in spec.shape[1:]]
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=(max(samples, 4), *shape)).astype(np.float32)
    x = rng.normal(size=(samples, *shape)).astype(np.float32)
    options = {"timesteps": (max(timesteps),), "progress": False,
               "allow_analog": tuple(allow_analog)}
    if "second_stage" in {f.name for f in dataclasses.fields(CompileConfig)}:
        options["second_stage"] = False  # plain DNI: the second stage is another experiment
    config = CompileConfig(**options)
    start = time.perf_counter()
    program = compile_model(path, Dataset(calibration, None, "random"), config).program
    compiled = time.perf_counter() - start
    ann = np.concatenate([session.run(None, {spec.name: x[i:i + 1]})[0] for i in range(len(x))])
    ann = ann.reshape(len(x), -1)
    start = time.perf_counter()
    readout = SpikingNetwork(program).run(x, max(timesteps))
    simulated = time.perf_counter() - start
    scale = float(np.abs(ann).max())
    out = {"compile_s": compiled, "simulate_s": simulated, "errors": {}, "agreement": {}}
    for t in timesteps:
        snn = readout[t - 1].reshape(len(x), -1)
        out["errors"][t] = float(np.abs(snn - ann).max()) / scale
        out["agreement"][t] = float((snn.argmax(1) == ann.argmax(1)).mean())
    return out


def report(results: dict, simulated: dict, timesteps) -> str:
    lines = [
        "# The light models of the onnx package",
        "",
        "Written by `tools/survey_light_models.py` (onnx "
        f"{onnx.__version__}). The models in `onnx/backend/test/data/light/` keep the "
        "real topology but every weight is a 0.02 fill, so only conversion (and, where "
        "simulated, convergence to onnxruntime on random images) means anything here.",
        "",
        "| model | nodes | converts? | missing (reason) | with `--allow-analog` |",
        "|---|---|---|---|---|",
    ]
    for key, result in results.items():
        label = MODELS[key][1]
        if "error" in result:
            lines.append(f"| {label} | - | **no**: {result['error']} | | |")
            continue
        nodes = sum(result["kinds"].values())
        converts = "yes" if not result["missing"] else "**no**"
        missing = "; ".join(f"{op} ({why})" for op, why in result["missing"].items()) or "-"
        if "analog" in result:
            analog = (f"converts with `--allow-analog {','.join(result['analog'])}`"
                      if result["analog_converts"] else "still does not convert")
        else:
            analog = "-" if not result["missing"] else "no analog form"
        lines.append(f"| {label} | {nodes} | {converts} | {missing} | {analog} |")
    lines += ["", "Conversion of every node, counted by kind:", ""]
    for key, result in results.items():
        if "error" not in result:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(result["kinds"].items()))
            ops = ", ".join(f"{op} {n}" for op, n in sorted(result["ops"].items()))
            lines.append(f"- {MODELS[key][1]}: {kinds} (ops: {ops}; {result['seconds']:.0f} s)")
    if simulated:
        lines += [
            "",
            "## Simulated on random images",
            "",
            "Calibrated on random N(0, 1) images, tested on others; relative error is "
            "max |SNN - ANN| / max |ANN| of the (softmax) outputs, agreement is top-1 "
            "agreement with onnxruntime. Caution: with every weight the same 0.02 fill, "
            "every output class of these models gets the same logit, so the softmax is "
            "uniform for the ANN and the SNN alike and this only shows that the converted "
            "network compiles and runs end to end at 224 x 224; convergence on real weights "
            "is what tests/snncompiler/test_exporters.py and "
            "docs/results/efficientnet_lite0.md measure.",
            "",
            "| model | " + " | ".join(f"T={t}" for t in timesteps) + " | time |",
            "|---|" + "---|" * (len(timesteps) + 1),
        ]
        for key, sim in simulated.items():
            if "error" in sim:
                lines.append(f"| {MODELS[key][1]} | {sim['error']} |")
                continue
            cells = " | ".join(f"{sim['errors'][t]:.3g} ({100 * sim['agreement'][t]:.0f}%)"
                               for t in timesteps)
            lines.append(f"| {MODELS[key][1]} | {cells} | compile {sim['compile_s']:.0f} s, "
                         f"simulate {sim['simulate_s']:.0f} s |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="Models to survey.")
    parser.add_argument("--simulate", default="", help="Models to also compile and simulate.")
    parser.add_argument("--timesteps", default="8,32,128")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "light_models.md"))
    args = parser.parse_args()
    timesteps = [int(t) for t in args.timesteps.split(",")]
    results, simulated = {}, {}
    for key in args.models.split(","):
        path = light_folder() / MODELS[key][0]
        results[key] = survey(path)
        print(key, {k: v for k, v in results[key].items() if k != "rows"}, flush=True)
    for key in filter(None, args.simulate.split(",")):
        path = light_folder() / MODELS[key][0]
        try:
            simulated[key] = simulate(path, results[key].get("analog", ()), timesteps,
                                      args.samples)
        except SnnError as error:
            simulated[key] = {"error": str(error)}
        print(key, simulated[key], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report(results, simulated, timesteps))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
