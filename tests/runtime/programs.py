"""Small hand-built runtime programs shared by the runtime tests."""

import numpy as np

from snncompiler.runtime import Node, Program, TensorSpec


def conv_snm_pool_gemm(seed: int = 0, theta_neg: str = "zero", timesteps=(32,)) -> Program:
    """input (1, 8, 8) -> conv 3x3 (4 ch) -> SNM -> maxpool 2x2 -> flatten -> gemm (5)."""
    rng = np.random.default_rng(seed)
    rows = len(timesteps)
    theta = rng.uniform(0.5, 1.5, size=(rows, 4)).astype(np.float32)
    nodes = [
        Node("conv", "conv", ("x",), "a",
             {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1},
             {"weight": rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32),
              "bias": rng.normal(0, 0.1, 4).astype(np.float32)}, (4, 8, 8)),
        Node("relu", "snm", ("a",), "s",
             {"theta_neg": theta_neg, "max_spikes_per_step": 1},
             {"theta": theta, "v0": theta / 2}, (4, 8, 8)),
        Node("pool", "maxpool", ("s",), "p",
             {"kernel": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0], "ceil_mode": 0,
              "dilations": [1, 1]}, {}, (4, 4, 4)),
        Node("flat", "reshape", ("p",), "f", {"shape": [64]}, {}, (64,)),
        Node("fc", "gemm", ("f",), "y", {},
             {"weight": rng.normal(0, 0.2, (64, 5)).astype(np.float32),
              "bias": rng.normal(0, 0.1, 5).astype(np.float32)}, (5,)),
    ]
    return Program([TensorSpec("x", (1, 8, 8))], [TensorSpec("y", (5,))], nodes,
                   list(timesteps), timesteps[0])


def residual(seed: int = 0) -> Program:
    """input (3, 6, 6) -> conv -> SNM -> conv -> add(skip) -> SNM -> global avg -> gemm."""
    rng = np.random.default_rng(seed)
    theta = np.full((1, 3), 0.8, np.float32)

    def conv(name, src, dst):
        return Node(name, "conv", (src,), dst,
                    {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1},
                    {"weight": rng.normal(0, 0.3, (3, 3, 3, 3)).astype(np.float32),
                     "bias": rng.normal(0, 0.1, 3).astype(np.float32)}, (3, 6, 6))

    def snm(name, src, dst):
        return Node(name, "snm", (src,), dst, {"theta_neg": "zero", "max_spikes_per_step": 1},
                    {"theta": theta, "v0": theta / 2}, (3, 6, 6))

    nodes = [
        conv("c1", "x", "a1"), snm("n1", "a1", "s1"), conv("c2", "s1", "a2"),
        Node("add", "add", ("a2", "s1"), "r", {}, {}, (3, 6, 6)), snm("n2", "r", "s2"),
        Node("gap", "global_avgpool", ("s2",), "g", {}, {}, (3, 1, 1)),
        Node("flat", "reshape", ("g",), "f", {"shape": [3]}, {}, (3,)),
        Node("fc", "gemm", ("f",), "y", {},
             {"weight": rng.normal(0, 0.5, (3, 4)).astype(np.float32),
              "bias": np.zeros(4, np.float32)}, (4,)),
    ]
    return Program([TensorSpec("x", (3, 6, 6))], [TensorSpec("y", (4,))], nodes, [32], 32)
