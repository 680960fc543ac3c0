"""When should a conv run dense rather than event-driven? Measures the crossover.

For conv geometries of the benchmark networks, times the fused conv kernel
(:func:`snncompiler.runtime.kernels.conv_events`) on random ternary inputs of growing
density, forced event-driven and forced dense, one sample at a time on one thread, and
prints the density from which dense was faster, next to the one that
:func:`snncompiler.runtime.fused.dense_from` predicts from ``LISTING_COST``.

The model's constant is measured apart, as the two costs it compares: listing one entry
(:func:`snncompiler.runtime.kernels.list_events` on a full input) against one 8-lane
addition (the dense path's time over its additions). ``LISTING_COST`` is the median of
their ratio over the geometries, on the dev machine. A 1x1 conv that keeps every pixel
runs dense as a matrix product (:mod:`snncompiler.runtime.pointwise`), cheaper per
addition than the event-driven path: ``POINTWISE_COST`` is the median, over those
geometries, of its 8-lane addition against the event-driven path's on a full input (its
time less the listing).

    python benchmarks/dense_or_events.py [--out docs/results/dense_or_events.md]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from pathlib import Path

import numba
import numpy as np

from snncompiler.machine import cpu_name
from snncompiler.runtime import kernels as K
from snncompiler.runtime.fused import (
    LISTING_COST,
    POINTWISE_COST,
    conv_weight_layout,
    dense_from,
)
from snncompiler.runtime.pointwise import is_pointwise

# (C, H, O, kernel, stride): the convs on spikes of the Fashion-MNIST VGG and ResNet, two
# small ones where the additions per entry are few, and 1x1 convs of EfficientNet-Lite0
# (expansions and projections).
GEOMETRIES = [(16, 28, 16, 3, 1), (16, 14, 32, 3, 1), (32, 14, 32, 3, 1), (32, 7, 64, 3, 1),
              (64, 7, 64, 3, 1), (32, 14, 64, 3, 2), (16, 14, 32, 1, 1), (32, 14, 8, 1, 2),
              (24, 56, 144, 1, 1), (112, 14, 672, 1, 1), (672, 14, 112, 1, 1),
              (1152, 7, 192, 1, 1)]
DENSITIES = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0]


def _time(fn, trials: int = 60, reps: int = 5) -> float:
    """Best time of ``reps`` calls over ``trials`` tries, in microseconds per call."""
    fn()
    best = math.inf
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps * 1e6)
    return best


def measure(channels, size, out_channels, kernel, stride, rng) -> dict:
    pad = kernel // 2
    out_size = (size + 2 * pad - kernel) // stride + 1
    weight = conv_weight_layout(
        rng.normal(size=(out_channels, channels, kernel, kernel)).astype(np.float32), 1)
    bias = np.zeros(out_channels, np.float32)
    entries = channels * size * size
    scratch = (np.empty(entries, np.uint32), np.empty(size * size + 1, np.uint64),
               np.empty(2 * kernel * kernel, np.uint64), np.empty(kernel * kernel, np.int64),
               np.arange(entries, dtype=np.uint32))
    out = np.empty(out_size * out_size * out_channels, np.float32)
    rows = []
    for density in DENSITIES:
        x = (rng.choice([-1.0, 1.0], entries) * (rng.random(entries) < density)).astype(
            np.float32)
        times = [_time(lambda limit=limit, x=x: K.conv_events(
            x, channels, size, size, weight, bias, out_channels, kernel, kernel, stride,
            stride, pad, pad, 1, 1, out_size, out_size, *scratch, limit, out))
            for limit in (entries + 1, 0)]
        rows.append((density, *times))
    crossover = next((d for d, events, dense in rows if dense < events), None)
    # The model's two costs: listing an entry, and one 8-lane addition (dense, full input).
    full = np.ones(entries, np.float32)
    listing = _time(lambda: K.list_events(full, size * size, channels, *scratch[:2]))
    additions = kernel * kernel / stride ** 2 * math.ceil(out_channels / 8) * entries
    pointwise = is_pointwise(size, size, kernel, kernel, stride, stride, pad, pad, 1, 1,
                             out_size, out_size)
    return {"geometry": (channels, size, out_channels, kernel, stride), "rows": rows,
            "measured": crossover,
            "predicted": dense_from(channels, size, size, out_channels, (kernel, kernel),
                                    (stride, stride), pointwise=pointwise) / entries,
            "listing_ns": listing * 1e3 / entries,
            "addition_ns": rows[-1][2] * 1e3 / additions,
            # the event-driven path's 8-lane addition on a full input, its listing taken out
            "event_addition_ns": (rows[-1][1] - listing) * 1e3 / additions,
            "pointwise": pointwise}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = parser.parse_args()
    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    lines = [
        "# Dense or event-driven conv: where they cross",
        "",
        "Written by `benchmarks/dense_or_events.py`. One sample, one thread, random "
        "ternary input; best of 60 tries. Times in microseconds.",
        f"Machine: {cpu_name()}, "
        f"{platform.platform()}; numba {numba.__version__}. "
        f"`LISTING_COST` in the code: {LISTING_COST}; `POINTWISE_COST`: {POINTWISE_COST}.",
        "",
        "| C, H, O, kernel, stride | events at 10% / 50% / 100% | dense | crossover measured "
        "| predicted | listing, ns/entry | 8-lane addition, ns | ratio | event-driven "
        "8-lane addition, ns |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ratios, pointwise = [], []
    for geometry in GEOMETRIES:
        r = measure(*geometry, rng)
        at = {d: (e, n) for d, e, n in r["rows"]}
        measured = "none" if r["measured"] is None else f"{r['measured']:.2f}"
        # LISTING_COST is fitted on the paths that add alike (not the matrix product's).
        if r["pointwise"]:
            pointwise.append(r["addition_ns"] / r["event_addition_ns"])
        else:
            ratios.append(r["listing_ns"] / r["addition_ns"])
        line = (f"| {', '.join(map(str, r['geometry']))} | {at[0.1][0]:.1f} / {at[0.5][0]:.1f} "
                f"/ {at[1.0][0]:.1f} | {at[1.0][1]:.1f} | {measured} | "
                f"{r['predicted']:.2f} | {r['listing_ns']:.3f} | {r['addition_ns']:.3f} | "
                f"{r['listing_ns'] / r['addition_ns']:.2f} | {r['event_addition_ns']:.3f} |")
        lines.append(line)
        print(line, flush=True)
    lines += ["", f"Median ratio, 1x1 convs that keep every pixel left out (the "
              f"`LISTING_COST` this run measures): {float(np.median(ratios)):.2f}. Median "
              "8-lane addition of those 1x1 convs' dense path against their event-driven "
              f"path's (the `POINTWISE_COST` this run measures): "
              f"{float(np.median(pointwise)):.2f}.", "",
              "*crossover measured*: the lowest density tried at which dense was faster; "
              "*predicted*: `dense_from` / entries; *listing*: `list_events` on a full input, "
              "per entry; *8-lane addition*: the dense path's time at 100% over its 8-lane "
              "additions; *ratio*: the two; *event-driven 8-lane addition*: the event-driven "
              "path's time at 100%, less the listing, over the same additions. Near the "
              "crossover the two paths cost about the same, so on this shared machine the "
              "measured crossover moves by a step or two of the density grid from run to run; "
              "the ratios are the steadier measure.",
              f"Load average at the end: {[round(v, 2) for v in os.getloadavg()]}."]
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-1:]))


if __name__ == "__main__":
    main()
