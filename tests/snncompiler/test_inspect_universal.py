"""The support report and the analog opt-in, through the command line."""

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from snncompiler.cli import main
from tests.graph_builder import GraphBuilder


@pytest.fixture
def gated(tmp_path):
    """conv -> relu6 -> x * sigmoid(conv x) -> gap -> flatten -> gemm -> softmax."""
    builder = GraphBuilder((2, 6, 6), np.random.default_rng(0))
    builder.conv(3)
    builder.op("Clip", [builder._const("lo", np.float32(0)), builder._const("hi",
                                                                          np.float32(6))])
    gate_input = builder.current
    builder.conv(3)
    builder.op("Sigmoid")
    builder.op("Mul", [gate_input])
    builder.global_avgpool()
    builder.flatten()
    builder.gemm(4)
    builder.op("Softmax", axis=1)
    path = tmp_path / "gated.onnx"
    onnx.save(builder.model(), path)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).normal(size=(8, 2, 6, 6)).astype(np.float32))
    return path, calib


def kinds(output):
    """op -> conversion, from the node rows (name, op, conversion, how)."""
    return {line.split()[1]: line.split()[2] for line in output.splitlines()[:-1]}


def test_inspect_lists_each_node_and_names_the_opt_in(gated):
    result = CliRunner().invoke(main, ["inspect", str(gated[0])])
    assert result.exit_code == 0, result.output
    found = kinds(result.output)
    assert found["Clip"] == "neuron" and found["Softmax"] == "readout"
    assert found["Sigmoid"] == found["Mul"] == "UNSUPPORTED"
    assert result.output.splitlines()[-1].endswith(
        "The model does NOT convert: 2 unsupported node(s); --allow-analog Mul,Sigmoid would "
        "run them on the time-averaged signal.")


def test_inspect_with_the_opt_in_marks_analog_nodes(gated):
    result = CliRunner().invoke(main, ["inspect", str(gated[0]), "--allow-analog",
                                       "Sigmoid,Mul"])
    assert result.exit_code == 0, result.output
    assert kinds(result.output)["Sigmoid"] == kinds(result.output)["Mul"] == "analog"
    assert "converts, with 2 node(s) NOT spiking" in result.output.splitlines()[-1]


def test_compile_refuses_without_the_opt_in_and_warns_with_it(gated, tmp_path):
    model, calib = gated
    out = tmp_path / "gated.snn"
    refused = CliRunner().invoke(main, [str(model), "-o", str(out), "--calib", str(calib), "-q"])
    assert refused.exit_code == 1
    assert "Sigmoid has no spiking form; pass --allow-analog Sigmoid" in refused.output
    done = CliRunner().invoke(main, [str(model), "-o", str(out), "--calib", str(calib), "-q",
                                     "--allow-analog", "Sigmoid,Mul"])
    assert done.exit_code == 0, done.output
    assert "(Sigmoid) is not spiking: it runs on the time-averaged signal" in done.output


def test_unknown_analog_op_is_a_one_line_error(gated):
    result = CliRunner().invoke(main, ["inspect", str(gated[0]), "--allow-analog", "Conv"])
    assert result.exit_code == 1
    assert "Conv has no analog form" in result.output
