"""Shared fixtures.

``pending_ops`` registers the runtime ops of issue 4 (index maps, SNM variants, analog) with
the engine while ``runtime/engine.py`` is being rewritten by someone else: their executors
live in new modules and their registration in ``engine.EXECUTORS`` is waiting to be made
there. Once it holds these entries, delete this fixture and the ``pytestmark`` lines that
use it. (``SpikingNetwork._plan`` must also mark the output of every op whose schema says
``spiking`` as dynamic, not only ``snm``'s; the engine being rewritten already does.)
"""

from __future__ import annotations

import pytest

from snncompiler.runtime import engine
from snncompiler.runtime.analog import run_analog
from snncompiler.runtime.neuron_variants import run_snm_clip, run_snm_leaky
from snncompiler.runtime.shape_ops import (
    run_concat,
    run_pad,
    run_reduce,
    run_resize,
    run_transpose,
)

PENDING_EXECUTORS = {
    "snm_clip": run_snm_clip,
    "snm_leaky": run_snm_leaky,
    "concat": run_concat,
    "transpose": run_transpose,
    "pad": run_pad,
    "resize": run_resize,
    "reduce": run_reduce,
    "analog": run_analog,
}


@pytest.fixture
def pending_ops(monkeypatch):
    for op, executor in PENDING_EXECUTORS.items():
        monkeypatch.setitem(engine.EXECUTORS, op, executor)
