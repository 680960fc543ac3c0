"""Write Fashion-MNIST as the .npz files ``snnc`` reads (uint8 x in NCHW, int64 y).

    apt-get install dataset-fashion-mnist        # once; the idx files land in /usr/share
    python benchmarks/fashion_mnist_npz.py --out data/
    snnc MODEL.onnx -o model.snn --calib data/fmnist_calib.npz --scale 0.00392156862745098 \
        --mean 0.2860405969887955 --std 0.35302424451492254
    snnc eval model.snn --data data/fmnist_test.npz --onnx MODEL.onnx (same preprocessing)

The calibration set is drawn from the TRAIN split with a fixed seed, never from the test set.
``train_fashion_mnist.py`` writes the demo's package data with the same two functions, so
``--calib 300 --seed 0`` gives the shipped calibration images. numpy only, no torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from snncompiler.datasets import load_fashion_mnist


def calibration_indices(train_size: int, count: int, seed: int) -> np.ndarray:
    """Which train images make the calibration set: ``count`` distinct ones, drawn with
    ``seed`` (the demo's shipped set is ``calibration_indices(60000, 300, 0)``)."""
    return np.random.default_rng(seed).choice(train_size, count, replace=False)


def save_images(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Writes uint8 images ``(N, 28, 28)`` as ``x`` ``(N, 1, 28, 28)``, labels as int64 ``y``."""
    np.savez_compressed(path, x=images[:, None], y=labels.astype(np.int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the .npz files")
    parser.add_argument("--calib", type=int, default=512, help="calibration images (train)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", type=Path, default=None, help="folder of the idx files")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    x_train, y_train = load_fashion_mnist("train", args.root)
    pick = calibration_indices(len(x_train), args.calib, args.seed)
    save_images(args.out / "fmnist_calib.npz", x_train[pick], y_train[pick])
    x_test, y_test = load_fashion_mnist("test", args.root)
    save_images(args.out / "fmnist_test.npz", x_test, y_test)
    print(f"wrote {args.out / 'fmnist_calib.npz'} ({args.calib} train images, seed "
          f"{args.seed}) and {args.out / 'fmnist_test.npz'} ({len(x_test)} test images)")


if __name__ == "__main__":
    main()
