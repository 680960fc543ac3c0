"""What a measurement ran on: the CPU by name, and a process's peak memory.

Every figure that the benchmarks and reports write names the machine it came from. On
Linux ``platform.processor()`` says only "x86_64", which does not tell an AMD EPYC from an
Intel Xeon, though the same code runs at different speeds on them (README, *Speed*); the
CPU's model name comes from ``/proc/cpuinfo`` instead, where there is one. Standard
library only, so that any script (and the runtime's users) can import it cheaply.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) Processor"), or what
    :mod:`platform` knows where ``/proc/cpuinfo`` has none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def peak_rss_bytes() -> int:
    """This process's peak resident set in bytes.

    ``VmHWM`` from ``/proc/self/status`` where there is one: ``getrusage``'s ``ru_maxrss``
    would also count the resident set of the parent at the fork, which Linux keeps across
    exec, so a small child of a large benchmark would report the benchmark's peak.
    Elsewhere ``ru_maxrss`` (kilobytes on Linux, bytes on macOS); 0 where neither exists.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource  # not on Windows
    except ImportError:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024
