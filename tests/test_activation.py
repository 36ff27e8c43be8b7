"""bias_relu and relu_backward: float32 C++ on every SIMD path against the float64 numpy path,
which is itself checked against the plain formula."""
import numpy as np
import pytest

from conftest import poisoned, rel_err
from pyneural import _C
from pyneural.kernels.activation import bias_relu, relu_backward



# (N, F) after Linear, NCHW after Conv2d (odd planes, 1x1 planes), and a 3-D (N, C, L).
SHAPES = [(7, 13), (1, 1), (64, 37), (3, 5, 7, 9), (2, 3, 1, 1), (4, 6, 5), (2, 70, 15, 17)]


def formula(x, bias, relu):
    y = x.astype(np.float64)
    if bias is not None:
        y = y + bias.astype(np.float64).reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.maximum(y, 0.0) if relu else y


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("relu", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
def test_bias_relu_float32_matches_float64(isa, rng, shape, relu, with_bias):
    # Inputs drawn in float32 so the reference sees the same values: x + bias can cancel.
    x = rng.standard_normal(shape).astype(np.float32)
    bias = rng.standard_normal(shape[1]).astype(np.float32) if with_bias else None
    x64, bias64 = x.astype(np.float64), None if bias is None else bias.astype(np.float64)
    ref = bias_relu(x64, bias64, relu=relu)
    assert rel_err(ref, formula(x64, bias64, relu)) < 1e-15
    out = poisoned(shape)
    got = bias_relu(x, bias, relu=relu, out=out)
    assert got is out
    assert rel_err(got, ref) < 1e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bias_relu_in_place(isa, rng, dtype):
    x = rng.standard_normal((5, 11, 6, 7)).astype(np.float32).astype(dtype)
    bias = rng.standard_normal(11).astype(np.float32).astype(dtype)
    ref = formula(x, bias, True)
    got = bias_relu(x, bias, out=x)
    assert got is x
    assert rel_err(x, ref) < 1e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bias_relu_keeps_nan(isa, dtype):
    x = np.array([[np.nan, -1.0, 2.0]], dtype=dtype)
    y = bias_relu(x, np.zeros(3, dtype))
    assert np.isnan(y[0, 0]) and y[0, 1] == 0 and y[0, 2] == 2


@pytest.mark.parametrize("shape", [(7, 13), (3, 5, 7, 9), (1, 1), (40000,)])
def test_relu_backward_float32_matches_float64(isa, rng, shape):
    dy = rng.standard_normal(shape)
    y = np.maximum(rng.standard_normal(shape), 0.0)  # about half exactly 0: those pass no gradient
    ref = relu_backward(dy, y)
    assert np.array_equal(ref, np.where(y > 0, dy, 0.0))
    out = poisoned(shape)
    got = relu_backward(dy.astype(np.float32), y.astype(np.float32), out=out)
    assert got is out
    assert rel_err(got, ref) < 1e-6


def test_relu_backward_blocks_nan_where_off(isa):
    dy = np.array([np.nan, np.nan, 3.0], np.float32)
    y = np.array([0.0, 1.0, -1.0], np.float32)
    dx = relu_backward(dy, y)
    assert dx[0] == 0 and np.isnan(dx[1]) and dx[2] == 0


def test_relu_backward_in_place(isa, rng):
    dy = rng.standard_normal((9, 33)).astype(np.float32)
    y = rng.standard_normal((9, 33)).astype(np.float32)
    ref = np.where(y > 0, dy, 0)
    assert relu_backward(dy, y, out=dy) is dy
    assert np.array_equal(dy, ref)


# ---- bad input: one test each ------------------------------------------------------------------

def test_bias_relu_rejects_list():
    with pytest.raises(TypeError, match="x must be a numpy.ndarray"):
        bias_relu([[1.0, 2.0]])


def test_bias_relu_rejects_int_dtype():
    with pytest.raises(TypeError, match="x must have dtype"):
        bias_relu(np.ones((2, 3), np.int32))


def test_bias_relu_rejects_mixed_dtypes():
    with pytest.raises(TypeError, match="share one dtype"):
        bias_relu(np.ones((2, 3), np.float32), np.ones(3, np.float64))


def test_bias_relu_rejects_1d():
    with pytest.raises(ValueError, match=r"at least 2 dimensions.*\(5,\)"):
        bias_relu(np.ones(5, np.float32))


def test_bias_relu_rejects_bias_shape():
    with pytest.raises(ValueError, match=r"bias has shape \(4,\).*3 channels"):
        bias_relu(np.ones((2, 3, 4, 4), np.float32), np.ones(4, np.float32))


def test_bias_relu_rejects_non_contiguous():
    with pytest.raises(ValueError, match="C-contiguous"):
        bias_relu(np.ones((4, 6), np.float32)[:, ::2])


def test_bias_relu_rejects_zero_size():
    with pytest.raises(ValueError, match="zero-size"):
        bias_relu(np.ones((0, 3), np.float32))


def test_bias_relu_rejects_out_shape():
    with pytest.raises(ValueError, match=r"out must have shape \(2, 3\)"):
        bias_relu(np.ones((2, 3), np.float32), out=np.empty((3, 2), np.float32))


def test_bias_relu_rejects_out_partial_overlap():
    buf = np.ones(7, np.float32)
    with pytest.raises(ValueError, match="partially overlaps x"):
        bias_relu(buf[:6].reshape(2, 3), out=buf[1:].reshape(2, 3))


def test_bias_relu_binding_checks_shapes():
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        _C.bias_relu(np.ones((2, 3), np.float32), np.ones(2, np.float32), np.empty((2, 3), np.float32))


def test_relu_backward_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"dy has shape \(2, 3\) but y has shape \(3, 2\)"):
        relu_backward(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32))


def test_relu_backward_rejects_mixed_dtypes():
    with pytest.raises(TypeError, match="share one dtype"):
        relu_backward(np.ones(3, np.float32), np.ones(3, np.float64))


def test_relu_backward_binding_rejects_readonly_output():
    dx = np.empty(3, np.float32)
    dx.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _C.relu_backward(np.ones(3, np.float32), np.ones(3, np.float32), dx)
