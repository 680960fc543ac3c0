"""Writes the MXNet fixture of tests/fixtures/exporters/ (run by hand).

    python3.11 -m venv .venv-mxnet
    .venv-mxnet/bin/pip install mxnet==1.9.1 "numpy<1.24" "onnx<1.17"
    .venv-mxnet/bin/python tools/export_fixtures/mxnet_fixtures.py

Versions this was run with: mxnet 1.9.1, numpy 1.23.5, onnx 1.16.2 (Python 3.11).

A tiny Gluon CNN with random weights (seeded), exported with ``mx.onnx.export_model``
(dynamic batch). MXNet 1.9.1 has no opset argument: it stamps the model with the newest
opset of the installed onnx (21 for onnx 1.16.2) and writes its opset-13 op forms. The
layers: Conv/BatchNorm/Activation, a residual add, pooling with "full" convention (ceil
mode), concat, LeakyReLU and PReLU, Dense (Gemm behind a Flatten), softmax. Next to the
``.onnx`` file, ``<name>.npz`` holds inputs ``x`` and MXNet's outputs ``y``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import mxnet as mx
import numpy as np
import onnx
from mxnet.gluon import nn

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "exporters"
EXPECTED = {"mxnet": "1.9.1", "numpy": "1.23.5", "onnx": "1.16.2"}


class Zoo(nn.HybridBlock):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.stem = nn.Conv2D(8, 3, padding=1, use_bias=False)
            self.bn = nn.BatchNorm()
            self.body = nn.Conv2D(8, 3, padding=1, groups=8)
            self.pool = nn.MaxPool2D(3, strides=2, padding=1, ceil_mode=True)
            self.branch = nn.Conv2D(4, 1)
            self.leaky = nn.LeakyReLU(0.1)
            self.prelu = nn.PReLU()
            self.avg = nn.AvgPool2D(2, strides=2)
            self.fc = nn.Dense(5)

    def hybrid_forward(self, F, x):
        x = F.relu(self.bn(self.stem(x)))                 # 8 x 16 x 16
        x = x + F.relu(self.body(x))
        x = self.pool(x)                                  # 8 x 8 x 8
        x = F.concat(x, self.leaky(self.branch(x)), dim=1)  # 12 x 8 x 8
        x = self.prelu(x)
        x = self.avg(x)                                   # 12 x 4 x 4
        return F.softmax(self.fc(x), axis=1)


def model() -> Zoo:
    mx.random.seed(0)
    net = Zoo()
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 16, 16)))
    rng = np.random.default_rng(1)
    for name, param in net.collect_params().items():  # BN statistics that are not identity
        if name.endswith(("running_mean", "beta")):
            param.set_data(mx.nd.array(rng.uniform(-0.3, 0.3, param.shape)))
        elif name.endswith(("running_var", "gamma")):
            param.set_data(mx.nd.array(rng.uniform(0.5, 1.5, param.shape)))
        elif name.endswith("alpha"):
            param.set_data(mx.nd.array(np.full(param.shape, 0.2)))
    net.hybridize()
    return net


def main() -> None:
    found = {"mxnet": mx.__version__, "numpy": np.__version__, "onnx": onnx.__version__}
    if found != EXPECTED:
        print(f"warning: expected {EXPECTED}, running {found}", file=sys.stderr)
    net = model()
    x = np.random.default_rng(2).normal(size=(8, 3, 16, 16)).astype(np.float32)
    y = net(mx.nd.array(x)).asnumpy()
    path = OUT / "mxnet_gluon.onnx"
    with tempfile.TemporaryDirectory() as folder:
        prefix = str(Path(folder) / "zoo")
        net.export(prefix)
        mx.onnx.export_model(f"{prefix}-symbol.json", f"{prefix}-0000.params",
                             in_shapes=[(1, 3, 16, 16)], in_types=[np.float32],
                             onnx_file_path=str(path), dynamic=True,
                             dynamic_input_shapes=[(None, 3, 16, 16)])
    np.savez(path.with_suffix(".npz"), x=x, y=y)
    print("wrote", path, path.stat().st_size, "bytes, and its reference outputs")


if __name__ == "__main__":
    main()
