"""Writes the golden ``.snn`` file of format version 1: ``v1_small.snn``.

Golden files pin what a released format version looks like on disk. The test suite loads
each one and compares it with the program :func:`build_v1_small` builds, so a reader change
that would break files already in users' hands fails loudly.

Once a format version is released its golden files are never regenerated, even when the
writer changes: the file on disk, not this script, is the reference. A new format version
gets new files (``v2_*.snn``) and its own builder next to this one; the old ones stay and
must keep loading. That is why this script refuses to overwrite an existing file.

Usage (from the repository root)::

    .venv/bin/python tests/runtime/golden/make_golden.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from snncompiler.runtime.errors import InputError
from snncompiler.runtime.format import save_program
from snncompiler.runtime.graph import Node, Program, TensorSpec

GOLDEN_DIR = Path(__file__).resolve().parent


def _values(shape: tuple[int, ...], scale: float, offset: float = 0.0) -> np.ndarray:
    # Small exact binary fractions from integers: no RNG whose stream could change.
    count = int(np.prod(shape))
    return ((np.arange(count) % 7 - 3) * scale + offset).astype(np.float32).reshape(shape)


def build_v1_small() -> Program:
    """Every op of format version 1, on a (2, 6, 6) input, calibrated for T in {8, 16}."""
    theta = np.array([[0.5, 0.75, 1.0, 1.25], [0.25, 0.5, 0.75, 1.0]], np.float32)
    nodes = [
        Node("conv1", "conv", ("image",), "c1",
             {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1},
             {"weight": _values((4, 2, 3, 3), 0.125), "bias": _values((4,), 0.0625)},
             (4, 6, 6)),
        Node("conv2", "conv", ("c1",), "c2",
             {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 2},
             {"weight": _values((4, 2, 1, 1), 0.25, 0.5), "bias": np.zeros(4, np.float32)},
             (4, 6, 6)),
        Node("bn", "affine", ("c2",), "b",
             {}, {"scale": _values((4, 1, 1), 0.125, 1.0), "shift": _values((4, 1, 1), 0.0625)},
             (4, 6, 6)),
        Node("sn1", "snm", ("b",), "s1",
             {"theta_neg": "minus_theta", "max_spikes_per_step": 2},
             {"theta": theta, "v0": theta / 2}, (4, 6, 6)),
        Node("mp", "maxpool", ("s1",), "m",
             {"kernel": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0], "ceil_mode": 0,
              "dilations": [1, 1]}, {}, (4, 3, 3)),
        Node("ap", "avgpool", ("s1",), "a",
             {"kernel": [3, 3], "strides": [3, 3], "pads": [0, 0, 0, 0], "ceil_mode": 0,
              "count_include_pad": 1}, {}, (4, 2, 2)),
        Node("gap", "global_avgpool", ("m",), "g", {}, {}, (4, 1, 1)),
        Node("skip", "add", ("a", "g"), "r", {}, {}, (4, 2, 2)),
        Node("flat", "reshape", ("r",), "f", {"shape": [16]}, {}, (16,)),
        Node("fc", "gemm", ("f",), "z", {},
             {"weight": _values((16, 3), 0.0625), "bias": _values((3,), 0.125)}, (3,)),
        Node("scale", "affine", ("z",), "logits", {},
             {"scale": np.array(2.0, np.float32), "shift": _values((3,), 0.5)}, (3,)),
    ]
    return Program(
        inputs=[TensorSpec("image", (2, 6, 6))],
        outputs=[TensorSpec("logits", (3,))],
        nodes=nodes,
        timesteps=[8, 16],
        default_timesteps=8,
        producer="snncompiler golden v1",
        calibration={"method": "dni", "percentile": 99.9, "samples": 16},
        metadata={"source": "make_golden.py", "readout": ["logits"]},
    )


def main() -> int:
    path = GOLDEN_DIR / "v1_small.snn"
    try:
        save_program(build_v1_small(), path)  # never overwrite=True: see the module docstring
    except InputError:
        print(f"{path} exists; golden files are never regenerated once released",
              file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
