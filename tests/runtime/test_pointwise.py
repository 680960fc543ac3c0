"""The dense 1x1 kernel: a matrix product that adds in a fixed order, to the bit."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from snncompiler.runtime.fused import conv_weight_layout
from snncompiler.runtime.pointwise import is_pointwise, pointwise_dense


def ordered_product(x, weight, bias):
    """``x @ W + bias`` as the kernel computes it: every output sums its terms in channel
    order in float32, each product and sum rounded, then adds the bias."""
    total = np.zeros((x.shape[0], weight.shape[1]), np.float32)
    for c in range(x.shape[1]):
        total = total + x[:, c:c + 1] * weight[c]
    return total + bias


@settings(max_examples=40, deadline=None)
@given(pixels=st.integers(1, 9), channels=st.integers(1, 40), outputs=st.integers(1, 75),
       seed=st.integers(0, 2**16))
def test_pointwise_dense_is_the_ordered_matrix_product(pixels, channels, outputs, seed):
    # Every tail: 32-, 16- and 8-wide blocks, single outputs, an odd last pixel.
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(pixels, channels)).astype(np.float32)
    x[rng.random(x.shape) < 0.3] = 0  # zeros are added like any other entry
    onnx_weight = rng.normal(size=(outputs, channels, 1, 1)).astype(np.float32)
    bias = rng.normal(size=outputs).astype(np.float32)
    out = np.full(pixels * outputs, np.nan, np.float32)
    additions = pointwise_dense(x.reshape(-1), pixels, channels,
                                conv_weight_layout(onnx_weight, 1), bias, outputs, out)
    expected = ordered_product(x, onnx_weight[:, :, 0, 0].T.copy(), bias)
    np.testing.assert_array_equal(out.reshape(pixels, outputs), expected)
    assert additions == pixels * channels * outputs


def test_only_a_1x1_conv_that_keeps_every_pixel_is_a_matrix_product():
    same = dict(height=5, width=6, kh=1, kw=1, sh=1, sw=1, ph=0, pw=0, dh=1, dw=1, out_h=5,
                out_w=6)
    assert is_pointwise(**same)
    for change in ({"kh": 3, "kw": 3}, {"sh": 2, "out_h": 3}, {"ph": 1, "out_h": 7},
                   {"out_w": 7}):  # the last: padded at the end only
        assert not is_pointwise(**{**same, **change})
