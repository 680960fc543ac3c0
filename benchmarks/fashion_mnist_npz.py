"""Write Fashion-MNIST as the .npz files ``snnc`` reads (uint8 x in NCHW, int64 y).

    apt-get install dataset-fashion-mnist        # once; the idx files land in /usr/share
    python benchmarks/fashion_mnist_npz.py --out data/
    snnc MODEL.onnx -o model.snn --calib data/fmnist_calib.npz --scale 0.00392156862745098 \
        --mean 0.2860405969887955 --std 0.35302424451492254
    snnc eval model.snn --data data/fmnist_test.npz --onnx MODEL.onnx (same preprocessing)

The calibration set is drawn from the TRAIN split with a fixed seed, never from the test set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from snncompiler.datasets import load_fashion_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the .npz files")
    parser.add_argument("--calib", type=int, default=512, help="calibration images (train)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", type=Path, default=None, help="folder of the idx files")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    x_train, y_train = load_fashion_mnist("train", args.root)
    pick = np.random.default_rng(args.seed).choice(len(x_train), args.calib, replace=False)
    np.savez_compressed(args.out / "fmnist_calib.npz", x=x_train[pick, None], y=y_train[pick])
    x_test, y_test = load_fashion_mnist("test", args.root)
    np.savez_compressed(args.out / "fmnist_test.npz", x=x_test[:, None], y=y_test)
    print(f"wrote {args.out / 'fmnist_calib.npz'} ({args.calib} train images, seed "
          f"{args.seed}) and {args.out / 'fmnist_test.npz'} ({len(x_test)} test images)")


if __name__ == "__main__":
    main()
