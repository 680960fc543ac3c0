"""The runtime stands alone: numpy and numba only, deterministic whatever the threads."""

import subprocess
import sys

import numba
import numpy as np

from snncompiler.runtime import SpikingNetwork
from tests.runtime.programs import residual

COMPILER_SIDE = ("onnx", "onnxruntime", "onnx_graphsurgeon", "click", "tqdm")


def test_importing_the_runtime_loads_no_compiler_dependency():
    code = (
        "import sys; import snncompiler.runtime, snncompiler.runtime.format; "
        "import snncompiler.runtime.engine; "
        f"print([m for m in {COMPILER_SIDE!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_results_do_not_depend_on_the_thread_count():
    program = residual()
    x = np.random.default_rng(3).normal(size=(6, 3, 6, 6)).astype(np.float32)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = SpikingNetwork(program).run(x, 20)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = SpikingNetwork(program).run(x, 20)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(one, many)
