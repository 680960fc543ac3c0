"""Writes the TensorFlow/Keras fixture of tests/fixtures/exporters/ (run by hand).

    python3.11 -m venv .venv-tf
    .venv-tf/bin/pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0 onnxruntime
    .venv-tf/bin/python tools/export_fixtures/tensorflow_fixtures.py

Versions this was run with: tensorflow-cpu 2.21.0 (Keras 3.15.1), tf2onnx 1.17.0,
onnx 1.23.2.

A tiny Keras CNN with random weights (seeded), NHWC like every Keras model, converted by
tf2onnx: the graph keeps the NHWC input and wraps the convolutions in Transpose nodes (the
optimiser removes most of them). TensorFlow's "same" padding of strided layers is
asymmetric (more at the end), which is what EfficientNet and MobileNet ports carry.
Next to the ``.onnx`` file, ``<name>.npz`` holds inputs ``x`` and Keras's outputs ``y``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from tensorflow import keras  # noqa: E402
from tensorflow.keras import layers  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "exporters"
EXPECTED = {"tensorflow": "2.21.0", "tf2onnx": "1.17.0"}
OPSET = 15


def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    x = keras.Input((16, 16, 3), name="x")
    y = layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU()(y)
    y = layers.DepthwiseConv2D(3, strides=2, padding="same")(y)  # asymmetric "same" pad
    y = layers.ReLU(max_value=6.0)(y)                              # ReLU6 -> Clip
    skip = y
    y = layers.Conv2D(8, 3, padding="same", dilation_rate=2)(y)
    y = layers.LeakyReLU(negative_slope=0.2)(y)
    y = layers.Add()([y, skip])
    y = layers.MaxPooling2D(3, strides=2, padding="same")(y)       # 8 x 4 x 4
    branch = layers.Conv2D(4, 1, activation="relu")(y)
    y = layers.Concatenate()([y, branch])                           # 12 channels
    y = layers.UpSampling2D(2)(y)                                   # nearest, 8 x 8
    y = layers.ZeroPadding2D(((0, 1), (0, 1)))(y)
    y = layers.Conv2D(8, 3, strides=2, activation="relu")(y)       # 4 x 4
    y = layers.AveragePooling2D(2)(y)
    y = layers.GlobalAveragePooling2D()(y)
    y = layers.Dense(5)(y)
    y = layers.Softmax()(y)
    net = keras.Model(x, y)
    for layer in net.layers:  # BN statistics that are not the identity
        if isinstance(layer, layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            rng = np.random.default_rng(1)
            layer.moving_mean.assign(rng.uniform(-0.3, 0.3, channels))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels))
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
            layer.beta.assign(rng.uniform(-0.3, 0.3, channels))
    return net


def main() -> None:
    found = {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__}
    if found != EXPECTED:
        print(f"warning: expected {EXPECTED}, running {found}", file=sys.stderr)
    net = model()
    spec = (tf.TensorSpec((None, 16, 16, 3), tf.float32, name="x"),)
    path = OUT / f"tf2onnx_keras_opset{OPSET}.onnx"
    tf2onnx.convert.from_keras(net, input_signature=spec, opset=OPSET, output_path=str(path))
    x = np.random.default_rng(2).normal(size=(8, 16, 16, 3)).astype(np.float32)
    np.savez(path.with_suffix(".npz"), x=x, y=net(x, training=False).numpy())
    print("wrote", path, path.stat().st_size, "bytes, and its reference outputs")


if __name__ == "__main__":
    main()
