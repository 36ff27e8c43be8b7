"""Batch-norm kernels (pyneural.kernels.batchnorm): the float32 C++ path against the float64 numpy
path, which is itself checked against the plain formulas; and the argument errors."""
import numpy as np
import pytest

from conftest import poisoned, rel_err
from pyneural import _C
from pyneural.kernels.batchnorm import batch_norm_backward, channel_affine, channel_stats

# (N, C) after Linear, (N, C, L), NCHW with odd and 1x1 planes, and one large enough for threads;
# channels_last x reaches the kernels as the (N*H*W, C) rows of its memory: (2*9*7, 69) and
# (8*17*19, 67) take the row-wise kernels (inner == 1), with rows that do not divide their
# 512-row blocks and, the second, several blocks over the threads.
SHAPES = [(7, 13), (4, 6, 5), (3, 5, 7, 9), (2, 3, 1, 1), (16, 8, 33, 17), (126, 69), (2584, 67)]


def axes(x):
    return (0,) + tuple(range(2, x.ndim))


def per_channel(v, x):
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


@pytest.mark.parametrize("shape", SHAPES)
def test_channel_stats(rng, shape):
    # A common offset 100x the spread: the variance must not come from E[x^2] - E[x]^2 in float.
    x = (100.0 + rng.standard_normal(shape)).astype(np.float32)
    x64 = x.astype(np.float64)
    m64, v64 = channel_stats(x64)
    assert rel_err(m64, x64.mean(axis=axes(x))) < 1e-14
    assert rel_err(v64, x64.var(axis=axes(x))) < 1e-12
    m, v = channel_stats(x)
    assert m.dtype == v.dtype == np.float32
    assert rel_err(m, m64) < 1e-6
    assert rel_err(v, v64) < 1e-5


def test_channel_stats_constant_channel_has_zero_variance():
    x = np.full((4, 3, 5), 7.25, np.float32)
    m, v = channel_stats(x)
    np.testing.assert_array_equal(m, 7.25)
    np.testing.assert_array_equal(v, 0.0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("relu", [False, True])
def test_channel_affine(rng, shape, relu):
    x = rng.standard_normal(shape).astype(np.float32)
    scale, shift = (rng.standard_normal(shape[1]).astype(np.float32) for _ in range(2))
    x64, s64, b64 = x.astype(np.float64), scale.astype(np.float64), shift.astype(np.float64)
    ref = x64 * per_channel(s64, x64) + per_channel(b64, x64)
    if relu:
        ref = np.maximum(ref, 0.0)
    assert rel_err(channel_affine(x64, s64, b64, relu), ref) < 1e-15
    y = poisoned(shape)
    _C.channel_affine(x, scale, shift, y, relu)  # the kernel writes every element of its output
    assert rel_err(y, ref) < 1e-6
    assert rel_err(channel_affine(x, scale, shift, relu), ref) < 1e-6


# With 2 values per channel dx is ~0 by cancellation (a relative error there measures nothing).
@pytest.mark.parametrize("shape", [s for s in SHAPES if np.prod(s) // s[1] > 2])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_backward(rng, shape, relu):
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    gamma = rng.standard_normal(shape[1]).astype(np.float32)
    x64, dy64, g64 = x.astype(np.float64), dy.astype(np.float64), gamma.astype(np.float64)
    mean64 = x64.mean(axis=axes(x))
    invstd64 = 1.0 / np.sqrt(x64.var(axis=axes(x)) + 1e-5)
    scale64 = g64 * invstd64
    xhat = (x64 - per_channel(mean64, x64)) * per_channel(invstd64, x64)
    y64 = np.maximum(xhat * per_channel(g64, x64), 0.0) if relu else None
    # the plain formula
    g = dy64 if y64 is None else dy64 * (y64 > 0)
    n = x.size // shape[1]
    ref_beta, ref_gamma = g.sum(axis=axes(x)), (g * xhat).sum(axis=axes(x))
    ref_dx = per_channel(scale64, x64) * (g - per_channel(ref_beta / n, x64) - xhat * per_channel(ref_gamma / n, x64))
    got64 = batch_norm_backward(dy64, x64, mean64, invstd64, scale64, y64)
    for got, ref in zip(got64, (ref_dx, ref_beta, ref_gamma)):
        assert rel_err(got, ref) < 1e-12
    y32 = None if y64 is None else y64.astype(np.float32)
    got32 = batch_norm_backward(dy, x, mean64.astype(np.float32), invstd64.astype(np.float32),
                                scale64.astype(np.float32), y32)
    for got, ref in zip(got32, got64):
        assert got.dtype == np.float32
        assert rel_err(got, ref) < 1e-5


def test_rows_of_channels_last_memory_match_nchw(rng):
    """The (N*H*W, C) rows of an NHWC array give NCHW's statistics, affine map and gradients."""
    x = (3.0 + rng.standard_normal((4, 19, 13, 11))).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    rows = lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1)).reshape(-1, a.shape[1])  # noqa: E731
    mean, var = channel_stats(x)
    mean_r, var_r = channel_stats(rows(x))
    assert rel_err(mean_r, mean) < 1e-6 and rel_err(var_r, var) < 1e-5
    invstd = (1 / np.sqrt(var + 1e-5)).astype(np.float32)
    y = channel_affine(x, invstd, -mean * invstd, relu=True)
    y_r = channel_affine(rows(x), invstd, -mean * invstd, relu=True)
    assert rel_err(y_r, rows(y)) < 1e-6
    got, got_r = batch_norm_backward(dy, x, mean, invstd, invstd, y), batch_norm_backward(rows(dy), rows(x), mean,
                                                                                          invstd, invstd, rows(y))
    assert rel_err(got_r[0], rows(got[0])) < 1e-5
    assert rel_err(got_r[1], got[1]) < 1e-5 and rel_err(got_r[2], got[2]) < 1e-5


def test_batch_norm_backward_in_place_dx(rng):
    x, dy = (rng.standard_normal((3, 4, 5)).astype(np.float32) for _ in range(2))
    mean, invstd, scale = (rng.random(4).astype(np.float32) + 0.5 for _ in range(3))
    ref, sum_g, sum_gx = batch_norm_backward(dy, x, mean, invstd, scale)
    _C.batchnorm_backward_apply(dy, None, x, mean, invstd, scale, sum_g / 15, sum_gx / 15, dy)  # dx is dy
    assert rel_err(dy, ref) < 1e-6


def test_errors():
    x = np.ones((4, 3, 2), np.float32)
    c = np.ones(3, np.float32)
    with pytest.raises(TypeError, match="channel_stats: x must have dtype float32 or float64"):
        channel_stats(x.astype(np.int32))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        channel_stats(np.ones(5, np.float32))
    with pytest.raises(ValueError, match="zero-size"):
        channel_stats(np.ones((0, 3), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        channel_affine(np.ones((3, 4), np.float32).T, np.ones(3, np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"scale has shape \(2,\), expected \(3,\)"):
        channel_affine(x, np.ones(2, np.float32), c)
    with pytest.raises(TypeError, match="must share one dtype"):
        channel_affine(x, c.astype(np.float64), c)
    with pytest.raises(ValueError, match="dy has shape"):
        batch_norm_backward(np.ones((4, 3), np.float32), x, c, c, c)
    with pytest.raises(TypeError, match="must share one dtype"):
        batch_norm_backward(x.astype(np.float64), x, c, c, c)
    # the kernels check for themselves too
    with pytest.raises(ValueError, match="partially overlaps"):
        buf = np.ones(30, np.float32)
        _C.channel_affine(buf[:24].reshape(4, 3, 2), c, c, buf[6:30].reshape(4, 3, 2))
    with pytest.raises(ValueError, match="mean must have shape"):
        _C.channel_stats(x, np.ones(2, np.float32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="read-only"):
        ro = np.ones(3, np.float32)
        ro.flags.writeable = False
        _C.channel_stats(x, ro, np.ones(3, np.float32))
