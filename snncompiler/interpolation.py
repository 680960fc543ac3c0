"""ONNX Resize along one axis as a matrix: ``out = R @ x``, for the ``resize`` runtime op.

Nearest and linear resizing are linear maps of the input, separable over axes, so each
resized axis is one ``(out_size, in_size)`` matrix: one-hot rows for ``nearest``, two
weights summing to 1 for ``linear``. The coordinate transforms and rounding modes follow
the ONNX Resize specification (opset 11 to 17).
"""

from __future__ import annotations

import math

import numpy as np

COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                    "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
MODES = ("nearest", "linear")


def source_coordinates(out_size: int, in_size: int, scale: float, mode: str) -> np.ndarray:
    """The input coordinate of every output index (ONNX ``coordinate_transformation_mode``)."""
    x = np.arange(out_size, dtype=np.float64)
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_size > 1 else np.zeros(out_size)
    if mode == "align_corners":
        return x * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros(out_size)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    raise ValueError(f"coordinate_transformation_mode {mode!r}; known: {COORDINATE_MODES}")


def _round(coords: np.ndarray, nearest_mode: str) -> np.ndarray:
    if nearest_mode == "floor":
        return np.floor(coords)
    if nearest_mode == "ceil":
        return np.ceil(coords)
    halfway = coords - np.floor(coords) == 0.5
    if nearest_mode == "round_prefer_floor":
        return np.where(halfway, np.floor(coords), np.round(coords))
    if nearest_mode == "round_prefer_ceil":
        return np.where(halfway, np.ceil(coords), np.round(coords))
    raise ValueError(f"nearest_mode {nearest_mode!r}; known: {NEAREST_MODES}")


def resize_matrix(in_size: int, out_size: int, scale: float, mode: str, coordinate_mode: str,
                  nearest_mode: str = "round_prefer_floor") -> np.ndarray:
    """``(out_size, in_size)`` float32 matrix of ONNX Resize along one axis.

    Args:
        in_size, out_size: Axis lengths.
        scale: The axis's scale (``out_size / in_size`` when the model gives sizes).
        mode: ``"nearest"`` or ``"linear"``.
        coordinate_mode: ONNX ``coordinate_transformation_mode``.
        nearest_mode: ONNX ``nearest_mode`` (nearest only).
    """
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale {scale} must be positive")
    coords = source_coordinates(out_size, in_size, scale, coordinate_mode)
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    if mode == "nearest":
        index = np.clip(_round(coords, nearest_mode), 0, in_size - 1).astype(np.int64)
        matrix[rows, index] = 1.0
    elif mode == "linear":
        # Neighbours outside the input repeat its edge (ONNX reference, onnxruntime).
        low = np.floor(coords)
        ratio = coords - low
        below = np.clip(low, 0, in_size - 1).astype(np.int64)
        above = np.clip(low + 1, 0, in_size - 1).astype(np.int64)
        np.add.at(matrix, (rows, below), 1.0 - ratio)
        np.add.at(matrix, (rows, above), ratio)
    else:
        raise ValueError(f"mode {mode!r}; known: {MODES}")
    return matrix.astype(np.float32)
