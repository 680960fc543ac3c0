"""Writes the PyTorch exporter fixtures of tests/fixtures/exporters/ (run by hand).

    .venv-torch/bin/python tools/export_fixtures/pytorch_fixtures.py

Versions this was run with (pinned; other versions may export other graphs, which is the
point of keeping the files): torch 2.13.0 (CPU), onnx 1.23.2, onnxscript 0.7.2.

One tiny CNN with random weights (seeded) that holds the layers people use, exported with
the TorchScript exporter (``dynamo=False``) at opsets 9, 11, 13 and 17 and with the dynamo
exporter at opsets 18 and 21. The weights mean nothing; the tests check that each file
converts and that the SNN converges to the model's output on random inputs. Next to each
``.onnx`` file, ``<name>.npz`` holds inputs ``x`` and PyTorch's outputs ``y`` for them: the
reference where onnxruntime cannot run the file itself (opset 9 spells ``ceil_mode`` as an
end padding as large as the kernel, which onnxruntime refuses).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "exporters"
EXPECTED = {"torch": "2.13.0", "onnx": "1.23.2", "onnxscript": "0.7.2"}


class Zoo(nn.Module):
    """Conv/BN/ReLU, ReLU6, LeakyReLU, PReLU, depthwise and dilated conv, asymmetric zero
    pad, max pool with ceil_mode and padding, average pool without padded cells, nearest
    upsampling, concat, a residual add, global average pool, flatten, linear, softmax."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.prelu = nn.PReLU(8)
        self.strided = nn.Conv2d(8, 12, 3, stride=2)  # after an explicit (0, 1, 0, 1) pad
        self.branch = nn.Conv2d(12, 4, 1)
        self.up = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))                                  # 8 x 16 x 16
        x = F.relu6(self.depthwise(x)) + x                                 # residual
        x = F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)        # 8 x 8 x 8
        x = self.prelu(x)
        x = F.leaky_relu(self.strided(F.pad(x, (0, 1, 0, 1))), 0.1)        # 12 x 4 x 4
        x = torch.cat([x, F.relu(self.branch(x))], dim=1)                  # 16 x 4 x 4
        x = F.interpolate(x, scale_factor=2, mode="nearest")               # 16 x 8 x 8
        x = F.relu(self.up(x))
        x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)  # 8 x 4 x 4
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return torch.softmax(self.fc(x), dim=1)


def model() -> Zoo:
    torch.manual_seed(0)
    net = Zoo()
    with torch.no_grad():  # running statistics that are not the identity
        net.bn.running_mean.uniform_(-0.3, 0.3)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.3, 0.3)
    return net.eval()


def main() -> None:
    found = {"torch": torch.__version__.split("+")[0]}
    import onnx
    import onnxscript

    found.update(onnx=onnx.__version__, onnxscript=onnxscript.__version__)
    if found != EXPECTED:
        print(f"warning: expected {EXPECTED}, running {found}", file=sys.stderr)
    OUT.mkdir(parents=True, exist_ok=True)
    net, x = model(), torch.randn(2, 3, 16, 16)
    reference = torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        expected = net(reference).numpy()
    for opset in (9, 11, 13, 17):
        path = OUT / f"torch_torchscript_opset{opset}.onnx"
        torch.onnx.export(net, (x,), path, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
        save_reference(path, reference, expected)
    for opset in (18, 21):
        path = OUT / f"torch_dynamo_opset{opset}.onnx"
        batch = torch.export.Dim("batch")
        program = torch.onnx.export(net, (x,), dynamo=True, opset_version=opset,
                                    input_names=["x"], output_names=["y"],
                                    dynamic_shapes=({0: batch},), external_data=False)
        program.save(str(path))
        save_reference(path, reference, expected)


def save_reference(path: Path, x, y) -> None:
    import numpy as np

    np.savez(path.with_suffix(".npz"), x=x.numpy(), y=y)
    print("wrote", path, path.stat().st_size, "bytes, and its reference outputs")


if __name__ == "__main__":
    main()
