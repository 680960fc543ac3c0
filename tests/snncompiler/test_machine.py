"""snncompiler.machine: the CPU named as /proc/cpuinfo names it, a process's own peak memory."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from snncompiler import machine

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="Linux")
def test_the_cpu_is_named_by_its_model_not_its_architecture():
    names = [line.split(":", 1)[1].strip() for line in
             Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
    if not names:
        pytest.skip("this /proc/cpuinfo names no model")
    assert machine.cpu_name() == names[0]
    assert machine.cpu_name() != platform.machine()  # "x86_64" tells two machines apart not


def test_without_cpuinfo_the_cpu_is_what_platform_knows(monkeypatch):
    def unreadable(self, *args, **kwargs):
        raise OSError("no such file")

    monkeypatch.setattr(Path, "read_text", unreadable)
    assert machine.cpu_name() == (platform.processor() or platform.machine() or "unknown CPU")


def test_usable_cpus_is_at_most_the_machines():
    assert 1 <= machine.usable_cpus() <= (os.cpu_count() or 1)


def _child_peak(allocate_mib: int) -> int:
    code = ("import numpy as np; from snncompiler.machine import peak_rss_bytes; "
            f"a = np.ones({allocate_mib} * 2**20 // 8); print(peak_rss_bytes())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM (Linux)")
def test_a_child_reports_its_own_peak_not_its_parents():
    ballast = bytearray(300 * 2**20)  # this process: at least 300 MiB resident
    ballast[::4096] = b"x" * len(ballast[::4096])
    small, large = _child_peak(1), _child_peak(256)
    assert small < 200 * 2**20  # not the parent's 300 MiB and more
    assert large - small >= 240 * 2**20
    assert machine.peak_rss_bytes() >= 300 * 2**20
    del ballast
