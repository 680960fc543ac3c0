"""Re-export of the error hierarchy, which lives in the runtime (see runtime/errors.py)."""

from snncompiler.runtime.errors import (
    CalibrationError,
    ClusterError,
    FormatError,
    InputError,
    ModelError,
    SnnError,
    UnsupportedOpError,
)

__all__ = [
    "CalibrationError",
    "ClusterError",
    "FormatError",
    "InputError",
    "ModelError",
    "SnnError",
    "UnsupportedOpError",
]
