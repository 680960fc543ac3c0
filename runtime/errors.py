"""One error hierarchy for the whole project.

It lives in the runtime because the runtime must not import the compiler; the compiler
re-exports it from :mod:`snncompiler.errors`. Every message should name the thing at fault
(node, op, field, path) and say what would help.
"""


class SnnError(Exception):
    """Base class of every error snncompiler raises on purpose."""


class FormatError(SnnError):
    """A ``.snn`` file is broken, hostile, or of a version this runtime cannot read."""


class UnsupportedOpError(SnnError):
    """The ONNX graph holds an op (or an op configuration) that cannot be converted."""


class ModelError(SnnError):
    """The ONNX model itself is invalid: unreadable, inconsistent or unsafe."""


class CalibrationError(SnnError):
    """Calibration data is missing, empty, or does not fit the model."""


class InputError(SnnError):
    """Data or arguments given by the user do not fit (shape, dtype, values, ranges)."""


class ClusterError(SnnError):
    """A Dask cluster cannot be reached, or cannot finish the work given to it."""
