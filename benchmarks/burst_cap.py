"""Room to catch up: one compiled network, run with different burst caps.

    .venv/bin/python benchmarks/burst_cap.py [--model efficientnet_lite0] [--caps 4,16,64]
        [--timesteps 8,16,32] [--resolution 64] [--limit 40] [--calib-limit 64] [--out F]

Compiles ``out/deep/<model>.onnx`` (written by ``tools/deep_models/export.py``) once with
``--resolution R --no-second-stage`` (thresholds for R levels, so only the cap varies),
then, for each cap, sets every neuron's ``max_spikes_per_step`` to it and runs the first
``--limit`` test views at each T with that T's parameters. Prints top-1 agreement with the
ANN (onnxruntime) and the relative logit error ``||SNN - ANN|| / ||ANN||`` per view: its
mean, 90th percentile and largest value (the views whose activations go past the
calibration range are the tail). The thresholds are the same in every row: what changes is
how many spikes a neuron may send in one step to catch up (docs/algorithm.md). ``--out``
also writes the table, with the command and the machine, to a markdown file.

The room rule's figures (``CATCH_UP_ROOM``; docs/algorithm.md, "Room to catch up")::

    .venv/bin/python benchmarks/burst_cap.py --timesteps 32 --resolution 1024 --caps 64,128 \
        --limit 160 --calib-limit 256 --out docs/results/burst_cap.md
    .venv/bin/python benchmarks/burst_cap.py --timesteps 32 --resolution 512 --caps 64 \
        --limit 160 --calib-limit 256 --out docs/results/burst_cap.md
    .venv/bin/python benchmarks/burst_cap.py --timesteps 4,8 --resolution 1024 \
        --caps 128,256,512,1024 --limit 160 --calib-limit 256 --out docs/results/burst_cap.md
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--data", type=Path, default=REPO / "out" / "deep")
    parser.add_argument("--caps", default="4,16,64")
    parser.add_argument("--timesteps", default="8,16,32")
    parser.add_argument("--resolution", type=int, default=64,
                        help="levels the thresholds are chosen for (the same for every cap)")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--calib-limit", type=int, default=64)
    parser.add_argument("--out", type=Path,
                        help="append the table to this markdown file (created if missing)")
    args = parser.parse_args()
    onnx_path = args.data / f"{args.model}.onnx"
    if not onnx_path.exists():
        sys.exit(f"{onnx_path} is missing: run tools/deep_models/export.py first")
    from snncompiler.frontend import load_model, ort_session
    from snncompiler.machine import cpu_name
    from snncompiler.runtime.engine import SpikingNetwork
    from snncompiler.runtime.format import load_program

    steps = [int(t) for t in args.timesteps.split(",")]
    caps = [int(c) for c in args.caps.split(",")]
    with tempfile.TemporaryDirectory() as work:
        snn = Path(work) / "net.snn"
        # Compiled under the largest cap, so that no candidate rule narrows the levels asked
        # for; the thresholds do not depend on the cap, which each row then sets.
        subprocess.run([sys.executable, "-m", "snncompiler.cli", "compile", str(onnx_path),
                        "-o", str(snn), "--calib", str(args.data / f"{args.model}_calib.npz"),
                        "--calib-samples", str(args.calib_limit), "-T", args.timesteps,
                        "--resolution", str(args.resolution), "--max-spikes", str(max(caps)),
                        "--no-second-stage", "-q"], check=True)
        program = load_program(snn)
    with np.load(args.data / f"{args.model}_test.npz") as data:
        x = data["x"][:args.limit].astype(np.float32)
    session = ort_session(load_model(onnx_path))
    name = session.get_inputs()[0].name
    reference = np.concatenate([session.run(None, {name: x[i:i + 8]})[0]
                                for i in range(0, len(x), 8)])
    lines = [f"{args.model}, {len(x)} test views, thresholds for {args.resolution} levels "
             f"(calibrated on {args.calib_limit} views), no second stage; "
             f"{cpu_name()}, {platform.platform()}", "",
             "| burst cap | " + " | ".join(
                 f"T={t}: agreement / logit error mean, p90, max" for t in steps) + " |",
             "|---|" + "---|" * len(steps)]
    print("\n".join(lines), flush=True)
    for cap in caps:
        for node in program.neuron_nodes():
            node.attrs["max_spikes_per_step"] = cap
        net = SpikingNetwork(program)
        cells = []
        for t in steps:
            out = np.concatenate([net.run(x[i:i + 8], t, parameters_for=t)[-1]
                                  for i in range(0, len(x), 8)])
            agree = (out.argmax(1) == reference.argmax(1)).mean()
            error = (np.linalg.norm(out - reference, axis=1)
                     / np.linalg.norm(reference, axis=1))
            cells.append(f"{100 * agree:.1f}% / {error.mean():.4f}, "
                         f"{np.percentile(error, 90):.4f}, {error.max():.3f}")
        lines.append(f"| {cap} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    if args.out:
        command = "benchmarks/burst_cap.py " + " ".join(sys.argv[1:])
        new = not args.out.exists()
        with args.out.open("a") as report:
            if new:
                report.write("# Room to catch up: one network, several burst caps\n\n"
                             "Written by `benchmarks/burst_cap.py` (see its docstring).\n")
            report.write(f"\n`{command}`\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
