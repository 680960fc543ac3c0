"""``snnc inspect``: how an ONNX model converts, node by node; or a .snn file's header."""

from __future__ import annotations

import json
from collections import Counter

from snncompiler import frontend
from snncompiler.context import CompileConfig, CompileContext
from snncompiler.lowering import LOWERINGS, lower_nodes
from snncompiler.pipeline import run_passes


def conversion_rows(model_path) -> list[tuple[str, str, str, str]]:
    """One row per ONNX node (after constant folding): (name, op, conversion, how or why).

    ``conversion`` is ``exact`` (linear, same result at every T), ``neuron`` (rate-coded,
    error shrinking with T), ``removed``, ``folded`` or ``UNSUPPORTED``.
    """
    graph = frontend.import_graph(frontend.load_model(model_path))
    original = [(node.name, node.op) for node in graph.nodes]
    ctx = CompileContext(CompileConfig(progress=False), dry_run=True)
    rewritten = graph.copy()
    run_passes(rewritten, ctx)
    _, _, problems = lower_nodes(rewritten)
    kept = {node.name for node in rewritten.nodes}
    rows = []
    for name, op in original:
        support = LOWERINGS.get(op)
        if name in problems:
            rows.append((name, op, "UNSUPPORTED", problems[name]))
        elif support is None:
            rows.append((name, op, "UNSUPPORTED", "unknown op"))
        elif name not in kept:
            kind = "removed" if support.conversion == "removed" else "folded"
            rows.append((name, op, kind, support.how))
        else:
            rows.append((name, op, support.conversion, support.how))
    return rows


def inspect_onnx(model_path) -> str:
    rows = conversion_rows(model_path)
    widths = [max(len(row[i]) for row in rows) for i in range(3)] if rows else [0, 0, 0]
    lines = [f"{n.ljust(widths[0])}  {o.ljust(widths[1])}  {c.ljust(widths[2])}  {h}"
             for n, o, c, h in rows]
    counts = Counter(row[2] for row in rows)
    summary = ", ".join(f"{count} {kind}" for kind, count in sorted(counts.items()))
    unsupported = counts.get("UNSUPPORTED", 0)
    verdict = ("converts" if not unsupported
               else f"does NOT convert: {unsupported} unsupported node(s)")
    lines.append(f"{len(rows)} nodes: {summary}. The model {verdict}.")
    return "\n".join(lines)


def inspect_snn(path) -> str:
    from snncompiler.runtime.format import load_program

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
        if node.op == "snm":
            extra = (f"  theta_neg={node.attrs['theta_neg']} mean theta="
                     f"{float(node.arrays['theta'].mean()):.4g}")
        lines.append(f"  {node.name}: {node.op} -> {list(node.shape)}  ({params} params){extra}")
    calibration = {k: v for k, v in program.calibration.items() if k != "layers"}
    lines.append("calibration: " + json.dumps(calibration, sort_keys=True))
    return "\n".join(lines)
