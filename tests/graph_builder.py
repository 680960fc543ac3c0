"""A small builder of random-but-valid ONNX CNNs for lowering and convergence tests."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from tests.onnx_models import make_model, value, weight


@dataclass
class GraphBuilder:
    """Appends ops to a chain, tracking the current tensor and its per-sample shape."""

    shape: tuple[int, ...]
    rng: np.random.Generator
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    current: str = "x"
    count: int = 0

    def __post_init__(self):
        self.input_shape = self.shape

    def _name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def _const(self, base: str, array) -> str:
        name = self._name(base)
        self.initializers.append(weight(name, array))
        return name

    def op(self, op_type: str, extra_inputs=(), out_shape=None, src=None, **attrs) -> str:
        out = self._name(op_type.lower())
        inputs = [src or self.current, *extra_inputs]
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        self.current = out
        if out_shape is not None:
            self.shape = tuple(out_shape)
        return out

    def conv(self, out_channels, kernel=3, stride=1, pad=1, dilation=1, group=1, bias=True):
        c, h, w = self.shape
        scale = 1.0 / np.sqrt(c // group * kernel * kernel)
        wname = self._const("w", self.rng.normal(0, scale, (out_channels, c // group, kernel,
                                                             kernel)))
        inputs = [wname]
        if bias:
            inputs.append(self._const("b", self.rng.normal(0, 0.2, out_channels)))
        span = (kernel - 1) * dilation + 1
        size = ((h + 2 * pad - span) // stride + 1, (w + 2 * pad - span) // stride + 1)
        return self.op("Conv", inputs, (out_channels, *size), kernel_shape=[kernel, kernel],
                       strides=[stride, stride], pads=[pad] * 4, dilations=[dilation] * 2,
                       group=group)

    def batchnorm(self):
        c = self.shape[0]
        params = [self._const("bn", a) for a in (
            self.rng.uniform(0.5, 1.5, c), self.rng.normal(0, 0.3, c),
            self.rng.normal(0, 0.3, c), self.rng.uniform(0.5, 2.0, c))]
        return self.op("BatchNormalization", params, epsilon=1e-5)

    def relu(self):
        return self.op("Relu")

    def pool(self, op_type, kernel=2, stride=2, pad=0, ceil_mode=0, **attrs):
        c, h, w = self.shape
        rounding = np.ceil if ceil_mode else np.floor
        size = []
        for n in (h, w):
            out = int(rounding((n + 2 * pad - kernel) / stride)) + 1
            if ceil_mode and (out - 1) * stride >= n + pad:
                out -= 1
            size.append(out)
        return self.op(op_type, (), (c, *size), kernel_shape=[kernel, kernel],
                       strides=[stride, stride], pads=[pad] * 4, ceil_mode=ceil_mode, **attrs)

    def residual(self):
        """conv -> relu -> conv -> add(skip) -> relu: the ResNet basic block."""
        skip = self.current
        c = self.shape[0]
        self.conv(c)
        self.relu()
        self.conv(c)
        self.op("Add", [skip])
        return self.relu()

    def affine_constant(self, op_type):
        c = self.shape[0]
        values = self.rng.uniform(0.5, 1.5, (c,) + (1,) * (len(self.shape) - 1))
        return self.op(op_type, [self._const("k", values.astype(np.float32))])

    def flatten(self):
        return self.op("Flatten", (), (int(np.prod(self.shape)),), axis=1)

    def global_avgpool(self):
        return self.op("GlobalAveragePool", (), (self.shape[0], 1, 1))

    def gemm(self, features, trans_b=1):
        (n,) = self.shape
        w = self.rng.normal(0, 1 / np.sqrt(n), (features, n) if trans_b else (n, features))
        return self.op("Gemm", [self._const("fc", w), self._const("fcb",
                       self.rng.normal(0, 0.2, features))], (features,), transB=trans_b)

    def matmul_add(self, features):
        (n,) = self.shape
        self.op("MatMul", [self._const("mm", self.rng.normal(0, 1 / np.sqrt(n), (n, features)))],
                (features,))
        return self.op("Add", [self._const("mmb", self.rng.normal(0, 0.2, features))])

    def model(self, opset: int = 17) -> onnx.ModelProto:
        return make_model(self.nodes, [value("x", ["N", *self.input_shape])],
                          [value(self.current, ["N", *self.shape])], self.initializers, opset)
