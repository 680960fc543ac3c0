"""``snnc report``: one self-contained HTML page from the output of ``snnc eval --json``.

The page holds everything it shows: tables, and plots drawn here as inline SVG by
:func:`line_plot` (no plotting library). It references nothing outside itself, and its
Content-Security-Policy forbids every load, so it reads the same offline, in a paper's
supplement or an archive. Plots: accuracy and agreement against T with the ANN's
accuracy; synaptic operations against T with the ANN's MACs x T; each neuron layer's firing
rate (and, from ``eval --layers --onnx``, its error) against depth at every T.

With ``--snn`` the page adds the model's details and the calibration summary from the
``.snn`` header (``snnc eval --json`` does not record them). The machine section describes
the machine that writes the page, which the JSON does not record either.

A small inline script records, once the page has loaded, the rendered size of every plot
and any error the page raised, in the hidden element ``#self-check`` (the browser test
reads it).
"""

from __future__ import annotations

import datetime
import html
import importlib.metadata
import json
import math
import os
import platform
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from snncompiler import __version__
from snncompiler.errors import InputError
from snncompiler.evaluate import si
from snncompiler.machine import cpu_name
from snncompiler.runtime.graph import Program

MAX_RESULTS_BYTES = 64 << 20
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#7f7f7f",
           "#000000")
"""Okabe-Ito colours (distinguishable with the common colour-vision deficiencies)."""
DASHES = ("", "6 3", "2 3", "8 3 2 3")


# --------------------------------------------------------------------------- reading


def load_results(path) -> dict:
    """Reads and checks ``snnc eval --json`` output.

    Raises:
        InputError: The file is not JSON, or not what ``snnc eval --json`` writes; one line
            naming the field at fault.
    """
    name = os.fspath(path)
    with open(path, "rb") as stream:
        data = stream.read(MAX_RESULTS_BYTES + 1)
    if len(data) > MAX_RESULTS_BYTES:
        raise InputError(f"{name}: larger than {MAX_RESULTS_BYTES >> 20} MiB; snnc eval "
                         "--json output is far smaller")

    def no_constant(text):
        raise ValueError(f"{text} is not a number JSON allows")

    try:
        results = json.loads(data.decode("utf-8"), parse_constant=no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise InputError(f"{name}: not JSON ({str(error).splitlines()[0]}); expected the "
                         "file snnc eval --json writes") from None
    check_results(results, name)
    return results


class _Bad(Exception):
    """A field that does not hold what ``snnc eval --json`` writes (message: where, why)."""


def check_results(results, name: str = "results") -> None:
    """Checks that ``results`` has the fields and types ``snnc eval --json`` writes.

    Raises:
        InputError: ``<name>: not the output of snnc eval --json: <field>: <why>``.
    """
    try:
        _check(results)
    except _Bad as error:
        raise InputError(f"{name}: not the output of snnc eval --json: {error}") from None


def _check(results) -> None:
    if not isinstance(results, dict):
        raise _Bad(f"expected a JSON object, got {type(results).__name__}")
    for key in ("timesteps", "n", "seconds", "parameters_for", "snn_accuracy", "agreement",
                "ann_accuracy"):
        if key not in results:
            raise _Bad(f"field {key!r} is missing")
    steps = _ints(results["timesteps"], "timesteps", minimum=1)
    if not steps or steps != sorted(set(steps)):
        raise _Bad("timesteps: expected increasing positive integers")
    count = len(steps)
    _int(results["n"], "n", minimum=1)
    _number(results["seconds"], "seconds", low=0.0)
    if len(_ints(results["parameters_for"], "parameters_for", minimum=1)) != count:
        raise _Bad(f"parameters_for: expected {count} entries, one per T")
    for key in ("snn_accuracy", "agreement"):
        _per_t(results[key], key, count, low=0.0, high=1.0)
    _per_t(results.get("activation_sparsity"), "activation_sparsity", count, low=0.0, high=1.0,
           optional_entries=True)
    if results["ann_accuracy"] is not None:
        _number(results["ann_accuracy"], "ann_accuracy", low=0.0, high=1.0)
    for key in ("ann_macs", "static_macs", "layer_activity_timesteps"):
        if results.get(key) is not None:
            _int(results[key], key, minimum=0)
    for key in ("synaptic_ops", "synaptic_ops_per_ann_mac", "mean_firing_rate"):
        _per_t(results.get(key), key, count, low=0.0, optional_entries=True)
    rows = results.get("layer_activity")
    if rows is not None:
        for i, row in enumerate(_list(rows, "layer_activity")):
            where = f"layer_activity[{i}]"
            _fields(row, where, {"layer": str, "into": list})
            for key in ("neurons", "firing_rate", "spikes", "synaptic_ops"):
                if row.get(key) is not None:
                    _number(row[key], f"{where}.{key}", low=0.0)
            for j, target in enumerate(row["into"]):
                if not isinstance(target, str):
                    raise _Bad(f"{where}.into[{j}]: expected a layer name")
    layers = results.get("layers")
    if layers is not None:
        for i, layer in enumerate(_list(layers, "layers")):
            where = f"layers[{i}]"
            _fields(layer, where, {"node": str, "neurons": int})
            layer_steps = _ints(layer.get("timesteps"), f"{where}.timesteps", minimum=1)
            _per_t(layer.get("firing_rate"), f"{where}.firing_rate", len(layer_steps), low=0.0)
            if layer.get("firing_rate") is None:
                raise _Bad(f"{where}.firing_rate is missing")
            for key in ("mean_abs_error", "relative_error"):
                _per_t(layer.get(key), f"{where}.{key}", len(layer_steps), low=0.0)
            _per_t(layer.get("bias"), f"{where}.bias", len(layer_steps))


def _fields(value, where: str, types: dict) -> None:
    if not isinstance(value, dict):
        raise _Bad(f"{where}: expected a JSON object")
    for key, kind in types.items():
        if not isinstance(value.get(key), kind) or isinstance(value.get(key), bool):
            raise _Bad(f"{where}.{key}: expected {'a list' if kind is list else kind.__name__}")


def _list(value, where: str) -> list:
    if not isinstance(value, list):
        raise _Bad(f"{where}: expected a list")
    return value


def _int(value, where: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _Bad(f"{where}: expected an integer of at least {minimum}, got {value!r:.40}")
    return value


def _ints(value, where: str, *, minimum: int) -> list[int]:
    return [_int(v, f"{where}[{i}]", minimum=minimum) for i, v in enumerate(_list(value, where))]


def _number(value, where: str, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            low <= value <= high):
        span = f" in [{low:g}, {high:g}]" if math.isfinite(low) and math.isfinite(high) else ""
        raise _Bad(f"{where}: expected a number{span}, got {value!r:.40}")
    return float(value)


def _per_t(value, where: str, count: int, low: float = -math.inf, high: float = math.inf,
           optional_entries: bool = False) -> None:
    """None, or a list of ``count`` numbers (None entries allowed if ``optional_entries``)."""
    if value is None:
        return
    if len(_list(value, where)) != count:
        raise _Bad(f"{where}: expected {count} entries, one per T")
    for i, v in enumerate(value):
        if v is None and optional_entries:
            continue
        _number(v, f"{where}[{i}]", low, high)


# --------------------------------------------------------------------------- plots


@dataclass
class Series:
    """One line of a plot: ``points`` (x, y), drawn in ``style`` (index into the palette
    and dash patterns); a series with ``dashed`` has no markers (a reference line)."""

    label: str
    points: list[tuple[float, float]]
    style: int = 0
    dashed: bool = False


def _nice_step(span: float, count: int) -> float:
    raw = span / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def _linear_ticks(low: float, high: float, count: int = 5) -> list[float]:
    step = _nice_step(high - low, count)
    first = math.ceil(low / step - 1e-9) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _fmt(value: float) -> str:
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return si(value) if abs(value) >= 1e4 else f"{value:.0e}"
    return f"{value:.4g}"


def line_plot(series: Sequence[Series], *, plot_id: str, title: str, x_label: str,
              y_label: str, x_log2: bool = False, y_log10: bool = False,
              x_ticks: Sequence[float] | None = None, y_range: tuple[float, float] | None = None,
              y_format: Callable[[float], str] = _fmt, width: int = 680,
              height: int = 360) -> str:
    """An SVG line plot (a string of inline SVG for an HTML page).

    Args:
        series: The lines; points with a non-finite coordinate, or not positive on a log
            axis, are left out.
        plot_id: The svg element's id.
        x_log2, y_log10: Logarithmic axes (base 2 for T, base 10 for operation counts).
        x_ticks: Tick positions on x (default: nice round numbers).
        y_range: Fixed y range (default: the data's, with a margin).
        y_format: Tick labels on y.
    """
    left, right, top, bottom = 72, 190, 34, 52
    inner_w, inner_h = width - left - right, height - top - bottom

    def fx(v):
        return math.log2(v) if x_log2 else v

    def fy(v):
        return math.log10(v) if y_log10 else v

    def usable(x, y):
        ok = math.isfinite(x) and math.isfinite(y)
        return ok and (x > 0 or not x_log2) and (y > 0 or not y_log10)

    lines = [Series(s.label, [(x, y) for x, y in s.points if usable(x, y)], s.style, s.dashed)
             for s in series]
    lines = [s for s in lines if s.points]
    xs = [fx(x) for s in lines for x, _ in s.points] or [0.0, 1.0]
    ys = [fy(y) for s in lines for _, y in s.points] or [0.0, 1.0]
    x0, x1 = min(xs), max(xs)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    if y_range is not None:
        y0, y1 = fy(y_range[0]), fy(y_range[1])
    else:
        y0, y1 = min(ys), max(ys)
        margin = (y1 - y0) * 0.08 or (abs(y0) * 0.1 or 1.0)
        y0, y1 = y0 - margin, y1 + margin
        if y_log10:
            y0, y1 = math.floor(y0), math.ceil(y1)

    def px(v):
        return left + (fx(v) - x0) / (x1 - x0) * inner_w

    def py(v):
        return top + inner_h - (fy(v) - y0) / (y1 - y0) * inner_h

    esc = html.escape
    parts = [f'<svg class="plot" id="{esc(plot_id)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="{esc(plot_id)}-title">',
             f'<title id="{esc(plot_id)}-title">{esc(title)}</title>',
             f'<rect x="{left}" y="{top}" width="{inner_w}" height="{inner_h}" class="frame"/>']
    if x_ticks is None:
        x_ticks = ([2.0 ** e for e in range(math.floor(x0), math.ceil(x1) + 1)] if x_log2
                   else _linear_ticks(x0, x1))
    for x in x_ticks:
        if usable(x, 1.0) and x0 - 1e-9 <= fx(x) <= x1 + 1e-9:
            p = px(x)
            parts.append(f'<line x1="{p:.1f}" y1="{top}" x2="{p:.1f}" y2="{top + inner_h}" '
                         'class="grid"/>')
            parts.append(f'<text x="{p:.1f}" y="{top + inner_h + 18}" class="tick" '
                         f'text-anchor="middle">{esc(_fmt(x))}</text>')
    y_ticks = ([10.0 ** e for e in range(math.ceil(y0), math.floor(y1) + 1)] if y_log10
               else _linear_ticks(y0, y1))
    for y in y_ticks:
        p = py(y)
        parts.append(f'<line x1="{left}" y1="{p:.1f}" x2="{left + inner_w}" y2="{p:.1f}" '
                     'class="grid"/>')
        parts.append(f'<text x="{left - 8}" y="{p + 4:.1f}" class="tick" '
                     f'text-anchor="end">{esc(y_format(y))}</text>')
    parts.append(f'<text x="{left + inner_w / 2:.1f}" y="{height - 10}" class="label" '
                 f'text-anchor="middle">{esc(x_label)}</text>')
    parts.append(f'<text x="16" y="{top + inner_h / 2:.1f}" class="label" text-anchor="middle" '
                 f'transform="rotate(-90 16 {top + inner_h / 2:.1f})">{esc(y_label)}</text>')
    parts.append(f'<text x="{left}" y="20" class="title">{esc(title)}</text>')
    for k, s in enumerate(lines):
        colour = PALETTE[s.style % len(PALETTE)]
        dash = "6 4" if s.dashed else DASHES[s.style // len(PALETTE) % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s.points)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" '
                     f'stroke-width="2"{dash_attr}/>')
        if not s.dashed:
            for x, y in s.points:
                parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.2" '
                             f'fill="{colour}"><title>{esc(s.label)}: {esc(_fmt(x))}, '
                             f'{esc(y_format(y))}</title></circle>')
        ly = top + 8 + 18 * k
        lx = left + inner_w + 14
        parts.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 22}" y2="{ly}" stroke="{colour}" '
                     f'stroke-width="2"{dash_attr}/>')
        parts.append(f'<text x="{lx + 28}" y="{ly + 4}" class="legend">'
                     f'{esc(_shorten(s.label, 24))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


# --------------------------------------------------------------------------- page


def render(results: dict, *, results_name: str, program: Program | None = None,
           snn_name: str | None = None, title: str | None = None) -> str:
    """The HTML page for checked ``results`` (see :func:`load_results`)."""
    steps = results["timesteps"]
    model = (program.metadata.get("source") if program is not None else None) or snn_name
    title = title or (f"Spiking network evaluation: {model}" if model
                      else "Spiking network evaluation")
    sections = [
        _summary(results, model),
        _accuracy_section(results),
        _work_section(results),
        _layer_section(results),
        _calibration_section(program),
        _setup_section(results, program, snn_name, results_name),
    ]
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    footer = (f"Written by snncompiler {html.escape(__version__)} on {today} from "
              f"{html.escape(results_name)} ({len(steps)} values of T).")
    return _PAGE.format(title=html.escape(title), policy=_POLICY, css=_CSS, script=_SCRIPT,
                        body="\n".join(s for s in sections if s), footer=footer)


def _pct(value) -> str:
    return "&ndash;" if value is None else f"{100 * value:.2f}%"


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    """A table; cells are HTML already (escape text first); columns from ``numeric_from``
    are right-aligned."""
    head = "".join(f'<th{" class=num" if i >= numeric_from else ""}>{h}</th>'
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i >= numeric_from else ""}>{c}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"


def _summary(results: dict, model: str | None) -> str:
    steps = results["timesteps"]
    facts = [f"{results['n']} images", f"T = {', '.join(map(str, steps))}"]
    if results["ann_accuracy"] is not None:
        facts.append(f"ANN accuracy {_pct(results['ann_accuracy'])}")
    if results["snn_accuracy"] is not None:
        facts.append(f"SNN accuracy at T = {steps[-1]}: {_pct(results['snn_accuracy'][-1])}")
    if results["agreement"] is not None:
        facts.append(f"agreement with the ANN at T = {steps[-1]}: "
                     f"{_pct(results['agreement'][-1])}")
    what = f"<strong>{html.escape(model)}</strong>: " if model else ""
    return f'<p class="lead">{what}{"; ".join(facts)}.</p>'


def _accuracy_section(results: dict) -> str:
    steps = results["timesteps"]
    acc, agree, ann = results["snn_accuracy"], results["agreement"], results["ann_accuracy"]
    rows = [[str(t), _pct(None if acc is None else acc[i]),
             _pct(None if agree is None else agree[i]), _pct(ann),
             str(results["parameters_for"][i])] for i, t in enumerate(steps)]
    parts = ["<section id=accuracy><h2>Accuracy against T</h2>",
             "<p>Top-1 accuracy of the SNN's readout after T steps, its top-1 agreement with "
             "the ANN (the same class on the same image), and the ANN's accuracy (onnxruntime, "
             "same images). Each T runs with the neuron parameters calibrated for the "
             "calibrated T nearest to it (last column).</p>",
             _table(["T", "SNN accuracy", "agreement", "ANN accuracy", "parameters for T"],
                    rows)]
    series = []
    if acc is not None:
        series.append(Series("SNN accuracy", [(t, 100 * a) for t, a in zip(steps, acc)], 0))
    if agree is not None:
        series.append(Series("agreement with ANN", [(t, 100 * a) for t, a in zip(steps, agree)],
                             1))
    if ann is not None and acc is not None:
        series.append(Series("ANN accuracy", [(steps[0], 100 * ann), (steps[-1], 100 * ann)],
                             2, dashed=True))
    if series:
        values = [y for s in series for _, y in s.points]
        low = max(0.0, math.floor(min(values) / 5) * 5 - 5)
        svg = line_plot(series, plot_id="plot-accuracy", title="Accuracy and agreement",
                        x_label="timesteps T", y_label="%", x_log2=True, x_ticks=steps,
                        y_range=(low, 100.0))
        parts.append(_figure(svg, "Accuracy and agreement with the ANN against T (log scale); "
                                  "dashed: the ANN's accuracy."))
    else:
        parts.append("<p class=note>No labels and no ANN in the results: nothing to plot.</p>")
    parts.append("</section>")
    return "".join(parts)


def _work_section(results: dict) -> str:
    ops = results.get("synaptic_ops")
    if ops is None:
        return ""
    steps = results["timesteps"]
    macs = results.get("ann_macs") or 0
    ratio, rate = results.get("synaptic_ops_per_ann_mac"), results.get("mean_firing_rate")
    sparsity = results.get("activation_sparsity")
    rows = []
    for i, t in enumerate(steps):
        if ops[i] is None:
            continue
        rows.append([str(t), si(ops[i]), si(macs * t), f"{ratio[i]:.3f}" if ratio else "",
                     f"{rate[i]:.4f}" if rate else ""]
                    + ([f"{sparsity[i]:.4f}"] if sparsity else []))
    parts = ["<section id=work><h2>Work per image</h2>",
             f"<p>Synaptic operations: the additions the event-driven layers do over T steps "
             f"(each nonzero input times the outputs it reaches), per image. The ANN does "
             f"{si(macs)} multiply-accumulates (MACs) per image and pass, so T passes cost "
             f"MACs &times; T. Firing rate: spikes per neuron and step over all neuron layers; "
             f"activation sparsity (NeuroBench's): the fraction of zero neuron outputs, shown "
             f"where it is exactly 1 &minus; firing rate (at most one spike per neuron and "
             f"step). See docs/metrics.md in snncompiler.</p>"]
    if results.get("static_macs"):
        parts.append(f"<p>Plus {si(results['static_macs'])} MACs per image once, for the "
                     "layers on the input (computed before the first step).</p>")
    parts.append(_table(["T", "synaptic ops", "ANN MACs &times; T", "ops / MAC", "firing rate"]
                        + (["activation sparsity"] if sparsity else []), rows))
    if len(rows) < len(steps):
        parts.append("<p class=note>A T that shares its parameter set with a larger T runs in "
                     "that T's simulation and is counted with it.</p>")
    series = [Series("SNN synaptic ops", [(t, v) for t, v in zip(steps, ops) if v is not None],
                     0)]
    if macs:
        series.append(Series("ANN MACs \u00d7 T", [(t, macs * t) for t in steps], 1,
                             dashed=True))
    svg = line_plot(series, plot_id="plot-work", title="Operations per image",
                    x_label="timesteps T", y_label="operations per image", x_log2=True,
                    y_log10=True, x_ticks=steps, y_format=si)
    parts.append(_figure(svg, "Synaptic operations of the SNN against the ANN's MACs &times; "
                              "T, per image (log scales)."))
    parts.append("</section>")
    return "".join(parts)


def _layer_section(results: dict) -> str:
    layers = results.get("layers")
    activity = results.get("layer_activity")
    parts = ["<section id=layers><h2>Layers</h2>"]
    if layers:
        parts.append(_layers_from_diagnostics(layers))
    elif activity:
        rows = [row for row in activity if row.get("firing_rate") is not None]
        t = results.get("layer_activity_timesteps")
        series = [Series(f"T = {t}", [(i + 1, row["firing_rate"]) for i, row in
                                      enumerate(rows)], 0)]
        svg = line_plot(series, plot_id="plot-firing", title="Firing rate by depth",
                        x_label="neuron layer (depth)", y_label="spikes per neuron and step",
                        x_ticks=_depth_ticks(len(rows)))
        parts.append(_figure(svg, f"Each neuron layer's firing rate at T = {t}. Run snnc eval "
                                  "with --layers for every T and, with --onnx, the error."))
    else:
        return ""
    if activity:
        t = results.get("layer_activity_timesteps")
        rows = [[html.escape(row["layer"]),
                 "&ndash;" if row.get("neurons") is None else str(row["neurons"]),
                 "&ndash;" if row.get("firing_rate") is None else f"{row['firing_rate']:.4f}",
                 "&ndash;" if row.get("synaptic_ops") is None else si(row["synaptic_ops"]),
                 html.escape(", ".join(row["into"])) or "&ndash;"] for row in activity]
        parts.append(f"<h3>Activity at T = {t}</h3><p>Each neuron layer's firing rate and the "
                     "synaptic operations its spikes cause in the layers they go into, per "
                     "image.</p>")
        parts.append(_table(["layer", "neurons", "firing rate", "synaptic ops", "into"], rows))
    parts.append("</section>")
    return "".join(parts)


def _depth_ticks(count: int) -> list[float]:
    step = max(1, math.ceil(count / 12))
    return [float(i) for i in range(1, count + 1, step)]


def _layers_from_diagnostics(layers: list[dict]) -> str:
    """Firing rate (and error) against depth, one line per T, and the per-layer table."""
    steps = sorted({t for layer in layers for t in layer["timesteps"]})
    style = {t: k for k, t in enumerate(steps)}

    def by_t(key):
        out = []
        for t in steps:
            points = [(i + 1, layer[key][layer["timesteps"].index(t)])
                      for i, layer in enumerate(layers)
                      if layer.get(key) is not None and t in layer["timesteps"]]
            out.append(Series(f"T = {t}", points, style[t]))
        return out

    ticks = _depth_ticks(len(layers))
    parts = [_figure(line_plot(by_t("firing_rate"), plot_id="plot-firing",
                               title="Firing rate by depth", x_label="neuron layer (depth)",
                               y_label="spikes per neuron and step", x_ticks=ticks),
                     "Each neuron layer's firing rate at every T, in network order (the "
                     "numbers are those of the table below).")]
    has_error = any(layer.get("relative_error") is not None for layer in layers)
    if has_error:
        errors = by_t("relative_error")
        for s in errors:
            s.points = [(x, 100 * y) for x, y in s.points]
        parts.append(_figure(line_plot(errors, plot_id="plot-error",
                                       title="Error against the ANN by depth",
                                       x_label="neuron layer (depth)",
                                       y_label="relative error, %", x_ticks=ticks),
                             "Each layer's mean |rate &minus; ANN activation| over the ANN's "
                             "mean |activation|, at every T: a jump marks where accuracy is "
                             "lost."))
    header = ["#", "layer", "neurons"] + [f"rate T={t}" for t in steps]
    if has_error:
        header += [f"error T={t}" for t in steps]
    rows = []
    for i, layer in enumerate(layers):
        rate = dict(zip(layer["timesteps"], layer["firing_rate"]))
        row = [str(i + 1), html.escape(layer["node"]), str(layer["neurons"])]
        row += [f"{rate[t]:.4f}" if t in rate else "&ndash;" for t in steps]
        if has_error:
            error = dict(zip(layer["timesteps"], layer.get("relative_error") or []))
            row += [_pct(error.get(t)) for t in steps]
        rows.append(row)
    parts.append(_table(header, rows, numeric_from=2))
    return "".join(parts)


def _calibration_section(program: Program | None) -> str:
    if program is None:
        return ("<section id=calibration><h2>Calibration</h2><p class=note>Not included: pass "
                "--snn MODEL.snn to add the calibration summary from the .snn header (snnc "
                "eval's JSON does not carry it).</p></section>")
    summary = dict(program.calibration)
    layers = summary.pop("layers", None)
    parts = ["<section id=calibration><h2>Calibration</h2>",
             "<p>How the neurons' thresholds and initial potentials were chosen (DNI), from "
             "the .snn header.</p>", _definitions(summary)]
    if isinstance(layers, dict) and layers:
        steps = program.timesteps
        rows = []
        for name, layer in layers.items():
            if not isinstance(layer, dict):
                continue
            theta, error = layer.get("mean_theta"), layer.get("expected_error")
            rows.append([html.escape(str(name)), html.escape(_short_json(layer.get("channels"))),
                         *(_per_row(layer.get("levels"), steps)),
                         *(_per_row(theta, steps)), *(_per_row(error, steps))])
        header = (["layer", "channels"] + [f"levels T={t}" for t in steps]
                  + [f"mean &theta; T={t}" for t in steps]
                  + [f"expected error T={t}" for t in steps])
        parts.append("<h3>Per layer</h3>" + _table(header, rows))
    parts.append("</section>")
    return "".join(parts)


def _per_row(values, steps) -> list[str]:
    if not isinstance(values, list) or len(values) != len(steps):
        return ["&ndash;"] * len(steps)
    return [f"{v:.4g}" if isinstance(v, (int, float)) else "&ndash;" for v in values]


def _short_json(value, limit: int = 300) -> str:
    """A header value as plain text: objects as ``key: value; ...``, lists comma-separated."""
    if isinstance(value, dict):
        text = "; ".join(f"{key}: {_short_json(item, limit)}" for key, item in value.items())
    elif isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        text = ", ".join(_short_json(v, limit) for v in value)
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, sort_keys=True)
    return _shorten(text, limit)


def _definitions(items: dict) -> str:
    rows = "".join(f"<dt>{html.escape(str(key))}</dt><dd>{html.escape(_short_json(value))}</dd>"
                   for key, value in items.items())
    return f"<dl>{rows}</dl>"


def _setup_section(results: dict, program: Program | None, snn_name: str | None,
                   results_name: str) -> str:
    parts = ["<section id=setup><h2>Model, data and machine</h2>"]
    if program is not None:
        neurons = program.neuron_nodes()
        ops = Counter(node.op for node in program.nodes)
        model = {
            "file": snn_name or "",
            "source model": program.metadata.get("source", ""),
            "producer": program.producer,
            "inputs": ", ".join(f"{s.name} [N, {', '.join(map(str, s.shape))}]"
                                for s in program.inputs),
            "outputs": ", ".join(f"{s.name} [N, {', '.join(map(str, s.shape))}]"
                                 for s in program.outputs),
            "nodes": ", ".join(f"{count} {op}" for op, count in sorted(ops.items())),
            "neuron layers": f"{len(neurons)} ({sum(math.prod(n.shape) for n in neurons)} "
                             "neurons)",
            "calibrated for T": f"{program.timesteps} (default {program.default_timesteps})",
        }
        parts.append("<h3>Model</h3>" + _definitions(model))
    else:
        parts.append("<h3>Model</h3><p class=note>Pass --snn MODEL.snn to describe the model."
                     "</p>")
    data = {
        "results": results_name,
        "images": results["n"],
        "labels": "yes" if results["snn_accuracy"] is not None else "no",
        "ANN compared": "yes" if results["agreement"] is not None else "no",
        "evaluation time": f"{results['seconds']:.1f} s",
    }
    parts.append("<h3>Data</h3>" + _definitions(data))
    parts.append("<h3>Machine</h3><p>The machine that wrote this page (snnc eval's JSON does "
                 "not record the machine it ran on).</p>" + _definitions(machine()))
    parts.append("</section>")
    return "".join(parts)


def machine() -> dict[str, str]:
    """Platform, CPU count and the versions that matter for the numbers."""
    info = {"platform": platform.platform(), "processor": cpu_name(),
            "CPUs": str(os.cpu_count()),
            "Python": platform.python_version(), "snncompiler": __version__}
    for package in ("numpy", "numba", "onnx", "onnxruntime"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    return info


def write_report(results_path, output, *, program: Program | None = None,
                 snn_name: str | None = None, title: str | None = None) -> None:
    """Reads ``results_path``, renders the page and writes it atomically to ``output``."""
    from snncompiler.files import write_text_atomically

    results = load_results(results_path)
    page = render(results, results_name=Path(results_path).name, program=program,
                  snn_name=snn_name, title=title)
    write_text_atomically(output, page)


# Nothing may load: no network, no file; only the page's own style and script run.
_POLICY = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1a1a1a;
       max-width: 980px; margin: 2em auto; padding: 0 1.2em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
.lead { font-size: 1.05em; }
.note { color: #555; font-style: italic; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #e2e2e2; text-align: left; }
th { border-bottom: 2px solid #999; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
figure { margin: 1.2em 0; }
figcaption { font-size: 0.9em; color: #444; max-width: 680px; }
svg.plot { max-width: 100%; height: auto; display: block; }
svg .frame { fill: #fff; stroke: #999; }
svg .grid { stroke: #e6e6e6; }
svg .tick { font-size: 11px; fill: #444; }
svg .label, svg .legend { font-size: 12px; fill: #222; }
svg .title { font-size: 13px; font-weight: 600; fill: #222; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.15em 1.2em; }
dt { font-weight: 600; } dd { margin: 0; overflow-wrap: anywhere; }
footer { margin-top: 3em; color: #666; font-size: 0.85em; }
@media print { body { margin: 0; max-width: none; } h2 { break-after: avoid; }
               figure, table { break-inside: avoid; } }
"""

_SCRIPT = """
"use strict";
(function () {
  var problems = [];
  window.addEventListener("error", function (event) {
    var target = event.target || {};
    problems.push(event.message || ("failed to load " + (target.src || target.href || "?")));
  }, true);
  document.addEventListener("securitypolicyviolation", function (event) {
    problems.push("blocked " + event.blockedURI);
  });
  var consoleError = console.error;
  console.error = function () {
    problems.push(Array.prototype.join.call(arguments, " "));
    return consoleError.apply(console, arguments);
  };
  window.addEventListener("load", function () {
    var plots = Array.prototype.map.call(document.querySelectorAll("svg.plot"), function (svg) {
      var box = svg.getBoundingClientRect();
      return {id: svg.id, width: box.width, height: box.height};
    });
    document.getElementById("self-check").textContent =
      JSON.stringify({errors: problems, plots: plots});
  });
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="snncompiler">
<title>{title}</title>
<style>{css}</style>
<script>{script}</script>
</head>
<body>
<h1>{title}</h1>
{body}
<footer>{footer}</footer>
<pre id="self-check" hidden></pre>
</body>
</html>
"""
