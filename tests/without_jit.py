"""Runs a piece of test code in a fresh interpreter with Numba's JIT switched off.

The Numba kernels must compute the same bits as plain Python on numpy scalars (that is what
NUMBA_DISABLE_JIT=1 runs), so that a kernel can be debugged, and checked, without the JIT.
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def assert_prints_same_without_jit(code: str) -> None:
    """Runs ``code`` (which prints ``same`` when its checks pass) with the JIT off."""
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)
    assert done.stdout.strip() == "same", done.stdout + done.stderr
