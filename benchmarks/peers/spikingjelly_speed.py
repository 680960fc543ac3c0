"""SpikingJelly's converted SNN on PyTorch CPU: time and peak memory of T steps (issue 5).

Run by ``benchmarks/speed.py --spikingjelly`` with the torch interpreter, one process per
measurement; it prints one JSON object. Setup (the torch venv, pinned CPU torch)::

    .venv-torch/bin/pip install torch==2.13.0
    .venv-torch/bin/pip install --no-deps spikingjelly==2.0.0
    .venv-torch/bin/pip install loguru==0.7.3 requests==2.34.2   # what it imports at load

What runs: the benchmark ANN rebuilt as torch modules from the ONNX weights
(``OnnxModule`` of ``spikingjelly_ann2snn.py``, checked there against onnxruntime),
converted by SpikingJelly's ``ann2snn.Converter`` with its default rate-coding recipe
(``mode="max"``: Conv-BN fusion, each ReLU -> scale, IFNode, scale; calibrated on
``--calib`` images). Then T calls ``snn(x)`` on the batch after ``functional.reset_net``,
under ``torch.no_grad()``, summing the outputs, as SpikingJelly's own ann2snn examples
evaluate: its converted modules (plain ``nn.Conv2d`` and single-step ``IFNode``) run one
step per call. Timing: best of ``--repeat`` runs, after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spikingjelly_ann2snn import OnnxModule, convert  # noqa: E402


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited on exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def simulate(snn, x: torch.Tensor, steps: int) -> torch.Tensor:
    from spikingjelly.activation_based import functional

    functional.reset_net(snn)
    total = None
    for _ in range(steps):
        out = snn(x)
        total = out if total is None else total + out
    functional.reset_net(snn)
    return total / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--inputs", type=Path, required=True, help=".npy (N, C, H, W) float32")
    parser.add_argument("--calib", type=Path, required=True, help=".npy calibration images")
    parser.add_argument("--timesteps", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import spikingjelly

    x = torch.from_numpy(np.load(args.inputs))
    calibration = torch.from_numpy(np.load(args.calib))
    ann = OnnxModule(onnx.load(str(args.onnx))).eval()
    start = time.perf_counter()
    snn = convert(ann, calibration, "max")
    convert_seconds = time.perf_counter() - start
    before = peak_rss_mb()
    simulate(snn, x, args.timesteps)  # warm-up
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        out = simulate(snn, x, args.timesteps)
        times.append(time.perf_counter() - start)
    with torch.no_grad():
        agreement = float((out.argmax(1) == ann(x).argmax(1)).float().mean())
    print(json.dumps({
        "seconds": min(times), "all_seconds": times, "timesteps": args.timesteps,
        "batch": len(x), "threads": args.threads, "convert_seconds": convert_seconds,
        "peak_rss_mb": peak_rss_mb(), "rss_before_run_mb": before,
        "agreement_with_ann": agreement, "torch": torch.__version__,
        "spikingjelly": getattr(spikingjelly, "__version__", "2.0.0"),
    }))


if __name__ == "__main__":
    main()
