"""``snnc inspect``: how an ONNX model converts, node by node; or a .snn file's header."""

from __future__ import annotations

import json
from collections import Counter

from snncompiler import frontend
from snncompiler.context import CompileConfig, CompileContext
from snncompiler.lowering import ANALOG_OPS, LOWERINGS, check_allow_analog, lower_nodes
from snncompiler.pipeline import run_passes


def conversion_rows(model_path, allow_analog=()) -> list[tuple[str, str, str, str]]:
    """One row per ONNX node (after constant folding): (name, op, conversion, how or why).

    ``conversion`` is ``exact`` (linear, same result at every T), ``neuron`` (rate-coded,
    error shrinking with T), ``readout`` (applied to the time-averaged output: exact),
    ``analog`` (not spiking: on the time-averaged signal, only with ``allow_analog``),
    ``removed``, ``folded`` or ``UNSUPPORTED``.

    Args:
        model_path: The ONNX file.
        allow_analog: ONNX op types allowed to run in analog (``--allow-analog``).
    """
    allow_analog = check_allow_analog(allow_analog)
    graph = frontend.import_graph(frontend.load_model(model_path))
    original = [(node.name, node.op) for node in graph.nodes]
    ctx = CompileContext(CompileConfig(progress=False, allow_analog=allow_analog), dry_run=True)
    rewritten = graph.copy()
    run_passes(rewritten, ctx)
    notes: dict[str, tuple[str, str]] = {}
    _, _, problems = lower_nodes(rewritten, allow_analog=allow_analog, notes=notes)
    kept = {node.name for node in rewritten.nodes}
    rows = []
    for name, op in original:
        support = LOWERINGS.get(op)
        if name in problems:
            rows.append((name, op, "UNSUPPORTED", problems[name]))
        elif support is None:
            rows.append((name, op, "UNSUPPORTED", "unknown op"))
        elif name in notes:
            rows.append((name, op, *notes[name]))
        elif name not in kept:
            kind = "removed" if support.conversion == "removed" else "folded"
            rows.append((name, op, kind, support.how))
        else:
            rows.append((name, op, support.conversion, support.how))
    return rows


def inspect_onnx(model_path, allow_analog=()) -> str:
    rows = conversion_rows(model_path, allow_analog)
    widths = [max(len(row[i]) for row in rows) for i in range(3)] if rows else [0, 0, 0]
    lines = [f"{n.ljust(widths[0])}  {o.ljust(widths[1])}  {c.ljust(widths[2])}  {h}"
             for n, o, c, h in rows]
    counts = Counter(row[2] for row in rows)
    summary = ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))
    unsupported = counts.get("UNSUPPORTED", 0)
    verdict = ("converts" if not unsupported
               else f"does NOT convert: {unsupported} unsupported node(s)")
    if not unsupported and counts.get("analog"):
        verdict += f", with {counts['analog']} node(s) NOT spiking (analog, --allow-analog)"
    analog_capable = sorted({op for _, op, kind, _ in rows
                             if kind == "UNSUPPORTED" and op in ANALOG_OPS})
    if analog_capable:
        verdict += (f"; --allow-analog {','.join(analog_capable)} would run "
                    f"{'it' if len(analog_capable) == 1 else 'them'} on the time-averaged "
                    "signal")
    lines.append(f"{len(rows)} nodes: {summary}. The model {verdict}.")
    return "\n".join(lines)


def inspect_snn(path) -> str:
    from snncompiler.runtime.format import load_program
    from snncompiler.runtime.opset import NEURON_OPS

    program = load_program(path)
    lines = [
        f"producer: {program.producer}",
        f"calibrated for T: {program.timesteps} (default {program.default_timesteps})",
        "inputs: " + ", ".join(f"{s.name} [N, {', '.join(map(str, s.shape))}]"
                               for s in program.inputs),
        "outputs: " + ", ".join(f"{s.name} [N, {', '.join(map(str, s.shape))}]"
                                for s in program.outputs),
        f"nodes ({len(program.nodes)}):",
    ]
    for node in program.nodes:
        params = sum(a.size for a in node.arrays.values())
        extra = ""
        if node.op in NEURON_OPS:
            extra = (f"  theta_neg={node.attrs['theta_neg']} mean theta="
                     f"{float(node.arrays['theta'].mean()):.4g}")
        lines.append(f"  {node.name}: {node.op} -> {list(node.shape)}  ({params} params){extra}")
    calibration = {k: v for k, v in program.calibration.items() if k != "layers"}
    lines.append("calibration: " + json.dumps(calibration, sort_keys=True))
    return "\n".join(lines)
