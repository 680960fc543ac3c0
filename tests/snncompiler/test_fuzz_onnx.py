"""Fuzzing the ONNX front end: a mutated model loads, imports and dry-run converts, or is
refused with an SnnError (ModelError, UnsupportedOpError) whose message is one line; never
another exception, and never a read of the planted file outside the model's folder.

The mutators (bytes, protobuf fields, missing weights, external-data locations) are those
of ``tools/fuzz_campaign.py``, here with a short hypothesis budget; the campaign runs them
for minutes (docs/results/fuzz.md).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools.fuzz_campaign import TARGETS, Layout, run_case

TARGET = TARGETS["onnx"]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return Layout.create(tmp_path_factory.mktemp("fuzz_onnx"))


class _Bytes(bytes):
    def __repr__(self):  # hypothesis prints the fixtures of a failing example
        return f"<{len(self)} bytes>"


@pytest.fixture(scope="module")
def base():
    return _Bytes(TARGET.base())


def test_the_unmutated_model_converts(layout, base):
    assert run_case(TARGET, base, layout) == "accepted"


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mutator=st.sampled_from(sorted(TARGET.mutators)), rng=st.randoms(use_true_random=False))
def test_mutated_onnx_converts_or_is_refused(layout, base, mutator, rng):
    data = TARGET.mutators[mutator](rng, base, layout)
    outcome = run_case(TARGET, data, layout)  # raises on anything else
    assert outcome.startswith(("accepted", "refused: "))
