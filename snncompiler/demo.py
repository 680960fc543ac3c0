"""``snnc demo``: convert and evaluate the shipped Fashion-MNIST CNN, offline."""

from __future__ import annotations

import json
import tempfile
from importlib import resources
from pathlib import Path

from snncompiler.context import CompileConfig
from snncompiler.evaluate import evaluate, format_activity, format_table, parse_timesteps
from snncompiler.files import write_text_atomically
from snncompiler.npz import Preprocessing, load_npz
from snncompiler.runtime.engine import SpikingNetwork
from snncompiler.runtime.format import save_program


def demo_files() -> tuple[dict, Path]:
    """The demo description (demo.json) and the folder of the shipped files."""
    folder = Path(str(resources.files("snncompiler.data")))
    return json.loads((folder / "demo.json").read_text()), folder


def run_demo(out: str | None, timesteps: str, *, progress: bool = True, echo=print) -> dict:
    """Compiles the demo CNN for every T asked (one DNI set each), evaluates, prints the
    accuracy and the work per image (synaptic operations, firing rates).

    Returns:
        The evaluation results as a dict (also written to ``results.json`` in ``out``).
    """
    from snncompiler import frontend
    from snncompiler.pipeline import compile_model

    spec, folder = demo_files()
    steps = parse_timesteps(timesteps)
    preprocessing = Preprocessing(spec["scale"], spec["mean"], spec["std"])
    calibration = load_npz(folder / spec["calibration"], preprocessing)
    test = load_npz(folder / spec["test"], preprocessing)
    model = folder / spec["model"]
    config = CompileConfig(timesteps=(max(steps), *[t for t in steps if t != max(steps)]),
                           progress=progress)
    echo(f"demo: {spec['model']} ({spec.get('description', 'Fashion-MNIST CNN')}), "
         f"{len(calibration)} calibration and {len(test)} test images")
    result = compile_model(model, calibration, config)
    with tempfile.TemporaryDirectory() as scratch:
        folder_out = Path(out) if out else Path(scratch)
        folder_out.mkdir(parents=True, exist_ok=True)
        snn_path = folder_out / "demo.snn"
        save_program(result.program, snn_path, overwrite=True)
        echo(f"compiled in {result.seconds:.1f} s -> {snn_path if out else 'demo.snn'}")
        session = frontend.ort_session(frontend.load_model(model))
        name = session.get_inputs()[0].name
        evaluation = evaluate(SpikingNetwork(result.program), test, steps,
                              ann=lambda x: session.run(None, {name: x})[0],
                              progress=progress)
        echo(format_table(evaluation))
        echo("")
        echo(format_activity(evaluation))
        results = evaluation.to_json()
        if out:
            write_text_atomically(folder_out / "results.json",
                                  json.dumps(results, indent=2) + "\n")
    return results
