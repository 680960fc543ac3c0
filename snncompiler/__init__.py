"""snncompiler: convert trained ANNs (ONNX) into spiking neural networks with DNISNM.

This module stays light on purpose: importing :mod:`snncompiler.runtime` must not pull in
onnx, onnxruntime, onnx-graphsurgeon or click, so nothing heavy is imported here.
"""

__version__ = "0.1.0"
