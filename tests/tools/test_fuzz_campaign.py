"""The fuzz campaign's targets, with a short hypothesis budget: a mutated file loads cleanly
or is refused with an SnnError whose message is one line, and nothing else.

- ``snn``: the ``.snn`` reader (bytes, zip entries and directory records, the JSON header,
  npy headers, planted pickles, zip bombs); a file that loads must validate and run.
- ``onnx``: the front end (bytes, protobuf fields, missing weights, external-data
  locations); a model that loads must import and dry-run convert, and the planted file
  outside the model's folder must never be read.
- ``npz``: the data loader; a dataset that loads must pass the shape and label checks
  (float32, finite), and a planted pickle must never run.

The mutators and checks are those of ``tools/fuzz_campaign.py``; the campaign runs them for
minutes (docs/results/fuzz.md), this test 50 cases per target on every CI run.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools.fuzz_campaign import TARGETS, Layout, run_case


@pytest.fixture(scope="module", params=sorted(TARGETS))
def target(request):
    return TARGETS[request.param]


@pytest.fixture(scope="module")
def layout(target, tmp_path_factory):
    return Layout.create(tmp_path_factory.mktemp(f"fuzz_{target.name}"))


class _Bytes(bytes):
    def __repr__(self):  # hypothesis prints the fixtures of a failing example
        return f"<{len(self)} bytes>"


@pytest.fixture(scope="module")
def base(target):
    return _Bytes(target.base())


def test_the_unmutated_file_is_accepted(target, layout, base):
    assert run_case(target, base, layout) == "accepted"


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), rng=st.randoms(use_true_random=False))
def test_a_mutated_file_loads_cleanly_or_is_refused(target, layout, base, data, rng):
    mutator = data.draw(st.sampled_from(sorted(target.mutators)), label="mutator")
    mutated = target.mutators[mutator](rng, base, layout)
    outcome = run_case(target, mutated, layout)  # raises on anything else
    assert outcome.startswith(("accepted", "refused: "))
