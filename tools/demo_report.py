"""Rebuilds docs/results/report_demo.html and its first plot from the shipped demo.

    .venv/bin/python tools/demo_report.py [--out docs/results]

Runs, in a scratch folder, what the README describes: ``snnc demo`` (the demo CNN compiled
with the default options on the shipped calibration images), ``snnc eval`` of the shipped
test images at T = 1, 2, 4, 8, 16, 32 with ``--layers --json``, then ``snnc report``. Writes
the page as ``report_demo.html`` and cuts its accuracy plot out as
``report_demo_accuracy.svg``, with the page's stylesheet inside the ``<svg>`` so that it
renders alone.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "snncompiler" / "data"
# The demo's preprocessing (snncompiler/data/demo.json), as the README's example passes it.
PREPROCESSING = ["--scale", "0.00392156862745098", "--mean", "0.2860405969887955",
                 "--std", "0.35302424451492254"]


def snnc(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "snncompiler.cli", *args], check=True)


def cut_plot(page: str, plot_id: str) -> str:
    """The ``<svg>`` of ``plot_id`` from ``page``, standalone: namespaced, with the page's
    ``<style>`` inside it."""
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    svg = re.search(rf'<svg class="plot" id="{re.escape(plot_id)}".*?</svg>', page, re.S)
    if style is None or svg is None:
        sys.exit(f"the report has no <style> or no plot {plot_id!r}")
    head, body = svg.group(0).split(">", 1)
    head = head.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
    return f"{head}><style>{style.group(1)}</style>{body}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        snnc("demo", "--out", str(folder / "demo"))
        snn = folder / "demo" / "demo.snn"
        snnc("eval", str(snn), "--data", str(DATA / "fashion_mnist_test.npz"), "--onnx",
             str(DATA / "demo_cnn.onnx"), *PREPROCESSING, "-T", "1,2,4,8,16,32", "--layers",
             "--json", str(folder / "results.json"), "-q")
        page = args.out / "report_demo.html"
        snnc("report", str(folder / "results.json"), "-o", str(page), "--snn", str(snn),
             "--force")
    plot = args.out / "report_demo_accuracy.svg"
    plot.write_text(cut_plot(page.read_text(), "plot-accuracy"))
    print(f"wrote {page} and {plot}")


if __name__ == "__main__":
    main()
