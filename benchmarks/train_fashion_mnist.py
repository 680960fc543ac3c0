"""Train and export the Fashion-MNIST models that snncompiler ships and benchmarks.

torch is not a dependency of the project, so this script runs by hand in a venv of its own,
from the repository root::

    python3 -m venv .venv-torch
    .venv-torch/bin/pip install torch==2.13.0 onnx onnxscript numpy onnxruntime
    .venv-torch/bin/pip install -e .
    .venv-torch/bin/python benchmarks/train_fashion_mnist.py --model all

torch must stay pinned (2.13.0 is the CPU wheel); ``pip install -e .`` brings the project and
its own dependencies (numba among them: ``snncompiler.errors`` imports the runtime).

The shipped files were made with Python 3.11.7, torch 2.13.0+cpu, onnx 1.23.2,
onnxscript 0.7.2, onnxruntime 1.32.0, numpy 2.4.6 and numba 0.68.1, on one CPU thread. Data
comes from Debian's ``dataset-fashion-mnist`` through the project's own loader
(``snncompiler.datasets``).

What each ``--model`` writes:

- ``demo``: ``snncompiler/data/demo_cnn.onnx``, ``fashion_mnist_calib.npz`` (300 train
  images, fixed seed), ``fashion_mnist_test.npz`` (the first 1000 test images) and
  ``demo.json`` (preprocessing, classes, onnxruntime accuracy on those 1000 images).
- ``vgg``, ``resnet``: ``benchmarks/models/fmnist_{vgg,resnet}.onnx``.

Each run also updates its entry in ``benchmarks/models/models.json`` (parameters, accuracy,
versions, exporter, time, machine). Inputs are ``(uint8 / 255 - mean) / std`` with the
train split's mean and std, shape ``(N, 1, 28, 28)``, input ``input``, output ``logits``.

Exporters in torch 2.13, as checked on the three models below at opset 17:

- TorchScript exporter (``dynamo=False``, deprecated but present): with the default
  ``do_constant_folding=True`` it folds eval-mode BatchNormalization into the Conv; with
  ``do_constant_folding=False`` BatchNormalization stays and ``torch.flatten`` is one
  ``Flatten`` node. It deduplicates initializers, so parameters with equal values (say an
  untrained BatchNorm's scale and running variance) turn into ``Identity`` nodes, which the
  project's ``drop_identity`` pass removes; eval-mode Dropout is left out of the graph.
- dynamo exporter (``dynamo=True``, the default): implements opset 18 and down-converts to
  17 with the onnx C API. With ``optimize=True`` (default) it folds BatchNormalization too;
  with ``optimize=False`` BatchNormalization stays, but each one comes with Shape, Expand and
  CastLike nodes and the flatten becomes Shape/Squeeze/Concat/Reshape for the dynamic batch.

So the TorchScript exporter with constant folding off is used (``--exporter torchscript``,
the default); ``--exporter dynamo`` exports with ``optimize=False`` instead.

Determinism: fixed seeds, one thread, ``torch.use_deterministic_algorithms(True)``. The test
split is evaluated after every epoch only for the log; the exported model is always the one
after the last epoch, so no choice is made on the test set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F

# The sibling script (this script's folder is on sys.path): the .npz export, written once.
from fashion_mnist_npz import calibration_indices, save_images
from torch import nn

from snncompiler.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist
from snncompiler.machine import cpu_name

REPO = Path(__file__).resolve().parent.parent
PACKAGE_DATA = REPO / "snncompiler" / "data"
BENCH_MODELS = REPO / "benchmarks" / "models"
OPSET = 17
SCALE = 1.0 / 255.0
CALIB_SIZE = 300
TEST_SUBSET = 1000


# ----------------------------------------------------------------------------- models


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    """3x3 conv without bias (BatchNorm supplies it), then BatchNorm."""
    return [nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False), nn.BatchNorm2d(c_out)]


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus a skip (identity, or 1x1 conv-bn when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(c_in, c_out, stride), nn.ReLU(), *conv_bn(c_out, c_out))
        self.skip = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class DemoCNN(nn.Module):
    """Small CNN for the package demo: every op the converter cares about, few MACs.

    conv(1->16)@28 - pool - conv(16->32)@14 - pool - residual block(32)@7 - flatten - linear.
    """

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn(1, 16), nn.ReLU(), nn.MaxPool2d(2),
            *conv_bn(16, 32), nn.ReLU(), nn.MaxPool2d(2),
            BasicBlock(32, 32),
        )  # fmt: skip
        self.classifier = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch.flatten exports as a single Flatten node (x.view would add Shape/Gather/Concat).
        return self.classifier(torch.flatten(self.features(x), 1))


class VGG(nn.Module):
    """VGG-style: three stages of two conv-bn-relu and a max pool, then a two-layer head."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), hidden: int = 128):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for width in widths:
            layers += [*conv_bn(c_in, width), nn.ReLU(), *conv_bn(width, width), nn.ReLU()]
            layers.append(nn.MaxPool2d(2))
            c_in = width
        self.features = nn.Sequential(*layers)
        side = 28 >> len(widths)
        self.classifier = nn.Sequential(
            nn.Linear(c_in * side * side, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class ResNet(nn.Module):
    """ResNet-style: conv stem and max pool, basic-block stages, global average pool, linear.

    The stem pools to 14x14 at once because 3x3 convs at 28x28 cost most of the time on a CPU;
    each stage after the first halves the side with a stride-2 block (1x1 projection skip).
    """

    def __init__(
        self, stem: int = 16, widths: tuple[int, ...] = (32, 64), blocks: tuple[int, ...] = (1, 2)
    ):
        super().__init__()
        layers: list[nn.Module] = [*conv_bn(1, stem), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = stem
        for i, (width, count) in enumerate(zip(widths, blocks)):
            for j in range(count):
                layers.append(BasicBlock(c_in, width, stride=2 if i > 0 and j == 0 else 1))
                c_in = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)  # exports as GlobalAveragePool
        self.classifier = nn.Linear(c_in, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


# name -> (constructor, epochs, peak learning rate, output ONNX path)
MODELS = {
    "demo": (DemoCNN, 10, 0.1, PACKAGE_DATA / "demo_cnn.onnx"),
    "vgg": (VGG, 15, 0.1, BENCH_MODELS / "fmnist_vgg.onnx"),
    "resnet": (ResNet, 15, 0.1, BENCH_MODELS / "fmnist_resnet.onnx"),
}


# ----------------------------------------------------------------------------- data


def preprocess(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 (N, 28, 28) or (N, 1, 28, 28) -> float32 (N, 1, 28, 28), as demo.json documents."""
    x = x.reshape(len(x), 1, 28, 28)
    return ((x.astype(np.float64) * SCALE - mean) / std).astype(np.float32)


def augmented_batch(
    padded: torch.Tensor, index: torch.Tensor, gen: torch.Generator, mean: float, std: float
) -> torch.Tensor:
    """Random 28x28 crops of 2-pixel zero-padded images, each flipped left-right with p=1/2.

    One gather for the whole batch: per image, the rows and columns it reads.
    """
    n = len(index)
    offsets = torch.randint(0, 5, (2, n), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    ramp = torch.arange(28)
    rows = offsets[0, :, None] + ramp
    cols = offsets[1, :, None] + torch.where(flip[:, None], ramp.flip(0), ramp)
    x = padded[index[:, None, None], rows[:, :, None], cols[:, None, :]]
    return ((x.float() * SCALE - mean) / std).unsqueeze(1)


# ----------------------------------------------------------------------------- training


def evaluate(model: nn.Module, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Logits of ``model`` in eval mode on preprocessed float32 inputs."""
    model.eval()
    with torch.no_grad():
        return np.concatenate(
            [model(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
        )


def train(
    name: str,
    data: dict,
    epochs: int,
    lr: float,
    seed: int,
    batch: int = 128,
) -> tuple[nn.Module, dict[str, float], list[dict]]:
    """SGD (Nesterov, weight decay 5e-4) with a one-cycle schedule and label smoothing 0.1.

    Returns the trained model (eval mode), the training time (wall and CPU seconds) and the
    epoch log.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    build = MODELS[name][0]
    # channels_last is about 20% faster for these convs on x86 CPUs; export converts back.
    model = build().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x_train, y_train = data["x_train"], data["y_train"]
    steps = (len(x_train) + batch - 1) // batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps)
    padded = F.pad(torch.from_numpy(x_train), (2, 2, 2, 2))
    labels = torch.from_numpy(y_train)
    mean, std = data["mean"], data["std"]

    log = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        loss_sum, correct = 0.0, 0
        for i in range(steps):
            index = order[i * batch : (i + 1) * batch]
            xb = augmented_batch(padded, index, gen, mean, std)
            xb = xb.contiguous(memory_format=torch.channels_last)
            out = model(xb)
            loss = F.cross_entropy(out, labels[index], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(index)
            correct += int((out.argmax(1) == labels[index]).sum())
        test_acc = float((evaluate(model, data["x_test"]).argmax(1) == data["y_test"]).mean())
        entry = {
            "epoch": epoch + 1,
            "train_loss": round(loss_sum / len(x_train), 4),
            "train_acc": round(correct / len(x_train), 4),
            "test_acc": test_acc,
            "seconds": round(time.perf_counter() - start, 1),
        }
        log.append(entry)
        print(f"[{name}] {json.dumps(entry)}", flush=True)
    # CPU time too: the machine is shared, so wall time depends on what else runs.
    seconds = {
        "wall": round(time.perf_counter() - start, 1),
        "cpu": round(time.process_time() - cpu_start, 1),
    }
    model.eval()
    return model.to(memory_format=torch.contiguous_format), seconds, log


# ----------------------------------------------------------------------------- export


def export_onnx(model: nn.Module, path: Path, exporter: str) -> None:
    """Exports with a dynamic batch, keeping BatchNormalization nodes (see module docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = (torch.zeros(2, 1, 28, 28),)
    names = {"input_names": ["input"], "output_names": ["logits"]}
    if exporter == "torchscript":
        torch.onnx.export(
            model, example, str(path), dynamo=False, opset_version=OPSET,
            do_constant_folding=False, dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
            **names,
        )  # fmt: skip
    else:
        batch = torch.export.Dim("N")
        program = torch.onnx.export(
            model, example, dynamo=True, opset_version=OPSET, optimize=False,
            dynamic_shapes=({0: batch},), **names,
        )  # fmt: skip
        program.save(str(path))
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def ort_logits(path: Path, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Logits from onnxruntime (one thread: the machine is shared)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.concatenate(
        [sess.run(["logits"], {"input": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    )


def op_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


# ----------------------------------------------------------------------------- main


def load_data(root: str | None) -> dict:
    x_train, y_train = load_fashion_mnist("train", root)
    x_test, y_test = load_fashion_mnist("test", root)
    # Statistics over every pixel of the train split, in [0, 1].
    scaled = x_train.astype(np.float64) * SCALE
    mean, std = float(scaled.mean()), float(scaled.std())
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": preprocess(x_test, mean, std),
        "x_test_u8": x_test,
        "y_test": y_test,
        "mean": mean,
        "std": std,
    }


def write_demo_data(path: Path, data: dict, seed: int) -> dict:
    """Writes the calibration and test subsets and demo.json next to the demo model."""
    pick = calibration_indices(len(data["x_train"]), CALIB_SIZE, seed)
    save_images(PACKAGE_DATA / "fashion_mnist_calib.npz", data["x_train"][pick],
                data["y_train"][pick])
    x_sub, y_sub = data["x_test_u8"][:TEST_SUBSET], data["y_test"][:TEST_SUBSET]
    save_images(PACKAGE_DATA / "fashion_mnist_test.npz", x_sub, y_sub)
    logits = ort_logits(path, preprocess(x_sub, data["mean"], data["std"]))
    meta = {
        "model": path.name,
        "calibration": "fashion_mnist_calib.npz",
        "test": "fashion_mnist_test.npz",
        "scale": SCALE,
        "mean": data["mean"],
        "std": data["std"],
        "classes": list(FASHION_MNIST_CLASSES),
        "ann_accuracy_1000": float((logits.argmax(1) == y_sub).mean()),
        "trained_by": "benchmarks/train_fashion_mnist.py --model demo",
    }
    (PACKAGE_DATA / "demo.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def run(name: str, data: dict, args: argparse.Namespace) -> dict:
    _, default_epochs, lr, path = MODELS[name]
    epochs = args.epochs or default_epochs
    model, seconds, log = train(name, data, epochs, lr, args.seed)
    export_onnx(model, path, args.exporter)

    torch_out = evaluate(model, data["x_test"])
    ort_out = ort_logits(path, data["x_test"])
    ops = op_counts(path)
    record = {
        "onnx": str(path.relative_to(REPO)),
        "architecture": MODELS[name][0].__doc__.splitlines()[0],
        "parameters": sum(p.numel() for p in model.parameters()),
        "onnx_bytes": path.stat().st_size,
        "ort_accuracy_test10k": float((ort_out.argmax(1) == data["y_test"]).mean()),
        "torch_accuracy_test10k": float((torch_out.argmax(1) == data["y_test"]).mean()),
        "max_abs_diff_torch_vs_ort": float(np.abs(torch_out - ort_out).max()),
        "epochs": epochs,
        "seed": args.seed,
        "training_seconds": seconds,
        "recipe": f"SGD nesterov lr {lr} one-cycle, wd 5e-4, batch 128, label smoothing 0.1, "
        "random crop (pad 2) + horizontal flip",
        "preprocessing": {"scale": SCALE, "mean": data["mean"], "std": data["std"]},
        "torch": torch.__version__,
        "onnx_version": onnx.__version__,
        "onnxruntime": ort.__version__,
        "exporter": f"{args.exporter} (opset {OPSET})",
        "onnx_ops": ops,
        "machine": {
            "platform": platform.platform(),
            "processor": cpu_name(),
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "log": log,
    }
    print(f"[{name}] {json.dumps({k: v for k, v in record.items() if k != 'log'})}", flush=True)
    if name == "demo":
        meta = write_demo_data(path, data, args.seed)
        print(f"[demo] ann_accuracy_1000 = {meta['ann_accuracy_1000']}", flush=True)

    BENCH_MODELS.mkdir(parents=True, exist_ok=True)
    summary_path = BENCH_MODELS / "models.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary[name] = record
    summary_path.write_text(json.dumps(dict(sorted(summary.items())), indent=2) + "\n")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=[*MODELS, "all"], default="demo")
    parser.add_argument("--epochs", type=int, default=0, help="override the model's default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exporter", choices=["torchscript", "dynamo"], default="torchscript")
    parser.add_argument("--root", default=None, help="folder of the Fashion-MNIST idx files")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared machine)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    data = load_data(args.root)
    print(f"train mean {data['mean']!r} std {data['std']!r}", flush=True)
    for name in MODELS if args.model == "all" else [args.model]:
        run(name, data, args)


if __name__ == "__main__":
    main()
