"""The spiking runtime: load a ``.snn`` file and run it, with numpy and numba only.

This package never imports the compiler side (onnx, onnxruntime, onnx-graphsurgeon, click),
so an edge application needs nothing else. Loading a ``.snn`` file never unpickles.

Example:
    >>> from snncompiler import runtime
    >>> net = runtime.load("model.snn")
    >>> readout = net.run(images, timesteps=32)   # (32, N, classes)
"""

from pathlib import Path

from snncompiler.runtime import kernel_cache

# Before any kernel is loaded: numba would not see an edit to a module that a kernel inlines.
kernel_cache.drop_stale(Path(__file__).parent)

from snncompiler.runtime.engine import SpikingNetwork  # noqa: E402
from snncompiler.runtime.errors import FormatError, InputError, SnnError  # noqa: E402
from snncompiler.runtime.graph import Node, Program, TensorSpec, Value  # noqa: E402


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
