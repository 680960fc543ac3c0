"""Where a step's time goes: the fused executor's ops timed one by one, on one sample.

    .venv/bin/python benchmarks/op_time.py model.snn inputs.npz [--steps 32] [--view 0]
        [--out docs/results/op_time_<name>.md]

Runs the dynamic part of a compiled network (``.snn``) on one input view, step after step
as :func:`snncompiler.runtime.kernels.run_steps` does, but calls each op row from Python
(``kernels._execute``) with a clock around it, on one thread. Prints the time by kind of op
(conv geometry, neuron layer, ...) and the slowest ops, with what each did: additions for
convs and gemms (and their rate), spikes for neuron layers (and the time per neuron).
The inputs: an ``.npz`` whose ``x`` (or only array) holds views, or an ``.npy``.

A diagnostic, not a benchmark of the whole run: each call pays a few microseconds of
Python, and an op timed alone sees the cache its predecessor left, as in a run. Use
``benchmarks/speed.py`` for the time against onnxruntime.
"""

from __future__ import annotations

import argparse
import collections
import platform
import time
from pathlib import Path

import numba
import numpy as np

from snncompiler.machine import cpu_name
from snncompiler.runtime import fused, load
from snncompiler.runtime import kernels as K

OPCODES = {getattr(K, name): name.lower() for name in (
    "CONV", "CONV_GROUPED", "GEMM", "AFFINE", "ADD", "AVGPOOL", "GLOBAL_AVGPOOL", "MAXPOOL",
    "MAXPOOL_SPIKES", "SNM", "WEIGHTED_GATHER", "READOUT", "RECORD", "TRACK", "ANALOG")}


def _views(path: Path) -> np.ndarray:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return data["x"] if "x" in data.files else data[data.files[0]]
    return np.load(path, allow_pickle=False)


def kind(op: np.ndarray) -> str:
    """The op's kind: its opcode, with the kernel size, stride and input for a conv."""
    name = OPCODES[int(op[K.OPCODE])]
    if name not in ("conv", "conv_grouped"):
        return name
    p = op[K.P:]
    geometry = f"{p[4]}x{p[5]} stride {p[6]}"
    if name == "conv_grouped":
        return f"depthwise conv {geometry}" if K.is_depthwise(p[0], p[3], p[12]) else (
            f"grouped conv {geometry}")
    # A conv reading a neuron layer's list reads spikes; any other input is dense.
    return f"conv {geometry}, " + ("spikes in" if p[17] >= 0 else "other input")


def time_ops(net, x: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray, fused.FusedPlan]:
    """Seconds and counts (additions or spikes) of every op row over ``steps`` steps of the
    one sample ``x`` (1, ...)."""
    net.run(x, steps)  # compiles the kernels, and checks the input
    net.reset()
    net.select_parameters(steps)
    plan = net._fused_plan(False)
    static = net._static_values(net._feeds(x))
    row = net._static_rows(plan, static, 1)[0]
    scratch = [np.zeros(plan.scratch[name], dtype=fused.SCRATCH_DTYPES[name])
               for name in fused.SCRATCH]
    readout = np.zeros(plan.readout_size, np.float32)
    record = np.zeros(max(1, plan.record_size), np.float32)

    def execute(op, state, t):
        return K._execute(op, scratch[0], row, plan.params, plan.dparams, plan.index,
                          plan.every, state["fstate"][0], state["istate"][0],
                          state["dstate"][0], *scratch[1:], net.parameter_row,
                          np.float64(t + 1), readout, record)

    # One untimed step on a state of its own: the first call of _execute from Python loads
    # its machine code (tens of ms), which would otherwise be charged to the first op.
    warm_up = net._fresh_fused_state(plan, 1)
    for op in plan.ops:
        execute(op, warm_up, 0)
    state = net._fresh_fused_state(plan, 1)
    seconds = np.zeros(len(plan.ops))
    counts = np.zeros(len(plan.ops), np.int64)
    for t in range(steps):
        for k, op in enumerate(plan.ops):
            start = time.perf_counter()
            counts[k] += execute(op, state, t)
            seconds[k] += time.perf_counter() - start
    return seconds, counts, plan


def report(name: str, source: str, seconds, counts, plan, steps: int,
           top: int) -> list[str]:
    total = seconds.sum()
    lines = [f"# Time per op: {name}", "",
             f"Written by `benchmarks/op_time.py` ({source}): one view, {steps} steps "
             f"with the parameters for T={steps}, 1 thread; "
             f"{total:.3f} s in all, {total / steps * 1e3:.2f} ms per step. Machine: "
             f"{cpu_name()}, {platform.platform()}; numba "
             f"{numba.__version__}.", "",
             "| kind of op | ops | seconds | share | G additions / s, or ns / neuron |",
             "|---|---:|---:|---:|---:|"]
    groups = collections.defaultdict(lambda: [0, 0.0, 0, 0])
    for k, op in enumerate(plan.ops):
        group = groups[kind(op)]
        group[0] += 1
        group[1] += seconds[k]
        group[2] += counts[k]
        group[3] += int(op[K.SIZE])
    for label, (ops, spent, counted, size) in sorted(groups.items(), key=lambda g: -g[1][1]):
        lines.append(f"| {label} | {ops} | {spent:.3f} | {spent / total:.1%} | "
                     f"{_rate(label, spent, counted, size, steps)} |")
    lines += ["", f"The {top} slowest ops:", "", "| op | node | seconds | per step |",
              "|---|---|---:|---:|"]
    for k in np.argsort(-seconds)[:top]:
        op = plan.ops[k]
        label = kind(op)
        lines.append(f"| {label} | `{plan.op_nodes[k]}` | {seconds[k]:.4f} | "
                     f"{_rate(label, seconds[k], counts[k], int(op[K.SIZE]), steps)} |")
    return lines


def _rate(label: str, spent: float, counted: int, size: int, steps: int) -> str:
    if "conv" in label or label == "gemm":
        return f"{counted / spent / 1e9:.1f} G additions / s" if spent else ""
    if label in ("track", "snm"):
        return f"{spent / steps / size * 1e9:.2f} ns / neuron" if size else ""
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("snn", type=Path)
    parser.add_argument("inputs", type=Path)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--view", type=int, default=0)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", type=Path, help="also write the report here (markdown)")
    args = parser.parse_args()
    numba.set_num_threads(1)
    net = load(args.snn)
    x = np.ascontiguousarray(_views(args.inputs)[args.view:args.view + 1], dtype=np.float32)
    seconds, counts, plan = time_ops(net, x, args.steps)
    source = f"`{args.snn.name}`, view {args.view} of `{args.inputs.name}`"
    text = "\n".join(report(args.snn.stem, source, seconds, counts, plan, args.steps,
                            args.top)) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
