"""Runs a piece of test code in a fresh interpreter with Numba's JIT switched off.

The Numba kernels must compute the same bits as plain Python on numpy scalars (that is what
NUMBA_DISABLE_JIT=1 runs), so that a kernel can be debugged, and checked, without the JIT.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def assert_prints_same_without_jit(code: str) -> None:
    """Runs ``code`` (which prints ``same`` when its checks pass) with the JIT off."""
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)
    assert done.stdout.strip() == "same", done.stdout + done.stderr



def assert_same_run_without_jit(program, source: str, x, steps: int, tmp_path) -> None:
    """The readouts of ``steps`` steps of ``program`` on ``x`` are the same bits with the
    JIT off: ``source`` is the import and the call expression that build ``program``, as
    ``("tests.runtime.programs", "mobile_block(max_spikes=2)")``."""
    import numpy as np

    from snncompiler.runtime import SpikingNetwork

    module, call = source
    expected = SpikingNetwork(program).run(x, steps)
    np.savez(tmp_path / "expected.npz", x=x, **expected)
    assert_prints_same_without_jit(textwrap.dedent(f"""
        import numpy as np
        from {module} import {call.split("(")[0]}
        from snncompiler.runtime import SpikingNetwork
        data = np.load({str(tmp_path / "expected.npz")!r})
        got = SpikingNetwork({call}).run(data["x"], {steps})
        for name, value in got.items():
            np.testing.assert_array_equal(value, data[name])
        print("same")
    """))
