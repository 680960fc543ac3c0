"""SpikingJelly's ann2snn converter on the benchmark ANNs: the peer column of fidelity.md.

Runs in the torch venv, with SpikingJelly beside the pinned CPU torch; ``make fidelity``
sets that venv up (``.venv-torch``, see the Makefile) and runs this script as::

    .venv-torch/bin/python benchmarks/peers/spikingjelly_ann2snn.py \
        --timesteps 1,2,4,8,16,32,64          # docs/results/spikingjelly.json

Same ANNs (rebuilt as torch modules from the ONNX weights, checked against onnxruntime),
same calibration images (``--calib`` TRAIN images, same seed as ``benchmarks/fidelity.py``,
given to SpikingJelly as one batch, so its "max" is the maximum over all of them and its
"99.9%" the 99.9th percentile over all of them), same test images and T grid.

What SpikingJelly 2.0.0 does (``activation_based/ann2snn/recipes/rate_coding.py``,
``RateCodingRecipe`` with its defaults, which is what ``Converter`` documents for CNNs):
Conv-BN fusion; a ``VoltageHook`` after every ``nn.ReLU`` that records the max (or the
percentile) of the ReLU's output over the whole layer tensor, one value per layer; then each
ReLU becomes ``scale0 -> IFNode(v_threshold=1, v_reset=None) -> scale1`` (threshold equal to
that value, reset by subtraction, membrane starting at 0, no negative spikes). MaxPool2d is
kept as it is and applied to the (scaled) spike maps of every step, so a pooled output
spikes whenever any input of its window spikes: its rate is that of the OR of the window's
spike trains, which is at least (and usually more than) the largest input rate. Only with
``channel_wise=True, pre_spike_maxpool=True`` does it move the pool before the neuron. The
output layer accumulates its (analog) outputs; the prediction after t steps is the argmax
of their sum, so one run of 128 steps gives every T of the grid (there are no per-T
parameters).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fidelity import GRID, RESULTS, load_data, model_entries, preprocess  # noqa: E402


class OnnxModule(nn.Module):
    """The ONNX graph as torch modules (nn.ReLU for every Relu, so SpikingJelly finds them).

    Supports what the benchmark ANNs use: Conv, BatchNormalization, Relu, MaxPool, Add,
    GlobalAveragePool, Flatten, Gemm (and Identity of an initializer). ``forward`` walks a
    fixed node list, which torch.fx traces into a plain graph.
    """

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        graph = model.graph
        consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in graph.node:  # deduplicated initializers come back through Identity
            if node.op_type == "Identity" and node.input[0] in consts:
                consts[node.output[0]] = consts[node.input[0]]
        self.input_name = next(i.name for i in graph.input if i.name not in consts)
        self.output_name = graph.output[0].name
        self.layers = nn.ModuleDict()
        self.plan: list[tuple[str, str, list[str], str]] = []  # (kind, key, inputs, output)
        for index, node in enumerate(graph.node):
            if node.op_type == "Identity" and node.input[0] in consts:
                continue
            key = f"n{index}_{node.op_type.lower()}"
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            inputs = [n for n in node.input if n and n not in consts]
            self.layers[key] = self._module(node, attrs, consts)
            kind = "add" if node.op_type == "Add" else "module"
            self.plan.append((kind, key, inputs, node.output[0]))

    @staticmethod
    def _module(node, attrs, consts) -> nn.Module:
        op = node.op_type
        if op == "Conv":
            weight = torch.from_numpy(consts[node.input[1]].copy())
            pads = attrs.get("pads", [0, 0, 0, 0])
            if pads[:2] != pads[2:]:
                raise NotImplementedError(f"{node.name}: asymmetric padding")
            conv = nn.Conv2d(weight.shape[1] * attrs.get("group", 1), weight.shape[0],
                             tuple(weight.shape[2:]), tuple(attrs.get("strides", [1, 1])),
                             tuple(pads[:2]), tuple(attrs.get("dilations", [1, 1])),
                             attrs.get("group", 1), bias=len(node.input) > 2)
            conv.weight.data.copy_(weight)
            if len(node.input) > 2:
                conv.bias.data.copy_(torch.from_numpy(consts[node.input[2]].copy()))
            return conv
        if op == "BatchNormalization":
            scale, bias, mean, var = (torch.from_numpy(consts[n].copy()) for n in node.input[1:5])
            bn = nn.BatchNorm2d(len(scale), eps=attrs.get("epsilon", 1e-5))
            bn.weight.data.copy_(scale)
            bn.bias.data.copy_(bias)
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            return bn.eval()
        if op == "Relu":
            return nn.ReLU()
        if op == "MaxPool":
            pads = attrs.get("pads", [0, 0, 0, 0])
            return nn.MaxPool2d(tuple(attrs["kernel_shape"]), tuple(attrs.get("strides", [1, 1])),
                                tuple(pads[:2]), ceil_mode=bool(attrs.get("ceil_mode", 0)))
        if op == "GlobalAveragePool":
            return nn.AdaptiveAvgPool2d(1)
        if op == "Flatten":
            return nn.Flatten()
        if op == "Gemm":
            weight = consts[node.input[1]]
            if not attrs.get("transB", 0):
                weight = weight.T
            linear = nn.Linear(weight.shape[1], weight.shape[0])
            linear.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            linear.bias.data.copy_(torch.from_numpy(consts[node.input[2]].copy()))
            return linear
        if op == "Add":
            return nn.Identity()
        raise NotImplementedError(f"{node.name}: op {op}")

    def forward(self, x):
        values = {self.input_name: x}
        for kind, key, inputs, output in self.plan:
            if kind == "add":
                values[output] = values[inputs[0]] + values[inputs[1]]
            else:
                values[output] = self.layers[key](values[inputs[0]])
        return values[self.output_name]


@torch.no_grad()
def check_ann(ann: nn.Module, path: Path, x_test: np.ndarray,
              labels: np.ndarray) -> tuple[float, float]:
    """The rebuilt ANN's top-1 on ``x_test`` and its largest |output - onnxruntime's| on the
    first 256 of them (the check that the torch rebuild is the ONNX model)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probe = x_test[:256]
    diff = np.abs(ann(torch.from_numpy(probe)).numpy()
                  - session.run(None, {session.get_inputs()[0].name: probe})[0]).max()
    ann_acc = float(np.mean(np.concatenate([
        ann(torch.from_numpy(x_test[i:i + 1000])).argmax(1).numpy()
        for i in range(0, len(x_test), 1000)]) == labels))
    return ann_acc, float(diff)


def convert(ann: nn.Module, calibration: torch.Tensor, mode: str) -> nn.Module:
    from spikingjelly.activation_based import ann2snn
    from spikingjelly.activation_based.ann2snn.recipes.rate_coding import RateCodingRecipe

    recipe = RateCodingRecipe(dataloader=[calibration], mode=mode)
    return ann2snn.Converter(recipe=recipe, device="cpu").convert(copy.deepcopy(ann)).eval()


@torch.no_grad()
def accuracy_per_t(snn: nn.Module, x: np.ndarray, y: np.ndarray, steps: int,
                   batch: int = 500) -> np.ndarray:
    from spikingjelly.activation_based import functional

    correct = np.zeros(steps)
    for first in range(0, len(x), batch):
        images = torch.from_numpy(x[first:first + batch])
        labels = torch.from_numpy(y[first:first + batch])
        functional.reset_net(snn)
        total = None
        for t in range(steps):
            out = snn(images)
            total = out if total is None else total + out
            correct[t] += (total.argmax(dim=1) == labels).sum().item()
        functional.reset_net(snn)
    return correct / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vgg,resnet")
    parser.add_argument("--modes", default="max,99.9%")
    parser.add_argument("--calib", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timesteps", default=",".join(map(str, GRID)))
    parser.add_argument("--out", type=Path, default=RESULTS / "spikingjelly.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import spikingjelly

    grid = [int(t) for t in args.timesteps.split(",")]
    names = args.models.split(",")
    specs = model_entries(names)
    calib_u8, test_u8, labels = load_data(args.calib, args.seed, args.limit)
    results = {"tool": f"spikingjelly {getattr(spikingjelly, '__version__', '2.0.0')}",
               "torch": torch.__version__, "timesteps": grid,
               "calibration": {"images": args.calib, "seed": args.seed},
               "test": {"images": len(labels)}, "models": {}}
    if args.out.exists():
        results["models"] = json.loads(args.out.read_text()).get("models", {})
    for name in names:
        spec = specs[name]
        ann = OnnxModule(onnx.load(spec["path"])).eval()
        x_test = preprocess(test_u8, spec)
        calibration = torch.from_numpy(preprocess(calib_u8, spec))
        ann_acc, diff = check_ann(ann, spec["path"], x_test, labels)
        entry = {"ann_accuracy_torch": ann_acc, "max_abs_diff_vs_onnxruntime": diff,
                 "modes": {}}
        print(f"{name}: torch rebuild |diff| {diff:.2e}, ANN {100 * ann_acc:.2f}%", flush=True)
        for mode in args.modes.split(","):
            start = time.perf_counter()
            snn = convert(ann, calibration, mode)
            acc = accuracy_per_t(snn, x_test, labels, max(grid))
            entry["modes"][mode] = {"accuracy": {str(t): float(acc[t - 1]) for t in grid},
                                    "seconds": time.perf_counter() - start}
            print(f"  {mode:6s} " + " ".join(f"{100 * acc[t - 1]:6.2f}" for t in grid),
                  flush=True)
        results["models"][name] = entry
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
