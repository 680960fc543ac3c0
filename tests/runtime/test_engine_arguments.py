"""The engine's argument guards: every bad argument is an InputError naming it, never a
ZeroDivisionError, a math domain error or a silent coercion."""

import warnings

import numpy as np
import pytest

from snncompiler.runtime import InputError, SpikingNetwork, engine
from tests.runtime.programs import conv_snm_pool_gemm, network

# Not positive integers: zero, negative, fractional, a bool (an int to Python), a string.
NOT_POSITIVE_INTEGERS = [0, -3, 2.5, np.float32(4.0), True, False, "8"]


def images(batch=2):
    return np.random.default_rng(1).normal(size=(batch, 1, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def net():
    return SpikingNetwork(conv_snm_pool_gemm(timesteps=(32, 4)))


@pytest.mark.parametrize("bad", NOT_POSITIVE_INTEGERS)
def test_parameters_for_must_be_a_positive_integer(net, bad):
    with pytest.raises(InputError, match=r"parameters_for must be a positive integer, got"):
        net.run(images(), 4, parameters_for=bad)


@pytest.mark.parametrize("bad", NOT_POSITIVE_INTEGERS)
def test_select_parameters_takes_a_positive_integer(net, bad):
    with pytest.raises(InputError, match=r"timesteps must be a positive integer, got"):
        net.select_parameters(bad)


@pytest.mark.parametrize("bad", [*NOT_POSITIVE_INTEGERS, None])
def test_memory_budget_must_be_a_positive_integer(bad):
    with pytest.raises(InputError, match=r"memory_budget must be a positive integer"):
        SpikingNetwork(conv_snm_pool_gemm(), memory_budget=bad)


@pytest.mark.parametrize("executor", ["fused", "nodes"])
@pytest.mark.parametrize("bad", NOT_POSITIVE_INTEGERS)
def test_time_chunk_must_be_a_positive_integer(bad, executor):
    net = network(conv_snm_pool_gemm(), executor)
    with pytest.raises(InputError, match=r"time_chunk must be a positive integer, got"):
        net.run(images(), 4, time_chunk=bad)


def test_numpy_integers_are_accepted_where_an_int_is(net):
    budgeted = SpikingNetwork(net.program, memory_budget=np.int64(2**20))
    expected = net.run(images(), 8, parameters_for=4)
    readout = budgeted.run(images(), np.int32(8), time_chunk=np.int64(3),
                           parameters_for=np.int64(4))
    np.testing.assert_allclose(readout, expected, rtol=1e-6, atol=1e-6)
    assert net.select_parameters(np.int64(5)) == 4


def test_parameters_for_picks_the_row_not_the_default(net):
    """parameters_for is taken as given (0 used to fall back to the run's T via ``or``)."""
    net.run(images(), 32, parameters_for=4)
    assert net.program.timesteps[net.parameter_row] == 4


def test_a_long_run_warns_with_its_size(monkeypatch):
    monkeypatch.setattr(engine, "LONG_RUN_STEPS", 10)
    net = SpikingNetwork(conv_snm_pool_gemm())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.run(images(), 10)  # at the bound: silent
    with pytest.warns(UserWarning, match=r"T=11 .*more than 10 steps.*readout of .*MiB"):
        assert net.run(images(), 11).shape == (11, 2, 5)


def test_the_long_run_bound_is_far_above_the_calibrated_range():
    assert engine.LONG_RUN_STEPS >= 100_000


@pytest.mark.parametrize("executor", ["fused", "nodes"])
def test_step_refuses_a_new_batch_size_without_reset(executor):
    net = network(conv_snm_pool_gemm(), executor)
    net.step(images(2))
    with pytest.raises(InputError, match=r"batch of 3 after steps with a batch of 2; call reset"):
        net.step(images(3))
    net.reset()
    assert net.step(images(3)).shape == (3, 5)


@pytest.mark.parametrize("executor", ["fused", "nodes"])
def test_step_after_run_continues_only_with_the_same_batch(executor):
    net = network(conv_snm_pool_gemm(), executor)
    net.run(images(2), 4)
    with pytest.raises(InputError, match="call reset"):
        net.step(images(3))
    assert net.step(images(2)).shape == (2, 5)
