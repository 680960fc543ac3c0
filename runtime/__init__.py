"""The spiking runtime: load a ``.snn`` file and run it, with numpy and numba only.

This package never imports the compiler side (onnx, onnxruntime, onnx-graphsurgeon, click),
so an edge application needs nothing else. Loading a ``.snn`` file never unpickles.

Example:
    >>> from snncompiler import runtime
    >>> net = runtime.load("model.snn")
    >>> readout = net.run(images, timesteps=32)   # (32, N, classes)
"""

from snncompiler.runtime.engine import SpikingNetwork
from snncompiler.runtime.errors import FormatError, InputError, SnnError
from snncompiler.runtime.graph import Node, Program, TensorSpec, Value


def load(path, **options) -> SpikingNetwork:
    """Reads and validates a ``.snn`` file and plans it for execution.

    Args:
        path: The ``.snn`` file.
        **options: Passed to :class:`SpikingNetwork`: ``memory_budget`` (bytes of
            activations one time chunk may use).

    Raises:
        FormatError: The file is not a valid ``.snn`` file; the message names the problem.
    """
    from snncompiler.runtime.format import load_program

    return SpikingNetwork(load_program(path), **options)


__all__ = [
    "FormatError",
    "InputError",
    "Node",
    "Program",
    "SnnError",
    "SpikingNetwork",
    "TensorSpec",
    "Value",
    "load",
]
